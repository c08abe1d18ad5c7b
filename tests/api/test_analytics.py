"""GET /api/analytics/*: every figure recomputed here in Python from the factory data."""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete

from medrobotics.domain.procedures import CATEGORIES
from medrobotics.domain.units import DAYS, HOURS, MINUTES, ML, SCORE, SHARE, USD
from medrobotics.storage import analytics as analytics_q
from medrobotics.storage import outcomes as outcomes_q
from medrobotics.storage import procedures as procedures_q
from medrobotics.storage.tables import outcomes, procedures
from tests.api.helpers import assert_error, rounded, ts
from tests.fleet import Fleet


def _window(fleet: Fleet) -> tuple[datetime, datetime]:
    return fleet.now - timedelta(days=40), fleet.now - timedelta(days=10)


def _params(start: datetime, end: datetime, **extra: Any) -> dict[str, Any]:
    return {"start": start.isoformat(), "end": end.isoformat(), **extra}


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _utilization(fleet: Fleet, start: datetime, end: datetime, facility: str | None = None) -> Any:
    hours = (end - start).total_seconds() / 3600
    robots = {}
    for r in fleet.robots:
        if facility is not None and r.facility_id != facility:
            continue
        used = [p for p in fleet.procedures if p.robot_id == r.robot_id and p.status != "cancelled"]
        inside = [p for p in used if start <= p.start_time < end]
        in_use = sum(p.duration_minutes or 0 for p in inside) / 60
        robots[r.robot_id] = {
            "robot_id": r.robot_id,
            "robot_model": r.robot_model,
            "facility_id": r.facility_id,
            "facility_name": r.facility_name,
            "status": r.status,
            "procedures": len(inside),
            "hours_in_use": rounded(in_use, HOURS),
            "utilization": rounded(in_use / hours, SHARE),
            "last": max((p.start_time for p in used), default=None),
        }
    facilities: dict[str, Any] = {}
    for r in robots.values():
        f = facilities.setdefault(
            r["facility_id"],
            {"robots": 0, "procedures": 0, "hours": 0.0, "last": None, "name": r["facility_name"]},
        )
        f["robots"] += 1
        f["procedures"] += r["procedures"]
        f["hours"] += r["hours_in_use"].expected
        if r["last"] and (f["last"] is None or r["last"] > f["last"]):
            f["last"] = r["last"]
    return robots, facilities, hours


def _check_utilization(body: dict[str, Any], fleet: Fleet, start: Any, end: Any, fac: Any) -> None:
    robots, facilities, hours = _utilization(fleet, start, end, fac)
    assert body["window"]["hours"] == rounded(hours, HOURS)
    assert [r["robot_id"] for r in body["robots"]] == sorted(robots)
    for got in body["robots"]:
        want = dict(robots[got["robot_id"]])
        last = want.pop("last")
        got = dict(got)
        got_last = got.pop("last_used_at")
        assert (got_last and ts(got_last)) == last
        assert got == want
    assert [f["facility_id"] for f in body["facilities"]] == sorted(facilities)
    for got in body["facilities"]:
        want = facilities[got["facility_id"]]
        assert got["robots"] == want["robots"] and got["procedures"] == want["procedures"]
        assert got["facility_name"] == want["name"]
        assert got["hours_in_use"] == rounded(want["hours"], HOURS)
        assert got["utilization"] == rounded(want["hours"] / (want["robots"] * hours), SHARE)
        assert (got["last_used_at"] and ts(got["last_used_at"])) == want["last"]


def test_utilization_over_a_window(client: TestClient, fleet: Fleet) -> None:
    start, end = _window(fleet)
    body = client.get("/api/analytics/robot-utilization", params=_params(start, end)).json()
    assert ts(body["window"]["start"]) == start and ts(body["window"]["end"]) == end
    _check_utilization(body, fleet, start, end, None)


def test_utilization_of_one_facility(client: TestClient, fleet: Fleet) -> None:
    start, end = _window(fleet)
    params = _params(start, end, facility_id="fac-boston")
    body = client.get("/api/analytics/robot-utilization", params=params).json()
    _check_utilization(body, fleet, start, end, "fac-boston")


