"""Structured logging: one JSON object per line on stdout, readable text in a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog

# Keys that must never reach a log line, whatever a caller passes: request bodies, keys,
# patient fields. Dropped here so one forgotten call site cannot leak them.
FORBIDDEN_KEYS = frozenset(
    {
        "body",
        "payload",
        "authorization",
        "api_key",
        "key",
        "password",
        "secret",
        "patient_id",
        "patient_age",
        "patient_gender",
        "surgeon_notes",
        "token",
    }
)


def _scrub(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for name in FORBIDDEN_KEYS.intersection(event):
        event[name] = "[redacted]"
    return event


def _dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure(
    *, service: str, fmt: str = "auto", level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library loggers for one service process."""
    out = stream or sys.stdout
    json_lines = fmt == "json" or (fmt == "auto" and not out.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
        _scrub,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_dumps)
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Route uvicorn's and other libraries' records through the same renderer.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The access log is ours (one line per request, with route template and request id).
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def get(name: str | None = None) -> Any:
    """Return a structured logger."""
    return structlog.get_logger(name)
