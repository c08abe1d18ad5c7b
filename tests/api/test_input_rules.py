"""The input rules at the query API, and what they protect: sums that stay finite.

Ids and filters without control characters (422, or 404 for a path), query times, cursors and
analytics windows at any calendar edge (422 naming the parameter, never an exception), and
the pages the robot detail and the analytics build from stored data. Both databases.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from medrobotics import auth
from medrobotics.api.app import create_app
from medrobotics.config import Settings
from medrobotics.domain.maintenance import MAX_COST
from medrobotics.domain.telemetry import RANGES, READINGS
from medrobotics.domain.units import READING, rounded
from medrobotics.ingestion.app import create_app as ingestion_app
from tests import factories as f
from tests.api.helpers import assert_error
from tests.fleet import Fleet

ANALYTICS = [
    "/api/analytics/robot-utilization",
    "/api/analytics/outcomes-summary",
    "/api/analytics/procedures-by-category",
    "/api/analytics/procedure-volume",
    "/api/analytics/procedure-volume?robot_id=robot-1",
    "/api/analytics/procedure-volume?interval=week",
    "/api/analytics/procedure-volume?interval=month",
    "/api/analytics/maintenance-costs",
]
LISTS = ["/api/procedures", "/api/outcomes", "/api/robots"]
EDGES = [
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:00:00-05:00",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "0001-01-31T23:59:59Z",
    "9999-12-01T00:00:00.000001Z",
]


def _with(path: str, **params: str) -> str:
    sep = "&" if "?" in path else "?"
    return path + sep + "&".join(f"{k}={quote(v)}" for k, v in params.items())


@pytest.fixture
def ingest(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """The ingestion service on the same database: data enters as clients send it."""
    with TestClient(ingestion_app(settings, engine=engine)) as c:
        yield c


# --- Ids and filters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/api/robots/a%00", "/api/procedures/a%00", "/api/procedures/a%00/telemetry",
     "/api/robots/%1B", "/api/procedures/robot-1%0A"],
)  # fmt: skip
def test_control_characters_in_a_path_are_422(client: TestClient, fleet: Fleet, path: str) -> None:
    name = "robot_id" if path.startswith("/api/robots") else "procedure_id"
    assert_error(client.get(path), 422, "invalid", name)


def test_odd_but_plain_path_ids_are_404(client: TestClient, fleet: Fleet) -> None:
    for ident in ("a b", "%C3%A9", "%ED%A0%80", "x" * 128):
        assert_error(client.get(f"/api/robots/{ident}"), 404, "not_found")
        assert_error(client.get(f"/api/procedures/{ident}"), 404, "not_found")
    assert_error(client.get("/api/robots/" + "x" * 129), 422, "invalid", "robot_id")


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/robots", "facility_id"),
        ("/api/robots", "model"),
        ("/api/procedures", "robot_id"),
        ("/api/procedures", "facility_id"),
        ("/api/procedures", "surgeon_id"),
        ("/api/analytics/robot-utilization", "facility_id"),
        ("/api/analytics/procedure-volume", "robot_id"),
        ("/api/analytics/maintenance-costs", "facility_id"),
    ],
)
def test_control_characters_in_a_filter_are_422(
    client: TestClient, fleet: Fleet, path: str, param: str
) -> None:
    for bad in ("a\x00", "robot-1\n", "\x7f", "\x9b"):
        assert_error(client.get(path, params={param: bad}), 422, "invalid", param)
    assert client.get(path, params={param: "no such thing"}).status_code == 200


@pytest.fixture
def keyed(settings: Settings, engine: Engine, fleet: Fleet) -> Iterator[tuple[TestClient, str]]:
    """The API with keys required, and a reader's key already verified (cached)."""
    key = auth.issue(engine, name="reader", scopes=["api:read"]).key
    s = settings.model_copy(update={"auth": "required", "auth_cache_seconds": 300})
    with TestClient(create_app(s, engine=engine), raise_server_exceptions=False) as c:
        assert c.get("/api/robots", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        yield c, key


def test_a_cached_key_meets_the_same_rules(keyed: tuple[TestClient, str]) -> None:
    client, key = keyed
    headers = {"Authorization": f"Bearer {key}"}
    cases = [
        ("/api/procedures?robot_id=a%00", "robot_id"),
        ("/api/procedures?surgeon_id=%0A", "surgeon_id"),
        ("/api/robots?facility_id=a%1B", "facility_id"),
        ("/api/robots?model=a%7F", "model"),
        ("/api/procedures/a%00", "procedure_id"),
    ]
    for path, field in cases:
        assert_error(client.get(path, headers=headers), 422, "invalid", field)


# --- Times, cursors and windows -----------------------------------------------------------------


@pytest.mark.parametrize("edge", EDGES)
@pytest.mark.parametrize("param", ["start", "end"])
def test_query_times_at_the_calendar_edges_are_422(
    client: TestClient, fleet: Fleet, edge: str, param: str
) -> None:
    series = f"/api/procedures/{fleet.procedures[0].procedure_id}/telemetry"
    for path in [*LISTS[:2], series, *ANALYTICS]:
        assert_error(client.get(_with(path, **{param: edge})), 422, "invalid", param)


def test_analytics_window_reaching_before_the_calendar_is_422(
    client: TestClient, fleet: Fleet
) -> None:
    for path in ANALYTICS:
        assert_error(client.get(_with(path, end="0001-01-05T00:00:00Z")), 422, "invalid", "end")
        assert_error(client.get(_with(path, end="0001-02-05T00:00:00Z")), 422, "invalid", "end")
        r = client.get(_with(path, end="0001-02-05T00:00:00Z", days="3"))
        assert r.status_code == 200, (path, r.text)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-02-01T00:00:00Z", "9999-12-01T00:00:00Z"),
        ("0001-02-01T00:00:00Z", "0001-02-01T00:00:01Z"),
        ("9999-11-30T23:00:00Z", "9999-12-01T00:00:00Z"),
        ("9999-11-30T23:00:00+01:00", "9999-11-30T23:30:00-00:30"),
    ],
)
def test_the_widest_query_windows_answer(
    client: TestClient, fleet: Fleet, start: str, end: str
) -> None:
    series = f"/api/procedures/{fleet.procedures[0].procedure_id}/telemetry"
    for path in [*LISTS[:2], series, *ANALYTICS]:
        r = client.get(_with(path, start=start, end=end))
        assert r.status_code == 200, (path, r.text)
    everything = client.get(_with(LISTS[0], start=start, end=end, limit="500")).json()["items"]
    if start.startswith("0001") and end.startswith("9999"):
        assert len(everything) == len(fleet.procedures)


