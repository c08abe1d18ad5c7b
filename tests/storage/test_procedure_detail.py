"""The procedure detail's telemetry summary, kept by the database on every insert."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Engine, text

from medrobotics.domain.procedures import ProcedureIn
from medrobotics.domain.telemetry import READINGS, TelemetryIn
from medrobotics.domain.units import READING
from medrobotics.ingestion import flows
from medrobotics.storage import procedures
from tests import factories as f
from tests.api.helpers import rounded


def _write(engine: Engine, samples: list[dict[str, Any]]) -> None:
    rows = [s.row() for s in TypeAdapter(list[TelemetryIn]).validate_json(json.dumps(samples))]
    flows.write(engine, "telemetry", rows)


def _expected(samples: list[dict[str, Any]]) -> dict[str, Any]:
    # The summary computed from the distinct samples, the way a reader would by hand.
    unique = {(s["procedure_id"], s["robot_id"], s["timestamp"]): s for s in samples}
    values = list(unique.values())
    channels = {}
    for name in READINGS:
        seen = [s[name] for s in values if s.get(name) is not None]
        channels[name] = {
            "count": len(seen),
            "min": min(seen) if seen else None,
            "mean": rounded(sum(seen) / len(seen), READING) if seen else None,
            "max": max(seen) if seen else None,
        }
    return {"sample_count": len(values), "channels": channels}


def _summary(engine: Engine, procedure_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        item = procedures.detail(conn, procedure_id=procedure_id)
    assert item is not None
    summary: dict[str, Any] = item["telemetry"]
    return summary


def test_summary_covers_every_sample_across_writes(engine: Engine) -> None:
    proc = TypeAdapter(ProcedureIn).validate_json(json.dumps(f.procedure(1)))
    flows.write(engine, "procedures", [proc])
    first = f.samples(5, start=f.T0 + timedelta(hours=1))
    # Far from the procedure's own times (a drifting clock) and with channels missing.
    stray = f.samples(2, start=proc.start_time - timedelta(days=40))
    for s in stray:
        s["grip_pressure"] = None
        s["arm_position_x"] = -7.5
    second = f.samples(3, start=f.T0 + timedelta(hours=2), robot_n=2)
    _write(engine, first)
    _write(engine, stray + second)
    _write(engine, first[:2] + second)  # re-sent: stored once, counted once
    summary = _summary(engine, "proc-1")
    everything = first + stray + second
    expected = _expected(everything)
    assert summary["sample_count"] == expected["sample_count"] == 10
    assert summary["channels"] == expected["channels"]
    assert summary["first_timestamp"] == proc.start_time - timedelta(days=40)
    assert summary["last_timestamp"] == f.T0 + timedelta(hours=2, milliseconds=20)


def test_summary_of_a_procedure_without_samples(engine: Engine) -> None:
    proc = TypeAdapter(ProcedureIn).validate_json(json.dumps(f.procedure(1)))
    flows.write(engine, "procedures", [proc])
    _write(engine, f.samples(3, procedure_n=2))  # another procedure's samples
    summary = _summary(engine, "proc-1")
    assert summary["sample_count"] == 0
    assert summary["first_timestamp"] is None
    assert summary["channels"]["camera_zoom"] == {
        "count": 0,
        "min": None,
        "mean": None,
        "max": None,
    }


def test_summary_exact_under_concurrent_writers(engine: Engine) -> None:
    # Eight writers, each a batch over the same four procedures in a different order: the
    # summary rows are taken in procedure order, so no writer deadlocks and no count is lost.
    batches = []
    for w in range(8):
        batch = []
        for p in (4, 2, 3, 1) if w % 2 else (1, 2, 3, 4):
            batch += f.samples(50, procedure_n=p, start=f.T0 + timedelta(minutes=w))
        batches.append(batch)
    procs = [f.procedure(p) for p in (1, 2, 3, 4)]
    flows.write(
        engine, "procedures", TypeAdapter(list[ProcedureIn]).validate_json(json.dumps(procs))
    )
    _write(engine, batches[0][:1])  # partitions and one row before the race
    errors: list[BaseException] = []

    def run(batch: list[dict[str, Any]]) -> None:
        try:
            _write(engine, batch)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    everything = [s for b in batches for s in b]
    for p in (1, 2, 3, 4):
        mine = [s for s in everything if s["procedure_id"] == f"proc-{p}"]
        with engine.connect() as conn:
            stored = conn.execute(
                text("SELECT sample_count FROM telemetry_summary WHERE procedure_id = :p"),
                {"p": f"proc-{p}"},
            ).scalar()
            counted = conn.execute(
                text("SELECT count(*) FROM telemetry WHERE procedure_id = :p"), {"p": f"proc-{p}"}
            ).scalar()
        assert stored == counted == len({s["timestamp"] for s in mine})
        assert _summary(engine, f"proc-{p}")["channels"] == _expected(mine)["channels"]
