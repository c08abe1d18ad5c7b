"""Ingestion flows: validate records of one entity and commit them all or none."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import anyio
import psycopg
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from medrobotics import logs, metrics
from medrobotics.domain.maintenance import MaintenanceIn
from medrobotics.domain.outcomes import OutcomeIn
from medrobotics.domain.procedures import ProcedureIn
from medrobotics.domain.robots import RobotIn
from medrobotics.domain.telemetry import TelemetryIn
from medrobotics.errors import BadRequest, Conflict, DomainError, InvalidInput, Unavailable
from medrobotics.storage import batches, maintenance, outcomes, procedures, robots, telemetry
from medrobotics.storage.db import run, transaction
from medrobotics.web import MAX_DETAILS, field_errors

log = logs.get("medrobotics.ingestion.flows")
Entity = Literal["telemetry", "procedures", "outcomes", "robots", "maintenance"]
ENTITIES: tuple[Entity, ...] = ("telemetry", "procedures", "outcomes", "robots", "maintenance")


@dataclass(frozen=True)
class Kind:
    """How one entity is validated and written."""

    model: type[BaseModel]
    write: Callable[[Connection, Sequence[Any], int], int]
    """Write records inside the caller's transaction; the int offsets indexes in errors."""


def _check_refs(
    conn: Connection,
    items: Sequence[Any],
    *,
    field: str,
    known: Callable[..., set[str]],
    what: str,
    base: int,
) -> None:
    wanted = {getattr(i, field) for i in items}
    found = known(conn, **{f"{field}s": wanted})
    details = [
        {"field": field, "message": f"unknown {what}", "index": base + n}
        for n, item in enumerate(items)
        if getattr(item, field) not in found
    ]
    if details:
        raise InvalidInput(
            f"{len(details)} record(s) reference an unknown {what}", details=details[:MAX_DETAILS]
        )


def _write_telemetry(conn: Connection, items: Sequence[Any], base: int = 0) -> int:
    # Telemetry travels as row tuples (see domain.telemetry.fast_rows), not models.
    return telemetry.insert_many(conn, rows=items)


def _write_outcomes(conn: Connection, items: Sequence[Any], base: int = 0) -> int:
    _check_refs(
        conn,
        items,
        field="procedure_id",
        known=procedures.existing_ids,
        what="procedure",
        base=base,
    )
    return outcomes.upsert_many(conn, items=items)


def _write_maintenance(conn: Connection, items: Sequence[Any], base: int = 0) -> int:
    _check_refs(conn, items, field="robot_id", known=robots.existing_ids, what="robot", base=base)
    return maintenance.upsert_many(conn, items=items)


KINDS: dict[str, Kind] = {
    "telemetry": Kind(TelemetryIn, _write_telemetry),
    "procedures": Kind(ProcedureIn, lambda c, i, _base: procedures.upsert_many(c, items=i)),
    "outcomes": Kind(OutcomeIn, _write_outcomes),
    "robots": Kind(RobotIn, lambda c, i, _base: robots.upsert_many(c, items=i)),
    "maintenance": Kind(MaintenanceIn, _write_maintenance),
}


def invalid(exc: ValidationError, *, base: int = 0, index: int | None = None) -> InvalidInput:
    """Turn a validation error into a 422 naming each bad field and record.

    `base` offsets the indexes of a list; `index` is the position of a lone record.
    """
    details = field_errors(exc, base=base)
    if index is not None:
        for d in details:
            d["index"] = index
    fields = ", ".join(sorted({d["field"] for d in details})[:10])
    return InvalidInput(f"invalid record: {fields}", details=details[:MAX_DETAILS])


def malformed(exc: ValidationError) -> bool:
    """Tell whether the body was not JSON at all (a 400, not a 422)."""
    return any(e["type"] == "json_invalid" for e in exc.errors())


def validate(adapter: TypeAdapter[Any], raw: bytes) -> Any:
    """Validate a JSON body with `adapter`: 400 when it is not JSON, 422 naming each field."""
    try:
        return adapter.validate_json(raw)
    except ValidationError as exc:
        if malformed(exc):
            raise BadRequest("body is not valid JSON") from None
        raise invalid(exc) from None