def _cursor(time: str, ident: Any) -> str:
    raw = orjson.dumps([time, ident])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _cursor("0001-01-01T00:00:00+05:00", "proc-1"),
        _cursor("9999-12-31T23:00:00-05:00", "proc-1"),
        _cursor("0001-01-01T00:00:00+00:00", "proc-1"),
        _cursor("2025-01-01T00:00:00+00:00", "proc\x00"),
        _cursor("2025-01-01T00:00:00+00:00", "x" * 129),
        _cursor("2025-01-01T00:00:00+00:00", ""),
        "WyIyMDI1LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwgImFcdTAwMDAiXQ",  # ["…", "a\u0000"]
    ],
)
def test_cursors_never_issued_are_422(client: TestClient, fleet: Fleet, cursor: str) -> None:
    for path in LISTS[:2]:
        assert_error(client.get(path, params={"cursor": cursor}), 422, "invalid", "cursor")


# --- Finite sums --------------------------------------------------------------------------------


def test_largest_readings_keep_the_summary_finite(
    client: TestClient, ingest: TestClient, engine: Engine
) -> None:
    start = datetime(2025, 3, 1, 8, tzinfo=UTC)
    procedure = f.procedure(1, start_time=start.isoformat(), end_time=None, status=None)
    assert ingest.post("/ingest/procedure", json=procedure).status_code == 201
    samples = []
    for n, bound in enumerate(("high", "high", "low")):
        sample = {"procedure_id": "proc-1", "robot_id": "robot-1"}
        sample["timestamp"] = (start + timedelta(seconds=n)).isoformat()
        for name in READINGS:
            low, high, _ = RANGES[name]
            sample[name] = high if bound == "high" else low
        samples.append(sample)
    for sample in samples:  # one at a time: each updates the running summary
        assert ingest.post("/ingest/telemetry", json=sample).status_code == 201
    for bad in (1.7e308, float(RANGES["arm_position_x"].high) * 2):
        sample = samples[0] | {"timestamp": (start + timedelta(seconds=9)).isoformat()}
        r = ingest.post("/ingest/telemetry", json=sample | {"arm_position_x": bad})
        assert_error(r, 422, "invalid", "arm_position_x")
    detail = client.get("/api/procedures/proc-1")
    assert detail.status_code == 200, detail.text
    channels = detail.json()["telemetry"]["channels"]
    for name in READINGS:
        low, high, _ = RANGES[name]
        stats = channels[name]
        assert stats["count"] == 3
        assert stats["min"] == low and stats["max"] == high
        assert math.isfinite(stats["mean"])
        assert stats["mean"] == rounded((2 * high + low) / 3, READING)
    series = client.get("/api/procedures/proc-1/telemetry?interval_ms=60000").json()
    assert series["values"]["arm_position_x"] == [rounded((2 * 10_000 - 10_000) / 3, READING)]


