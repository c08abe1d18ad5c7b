"""Analytics queries: every figure is aggregated in SQL, per robot, facility or bucket.

Procedure and outcome figures read closed UTC days (robots' use: whole months too) from the
roll-ups that `roll_up` makes on the archiver's schedule, and from the base tables only what
the roll-ups do not hold exactly: the partial first and last day of a window, today and any
day not rolled yet, and days a write changed since their roll-up (`stale_days`, marked by
triggers, migration 0010). A year is thousands of roll-up rows instead of ~500,000.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Date,
    DateTime,
    Double,
    Engine,
    Float,
    Select,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    type_coerce,
    union_all,
    update,
)

from medrobotics.domain.outcomes import SUCCESS_STATUSES
from medrobotics.domain.procedures import CATEGORIES, PROCEDURE_STATUSES
from medrobotics.domain.units import DAYS, HOURS, MINUTES, ML, SCORE, SHARE, USD, rounded
from medrobotics.storage.db import is_postgres, reading, transaction
from medrobotics.storage.tables import (
    UtcDateTime,
    archive_marks,
    maintenance,
    outcome_days,
    outcomes,
    procedure_days,
    procedures,
    robot_days,
    robot_months,
    robots,
    stale_days,
)

DAY = timedelta(days=1)
STREAM = "analytics"
"""The roll-ups' row in archive_marks: every day before its `mark` is rolled."""


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


@dataclass
class Split:
    """A window `[start, end)` as roll-up days `[first, stop)` less `stale`, and base ranges.

    `base` holds what the roll-ups do not hold exactly: the partial days at either end, days
    not rolled yet and the `stale` days, as `start_time` ranges.
    """

    first: date | None = None
    stop: date | None = None
    stale: list[date] = field(default_factory=list)
    base: list[tuple[datetime, datetime]] = field(default_factory=list)

    def base_filter(self) -> ColumnElement[bool] | None:
        """Return the condition on `procedures.start_time` for the base ranges, or None."""
        st = procedures.c.start_time
        ranges = [and_(st >= lo, st < hi) for lo, hi in self.base]
        return or_(*ranges) if ranges else None

    def periods(self) -> tuple[list[tuple[date, date]], list[tuple[date, date, int]]]:
        """Return month ranges and signed day ranges whose sums are the days `[first, stop)`.

        A partial month is read as its days, or, when they are more than half of it, as the
        whole month less its other days: at most half a month of daily rows at either end.
        Stale days are taken off again (a month holds its days as rolled): the base has them.
        """
        months: list[tuple[date, date]] = []
        days: list[tuple[date, date, int]] = []
        if self.first is None or self.stop is None:
            return months, days
        month = self.first.replace(day=1)
        while month < self.stop:
            after = _next_month(month)
            lo, hi = max(self.first, month), min(self.stop, after)
            if (hi - lo).days * 2 <= (after - month).days:
                days.append((lo, hi, 1))
            else:
                if months and months[-1][1] == month:
                    months[-1] = (months[-1][0], after)
                else:
                    months.append((month, after))
                days += [(x, y, -1) for x, y in ((month, lo), (hi, after)) if x < y]
            month = after
        days += [(lo, hi, -1) for lo, hi in _runs(self.stale)]
        return months, days


def _runs(days: list[date]) -> list[tuple[date, date]]:
    """Return sorted days as `[lo, hi)` runs of consecutive days."""
    out: list[tuple[date, date]] = []
    for day in sorted(set(days)):
        if out and out[-1][1] == day:
            out[-1] = (out[-1][0], day + DAY)
        else:
            out.append((day, day + DAY))
    return out


@dataclass
class Coverage:
    """What the roll-ups hold exactly: days before `through`, less the `stale` ones."""

    through: date | None
    stale: list[date]


def coverage(conn: Connection) -> Coverage:
    """Return the rolled-through day and the days marked stale."""
    m = archive_marks.c
    mark = conn.execute(select(m.mark).where(m.stream == STREAM)).scalar()
    stale = conn.execute(select(stale_days.c.day).distinct()).scalars().all()
    return Coverage(_aware(mark).date() if mark is not None else None, list(stale))