def write(engine: Engine, entity: str, items: Sequence[Any], *, raw: bytes | None = None) -> int:
    """Commit `items` of one entity in one transaction; return how many were new or updated.

    With `raw` (an /ingest/batch body) the payload is kept for the lake in the same transaction.
    """
    # Compressed before the transaction opens: no lock is held while it runs.
    kept = (
        None if raw is None else batches.payload(entity=entity, body=raw, record_count=len(items))
    )
    # The commit too: deferred triggers (the roll-ups) may refuse the data only then.
    with refusals(), transaction(engine) as conn:
        written = write_in(conn, entity, items)
        if kept is not None:
            keep_batch(conn, kept)
        return written


async def store(
    engine: Engine, entity: str, items: Sequence[Any], *, raw: bytes | None = None
) -> int:
    """Commit `items` (see `write`) from the event loop, and count them."""
    written = await run(engine, write, engine, entity, items, raw=raw)
    metrics.received(entity, len(items), batch=raw is not None)
    metrics.written(entity, written)
    return written


def keep_batch(conn: Connection, item: batches.Payload) -> None:
    """Store an accepted batch's raw payload in the caller's transaction, for the lake."""
    batches.record(conn, item=item, received_at=datetime.now(UTC))


def write_in(conn: Connection, entity: str, items: Sequence[Any], *, base: int = 0) -> int:
    """Write `items` inside the caller's transaction; `base` offsets record indexes in errors."""
    if not items:
        return 0
    with refusals():
        return KINDS[entity].write(conn, items, base)


class Stream:
    """One transaction held across the chunks of a streamed batch: every record or none.

    The transaction opens with the first records written and belongs to an ExitStack:
    `commit` closes it committed; `streaming` rolls back whatever was not committed. Each
    step runs in a worker thread, as the body arrives on the event loop.
    """

    def __init__(self, engine: Engine, entity: str, *, keep: int) -> None:
        self.engine, self.entity = engine, entity
        self.received = 0
        """Records met so far (those written and those refused)."""
        self.written = 0
        self._stack = ExitStack()
        self._conn: Connection | None = None
        # The raw payload is kept for the lake up to `keep` bytes; beyond it (streams reach
        # gigabytes) only its hash and count are: the records themselves are committed, and
        # telemetry reaches the lake as Parquet regardless.
        self._keep = keep
        self._kept: list[bytes] | None = []
        self._kept_bytes = 0
        self._digest = batches.hasher(entity)
        self._packer = batches.packer()

    def keep(self, blob: bytes) -> None:
        """Add a piece of the raw body to the batch's payload (compressed as it streams)."""
        self._digest.update(blob)
        if self._kept is None:
            return
        self._kept_bytes += len(blob)
        if self._kept_bytes > self._keep:
            self._kept = None
            return
        self._kept.append(self._packer.compress(blob))

    async def add(self, items: list[Any], *, base: int) -> None:
        """Write `items` (record `base` first) in the stream's transaction."""
        self.written += await run(self.engine, self._add, items, base)

    async def commit(self, items: list[Any], *, base: int) -> int:
        """Write the last records, keep the batch's payload with them, and commit.

        One thread hop for all three: a stream that fits in one chunk pays for one.
        Return how many records were new or updated.
        """
        self.written += await run(self.engine, self._commit, items, base)
        metrics.received(self.entity, self.received, batch=True)
        metrics.written(self.entity, self.written)
        return self.written

    def _add(self, items: list[Any], base: int) -> int:
        if self._conn is None:
            self._conn = self._stack.enter_context(transaction(self.engine))
        return write_in(self._conn, self.entity, items, base=base)

    def _commit(self, items: list[Any], base: int) -> int:
        written = self._add(items, base) if items else 0
        if self._conn is None:  # nothing written: no transaction, nothing to keep
            return written
        gzipped = None if self._kept is None else b"".join(self._kept) + self._packer.flush()
        digest = self._digest.hexdigest()
        keep_batch(self._conn, batches.Payload(digest, self.entity, self.received, gzipped))
        self._conn = None  # the close below ends the transaction, committed or not
        with refusals():  # deferred triggers (the roll-ups) may refuse data at commit
            self._stack.close()
        return written

    @property
    def open(self) -> bool:
        """Tell whether a transaction is open (records written, not committed)."""
        return self._conn is not None

    def rollback(self) -> None:
        """Roll back what was written and end the transaction (blocking: from a thread)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.rollback()
        finally:
            self._stack.close()  # the transaction's end finds it rolled back: nothing to commit


@asynccontextmanager
async def streaming(engine: Engine, entity: str, *, keep: int) -> AsyncIterator[Stream]:
    """Hold a Stream of `entity` records; whatever it did not commit is rolled back on exit."""
    stream = Stream(engine, entity, keep=keep)
    try:
        yield stream
    finally:
        # The answer is already decided (an error, or the commit): a failed rollback can
        # only mean a connection lost, which the database rolls back itself.
        if stream.open:  # a thread hop only when there is something to roll back
            with anyio.CancelScope(shield=True), suppress(Unavailable, DBAPIError):
                await run(engine, stream.rollback)


@contextmanager
def refusals() -> Iterator[None]:
    """Turn the database's refusal of the data into the 4xx that says why (see `refused`)."""
    try:
        yield
    except DomainError:
        raise
    except Exception as exc:
        error = refused(exc)
        if error is None:
            raise
        if isinstance(error, InvalidInput):
            # Data that passed validation but not the database: a rule the schemas lack.
            log.warning("write_refused", error_type=type(getattr(exc, "orig", exc)).__name__)
        raise error from None


