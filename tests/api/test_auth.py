"""API keys on the query API: refusals, PHI only with phi:read, and the audit of PHI reads."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from medrobotics import auth
from medrobotics.api.app import create_app
from medrobotics.config import Settings
from medrobotics.storage import keys
from tests.fleet import Fleet

PHI = ("patient_id", "patient_age", "patient_gender", "surgeon_notes")


@pytest.fixture
def locked(settings: Settings, engine: Engine, fleet: Fleet) -> Iterator[TestClient]:
    s = settings.model_copy(update={"auth": "required", "auth_cache_seconds": 0})
    with TestClient(create_app(s, engine=engine)) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def endpoints(fleet: Fleet) -> list[str]:
    pid = fleet.procedures[0].procedure_id
    rid = fleet.robots[0].robot_id
    return [
        "/api/robots",
        f"/api/robots/{rid}",
        "/api/procedures",
        f"/api/procedures/{pid}",
        f"/api/procedures/{pid}/telemetry",
        "/api/outcomes",
        "/api/analytics/robot-utilization",
        "/api/analytics/outcomes-summary",
        "/api/analytics/procedures-by-category",
        "/api/analytics/procedure-volume",
        "/api/analytics/maintenance-costs",
    ]


def test_every_endpoint_refuses_bad_keys(locked: TestClient, engine: Engine, fleet: Fleet) -> None:
    writer = auth.issue(engine, name="robot", scopes=["ingest:write"])
    revoked = auth.issue(engine, name="old", scopes=["api:read"])
    expired = auth.issue(
        engine, name="tmp", scopes=["api:read"], expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    with engine.begin() as conn:
        keys.set_time(conn, key_id=revoked.key_id, column="revoked_at", at=datetime.now(UTC))
    cases = [
        ({}, 401),
        (bearer("nope"), 401),
        ({"Authorization": "Token abc"}, 401),
        (bearer(revoked.key), 401),
        (bearer(expired.key), 401),
        (bearer(writer.key), 403),
        ({"X-API-Key": writer.key}, 403),
    ]
    for path in endpoints(fleet):
        for headers, status in cases:
            r = locked.get(path, headers=headers)
            assert r.status_code == status, (path, headers, r.text)
            assert set(r.json()) == {"error"}
    # The balancer's checks stay open.
    assert locked.get("/health").status_code == 200
    assert locked.get("/api/health").status_code == 200


def test_phi_only_with_the_scope(locked: TestClient, engine: Engine, fleet: Fleet) -> None:
    reader = auth.issue(engine, name="dashboard", scopes=["api:read"])
    clinician = auth.issue(engine, name="quality", scopes=["api:read", "phi:read"])
    pid = next(
        p.procedure_id
        for p in fleet.procedures
        if p.patient_id and any(o.procedure_id == p.procedure_id for o in fleet.outcomes)
    )
    for path in ("/api/procedures?limit=500", f"/api/procedures/{pid}", "/api/outcomes?limit=500"):
        plain = locked.get(path, headers=bearer(reader.key))
        assert plain.status_code == 200, plain.text
        assert not any(f'"{f}"' in plain.text for f in PHI), path
        full = locked.get(path, headers=bearer(clinician.key))
        assert full.status_code == 200
        assert any(f'"{f}"' in full.text for f in PHI), path
    detail = locked.get(f"/api/procedures/{pid}", headers=bearer(clinician.key)).json()
    assert detail["patient_id"] == fleet.procedure(pid).patient_id


def test_phi_reads_are_audited_without_values(
    locked: TestClient, engine: Engine, fleet: Fleet
) -> None:
    reader = auth.issue(engine, name="dashboard", scopes=["api:read"])
    clinician = auth.issue(engine, name="quality", scopes=["api:read", "phi:read"])
    pid = next(p.procedure_id for p in fleet.procedures if p.patient_id)
    locked.get(f"/api/procedures/{pid}", headers=bearer(reader.key))
    with engine.connect() as conn:
        assert keys.audit_entries(conn) == []
    r = locked.get(
        f"/api/procedures/{pid}", headers=bearer(clinician.key) | {"X-Request-ID": "audit-req-1"}
    )
    assert r.status_code == 200
    with engine.connect() as conn:
        [entry] = keys.audit_entries(conn)
    assert entry["key_id"] == clinician.key_id and entry["key_name"] == "quality"
    assert entry["action"] == "read_phi" and entry["route"] == "/api/procedures/{procedure_id}"
    assert entry["record_ids"] == [pid] and entry["request_id"] == "audit-req-1"
    assert entry["at"] >= datetime.now(UTC) - timedelta(minutes=1)
    values = {str(v) for v in entry.values()}
    patient = fleet.procedure(pid)
    assert patient.patient_id not in values and str(patient.patient_age) not in values
    page = locked.get("/api/procedures?limit=20", headers=bearer(clinician.key)).json()
    with engine.connect() as conn:
        newest = keys.audit_entries(conn)[0]
    shown = {i["procedure_id"] for i in page["items"] if i.get("patient_id") is not None}
    assert set(newest["record_ids"]) == shown and newest["route"] == "/api/procedures"
