"""GET /api/procedures, /api/procedures/{id} and /api/procedures/{id}/telemetry."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient

from medrobotics.domain.telemetry import READINGS
from medrobotics.domain.units import READING
from tests.api.helpers import assert_error, rounded, ts, walk
from tests.fleet import Fleet

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _expected(fleet: Fleet, keep: Any) -> list[str]:
    rows = [p for p in fleet.procedures if keep(p)]
    rows.sort(key=lambda p: (p.start_time, p.procedure_id), reverse=True)
    return [p.procedure_id for p in rows]


def test_pages_newest_first_without_gaps_or_duplicates(client: TestClient, fleet: Fleet) -> None:
    items, pages = walk(client, "/api/procedures", limit=7)
    assert [p["procedure_id"] for p in items] == _expected(fleet, lambda p: True)
    assert pages == -(-len(fleet.procedures) // 7)
    times = [ts(p["start_time"]) for p in items]
    assert times == sorted(times, reverse=True)
    first = client.get("/api/procedures", params={"limit": 7}).json()
    assert first["limit"] == 7 and first["next_cursor"] in first["next"]


def test_fields_match_what_was_written(client: TestClient, fleet: Fleet) -> None:
    items, _ = walk(client, "/api/procedures", limit=500)
    by_id = {p["procedure_id"]: p for p in items}
    for source in fleet.procedures:
        got = by_id[source.procedure_id]
        assert ts(got["start_time"]) == source.start_time
        assert (got["end_time"] and ts(got["end_time"])) == source.end_time
        assert got["duration_minutes"] == source.duration_minutes
        assert got["patient_age"] == source.patient_age
        assert got["status"] == source.status


def test_guide_command(client: TestClient, fleet: Fleet) -> None:
    body = client.get("/api/procedures?category=urological&limit=10").json()
    expected = _expected(fleet, lambda p: p.procedure_category == "urological")
    assert [p["procedure_id"] for p in body["items"]] == expected[:10]


@pytest.mark.parametrize(
    ("params", "keep"),
    [
        ({"category": "thoracic"}, lambda p: p.procedure_category == "thoracic"),
        ({"robot_id": "robot-2"}, lambda p: p.robot_id == "robot-2"),
        ({"robot_id": "robot-ghost"}, lambda p: p.robot_id == "robot-ghost"),
        # fac-austin holds robot-2 and robot-5.
        ({"facility_id": "fac-austin"}, lambda p: p.robot_id in ("robot-2", "robot-5")),
        ({"surgeon_id": "surgeon-3"}, lambda p: p.surgeon_id == "surgeon-3"),
        ({"status": "aborted"}, lambda p: p.status == "aborted"),
        ({"status": "in_progress"}, lambda p: p.status == "in_progress"),
        (
            {"category": "general", "status": "completed"},
            lambda p: p.procedure_category == "general" and p.status == "completed",
        ),
    ],
)
def test_filters(client: TestClient, fleet: Fleet, params: dict[str, str], keep: Any) -> None:
    items, _ = walk(client, "/api/procedures", limit=3, **params)
    expected = _expected(fleet, keep)
    assert expected
    assert [p["procedure_id"] for p in items] == expected


def test_time_range_and_naive_times_are_utc(client: TestClient, fleet: Fleet) -> None:
    start = (fleet.now - timedelta(days=20)).replace(microsecond=0)
    end = start + timedelta(days=7)
    expected = _expected(fleet, lambda p: start <= p.start_time < end)
    assert expected
    naive = {
        "start": start.replace(tzinfo=None).isoformat(),
        "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    items, _ = walk(client, "/api/procedures", limit=4, **naive)
    assert [p["procedure_id"] for p in items] == expected
    plus_two = {
        "start": start.astimezone(timezone(timedelta(hours=2))).isoformat(),
        "end": end.isoformat(),
    }
    items, _ = walk(client, "/api/procedures", limit=50, **plus_two)
    assert [p["procedure_id"] for p in items] == expected


def test_detail(client: TestClient, fleet: Fleet) -> None:
    source = next(
        p
        for p in fleet.procedures
        if p.robot_id != "robot-ghost"
        and any(o.procedure_id == p.procedure_id for o in fleet.outcomes)
    )
    body = client.get(f"/api/procedures/{source.procedure_id}").json()
    assert body["procedure_id"] == source.procedure_id
    assert body["robot"]["robot_id"] == source.robot_id
    outcome = next(o for o in fleet.outcomes if o.procedure_id == source.procedure_id)
    assert body["outcome"]["success_status"] == outcome.success_status
    assert body["outcome"]["blood_loss_ml"] == outcome.blood_loss_ml
    assert body["telemetry"]["sample_count"] == 0
    assert body["telemetry"]["first_timestamp"] is None
    assert set(body["telemetry"]["channels"]) == set(READINGS)


def test_detail_telemetry_summary(client: TestClient, fleet: Fleet) -> None:
    source = fleet.procedures[0]
    samples = [s for s in fleet.telemetry if s.procedure_id == source.procedure_id]
    body = client.get(f"/api/procedures/{source.procedure_id}").json()
    assert body["robot"] is None  # robot-ghost is not in the registry
    summary = body["telemetry"]
    assert summary["sample_count"] == len(samples)
    assert ts(summary["first_timestamp"]) == min(s.timestamp for s in samples)
    assert ts(summary["last_timestamp"]) == max(s.timestamp for s in samples)
    for name in READINGS:
        values = [getattr(s, name) for s in samples if getattr(s, name) is not None]
        got = summary["channels"][name]
        assert got["count"] == len(values)
        if values:
            assert got["min"] == pytest.approx(min(values))
            assert got["max"] == pytest.approx(max(values))
            assert got["mean"] == rounded(statistics.fmean(values), READING)
        else:
            assert got == {"count": 0, "min": None, "mean": None, "max": None}


def _buckets(samples: list[Any], interval: int, channels: list[str]) -> dict[int, Any]:
    out: dict[int, list[Any]] = {}
    for s in samples:
        ms = (s.timestamp - EPOCH) // timedelta(milliseconds=1)
        out.setdefault(ms // interval, []).append(s)
    result = {}
    for bucket, group in sorted(out.items()):
        means = {}
        for name in channels:
            values = [getattr(s, name) for s in group if getattr(s, name) is not None]
            means[name] = statistics.fmean(values) if values else None
        result[bucket] = (len(group), means)
    return result


def _check_series(body: dict[str, Any], samples: list[Any], channels: list[str]) -> None:
    interval = body["interval_ms"]
    expected = _buckets(samples, interval, channels)
    assert body["channels"] == channels and set(body["values"]) == set(channels)
    got_buckets = [(ts(t) - EPOCH) // timedelta(milliseconds=interval) for t in body["time"]]
    assert got_buckets == list(expected)
    assert body["samples"] == [n for n, _ in expected.values()]
    for name in channels:
        want = [m[name] for _, m in expected.values()]
        assert body["values"][name] == [rounded(v, READING) for v in want]


def test_series_downsampled(client: TestClient, fleet: Fleet) -> None:
    source = fleet.procedures[0]
    samples = [s for s in fleet.telemetry if s.procedure_id == source.procedure_id]
    url = f"/api/procedures/{source.procedure_id}/telemetry"
    # Samples every 20 ms from a whole second: bucket edges fall exactly on samples.
    body = client.get(url, params={"interval_ms": 100}).json()
    assert body["interval_ms"] == 100 and len(body["time"]) == 200
    _check_series(body, samples, list(READINGS))
    channels = ["grip_pressure", "arm_position_x", "camera_zoom"]
    body = client.get(url, params={"interval_ms": 1000, "channels": ",".join(channels)}).json()
    _check_series(body, samples, channels)
    assert body["values"]["camera_zoom"] == [None] * 20


def test_series_time_range(client: TestClient, fleet: Fleet) -> None:
    source = fleet.procedures[0]
    samples = [s for s in fleet.telemetry if s.procedure_id == source.procedure_id]
    start = samples[100].timestamp + timedelta(milliseconds=5)
    end = samples[400].timestamp
    inside = [s for s in samples if start <= s.timestamp < end]
    params = {"start": start.isoformat(), "end": end.isoformat(), "interval_ms": 250}
    body = client.get(f"/api/procedures/{source.procedure_id}/telemetry", params=params).json()
    assert sum(body["samples"]) == len(inside) == 299
    _check_series(body, inside, list(READINGS))
    assert ts(body["start"]) == start and ts(body["end"]) == end


def test_series_interval_chosen_to_fit_the_cap(client: TestClient, fleet: Fleet) -> None:
    source = fleet.procedures[0]
    samples = [s for s in fleet.telemetry if s.procedure_id == source.procedure_id]
    url = f"/api/procedures/{source.procedure_id}/telemetry"
    first = (samples[0].timestamp - EPOCH) // timedelta(milliseconds=1)
    last = (samples[-1].timestamp - EPOCH) // timedelta(milliseconds=1)
    assert last - first == 19_980

    def count(width: int) -> int:
        return last // width - first // width + 1

    body = client.get(url).json()
    width = body["interval_ms"]
    assert count(width) <= 10_000 < count(width - 1)
    _check_series(body, samples, list(READINGS))
    # Asking for 1 ms over these 20 s would be ~20,000 points: refused, naming the parameter.
    assert_error(client.get(url, params={"interval_ms": 1}), 422, "invalid", "interval_ms")


def test_series_widths_past_32_bits(client: TestClient, fleet: Fleet) -> None:
    # The route takes widths up to a year, past 2**31 ms: one bucket holds every sample.
    source = fleet.procedures[0]
    samples = [s for s in fleet.telemetry if s.procedure_id == source.procedure_id]
    url = f"/api/procedures/{source.procedure_id}/telemetry"
    for width in (2**31 + 1, 3_000_000_000, 366 * 24 * 3600 * 1000):
        body = client.get(url, params={"interval_ms": width}).json()
        assert body["interval_ms"] == width
        assert sum(body["samples"]) == len(samples)
        assert len(body["time"]) <= 2


def test_series_of_a_procedure_without_samples(client: TestClient, fleet: Fleet) -> None:
    body = client.get(f"/api/procedures/{fleet.procedures[5].procedure_id}/telemetry").json()
    assert body["time"] == [] and body["samples"] == []


def test_unknown_ids_are_404(client: TestClient, fleet: Fleet) -> None:
    assert_error(client.get("/api/procedures/nope"), 404, "not_found")
    assert_error(client.get("/api/procedures/nope/telemetry"), 404, "not_found")


def test_bad_parameters_are_422(client: TestClient, fleet: Fleet) -> None:
    get = client.get
    assert_error(get("/api/procedures?category=dental"), 422, "invalid", "category")
    assert_error(get("/api/procedures?status=done"), 422, "invalid", "status")
    assert_error(get("/api/procedures?limit=501"), 422, "invalid", "limit")
    assert_error(get("/api/procedures?limit=abc"), 422, "invalid", "limit")
    assert_error(get("/api/procedures?start=yesterday"), 422, "invalid", "start")
    assert_error(get("/api/procedures?end=2025-13-45"), 422, "invalid", "end")
    assert_error(
        get("/api/procedures?start=2025-02-01T00:00:00&end=2025-01-01T00:00:00"),
        422,
        "invalid",
        "end",
    )
    assert_error(get("/api/procedures?cursor=not-a-cursor"), 422, "invalid", "cursor")
    assert_error(get("/api/procedures?cursor=WyJ4Il0"), 422, "invalid", "cursor")  # ["x"]
    # A client written for offset paging is told to use the cursor, not shown page one again.
    for query in ("offset=50", "offset=0&limit=5", "offset=abc"):
        refused = get(f"/api/procedures?{query}")
        assert_error(refused, 422, "invalid", "offset")
        assert "cursor" in refused.json()["error"]["details"][0]["message"]
    url = f"/api/procedures/{fleet.procedures[0].procedure_id}/telemetry"
    assert_error(get(url + "?channels=arm_position_x,tool_type"), 422, "invalid", "channels")
    assert_error(get(url + "?channels=warp_drive"), 422, "invalid", "channels")
    assert_error(get(url + "?interval_ms=0"), 422, "invalid", "interval_ms")
    assert_error(
        get(url + "?start=2025-02-01T00:00:00&end=2025-01-01T00:00:00"), 422, "invalid", "end"
    )
