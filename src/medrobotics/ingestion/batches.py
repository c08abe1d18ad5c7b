"""Batches of one entity, all or nothing: a JSON object of records, or a streamed NDJSON body."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, Callable
from typing import Annotated, Any, Literal, Union

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from medrobotics.domain.telemetry import fast_batch_rows, fast_lines, fast_row
from medrobotics.errors import BadRequest, InvalidInput, TooLarge
from medrobotics.ingestion import body, flows
from medrobotics.ingestion.deps import WRITES, Ingest, IngestDep, Stored, result
from medrobotics.ingestion.flows import ENTITIES, KINDS, Entity
from medrobotics.web import detail, field_path, responses

router = APIRouter()

CHUNK = 5_000
"""Records of a stream validated and written per step: flat memory."""


@router.post(
    "/ingest/batch",
    status_code=201,
    response_model=Stored,
    responses=responses("write"),
    summary="Ingest a batch of one entity, all or nothing",
    dependencies=WRITES,
)
async def ingest_batch(
    request: Request,
    ingest: IngestDep,
    type: Annotated[
        Entity | None,
        Query(description="The entity, for NDJSON bodies (JSON bodies carry `type`)."),
    ] = None,
) -> Response:
    """Commit every record or none; an error lists each bad record by index and field."""
    kind = body.media_type(request, (body.JSON, body.NDJSON))
    if kind == body.NDJSON:
        if type is None:
            raise InvalidInput(
                "NDJSON batches need ?type=",
                details=[{"field": "type", "message": "required for NDJSON bodies"}],
            )
        return await _ndjson(request, ingest, type)
    raw = await body.read(request, limit=ingest.body)
    entity, items = _parse(raw)
    most = ingest.settings.max_batch_records
    if len(items) > most:
        raise TooLarge(f"more than {most} records in one batch")
    written = await flows.store(ingest.engine, entity, items, raw=raw)
    return result(entity, len(items), written)


async def _ndjson(request: Request, ingest: Ingest, entity: Entity) -> Response:
    # One transaction for the whole stream (all or nothing, owned by the flow), fed chunk by
    # chunk so memory stays flat however large the upload; validation goes on past the first
    # bad record so the error lists them all (up to a bound), but nothing more is written.
    adapter = _ADAPTERS[entity]
    fast = fast_row if entity == "telemetry" else None
    chunk: list[Any] = []
    details: list[dict[str, Any]] = []
    async with flows.streaming(ingest.engine, entity, keep=ingest.body.size) as stream:
        blobs = _lines(request, ingest.stream, lambda: stream.received)
        try:
            async for blob in blobs:
                stream.keep(blob)
                first = stream.received
                # msgspec skips blank lines itself; only the record-by-record path drops them.
                rows = fast_lines(blob) if fast is not None else None
                if rows is None:  # some line is not plainly valid: record by record
                    lines = _nonblank(blob)
                    rows = _records(lines, first, adapter, fast, details)
                    stream.received += len(lines)
                else:
                    stream.received += len(rows)
                if len(details) >= flows.MAX_DETAILS:
                    break  # the answer can list no more: reading on would only cost time
                chunk.extend(rows)
                if len(chunk) >= CHUNK:
                    if not details:
                        await stream.add(chunk, base=stream.received - len(chunk))
                    chunk = []
        finally:
            await blobs.aclose()
        if details:
            fields = ", ".join(sorted({d["field"] for d in details})[:10])
            raise InvalidInput(f"invalid record: {fields}", details=details)
        written = await stream.commit(chunk, base=stream.received - len(chunk))
    return result(entity, stream.received, written)


async def _lines(
    request: Request, limit: body.Limits, received: Callable[[], int]
) -> AsyncGenerator[bytes, None]:
    """Yield blocks of NDJSON lines; a line too long is refused naming its record."""
    try:
        async for blob in body.line_batches(request, limit=limit):
            yield blob
    except body.LongLine as exc:
        index = received() + exc.offset
        message = f"longer than the {exc.limit}-byte line limit"
        raise TooLarge(
            f"record {index} is {message}",
            details=[{"field": "body", "message": message, "index": index}],
        ) from None


# Whitespace-only lines, each run of them matched at once (`\s` is what bytes.strip removes).
_BLANK_LINES = re.compile(rb"^\s*\n", re.MULTILINE)


def _nonblank(blob: bytes) -> list[bytes]:
    """Return the non-blank lines of a block of whole lines, without per-line work for blanks."""
    lines = _BLANK_LINES.sub(b"", blob).split(b"\n")
    lines.pop()  # after the final newline
    return lines


def _records(
    lines: list[bytes],
    first: int,
    adapter: TypeAdapter[Any],
    fast: Any,
    details: list[dict[str, Any]],
) -> list[Any]:
    """Validate NDJSON lines one by one, adding each bad record's errors to `details`."""
    out = []
    for n, line in enumerate(lines):
        record: Any = fast(line) if fast is not None else None
        if record is None:
            try:
                item = adapter.validate_json(line)
            except ValidationError as exc:
                if flows.malformed(exc):
                    raise BadRequest(f"record {first + n} is not valid JSON") from None
                details.extend(flows.invalid(exc, index=first + n).details)
                del details[flows.MAX_DETAILS :]
                continue
            record = item.row() if fast is not None else item
        out.append(record)
    return out


