"""The analytics roll-ups equal their recomputation from the base tables after any writes."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, delete, select, text

from medrobotics.domain.outcomes import SUCCESS_STATUSES, OutcomeIn
from medrobotics.domain.procedures import CATEGORIES, PROCEDURE_STATUSES, ProcedureIn
from medrobotics.domain.units import HOURS
from medrobotics.storage import analytics
from medrobotics.storage import outcomes as outcomes_q
from medrobotics.storage import procedures as procedures_q
from medrobotics.storage.db import transaction
from medrobotics.storage.tables import (
    outcome_days,
    outcomes,
    procedure_days,
    procedures,
    robot_days,
    robot_months,
    robots,
)
from tests.api.helpers import rounded

NOW = datetime(2025, 3, 31, 21, 0, tzinfo=UTC)
IDS = [f"proc-{i:04d}" for i in range(120)]


def _procedure(rng: random.Random, procedure_id: str) -> ProcedureIn:
    start = NOW - timedelta(days=rng.randint(0, 40), minutes=rng.randint(0, 1439))
    return ProcedureIn(
        procedure_id=procedure_id,
        robot_id=f"robot-{rng.randint(1, 4)}",
        procedure_category=rng.choice(CATEGORIES),
        start_time=start,
        duration_minutes=rng.choice([None, rng.uniform(10, 300)]),
        complexity_score=rng.choice([None, rng.uniform(1, 5)]),
        status=rng.choice(PROCEDURE_STATUSES),
    )


def _outcome(rng: random.Random, procedure_id: str) -> OutcomeIn:
    return OutcomeIn(
        procedure_id=procedure_id,
        success_status=rng.choice(SUCCESS_STATUSES),
        blood_loss_ml=rng.choice([None, rng.uniform(0, 900)]),
        complications=rng.choice([[], ["infection"]]),
        hospital_stay_days=rng.choice([None, rng.uniform(0, 9)]),
        readmission_30day=rng.random() < 0.2,
        patient_satisfaction_score=rng.choice([None, rng.uniform(1, 10)]),
    )


def _rounded(row: Any) -> tuple[Any, ...]:
    return tuple(round(v, 6) if isinstance(v, float) else v for v in row)


def _expected(conn: Connection) -> dict[str, set[tuple[Any, ...]]]:
    """Every roll-up recomputed in Python from the base tables (groups with rows only)."""
    days: dict[Any, list[float]] = defaultdict(lambda: [0, 0.0, 0, 0.0, 0])
    robot_d: dict[Any, list[float]] = defaultdict(lambda: [0, 0.0])
    robot_m: dict[Any, list[float]] = defaultdict(lambda: [0, 0.0])
    found = {}
    for p in conn.execute(select(procedures)).mappings():
        day = p["start_time"].astimezone(UTC).date()
        found[p["procedure_id"]] = (day, p["procedure_category"])
        acc = days[(day, p["procedure_category"], p["status"])]
        for i, value in ((1, p["duration_minutes"]), (3, p["complexity_score"])):
            acc[i] += value or 0.0
            acc[i + 1] += value is not None
        acc[0] += 1
        if p["status"] != "cancelled":
            for acc, key in ((robot_d, day), (robot_m, day.replace(day=1))):
                acc[(key, p["robot_id"])][0] += 1
                acc[(key, p["robot_id"])][1] += p["duration_minutes"] or 0.0
    outs: dict[Any, list[float]] = defaultdict(lambda: [0] * 9)
    for o in conn.execute(select(outcomes)).mappings():
        acc = outs[(*found[o["procedure_id"]], o["success_status"])]
        acc[0] += 1
        acc[1] += bool(o["complications"])
        acc[2] += bool(o["readmission_30day"])
        for i, name in (
            (3, "blood_loss_ml"),
            (5, "hospital_stay_days"),
            (7, "patient_satisfaction_score"),
        ):
            acc[i] += o[name] or 0.0
            acc[i + 1] += o[name] is not None
    return {
        "procedure_days": {_rounded((*k, *v)) for k, v in days.items()},
        "robot_days": {_rounded((*k, *v)) for k, v in robot_d.items()},
        "robot_months": {_rounded((*k, *v)) for k, v in robot_m.items()},
        "outcome_days": {_rounded((*k, *v)) for k, v in outs.items()},
    }


def _stored(conn: Connection) -> dict[str, set[tuple[Any, ...]]]:
    """The roll-ups as stored, in `_expected`'s column order, rows counting nothing left out."""
    pd, rd, rm, od = procedure_days.c, robot_days.c, robot_months.c, outcome_days.c
    queries = {
        "procedure_days": select(
            pd.day,
            pd.procedure_category,
            pd.status,
            pd.procedures,
            pd.duration_sum,
            pd.duration_n,
            pd.complexity_sum,
            pd.complexity_n,
        ).where(pd.procedures != 0),
        "robot_days": select(rd.day, rd.robot_id, rd.procedures, rd.duration_sum).where(
            rd.procedures != 0
        ),
        "robot_months": select(rm.month, rm.robot_id, rm.procedures, rm.duration_sum).where(
            rm.procedures != 0
        ),
        "outcome_days": select(
            od.day,
            od.procedure_category,
            od.success_status,
            od.outcomes,
            od.with_complications,
            od.readmitted,
            od.blood_loss_sum,
            od.blood_loss_n,
            od.stay_sum,
            od.stay_n,
            od.satisfaction_sum,
            od.satisfaction_n,
        ).where(od.outcomes != 0),
    }
    return {name: {_rounded(r) for r in conn.execute(q)} for name, q in queries.items()}