def test_utilization_guide_command_defaults_to_a_year(client: TestClient, fleet: Fleet) -> None:
    body = client.get("/api/analytics/robot-utilization").json()
    start, end = ts(body["window"]["start"]), ts(body["window"]["end"])
    assert end - start == timedelta(days=365)
    assert abs(end - datetime.now(UTC)) < timedelta(minutes=5)
    _check_utilization(body, fleet, start, end, None)  # every procedure is inside


def _outcome_stats(pairs: list[Any]) -> dict[str, Any]:
    outs = [o for _, o in pairs]
    n = len(outs)
    return {
        "outcomes": n,
        "successful": sum(o.success_status == "successful" for o in outs),
        "complicated": sum(o.success_status == "complicated" for o in outs),
        "failed": sum(o.success_status == "failed" for o in outs),
        "complication_rate": rounded(
            sum(bool(o.complications) for o in outs) / n if n else None, SHARE
        ),
        "readmission_rate": rounded(
            sum(o.readmission_30day for o in outs) / n if n else None, SHARE
        ),
        "mean_blood_loss_ml": rounded(_mean([o.blood_loss_ml for o in outs]), ML),
        "mean_hospital_stay_days": rounded(_mean([o.hospital_stay_days for o in outs]), DAYS),
        "mean_patient_satisfaction": rounded(
            _mean([o.patient_satisfaction_score for o in outs]), SCORE
        ),
    }


def _check_outcomes(body: dict[str, Any], fleet: Fleet, start: datetime, end: datetime) -> None:
    pairs = [(fleet.procedure(o.procedure_id), o) for o in fleet.outcomes]
    pairs = [(p, o) for p, o in pairs if start <= p.start_time < end]
    assert pairs
    assert body["overall"] == _outcome_stats(pairs)
    statuses = [
        s
        for s in ("successful", "complicated", "failed")
        if any(o.success_status == s for _, o in pairs)
    ]
    assert [g["success_status"] for g in body["by_success_status"]] == statuses
    for group in body["by_success_status"]:
        status = group.pop("success_status")
        assert group == _outcome_stats([(p, o) for p, o in pairs if o.success_status == status])
    cats = [c for c in CATEGORIES if any(p.procedure_category == c for p, _ in pairs)]
    assert [g["procedure_category"] for g in body["by_category"]] == cats
    for group in body["by_category"]:
        cat = group.pop("procedure_category")
        assert group == _outcome_stats([(p, o) for p, o in pairs if p.procedure_category == cat])


def test_outcomes_summary_over_a_window(client: TestClient, fleet: Fleet) -> None:
    start, end = _window(fleet)
    body = client.get("/api/analytics/outcomes-summary", params=_params(start, end)).json()
    _check_outcomes(body, fleet, start, end)


def test_outcomes_summary_guide_command(client: TestClient, fleet: Fleet) -> None:
    body = client.get("/api/analytics/outcomes-summary").json()
    _check_outcomes(body, fleet, ts(body["window"]["start"]), ts(body["window"]["end"]))
    assert body["overall"]["outcomes"] == len(fleet.outcomes)


def _by_category(fleet: Fleet, start: datetime, end: datetime) -> list[dict[str, Any]]:
    out = []
    for cat in CATEGORIES:
        ps = [
            p
            for p in fleet.procedures
            if p.procedure_category == cat and start <= p.start_time < end
        ]
        row: dict[str, Any] = {"procedure_category": cat, "procedures": len(ps)}
        for s in ("completed", "in_progress", "aborted", "cancelled"):
            row[s] = sum(p.status == s for p in ps)
        row["mean_duration_minutes"] = rounded(_mean([p.duration_minutes for p in ps]), MINUTES)
        row["mean_complexity"] = rounded(_mean([p.complexity_score for p in ps]), SCORE)
        out.append(row)
    return out


