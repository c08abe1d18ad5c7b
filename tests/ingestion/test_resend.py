"""Re-sending identical entity records through the service changes nothing and says so."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from medrobotics.storage.tables import maintenance, outcomes, procedures, robots
from tests import factories as f

CASES = [
    ("robots", "/ingest/robot", [f.robot(i) for i in range(1, 4)], robots),
    ("procedures", "/ingest/procedure", [f.procedure(i) for i in range(1, 4)], procedures),
    ("outcomes", "/ingest/outcome", [f.outcome(i) for i in range(1, 4)], outcomes),
    ("maintenance", "/ingest/maintenance", [f.visit(i) for i in range(1, 4)], maintenance),
]

CHANGE = {
    "robots": {"firmware_version": "9.9"},
    "procedures": {"complexity_score": 2.0},
    "outcomes": {"recovery_score": 70},
    "maintenance": {"cost": 99.5},
}
PARENTS = {
    "outcomes": ("procedures", [f.procedure(i) for i in range(1, 4)]),
    "maintenance": ("robots", [f.robot(i) for i in range(1, 4)]),
}


def _stamps(engine: Engine, table: Any) -> list[Any]:
    with engine.connect() as conn:
        return sorted(conn.execute(select(table.c.updated_at)).scalars())


@pytest.mark.parametrize(("entity", "path", "records", "table"), CASES)
def test_identical_resend_reports_nothing_written(
    client: TestClient,
    engine: Engine,
    entity: str,
    path: str,
    records: list[dict[str, Any]],
    table: Any,
) -> None:
    if entity in PARENTS:
        kind, made = PARENTS[entity]
        r = client.post("/ingest/batch", json={"type": kind, "records": made})
        assert r.status_code == 201, r.text
    r = client.post("/ingest/batch", json={"type": entity, "records": records})
    assert r.status_code == 201 and r.json()["written"] == 3, r.text
    stamped = _stamps(engine, table)

    r = client.post("/ingest/batch", json={"type": entity, "records": records})
    assert r.status_code == 201 and r.json()["written"] == 0, r.text
    ndjson = "\n".join(json.dumps(x) for x in records).encode()
    r = client.post(
        f"/ingest/batch?type={entity}",
        content=ndjson,
        headers={"content-type": "application/x-ndjson"},
    )
    assert r.status_code == 201 and r.json()["written"] == 0, r.text
    r = client.post(path, json=records[0])
    assert r.status_code == 201 and r.json()["written"] == 0, r.text
    assert _stamps(engine, table) == stamped

    # A real change is written and counted.
    r = client.post(path, json=records[1] | CHANGE[entity])
    assert r.status_code == 201 and r.json()["written"] == 1, r.text
    assert _stamps(engine, table) != stamped
