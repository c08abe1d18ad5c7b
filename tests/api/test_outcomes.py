"""GET /api/outcomes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import assert_error, ts, walk
from tests.fleet import Fleet


def _expected(fleet: Fleet, keep: Any) -> list[str]:
    rows = [(fleet.procedure(o.procedure_id), o) for o in fleet.outcomes]
    rows = [(p, o) for p, o in rows if keep(p, o)]
    rows.sort(key=lambda po: (po[0].start_time, po[0].procedure_id), reverse=True)
    return [p.procedure_id for p, _ in rows]


def test_all_outcomes_newest_first(client: TestClient, fleet: Fleet) -> None:
    items, pages = walk(client, "/api/outcomes", limit=10)
    assert [o["procedure_id"] for o in items] == _expected(fleet, lambda p, o: True)
    assert pages == -(-len(fleet.outcomes) // 10)
    first = items[0]
    source = next(o for o in fleet.outcomes if o.procedure_id == first["procedure_id"])
    proc = fleet.procedure(first["procedure_id"])
    assert first["complications"] == source.complications
    assert first["success_status"] == source.success_status
    assert first["robot_id"] == proc.robot_id and ts(first["start_time"]) == proc.start_time
    assert first["surgeon_notes"] == source.surgeon_notes


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({"success_status": "failed"}, lambda p, o: o.success_status == "failed"),
        ({"category": "cardiac"}, lambda p, o: p.procedure_category == "cardiac"),
        ({"readmission": "true"}, lambda p, o: o.readmission_30day),
        ({"readmission": "false"}, lambda p, o: not o.readmission_30day),
        (
            {"success_status": "successful", "category": "general"},
            lambda p, o: o.success_status == "successful" and p.procedure_category == "general",
        ),
    ],
)
def test_filters(client: TestClient, fleet: Fleet, params: dict[str, str], keep: Any) -> None:
    items, _ = walk(client, "/api/outcomes", limit=4, **params)
    expected = _expected(fleet, keep)
    assert expected
    assert [o["procedure_id"] for o in items] == expected


def test_time_range(client: TestClient, fleet: Fleet) -> None:
    start, end = fleet.now - timedelta(days=30), fleet.now - timedelta(days=10)
    items, _ = walk(client, "/api/outcomes", start=start.isoformat(), end=end.isoformat(), limit=5)
    expected = _expected(fleet, lambda p, o: start <= p.start_time < end)
    assert expected and [o["procedure_id"] for o in items] == expected


def test_bad_parameters_are_422(client: TestClient) -> None:
    assert_error(client.get("/api/outcomes?success_status=meh"), 422, "invalid", "success_status")
    assert_error(client.get("/api/outcomes?category=dental"), 422, "invalid", "category")
    assert_error(client.get("/api/outcomes?readmission=maybe"), 422, "invalid", "readmission")
    assert_error(client.get("/api/outcomes?cursor=%%%"), 422, "invalid", "cursor")
    refused = client.get("/api/outcomes?offset=20&limit=10")
    assert_error(refused, 422, "invalid", "offset")
    assert "cursor" in refused.json()["error"]["details"][0]["message"]
    assert_error(client.get("/api/outcomes?limit=1000"), 422, "invalid", "limit")
    assert_error(
        client.get("/api/outcomes?start=2025-02-01T00:00:00&end=2025-01-01T00:00:00"),
        422,
        "invalid",
        "end",
    )