def refused(exc: BaseException) -> DomainError | None:
    """Return the client's error for a database that refused the data; None if it did not.

    A duplicate key is a 409; any other refusal of the values (a type's range, an encoding, a
    constraint, a trigger) is a 422 naming the column or rule when the database says which.
    Never the value: it could be patient data.
    """
    orig: Any = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(orig, sqlite3.IntegrityError | sqlite3.DataError):
        return _sqlite_refused(orig)
    if isinstance(orig, psycopg.errors.CheckViolation) and orig.diag.constraint_name:
        return _broken_rule(orig.diag.constraint_name)
    if isinstance(orig, _PG_CONFLICTS):
        return _conflict(orig.diag.constraint_name or "")
    if isinstance(orig, psycopg.DataError | psycopg.IntegrityError | _PG_LIMITS):
        diag = orig.diag
        found = _COPY_COLUMN.search(diag.context or "")
        field = diag.column_name or (found.group(1) if found else None)
        # Client-side refusals (a NUL in text) carry no SQLSTATE and no column.
        reason = _words(type(orig).__name__) if orig.sqlstate else "cannot be stored"
        return _refused(field, reason)
    if isinstance(exc, IntegrityError):  # another driver: name what its message names
        return _conflict(str(orig).split(":")[-1].strip())
    return None


# Each class names its SQLSTATE: NumericValueOutOfRange is "numeric value out of range".
_PG_CONFLICTS = (
    psycopg.errors.UniqueViolation,
    psycopg.errors.ForeignKeyViolation,
    psycopg.errors.ExclusionViolation,
)
_PG_LIMITS = psycopg.errors.ProgramLimitExceeded  # e.g. a value too large for its index
# A binary COPY names the column it was loading (a text COPY would add the value: not read).
_COPY_COLUMN = re.compile(r"\bCOPY \w+, line \d+, column (\w+)")
_SQLITE_COLUMN = re.compile(r"^NOT NULL constraint failed: \w+\.(\w+)$")


def _sqlite_refused(orig: sqlite3.Error) -> DomainError:
    name = getattr(orig, "sqlite_errorname", "")
    message = str(orig)
    if name in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
        return _conflict(message.split(":")[-1].strip())
    if name == "SQLITE_CONSTRAINT_FOREIGNKEY":
        return _conflict("foreign key")
    if name == "SQLITE_CONSTRAINT_CHECK":
        return _broken_rule(message.split(":")[-1].strip())
    if name == "SQLITE_CONSTRAINT_TRIGGER":
        # RAISE(ABORT, '...') takes a literal: the schema's own words, never a value.
        return _refused(None, message)
    found = _SQLITE_COLUMN.match(message)
    if found:
        return _refused(found.group(1), "must not be null")
    return _refused(None, "cannot be stored")


def _refused(field: str | None, reason: str) -> InvalidInput:
    if field is None:
        return InvalidInput(f"the database refused the record: {reason}")
    return InvalidInput(
        f"the database refused {field}: {reason}",
        details=[{"field": field, "message": f"refused by the database: {reason}", "index": None}],
    )


def _words(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()


def _broken_rule(name: str) -> InvalidInput:
    # Name the constraint (never the values): it says which rule the record breaks.
    rule = name.removeprefix("ck_").replace("_", " ")
    return InvalidInput(f"record breaks the rule: {rule} (with the values already stored)")


def _conflict(name: str) -> DomainError:
    if "serial" in name:
        return Conflict(
            "robot_serial_number already belongs to another robot",
            details=[{"field": "robot_serial_number", "message": "must be unique"}],
        )
    return Conflict(f"write conflicts with stored data ({name})")