def test_largest_costs_keep_robot_and_fleet_sums_finite(
    client: TestClient, ingest: TestClient, engine: Engine
) -> None:
    assert ingest.post("/ingest/robot", json=f.robot(1)).status_code == 201
    today = datetime.now(UTC).date()
    for n in (1, 2, 3):
        day = (today - timedelta(days=n)).isoformat()
        visit = f.visit(n, maintenance_date=day, next_maintenance_date=None)
        r = ingest.post(
            "/ingest/maintenance", json=visit | {"cost": MAX_COST, "downtime_hours": 8760}
        )
        assert r.status_code == 201, r.text
    for cost in (1.7e308, MAX_COST + 1):
        r = ingest.post("/ingest/maintenance", json=f.visit(9, cost=cost))
        assert_error(r, 422, "invalid", "cost")
    robot = client.get("/api/robots/robot-1")
    assert robot.status_code == 200, robot.text
    summary = robot.json()["maintenance"]
    assert summary["total_cost"] == 3 * MAX_COST and summary["total_downtime_hours"] == 3 * 8760
    costs = client.get("/api/analytics/maintenance-costs?days=30")
    assert costs.status_code == 200, costs.text
    assert costs.json()["total_cost"] == 3 * MAX_COST
    assert costs.json()["robots"][0]["total_cost"] == 3 * MAX_COST


def test_a_derived_duration_cannot_inflate_utilization(
    client: TestClient, ingest: TestClient, engine: Engine
) -> None:
    assert ingest.post("/ingest/robot", json=f.robot(1)).status_code == 201
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=200)
    years = f.procedure(1, start_time=start.isoformat(), status=None)
    years["end_time"] = (start + timedelta(days=190)).isoformat()
    assert_error(ingest.post("/ingest/procedure", json=years), 422, "invalid", "end_time")
    week = years | {"end_time": (start + timedelta(days=7)).isoformat()}
    assert ingest.post("/ingest/procedure", json=week).status_code == 201
    body = client.get("/api/analytics/robot-utilization?days=365").json()
    [robot] = [r for r in body["robots"] if r["robot_id"] == "robot-1"]
    assert robot["hours_in_use"] == pytest.approx(7 * 24)
    assert robot["utilization"] <= 1
