"""The procedure detail's telemetry summary reads the procedure's own time span."""

from __future__ import annotations

import json
from datetime import timedelta

from pydantic import TypeAdapter
from sqlalchemy import Engine

from medrobotics.domain.procedures import ProcedureIn
from medrobotics.domain.telemetry import TelemetryIn
from medrobotics.ingestion import flows
from medrobotics.storage import procedures
from tests import factories as f


def test_summary_counts_samples_within_a_day_of_the_procedure(engine: Engine) -> None:
    proc = TypeAdapter(ProcedureIn).validate_json(json.dumps(f.procedure(1)))
    flows.write(engine, "procedures", [proc])
    inside = f.samples(5, start=f.T0 + timedelta(hours=1))
    edge = f.samples(1, start=proc.start_time - timedelta(hours=23))
    stray = f.samples(1, start=proc.start_time - timedelta(days=3))
    samples = TypeAdapter(list[TelemetryIn]).validate_json(json.dumps(inside + edge + stray))
    rows = [s.row() for s in samples]
    flows.write(engine, "telemetry", rows)
    with engine.connect() as conn:
        item = procedures.detail(conn, procedure_id="proc-1")
    assert item is not None
    assert item["telemetry"]["sample_count"] == 6
    assert item["telemetry"]["first_timestamp"] == proc.start_time - timedelta(hours=23)