def _assert_exact(engine: Engine) -> None:
    with engine.connect() as conn:
        expected, stored = _expected(conn), _stored(conn)
    for name in expected:
        assert stored[name] == expected[name], name
    # Rows that count nothing hold nothing either (up to rounding of the subtractions).
    with engine.connect() as conn:
        left = conn.execute(
            text("SELECT max(abs(duration_sum)) FROM robot_days WHERE procedures = 0")
        ).scalar()
    assert (left or 0) < 1e-6


def _writes(engine: Engine, seed: int, rounds: int) -> None:
    """Re-send random procedures and outcomes, in batches sorted by key like a client's."""
    rng = random.Random(seed)
    for _ in range(rounds):
        ids = sorted(rng.sample(IDS, 25))
        with transaction(engine) as conn:
            if rng.random() < 0.5:
                procedures_q.upsert_many(conn, items=[_procedure(rng, i) for i in ids])
            else:
                outcomes_q.upsert_many(conn, items=[_outcome(rng, i) for i in ids])


def _seed(engine: Engine) -> None:
    rng = random.Random(1)
    with transaction(engine) as conn:
        procedures_q.upsert_many(conn, items=[_procedure(rng, i) for i in IDS])
        outcomes_q.upsert_many(conn, items=[_outcome(rng, i) for i in IDS[::2]])


def test_backfill_and_writes_keep_rollups_exact(engine: Engine) -> None:
    _seed(engine)
    _assert_exact(engine)
    _writes(engine, seed=2, rounds=12)
    _assert_exact(engine)
    with transaction(engine) as conn:
        conn.execute(delete(outcomes).where(outcomes.c.procedure_id.in_(IDS[:10])))
        conn.execute(delete(procedures).where(procedures.c.procedure_id.in_(IDS[5:30])))
        # A bulk statement, as the benchmark's loader writes.
        conn.execute(
            procedures.update()
            .where(procedures.c.procedure_id.in_(IDS[30:60]))
            .values(
                start_time=NOW - timedelta(days=3),
                procedure_category="cardiac",
                status="completed",
            )
        )
    _assert_exact(engine)


POSTGRES_ONLY = pytest.mark.parametrize("migrated_engine", ["postgresql"], indirect=True)


@POSTGRES_ONLY  # SQLite has no TRUNCATE
def test_truncate_empties_rollups(engine: Engine) -> None:
    _seed(engine)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE outcomes"))
    _assert_exact(engine)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE procedures CASCADE"))
    _assert_exact(engine)
    with engine.connect() as conn:
        assert conn.execute(select(robot_months)).first() is None


@POSTGRES_ONLY  # the deferred flush is PostgreSQL's; SQLite keeps roll-ups row by row
def test_flush_before_commit_then_more_writes(engine: Engine) -> None:
    rng = random.Random(3)
    with transaction(engine) as conn:
        procedures_q.upsert_many(conn, items=[_procedure(rng, i) for i in IDS[:40]])
        conn.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))  # flushes now
        conn.execute(text("SET CONSTRAINTS ALL DEFERRED"))
        procedures_q.upsert_many(conn, items=[_procedure(rng, i) for i in IDS[20:60]])
        outcomes_q.upsert_many(conn, items=[_outcome(rng, i) for i in IDS[:60:3]])
    _assert_exact(engine)


def concurrent_writes(engine: Engine, *, first_seed: int) -> list[BaseException]:
    """Seed, then run four writers of `_writes` at once; return what they raised."""
    _seed(engine)
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        try:
            _writes(engine, seed=seed, rounds=10)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc.__cause__ or exc)

    threads = [threading.Thread(target=run, args=(first_seed + n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_writers_keep_rollups_exact(engine: Engine) -> None:
    errors = concurrent_writes(engine, first_seed=10)
    assert not errors, errors
    _assert_exact(engine)


@pytest.mark.parametrize(
    "window",
    [
        ("2025-02-20T03:00:00", "2025-03-31T12:00:00"),  # days, then a month less its end
        ("2025-02-03T00:00:00", "2025-03-10T00:00:00"),  # a month less its start, then days
        ("2025-03-01T00:00:00", "2025-04-01T00:00:00"),  # one whole month
        ("2025-03-05T10:00:00", "2025-03-05T18:00:00"),  # inside one day
    ],
)
def test_utilization_sums_months_and_days(engine: Engine, window: tuple[str, str]) -> None:
    _seed(engine)
    _writes(engine, seed=4, rounds=4)
    start, end = (datetime.fromisoformat(x).replace(tzinfo=UTC) for x in window)
    with transaction(engine) as conn:
        conn.execute(
            robots.insert(),
            [{"robot_id": f"robot-{i}", "robot_model": "m", "facility_id": "f"} for i in range(5)],
        )
    with engine.connect() as conn:
        got = analytics.utilization(conn, start=start, end=end)["robots"]
        rows = list(conn.execute(select(procedures)).mappings())
    for robot in got:
        mine = [
            p
            for p in rows
            if p["robot_id"] == robot["robot_id"]
            and p["status"] != "cancelled"
            and start <= p["start_time"] < end
        ]
        assert robot["procedures"] == len(mine)
        hours = sum(p["duration_minutes"] or 0 for p in mine) / 60
        assert robot["hours_in_use"] == rounded(hours, HOURS)
