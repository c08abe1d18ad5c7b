"""The OpenAPI documents say what both services do: statuses, error bodies, limits, times."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine

from medrobotics import auth, config
from medrobotics.api.app import create_app as create_api
from medrobotics.domain.telemetry import TelemetryIn
from medrobotics.ingestion.app import create_app as create_ingestion
from medrobotics.web import ErrorBody
from tests import factories as f

METHODS = ("get", "put", "post", "patch", "delete")
ERROR_REF = "#/components/schemas/ErrorBody"
HEALTH_REF = "#/components/schemas/Health"
TIME_NAME = re.compile(r"(_at|_time|timestamp|^start|^end|_through)$")


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Both documents, built with limits other than the defaults."""
    settings = config.load(
        MEDROBOTICS_DATA_DIR=str(tmp_path_factory.mktemp("spec")),
        MEDROBOTICS_MAX_PAGE_SIZE="123",
        MEDROBOTICS_MAX_BATCH_RECORDS="77",
        environment="test",
    )
    return {
        "ingestion": create_ingestion(settings).openapi(),
        "api": create_api(settings).openapi(),
    }


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Yield (method, path, operation) for every operation of `spec`."""
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def expected_statuses(path: str, op: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer, from what it takes and whom it admits."""
    params = op.get("parameters", [])
    out = {500}  # any crash answers the error body
    if path != "/health":  # liveness is the only answer that never asks the database
        out.add(503)
    if op.get("security"):
        out |= {401, 403, 429}
    if params or "requestBody" in op:
        out.add(422)
    if any(p["in"] == "path" for p in params):
        out.add(404)
    if "requestBody" in op:
        out |= {400, 409, 413, 415}
    return out


def test_every_operation_lists_every_status_it_can_answer(
    specs: dict[str, dict[str, Any]],
) -> None:
    seen = 0
    for spec in specs.values():
        for method, path, op in operations(spec):
            documented = {int(s) for s in op["responses"]}
            missing = expected_statuses(path, op) - documented
            assert not missing, f"{method.upper()} {path} does not document {sorted(missing)}"
            assert documented & {200, 201}, path
            seen += 1
    assert seen >= 22  # 9 ingestion operations (health included) and 13 of the API


def test_guarded_operations_are_the_ones_with_keys(specs: dict[str, dict[str, Any]]) -> None:
    for spec in specs.values():
        for _, path, op in operations(spec):
            if path in ("/health", "/api/health", "/ingest/health"):
                assert not op.get("security"), path
            else:
                assert op.get("security"), path


def test_every_error_response_has_the_error_body(specs: dict[str, dict[str, Any]]) -> None:
    for spec in specs.values():
        for method, path, op in operations(spec):
            for status, response in op["responses"].items():
                if int(status) < 400:
                    continue
                schema = response["content"]["application/json"]["schema"]
                readiness = path.endswith("/health") and path != "/health" and status == "503"
                # Readiness reports the database's state in its own body, for load balancers.
                assert schema["$ref"] == (HEALTH_REF if readiness else ERROR_REF), (
                    method,
                    path,
                    status,
                )
                assert response["description"], (path, status)
                headers = response.get("headers", {})
                if status in ("429", "503"):
                    assert headers["Retry-After"]["schema"]["type"] == "integer", (path, status)
                if status == "401":
                    assert "WWW-Authenticate" in headers, path


def test_every_reference_resolves(specs: dict[str, dict[str, Any]]) -> None:
    for spec in specs.values():
        names = set(spec["components"]["schemas"])
        refs = set(re.findall(r"'\$ref': '#/components/schemas/([^']+)'", str(spec)))
        assert refs and refs <= names, refs - names


def test_limits_are_stated_from_the_settings(specs: dict[str, dict[str, Any]]) -> None:
    lists = 0
    for _, path, op in operations(specs["api"]):
        for param in op.get("parameters", []):
            if param["name"] == "limit":
                assert param["schema"]["minimum"] == 1 and param["schema"]["maximum"] == 123, path
                lists += 1
    assert lists == 3  # robots, procedures, outcomes
    paths = specs["ingestion"]["paths"]
    telemetry = paths["/ingest/telemetry"]["post"]["requestBody"]["content"]
    one, many = telemetry["application/json"]["schema"]["oneOf"]
    assert one["type"] == "object" and many["maxItems"] == 77
    batch = paths["/ingest/batch"]["post"]["requestBody"]["content"]["application/json"]
    assert {b["properties"]["records"]["maxItems"] for b in batch["schema"]["oneOf"]} == {77}


