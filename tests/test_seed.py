"""The sample-data generator: deterministic, valid, plausible, and delivered over real HTTP."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from pydantic import BaseModel, TypeAdapter
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from medrobotics import config, seed
from medrobotics.cli import app as cli_app
from medrobotics.domain.maintenance import MaintenanceIn
from medrobotics.domain.outcomes import OutcomeIn
from medrobotics.domain.procedures import ProcedureIn
from medrobotics.domain.robots import RobotIn
from medrobotics.domain.telemetry import RANGES, TelemetryIn
from medrobotics.ingestion.app import create_app
from medrobotics.storage import tables

SCHEMAS: dict[str, type[BaseModel]] = {
    "robots": RobotIn,
    "procedures": ProcedureIn,
    "outcomes": OutcomeIn,
    "maintenance": MaintenanceIn,
    "telemetry": TelemetryIn,
}
SMALL: dict[str, Any] = {
    "robots": 6,
    "facilities": 3,
    "procedure_count": 60,
    "telemetry_per_procedure": 4,
}


@pytest.fixture(scope="module")
def full() -> seed.Dataset:
    """The default-sized fleet, with fewer samples per procedure to keep the suite quick."""
    return seed.generate(seed=42, telemetry_per_procedure=5)


def _all(dataset: seed.Dataset) -> dict[str, list[dict[str, Any]]]:
    return {entity: list(dataset.records(entity)) for entity in seed.ORDER}


# --- Determinism -----------------------------------------------------------------------------


def test_same_seed_gives_identical_records() -> None:
    first = _all(seed.generate(seed=7, **SMALL))
    second = _all(seed.generate(seed=7, **SMALL))
    assert orjson.dumps(first) == orjson.dumps(second)


def test_telemetry_is_the_same_on_every_pass() -> None:
    dataset = seed.generate(seed=7, **SMALL)
    assert list(dataset.telemetry()) == list(dataset.telemetry())


def test_different_seed_gives_different_records() -> None:
    first = _all(seed.generate(seed=7, **SMALL))
    second = _all(seed.generate(seed=8, **SMALL))
    for entity in seed.ORDER:
        assert first[entity] != second[entity], entity
    assert {r["robot_id"] for r in first["robots"]}.isdisjoint(
        r["robot_id"] for r in second["robots"]
    )


def test_end_anchors_the_window() -> None:
    end = datetime(2024, 3, 1, tzinfo=UTC)
    dataset = seed.generate(seed=1, end=end, **SMALL)
    starts = [seed._parse(p["start_time"]) for p in dataset.procedures]
    assert max(starts) < end
    assert min(starts) >= datetime(2022, 3, 1, tzinfo=UTC)


def test_edge_sizes() -> None:
    empty = seed.generate(seed=1, robots=1, facilities=1, procedure_count=0)
    assert empty.counts() == {
        "robots": 1,
        "procedures": 0,
        "outcomes": 0,
        "maintenance": len(empty.maintenance),
        "telemetry": 0,
    }
    many = seed.generate(seed=1, robots=40, facilities=30, procedure_count=10)
    names = {r["facility_name"] for r in many.robots}
    assert len(names) == 30
    assert all(len(n) <= 200 for n in names)


# --- Validity --------------------------------------------------------------------------------


def test_every_record_validates_against_its_wire_schema(full: seed.Dataset) -> None:
    for entity, model in SCHEMAS.items():
        adapter = TypeAdapter(model)
        records = list(full.records(entity))
        assert records, entity
        for record in records:
            adapter.validate_json(orjson.dumps(record))


def test_a_fleet_ending_today_keeps_every_rule() -> None:
    # The CLI's default end is today: every time must lie in the plausible window, every
    # reading, cost and duration in its range (docs/data-rules.md).
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    dataset = seed.generate(seed=11, end=today, **SMALL)
    for entity, model in SCHEMAS.items():
        adapter = TypeAdapter(model)
        records = list(dataset.records(entity))
        assert records, entity
        for record in records:
            adapter.validate_json(orjson.dumps(record))
    for sample in dataset.records("telemetry"):
        for name, (low, high, _) in RANGES.items():
            assert sample[name] is None or low <= sample[name] <= high, name


def test_counts_match_the_records(full: seed.Dataset) -> None:
    counts = full.counts()
    for entity in seed.ORDER:
        assert counts[entity] == sum(1 for _ in full.records(entity)), entity
    assert counts["robots"] == 50
    assert counts["procedures"] == 5000


def test_ids_and_serials_are_unique(full: seed.Dataset) -> None:
    for entity, key in (
        ("robots", "robot_id"),
        ("robots", "robot_serial_number"),
        ("procedures", "procedure_id"),
        ("outcomes", "procedure_id"),
        ("maintenance", "maintenance_id"),
    ):
        values = [r[key] for r in full.records(entity)]
        assert len(values) == len(set(values)), (entity, key)


# --- Plausibility ----------------------------------------------------------------------------


def test_fleet_covers_ten_facilities_and_six_categories(full: seed.Dataset) -> None:
    assert len({r["facility_id"] for r in full.robots}) == 10
    assert {p["procedure_category"] for p in full.procedures} == set(seed.CATEGORY_WEIGHTS)
    statuses = [r["status"] for r in full.robots]
    assert statuses.count("operational") > len(statuses) * 0.8


def test_robots_only_do_procedures_their_model_serves(full: seed.Dataset) -> None:
    models = {r["robot_id"]: seed.MODELS_BY_NAME[r["robot_model"]] for r in full.robots}
    for proc in full.procedures:
        model = models[proc["robot_id"]]
        assert proc["procedure_category"] in model.categories
        if model.name in ("Mako SmartRobotics", "ROSA Knee"):
            assert proc["procedure_category"] == "orthopedic"
        assert proc["procedure_type"] in {k.name for k in seed.KINDS[proc["procedure_category"]]}


def test_procedure_times_and_statuses(full: seed.Dataset) -> None:
    end = seed.DEFAULT_END
    statuses: dict[str, int] = defaultdict(int)
    for proc in full.procedures:
        statuses[proc["status"]] += 1
        start = seed._parse(proc["start_time"])
        assert start < end
        if proc["end_time"] is not None:
            finish = seed._parse(proc["end_time"])
            assert finish >= start
            assert finish <= end
            assert proc["duration_minutes"] == pytest.approx(
                (finish - start).total_seconds() / 60, abs=0.1
            )
        else:
            assert proc["status"] in ("in_progress", "cancelled")
        assert 18 <= proc["patient_age"] <= 90
        assert 1.0 <= proc["complexity_score"] <= 5.0
    assert statuses["completed"] > 0.9 * len(full.procedures)
    assert statuses["aborted"] > 0
    assert statuses["cancelled"] > 0
    assert statuses["in_progress"] > 0
    running = [p for p in full.procedures if p["status"] == "in_progress"]
    assert all((end - seed._parse(p["start_time"])).days < 1 for p in running)


def test_outcomes_only_for_completed_procedures(full: seed.Dataset) -> None:
    status = {p["procedure_id"]: p["status"] for p in full.procedures}
    assert {status[o["procedure_id"]] for o in full.outcomes} == {"completed"}
    assert len(full.outcomes) == sum(1 for s in status.values() if s == "completed")


def test_complications_rise_with_complexity(full: seed.Dataset) -> None:
    complexity = {p["procedure_id"]: p["complexity_score"] for p in full.procedures}
    low = [o for o in full.outcomes if complexity[o["procedure_id"]] <= 2]
    high = [o for o in full.outcomes if complexity[o["procedure_id"]] >= 4]
    assert len(low) > 300 and len(high) > 150

    def rate(group: list[dict[str, Any]]) -> float:
        return sum(o["success_status"] != "successful" for o in group) / len(group)

    assert rate(high) > rate(low) * 1.5
    for outcome in full.outcomes:
        assert bool(outcome["complications"]) == (outcome["success_status"] != "successful")


def test_maintenance_history_is_roughly_quarterly(full: seed.Dataset) -> None:
    visits: dict[str, list[str]] = defaultdict(list)
    for visit in full.maintenance:
        visits[visit["robot_id"]].append(visit["maintenance_date"])
        assert visit["cost"] > 0
    types = {v["maintenance_type"] for v in full.maintenance}
    assert types == {"routine", "emergency", "upgrade", "calibration"}
    for robot in full.robots:
        days = visits[robot["robot_id"]]
        assert days, robot["robot_id"]
        assert robot["last_maintenance_date"] == max(days)
        assert min(days) > robot["installation_date"]


def test_telemetry_lies_within_its_procedure(full: seed.Dataset) -> None:
    procs = {p["procedure_id"]: p for p in full.procedures}
    seen: dict[str, set[str]] = defaultdict(set)
    for sample in full.telemetry():
        proc = procs[sample["procedure_id"]]
        assert proc["status"] != "cancelled"
        assert sample["robot_id"] == proc["robot_id"]
        at = seed._parse(sample["timestamp"])
        assert seed._parse(proc["start_time"]) <= at
        finish = seed._parse(proc["end_time"]) if proc["end_time"] else seed.DEFAULT_END
        assert at <= finish
        assert sample["timestamp"] not in seen[proc["procedure_id"]]
        seen[proc["procedure_id"]].add(sample["timestamp"])
    ran = [p for p in full.procedures if p["status"] != "cancelled"]
    assert len(seen) == len(ran)
    assert all(len(s) == 5 for s in seen.values())


def test_telemetry_is_smooth_and_warms_up() -> None:
    dataset = seed.generate(seed=3, robots=2, facilities=1, procedure_count=20)
    dataset.telemetry_per_procedure = 200
    by_proc: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sample in dataset.telemetry():
        by_proc[sample["procedure_id"]].append(sample)
    for samples in by_proc.values():
        xs = [s["arm_position_x"] for s in samples]
        steps = [abs(b - a) for a, b in itertools.pairwise(xs)]
        # Neighbouring samples move a little, never jump across the workspace.
        assert max(steps) < 0.25 * (max(xs) - min(xs)) + 5
        temps = [s["system_temperature"] for s in samples]
        assert sum(temps[-20:]) / 20 > sum(temps[:20]) / 20
        assert len({s["tool_type"] for s in samples}) >= 2


# --- Sending (mocked transport) --------------------------------------------------------------


def test_base_url_accepts_a_pasted_ingest_path() -> None:
    assert seed.base_url("http://h:8080/") == "http://h:8080"
    assert seed.base_url("https://alb.example.com/ingest/batch") == "https://alb.example.com"
    assert seed.base_url("http://h/prefix/ingest") == "http://h/prefix"
    with pytest.raises(ValueError):
        seed.base_url("h:8080")


def _records(n: int) -> list[dict[str, Any]]:
    return [{"robot_id": f"r-{i}", "robot_model": "X", "facility_id": "f"} for i in range(n)]


def test_sender_batches_gzip_and_authenticates() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = orjson.loads(gzip.decompress(request.content))
        n = len(body["records"])
        return httpx.Response(201, json={"entity": body["type"], "received": n, "written": n})

    with seed.Sender(
        "http://svc", api_key="k3y", batch_size=4, transport=httpx.MockTransport(handler)
    ) as sender:
        sent = sender.send_entity("robots", _records(10))
    assert [len(orjson.loads(gzip.decompress(r.content))["records"]) for r in seen] == [4, 4, 2]
    assert sent == seed.Sent(records=10, written=10, duplicates=0, batches=3)
    for request in seen:
        assert str(request.url) == "http://svc/ingest/batch"
        assert request.headers["authorization"] == "Bearer k3y"
        assert request.headers["content-encoding"] == "gzip"
        assert request.headers["content-type"] == "application/json"


def test_sender_retries_503_honouring_retry_after() -> None:
    answers = iter(
        [
            httpx.Response(503, headers={"Retry-After": "7"}, json={"error": {"message": "x"}}),
            httpx.Response(429, json={"error": {"message": "slow down"}}),
            httpx.Response(201, json={"written": 3}),
        ]
    )
    slept: list[float] = []
    with seed.Sender(
        "http://svc",
        transport=httpx.MockTransport(lambda _r: next(answers)),
        sleep=slept.append,
    ) as sender:
        sent = sender.send_entity("robots", _records(3))
    assert sent.written == 3
    assert slept == [7.0, 1.0]


def test_sender_retries_connection_errors_then_gives_up() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("connection refused", request=request)

    slept: list[float] = []
    with (
        seed.Sender(
            "http://svc", attempts=3, transport=httpx.MockTransport(handler), sleep=slept.append
        ) as sender,
        pytest.raises(seed.SeedError, match="cannot reach http://svc/ingest/batch"),
    ):
        sender.send_entity("robots", _records(1))
    assert calls == 3
    assert slept == [0.5, 1.0]


def test_sender_fails_clearly_on_4xx() -> None:
    error = {
        "error": {
            "code": "invalid",
            "message": "invalid batch: robot_model",
            "details": [{"field": "robot_model", "message": "Field required", "index": 2}],
            "request_id": "abc",
        }
    }
    calls = 0

    def handler(_request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(422, json=error)

    with (
        seed.Sender("http://svc", transport=httpx.MockTransport(handler)) as sender,
        pytest.raises(seed.SeedError) as caught,
    ):
        sender.send_entity("robots", _records(3))
    assert calls == 1
    message = str(caught.value)
    assert "HTTP 422: invalid batch: robot_model" in message
    assert "record 2: robot_model: Field required" in message


def test_sender_names_the_key_on_401() -> None:
    response = httpx.Response(401, json={"error": {"message": "missing or invalid API key"}})
    with (
        seed.Sender("http://svc", transport=httpx.MockTransport(lambda _r: response)) as sender,
        pytest.raises(seed.SeedError, match="MEDROBOTICS_API_KEY"),
    ):
        sender.send_entity("robots", _records(1))


# --- End to end over real HTTP, on both databases --------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn in a background thread: signals stay with the test runner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@pytest.fixture
def live_url(settings: config.Settings, engine: Engine) -> Iterator[str]:
    """The real ingestion app served on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(
        uvicorn.Config(create_app(settings, engine=engine), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _row_counts(engine: Engine) -> dict[str, int]:
    found = {}
    with engine.connect() as conn:
        for entity, table in (
            ("robots", tables.robots),
            ("procedures", tables.procedures),
            ("outcomes", tables.outcomes),
            ("maintenance", tables.maintenance),
            ("telemetry", tables.telemetry),
        ):
            found[entity] = conn.execute(select(func.count()).select_from(table)).scalar_one()
    return found


@pytest.mark.parametrize("concurrency", [1, 3])
def test_send_over_http_stores_every_record(
    live_url: str, engine: Engine, concurrency: int
) -> None:
    dataset = seed.generate(seed=11, **SMALL)
    expected = dataset.counts()
    progressed: dict[str, int] = defaultdict(int)

    def progress(entity: str, n: int) -> None:
        progressed[entity] += n

    with seed.Sender(live_url, batch_size=25, concurrency=concurrency) as sender:
        sent = sender.send(dataset, progress=progress)
    assert _row_counts(engine) == expected
    assert {e: s.records for e, s in sent.items()} == expected
    assert {e: s.written for e, s in sent.items()} == expected
    assert dict(progressed) == expected
    assert sent["telemetry"].batches == -(-expected["telemetry"] // 25)

    # Same seed again: identical records change nothing and samples are skipped.
    with seed.Sender(live_url, batch_size=25, concurrency=concurrency) as sender:
        again = sender.send(dataset)
    assert _row_counts(engine) == expected
    assert {e: s.written for e, s in again.items()} == dict.fromkeys(expected, 0)
    assert again["telemetry"].duplicates == expected["telemetry"]


def test_cli_seeds_a_live_service(live_url: str, engine: Engine) -> None:
    args = ["--robots", "4", "--facilities", "2", "--procedures", "30"]
    args += ["--telemetry-per-procedure", "3", "--random-seed", "5", "--batch-size", "20"]
    # Pinned: the default end is today, and the fleet a seed gives depends on its end.
    args += ["--end", seed.DEFAULT_END.isoformat()]
    result = CliRunner().invoke(
        cli_app, ["seed", "--url", live_url, *args], env={"MEDROBOTICS_API_KEY": "secret"}
    )
    assert result.exit_code == 0, result.output
    expected = seed.generate(
        seed=5, robots=4, facilities=2, procedure_count=30, telemetry_per_procedure=3
    ).counts()
    assert _row_counts(engine) == expected
    assert "telemetry" in result.stdout
    assert str(expected["telemetry"]) in result.stdout


def test_cli_exits_non_zero_when_the_service_refuses(live_url: str) -> None:
    result = CliRunner().invoke(
        cli_app, ["seed", "--url", live_url + "/nope", "--robots", "2", "--procedures", "5"]
    )
    assert result.exit_code == 1
    assert "HTTP 404" in result.output


def test_cli_refuses_a_bad_end() -> None:
    result = CliRunner().invoke(cli_app, ["seed", "--end", "yesterday"])
    assert result.exit_code == 2
    assert "--end" in result.output
