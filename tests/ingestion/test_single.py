"""Single-sample posts: every answer (201 or error) with its request id, metric and access line."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from medrobotics import auth, config, logs, metrics
from medrobotics.ingestion import telemetry as telemetry_route
from medrobotics.ingestion.app import create_app
from medrobotics.storage.tables import telemetry
from tests import conftest
from tests.conftest import GUIDE_SAMPLE
from tests.support.logcapture import captured

RID = {"x-request-id": "req-single-1"}
JSON = {"content-type": "application/json"}


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(telemetry)).scalar_one())


def sample(n: int) -> dict[str, Any]:
    return GUIDE_SAMPLE | {"procedure_id": f"fast-{n}", "timestamp": f"2025-10-27T10:00:{n:02d}Z"}


@pytest.fixture
def small(settings: config.Settings, engine: Engine) -> Iterator[TestClient]:
    """The service with a 2 kB body limit and at most 3 records a request."""
    tight = settings.model_copy(update={"max_body_bytes": 2048, "max_batch_records": 3})
    with TestClient(create_app(tight, engine=engine), raise_server_exceptions=False) as c:
        yield c


def _cases() -> list[tuple[str, bytes, dict[str, str], int]]:
    one = json.dumps(sample(1)).encode()
    return [
        ("one sample", one, JSON | RID, 201),
        ("three samples", json.dumps([sample(n) for n in range(3)]).encode(), JSON | RID, 201),
        ("charset and case", one, {"content-type": "Application/JSON; charset=utf-8"} | RID, 201),
        ("identity encoding", one, JSON | RID | {"content-encoding": "identity"}, 201),
        ("trace id", one, JSON | RID | {"x-amzn-trace-id": "Root=1-abc"}, 201),
        ("gzip", gzip.compress(one), JSON | RID | {"content-encoding": "gzip"}, 201),
        ("too many records", json.dumps([sample(n) for n in range(4)]).encode(), JSON | RID, 413),
        ("empty array", b"[]", JSON | RID, 201),
        ("invalid field", json.dumps(sample(1) | {"arm_rotation": "x"}).encode(), JSON | RID, 422),
        ("unknown field", json.dumps(sample(1) | {"colour": 1}).encode(), JSON | RID, 422),
        (
            "id ending in a newline",
            json.dumps(sample(1) | {"robot_id": "r-1\n"}).encode(),
            JSON | RID,
            422,
        ),
        ("missing field", json.dumps({"robot_id": "r"}).encode(), JSON | RID, 422),
        ("bad timestamp", json.dumps(sample(1) | {"timestamp": "soon"}).encode(), JSON | RID, 422),
        ("malformed", b'{"procedure_id": ', JSON | RID, 400),
        ("not an object", b'"sample"', JSON | RID, 422),
        ("no content type", one, RID, 415),
        ("text content", one, {"content-type": "text/plain"} | RID, 415),
        ("ndjson content", one, {"content-type": "application/x-ndjson"} | RID, 415),
        ("broken gzip", one, JSON | RID | {"content-encoding": "gzip"}, 400),
        ("brotli", one, JSON | RID | {"content-encoding": "br"}, 415),
        ("over the body limit", b" " * 3000 + one, JSON | RID, 413),
    ]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_answers(
    small: TestClient, engine: Engine, case: tuple[str, bytes, dict[str, str], int]
) -> None:
    _, body, headers, status = case
    r = small.post("/ingest/telemetry", content=body, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"] == "req-single-1"
    if status == 201:
        answer = r.json()
        assert answer == {
            "entity": "telemetry",
            "received": answer["received"],
            "written": None,
            "duplicates": None,
        }
        assert count(engine) == answer["received"]
    else:
        error = r.json()["error"]
        assert error["request_id"] == "req-single-1" and error["message"]
        assert "Traceback" not in r.text
        assert count(engine) == 0


def test_request_ids_are_made_when_absent_or_unusable(client: TestClient) -> None:
    body = json.dumps(sample(1)).encode()
    made = set()
    for headers in (JSON, JSON | {"x-request-id": "bad id!"}):
        r = client.post("/ingest/telemetry", content=body, headers=headers)
        assert r.status_code == 201
        rid = r.headers["x-request-id"]
        assert len(rid) == 32 and rid != "bad id!"
        made.add(rid)
    assert len(made) == 2


def test_repeated_headers_the_first_content_type_counts(client: TestClient) -> None:
    body = json.dumps(sample(1)).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-type", "text/plain"),
        *list(RID.items()),
    ]
    r = client.post("/ingest/telemetry", content=body, headers=headers)
    assert r.status_code == 201


def test_metrics_count_answers_and_samples(client: TestClient) -> None:
    labels = {
        "service": "data-ingestion",
        "method": "POST",
        "route": "/ingest/telemetry",
        "status": "201",
    }
    seen = metrics.REGISTRY.get_sample_value("medrobotics_requests_total", labels) or 0.0
    got = metrics.REGISTRY.get_sample_value(
        "medrobotics_received_records_total", {"entity": "telemetry"}
    )
    for n in range(2):
        r = client.post("/ingest/telemetry", content=json.dumps(sample(n)).encode(), headers=JSON)
        assert r.status_code == 201
    assert metrics.REGISTRY.get_sample_value("medrobotics_requests_total", labels) == seen + 2
    after = metrics.REGISTRY.get_sample_value(
        "medrobotics_received_records_total", {"entity": "telemetry"}
    )
    assert after == (got or 0.0) + 2


def test_every_answered_sample_is_committed(client: TestClient, engine: Engine) -> None:
    def post(n: int) -> int:
        body = json.dumps(sample(n % 60) | {"procedure_id": f"single-{n}"}).encode()
        return client.post("/ingest/telemetry", content=body, headers=JSON).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(post, range(400)))
    assert statuses == [201] * 400
    assert count(engine) == 400


# -- with authentication on ---------------------------------------------------------------


@pytest.fixture
def locked(settings: config.Settings, engine: Engine) -> Iterator[TestClient]:
    """The service with keys required and a burst of 5 requests."""
    tight = settings.model_copy(
        update={"auth": "required", "rate_limit_per_s": 0.001, "rate_limit_burst": 5}
    )
    with TestClient(create_app(tight, engine=engine), raise_server_exceptions=False) as c:
        yield c


def test_keys_scopes_and_the_rate_limit(locked: TestClient, engine: Engine) -> None:
    writer = auth.issue(engine, name="robot", scopes=["ingest:write"])
    reader = auth.issue(engine, name="dashboard", scopes=["api:read"])
    body = json.dumps(sample(1)).encode()
    cases = [
        ({}, 401),
        ({"authorization": "Bearer mrk_0000000000000000_nope"}, 401),
        ({"authorization": "Basic abc"}, 401),
        ({"authorization": f"Bearer {reader.key}"}, 403),
        *[({"authorization": f"Bearer {writer.key}"}, 201)] * 3,  # re-sent: stored once
        *[({"x-api-key": writer.key}, 201)] * 2,  # the burst's last two tokens
        ({"x-api-key": writer.key}, 429),  # none left
    ]
    for headers, status in cases:
        r = locked.post("/ingest/telemetry", content=body, headers=JSON | RID | headers)
        assert r.status_code == status, (headers, r.text)
        assert r.headers["x-request-id"] == "req-single-1"
        if status != 201:
            assert r.json()["error"]["request_id"] == "req-single-1"
    assert count(engine) == 1


def test_the_access_line(client: TestClient, request: pytest.FixtureRequest) -> None:
    out = io.StringIO()
    logs.configure(service="tests", fmt="json", level="INFO", stream=out)
    try:
        r = client.post(
            "/ingest/telemetry",
            content=json.dumps(sample(1)).encode(),
            headers=JSON | RID | {"x-amzn-trace-id": "Root=1-abc"},
        )
    finally:
        stream = request.config.stash[conftest._LOG_STREAM]
        logs.configure(service="tests", fmt="json", level="DEBUG", stream=stream)
    assert r.status_code == 201
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    access = [x for x in lines if x.get("event") == "request"]
    assert len(access) == 1
    line = access[0]
    assert (line["request_id"], line["trace_id"], line["method"], line["route"]) == (
        "req-single-1",
        "Root=1-abc",
        "POST",
        "/ingest/telemetry",
    )
    assert line["status"] == 201 and line["duration_ms"] >= 0


def test_a_crash_is_the_json_500(
    client: TestClient,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    def overflow(_raw: bytes) -> None:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(telemetry_route, "fast_rows", overflow)
    labels = {
        "service": "data-ingestion",
        "method": "POST",
        "route": "/ingest/telemetry",
        "status": "500",
    }
    seen = metrics.REGISTRY.get_sample_value("medrobotics_requests_total", labels) or 0.0
    with captured(request) as lines:
        r = client.post(
            "/ingest/telemetry", content=json.dumps(sample(1)).encode(), headers=JSON | RID
        )
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"] == "req-single-1"
    assert r.json() == {
        "error": {
            "code": "internal",
            "message": "internal error; quote the request id to find the log line",
            "details": [],
            "request_id": "req-single-1",
        }
    }
    assert metrics.REGISTRY.get_sample_value("medrobotics_requests_total", labels) == seen + 1
    access = [x for x in lines if x.get("event") == "request"]
    assert [(x["status"], x["route"], x["request_id"]) for x in access] == [
        (500, "/ingest/telemetry", "req-single-1")
    ]
    crashes = [x for x in lines if x.get("event") == "unhandled_error"]
    assert [(x["error_type"], x["request_id"]) for x in crashes] == [
        ("OverflowError", "req-single-1")
    ]
    assert count(engine) == 0