def test_procedures_by_category(client: TestClient, fleet: Fleet) -> None:
    start, end = _window(fleet)
    body = client.get("/api/analytics/procedures-by-category", params=_params(start, end)).json()
    assert body["categories"] == _by_category(fleet, start, end)
    body = client.get("/api/analytics/procedures-by-category", params={"days": 90}).json()
    assert body["categories"] == _by_category(fleet, fleet.now - timedelta(days=90), fleet.now)
    assert sum(c["procedures"] for c in body["categories"]) == len(fleet.procedures)
    default = client.get("/api/analytics/procedures-by-category").json()
    assert ts(default["window"]["end"]) - ts(default["window"]["start"]) == timedelta(days=30)


def _bucket(moment: datetime, interval: str) -> datetime:
    day = moment.date()
    if interval == "week":
        day -= timedelta(days=day.weekday())
    elif interval == "month":
        day = day.replace(day=1)
    return datetime.combine(day, time(), tzinfo=UTC)


@pytest.mark.parametrize("interval", ["day", "week", "month"])
def test_procedure_volume(client: TestClient, fleet: Fleet, interval: str) -> None:
    start, end = _window(fleet)
    for extra, keep in (
        ({}, lambda p: True),
        ({"category": "urological"}, lambda p: p.procedure_category == "urological"),
        ({"robot_id": "robot-1"}, lambda p: p.robot_id == "robot-1"),
    ):
        params = _params(start, end, interval=interval, **extra)
        body = client.get("/api/analytics/procedure-volume", params=params).json()
        groups: dict[datetime, list[Any]] = defaultdict(list)
        for p in fleet.procedures:
            if start <= p.start_time < end and keep(p):
                groups[_bucket(p.start_time, interval)].append(p)
        assert body["interval"] == interval
        assert [ts(b["bucket_start"]) for b in body["buckets"]] == sorted(groups)
        for got in body["buckets"]:
            ps = groups[ts(got["bucket_start"])]
            assert got["procedures"] == len(ps)
            assert got["total_duration_minutes"] == rounded(
                sum(p.duration_minutes or 0 for p in ps), MINUTES
            )
            assert got["mean_duration_minutes"] == rounded(
                _mean([p.duration_minutes for p in ps]), MINUTES
            )


def _first_day(moment: datetime) -> date:
    return moment.date() if moment.timetz() == time(tzinfo=UTC) else moment.date() + timedelta(1)


def _check_maintenance(
    body: dict[str, Any], fleet: Fleet, start: datetime, end: datetime, fac: Any
) -> None:
    def inside(d: date) -> bool:
        return start <= datetime.combine(d, time(), tzinfo=UTC) < end

    rows = []
    for r in fleet.robots:
        if fac is not None and r.facility_id != fac:
            continue
        visits = [
            m for m in fleet.maintenance if m.robot_id == r.robot_id and inside(m.maintenance_date)
        ]
        rows.append(
            {
                "robot_id": r.robot_id,
                "robot_model": r.robot_model,
                "facility_id": r.facility_id,
                "visits": len(visits),
                "emergency_visits": sum(m.maintenance_type == "emergency" for m in visits),
                "total_cost": sum(m.cost for m in visits),
                "downtime_hours": sum(m.downtime_hours for m in visits),
                "last_maintenance_date": max((m.maintenance_date for m in visits), default=None),
            }
        )
    rows.sort(key=lambda r: (-r["total_cost"], r["robot_id"]))
    assert [r["robot_id"] for r in body["robots"]] == [r["robot_id"] for r in rows]
    for got, want in zip(body["robots"], rows, strict=True):
        last = want["last_maintenance_date"]
        assert got == {
            **want,
            "total_cost": rounded(want["total_cost"], USD),
            "downtime_hours": rounded(want["downtime_hours"], HOURS),
            "last_maintenance_date": last.isoformat() if last else None,
        }
    assert body["total_cost"] == rounded(sum(r["total_cost"] for r in rows), USD)
    assert body["downtime_hours"] == rounded(sum(r["downtime_hours"] for r in rows), HOURS)


