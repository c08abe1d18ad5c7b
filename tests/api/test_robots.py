"""GET /api/robots and /api/robots/{id}."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from medrobotics.domain.units import HOURS, USD
from tests.api.helpers import assert_error, rounded, ts, walk
from tests.fleet import Fleet


def test_list_returns_every_robot_by_id(client: TestClient, fleet: Fleet) -> None:
    body = client.get("/api/robots").json()
    expected = sorted(r.robot_id for r in fleet.robots)
    assert [r["robot_id"] for r in body["items"]] == expected
    assert body["total"] == len(expected) and body["next"] is None and body["limit"] == 50
    one = next(r for r in body["items"] if r["robot_id"] == "robot-3")
    source = fleet.robot("robot-3")
    assert source is not None
    assert one["facility_name"] is None  # robot-3 sits in the facility without a name
    assert one["robot_model"] == source.robot_model and one["status"] == source.status
    assert one["installation_date"] == source.installation_date.isoformat()  # type: ignore[union-attr]
    ts(one["created_at"])


@pytest.mark.parametrize(
    ("param", "value", "attr"),
    [
        ("facility_id", "fac-austin", "facility_id"),
        ("status", "maintenance", "status"),
        ("status", "retired", "status"),
        ("model", "Versius", "robot_model"),
    ],
)
def test_filters(client: TestClient, fleet: Fleet, param: str, value: str, attr: str) -> None:
    body = client.get("/api/robots", params={param: value}).json()
    expected = sorted(r.robot_id for r in fleet.robots if getattr(r, attr) == value)
    assert expected
    assert [r["robot_id"] for r in body["items"]] == expected
    assert body["total"] == len(expected)


def test_pages_cover_every_robot_once(client: TestClient, fleet: Fleet) -> None:
    items, pages = walk(client, "/api/robots", limit=3)
    assert [r["robot_id"] for r in items] == sorted(r.robot_id for r in fleet.robots)
    assert pages == 3


def test_detail(client: TestClient, fleet: Fleet) -> None:
    robot_id = "robot-1"
    body = client.get(f"/api/robots/{robot_id}").json()
    mine = [p for p in fleet.procedures if p.robot_id == robot_id]
    assert body["procedure_count"] == len(mine)
    last = max(mine, key=lambda p: (p.start_time, p.procedure_id))
    assert body["last_procedure"]["procedure_id"] == last.procedure_id
    assert ts(body["last_procedure"]["start_time"]) == last.start_time
    assert "patient_id" not in body["last_procedure"]
    visits = [m for m in fleet.maintenance if m.robot_id == robot_id]
    latest = max(visits, key=lambda m: (m.maintenance_date, m.maintenance_id))
    assert body["maintenance"] == {
        "visits": len(visits),
        "total_cost": rounded(sum(m.cost for m in visits), USD),
        "total_downtime_hours": rounded(sum(m.downtime_hours for m in visits), HOURS),
        "last_maintenance_date": latest.maintenance_date.isoformat(),
        "last_maintenance_type": latest.maintenance_type,
        "next_maintenance_date": latest.next_maintenance_date.isoformat(),  # type: ignore[union-attr]
    }


def test_detail_of_an_idle_robot(client: TestClient, fleet: Fleet) -> None:
    body = client.get("/api/robots/robot-7").json()
    assert body["procedure_count"] == 0 and body["last_procedure"] is None
    assert body["maintenance"]["visits"] == 0
    assert body["maintenance"]["last_maintenance_date"] is None


def test_unknown_robot_is_404(client: TestClient, fleet: Fleet) -> None:
    assert_error(client.get("/api/robots/robot-999"), 404, "not_found")
    assert_error(client.get("/api/robots/" + "x" * 129), 422, "invalid", "robot_id")


def test_bad_parameters_are_422(client: TestClient) -> None:
    assert_error(client.get("/api/robots?status=broken"), 422, "invalid", "status")
    assert_error(client.get("/api/robots?limit=501"), 422, "invalid", "limit")
    assert_error(client.get("/api/robots?limit=0"), 422, "invalid", "limit")
    assert_error(client.get("/api/robots?offset=-1"), 422, "invalid", "offset")
