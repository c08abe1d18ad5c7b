"""The single-sample fast path answers exactly as the FastAPI route does, and commits."""

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
from medrobotics.ingestion import app as ingestion_app
from medrobotics.ingestion import fast as ingestion_fast
from medrobotics.ingestion.app import IngestionApp, create_app
from medrobotics.storage.tables import telemetry
from tests import conftest
from tests.conftest import GUIDE_SAMPLE
from tests.support.logcapture import captured

RID = {"x-request-id": "req-fast-1"}
JSON = {"content-type": "application/json"}


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(telemetry)).scalar_one())


def sample(n: int) -> dict[str, Any]:
    return GUIDE_SAMPLE | {"procedure_id": f"fast-{n}", "timestamp": f"2025-10-27T10:00:{n:02d}Z"}


def both(
    client: TestClient, body: bytes, headers: dict[str, str]
) -> tuple[tuple[int, bytes, dict[str, str]], tuple[int, bytes, dict[str, str]], bool]:
    """Post through the fast path, then through the app alone; say whether it was taken."""
    app: Any = client.app
    fast = app.fast
    before = fast.taken
    one = client.post("/ingest/telemetry", content=body, headers=headers)
    taken = fast.taken > before
    app.fast = None
    try:
        two = client.post("/ingest/telemetry", content=body, headers=headers)
    finally:
        app.fast = fast
    return (
        (one.status_code, one.content, dict(one.headers)),
        (two.status_code, two.content, dict(two.headers)),
        taken,
    )


@pytest.fixture
def small(settings: config.Settings, engine: Engine) -> Iterator[TestClient]:
    """The service with a 2 kB body limit and at most 3 records a request."""
    tight = settings.model_copy(update={"max_body_bytes": 2048, "max_batch_records": 3})
    with TestClient(create_app(tight, engine=engine), raise_server_exceptions=False) as c:
        yield c


def _cases() -> list[tuple[str, bytes, dict[str, str], bool]]:
    one = json.dumps(sample(1)).encode()
    return [
        ("one sample", one, JSON | RID, True),
        ("three samples", json.dumps([sample(n) for n in range(3)]).encode(), JSON | RID, True),
        ("charset and case", one, {"content-type": "Application/JSON; charset=utf-8"} | RID, True),
        ("identity encoding", one, JSON | RID | {"content-encoding": "identity"}, True),
        ("trace id", one, JSON | RID | {"x-amzn-trace-id": "Root=1-abc"}, True),
        ("too many records", json.dumps([sample(n) for n in range(4)]).encode(), JSON | RID, False),
        ("empty array", b"[]", JSON | RID, False),
        (
            "invalid field",
            json.dumps(sample(1) | {"arm_rotation": "x"}).encode(),
            JSON | RID,
            False,
        ),
        ("unknown field", json.dumps(sample(1) | {"colour": 1}).encode(), JSON | RID, False),
        (
            "id ending in a newline",
            json.dumps(sample(1) | {"robot_id": "r-1\n"}).encode(),
            JSON | RID,
            False,
        ),
        ("missing field", json.dumps({"robot_id": "r"}).encode(), JSON | RID, False),
        (
            "bad timestamp",
            json.dumps(sample(1) | {"timestamp": "soon"}).encode(),
            JSON | RID,
            False,
        ),
        ("malformed", b'{"procedure_id": ', JSON | RID, False),
        ("not an object", b'"sample"', JSON | RID, False),
        ("no content type", one, RID, False),
        ("text content", one, {"content-type": "text/plain"} | RID, False),
        ("ndjson content", one, {"content-type": "application/x-ndjson"} | RID, False),
        ("gzip", gzip.compress(one), JSON | RID | {"content-encoding": "gzip"}, False),
        ("broken gzip", one, JSON | RID | {"content-encoding": "gzip"}, False),
        ("brotli", one, JSON | RID | {"content-encoding": "br"}, False),
        ("over the body limit", b" " * 3000 + one, JSON | RID, False),
    ]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c[0])
def test_answers_match_the_app(
    small: TestClient, engine: Engine, case: tuple[str, bytes, dict[str, str], bool]
) -> None:
    _, body, headers, fast = case
    one, two, taken = both(small, body, headers)
    assert one == two
    assert taken is fast
    if one[0] == 201:
        assert one[2]["x-request-id"] == "req-fast-1"
        assert count(engine) == json.loads(one[1])["received"]
    else:
        assert count(engine) == 0


def test_request_ids_are_made_when_absent_or_unusable(client: TestClient) -> None:
    body = json.dumps(sample(1)).encode()
    for headers in (JSON, JSON | {"x-request-id": "bad id!"}):
        one, two, taken = both(client, body, headers)
        assert taken
        rid1, rid2 = one[2].pop("x-request-id"), two[2].pop("x-request-id")
        assert len(rid1) == len(rid2) == 32 and rid1 != rid2
        assert one == two


def test_repeated_headers_go_to_the_app(client: TestClient) -> None:
    body = json.dumps(sample(1)).encode()
    headers = [
        ("content-type", "application/json"),
        ("content-type", "text/plain"),
        *list(RID.items()),
    ]
    fast: Any = client.app
    before = fast.fast.taken
    r = client.post("/ingest/telemetry", content=body, headers=headers)
    assert fast.fast.taken == before
    assert r.status_code == 201  # the first Content-Type counts, as the app reads it