def test_maintenance_costs(client: TestClient, fleet: Fleet) -> None:
    start = datetime.combine(fleet.now.date() - timedelta(days=200), time(), tzinfo=UTC)
    end = fleet.now - timedelta(days=20)  # not midnight: that day's visits count
    body = client.get("/api/analytics/maintenance-costs", params=_params(start, end)).json()
    _check_maintenance(body, fleet, start, end, None)
    params = _params(start, end, facility_id="fac-austin")
    body = client.get("/api/analytics/maintenance-costs", params=params).json()
    _check_maintenance(body, fleet, start, end, "fac-austin")
    body = client.get("/api/analytics/maintenance-costs").json()
    _check_maintenance(body, fleet, ts(body["window"]["start"]), ts(body["window"]["end"]), None)
    assert body["total_cost"] > 0


def test_empty_database(client: TestClient) -> None:
    for path in (
        "/api/analytics/robot-utilization",
        "/api/analytics/outcomes-summary",
        "/api/analytics/procedures-by-category",
        "/api/analytics/procedure-volume",
        "/api/analytics/maintenance-costs",
    ):
        assert client.get(path).status_code == 200, path
    body = client.get("/api/analytics/outcomes-summary").json()
    assert body["overall"]["outcomes"] == 0 and body["overall"]["complication_rate"] is None


