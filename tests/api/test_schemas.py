"""Every answer matches the response model its route declares, on both databases.

Pages and details are written once, by orjson, from typed rows (not re-validated by FastAPI):
the response models are the contract, and this test holds every route's answers to them.
"""

from __future__ import annotations

from typing import Any

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from medrobotics.api import analytics, outcomes, procedures, robots
from medrobotics.api.deps import Caller, get_caller
from tests.fleet import Fleet


def _no_undeclared(model: type[BaseModel], body: Any) -> None:
    # Validation ignores unknown keys: an answer must not carry what its model does not declare.
    assert set(body) <= set(model.model_fields), set(body) - set(model.model_fields)
    for name, info in model.model_fields.items():
        value = body.get(name)
        inner = info.annotation
        args = getattr(inner, "__args__", ())
        sub = next(
            (a for a in (inner, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
        item = next(
            (
                getattr(a, "__args__", (None,))[0]
                for a in (inner, *args)
                if getattr(a, "__origin__", None) is list
            ),
            None,
        )
        mapping = any(getattr(a, "__origin__", None) is dict for a in (inner, *args))
        if sub is not None and isinstance(value, dict) and not mapping:
            _no_undeclared(sub, value)
        if isinstance(item, type) and issubclass(item, BaseModel) and isinstance(value, list):
            for v in value:
                _no_undeclared(item, v)


def _requests(fleet: Fleet) -> dict[str, list[str]]:
    """Requests answering 200, by route: every shape of every list, detail and report."""
    with_telemetry = fleet.procedures[0].procedure_id
    with_outcome = fleet.outcomes[0].procedure_id
    bare = next(
        p.procedure_id
        for p in fleet.procedures
        if p.procedure_id not in {o.procedure_id for o in fleet.outcomes}
    )
    ghost = next(p.procedure_id for p in fleet.procedures if p.robot_id == "robot-ghost")
    robot = fleet.robots[0].robot_id
    return {
        "/health": ["/health"],
        "/api/health": ["/api/health"],
        "/api/robots": [
            "/api/robots?limit=500",
            "/api/robots?limit=2&offset=2&status=operational",
            f"/api/robots?facility_id=fac-boston&model={fleet.robots[0].robot_model}",
            "/api/robots?offset=1000",  # past the end: no items, the total still given
        ],
        "/api/robots/{robot_id}": [
            f"/api/robots/{robot}",
            f"/api/robots/{fleet.robots[-1].robot_id}",
        ],
        "/api/procedures": [
            "/api/procedures?limit=500",
            "/api/procedures?limit=3&category=cardiac&status=completed",
            f"/api/procedures?robot_id={robot}&facility_id=fac-boston&surgeon_id=surgeon-1",
            "/api/procedures?start=2000-01-01&end=2100-01-01&limit=1",
            "/api/procedures?surgeon_id=nobody",  # an empty page
        ],
        "/api/procedures/{procedure_id}": [
            f"/api/procedures/{p}" for p in (with_telemetry, with_outcome, bare, ghost)
        ],
        "/api/procedures/{procedure_id}/telemetry": [
            f"/api/procedures/{with_telemetry}/telemetry",
            f"/api/procedures/{bare}/telemetry?channels=system_temperature&interval_ms=60000",
        ],
        "/api/outcomes": [
            "/api/outcomes?limit=500",
            "/api/outcomes?limit=2&success_status=successful&readmission=false",
            "/api/outcomes?category=cardiac&start=2000-01-01",
        ],
        "/api/analytics/robot-utilization": [
            "/api/analytics/robot-utilization",
            "/api/analytics/robot-utilization?facility_id=fac-boston&days=30",
        ],
        "/api/analytics/outcomes-summary": ["/api/analytics/outcomes-summary"],
        "/api/analytics/procedures-by-category": ["/api/analytics/procedures-by-category?days=90"],
        "/api/analytics/procedure-volume": [
            "/api/analytics/procedure-volume",
            f"/api/analytics/procedure-volume?interval=week&category=cardiac&robot_id={robot}",
            "/api/analytics/procedure-volume?interval=month&days=365",
        ],
        "/api/analytics/maintenance-costs": [
            "/api/analytics/maintenance-costs",
            "/api/analytics/maintenance-costs?facility_id=fac-austin",
        ],
    }


def _routes(client: TestClient) -> dict[str, APIRoute]:
    app: Any = client.app
    routers = [app.router, *(m.router for m in (robots, procedures, outcomes, analytics))]
    found = {
        r.path: r
        for router in routers
        for r in router.routes
        if isinstance(r, APIRoute) and "GET" in r.methods and r.response_model is not None
    }
    # Every JSON operation the service documents is among them (none is left unchecked).
    documented = {
        path
        for path, item in client.get("/api/openapi.json").json()["paths"].items()
        if "application/json"
        in item.get("get", {}).get("responses", {}).get("200", {}).get("content", {})
    }
    assert documented == set(found), documented ^ set(found)
    return found


def _check(client: TestClient, fleet: Fleet) -> int:
    routes, requests = _routes(client), _requests(fleet)
    # A route added without requests here fails until it is held to its model too.
    assert set(routes) == set(requests)
    checked = 0
    for path, route in routes.items():
        model = route.response_model
        assert isinstance(model, type) and issubclass(model, BaseModel), path
        for url in requests[path]:
            response = client.get(url)
            assert response.status_code == 200, (url, response.text)
            model.model_validate_json(response.content)  # the JSON itself, as a client reads it
            _no_undeclared(model, response.json())
            checked += 1
    return checked


def test_every_answer_matches_its_route_model(client: TestClient, fleet: Fleet) -> None:
    assert _check(client, fleet) > 30


def test_answers_without_patient_data_match_too(client: TestClient, fleet: Fleet) -> None:
    app: Any = client.app
    app.dependency_overrides[get_caller] = lambda: Caller(name="reader", phi=False)
    assert _check(client, fleet) > 30


def test_times_carry_an_explicit_offset(client: TestClient, fleet: Fleet) -> None:
    for path in ("/api/procedures?limit=5", "/api/outcomes?limit=5", "/api/robots?limit=5"):
        items = client.get(path).json()["items"]
        assert items and all(i["created_at"].endswith("+00:00") for i in items), path
