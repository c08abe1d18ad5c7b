"""An identical re-send changes nothing: no `updated_at` bump, nothing counted as written."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest
from pydantic import BaseModel
from sqlalchemy import Connection, Engine, Table, select

from medrobotics.domain.maintenance import MaintenanceIn
from medrobotics.domain.outcomes import OutcomeIn
from medrobotics.domain.procedures import ProcedureIn
from medrobotics.domain.robots import RobotIn
from medrobotics.storage import maintenance, outcomes, procedures, robots
from medrobotics.storage.db import transaction
from medrobotics.storage.tables import maintenance as maintenance_t
from medrobotics.storage.tables import outcomes as outcomes_t
from medrobotics.storage.tables import procedures as procedures_t
from medrobotics.storage.tables import robots as robots_t
from tests import factories as f
from tests.storage.test_analytics_rollups import _assert_exact

Write = Callable[..., int]

N = 6
ENTITIES: dict[str, tuple[Write, Table, str, type[BaseModel], Callable[..., dict[str, Any]]]] = {
    "robots": (robots.upsert_many, robots_t, "robot_id", RobotIn, f.robot),
    "procedures": (procedures.upsert_many, procedures_t, "procedure_id", ProcedureIn, f.procedure),
    "outcomes": (outcomes.upsert_many, outcomes_t, "procedure_id", OutcomeIn, f.outcome),
    "maintenance": (
        maintenance.upsert_many,
        maintenance_t,
        "maintenance_id",
        MaintenanceIn,
        f.visit,
    ),
}
# A field each record may change without breaking a rule, and a new value for it.
CHANGE = {
    "robots": ("firmware_version", "5.0.0"),
    "procedures": ("complexity_score", 4.25),
    "outcomes": ("complications", ["infection"]),
    "maintenance": ("parts_replaced", ["filter", "arm seal"]),
}


def _parse(model: type[BaseModel], record: dict[str, Any]) -> Any:
    # As the service reads a record: from JSON (the models are strict about Python types).
    return model.model_validate_json(orjson.dumps(record))


def _sent(item: BaseModel) -> dict[str, Any]:
    return item.model_dump(mode="json", exclude_unset=True)


def _parents(conn: Connection) -> None:
    robots.upsert_many(conn, items=[_parse(RobotIn, f.robot(i)) for i in range(1, N + 1)])
    procedures.upsert_many(
        conn, items=[_parse(ProcedureIn, f.procedure(i)) for i in range(1, N + 1)]
    )


def _records(entity: str, **kw: Any) -> list[BaseModel]:
    model, factory = ENTITIES[entity][3], ENTITIES[entity][4]
    return [_parse(model, factory(i, **kw)) for i in range(1, N + 1)]


def _write(engine: Engine, entity: str, items: Sequence[BaseModel]) -> int:
    with transaction(engine) as conn:
        return ENTITIES[entity][0](conn, items=items)


def _updated(engine: Engine, entity: str) -> dict[str, Any]:
    table, key = ENTITIES[entity][1], ENTITIES[entity][2]
    with engine.connect() as conn:
        rows = conn.execute(select(table.c[key], table.c.updated_at))
        return {k: at for k, at in rows}


@pytest.mark.parametrize("entity", list(ENTITIES))
def test_identical_resend_writes_nothing(engine: Engine, entity: str) -> None:
    if entity in ("outcomes", "maintenance"):
        with transaction(engine) as conn:
            _parents(conn)
    assert _write(engine, entity, _records(entity)) == N
    stamped = _updated(engine, entity)
    assert len(stamped) == N

    # The same batch again, and the same records one by one: nothing written, nothing bumped.
    assert _write(engine, entity, _records(entity)) == 0
    for item in _records(entity):
        assert _write(engine, entity, [item]) == 0
    # A record that sends only some of its fields, with the values stored.
    model, key = ENTITIES[entity][3], ENTITIES[entity][2]
    full = _sent(_records(entity)[0])
    field = CHANGE[entity][0]
    required = {n for n, info in model.model_fields.items() if info.is_required()}
    # (A procedure's status is derived when absent, so it is sent: that is a change otherwise.)
    kept = required | {key, field, "status"}
    partial = _parse(model, {k: v for k, v in full.items() if k in kept})
    assert _write(engine, entity, [partial]) == 0
    assert _updated(engine, entity) == stamped

    # One record changed in a batch of identical ones: one written, one bumped.
    items = _records(entity)
    name, value = CHANGE[entity]
    changed = _parse(model, _sent(items[2]) | {name: value})
    items[2] = changed
    assert _write(engine, entity, items) == 1
    after = _updated(engine, entity)
    moved = {k for k in stamped if after[k] != stamped[k]}
    assert moved == {getattr(changed, key)}
    assert after[getattr(changed, key)] > stamped[getattr(changed, key)]


def test_resend_with_a_later_duplicate_counts_the_winner(engine: Engine) -> None:
    # Later items win over earlier ones with the same key; an identical winner writes nothing.
    assert _write(engine, "robots", _records("robots")) == N
    stale = _parse(RobotIn, f.robot(1, firmware_version="0.1"))
    same = _parse(RobotIn, f.robot(1))
    assert _write(engine, "robots", [stale, same]) == 0
    assert _write(engine, "robots", [same, stale]) == 1


def test_skipped_updates_keep_rollups_exact(engine: Engine) -> None:
    with transaction(engine) as conn:
        _parents(conn)
        outcomes.upsert_many(conn, items=_records("outcomes"))
    _assert_exact(engine)
    for _ in range(2):
        assert _write(engine, "procedures", _records("procedures")) == 0
        assert _write(engine, "outcomes", _records("outcomes")) == 0
    _assert_exact(engine)
    moved = [_parse(ProcedureIn, f.procedure(1, procedure_category="cardiac"))]
    assert _write(engine, "procedures", [*moved, *_records("procedures")[1:]]) == 1
    _assert_exact(engine)
