"""The data ingestion service: telemetry, procedures and batches in; statistics out."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from typing import Annotated, Any, Literal, Union

import anyio.to_thread
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from sqlalchemy import Engine
from starlette.types import Receive, Scope, Send

from medrobotics import __version__, metrics
from medrobotics.auth import Guard, require
from medrobotics.config import Settings
from medrobotics.domain.maintenance import MaintenanceIn
from medrobotics.domain.outcomes import OutcomeIn
from medrobotics.domain.procedures import ProcedureIn
from medrobotics.domain.robots import RobotIn
from medrobotics.domain.telemetry import (
    TelemetryIn,
    fast_batch_rows,
    fast_lines,
    fast_row,
    fast_rows,
)
from medrobotics.domain.types import UtcDateTime, use_time_window
from medrobotics.errors import BadRequest, InvalidInput, TooLarge
from medrobotics.ingestion import body, flows
from medrobotics.ingestion.fast import FastTelemetry
from medrobotics.ingestion.flows import ENTITIES, KINDS, Entity
from medrobotics.ingestion.writer import GroupWriter
from medrobotics.storage import archive
from medrobotics.storage import batches as batches_q
from medrobotics.storage import stats as stats_q
from medrobotics.storage.db import make_engine, reading, transaction
from medrobotics.storage.lake import open_lake
from medrobotics.ui.docs import install_docs
from medrobotics.web import (
    NO_OTEL,
    TIMES,
    ORJSONResponse,
    RequestContext,
    cap_threads,
    detail,
    emf_lines,
    field_path,
    install_errors,
    install_health,
    install_metrics,
    responses,
)

SERVICE = "data-ingestion"
NDJSON_CHUNK = 5_000  # records validated and written per step of a stream: flat memory


class Stored(BaseModel):
    """What was committed. A 2xx answer means the records are durable in the database."""

    entity: Entity
    received: int = Field(description="Records in this request.")
    written: int | None = Field(
        None,
        description="Records new or changed by this request: a record equal to the one "
        "stored (in the fields it carries) is left alone and not counted; telemetry counts new "
        "samples only (a re-sent sample is skipped). Absent when the write was shared with "
        "other requests.",
    )
    duplicates: int | None = Field(None, description="Telemetry samples already stored.")


class Recent(BaseModel):
    """Activity over the last minute and hour (by time received)."""

    samples_last_minute: int
    samples_last_hour: int
    robots_reporting_last_hour: int
    procedures_reporting_last_hour: int
    last_ingest_at: UtcDateTime | None


class ArchiveLag(BaseModel):
    """What committed data still waits for the lake."""

    pending_rows: int = Field(description="Telemetry samples not yet in the lake.")
    lag_seconds: float = Field(description="Age of the oldest sample not yet in the lake.")
    last_archived_at: UtcDateTime | None = Field(
        None, description="When the archiver last moved its mark."
    )
    archived_through: UtcDateTime | None = Field(
        None, description="Every sample received before this time is in the lake."
    )
    pending_batches: int = Field(description="Batch payloads not yet in the lake.")


class IngestStats(BaseModel):
    """Ingestion statistics across every task (computed from the database)."""

    totals: dict[str, int] = Field(description="Rows stored per entity.")
    telemetry_total_estimated: bool = Field(
        description="True when the telemetry total is the planner's estimate (very large tables)."
    )
    recent: Recent
    archive: ArchiveLag | None = Field(None, description="Lake export lag.")
    generated_at: UtcDateTime


class IngestionApp(FastAPI):
    """The FastAPI app, behind the fast path for single-sample posts (see ingestion.fast)."""

    fast: FastTelemetry | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast
        if (
            fast is not None
            and scope["type"] == "http"
            and scope["path"] == "/ingest/telemetry"
            and scope["method"] == "POST"
        ):
            await fast(scope, receive, send, super().__call__)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, *, engine: Engine | None = None) -> FastAPI:
    """Build the ingestion service for `settings`."""
    use_time_window(settings.time_window)  # what every sample and event time is checked against
    engine = engine or make_engine(settings.db_url, pool_size=settings.db_pool_size)
    writer = GroupWriter(engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        cap_threads(settings)
        writer.start()
        stop = asyncio.Event()
        archiver = None
        if settings.archive_enabled:
            archiver = asyncio.get_running_loop().create_task(
                archive.run_forever(engine, open_lake(settings), settings, stop),
                name="lake-archiver",
            )
        try:
            async with emf_lines(settings, SERVICE):
                yield
        finally:
            # In-flight requests have finished by now; flush whatever they queued.
            await writer.close()
            stop.set()
            if archiver is not None:
                # Lets a window in progress finish (bounded by the lake client's timeouts).
                await archiver

    app = IngestionApp(
        title="medrobotics data ingestion",
        version=__version__,
        description="Receives telemetry, procedures, outcomes, robots and maintenance records. "
        "Every error has the same body. " + TIMES,
        docs_url=None,  # served from the package: install_docs
        redoc_url=None,
        openapi_url="/ingest/openapi.json",
        default_response_class=ORJSONResponse,
        telemetry=NO_OTEL,
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.writer = writer
    app.state.guard = guard = Guard(engine, settings)
    app.fast = FastTelemetry(service=SERVICE, settings=settings, guard=guard, writer=writer)
    writes = [Depends(require("ingest:write"))]
    install_errors(app)
    install_metrics(app, service=SERVICE, engine=engine)
    app.add_middleware(RequestContext, service=SERVICE)
    limit = body.Limits.of(settings, size=settings.max_body_bytes)
    stream_limit = body.Limits.of(settings, size=settings.max_stream_bytes)

    async def _one(request: Request, adapter: TypeAdapter[Any]) -> Any:
        body.media_type(request, (body.JSON,))
        raw = await body.read(request, limit=limit)
        return _validate(adapter, raw)

    async def _store(
        entity: str, items: Sequence[Any], raw: bytes | None = None, *, batch: bool = False
    ) -> int:
        written = await anyio.to_thread.run_sync(
            functools.partial(flows.write, engine, entity, items, raw=raw)
        )
        metrics.received(entity, len(items), batch=batch)
        metrics.written(entity, written)
        return written

    @app.post(
        "/ingest/telemetry",
        status_code=201,
        response_model=Stored,
        openapi_extra=_body_doc(settings, TelemetryIn, many=True),
        responses=responses("write"),
        summary="Ingest one telemetry sample, or a JSON array of samples",
        dependencies=writes,
    )
    async def ingest_telemetry(request: Request) -> Response:
        """Commit samples; concurrent requests share commits. Re-sent samples are skipped."""
        body.media_type(request, (body.JSON,))
        raw = await body.read(request, limit=limit)
        rows = fast_rows(raw)
        if rows is None:  # not plainly valid: the schema gives the precise answer
            if raw.lstrip()[:1] == b"[":
                rows = [s.row() for s in _validate(_SAMPLES, raw)]
            else:
                rows = [_validate(_SAMPLE, raw).row()]
        if len(rows) > settings.max_batch_records:
            raise TooLarge(f"more than {settings.max_batch_records} records in one request")
        await writer.submit(rows)
        metrics.received("telemetry", len(rows), batch=False)
        return _stored("telemetry", len(rows))

    def _single(path: str, entity: Entity, model: type[BaseModel], what: str) -> None:
        adapter = TypeAdapter(model)

        async def handler(request: Request) -> Response:
            item = await _one(request, adapter)
            written = await _store(entity, [item])
            return _stored(entity, 1, written)

        handler.__doc__ = f"Insert or update one {what} (same id: the fields sent are updated)."
        app.post(
            path,
            status_code=201,
            response_model=Stored,
            openapi_extra=_body_doc(settings, model),
            responses=responses("write"),
            summary=f"Ingest one {what}",
            name=f"ingest_{entity}",
            dependencies=writes,
        )(handler)

    _single("/ingest/procedure", "procedures", ProcedureIn, "procedure")
    _single("/ingest/outcome", "outcomes", OutcomeIn, "outcome")
    _single("/ingest/robot", "robots", RobotIn, "robot")
    _single("/ingest/maintenance", "maintenance", MaintenanceIn, "maintenance visit")

    @app.post(
        "/ingest/batch",
        status_code=201,
        response_model=Stored,
        openapi_extra=_batch_doc(settings),
        responses=responses("write"),
        summary="Ingest a batch of one entity, all or nothing",
        dependencies=writes,
    )
    async def ingest_batch(
        request: Request,
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
            return await _ndjson(request, type)
        raw = await body.read(request, limit=limit)
        entity, items = _parse_batch(raw)
        if len(items) > settings.max_batch_records:
            raise TooLarge(f"more than {settings.max_batch_records} records in one batch")
        written = await _store(entity, items, raw, batch=True)
        return _result(entity, len(items), written)

    async def _ndjson(request: Request, entity: Entity) -> Response:
        # One transaction for the whole stream (all or nothing), fed chunk by chunk so memory
        # stays flat however large the upload; validation goes on past the first bad record
        # so the error lists them all (up to a bound), but nothing more is written.
        model = KINDS[entity].model
        adapter: TypeAdapter[Any] = TypeAdapter(model)
        fast = fast_row if entity == "telemetry" else None
        stream = _Stream(engine, entity)
        chunk: list[Any] = []
        details: list[dict[str, Any]] = []
        received = written = 0
        # The raw payload is kept for the lake up to the JSON body limit; beyond it (streams
        # reach gigabytes) only its hash and count are: the records themselves are committed,
        # and telemetry reaches the lake as Parquet regardless.
        digest = batches_q.hasher(entity)
        kept: list[bytes] | None = []
        kept_bytes = 0
        packer = batches_q.packer()
        blobs = _lines(request, stream_limit, lambda: received)
        try:
            async for blob in blobs:
                digest.update(blob)
                if kept is not None:
                    kept_bytes += len(blob)
                    kept = kept if kept_bytes <= limit.size else None
                    if kept is not None:
                        kept.append(packer.compress(blob))  # compressed as it streams
                first = received
                # msgspec skips blank lines itself; only the record-by-record path drops them.
                rows = fast_lines(blob) if fast is not None else None
                if rows is None:  # some line is not plainly valid: record by record
                    lines = _nonblank(blob)
                    rows = _records(lines, first, adapter, fast, details)
                    received += len(lines)
                else:
                    received += len(rows)
                if len(details) >= flows.MAX_DETAILS:
                    break  # the answer can list no more: reading on would only cost time
                chunk.extend(rows)
                if len(chunk) >= NDJSON_CHUNK:
                    if not details:
                        written += await stream.add(chunk, base=received - len(chunk))
                    chunk = []
            if details:
                fields = ", ".join(sorted({d["field"] for d in details})[:10])
                raise InvalidInput(f"invalid record: {fields}", details=details)
            gzipped = None if kept is None else b"".join(kept) + packer.flush()
            written += await stream.commit(
                chunk,
                base=received - len(chunk),
                gzipped=gzipped,
                digest=digest.hexdigest(),
                received=received,
            )
        finally:
            await blobs.aclose()
            await stream.close()
        metrics.received(entity, received, batch=True)
        metrics.written(entity, written)
        return _result(entity, received, written)

    @app.get(
        "/ingest/stats",
        response_model=IngestStats,
        responses=responses("report"),
        summary="Ingestion statistics",
        dependencies=[Depends(require("ingest:write", "api:read"))],
    )
    def ingest_stats() -> IngestStats:
        """Report totals per entity, recent activity and (with the lake) archive lag."""
        with reading(engine) as conn:
            totals, estimated = stats_q.totals(conn)
            recent = stats_q.recent(conn)
            lag = archive.lag(conn)
        metrics.archive_lag(seconds=lag["lag_seconds"], rows=lag["pending_rows"])
        return IngestStats(
            totals=totals,
            telemetry_total_estimated=estimated,
            recent=Recent(**recent),
            archive=ArchiveLag(**lag),
            generated_at=datetime.now().astimezone(),
        )

    install_health(app, service=SERVICE, engine=engine, ready_path="/ingest/health")
    install_docs(app, prefix="/ingest")

    return app


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


class _Stream:
    """One write transaction held across the chunks of a streamed batch."""

    def __init__(self, engine: Engine, entity: str) -> None:
        self.engine, self.entity = engine, entity
        self._cm: Any = None
        self._conn: Any = None

    async def add(self, items: list[Any], *, base: int) -> int:
        return await anyio.to_thread.run_sync(self._add, items, base)

    def _add(self, items: list[Any], base: int) -> int:
        if self._conn is None:
            self._cm = transaction(self.engine)
            self._conn = self._cm.__enter__()
        return flows.write_in(self._conn, self.entity, items, base=base)

    async def commit(
        self, items: list[Any], *, base: int, gzipped: bytes | None, digest: str, received: int
    ) -> int:
        """Write the last records, keep the batch's payload with them, and commit.

        One thread hop for all three: a stream that fits in one chunk pays for one.
        """
        return await anyio.to_thread.run_sync(
            functools.partial(
                self._finish, items, base=base, gzipped=gzipped, digest=digest, received=received
            )
        )

    def _finish(
        self, items: list[Any], *, base: int, gzipped: bytes | None, digest: str, received: int
    ) -> int:
        written = self._add(items, base) if items else 0
        if self._cm is None:
            return written
        item = batches_q.Payload(digest, self.entity, received, gzipped)
        flows.keep_batch(self._conn, item)
        cm, self._cm, self._conn = self._cm, None, None
        with flows.refusals():  # deferred triggers (the roll-ups) may refuse data at commit
            cm.__exit__(None, None, None)
        return written

    async def close(self) -> None:
        """Roll back whatever was not committed."""
        if self._cm is not None:
            cm, self._cm, self._conn = self._cm, None, None
            err = RuntimeError("stream aborted")
            with suppress(RuntimeError):
                await anyio.to_thread.run_sync(cm.__exit__, type(err), err, None)


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
                if _malformed(exc):
                    raise BadRequest(f"record {first + n} is not valid JSON") from None
                details.extend(flows.invalid(exc, index=first + n).details)
                del details[flows.MAX_DETAILS :]
                continue
            record = item.row() if fast is not None else item
        out.append(record)
    return out


def _result(entity: str, received: int, written: int) -> Response:
    dup = received - written if entity == "telemetry" else None
    return _stored(entity, received, written, dup)


def _stored(
    entity: str, received: int, written: int | None = None, duplicates: int | None = None
) -> Response:
    # The Stored schema, serialized directly: the hot path skips a model round trip.
    body = {"entity": entity, "received": received, "written": written, "duplicates": duplicates}
    return ORJSONResponse(body, status_code=201)


_SAMPLE: TypeAdapter[TelemetryIn] = TypeAdapter(TelemetryIn)
_SAMPLES: TypeAdapter[list[TelemetryIn]] = TypeAdapter(list[TelemetryIn])


def _malformed(exc: ValidationError) -> bool:
    return any(e["type"] == "json_invalid" for e in exc.errors())


def _validate(adapter: TypeAdapter[Any], raw: bytes) -> Any:
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        if _malformed(exc):
            raise BadRequest("body is not valid JSON") from None
        raise flows.invalid(exc) from None


def _parse_batch(raw: bytes) -> tuple[str, list[Any]]:
    """Return the entity and its records (telemetry as row tuples)."""
    rows = fast_batch_rows(raw)
    if rows is not None:
        return "telemetry", rows
    entity, items = _validate_batch(raw)
    if entity == "telemetry":
        return entity, [i.row() for i in items]
    return entity, items


def _validate_batch(raw: bytes) -> tuple[str, list[Any]]:
    # One pass: the `type` tag picks the record model while the body is parsed.
    try:
        parsed = _BATCH.validate_json(raw)
    except ValidationError as exc:
        if _malformed(exc):
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


_BATCH_MODELS = {entity: _batch_model(entity, KINDS[entity].model) for entity in ENTITIES}
_BATCH_UNION: Any = Annotated[
    Union[tuple(_BATCH_MODELS.values())],  # noqa: UP007 (built from a tuple at runtime)
    Field(discriminator="type"),
]
_BATCH: TypeAdapter[Any] = TypeAdapter(_BATCH_UNION)


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


def _body_doc(settings: Settings, model: type[BaseModel], *, many: bool = False) -> dict[str, Any]:
    schema = _schema(model)
    what = "One record as a JSON object"
    if many:
        records = {"type": "array", "items": schema, "maxItems": settings.max_batch_records}
        schema = {"oneOf": [schema, records]}
        what = f"One sample as a JSON object, or up to {settings.max_batch_records} in an array"
    return {
        "requestBody": {
            "required": True,
            "description": f"{what}. {_gzip_note(settings.max_body_bytes)}",
            "content": {"application/json": {"schema": schema}},
        }
    }


def _batch_doc(settings: Settings) -> dict[str, Any]:
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
        "requestBody": {
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
    }