def test_request_bodies_are_described_as_accepted(specs: dict[str, dict[str, Any]]) -> None:
    for method, path, op in operations(specs["ingestion"]):
        if method != "post":
            continue
        body = op["requestBody"]
        assert body["required"] and "Content-Encoding: gzip" in body["description"], path
        assert "application/json" in body["content"], path
    batch = specs["ingestion"]["paths"]["/ingest/batch"]["post"]["requestBody"]
    ndjson = batch["content"]["application/x-ndjson"]["schema"]
    entities = {
        b["properties"]["type"]["const"]
        for b in batch["content"]["application/json"]["schema"]["oneOf"]
    }
    assert entities == {"telemetry", "procedures", "outcomes", "robots", "maintenance"}
    assert ndjson["type"] == "array" and len(ndjson["items"]["anyOf"]) == len(entities)


def _time_fields(node: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.get("properties", {}).items():
            if TIME_NAME.search(key):
                yield f"{where}.{key}", value
        for key, value in node.items():
            yield from _time_fields(value, f"{where}/{key}")
    elif isinstance(node, list):
        for value in node:
            yield from _time_fields(value, where)


def _is_time(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf", [schema])
    return all(o.get("format") == "date-time" for o in options if o.get("type") != "null")


def test_times_are_date_times(specs: dict[str, dict[str, Any]]) -> None:
    found = 0
    for spec in specs.values():
        for where, schema in _time_fields(spec):
            assert _is_time(schema), where
            found += 1
        for _, path, op in operations(spec):
            for param in op.get("parameters", []):
                if param["name"] in ("start", "end"):
                    assert _is_time(param["schema"]), (path, param["name"])
                    found += 1
    assert found > 40
    series = specs["api"]["components"]["schemas"]["TelemetrySeries"]["properties"]["time"]
    assert series["items"]["format"] == "date-time"


def _accepts(raw: bytes) -> bool:
    try:
        TelemetryIn.model_validate_json(raw)
    except ValidationError:
        return False
    return True


def test_the_documents_say_which_other_time_forms_are_accepted(
    specs: dict[str, dict[str, Any]],
) -> None:
    # The statement must go when the forms are refused, and be there while they are taken.
    sample = b'{"procedure_id": "p", "robot_id": "r", "timestamp": %s}'
    assert not _accepts(sample % b"1700000000")  # a JSON number never is
    epoch = _accepts(sample % b'"1700000000"')
    for spec in specs.values():
        assert ("seconds since the Unix epoch" in spec["info"]["description"]) == epoch
        assert "RFC 3339" in spec["info"]["description"]


# What the services answer, held to what they document, on both databases.


def documented(client: TestClient, spec_path: str, method: str, path: str) -> set[int]:
    """Return the statuses the service's own document lists for an operation."""
    spec = client.get(spec_path).json()
    return {int(s) for s in spec["paths"][path][method]["responses"]}


def check(response: Any, allowed: set[int], status: int) -> None:
    """The answer has `status`, the document lists it, and an error has the error body."""
    assert response.status_code == status, response.text
    assert status in allowed, (status, sorted(allowed))
    assert response.headers["content-type"] == "application/json"
    if status >= 400:
        ErrorBody.model_validate(response.json())


def test_ingestion_answers_only_documented_statuses(
    settings: config.Settings, engine: Engine
) -> None:
    small = settings.model_copy(update={"max_body_bytes": 2048, "max_batch_records": 3})
    with TestClient(create_ingestion(small, engine=engine), raise_server_exceptions=False) as c:
        robot = documented(c, "/ingest/openapi.json", "post", "/ingest/robot")
        check(c.post("/ingest/robot", json=f.robot(1)), robot, 201)
        check(c.post("/ingest/robot", json=f.robot(2, robot_serial_number="SN-00001")), robot, 409)
        check(c.post("/ingest/robot", content=b"{nope", headers=_json()), robot, 400)
        check(
            c.post("/ingest/robot", content=b"{}", headers={"content-type": "text/csv"}), robot, 415
        )
        check(c.post("/ingest/robot", json={"robot_id": ""}), robot, 422)
        check(
            c.post("/ingest/robot", content=b"{" + b" " * 4096 + b"}", headers=_json()), robot, 413
        )
        bad_gzip = {**_json(), "content-encoding": "gzip"}
        check(c.post("/ingest/robot", content=b"not gzip", headers=bad_gzip), robot, 400)
        zipped = gzip.compress(json.dumps(f.robot(3)).encode())
        check(c.post("/ingest/robot", content=zipped, headers=bad_gzip), robot, 201)
        brotli = {**_json(), "content-encoding": "br"}
        check(c.post("/ingest/robot", content=b"{}", headers=brotli), robot, 415)

        batch = documented(c, "/ingest/openapi.json", "post", "/ingest/batch")
        records = [f.robot(n) for n in range(4, 8)]
        check(c.post("/ingest/batch", json={"type": "robots", "records": records}), batch, 413)
        ndjson = {"content-type": "application/x-ndjson"}
        lines = b"".join(json.dumps(r).encode() + b"\n" for r in records[:2])
        check(c.post("/ingest/batch?type=robots", content=lines, headers=ndjson), batch, 201)
        check(c.post("/ingest/batch", content=lines, headers=ndjson), batch, 422)

        stats = documented(c, "/ingest/openapi.json", "get", "/ingest/stats")
        check(c.get("/ingest/stats"), stats, 200)


def test_api_answers_only_documented_statuses(settings: config.Settings, engine: Engine) -> None:
    small = settings.model_copy(update={"max_page_size": 7})
    with TestClient(create_api(small, engine=engine), raise_server_exceptions=False) as c:
        robots = documented(c, "/api/openapi.json", "get", "/api/robots")
        check(c.get("/api/robots?limit=7"), robots, 200)
        check(c.get("/api/robots?limit=8"), robots, 422)
        robot = documented(c, "/api/openapi.json", "get", "/api/robots/{robot_id}")
        check(c.get("/api/robots/nobody"), robot, 404)
        series = "/api/procedures/{procedure_id}/telemetry"
        check(
            c.get("/api/procedures/none/telemetry"),
            documented(c, "/api/openapi.json", "get", series),
            404,
        )
        spec = c.get("/api/openapi.json").json()
        limit = next(
            p for p in spec["paths"]["/api/outcomes"]["get"]["parameters"] if p["name"] == "limit"
        )
        assert limit["schema"]["maximum"] == 7


def test_key_refusals_are_documented(settings: config.Settings, engine: Engine) -> None:
    locked = settings.model_copy(
        update={
            "auth": "required",
            "auth_cache_seconds": 0,
            "rate_limit_per_s": 0.01,
            "rate_limit_burst": 1,
        }
    )
    reader = auth.issue(engine, name="dashboard", scopes=["api:read"])
    key = {"Authorization": f"Bearer {reader.key}"}
    with TestClient(create_ingestion(locked, engine=engine), raise_server_exceptions=False) as c:
        robot = documented(c, "/ingest/openapi.json", "post", "/ingest/robot")
        refused = c.post("/ingest/robot", json=f.robot(1))
        check(refused, robot, 401)
        assert refused.headers["www-authenticate"] == "Bearer"
        check(c.post("/ingest/robot", json=f.robot(1), headers=key), robot, 403)
    with TestClient(create_api(locked, engine=engine), raise_server_exceptions=False) as c:
        outcomes = documented(c, "/api/openapi.json", "get", "/api/outcomes")
        check(c.get("/api/outcomes", headers=key), outcomes, 200)
        throttled = c.get("/api/outcomes", headers=key)
        check(throttled, outcomes, 429)
        assert int(throttled.headers["retry-after"]) >= 1


def _json() -> dict[str, str]:
    return {"content-type": "application/json"}
