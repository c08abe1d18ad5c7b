"""Log lines leave in blocks; warnings and errors leave at once; access lines are exact."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from medrobotics import logs
from medrobotics.logs import Lines
from tests import conftest


@pytest.fixture
def restore(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    stream = request.config.stash[conftest._LOG_STREAM]
    logs.configure(service="tests", fmt="json", level="DEBUG", stream=stream)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_access_lines_hold_the_fields_given(restore: None, fmt: str) -> None:
    out = io.StringIO()
    logs.configure(service="svc", fmt=fmt, level="INFO", stream=out)
    fields = {"service": "svc", "request_id": "r-1", "trace_id": None, "status": 201}
    logs.access(**fields, route="/x", patient_id="P-123")
    [line] = out.getvalue().splitlines()
    assert "P-123" not in line
    if fmt == "json":
        got = json.loads(line)
        assert got.pop("time").endswith("Z")
        assert got == fields | {
            "route": "/x",
            "patient_id": "[redacted]",
            "event": "request",
            "level": "info",
        }
    else:
        assert "request" in line and "r-1" in line and "/x" in line


def test_no_access_lines_above_info(restore: None) -> None:
    out = io.StringIO()
    logs.configure(service="svc", fmt="json", level="WARNING", stream=out)
    assert not logs.access_on()
    logs.access(service="svc", request_id="r-1", status=201)
    assert out.getvalue() == ""


def test_info_lines_wait_for_a_flush_and_warnings_flush_everything(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    with path.open("wb", buffering=0) as raw:
        out = io.BufferedWriter(raw, buffer_size=1 << 16)
        lines = Lines(out)
        lines.info('{"event":"request"}')
        lines.debug('{"event":"detail"}')
        assert path.read_bytes() == b""  # buffered: no write per line
        lines.error('{"event":"failed"}')
        assert path.read_bytes().splitlines() == [
            b'{"event":"request"}',
            b'{"event":"detail"}',
            b'{"event":"failed"}',
        ]
        lines.info('{"event":"later"}')
        out.flush()
        assert path.read_bytes().endswith(b'{"event":"later"}\n')