def split(start: datetime, end: datetime, cover: Coverage) -> Split:
    """Split `[start, end)` into rolled-up whole days and the ranges read from base tables."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    first = start.date() if start.time() == time() else start.date() + DAY
    stop = min(end.date(), cover.through or first)
    if first >= stop:
        return Split(base=[(start, end)] if start < end else [])
    stale = sorted(d for d in set(cover.stale) if first <= d < stop)
    base = [(start, _midnight(first))] if start < _midnight(first) else []
    base += [(_midnight(lo), _midnight(hi)) for lo, hi in _runs(stale)]
    if _midnight(stop) < end:
        base.append((_midnight(stop), end))
    merged: list[tuple[datetime, datetime]] = []
    for lo, hi in base:
        if merged and merged[-1][1] == lo:
            merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return Split(first, stop, stale, merged)


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """Open a read-only transaction whose statements see one snapshot.

    Roll-ups, stale marks and base rows read in one snapshot add up to one committed state.
    """
    with reading(engine) as conn:
        if is_postgres(conn):
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                conn.execute(text("SET TRANSACTION READ ONLY"))
                yield conn
        else:
            with conn.begin():  # WAL: a read transaction keeps its snapshot
                yield conn


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
    cover = coverage(conn)
    parts = list(_robot_use(split(start, end, cover)))
    both = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
    used = (
        select(
            both.c.robot_id,
            func.sum(both.c.n).label("procedures"),
            (func.sum(both.c.minutes) / 60.0).label("hours"),
        )
        .group_by(both.c.robot_id)
        .subquery()
    )
    # Latest use at any time: the robot's last rolled, unchanged day with uncancelled
    # procedures, then the latest of them from that day on (later days are either rolled
    # without use or read here). Without such a day, only days the roll-ups do not hold can
    # have its use: from the first of them on. Walking the procedures index back past
    # cancelled ones instead costs a robot's whole history when it has none.
    d = robot_days.c
    rolled = [d.day < cover.through] if cover.through is not None else [literal(False)]
    last_day = (
        select(d.day)
        .where(d.robot_id == r.robot_id, d.procedures > 0, *rolled, d.day.not_in(cover.stale))
        .order_by(d.day.desc())
        .limit(1)
        .correlate(robots)  # two levels down: auto-correlation only reaches one
        .scalar_subquery()
    )
    # SQLite compares its ISO texts directly; PostgreSQL needs the day's midnight in UTC.
    since: Any = last_day
    if conn.dialect.name == "postgresql":
        since = func.timezone(literal_column("'UTC'"), cast(last_day, DateTime))
    floor = datetime(1, 1, 2, tzinfo=UTC)
    if cover.through is not None:
        floor = _midnight(min([*cover.stale, cover.through]))
    since = func.coalesce(since, literal(floor, UtcDateTime))
    last_used = (
        select(p.start_time)
        .where(p.robot_id == r.robot_id, p.status != "cancelled", p.start_time >= since)
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
                "hours_in_use": rounded(hours_total, HOURS),
                "utilization": rounded(hours_total / (len(fleet) * span), SHARE),
                "last_used_at": max(uses) if uses else None,
            }
        )
    # Rounded last: the facilities add up the robots' exact figures.
    for row in robot_rows:
        row["utilization"] = rounded(float(row["utilization"]), SHARE)
        row["hours_in_use"] = rounded(row["hours_in_use"], HOURS)
    return {"robots": robot_rows, "facilities": facility_rows}


def _robot_use(window: Split) -> Iterator[Select[Any]]:
    """Yield per-robot (n, minutes) of uncancelled procedures: months, days, then the base."""
    months, days = window.periods()
    m, d = robot_months.c, robot_days.c
    for lo, hi in months:
        yield select(m.robot_id, m.procedures.label("n"), m.duration_sum.label("minutes")).where(
            m.month >= lo, m.month < hi
        )
    for lo, hi, sign in days:
        yield select(
            d.robot_id, (d.procedures * sign).label("n"), (d.duration_sum * sign).label("minutes")
        ).where(d.day >= lo, d.day < hi)
    base = window.base_filter()
    if base is not None or not (months or days):
        p = procedures.c
        yield (
            select(
                p.robot_id,
                func.count().label("n"),
                func.coalesce(func.sum(p.duration_minutes), 0.0).label("minutes"),
            )
            .where(base if base is not None else literal(False), p.status != "cancelled")
            .group_by(p.robot_id)
        )


_MEANS = (
    ("mean_blood_loss_ml", "blood_loss_ml", ML),
    ("mean_hospital_stay_days", "hospital_stay_days", DAYS),
    ("mean_patient_satisfaction", "patient_satisfaction_score", SCORE),
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
    for _, column, _ in _MEANS:
        cols += [func.sum(o[column]).label(f"{column}_sum"), func.count(o[column]).label(column)]
    return cols


def _combine(groups: list[Any]) -> dict[str, Any]:
    n = sum(int(g["n"]) for g in groups)
    out: dict[str, Any] = {"outcomes": n}
    for status in SUCCESS_STATUSES:
        out[status] = sum(int(g["n"]) for g in groups if g["success_status"] == status)
    for name, key in (
        ("complication_rate", "with_complications"),
        ("readmission_rate", "readmitted"),
    ):
        out[name] = rounded(sum(int(g[key]) for g in groups) / n, SHARE) if n else None
    for name, column, places in _MEANS:
        count = sum(int(g[column]) for g in groups)
        total = sum(float(g[f"{column}_sum"] or 0) for g in groups)
        out[name] = rounded(total / count, places) if count else None
    return out


def outcomes_summary(conn: Connection, *, start: datetime, end: datetime) -> dict[str, Any]:
    """Return outcome counts, rates and means overall, by success status and by category.

    Covers outcomes of procedures that start in `[start, end)`. Sums and counts per (status,
    category) group (at most 18, from the roll-up and the base) combine into the three views.
    """
    window = split(start, end, coverage(conn))
    groups: list[Any] = []
    if window.first is not None:
        d = outcome_days.c
        sums = [
            func.sum(d.outcomes).label("n"),
            func.sum(d.with_complications).label("with_complications"),
            func.sum(d.readmitted).label("readmitted"),
        ]
        for _, column, _ in _MEANS:
            total, count = _OUTCOME_ROLLUP[column]
            sums += [func.sum(d[total]).label(f"{column}_sum"), func.sum(d[count]).label(column)]
        groups += conn.execute(
            select(d.success_status, d.procedure_category, *sums)
            .where(d.day >= window.first, d.day < window.stop, d.day.not_in(window.stale))
            .group_by(d.success_status, d.procedure_category)
            .having(func.sum(d.outcomes) > 0)
        ).mappings()
    base = window.base_filter()
    if base is not None:
        p, o = procedures.c, outcomes.c
        groups += conn.execute(
            select(o.success_status, p.procedure_category, *_outcome_sums(conn))
            .select_from(outcomes.join(procedures, p.procedure_id == o.procedure_id))
            .where(base)
            .group_by(o.success_status, p.procedure_category)
        ).mappings()
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


# Outcome column -> its (sum, non-null count) in the roll-up.
_OUTCOME_ROLLUP = {
    "blood_loss_ml": ("blood_loss_sum", "blood_loss_n"),
    "hospital_stay_days": ("stay_sum", "stay_n"),
    "patient_satisfaction_score": ("satisfaction_sum", "satisfaction_n"),
}


def _procedure_groups(
    conn: Connection, window: Split, *keys: str, category: str | None = None
) -> list[Any]:
    """Return procedures, durations and complexities summed per `keys`, over the window.

    Rows from the roll-up and from the base tables come separately: callers add them.
    """
    out: list[Any] = []
    if window.first is not None:
        d = procedure_days.c
        conds = [d.day >= window.first, d.day < window.stop, d.day.not_in(window.stale)]
        if category is not None:
            conds.append(d.procedure_category == category)
        out += conn.execute(
            select(
                *(d[k] for k in keys),
                func.sum(d.procedures).label("procedures"),
                func.sum(d.duration_sum).label("duration_sum"),
                func.sum(d.duration_n).label("duration_n"),
                func.sum(d.complexity_sum).label("complexity_sum"),
                func.sum(d.complexity_n).label("complexity_n"),
            )
            .where(*conds)
            .group_by(*(d[k] for k in keys))
            .having(func.sum(d.procedures) > 0)
        ).mappings()
    base = window.base_filter()
    if base is not None:
        p = procedures.c
        conds = [base]
        if category is not None:
            conds.append(p.procedure_category == category)
        columns = {"day": _day(conn), **{k: p[k] for k in keys if k != "day"}}
        group = [columns[k].label(k) for k in keys]
        out += conn.execute(
            select(
                *group,
                func.count().label("procedures"),
                func.sum(p.duration_minutes).label("duration_sum"),
                func.count(p.duration_minutes).label("duration_n"),
                func.sum(p.complexity_score).label("complexity_sum"),
                func.count(p.complexity_score).label("complexity_n"),
            )
            .where(*conds)
            .group_by(*(columns[k] for k in keys))
        ).mappings()
    return out


def _day(conn: Connection) -> ColumnElement[date]:
    """The UTC day of `procedures.start_time`, as the roll-ups count it."""
    st = procedures.c.start_time
    if conn.dialect.name == "postgresql":
        # A constant, not a parameter: SELECT and GROUP BY must be one identical expression.
        return cast(func.timezone(literal_column("'UTC'"), st), Date)
    return type_coerce(func.date(st), Date)


def _mean(total: Any, count: Any, places: int) -> float | None:
    return rounded(float(total or 0) / int(count), places) if count else None


def procedures_by_category(conn: Connection, *, start: datetime, end: datetime) -> list[Any]:
    """Return per category the procedures started in `[start, end)`, by status, with means."""
    window = split(start, end, coverage(conn))
    groups = _procedure_groups(conn, window, "procedure_category", "status")
    out = []
    for category in CATEGORIES:
        mine = [g for g in groups if g["procedure_category"] == category]
        item: dict[str, Any] = {
            "procedure_category": category,
            "procedures": sum(int(g["procedures"]) for g in mine),
        }
        for s in PROCEDURE_STATUSES:
            item[s] = sum(int(g["procedures"]) for g in mine if g["status"] == s)
        for name, key, places in (
            ("mean_duration_minutes", "duration", MINUTES),
            ("mean_complexity", "complexity", SCORE),
        ):
            item[name] = _mean(
                sum(float(g[f"{key}_sum"] or 0) for g in mine),
                sum(int(g[f"{key}_n"]) for g in mine),
                places,
            )
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
    if robot_id is None:
        return _volume_by_day(conn, start=start, end=end, interval=interval, category=category)
    # One robot's procedures are few and its (robot_id, start_time) index reads just them.
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
        row["total_duration_minutes"] = rounded(float(row["total_duration_minutes"]), MINUTES)
        row["mean_duration_minutes"] = rounded(_float(row["mean_duration_minutes"]), MINUTES)
        rows.append(row)
    return rows


def _bucket(day: date, interval: str) -> datetime:
    if interval == "week":
        day -= timedelta(days=day.weekday())  # Monday, as date_trunc('week') has it
    elif interval == "month":
        day = day.replace(day=1)
    return _midnight(day)


def _volume_by_day(
    conn: Connection, *, start: datetime, end: datetime, interval: str, category: str | None
) -> list[dict[str, Any]]:
    """Return the volume buckets from per-day sums (roll-up days plus the base ranges)."""
    sums: dict[datetime, list[float]] = {}
    window = split(start, end, coverage(conn))
    for g in _procedure_groups(conn, window, "day", category=category):
        acc = sums.setdefault(_bucket(g["day"], interval), [0, 0.0, 0])
        acc[0] += int(g["procedures"])
        acc[1] += float(g["duration_sum"] or 0)
        acc[2] += int(g["duration_n"])
    return [
        {
            "bucket_start": bucket,
            "procedures": int(n),
            "total_duration_minutes": rounded(total, MINUTES),
            "mean_duration_minutes": _mean(total, count, MINUTES),
        }
        for bucket, (n, total, count) in sorted(sums.items())
    ]


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
        row["total_cost"] = rounded(float(row["total_cost"]), USD)
        row["downtime_hours"] = rounded(float(row["downtime_hours"]), HOURS)
        rows.append(row)
    return {
        "total_cost": rounded(float(totals[0]), USD),
        "downtime_hours": rounded(float(totals[1]), HOURS),
        "robots": rows,
    }


# Roll-ups -------------------------------------------------------------------------------------


def horizon(conn: Connection) -> date:
    """Return the first day that is not closed for every open transaction.

    A write marks a changed day stale only when the day ended before its transaction began;
    once every open transaction began after a day's end, that day's unmarked writes are all
    committed, and this transaction's later statements see them.
    """
    if not is_postgres(conn):
        # Embedded: the job's transaction holds the write lock (BEGIN IMMEDIATE).
        return datetime.now(UTC).date()
    cutoff = conn.execute(
        text(
            "SELECT least(clock_timestamp(), min(xact_start)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' AND xact_start IS NOT NULL"
        )
    ).scalar_one()
    return _aware(cutoff).date()


def roll_up(conn: Connection) -> int:
    """Roll closed days not rolled yet or marked stale since; return how many were rolled.

    Idempotent: a second run rolls nothing new. The caller owns the transaction (READ
    COMMITTED on PostgreSQL) and runs one job at a time (the archiver's lock).
    """
    stop = horizon(conn)
    m = archive_marks.c
    mark = conn.execute(select(m.mark).where(m.stream == STREAM)).scalar()
    through = _aware(mark).date() if mark is not None else None
    stale = _take_stale(conn, before=stop)
    if through is None:
        # Nothing rolled (first run, or after a TRUNCATE): every closed day from the first.
        for table in (procedure_days, robot_days, robot_months, outcome_days):
            conn.execute(delete(table))
        first = conn.execute(select(func.min(procedures.c.start_time))).scalar()
        days = [] if first is None else [(min(_aware(first).date(), stop), stop)]
    else:
        days = _runs([d for d in stale if d < through])
        if through < stop:
            days.append((through, stop))
    months: set[date] = set()
    for lo, hi in days:
        _roll_days(conn, lo, hi)
        month = lo.replace(day=1)
        while month < hi:
            months.add(month)
            month = _next_month(month)
    for month in sorted(months):
        _roll_month(conn, month)
    rolled_through = max(stop, through or stop)
    if not days and rolled_through == through:
        return 0
    moved = conn.execute(
        update(archive_marks)
        .where(m.stream == STREAM)
        .values(mark=_midnight(rolled_through), updated_at=datetime.now(UTC))
    ).rowcount
    if not moved:
        conn.execute(
            insert(archive_marks).values(
                stream=STREAM, mark=_midnight(rolled_through), updated_at=datetime.now(UTC)
            )
        )
    return sum((hi - lo).days for lo, hi in days)


def roll_up_closed_days(engine: Engine) -> int:
    """Roll up in a transaction of its own (the archiver's pass, the CLI); return days rolled."""
    with transaction(engine) as conn:
        return roll_up(conn)


def _take_stale(conn: Connection, *, before: date) -> list[date]:
    """Delete the stale marks of days before `before`; return their days."""
    s = stale_days.c
    if is_postgres(conn):
        # Marks a writer holds (FOR KEY SHARE, until it commits) are skipped and stay: this
        # roll-up may not see that writer's rows.
        return list(
            conn.execute(
                text(
                    "DELETE FROM stale_days WHERE ctid = ANY(ARRAY(SELECT ctid FROM stale_days "
                    "WHERE day < :before FOR UPDATE SKIP LOCKED)) RETURNING day"
                ),
                {"before": before},
            ).scalars()
        )
    days = list(conn.execute(select(s.day).where(s.day < before)).scalars())
    conn.execute(delete(stale_days).where(s.day < before))
    return days


def _roll_days(conn: Connection, lo: date, hi: date) -> None:
    """Recompute the daily roll-ups of days `[lo, hi)` from the base tables."""
    for table in (procedure_days, robot_days, outcome_days):
        conn.execute(delete(table).where(table.c.day >= lo, table.c.day < hi))
    p, o = procedures.c, outcomes.c
    day = _day(conn)
    inside = [p.start_time >= _midnight(lo), p.start_time < _midnight(hi)]
    conn.execute(
        insert(procedure_days).from_select(
            [
                "day",
                "procedure_category",
                "status",
                "procedures",
                "duration_sum",
                "duration_n",
                "complexity_sum",
                "complexity_n",
            ],
            select(
                day,
                p.procedure_category,
                p.status,
                func.count(),
                func.coalesce(func.sum(p.duration_minutes), 0.0),
                func.count(p.duration_minutes),
                func.coalesce(func.sum(p.complexity_score), 0.0),
                func.count(p.complexity_score),
            )
            .where(*inside)
            .group_by(day, p.procedure_category, p.status),
        )
    )
    conn.execute(
        insert(robot_days).from_select(
            ["day", "robot_id", "procedures", "duration_sum"],
            select(day, p.robot_id, func.count(), func.coalesce(func.sum(p.duration_minutes), 0.0))
            .where(*inside, p.status != "cancelled")
            .group_by(day, p.robot_id),
        )
    )
    sums = _outcome_sums(conn)
    conn.execute(
        insert(outcome_days).from_select(
            [
                "day",
                "procedure_category",
                "success_status",
                "outcomes",
                "with_complications",
                "readmitted",
                *(n for _, column, _ in _MEANS for n in _OUTCOME_ROLLUP[column]),
            ],
            select(
                day,
                p.procedure_category,
                o.success_status,
                *sums[:3],
                *(
                    x
                    for i in range(len(_MEANS))
                    for x in (func.coalesce(sums[3 + 2 * i], 0.0), sums[4 + 2 * i])
                ),
            )
            .select_from(outcomes.join(procedures, p.procedure_id == o.procedure_id))
            .where(*inside)
            .group_by(day, p.procedure_category, o.success_status),
        )
    )


def _roll_month(conn: Connection, month: date) -> None:
    """Recompute a month of robots' use as the sum of its rolled days."""
    d = robot_days.c
    conn.execute(delete(robot_months).where(robot_months.c.month == month))
    conn.execute(
        insert(robot_months).from_select(
            ["month", "robot_id", "procedures", "duration_sum"],
            select(
                literal(month, Date), d.robot_id, func.sum(d.procedures), func.sum(d.duration_sum)
            )
            .where(d.day >= month, d.day < _next_month(month))
            .group_by(d.robot_id),
        )
    )


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
