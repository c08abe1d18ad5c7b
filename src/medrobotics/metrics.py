"""Metrics: Prometheus for scraping, CloudWatch Embedded Metric Format lines for ECS."""

from __future__ import annotations

import asyncio
import random
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import Engine
from starlette.requests import Request
from starlette.responses import Response

NAMESPACE = "MedRobotics"
EMF_MAX_VALUES = 100  # CloudWatch takes at most 100 values per metric per line

REQUESTS = Counter(
    "medrobotics_requests_total",
    "HTTP requests by route template and status.",
    ["service", "method", "route", "status"],
)
LATENCY = Histogram(
    "medrobotics_request_duration_seconds",
    "HTTP request duration by route template.",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECEIVED = Counter(
    "medrobotics_received_records_total", "Records accepted in committed requests.", ["entity"]
)
INGESTED = Counter(
    "medrobotics_ingested_records_total",
    "Records newly written (telemetry: new samples; entities: inserted or updated).",
    ["entity"],
)
BATCH_SIZE = Histogram(
    "medrobotics_batch_records",
    "Records per committed batch request.",
    ["entity"],
    buckets=(1, 10, 100, 500, 1000, 5000, 10_000, 50_000, 100_000, 1_000_000),
)
ARCHIVE_LAG = Gauge("medrobotics_archive_lag_seconds", "Age of the oldest unarchived sample.")
ARCHIVE_PENDING = Gauge("medrobotics_archive_pending_rows", "Telemetry rows not yet in the lake.")


class _Pools(Collector):
    """Reports each watched engine's connection pool at scrape time."""

    def __init__(self) -> None:
        self.engines: dict[str, Engine] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        used = GaugeMetricFamily(
            "medrobotics_db_pool_checked_out", "Connections in use.", labels=["service"]
        )
        size = GaugeMetricFamily(
            "medrobotics_db_pool_size", "Configured steady pool size.", labels=["service"]
        )
        for service, engine in list(self.engines.items()):
            pool: Any = engine.pool
            if hasattr(pool, "checkedout"):
                used.add_metric([service], float(pool.checkedout()))
                size.add_metric([service], float(pool.size()))
        yield used
        yield size


_POOLS = _Pools()
REGISTRY.register(_POOLS)


def watch_pool(service: str, engine: Engine) -> None:
    """Report `engine`'s pool use under `service`."""
    _POOLS.engines[service] = engine


@dataclass
class Window:
    """What happened since the last EMF line (the key figures the dashboard plots)."""

    requests: int = 0
    errors_5xx: int = 0
    ingested_samples: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    seen: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> tuple[int, int, int, list[float]]:
        """Return and reset the window."""
        with self.lock:
            out = (self.requests, self.errors_5xx, self.ingested_samples, self.latencies_ms)
            self.requests = self.errors_5xx = self.ingested_samples = self.seen = 0
            self.latencies_ms = []
        return out


WINDOWS: dict[str, Window] = {}


def window(service: str) -> Window:
    """Return the EMF window for `service`."""
    return WINDOWS.setdefault(service, Window())


def observe_request(service: str, method: str, route: str, status: int, seconds: float) -> None:
    """Count one finished request."""
    key = (service, method, route, status)
    answers = _ANSWERS.get(key)
    if answers is None:  # as many as the labels' combinations: routes are templates
        answers = _ANSWERS[key] = Answers(service, method, route, status)
    answers.observe(seconds)


class Answers:
    """One route's answers of one status, with the label lookups done once (every request)."""

    def __init__(self, service: str, method: str, route: str, status: int) -> None:
        self.service, self.status = service, status
        self._count = REQUESTS.labels(service, method, route, str(status))
        self._latency = LATENCY.labels(service, method, route)

    def observe(self, seconds: float) -> None:
        """Count one answer, as `observe_request` does."""
        self._count.inc()
        self._latency.observe(seconds)
        _window_request(self.service, self.status, seconds)


_ANSWERS: dict[tuple[str, str, str, int], Answers] = {}


def _window_request(service: str, status: int, seconds: float) -> None:
    w = WINDOWS.get(service)
    if w is None:
        return
    with w.lock:
        w.requests += 1
        if status >= 500:
            w.errors_5xx += 1
        # Reservoir sample: a fair subset of latencies when there are more than fit a line.
        w.seen += 1
        ms = seconds * 1000
        if len(w.latencies_ms) < EMF_MAX_VALUES:
            w.latencies_ms.append(ms)
        else:
            slot = random.randrange(w.seen)  # noqa: S311  # nosec B311
            if slot < EMF_MAX_VALUES:
                w.latencies_ms[slot] = ms


def received(entity: str, count: int, *, batch: bool) -> None:
    """Count records of a committed request."""
    RECEIVED.labels(entity).inc(count)
    if batch:
        BATCH_SIZE.labels(entity).observe(count)


def written(entity: str, count: int) -> None:
    """Count records newly written by a commit (telemetry: new samples)."""
    INGESTED.labels(entity).inc(count)
    if entity == "telemetry":
        w = WINDOWS.get("data-ingestion")
        if w is not None:
            with w.lock:
                w.ingested_samples += count


def archive_lag(*, seconds: float, rows: int) -> None:
    """Publish how far the lake archiver lags."""
    ARCHIVE_LAG.set(seconds)
    ARCHIVE_PENDING.set(rows)


def scrape(_request: Request) -> Response:
    """Serve the Prometheus text exposition."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


def emf_line(
    service: str, environment: str, *, lag: bool = False, now_ms: int | None = None
) -> dict[str, Any]:
    """Build one EMF record of the window since the last one, and reset it; `lag` adds the lag."""
    metrics: list[dict[str, str]] = []
    record: dict[str, Any] = {"Service": service, "Environment": environment}
    if service != "archiver":  # the archiver serves no HTTP
        requests, errors, samples, latencies = window(service).take()
        metrics += [{"Name": "Requests", "Unit": "Count"}, {"Name": "Errors5xx", "Unit": "Count"}]
        record.update(Requests=requests, Errors5xx=errors)
        if latencies:
            metrics.append({"Name": "RequestLatency", "Unit": "Milliseconds"})
            record["RequestLatency"] = [round(v, 3) for v in latencies]
        if service == "data-ingestion":
            metrics.append({"Name": "IngestedSamples", "Unit": "Count"})
            record["IngestedSamples"] = samples
    if lag:
        # Only where an archiver runs: ingestion tasks with MEDROBOTICS_ARCHIVE=0 would report
        # a stale or zero lag beside the archiver's real one.
        metrics.append({"Name": "ArchiveLagSeconds", "Unit": "Seconds"})
        record["ArchiveLagSeconds"] = ARCHIVE_LAG._value.get()  # gauges hold one float
        metrics.append({"Name": "ArchivePendingRows", "Unit": "Count"})
        record["ArchivePendingRows"] = ARCHIVE_PENDING._value.get()
    record["_aws"] = {
        "Timestamp": now_ms if now_ms is not None else int(time.time() * 1000),
        "CloudWatchMetrics": [
            {"Namespace": NAMESPACE, "Dimensions": [["Environment", "Service"]], "Metrics": metrics}
        ],
    }
    return record


async def emit_emf(
    service: str,
    environment: str,
    *,
    interval: float = 60.0,
    lag: bool = False,
    out: TextIO | None = None,
) -> None:
    """Print an EMF line every `interval` seconds (and once more when cancelled)."""
    stream = out or sys.stdout
    window(service)
    try:
        while True:
            await asyncio.sleep(interval)
            stream.write(orjson.dumps(emf_line(service, environment, lag=lag)).decode() + "\n")
            stream.flush()
    except asyncio.CancelledError:
        stream.write(orjson.dumps(emf_line(service, environment, lag=lag)).decode() + "\n")
        stream.flush()
        raise
