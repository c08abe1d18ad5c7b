"""Roll-ups of closed days equal their recomputation, and answers stay exact around them."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, delete, select, text

from medrobotics.domain.outcomes import SUCCESS_STATUSES, OutcomeIn
from medrobotics.domain.procedures import CATEGORIES, PROCEDURE_STATUSES, ProcedureIn
from medrobotics.domain.units import HOURS
from medrobotics.storage import analytics, migrate
from medrobotics.storage import outcomes as outcomes_q
from medrobotics.storage import procedures as procedures_q
from medrobotics.storage.db import make_engine, transaction
from medrobotics.storage.tables import (
    archive_marks,
    outcome_days,
    outcomes,
    procedure_days,
    procedures,
    robot_days,
    robot_months,
    robots,
    stale_days,
)
from tests.api.helpers import rounded

NOW = datetime(2025, 3, 31, 21, 0, tzinfo=UTC)
IDS = [f"proc-{i:04d}" for i in range(120)]
WINDOWS = [
    ("2025-02-15T00:00:00", "2025-04-01T00:00:00"),  # whole days only
    ("2025-02-20T03:00:00", "2025-03-31T12:00:00"),  # days, then a month less its end
    ("2025-02-03T00:00:00", "2025-03-10T00:00:00"),  # a month less its start, then days
    ("2025-03-05T10:00:00", "2025-03-05T18:00:00"),  # inside one day
]


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


def _expected(conn: Connection, before: date) -> dict[str, set[tuple[Any, ...]]]:
    """Every roll-up of the days before `before` recomputed in Python from the base tables."""
    days: dict[Any, list[float]] = defaultdict(lambda: [0, 0.0, 0, 0.0, 0])
    robot_d: dict[Any, list[float]] = defaultdict(lambda: [0, 0.0])
    robot_m: dict[Any, list[float]] = defaultdict(lambda: [0, 0.0])
    found = {}
    for p in conn.execute(select(procedures)).mappings():
        day = p["start_time"].astimezone(UTC).date()
        found[p["procedure_id"]] = (day, p["procedure_category"])
        if day >= before:
            continue
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
        if found[o["procedure_id"]][0] >= before:
            continue
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
        ).where(od.outcomes != 0),  # 0005's triggers left rows counting nothing
    }
    return {name: {_rounded(r) for r in conn.execute(q)} for name, q in queries.items()}


def roll(engine: Engine) -> int:
    """Run the roll-up job as the archiver does."""
    return analytics.roll_up_closed_days(engine)


def _assert_exact(engine: Engine) -> None:
    """Roll up; the roll-ups then hold every closed day exactly and no day is left stale."""
    roll(engine)
    today = datetime.now(UTC).date()
    with engine.connect() as conn:
        expected, stored = _expected(conn, today), _stored(conn)
        assert conn.execute(select(stale_days).where(stale_days.c.day < today)).first() is None
    for name in expected:
        assert stored[name] == expected[name], name


def _windows(now: datetime) -> list[tuple[datetime, datetime]]:
    fixed = [tuple(datetime.fromisoformat(x).replace(tzinfo=UTC) for x in w) for w in WINDOWS]
    # Up to now: today and yesterday, never rolled or rolled just now, from the base table.
    return [*fixed, (NOW - timedelta(days=60), now + timedelta(hours=1))]  # type: ignore[list-item]


def _answers(conn: Connection, now: datetime) -> list[Any]:
    """Every procedure and outcome figure over the windows."""
    out: list[Any] = []
    for start, end in _windows(now):
        out.append(analytics.utilization(conn, start=start, end=end))
        out.append(analytics.outcomes_summary(conn, start=start, end=end))
        out.append(analytics.procedures_by_category(conn, start=start, end=end))
        for interval in ("day", "week", "month"):
            for category in (None, "cardiac"):
                out.append(
                    analytics.procedure_volume(
                        conn, start=start, end=end, interval=interval, category=category
                    )
                )
    return out


def _from_base(engine: Engine, now: datetime) -> list[Any]:
    """The answers with nothing rolled: every figure from the base tables."""
    with engine.connect() as conn, conn.begin() as tx:
        conn.execute(delete(archive_marks).where(archive_marks.c.stream == analytics.STREAM))
        out = _answers(conn, now)
        tx.rollback()
    return out


def _same(got: Any, want: Any, path: str = "") -> None:
    """Equal, floats up to one unit of their last rounded decimal (sums in another order)."""
    if isinstance(got, dict):
        assert set(got) == set(want), path
        for k in got:
            _same(got[k], want[k], f"{path}.{k}")
    elif isinstance(got, list):
        assert len(got) == len(want), path
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            _same(a, b, f"{path}[{i}]")
    elif isinstance(got, float) and isinstance(want, float):
        places = max(len(repr(x).split(".")[1]) if "." in repr(x) else 0 for x in (got, want))
        assert abs(got - want) <= 1.01 * 10**-places, (path, got, want)
    else:
        assert got == want, (path, got, want)


def _assert_answers_exact(engine: Engine) -> None:
    now = datetime.now(UTC)
    with analytics.snapshot(engine) as conn:
        got = _answers(conn, now)
    _same(got, _from_base(engine, now))


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
        conn.execute(
            robots.insert(),
            [{"robot_id": f"robot-{i}", "robot_model": "m", "facility_id": "f"} for i in range(5)],
        )
        procedures_q.upsert_many(conn, items=[_procedure(rng, i) for i in IDS])
        outcomes_q.upsert_many(conn, items=[_outcome(rng, i) for i in IDS[::2]])


def _stale(engine: Engine) -> set[date]:
    with engine.connect() as conn:
        return set(conn.execute(select(stale_days.c.day)).scalars())


def test_rollups_equal_their_recomputation_after_writes(engine: Engine) -> None:
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
    _assert_answers_exact(engine)


def test_rollup_is_idempotent(engine: Engine) -> None:
    _seed(engine)
    assert roll(engine) > 40  # every day from the first procedure's to yesterday
    with engine.connect() as conn:
        first = _stored(conn), conn.execute(select(archive_marks.c.mark)).all()
    assert roll(engine) == 0
    with engine.connect() as conn:
        assert (_stored(conn), conn.execute(select(archive_marks.c.mark)).all()) == first
    _assert_exact(engine)


def test_late_writes_to_rolled_days_stay_exact(engine: Engine) -> None:
    _seed(engine)
    roll(engine)
    assert not _stale(engine)
    _assert_answers_exact(engine)
    rng = random.Random(5)
    moved = [
        _procedure(rng, i).model_copy(update={"start_time": NOW - timedelta(days=n % 7, hours=n)})
        for n, i in enumerate(IDS[:20])
    ]
    new = [_procedure(rng, f"late-{i:03d}") for i in range(10)]
    # robot-0 had no use on any rolled day: its last use is on a stale one.
    new[0] = new[0].model_copy(update={"robot_id": "robot-0", "status": "completed"})
    today = [
        _procedure(rng, f"today-{i:03d}").model_copy(
            update={
                "start_time": datetime.now(UTC) - timedelta(minutes=i),
                "robot_id": "robot-1",
                "status": "completed",
            }
        )
        for i in range(5)
    ]
    with transaction(engine) as conn:
        procedures_q.upsert_many(conn, items=moved + new)
        outcomes_q.upsert_many(
            conn, items=[_outcome(rng, i) for i in [*IDS[1:40:3], *(p.procedure_id for p in new)]]
        )
        conn.execute(delete(procedures).where(procedures.c.procedure_id.in_(IDS[100:110])))
        conn.execute(delete(outcomes).where(outcomes.c.procedure_id.in_(IDS[60:70])))
    with transaction(engine) as conn:
        procedures_q.upsert_many(conn, items=today)
    marked = _stale(engine)
    assert (NOW - timedelta(days=3)).date() in marked
    assert datetime.now(UTC).date() not in marked  # today is read from the base table anyway
    assert date(2024, 1, 1) not in marked
    # Not rolled again: the changed days come from the base tables, the others from roll-ups.
    _assert_answers_exact(engine)
    with analytics.snapshot(engine) as conn:
        use = analytics.utilization(
            conn, start=datetime.now(UTC) - timedelta(days=1), end=datetime.now(UTC)
        )
    assert use["robots"][1]["procedures"] >= 5
    assert use["robots"][0]["last_used_at"] == new[0].start_time
    _assert_exact(engine)
    assert not {d for d in _stale(engine) if d < datetime.now(UTC).date()}
    _assert_answers_exact(engine)


def test_rollup_of_a_day_rolls_its_month(engine: Engine) -> None:
    _seed(engine)
    roll(engine)
    # A day rolled again changes its month's row too: the month stays the sum of its days.
    with transaction(engine) as conn:
        conn.execute(
            procedures.update()
            .where(procedures.c.procedure_id.in_(IDS[:30]))
            .values(start_time=datetime(2025, 2, 10, 9, tzinfo=UTC), status="completed")
        )
    assert date(2025, 2, 10) in _stale(engine)
    _assert_exact(engine)
    _assert_answers_exact(engine)


POSTGRES_ONLY = pytest.mark.parametrize("migrated_engine", ["postgresql"], indirect=True)


@POSTGRES_ONLY  # SQLite has no TRUNCATE
def test_truncate_leaves_nothing_rolled(engine: Engine) -> None:
    _seed(engine)
    roll(engine)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE outcomes"))
    _assert_answers_exact(engine)
    _assert_exact(engine)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE procedures CASCADE"))
    _assert_answers_exact(engine)
    _assert_exact(engine)
    with engine.connect() as conn:
        assert conn.execute(select(robot_months)).first() is None


def concurrent_writes(
    engine: Engine, *, first_seed: int, rolling: bool = False
) -> list[BaseException]:
    """Seed, then run four writers of `_writes` at once (and roll-ups); return what they raised."""
    _seed(engine)
    errors: list[BaseException] = []
    done = threading.Event()

    def run(seed: int) -> None:
        try:
            _writes(engine, seed=seed, rounds=10)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc.__cause__ or exc)

    def rolls() -> None:
        try:
            while not done.is_set():
                roll(engine)
        except BaseException as exc:
            errors.append(exc.__cause__ or exc)

    threads = [threading.Thread(target=run, args=(first_seed + n,)) for n in range(4)]
    roller = threading.Thread(target=rolls)
    if rolling:
        roller.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    if rolling:
        roller.join()
    return errors


def test_concurrent_writers_and_rollups_stay_exact(engine: Engine) -> None:
    errors = concurrent_writes(engine, first_seed=10, rolling=True)
    assert not errors, errors
    # Whatever the roll-ups saw, a day a writer changed after them is still marked.
    _assert_answers_exact(engine)
    _assert_exact(engine)


@POSTGRES_ONLY  # one writer at a time on SQLite
def test_a_mark_held_by_an_open_writer_outlives_the_rollup(engine: Engine) -> None:
    _seed(engine)
    roll(engine)
    rng = random.Random(6)
    first = _procedure(rng, IDS[0]).model_copy(update={"start_time": NOW - timedelta(days=3)})
    with transaction(engine) as conn:
        procedures_q.upsert_many(conn, items=[first])
    (day,) = {d for d in _stale(engine) if d == first.start_time.date()}
    late = first.model_copy(update={"duration_minutes": 12.5})  # the same day again
    with transaction(engine) as conn:
        procedures_q.upsert_many(conn, items=[late])  # holds the day's mark, uncommitted
        # The roll-up neither waits for this writer nor takes its mark: it cannot see its row.
        roll(engine)
        assert _stale(engine) == {day}
    assert _stale(engine) == {day}  # and the other days it rolled are unmarked
    _assert_answers_exact(engine)
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
    roll(engine)
    _writes(engine, seed=4, rounds=4)  # some days stale again
    start, end = (datetime.fromisoformat(x).replace(tzinfo=UTC) for x in window)
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
        used = [
            p["start_time"]
            for p in rows
            if p["robot_id"] == robot["robot_id"] and p["status"] != "cancelled"
        ]
        assert robot["last_used_at"] == max(used, default=None)


@pytest.mark.parametrize("fresh_url", ["sqlite", "postgresql"], indirect=True)
def test_down_to_0008_and_up_again(fresh_url: str) -> None:
    engine = make_engine(fresh_url, pool_size=2)
    migrate.upgrade(engine)
    _seed(engine)
    roll(engine)
    migrate.downgrade(engine, "0008")
    # 0005's triggers again: the roll-ups rebuilt, then kept on every write, today's included.
    _writes(engine, seed=3, rounds=4)
    with engine.connect() as conn:
        assert _stored(conn) == _expected(conn, date.max)
    migrate.upgrade(engine)
    with engine.connect() as conn:  # emptied for the job; nothing rolled yet
        assert not any(_stored(conn).values())
    _assert_answers_exact(engine)
    _assert_exact(engine)
    _assert_answers_exact(engine)
    engine.dispose()
