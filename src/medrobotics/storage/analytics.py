"""Analytics queries: every figure is aggregated in SQL, per robot, facility or bucket."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Double,
    Float,
    case,
    func,
    literal,
    literal_column,
    select,
    type_coerce,
)

from medrobotics.domain.outcomes import SUCCESS_STATUSES
from medrobotics.domain.procedures import CATEGORIES, PROCEDURE_STATUSES
from medrobotics.storage.tables import (
    UtcDateTime,
    maintenance,
    outcomes,
    procedures,
    robots,
)


def _hours(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds() / 3600


def _float(value: Any) -> float | None:
    return float(value) if value is not None else None


def utilization(
    conn: Connection, *, start: datetime, end: datetime, facility_id: str | None = None
) -> dict[str, Any]:
    """Return procedures, hours in use, share of the window and last use per robot and facility.

    Counts procedures that start in `[start, end)`, cancelled ones excluded.
    """
    p, r = procedures.c, robots.c
    window_hours = literal(max(_hours(start, end), 1e-9), Double)
    used = (
        select(
            p.robot_id,
            func.count().label("procedures"),
            (func.coalesce(func.sum(p.duration_minutes), 0.0) / 60.0).label("hours"),
        )
        .where(p.start_time >= start, p.start_time < end, p.status != "cancelled")
        .group_by(p.robot_id)
        .subquery()
    )
    # Latest use at any time: one backward step on the (robot_id, start_time) index per robot.
    last_used = (
        select(p.start_time)
        .where(p.robot_id == r.robot_id, p.status != "cancelled")
        .order_by(p.start_time.desc())
        .limit(1)
        .scalar_subquery()
    )
    hours = func.coalesce(used.c.hours, 0.0)
    per_robot = (
        select(
            r.robot_id,
            r.robot_model,
            r.facility_id,
            r.facility_name,
            r.status,
            func.coalesce(used.c.procedures, 0).label("procedures"),
            hours.label("hours_in_use"),
            (hours / window_hours).label("utilization"),
            type_coerce(last_used, UtcDateTime).label("last_used_at"),
        )
        .select_from(robots.outerjoin(used, used.c.robot_id == r.robot_id))
        .where(*([r.facility_id == facility_id] if facility_id is not None else []))
    )
    robot_rows = [dict(x) for x in conn.execute(per_robot.order_by(r.robot_id)).mappings()]
    for row in robot_rows:
        row["procedures"] = int(row["procedures"])
        row["hours_in_use"] = float(row["hours_in_use"])
        row["utilization"] = float(row["utilization"])
    # Facilities from the robot rows (hundreds), not a second pass over the procedures.
    span = max(_hours(start, end), 1e-9)
    by_facility: dict[str, list[dict[str, Any]]] = {}
    for row in robot_rows:
        by_facility.setdefault(row["facility_id"], []).append(row)
    facility_rows = []
    for fid in sorted(by_facility):
        fleet = by_facility[fid]
        names = [x["facility_name"] for x in fleet if x["facility_name"] is not None]
        uses = [x["last_used_at"] for x in fleet if x["last_used_at"] is not None]
        hours_total = sum(x["hours_in_use"] for x in fleet)
        facility_rows.append(
            {
                "facility_id": fid,
                "facility_name": max(names) if names else None,
                "robots": len(fleet),
                "procedures": sum(x["procedures"] for x in fleet),
                "hours_in_use": hours_total,
                "utilization": hours_total / (len(fleet) * span),
                "last_used_at": max(uses) if uses else None,
            }
        )
    return {"robots": robot_rows, "facilities": facility_rows}


_MEANS = (
    ("mean_blood_loss_ml", "blood_loss_ml"),
    ("mean_hospital_stay_days", "hospital_stay_days"),
    ("mean_patient_satisfaction", "patient_satisfaction_score"),
)


def _outcome_sums(conn: Connection) -> list[Any]:
    # Sums and counts, not averages: partial figures per (status, category) group combine
    # exactly into the overall and per-dimension figures, so one pass over the rows serves all.
    o = outcomes.c
    length = (
        func.jsonb_array_length(o.complications)
        if conn.dialect.name == "postgresql"
        else func.json_array_length(o.complications)
    )
    cols = [
        func.count().label("n"),
        func.sum(case((length > 0, 1), else_=0)).label("with_complications"),
        func.sum(case((o.readmission_30day.is_(True), 1), else_=0)).label("readmitted"),
    ]
    for _, column in _MEANS:
        cols += [func.sum(o[column]).label(f"{column}_sum"), func.count(o[column]).label(column)]
    return cols


def _combine(groups: list[Any]) -> dict[str, Any]:
    n = sum(int(g["n"]) for g in groups)
    out: dict[str, Any] = {"outcomes": n}
    for status in SUCCESS_STATUSES:
        out[status] = sum(int(g["n"]) for g in groups if g["success_status"] == status)
    out["complication_rate"] = sum(int(g["with_complications"]) for g in groups) / n if n else None
    out["readmission_rate"] = sum(int(g["readmitted"]) for g in groups) / n if n else None
    for name, column in _MEANS:
        count = sum(int(g[column]) for g in groups)
        total = sum(float(g[f"{column}_sum"] or 0) for g in groups)
        out[name] = total / count if count else None
    return out


def outcomes_summary(conn: Connection, *, start: datetime, end: datetime) -> dict[str, Any]:
    """Return outcome counts, rates and means overall, by success status and by category.

    Covers outcomes of procedures that start in `[start, end)`. One grouped pass over the
    window (at most 18 groups); the three views are combined from it.
    """
    p, o = procedures.c, outcomes.c
    groups = list(
        conn.execute(
            select(o.success_status, p.procedure_category, *_outcome_sums(conn))
            .select_from(outcomes.join(procedures, p.procedure_id == o.procedure_id))
            .where(p.start_time >= start, p.start_time < end)
            .group_by(o.success_status, p.procedure_category)
        ).mappings()
    )
    by_status = [
        {**_combine([g for g in groups if g["success_status"] == s]), "success_status": s}
        for s in SUCCESS_STATUSES
        if any(g["success_status"] == s for g in groups)
    ]
    by_category = [
        {**_combine([g for g in groups if g["procedure_category"] == c]), "procedure_category": c}
        for c in CATEGORIES
        if any(g["procedure_category"] == c for g in groups)
    ]
    return {"overall": _combine(groups), "by_success_status": by_status, "by_category": by_category}


def procedures_by_category(conn: Connection, *, start: datetime, end: datetime) -> list[Any]:
    """Return per category the procedures started in `[start, end)`, by status, with means."""
    p = procedures.c
    stmt = (
        select(
            p.procedure_category,
            func.count().label("procedures"),
            *(
                func.coalesce(func.sum(case((p.status == s, 1), else_=0)), 0).label(s)
                for s in PROCEDURE_STATUSES
            ),
            func.avg(p.duration_minutes).label("mean_duration_minutes"),
            func.avg(p.complexity_score).label("mean_complexity"),
        )
        .where(p.start_time >= start, p.start_time < end)
        .group_by(p.procedure_category)
    )
    found = {r["procedure_category"]: dict(r) for r in conn.execute(stmt).mappings()}
    out = []
    for category in CATEGORIES:
        row = found.get(category) or {
            "procedures": 0,
            "mean_duration_minutes": None,
            "mean_complexity": None,
        }
        item = {"procedure_category": category, "procedures": int(row["procedures"])}
        for s in PROCEDURE_STATUSES:
            item[s] = int(row.get(s) or 0)
        item["mean_duration_minutes"] = _float(row["mean_duration_minutes"])
        item["mean_complexity"] = _float(row["mean_complexity"])
        out.append(item)
    return out


_SQLITE_BUCKETS = {
    "day": ("'%Y-%m-%d 00:00:00'",),
    # Back to Monday, as PostgreSQL's date_trunc('week') does: next Sunday, then six days back.
    "week": ("'%Y-%m-%d 00:00:00'", "'weekday 0'", "'-6 days'"),
    "month": ("'%Y-%m-01 00:00:00'",),
}


def procedure_volume(
    conn: Connection,
    *,
    start: datetime,
    end: datetime,
    interval: str,
    category: str | None = None,
    robot_id: str | None = None,
) -> list[dict[str, Any]]:
    """Return procedures started per UTC day, week or month in `[start, end)`, with durations."""
    p = procedures.c
    # Constants inlined (from a fixed set), so SELECT and GROUP BY are one identical expression.
    if conn.dialect.name == "postgresql":
        bucket = func.date_trunc(
            literal_column(f"'{interval}'"), p.start_time, literal_column("'UTC'")
        )
    else:
        fmt, *mods = _SQLITE_BUCKETS[interval]
        bucket = func.strftime(
            literal_column(fmt), p.start_time, *(literal_column(m) for m in mods)
        )
    conds = [p.start_time >= start, p.start_time < end]
    if category is not None:
        conds.append(p.procedure_category == category)
    if robot_id is not None:
        conds.append(p.robot_id == robot_id)
    stmt = (
        select(
            type_coerce(bucket, UtcDateTime).label("bucket_start"),
            func.count().label("procedures"),
            func.coalesce(func.sum(p.duration_minutes), 0.0).label("total_duration_minutes"),
            func.avg(p.duration_minutes).label("mean_duration_minutes"),
        )
        .where(*conds)
        .group_by(bucket)
        .order_by(bucket)
    )
    rows = []
    for r in conn.execute(stmt).mappings():
        row = dict(r)
        row["procedures"] = int(row["procedures"])
        row["total_duration_minutes"] = float(row["total_duration_minutes"])
        row["mean_duration_minutes"] = _float(row["mean_duration_minutes"])
        rows.append(row)
    return rows


def maintenance_costs(
    conn: Connection, *, first_day: date, last_day: date, facility_id: str | None = None
) -> dict[str, Any]:
    """Return visits, cost and downtime per robot for visits dated `first_day..last_day`."""
    m, r = maintenance.c, robots.c
    visits = (
        select(
            m.robot_id,
            func.count().label("visits"),
            func.sum(case((m.maintenance_type == "emergency", 1), else_=0)).label("emergency"),
            func.sum(m.cost).label("cost"),
            func.sum(m.downtime_hours).label("downtime"),
            func.max(m.maintenance_date).label("last_date"),
        )
        .where(m.maintenance_date >= first_day, m.maintenance_date <= last_day)
        .group_by(m.robot_id)
        .subquery()
    )
    cost = type_coerce(func.coalesce(visits.c.cost, 0.0), Float)
    stmt = (
        select(
            r.robot_id,
            r.robot_model,
            r.facility_id,
            func.coalesce(visits.c.visits, 0).label("visits"),
            func.coalesce(visits.c.emergency, 0).label("emergency_visits"),
            cost.label("total_cost"),
            func.coalesce(visits.c.downtime, 0.0).label("downtime_hours"),
            visits.c.last_date.label("last_maintenance_date"),
        )
        .select_from(robots.outerjoin(visits, visits.c.robot_id == r.robot_id))
        .where(*([r.facility_id == facility_id] if facility_id is not None else []))
    )
    per_robot = stmt.subquery()
    totals = conn.execute(
        select(
            func.coalesce(func.sum(per_robot.c.total_cost), 0.0),
            func.coalesce(func.sum(per_robot.c.downtime_hours), 0.0),
        )
    ).one()
    rows = []
    for x in conn.execute(stmt.order_by(cost.desc(), r.robot_id)).mappings():
        row = dict(x)
        for key in ("visits", "emergency_visits"):
            row[key] = int(row[key])
        for key in ("total_cost", "downtime_hours"):
            row[key] = float(row[key])
        rows.append(row)
    return {"total_cost": float(totals[0]), "downtime_hours": float(totals[1]), "robots": rows}
