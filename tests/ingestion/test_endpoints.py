"""The ingestion service's endpoints, on both databases."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from medrobotics.ingestion.deps import Stored
from medrobotics.storage.tables import maintenance, outcomes, procedures, robots, telemetry
from tests import factories as f
from tests.conftest import GUIDE_SAMPLE

NDJSON = {"content-type": "application/x-ndjson"}
JSON = {"content-type": "application/json"}


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def rows(engine: Engine, table: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table))]


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"\n".join(json.dumps(r).encode() for r in records) + b"\n"


def test_guide_sample_is_stored(client: TestClient, engine: Engine) -> None:
    r = client.post("/ingest/telemetry", json=GUIDE_SAMPLE)
    assert r.status_code == 201, r.text
    assert r.json()["received"] == 1
    [row] = rows(engine, telemetry)
    assert row["procedure_id"] == "test-123" and row["robot_id"] == "robot-1"
    # A zone-less timestamp is UTC.
    assert row["timestamp"] == datetime(2025, 10, 27, 10, 0, tzinfo=UTC)
    assert (row["arm_position_x"], row["arm_position_y"], row["arm_position_z"]) == (
        100.5,
        200.3,
        150.2,
    )
    assert row["tool_type"] is None and row["grip_pressure"] is None


def test_sample_array_and_resend_do_not_duplicate(client: TestClient, engine: Engine) -> None:
    batch = f.samples(50)
    assert client.post("/ingest/telemetry", json=batch).status_code == 201
    assert client.post("/ingest/telemetry", json=batch).status_code == 201
    assert client.post("/ingest/telemetry", json=batch[0]).status_code == 201
    assert count(engine, telemetry) == 50


def test_timestamps_with_offsets_are_stored_as_utc(client: TestClient, engine: Engine) -> None:
    sample = GUIDE_SAMPLE | {"timestamp": "2025-10-27T12:00:00+02:00"}
    assert client.post("/ingest/telemetry", json=sample).status_code == 201
    [row] = rows(engine, telemetry)
    assert row["timestamp"] == datetime(2025, 10, 27, 10, 0, tzinfo=UTC)


def test_a_batch_of_mixed_zones_is_stored_as_utc(client: TestClient, engine: Engine) -> None:
    stamps = ["2025-10-27T10:00:00Z", "2025-10-27T12:00:01+02:00", "2025-10-27T10:00:02"]
    records = [GUIDE_SAMPLE | {"timestamp": t} for t in stamps]
    r = client.post("/ingest/batch?type=telemetry", content=ndjson(records), headers=NDJSON)
    assert r.status_code == 201, r.text
    got = sorted(row["timestamp"] for row in rows(engine, telemetry))
    assert got == [datetime(2025, 10, 27, 10, 0, s, tzinfo=UTC) for s in range(3)]


def test_procedure_start_then_end_is_one_record(client: TestClient, engine: Engine) -> None:
    start = {k: v for k, v in f.procedure(1).items() if k not in ("end_time", "status")}
    r = client.post("/ingest/procedure", json=start)
    assert r.status_code == 201, r.text
    [row] = rows(engine, procedures)
    assert row["status"] == "in_progress" and row["end_time"] is None
    end = {
        "procedure_id": "proc-1",
        "robot_id": "robot-1",
        "procedure_category": "urological",
        "start_time": start["start_time"],
        "end_time": f.procedure(1)["end_time"],
    }
    assert client.post("/ingest/procedure", json=end).status_code == 201
    [row] = rows(engine, procedures)
    assert row["status"] == "completed"
    assert row["duration_minutes"] == 150.0
    # Fields the second send left out keep their values.
    assert row["surgeon_name"] == "Dr. Grey" and row["patient_age"] == 61


@pytest.mark.parametrize(
    ("entity", "records", "table"),
    [
        ("robots", [f.robot(i) for i in range(1, 6)], robots),
        ("procedures", [f.procedure(i) for i in range(1, 6)], procedures),
        ("telemetry", f.samples(300), telemetry),
    ],
)
def test_batch_json_ndjson_and_gzip(
    client: TestClient, engine: Engine, entity: str, records: list[dict[str, Any]], table: Any
) -> None:
    r = client.post("/ingest/batch", json={"type": entity, "records": records})
    assert r.status_code == 201, r.text
    Stored.model_validate(r.json(), strict=True)  # the declared schema, field for field
    assert set(r.json()) == set(Stored.model_fields)
    assert r.json()["received"] == len(records)
    assert r.json()["written"] == len(records)
    # Re-sending the same batch after a timeout changes nothing.
    body = gzip.compress(json.dumps({"type": entity, "records": records}).encode())
    r = client.post("/ingest/batch", content=body, headers=JSON | {"content-encoding": "gzip"})
    assert r.status_code == 201, r.text
    r = client.post(f"/ingest/batch?type={entity}", content=ndjson(records), headers=NDJSON)
    assert r.status_code == 201, r.text
    r = client.post(
        f"/ingest/batch?type={entity}",
        content=gzip.compress(ndjson(records)),
        headers=NDJSON | {"content-encoding": "gzip"},
    )
    assert r.status_code == 201, r.text
    assert count(engine, table) == len(records)
    if entity == "telemetry":
        assert r.json()["duplicates"] == len(records) and r.json()["written"] == 0


def test_outcomes_and_maintenance_need_their_parents(client: TestClient, engine: Engine) -> None:
    r = client.post("/ingest/batch", json={"type": "outcomes", "records": [f.outcome(1)]})
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        {"field": "procedure_id", "message": "unknown procedure", "index": 0}
    ]
    r = client.post("/ingest/maintenance", json=f.visit(1))
    assert r.status_code == 422 and "robot" in r.json()["error"]["message"]
    assert count(engine, outcomes) == count(engine, maintenance) == 0

    client.post("/ingest/robot", json=f.robot(1)).raise_for_status()
    client.post("/ingest/procedure", json=f.procedure(1)).raise_for_status()
    assert client.post("/ingest/outcome", json=f.outcome(1)).status_code == 201
    assert client.post("/ingest/maintenance", json=f.visit(1)).status_code == 201
    # One outcome per procedure: a re-send updates it.
    r = client.post(
        "/ingest/outcome", json=f.outcome(1, success_status="complicated", complications=["ileus"])
    )
    assert r.status_code == 201
    [row] = rows(engine, outcomes)
    assert row["success_status"] == "complicated" and row["complications"] == ["ileus"]
    [row] = rows(engine, maintenance)
    assert row["parts_replaced"] == ["filter"] and row["cost"] == 1250.0


def test_batch_is_all_or_nothing_and_lists_every_bad_record(
    client: TestClient, engine: Engine
) -> None:
    records = f.samples(10)
    records[3]["timestamp"] = "yesterday"
    records[7]["arm_position_x"] = "far"
    del records[8]["robot_id"]
    r = client.post("/ingest/batch", json={"type": "telemetry", "records": records})
    assert r.status_code == 422
    details = {(d["index"], d["field"]) for d in r.json()["error"]["details"]}
    assert details == {(3, "timestamp"), (7, "arm_position_x"), (8, "robot_id")}
    r = client.post("/ingest/batch?type=telemetry", content=ndjson(records), headers=NDJSON)
    assert r.status_code == 422
    assert {(d["index"], d["field"]) for d in r.json()["error"]["details"]} == details
    assert count(engine, telemetry) == 0


@pytest.mark.parametrize("field", ["procedure_id", "robot_id"])
def test_an_id_ending_in_a_newline_is_refused_on_every_path(
    client: TestClient, engine: Engine, field: str
) -> None:
    # `$` in a Python pattern also matches before a final newline; the stored id must not.
    records = f.samples(3)
    records[1][field] += "\n"
    sent = [
        client.post("/ingest/telemetry", json=records[1]),
        client.post("/ingest/telemetry", json=records),
        client.post("/ingest/batch", json={"type": "telemetry", "records": records}),
        client.post("/ingest/batch?type=telemetry", content=ndjson(records), headers=NDJSON),
    ]
    for r in sent:
        assert r.status_code == 422, r.text
        assert field in {d["field"] for d in r.json()["error"]["details"]}
    assert [d.get("index") for d in sent[3].json()["error"]["details"]] == [1]
    assert count(engine, telemetry) == 0


def test_ndjson_stream_larger_than_one_chunk(client: TestClient, engine: Engine) -> None:
    records = f.samples(12_345, every_ms=1)
    r = client.post("/ingest/batch?type=telemetry", content=ndjson(records), headers=NDJSON)
    assert r.status_code == 201, r.text
    assert count(engine, telemetry) == 12_345


def test_ndjson_stream_bad_record_after_first_chunk_writes_nothing(
    client: TestClient, engine: Engine
) -> None:
    records = f.samples(11_000, every_ms=1)
    records[10_500]["system_temperature"] = None
    records[10_500]["camera_zoom"] = "x"
    r = client.post("/ingest/batch?type=telemetry", content=ndjson(records), headers=NDJSON)
    assert r.status_code == 422
    assert r.json()["error"]["details"][0] == {
        "field": "camera_zoom",
        "message": "Input should be a valid number",
        "index": 10_500,
    }
    assert count(engine, telemetry) == 0


def test_robot_serial_numbers_are_unique(client: TestClient, engine: Engine) -> None:
    client.post("/ingest/robot", json=f.robot(1)).raise_for_status()
    r = client.post("/ingest/robot", json=f.robot(2, robot_serial_number="SN-00001"))
    assert r.status_code == 409
    assert r.json()["error"]["details"][0]["field"] == "robot_serial_number"
    assert count(engine, robots) == 1


BAD_BODIES = [
    # (description, path, body bytes, headers, status, field named)
    ("malformed json", "/ingest/telemetry", b'{"procedure_id": ', JSON, 400, None),
    ("malformed batch", "/ingest/batch", b"[1, 2", JSON, 400, None),
    (
        "broken gzip",
        "/ingest/telemetry",
        b"\x1f\x8bnot gzip",
        JSON | {"content-encoding": "gzip"},
        400,
        None,
    ),
    ("unknown encoding", "/ingest/telemetry", b"{}", JSON | {"content-encoding": "br"}, 415, None),
    (
        "form post",
        "/ingest/telemetry",
        b"a=b",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        None,
    ),
    ("no content type", "/ingest/procedure", b"{}", {}, 415, None),
    ("ndjson to single", "/ingest/telemetry", b"{}", NDJSON, 415, None),
    (
        "missing field",
        "/ingest/telemetry",
        json.dumps({k: v for k, v in GUIDE_SAMPLE.items() if k != "timestamp"}).encode(),
        JSON,
        422,
        "timestamp",
    ),
    (
        "wrong type",
        "/ingest/telemetry",
        json.dumps(GUIDE_SAMPLE | {"arm_position_x": "1"}).encode(),
        JSON,
        422,
        "arm_position_x",
    ),
    (
        "NaN",
        "/ingest/telemetry",
        json.dumps(GUIDE_SAMPLE | {"arm_position_x": float("nan")}).encode(),
        JSON,
        422,
        "arm_position_x",
    ),
    (
        "Infinity",
        "/ingest/telemetry",
        json.dumps(GUIDE_SAMPLE | {"grip_pressure": float("inf")}).encode(),
        JSON,
        422,
        "grip_pressure",
    ),
    (
        "unknown field",
        "/ingest/telemetry",
        json.dumps(GUIDE_SAMPLE | {"arm_x": 1}).encode(),
        JSON,
        422,
        "arm_x",
    ),
    (
        "bad id",
        "/ingest/telemetry",
        json.dumps(GUIDE_SAMPLE | {"robot_id": "a b"}).encode(),
        JSON,
        422,
        "robot_id",
    ),
    (
        "unknown category",
        "/ingest/procedure",
        json.dumps(f.procedure(1, procedure_category="dental")).encode(),
        JSON,
        422,
        "procedure_category",
    ),
    (
        "end before start",
        "/ingest/procedure",
        json.dumps(f.procedure(1, end_time="2025-01-01T00:00:00Z")).encode(),
        JSON,
        422,
        "end_time",
    ),
    (
        "age over 120",
        "/ingest/procedure",
        json.dumps(f.procedure(1, patient_age=130)).encode(),
        JSON,
        422,
        "patient_age",
    ),
    (
        "complexity",
        "/ingest/procedure",
        json.dumps(f.procedure(1, complexity_score=9)).encode(),
        JSON,
        422,
        "complexity_score",
    ),
    (
        "unknown batch type",
        "/ingest/batch",
        b'{"type": "patients", "records": []}',
        JSON,
        422,
        "type",
    ),
    ("batch not an object", "/ingest/batch", b"[]", JSON, 422, "body"),
    ("ndjson without type", "/ingest/batch", b"{}\n", NDJSON, 422, "type"),
    ("ndjson malformed line", "/ingest/batch?type=robots", b'{"robot_id": \n', NDJSON, 400, None),
]


@pytest.mark.parametrize(
    ("name", "path", "content", "headers", "status", "field"),
    BAD_BODIES,
    ids=[b[0] for b in BAD_BODIES],
)
def test_bad_input_is_refused_clearly_and_changes_nothing(
    client: TestClient,
    engine: Engine,
    name: str,
    path: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    field: str | None,
) -> None:
    r = client.post(path, content=content, headers=headers)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] and err["message"] and err["request_id"] == r.headers["x-request-id"]
    if field is not None:
        assert field in {d["field"] for d in err["details"]}, err
    assert "Traceback" not in r.text and "Error(" not in r.text
    for table in (telemetry, procedures, robots):
        assert count(engine, table) == 0


def test_error_details_never_echo_the_input(client: TestClient) -> None:
    r = client.post("/ingest/procedure", json=f.procedure(1, patient_id="SECRET PATIENT"))
    assert r.status_code == 422
    assert "SECRET" not in r.text


def test_body_over_the_limit_is_413(settings: Any, engine: Engine) -> None:
    from medrobotics.ingestion.app import create_app

    small = settings.model_copy(update={"max_body_bytes": 2048, "max_batch_records": 10})
    with TestClient(create_app(small, engine=engine)) as c:
        big = json.dumps({"type": "telemetry", "records": f.samples(40)}).encode()
        assert c.post("/ingest/batch", content=big, headers=JSON).status_code == 413
        # The same limit applies after decompression: a small gzip of a big body.
        r = c.post(
            "/ingest/batch", content=gzip.compress(big), headers=JSON | {"content-encoding": "gzip"}
        )
        assert r.status_code == 413
        many = json.dumps({"type": "robots", "records": [{"robot_id": "x"}] * 11}).encode()
        assert len(many) < 2048
        r = c.post("/ingest/batch", content=many, headers=JSON)
        assert r.status_code in (413, 422)
    assert count(engine, telemetry) == 0


def test_stats_reports_totals_and_recent_activity(client: TestClient) -> None:
    empty = client.get("/ingest/stats").json()
    assert empty["totals"] == {
        "robots": 0,
        "procedures": 0,
        "outcomes": 0,
        "maintenance": 0,
        "telemetry": 0,
    }
    assert empty["recent"]["last_ingest_at"] is None
    client.post("/ingest/batch", json={"type": "robots", "records": [f.robot(1), f.robot(2)]})
    client.post("/ingest/procedure", json=f.procedure(1))
    client.post("/ingest/telemetry", json=f.samples(25))
    client.post("/ingest/telemetry", json=f.samples(5, procedure_n=2, robot_n=2))
    stats = client.get("/ingest/stats").json()
    assert stats["totals"] == {
        "robots": 2,
        "procedures": 1,
        "outcomes": 0,
        "maintenance": 0,
        "telemetry": 30,
    }
    assert stats["telemetry_total_estimated"] is False
    recent = stats["recent"]
    assert recent["samples_last_minute"] == recent["samples_last_hour"] == 30
    assert recent["robots_reporting_last_hour"] == 2
    assert recent["procedures_reporting_last_hour"] == 2
    assert recent["last_ingest_at"].endswith("+00:00")


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/health").json()["status"] == "ok"
    ready = client.get("/ingest/health")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"


def test_docs_are_served_under_ingest(client: TestClient) -> None:
    spec = client.get("/ingest/openapi.json").json()
    assert {"/ingest/telemetry", "/ingest/procedure", "/ingest/batch", "/ingest/stats"} <= set(
        spec["paths"]
    )
    assert client.get("/ingest/docs").status_code == 200


def test_unknown_path_is_a_json_404(client: TestClient) -> None:
    r = client.get("/ingest/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_a_crash_answers_500_with_a_request_id_and_no_details(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medrobotics.ingestion import flows

    def boom(*_a: Any, **_k: Any) -> int:
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(flows, "write", boom)
    r = client.post("/ingest/procedure", json=f.procedure(1), headers={"X-Request-ID": "crash-1"})
    assert r.status_code == 500
    assert r.json()["error"] == {
        "code": "internal",
        "message": "internal error; quote the request id to find the log line",
        "details": [],
        "request_id": "crash-1",
    }
    assert "secret" not in r.text and "RuntimeError" not in r.text
    import logging

    from tests.conftest import LOG_FILE

    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = [json.loads(x) for x in LOG_FILE.read_text().splitlines() if '"crash-1"' in x]
    errors = [x for x in lines if x["level"] == "error"]
    assert errors and errors[0]["error_type"] == "RuntimeError"
    assert any(x["event"] == "request" and x["status"] == 500 for x in lines)