def _parse(raw: bytes) -> tuple[str, list[Any]]:
    """Return the entity and its records (telemetry as row tuples)."""
    rows = fast_batch_rows(raw)
    if rows is not None:
        return "telemetry", rows
    entity, items = _validate(raw)
    if entity == "telemetry":
        return entity, [i.row() for i in items]
    return entity, items


def _validate(raw: bytes) -> tuple[str, list[Any]]:
    # One pass: the `type` tag picks the record model while the body is parsed.
    try:
        parsed = _BATCH.validate_json(raw)
    except ValidationError as exc:
        if flows.malformed(exc):
            raise BadRequest("body is not valid JSON") from None
        details: list[dict[str, Any]] = []
        for err in exc.errors()[: flows.MAX_DETAILS]:
            loc = list(err["loc"])
            if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                message = f"must be one of {', '.join(ENTITIES)}"
                details.append({"field": "type", "message": message, "index": None})
                continue
            if not loc:
                message = 'must be a JSON object {"type": ..., "records": [...]}'
                details.append({"field": "body", "message": message, "index": None})
                continue
            loc = loc[1:]  # the entity tag
            index = None
            if len(loc) >= 2 and loc[0] == "records" and isinstance(loc[1], int):
                index, loc = loc[1], loc[2:]
            # An unknown key is the client's own text: field_path cuts it short.
            details.append(detail(field_path(loc) or "records", str(err["msg"]), index))
        fields = ", ".join(sorted({d["field"] for d in details})[:10])
        raise InvalidInput(f"invalid batch: {fields}", details=details) from None
    return parsed.type, parsed.records


def _batch_model(entity: str, model: type[BaseModel]) -> type[BaseModel]:
    tag: Any = Literal[entity]  # a runtime-built Literal, one per entity
    return create_model(
        f"{entity.title()}Batch",
        __config__=ConfigDict(extra="forbid", strict=True),
        type=(tag, ...),
        records=(list[model], ...),  # type: ignore[valid-type]
    )


_ADAPTERS: dict[str, TypeAdapter[Any]] = {e: TypeAdapter(KINDS[e].model) for e in ENTITIES}
_BATCH_MODELS = {entity: _batch_model(entity, KINDS[entity].model) for entity in ENTITIES}
_BATCH_UNION: Any = Annotated[
    Union[tuple(_BATCH_MODELS.values())],  # noqa: UP007 (built from a tuple at runtime)
    Field(discriminator="type"),
]
_BATCH: TypeAdapter[Any] = TypeAdapter(_BATCH_UNION)
