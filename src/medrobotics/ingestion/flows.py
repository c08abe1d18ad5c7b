"""Ingestion flows: validate records of one entity and commit them all or none."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from medrobotics.domain.maintenance import MaintenanceIn
from medrobotics.domain.outcomes import OutcomeIn
from medrobotics.domain.procedures import ProcedureIn
from medrobotics.domain.robots import RobotIn
from medrobotics.domain.telemetry import TelemetryIn
from medrobotics.errors import Conflict, DomainError, InvalidInput
from medrobotics.storage import batches, maintenance, outcomes, procedures, robots, telemetry
from medrobotics.storage.db import transaction
from medrobotics.web import field_errors

Entity = Literal["telemetry", "procedures", "outcomes", "robots", "maintenance"]
ENTITIES: tuple[Entity, ...] = ("telemetry", "procedures", "outcomes", "robots", "maintenance")
MAX_DETAILS = 1000  # enough to fix a file, bounded so an error body stays small


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


def write(engine: Engine, entity: str, items: Sequence[Any], *, raw: bytes | None = None) -> int:
    """Commit `items` of one entity in one transaction; return how many were new or updated.

    With `raw` (an /ingest/batch body) the payload is kept for the lake in the same transaction.
    """
    # Compressed before the transaction opens: no lock is held while it runs.
    kept = (
        None if raw is None else batches.payload(entity=entity, body=raw, record_count=len(items))
    )
    with transaction(engine) as conn:
        written = write_in(conn, entity, items)
        if kept is not None:
            keep_batch(conn, kept)
        return written


def keep_batch(conn: Connection, item: batches.Payload) -> None:
    """Store an accepted batch's raw payload in the caller's transaction, for the lake."""
    batches.record(conn, item=item, received_at=datetime.now(UTC))


def write_in(conn: Connection, entity: str, items: Sequence[Any], *, base: int = 0) -> int:
    """Write `items` inside the caller's transaction; `base` offsets record indexes in errors."""
    if not items:
        return 0
    try:
        return KINDS[entity].write(conn, items, base)
    except IntegrityError as exc:
        raise _conflict(exc) from None


def _conflict(exc: IntegrityError) -> DomainError:
    # Name the constraint (never the values): it says which field clashes.
    orig: Any = exc.orig
    diag = getattr(orig, "diag", None)
    name = getattr(diag, "constraint_name", None) or str(orig).split(":")[-1].strip()
    if "CHECK" in str(orig) or name.startswith("ck_"):
        rule = name.removeprefix("ck_").replace("_", " ")
        return InvalidInput(f"record breaks the rule: {rule} (with the values already stored)")
    if "serial" in name:
        return Conflict(
            "robot_serial_number already belongs to another robot",
            details=[{"field": "robot_serial_number", "message": "must be unique"}],
        )
    return Conflict(f"write conflicts with stored data ({name})")
