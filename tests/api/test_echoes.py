"""The API's errors name the parameter in a few bytes, whatever value was sent."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.fleet import Fleet

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


@pytest.mark.parametrize(
    ("path", "kept"),
    [
        ("/api/procedures?limit=2&category=general", "category=general"),
        ("/api/outcomes?limit=2&readmission=false", "readmission=false"),
        ("/api/robots?limit=2&facility_id=fac-boston", "facility_id=fac-boston"),
    ],
)
def test_an_unknown_parameter_is_not_carried_into_next(
    client: TestClient, fleet: Fleet, path: str, kept: str
) -> None:
    plain = client.get(path).json()
    r = client.get(f"{path}&{HUGE[:5000]}=1&utm_source=mail")
    assert r.status_code == 200
    body = r.json()
    assert body["next"] is not None and body["items"] == plain["items"]
    # The route's own parameters go on to the next page; the unknown ones do not.
    assert kept in body["next"] and "limit=2" in body["next"]
    assert "k" * 100 not in body["next"] and "utm_source" not in body["next"]
    assert body["next"] == plain["next"]
