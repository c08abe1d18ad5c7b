"""Analytics roll-ups' costs: `python -m bench.rollups [--procedures N] [--rounds N]`.

On a private PostgreSQL (bench/pg.py) with the API dataset (bench/data.py), times the four
procedure and outcome analytics at their default windows, one call at a time as the API reads
them, then the per-row cost of procedure and outcome upserts (batches of 100, each its own
transaction) for today's and for past days, with the roll-up triggers and without them.
Prints JSON. `docs/design.md` gives the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from bench import data
from bench.pg import Cluster
from bench.tools import free_port
from medrobotics.domain.outcomes import OutcomeIn
from medrobotics.domain.procedures import ProcedureIn
from medrobotics.storage import analytics, migrate
from medrobotics.storage import outcomes as outcomes_q
from medrobotics.storage import procedures as procedures_q
from medrobotics.storage.db import make_engine, transaction


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def time_analytics(engine: Engine, rounds: int) -> dict[str, Any]:
    """Return p50 and p95 (ms) of each analytics call at the API's default window."""
    now = datetime.now(UTC)
    year, month, quarter = (now - timedelta(days=n) for n in (365, 30, 90))
    calls: dict[str, Callable[[Connection], Any]] = {
        "robot-utilization": lambda c: analytics.utilization(c, start=year, end=now),
        "outcomes-summary": lambda c: analytics.outcomes_summary(c, start=year, end=now),
        "procedures-by-category": lambda c: analytics.procedures_by_category(
            c, start=month, end=now
        ),
        "procedure-volume": lambda c: analytics.procedure_volume(
            c, start=quarter, end=now, interval="day"
        ),
    }
    out = {}
    for name, call in calls.items():
        times = []
        for i in range(rounds + 3):
            t0 = time.perf_counter()
            with analytics.snapshot(engine) as conn:
                call(conn)
            if i >= 3:  # warm-up
                times.append((time.perf_counter() - t0) * 1000)
        out[name] = {"p50_ms": round(statistics.median(times), 1), "p95_ms": round(_p95(times), 1)}
    return out


def _procedure(i: int, start: datetime) -> ProcedureIn:
    return ProcedureIn(
        procedure_id=f"w-{i:08d}",
        robot_id=f"r-{i % 500:04d}",
        procedure_category="cardiac",
        start_time=start,
        duration_minutes=60.0 + i % 50,
        complexity_score=2.5,
        status="completed",
    )


def _outcome(i: int) -> OutcomeIn:
    return OutcomeIn(
        procedure_id=f"w-{i:08d}",
        success_status="successful",
        blood_loss_ml=100.0,
        complications=[],
        hospital_stay_days=2.0,
        readmission_30day=False,
        patient_satisfaction_score=8.0,
    )


CASES = ("procedure insert", "procedure update", "outcome insert")


def _batch(engine: Engine, what: str, ids: list[int], starts: dict[int, datetime]) -> float:
    """Write one batch in its own transaction; return µs per row."""
    t0 = time.perf_counter()
    with transaction(engine) as conn:
        if what == "procedure insert":
            procedures_q.upsert_many(conn, items=[_procedure(i, starts[i]) for i in ids])
        elif what == "procedure update":
            items = [
                _procedure(i, starts[i]).model_copy(update={"complexity_score": 3.0}) for i in ids
            ]
            procedures_q.upsert_many(conn, items=items)
        else:
            outcomes_q.upsert_many(conn, items=[_outcome(i) for i in ids])
    return (time.perf_counter() - t0) * 1e6 / len(ids)


def write_cost(engines: dict[str, Engine], batches: int, size: int = 100) -> dict[str, Any]:
    """Return the median µs per row of upserts in batches of `size`, today's and past days'.

    The databases take turns batch by batch, so a busy moment of the machine falls on all.
    """
    rng = random.Random(1)
    now = datetime.now(UTC)
    times: dict[tuple[str, str], list[float]] = {}
    for n, kind in enumerate(("today", "past day")):
        ids = [n * batches * size + k for k in range(batches * size)]
        starts = {
            i: now - timedelta(seconds=rng.randint(1, 600))
            if kind == "today"
            else now - timedelta(days=rng.randint(1, 700))
            for i in ids
        }
        for what in CASES:
            for b in range(batches):
                chunk = ids[b * size : (b + 1) * size]
                for name, engine in engines.items():
                    per_row = _batch(engine, what, chunk, starts)
                    times.setdefault((name, f"{what}, {kind}"), []).append(per_row)
    out: dict[str, Any] = {}
    for (name, case), values in times.items():
        out.setdefault(name, {})[case] = round(statistics.median(values), 1)
    return out


def _drop_rollup_triggers(engine: Engine) -> None:
    with engine.begin() as conn:
        names = conn.execute(
            text(
                "SELECT tgname, tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal "
                "AND (tgname LIKE '%\\_stale\\_%' OR tgname LIKE '%\\_rollup\\_%')"
            )
        ).all()
        for name, table in names:
            conn.execute(text(f'DROP TRIGGER "{name}" ON "{table}"'))


def _database(cluster: Cluster, name: str, revision: str, procedures: int) -> Engine:
    url = cluster.recreate(name)
    engine = make_engine(url.replace("postgresql://", "postgresql+psycopg://"), pool_size=2)
    migrate.upgrade(engine, revision)
    data.build_api_dataset(
        url,
        procedures=procedures,
        telemetry_procedures=0,
        per_procedure=1,
        rollup=revision == "head",  # 0005's triggers kept their roll-ups during the load
    )
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--procedures", type=int, default=1_000_000, help="for the analytics")
    parser.add_argument("--rounds", type=int, default=30, help="timed calls per analytics")
    parser.add_argument("--write-procedures", type=int, default=20_000, help="for the writes")
    parser.add_argument("--batches", type=int, default=30, help="batches of 100 per write case")
    parser.add_argument("--only", default="analytics,writes", help="comma-separated phases")
    args = parser.parse_args()
    phases = set(args.only.split(","))
    cluster = Cluster(free_port())
    cluster.start()
    out: dict[str, Any] = {}
    try:
        if "analytics" in phases:
            engine = _database(cluster, "mr_analytics", "head", args.procedures)
            out["analytics"] = {
                "procedures": args.procedures,
                **time_analytics(engine, args.rounds),
            }
            print(json.dumps(out["analytics"]), flush=True)
            engine.dispose()
            cluster.recreate("mr_analytics")  # its space back before the next phase
        if "writes" in phases:
            # 0008: the previous design's triggers (0005); head: stale-day marks (0010).
            engines = {
                "0005 roll-up triggers": _database(
                    cluster, "mr_w0005", "0008", args.write_procedures
                ),
                "0010 stale-day marks": _database(
                    cluster, "mr_w0010", "head", args.write_procedures
                ),
                "no roll-up triggers": _database(
                    cluster, "mr_wnone", "head", args.write_procedures
                ),
            }
            _drop_rollup_triggers(engines["no roll-up triggers"])
            out["write_us_per_row"] = write_cost(engines, args.batches)
            for engine in engines.values():
                engine.dispose()
    finally:
        cluster.remove()
    print(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
