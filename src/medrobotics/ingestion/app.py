"""The data ingestion service: telemetry, procedures and batches in; statistics out."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
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
from medrobotics.domain.types import UtcDateTime
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
    ERROR_RESPONSES,
    NO_OTEL,
    ORJSONResponse,
    RequestContext,
    cap_threads,
    emf_lines,
    install_errors,
    install_health,
    install_metrics,
)

SERVICE = "data-ingestion"
NDJSON_CHUNK = 5_000  # records validated and written per step of a stream: flat memory


class Stored(BaseModel):
    """What was committed. A 2xx answer means the records are durable in the database."""

    entity: Entity
    received: int = Field(description="Records in this request.")
    written: int | None = Field(
        None,
        description="Records new or updated by this request; telemetry counts new samples "
        "only (a re-sent sample is skipped). Absent when the write was shared with other "
        "requests.",
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
        description="Receives telemetry, procedures, outcomes, robots and maintenance records.",
        docs_url=None,  # served from the package: install_docs
        redoc_url=None,
        openapi_url="/ingest/openapi.json",
        default_response_class=ORJSONResponse,
        telemetry=NO_OTEL,
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
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
    limit = settings.max_body_bytes

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
        openapi_extra=_body_doc(TelemetryIn, many=True),
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
            openapi_extra=_body_doc(model),
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
        openapi_extra=_BATCH_DOC,
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
        try:
            async for blob in body.line_batches(request, limit=settings.max_stream_bytes):
                digest.update(blob)
                if kept is not None:
                    kept_bytes += len(blob)
                    kept = kept if kept_bytes <= limit else None
                    if kept is not None:
                        kept.append(packer.compress(blob))  # compressed as it streams
                first = received
                rows = fast_lines(blob) if fast is not None else None
                if rows is None:  # some line is not plainly valid: record by record
                    lines = [line for line in blob.split(b"\n") if line.strip()]
                    rows = _records(lines, first, adapter, fast, details)
                    received += len(lines)
                else:
                    received += len(rows)
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
            await stream.close()
        metrics.received(entity, received, batch=True)
        metrics.written(entity, written)
        return _result(entity, received, written)

    @app.get(
        "/ingest/stats",
        response_model=IngestStats,
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


class _Stream:
    """One write transaction held across the chunks of a streamed batch."""

    def __init__(self, engine: Engine, entity: str) -> None:
        self.engine, self.entity = engine, entity
        self._cm: Any = None
        self._conn: Any = None

    async def add(self, items: list[Any], *, base: int) -> int:
        return await anyio.to_thread.run_sync(self._add, items, base)

    def _add(self, items: list[Any], base: int) -> int:
        flows.prepare(self.engine, self.entity, items)
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
        for err in exc.errors():
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
            field = ".".join(str(p) for p in loc) or "records"
            details.append(
                {
                    "field": field,
                    "message": str(err["msg"]).removeprefix("Value error, "),
                    "index": index,
                }
            )
        fields = ", ".join(sorted({d["field"] for d in details})[:10])
        raise InvalidInput(
            f"invalid batch: {fields}", details=details[: flows.MAX_DETAILS]
        ) from None
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


def _body_doc(model: type[BaseModel], *, many: bool = False) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    if many:
        schema = {"oneOf": [schema, {"type": "array", "items": schema}]}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_BATCH_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["type", "records"],
                    "properties": {
                        "type": {"enum": list(ENTITIES)},
                        "records": {"type": "array", "items": {"type": "object"}},
                    },
                }
            },
            "application/x-ndjson": {
                "schema": {
                    "type": "string",
                    "description": "One record per line; ?type= names the entity.",
                }
            },
        },
    }
}