def test_metrics_count_fast_answers(client: TestClient) -> None:
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
    one, two, taken = both(client, json.dumps(sample(1)).encode(), JSON)
    assert taken and one[0] == two[0] == 201
    assert metrics.REGISTRY.get_sample_value("medrobotics_requests_total", labels) == seen + 2
    after = metrics.REGISTRY.get_sample_value(
        "medrobotics_received_records_total", {"entity": "telemetry"}
    )
    assert after == (got or 0.0) + 2


def test_every_answered_sample_is_committed(client: TestClient, engine: Engine) -> None:
    def post(n: int) -> int:
        body = json.dumps(sample(n % 60) | {"procedure_id": f"fast-{n}"}).encode()
        return client.post("/ingest/telemetry", content=body, headers=JSON).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(post, range(400)))
    assert statuses == [201] * 400
    assert count(engine) == 400
    app: Any = client.app
    assert app.fast.taken == 400


# -- with authentication on ---------------------------------------------------------------


@pytest.fixture
def locked(settings: config.Settings, engine: Engine) -> Iterator[TestClient]:
    """The service with keys required, a key cache, and a burst of 5 requests."""
    tight = settings.model_copy(
        update={"auth": "required", "rate_limit_per_s": 0.001, "rate_limit_burst": 5}
    )
    app = create_app(tight, engine=engine)
    assert isinstance(app, IngestionApp)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_answers_match_with_keys(locked: TestClient, engine: Engine) -> None:
    writer = auth.issue(engine, name="robot", scopes=["ingest:write"])
    reader = auth.issue(engine, name="dashboard", scopes=["api:read"])
    body = json.dumps(sample(1)).encode()
    cases = [
        ({}, 401, False),
        ({"authorization": "Bearer mrk_0000000000000000_nope"}, 401, False),
        ({"authorization": "Basic abc"}, 401, False),
        ({"authorization": f"Bearer {reader.key}"}, 403, False),
        (
            {"authorization": f"Bearer {writer.key}"},
            201,
            True,
        ),  # two of five tokens (the warm-up took one)
        ({"x-api-key": writer.key}, 201, True),  # two more
        ({"x-api-key": writer.key}, 429, False),  # none left
    ]
    # Each key is looked up once first (a cache miss goes to the app, which fills the cache).
    for key in (writer, reader):
        warm = locked.post("/ingest/telemetry", content=b"{", headers=JSON | bearer(key.key))
        assert warm.status_code in (400, 403)
    for headers, status, fast in cases:
        one, two, taken = both(locked, body, JSON | RID | headers)
        assert one == two, headers
        assert one[0] == status, one
        assert taken is fast, headers
    assert count(engine) == 1


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def test_access_lines_match(client: TestClient, request: pytest.FixtureRequest) -> None:
    out = io.StringIO()
    logs.configure(service="tests", fmt="json", level="INFO", stream=out)
    try:
        one, two, taken = both(client, json.dumps(sample(1)).encode(), JSON | RID)
    finally:
        stream = request.config.stash[conftest._LOG_STREAM]
        logs.configure(service="tests", fmt="json", level="DEBUG", stream=stream)
    assert taken and one == two
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    access = [x for x in lines if x.get("event") == "request"]
    assert len(access) == 2
    for line in access:
        del line["time"], line["duration_ms"]
    assert access[0] == access[1]
    assert access[0]["request_id"] == "req-fast-1" and access[0]["status"] == 201


def test_an_error_inside_the_fast_path_is_the_apps_json_500(
    client: TestClient,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    def overflow(_raw: bytes) -> None:
        raise OverflowError("date value out of range")

    # The same failure in the fast path's decoder and in the route's.
    monkeypatch.setattr(ingestion_fast, "fast_rows", overflow)
    monkeypatch.setattr(ingestion_app, "fast_rows", overflow)
    labels = {
        "service": "data-ingestion",
        "method": "POST",
        "route": "/ingest/telemetry",
        "status": "500",
    }
    seen = metrics.REGISTRY.get_sample_value("medrobotics_requests_total", labels) or 0.0
    with captured(request) as lines:
        one, two, taken = both(client, json.dumps(sample(1)).encode(), JSON | RID)
    assert taken  # answered by the fast path, not handed to the app
    assert one == two
    status, body, headers = one
    assert status == 500
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"] == "req-fast-1"
    assert json.loads(body) == {
        "error": {
            "code": "internal",
            "message": "internal error; quote the request id to find the log line",
            "details": [],
            "request_id": "req-fast-1",
        }
    }
    assert metrics.REGISTRY.get_sample_value("medrobotics_requests_total", labels) == seen + 2
    access = [x for x in lines if x.get("event") == "request"]
    assert [(x["status"], x["route"], x["request_id"]) for x in access] == [
        (500, "/ingest/telemetry", "req-fast-1")
    ] * 2
    crashes = [x for x in lines if x.get("event") == "unhandled_error"]
    assert [(x["error_type"], x["request_id"]) for x in crashes] == [
        ("OverflowError", "req-fast-1")
    ] * 2
    assert count(engine) == 0