@pytest.mark.parametrize(
    "path",
    [
        "robot-utilization",
        "outcomes-summary",
        "procedures-by-category",
        "procedure-volume",
        "maintenance-costs",
    ],
)
def test_bad_parameters_are_422(client: TestClient, path: str) -> None:
    url = f"/api/analytics/{path}"
    assert_error(client.get(url, params={"days": 0}), 422, "invalid", "days")
    assert_error(client.get(url, params={"days": 100_000}), 422, "invalid", "days")
    assert_error(client.get(url, params={"start": "soon"}), 422, "invalid", "start")
    bad = {"start": "2025-02-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}
    assert_error(client.get(url, params=bad), 422, "invalid", "end")


def test_unknown_interval_and_category_are_422(client: TestClient) -> None:
    url = "/api/analytics/procedure-volume"
    assert_error(client.get(url, params={"interval": "year"}), 422, "invalid", "interval")
    assert_error(client.get(url, params={"category": "dental"}), 422, "invalid", "category")


def _check_all(client: TestClient, fleet: Fleet, start: datetime, end: datetime) -> None:
    """Every procedure and outcome endpoint over `[start, end)` against the fleet."""
    params = _params(start, end)
    body = client.get("/api/analytics/robot-utilization", params=params).json()
    _check_utilization(body, fleet, start, end, None)
    if any(start <= fleet.procedure(o.procedure_id).start_time < end for o in fleet.outcomes):
        body = client.get("/api/analytics/outcomes-summary", params=params).json()
        _check_outcomes(body, fleet, start, end)
    body = client.get("/api/analytics/procedures-by-category", params=params).json()
    assert body["categories"] == _by_category(fleet, start, end)
    for interval in ("day", "week", "month"):
        body = client.get(
            "/api/analytics/procedure-volume", params={**params, "interval": interval}
        ).json()
        groups: dict[datetime, list[Any]] = defaultdict(list)
        for p in fleet.procedures:
            if start <= p.start_time < end:
                groups[_bucket(p.start_time, interval)].append(p)
        assert [ts(b["bucket_start"]) for b in body["buckets"]] == sorted(groups)
        for got in body["buckets"]:
            ps = groups[ts(got["bucket_start"])]
            assert got["procedures"] == len(ps)
            assert got["total_duration_minutes"] == rounded(
                sum(p.duration_minutes or 0 for p in ps), MINUTES
            )
            assert got["mean_duration_minutes"] == rounded(
                _mean([p.duration_minutes for p in ps]), MINUTES
            )


def _windows(fleet: Fleet) -> list[tuple[datetime, datetime]]:
    """Windows whole-day, whole-month, partial at either end, and inside one day."""
    today = datetime.combine(fleet.now.date(), time(), tzinfo=UTC)
    month = today.replace(day=1)
    return [
        (today - timedelta(days=70), today + timedelta(days=1)),  # whole days only
        (month - timedelta(days=45), month),  # ends on a month
        (today - timedelta(days=50, hours=5, seconds=7), today - timedelta(days=3, hours=-2)),
        (fleet.now - timedelta(days=20, hours=3), fleet.now - timedelta(days=20)),  # one day
        (today - timedelta(days=10, hours=1), today - timedelta(days=9, hours=23)),  # over midnight
        (fleet.procedures[0].start_time, fleet.procedures[0].start_time + timedelta(seconds=1)),
    ]


def test_windows_aligned_or_not_read_the_same(
    client: TestClient, fleet: Fleet, engine: Engine
) -> None:
    for start, end in _windows(fleet):
        _check_all(client, fleet, start, end)
    # The same with the closed days rolled up: roll-ups, today and the edges add up alike.
    assert analytics_q.roll_up_closed_days(engine) > 50
    for start, end in _windows(fleet):
        _check_all(client, fleet, start, end)


def test_resent_procedures_move_their_figures(
    client: TestClient, fleet: Fleet, engine: Engine
) -> None:
    # Re-sends move procedures across days, categories, robots and statuses; their outcomes
    # follow their procedure; outcomes change status too. The days were rolled up before:
    # these late writes reach their answers at once, and after the next roll-up alike.
    analytics_q.roll_up_closed_days(engine)
    moved = []
    for i, p in enumerate(fleet.procedures[::3]):
        change: dict[str, Any] = {
            "start_time": p.start_time - timedelta(days=1 + i % 9, hours=i % 5),
            "procedure_category": CATEGORIES[(CATEGORIES.index(p.procedure_category) + 1) % 6],
        }
        if i % 2:
            change["status"] = "cancelled" if p.status != "cancelled" else "completed"
            change["robot_id"] = fleet.robots[i % len(fleet.robots)].robot_id
            change["duration_minutes"] = None if i % 4 == 1 else 77.5
        if p.end_time is not None:
            change["end_time"] = change["start_time"] + timedelta(minutes=30)
        moved.append(p.model_copy(update=change))
    changed = [
        o.model_copy(update={"success_status": "failed", "blood_loss_ml": 999.0})
        for o in fleet.outcomes[::4]
    ]
    with engine.begin() as conn:
        procedures_q.upsert_many(conn, items=moved)
        outcomes_q.upsert_many(conn, items=changed)
    _replace(fleet.procedures, moved, "procedure_id")
    _replace(fleet.outcomes, changed, "procedure_id")
    for start, end in _windows(fleet)[:3]:
        _check_all(client, fleet, start, end)
    analytics_q.roll_up_closed_days(engine)
    for start, end in _windows(fleet)[:3]:
        _check_all(client, fleet, start, end)


def test_deleted_procedures_leave_the_figures(
    client: TestClient, fleet: Fleet, engine: Engine
) -> None:
    analytics_q.roll_up_closed_days(engine)
    gone = {p.procedure_id for p in fleet.procedures[::5]}
    lone = next(o.procedure_id for o in fleet.outcomes if o.procedure_id not in gone)
    with engine.begin() as conn:
        conn.execute(delete(outcomes).where(outcomes.c.procedure_id == lone))
        conn.execute(delete(procedures).where(procedures.c.procedure_id.in_(gone)))
    fleet.outcomes = [o for o in fleet.outcomes if o.procedure_id not in gone | {lone}]
    fleet.procedures = [p for p in fleet.procedures if p.procedure_id not in gone]
    for start, end in _windows(fleet)[:3]:
        _check_all(client, fleet, start, end)


def _replace(items: list[Any], new: list[Any], key: str) -> None:
    at = {getattr(x, key): i for i, x in enumerate(items)}
    for x in new:
        items[at[getattr(x, key)]] = x
