"""Schemathesis hooks for .ci/fuzz.sh: how to send the bodies the ingestion service documents."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def ndjson(_ctx: Any, value: Any) -> bytes:
    """Send the documented array of records as NDJSON: one JSON record per line."""
    if isinstance(value, list):
        return b"".join(json.dumps(item).encode() + b"\n" for item in value)
    return json.dumps(value).encode()  # a negative case: whatever was generated, as one line
