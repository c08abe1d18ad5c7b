"""The service as a whole: health, docs, patient data, and the database being away."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from medrobotics import config, metrics
from medrobotics.api.app import create_app
from medrobotics.api.deps import Caller, get_caller
from medrobotics.config import Settings
from medrobotics.domain.outcomes import PHI_FIELDS as OUTCOME_PHI
from medrobotics.domain.procedures import PHI_FIELDS as PROCEDURE_PHI
from tests.api.helpers import assert_error, walk
from tests.fleet import Fleet

GUIDE = [
    "/api/robots",
    "/api/procedures?category=urological&limit=10",
    "/api/analytics/robot-utilization",
    "/api/analytics/outcomes-summary",
    "/api/health",
]


def test_health(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/api/health")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"


def test_guide_commands_answer(client: TestClient, fleet: Fleet) -> None:
    for path in GUIDE:
        assert client.get(path).status_code == 200, path


def test_docs_and_openapi(client: TestClient) -> None:
    assert client.get("/api/docs").status_code == 200
    spec = client.get("/api/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/api/robots",
        "/api/robots/{robot_id}",
        "/api/procedures",
        "/api/procedures/{procedure_id}",
        "/api/procedures/{procedure_id}/telemetry",
        "/api/outcomes",
        "/api/analytics/robot-utilization",
        "/api/analytics/outcomes-summary",
        "/api/analytics/procedures-by-category",
        "/api/analytics/procedure-volume",
        "/api/analytics/maintenance-costs",
        "/api/health",
        "/health",
    ):
        op = paths[path]["get"]
        assert "$ref" in str(op["responses"]["200"]), path
    category = next(
        p for p in paths["/api/procedures"]["get"]["parameters"] if p["name"] == "category"
    )
    assert "urological" in str(category["schema"])
    assert "phi:read" in str(spec["components"]["schemas"]["ProcedureOut"])


def test_unknown_path_uses_the_error_body(client: TestClient) -> None:
    assert_error(client.get("/api/nothing-here"), 404, "not_found")


def test_patient_data_present_with_the_scope(client: TestClient, fleet: Fleet) -> None:
    items, _ = walk(client, "/api/procedures", limit=500)
    assert all(set(PROCEDURE_PHI) <= set(p) for p in items)
    assert any(p["patient_id"] for p in items)
    outcomes, _ = walk(client, "/api/outcomes", limit=500)
    assert all(o["surgeon_notes"] for o in outcomes)


def test_patient_data_omitted_without_the_scope(client: TestClient, fleet: Fleet) -> None:
    client.app.dependency_overrides[get_caller] = lambda: Caller(name="reader", phi=False)  # type: ignore[attr-defined]
    phi = set(PROCEDURE_PHI) | set(OUTCOME_PHI)
    items, _ = walk(client, "/api/procedures", limit=500)
    assert len(items) == len(fleet.procedures)
    assert all(not phi & set(p) for p in items)
    # Other empty fields stay, as null: only patient data is left out.
    assert any(p["end_time"] is None for p in items)
    outcomes, _ = walk(client, "/api/outcomes", limit=500)
    assert outcomes and all("surgeon_notes" not in o for o in outcomes)
    with_outcome = fleet.outcomes[0].procedure_id
    detail = client.get(f"/api/procedures/{with_outcome}").json()
    assert not phi & set(detail) and not phi & set(detail["outcome"])
    assert detail["outcome"]["success_status"] == fleet.outcomes[0].success_status


def _down_urls(tmp_path: Path) -> list[str]:
    # Nothing listens on port 1; the SQLite file's folder does not exist (and is not created).
    return [
        "postgresql+psycopg://postgres@127.0.0.1:1/x?connect_timeout=2",
        f"sqlite:///{tmp_path / 'missing' / 'deeper' / 'x.db'}",
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["postgresql", "sqlite"])
def test_database_unreachable_is_503(tmp_path: Path, which: int) -> None:
    url = _down_urls(tmp_path)[which]
    settings: Settings = config.load(environment="test", MEDROBOTICS_DATA_DIR=str(tmp_path))
    engine = create_engine(url)
    with TestClient(create_app(settings, engine=engine)) as client:
        for path in [*GUIDE, "/api/robots/robot-1", "/api/procedures/p-1", "/api/outcomes"]:
            response = client.get(path)
            assert response.status_code == 503, path
            assert response.headers["retry-after"].isdigit()
            if path != "/api/health":
                assert_error(response, 503, "unavailable")
        assert client.get("/health").status_code == 200
    engine.dispose()


def test_an_exhausted_pool_answers_503_without_waiting_long(
    settings: Settings, fleet: Fleet
) -> None:
    """No connection free within the checkout timeout: the read answers 503 and the error body."""
    s = settings.model_copy(update={"db_pool_size": 1, "db_pool_timeout_s": 0.2})
    app = create_app(s)  # its own engine, made from the settings
    engine = app.state.engine
    assert engine.pool.timeout() == 0.2
    with TestClient(app) as client:
        pid = fleet.procedures[0].procedure_id
        paths = ["/api/procedures", f"/api/procedures/{pid}", "/api/outcomes", "/api/robots"]
        assert all(client.get(p).status_code == 200 for p in paths)
        # Every connection the pool may open, taken elsewhere (a stuck query, a burst).
        held = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]
        try:
            for path in [*paths, "/api/analytics/outcomes-summary", "/api/robots/robot-1"]:
                response = client.get(path)
                assert_error(response, 503, "unavailable")
                assert response.headers["retry-after"] == "5"
                assert response.json()["error"]["message"] == "database unavailable"
            assert client.get("/api/health").status_code == 503
        finally:
            for conn in held:
                conn.close()
        assert all(client.get(p).status_code == 200 for p in paths)  # back at once
    labels = {"service": "api-service", "method": "GET", "route": "/api/outcomes", "status": "503"}
    assert (metrics.REGISTRY.get_sample_value("medrobotics_requests_total", labels) or 0) >= 1
    engine.dispose()


def test_the_pool_timeout_is_at_most_two_seconds() -> None:
    assert config.load(environment="test").db_pool_timeout_s == 2
    with pytest.raises(config.ConfigError, match="MEDROBOTICS_DB_POOL_TIMEOUT"):
        config.load(environment="test", MEDROBOTICS_DB_POOL_TIMEOUT="10")
