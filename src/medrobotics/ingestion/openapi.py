"""The request bodies in the OpenAPI document, with the limits of the running settings.

The routes read their bodies raw (see ingestion.telemetry), so FastAPI cannot describe them;
the schemas are the models', and the limits are the settings' (known only when the app is
built, after the routes are declared).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.models import RequestBody
from pydantic import BaseModel

from medrobotics.config import Settings
from medrobotics.domain.maintenance import MaintenanceIn
from medrobotics.domain.outcomes import OutcomeIn
from medrobotics.domain.procedures import ProcedureIn
from medrobotics.domain.robots import RobotIn
from medrobotics.domain.telemetry import TelemetryIn
from medrobotics.ingestion.flows import ENTITIES, KINDS
from medrobotics.web import amend_openapi

_MODELS: dict[str, type[BaseModel]] = {
    "/ingest/telemetry": TelemetryIn,
    "/ingest/procedure": ProcedureIn,
    "/ingest/outcome": OutcomeIn,
    "/ingest/robot": RobotIn,
    "/ingest/maintenance": MaintenanceIn,
}
"""The record model of each single-record route, by path."""


def document_bodies(app: FastAPI, settings: Settings) -> None:
    """Describe the body of each ingestion route in `app`'s OpenAPI document."""

    def edit(doc: dict[str, Any]) -> None:
        for path, item in doc["paths"].items():
            post = item.get("post")
            if post is None:
                continue
            if path == "/ingest/batch":
                post["requestBody"] = _typed(_batch(settings))
            elif path in _MODELS:
                many = path == "/ingest/telemetry"
                post["requestBody"] = _typed(_body(settings, _MODELS[path], many=many))

    amend_openapi(app, edit)


def _typed(body: dict[str, Any]) -> dict[str, Any]:
    # As FastAPI writes the rest of the document: through its OpenAPI models, nulls left out.
    typed: dict[str, Any] = RequestBody.model_validate(body).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    return typed


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return `model`'s JSON schema, nested definitions inlined: a request body stands alone."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


def _gzip_note(limit: int) -> str:
    return (
        f"Gzip-compressed when sent with `Content-Encoding: gzip`; at most {limit} bytes "
        "after decompression (413 beyond)."
    )


def _body(settings: Settings, model: type[BaseModel], *, many: bool = False) -> dict[str, Any]:
    schema = _schema(model)
    what = "One record as a JSON object"
    if many:
        records = {"type": "array", "items": schema, "maxItems": settings.max_batch_records}
        schema = {"oneOf": [schema, records]}
        what = f"One sample as a JSON object, or up to {settings.max_batch_records} in an array"
    return {
        "required": True,
        "description": f"{what}. {_gzip_note(settings.max_body_bytes)}",
        "content": {"application/json": {"schema": schema}},
    }


def _batch(settings: Settings) -> dict[str, Any]:
    most = settings.max_batch_records
    records = {entity: _schema(KINDS[entity].model) for entity in ENTITIES}
    batches = [
        {
            "type": "object",
            "title": f"{entity.title()}Batch",
            "required": ["type", "records"],
            "additionalProperties": False,
            "properties": {
                "type": {"const": entity},
                "records": {"type": "array", "items": record, "maxItems": most},
            },
        }
        for entity, record in records.items()
    ]
    return {
        "required": True,
        "description": (
            f'A JSON object `{{"type": ..., "records": [...]}}` of up to {most} records '
            f"({_gzip_note(settings.max_body_bytes)}), or NDJSON (`application/x-ndjson`, "
            "also `application/jsonl`): one record per line, `?type=` naming the entity, "
            f"streamed, at most {settings.max_stream_bytes} bytes after decompression."
        ),
        "content": {
            "application/json": {"schema": {"oneOf": batches}},
            "application/x-ndjson": {
                # The records as a JSON array would hold them; on the wire each is a line.
                "schema": {
                    "type": "array",
                    "items": {"anyOf": list(records.values())},
                    "description": "The records, each on a line of its own (no enclosing "
                    "array); `?type=` names their entity.",
                }
            },
        },
    }
