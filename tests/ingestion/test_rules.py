"""The input rules at the ingestion service: one answer on both databases, never a 5xx.

Text without control characters, times inside the plausible window, readings and costs in
their ranges (docs/data-rules.md). Every case runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select

from medrobotics.domain.types import plain
from medrobotics.storage.tables import maintenance, outcomes, procedures, robots, telemetry
from tests import factories as f
from tests.api.helpers import assert_error
from tests.conftest import GUIDE_SAMPLE
from tests.ingestion.test_endpoints import JSON, NDJSON, count, ndjson, rows

NUL = "a\x00b"
CALENDAR_EDGES = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"]


def _tables_empty(engine: Engine) -> None:
    for table in (telemetry, procedures, outcomes, robots, maintenance):
        assert count(engine, table) == 0, table.name


def _sample(**kw: Any) -> dict[str, Any]:
    return GUIDE_SAMPLE | kw


def _telemetry_posts(client: TestClient, records: list[dict[str, Any]]) -> list[Any]:
    """The same samples by every telemetry route: single, array, JSON batch, NDJSON, gzip."""
    out = [
        client.post("/ingest/telemetry", json=records[0]),
        client.post("/ingest/telemetry", json=records),
        client.post("/ingest/batch", json={"type": "telemetry", "records": records}),
        client.post("/ingest/batch?type=telemetry", content=ndjson(records), headers=NDJSON),
        client.post(
            "/ingest/telemetry",
            content=gzip.compress(json.dumps(records).encode()),
            headers=JSON | {"content-encoding": "gzip"},
        ),
    ]
    return out


# --- Text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [NUL, "\x1b[2J", "tab\there", "line\n", "\x7f", "\x9b"])
def test_control_characters_in_tool_type_are_422_by_every_route(
    client: TestClient, engine: Engine, bad: str
) -> None:
    records = [_sample(tool_type=bad), _sample(timestamp="2025-10-27T10:00:01")]
    for r in _telemetry_posts(client, records):
        assert_error(r, 422, "invalid", "tool_type")
    _tables_empty(engine)


@pytest.mark.parametrize("field", ["procedure_id", "robot_id"])
def test_control_characters_in_sample_ids_are_422(
    client: TestClient, engine: Engine, field: str
) -> None:
    for bad in (NUL, "robot-1\n", "robot-1\r\n", "\trobot"):
        for r in _telemetry_posts(client, [_sample(**{field: bad})]):
            assert_error(r, 422, "invalid", field)
    _tables_empty(engine)


TEXT_FIELDS: list[tuple[str, str, dict[str, Any], bool]] = [
    ("/ingest/robot", "robot_id", f.robot(1), False),
    ("/ingest/robot", "robot_serial_number", f.robot(1), False),
    ("/ingest/robot", "robot_model", f.robot(1), False),
    ("/ingest/robot", "manufacturer", f.robot(1), False),
    ("/ingest/robot", "facility_id", f.robot(1), False),
    ("/ingest/robot", "facility_name", f.robot(1), False),
    ("/ingest/robot", "firmware_version", f.robot(1), False),
    ("/ingest/procedure", "procedure_id", f.procedure(1), False),
    ("/ingest/procedure", "robot_id", f.procedure(1), False),
    ("/ingest/procedure", "procedure_type", f.procedure(1), False),
    ("/ingest/procedure", "surgeon_id", f.procedure(1), False),
    ("/ingest/procedure", "surgeon_name", f.procedure(1), False),
    ("/ingest/procedure", "patient_id", f.procedure(1), False),
    ("/ingest/procedure", "patient_gender", f.procedure(1), False),
    ("/ingest/outcome", "procedure_id", f.outcome(1), False),
    ("/ingest/outcome", "surgeon_notes", f.outcome(1), True),
    ("/ingest/maintenance", "maintenance_id", f.visit(1), False),
    ("/ingest/maintenance", "robot_id", f.visit(1), False),
    ("/ingest/maintenance", "technician_id", f.visit(1), False),
    ("/ingest/maintenance", "technician_name", f.visit(1), False),
    ("/ingest/maintenance", "issues_found", f.visit(1), True),
    ("/ingest/maintenance", "actions_taken", f.visit(1), True),
]


@pytest.mark.parametrize(("path", "field", "record", "long"), TEXT_FIELDS)
def test_nul_and_controls_in_every_text_field_are_422(
    client: TestClient, engine: Engine, path: str, field: str, record: dict[str, Any], long: bool
) -> None:
    entity = {"robot": "robots", "procedure": "procedures", "outcome": "outcomes"}.get(
        path.rsplit("/", 1)[1], "maintenance"
    )
    bad = [NUL, "\x1b", "\x85"] + ([] if long else ["two\nlines", "a\tb"])
    for value in bad:
        sent = record | {field: value}
        for r in (
            client.post(path, json=sent),
            client.post("/ingest/batch", json={"type": entity, "records": [sent]}),
            client.post(f"/ingest/batch?type={entity}", content=ndjson([sent]), headers=NDJSON),
        ):
            assert_error(r, 422, "invalid", field)
    _tables_empty(engine)


def test_list_items_follow_the_text_rule(client: TestClient, engine: Engine) -> None:
    assert client.post("/ingest/robot", json=f.robot(1)).status_code == 201
    assert client.post("/ingest/procedure", json=f.procedure(1)).status_code == 201
    r = client.post("/ingest/maintenance", json=f.visit(1, parts_replaced=["filter", NUL]))
    assert_error(r, 422, "invalid", "parts_replaced.1")
    r = client.post("/ingest/outcome", json=f.outcome(1, complications=[NUL]))
    assert_error(r, 422, "invalid", "complications.0")
    assert count(engine, maintenance) == 0 and count(engine, outcomes) == 0


def test_free_text_keeps_tabs_and_line_breaks_on_both_databases(
    client: TestClient, engine: Engine
) -> None:
    notes = "Line one\r\nline two\n\tindented: ok"
    assert client.post("/ingest/robot", json=f.robot(1)).status_code == 201
    assert client.post("/ingest/procedure", json=f.procedure(1)).status_code == 201
    assert client.post("/ingest/outcome", json=f.outcome(1, surgeon_notes=notes)).status_code == 201
    r = client.post("/ingest/maintenance", json=f.visit(1, issues_found=notes, actions_taken=notes))
    assert r.status_code == 201, r.text
    assert rows(engine, outcomes)[0]["surgeon_notes"] == notes
    [visit] = rows(engine, maintenance)
    assert visit["issues_found"] == notes and visit["actions_taken"] == notes


@pytest.mark.parametrize("text", [b'"\\ud800"', b'"\\udc00 tail"', b'"\xed\xa0\x80"', b'"\xff"'])
def test_lone_surrogates_and_bytes_not_utf8_are_400(
    client: TestClient, engine: Engine, text: bytes
) -> None:
    # A lone surrogate cannot be stored by either database; JSON that carries one (escaped or
    # encoded) is malformed, and so is a body that is not UTF-8.
    sample = json.dumps(_sample(tool_type="@")).encode().replace(b'"@"', text)
    robot = json.dumps(f.robot(1, robot_model="@")).encode().replace(b'"@"', text)
    for r in (
        client.post("/ingest/telemetry", content=sample, headers=JSON),
        client.post("/ingest/telemetry", content=b"[" + sample + b"]", headers=JSON),
        client.post("/ingest/batch?type=telemetry", content=sample + b"\n", headers=NDJSON),
        client.post("/ingest/robot", content=robot, headers=JSON),
        client.post("/ingest/batch?type=robots", content=robot + b"\n", headers=NDJSON),
    ):
        assert_error(r, 400, "malformed")
    _tables_empty(engine)


ODD_BUT_PLAIN = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=40
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(model=ODD_BUT_PLAIN)
def test_what_the_text_rule_accepts_both_databases_store_unchanged(
    client: TestClient, engine: Engine, model: str
) -> None:
    assert plain(model)
    r = client.post("/ingest/robot", json=f.robot(1, robot_model=model, robot_serial_number=None))
    assert r.status_code == 201, r.text
    with engine.connect() as conn:
        stored = conn.execute(select(robots.c.robot_model)).scalar_one()
    assert stored == model


# --- Time ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stamp", CALENDAR_EDGES)
def test_sample_times_at_the_calendar_edges_are_422(
    client: TestClient, engine: Engine, stamp: str
) -> None:
    for r in _telemetry_posts(client, [_sample(timestamp=stamp)]):
        assert_error(r, 422, "invalid", "timestamp")
    _tables_empty(engine)


@pytest.mark.parametrize("field", ["start_time", "end_time"])
@pytest.mark.parametrize("stamp", [*CALENDAR_EDGES, "1999-12-31T23:59:59Z", "2999-01-01T00:00:00Z"])
def test_procedure_times_outside_the_window_are_422(
    client: TestClient, engine: Engine, field: str, stamp: str
) -> None:
    record = f.procedure(1, **{field: stamp})
    if field == "start_time":
        record["end_time"] = None
    assert_error(client.post("/ingest/procedure", json=record), 422, "invalid", field)
    _tables_empty(engine)


def test_sample_times_must_lie_in_the_plausible_window(client: TestClient, engine: Engine) -> None:
    now = datetime.now(UTC)
    for stamp in ("1999-12-31T23:59:59.999999Z", (now + timedelta(days=2)).isoformat()):
        for r in _telemetry_posts(client, [_sample(timestamp=stamp)]):
            assert_error(r, 422, "invalid", "timestamp")
    _tables_empty(engine)
    inside = ["2000-01-01T00:00:00Z", (now + timedelta(hours=23)).isoformat()]
    r = client.post("/ingest/telemetry", json=[_sample(timestamp=t) for t in inside])
    assert r.status_code == 201, r.text
    assert count(engine, telemetry) == 2


@pytest.mark.parametrize(
    ("path", "record", "field", "bad", "good"),
    [
        ("/ingest/robot", f.robot(1), "installation_date", "1999-12-31", "2000-01-01"),
        ("/ingest/robot", f.robot(1), "last_maintenance_date", "2999-01-01", "2025-01-01"),
        ("/ingest/maintenance", f.visit(1), "maintenance_date", "0001-01-01", "2025-06-01"),
        ("/ingest/maintenance", f.visit(1), "next_maintenance_date", "2999-01-01", "2030-01-01"),
    ],
)
def test_days_must_lie_in_their_window(
    client: TestClient, engine: Engine, path: str, record: dict[str, Any], field: str, bad: str,
    good: str,
) -> None:  # fmt: skip
    if path == "/ingest/maintenance":
        assert client.post("/ingest/robot", json=f.robot(1)).status_code == 201
    assert_error(client.post(path, json=record | {field: bad}), 422, "invalid", field)
    r = client.post(path, json=record | {field: good})
    assert r.status_code == 201, r.text


def test_next_maintenance_may_be_planned_years_ahead_but_not_decades(
    client: TestClient, engine: Engine
) -> None:
    assert client.post("/ingest/robot", json=f.robot(1)).status_code == 201
    today = datetime.now(UTC).date()
    ahead = {"next_maintenance_date": today.replace(year=today.year + 9).isoformat()}
    assert client.post("/ingest/maintenance", json=f.visit(1) | ahead).status_code == 201
    later = {"next_maintenance_date": today.replace(year=today.year + 11).isoformat()}
    assert_error(
        client.post("/ingest/maintenance", json=f.visit(2) | later),
        422,
        "invalid",
        "next_maintenance_date",
    )


def test_derived_duration_over_seven_days_names_end_time(
    client: TestClient, engine: Engine
) -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    long = f.procedure(1, start_time=start.isoformat(), status=None)
    long["end_time"] = (start + timedelta(days=7, seconds=1)).isoformat()
    assert_error(client.post("/ingest/procedure", json=long), 422, "invalid", "end_time")
    r = client.post("/ingest/batch", json={"type": "procedures", "records": [long]})
    assert_error(r, 422, "invalid", "end_time")
    assert count(engine, procedures) == 0
    long["end_time"] = (start + timedelta(days=7)).isoformat()
    assert client.post("/ingest/procedure", json=long).status_code == 201
    assert rows(engine, procedures)[0]["duration_minutes"] == 7 * 24 * 60


# --- Ranges -------------------------------------------------------------------------------------


def test_readings_that_would_overflow_a_sum_are_422(client: TestClient, engine: Engine) -> None:
    for value in (1.7e308, -1.7e308, 10_000.5):
        records = [_sample(arm_position_x=value), _sample(timestamp="2025-10-27T10:00:01")]
        for r in _telemetry_posts(client, records):
            assert_error(r, 422, "invalid", "arm_position_x")
    _tables_empty(engine)


def test_costs_that_would_overflow_a_sum_are_422(client: TestClient, engine: Engine) -> None:
    assert client.post("/ingest/robot", json=f.robot(1)).status_code == 201
    for n in (1, 2):
        r = client.post("/ingest/maintenance", json=f.visit(n, cost=1.7e308))
        assert_error(r, 422, "invalid", "cost")
    r = client.post("/ingest/maintenance", json=f.visit(3, downtime_hours=1e300))
    assert_error(r, 422, "invalid", "downtime_hours")
    assert count(engine, maintenance) == 0


def test_outcome_measures_have_ranges(client: TestClient, engine: Engine) -> None:
    assert client.post("/ingest/procedure", json=f.procedure(1)).status_code == 201
    for field, value in (("blood_loss_ml", 1.7e308), ("hospital_stay_days", 1e6)):
        r = client.post("/ingest/outcome", json=f.outcome(1, **{field: value}))
        assert_error(r, 422, "invalid", field)
    assert count(engine, outcomes) == 0
