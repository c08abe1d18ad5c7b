"""Prometheus metrics move with requests; EMF lines follow the format; stats and metrics agree."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from medrobotics import metrics
from tests import factories as f
from tests.conftest import GUIDE_SAMPLE

SCHEMA = json.loads((Path(__file__).with_name("emf_schema.json")).read_text())


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_as_requests_are_made(client: TestClient) -> None:
    before = scrape(client)
    key = {"service": "data-ingestion", "method": "POST", "route": "/ingest/telemetry"}
    for _ in range(3):
        assert client.post("/ingest/telemetry", json=GUIDE_SAMPLE).status_code == 201
    client.post("/ingest/telemetry", content=b"{", headers={"content-type": "application/json"})
    client.post("/ingest/batch", json={"type": "telemetry", "records": f.samples(40)})
    after = scrape(client)
    assert (
        value(after, "medrobotics_requests_total", **key, status="201")
        - value(before, "medrobotics_requests_total", **key, status="201")
        == 3
    )
    assert (
        value(after, "medrobotics_requests_total", **key, status="400")
        - value(before, "medrobotics_requests_total", **key, status="400")
        == 1
    )
    hist = dict(key)
    assert (
        value(after, "medrobotics_request_duration_seconds_count", **hist)
        - value(before, "medrobotics_request_duration_seconds_count", **hist)
        == 4
    )
    assert (
        value(after, "medrobotics_received_records_total", entity="telemetry")
        - value(before, "medrobotics_received_records_total", entity="telemetry")
        == 43
    )
    # The three single samples were one sample sent three times: one new row.
    assert (
        value(after, "medrobotics_ingested_records_total", entity="telemetry")
        - value(before, "medrobotics_ingested_records_total", entity="telemetry")
        == 41
    )
    assert (
        value(after, "medrobotics_batch_records_count", entity="telemetry")
        - value(before, "medrobotics_batch_records_count", entity="telemetry")
        == 1
    )
    assert ("medrobotics_db_pool_checked_out", (("service", "data-ingestion"),)) in after


def test_stats_and_metrics_agree(client: TestClient) -> None:
    before = scrape(client)
    client.post("/ingest/batch", json={"type": "robots", "records": [f.robot(i) for i in range(4)]})
    client.post("/ingest/batch", json={"type": "telemetry", "records": f.samples(120)})
    client.post("/ingest/telemetry", json=f.samples(30, procedure_n=2))
    client.post("/ingest/telemetry", json=f.samples(30, procedure_n=2))  # re-sent
    after = scrape(client)
    totals = client.get("/ingest/stats").json()["totals"]
    for entity in ("telemetry", "robots"):
        grown = value(after, "medrobotics_ingested_records_total", entity=entity) - value(
            before, "medrobotics_ingested_records_total", entity=entity
        )
        assert grown == totals[entity], entity


def test_emf_lines_follow_the_specification(client: TestClient) -> None:
    metrics.window("data-ingestion")
    for _ in range(5):
        client.post("/ingest/telemetry", json=GUIDE_SAMPLE)
    client.get("/ingest/nothing")
    line = metrics.emf_line("data-ingestion", "test")
    _check_emf(line)
    assert line["Requests"] >= 6 and line["Service"] == "data-ingestion"
    assert line["IngestedSamples"] >= 1
    assert 1 <= len(line["RequestLatency"]) <= metrics.EMF_MAX_VALUES
    # The window resets: the next line reports only what came after.
    assert metrics.emf_line("data-ingestion", "test")["Requests"] == 0


def test_emf_lines_carry_the_archive_lag_only_where_an_archiver_runs() -> None:
    metrics.archive_lag(seconds=42.0, rows=7)
    # An ingestion task with MEDROBOTICS_ARCHIVE=0 (ECS) leaves it to the archiver service.
    assert "ArchiveLagSeconds" not in metrics.emf_line("data-ingestion", "test")
    inside = metrics.emf_line("data-ingestion", "test", lag=True)  # `medrobotics up`
    _check_emf(inside)
    assert (inside["ArchiveLagSeconds"], inside["ArchivePendingRows"]) == (42.0, 7)
    archiver = metrics.emf_line("archiver", "test", lag=True)
    _check_emf(archiver)
    names = {m["Name"] for m in archiver["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert names == {"ArchiveLagSeconds", "ArchivePendingRows"}, "no request metrics"


def test_emf_emitter_writes_lines(client: TestClient) -> None:
    out = io.StringIO()

    async def run() -> None:
        task = asyncio.create_task(metrics.emit_emf("api-service", "test", interval=0.01, out=out))
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run())
    lines = [orjson.loads(x) for x in out.getvalue().splitlines()]
    assert len(lines) >= 2
    for line in lines:
        _check_emf(line)


def _check_emf(line: dict[str, Any]) -> None:
    jsonschema.validate(line, SCHEMA)
    for directive in line["_aws"]["CloudWatchMetrics"]:
        for dims in directive["Dimensions"]:
            for name in dims:
                assert isinstance(line[name], str), name
        for metric in directive["Metrics"]:
            v = line[metric["Name"]]
            assert isinstance(v, (int, float)) or (
                isinstance(v, list)
                and 0 < len(v) <= 100
                and all(isinstance(x, (int, float)) for x in v)
            ), metric["Name"]
