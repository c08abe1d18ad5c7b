"""The API's errors name the parameter in a few bytes, whatever value was sent."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

# The test client refuses URLs over 64 kB; servers pass longer ones.
HUGE = "k" * 60_000

PARAMS = [
    "/api/robots?status=",
    "/api/robots?facility_id=",
    "/api/robots?limit=",
    "/api/robots?offset=",
    "/api/procedures?start=",
    "/api/procedures?end=",
    "/api/procedures?cursor=",
    "/api/procedures?category=",
    "/api/procedures?robot_id=",
    "/api/outcomes?readmission=",
    "/api/analytics/procedure-volume?interval=",
    "/api/analytics/robot-utilization?days=",
    "/api/robots/",
    "/api/procedures/",
]


@pytest.mark.parametrize("path", PARAMS)
def test_a_huge_parameter_value_is_not_echoed(client: TestClient, path: str) -> None:
    r = client.get(path + HUGE)
    assert r.status_code == 422, r.text[:300]
    err = r.json()["error"]
    assert err["code"] == "invalid" and err["details"], err
    assert len(r.content) < 1024
    assert "k" * 100 not in r.text


def test_a_huge_unknown_parameter_does_not_change_the_error(client: TestClient) -> None:
    r = client.get(f"/api/robots?limit=0&{HUGE}=1")
    assert r.status_code == 422
    assert len(r.content) < 1024 and "k" * 100 not in r.text
