"""The log lines a block of a test writes, as parsed JSON objects."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from medrobotics import logs
from tests import conftest


@contextmanager
def captured(request: pytest.FixtureRequest, level: str = "INFO") -> Iterator[list[dict[str, Any]]]:
    """Collect every log line written inside the block; the run's own log resumes after it."""
    out = io.StringIO()
    lines: list[dict[str, Any]] = []
    logs.configure(service="tests", fmt="json", level=level, stream=out)
    try:
        yield lines
    finally:
        stream = request.config.stash[conftest._LOG_STREAM]
        logs.configure(service="tests", fmt="json", level="DEBUG", stream=stream)
        lines.extend(json.loads(x) for x in out.getvalue().splitlines())
