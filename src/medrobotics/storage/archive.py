"""The lake archiver: committed telemetry as Parquet, raw batch payloads as gzip JSON.

Telemetry is exported in windows of `received_at`: a window holds the rows with
`mark <= received_at < end`, where `end` is at most the cutoff before which every ingest
transaction has committed. The window's end is pinned in the database before any object is
written and the mark moves to it only after all of them are, so a retry after a crash rebuilds
the same window and overwrites the same keys: each sample lands in the lake exactly once.
One archiver at a time exports a stream (a PostgreSQL advisory lock, or a process lock on the
embedded database); the others skip the round.
"""

from __future__ import annotations

import asyncio
import functools
import io
import random
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update

from medrobotics import logs, metrics
from medrobotics.config import Settings
from medrobotics.domain.telemetry import COLUMNS
from medrobotics.storage import analytics, partitions
from medrobotics.storage import batches as batches_q
from medrobotics.storage.db import is_postgres, reading, transaction
from medrobotics.storage.lake import Lake, LakeError
from medrobotics.storage.tables import archive_marks, telemetry

log = logs.get("medrobotics.archive")

TELEMETRY = "telemetry"
BATCHES = "batches"
ANALYTICS = "analytics"
# Session advisory lock ids, one per stream ("mrlake" + n): constant across every task.
LOCK_IDS = {
    TELEMETRY: 0x6D726C616B650001,
    BATCHES: 0x6D726C616B650002,
    ANALYTICS: 0x6D726C616B65000A,
}
BATCHES_PER_RUN = 200  # payloads up to the body limit each: bounds one run's memory and time
BACKOFF_CAP_S = 300.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# robot_id is the Hive partition in the key; Athena refuses a partition column in the data.
FILE_COLUMNS = (*(c for c in COLUMNS if c != "robot_id"), "received_at")


@functools.cache
def _schema() -> Any:
    # pyarrow loads on the first export, not at import: the services start faster and a
    # service with the archiver off never pays its memory.
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(
                name,
                pa.timestamp("us", tz="UTC")
                if name in ("timestamp", "received_at")
                else pa.string()
                if name in ("procedure_id", "tool_type")
                else pa.float64(),
                nullable=name not in ("procedure_id", "timestamp", "received_at"),
            )
            for name in FILE_COLUMNS
        ]
    )


_process_locks: dict[tuple[str, str], threading.Lock] = {}
_process_locks_guard = threading.Lock()


class MarkMoved(Exception):
    """The mark was not where this archiver left it: another one moved it."""


@dataclass
class Report:
    """What one archiver pass did."""

    telemetry_rows: int = 0
    objects: int = 0
    batches: int = 0
    windows: int = 0
    partitions_created: int = 0
    partitions_dropped: int = 0
    rows_deleted: int = 0
    analytics_days: int = 0
    skipped: list[str] = field(default_factory=list)
    more: bool = False

    def add(self, other: Report) -> None:
        """Accumulate another pass into this one."""
        self.telemetry_rows += other.telemetry_rows
        self.objects += other.objects
        self.batches += other.batches
        self.windows += other.windows
        self.partitions_created += other.partitions_created
        self.partitions_dropped += other.partitions_dropped
        self.rows_deleted += other.rows_deleted
        self.analytics_days += other.analytics_days
        self.skipped.extend(s for s in other.skipped if s not in self.skipped)


@dataclass(frozen=True)
class Window:
    """Rows with start <= received_at < end."""

    start: datetime
    end: datetime
    capped: bool


def run_once(
    engine: Engine, lake: Lake, settings: Settings, *, now: datetime | None = None
) -> Report:
    """Export one telemetry window and a slice of pending batches, keep the partitions ahead,
    apply retention, then roll up the closed days of analytics."""
    report = Report()
    with exclusive(engine, TELEMETRY) as mine:
        if mine:
            export_telemetry(engine, lake, settings, report)
            ahead = partitions.months_from(now or _utcnow(), settings.partitions_ahead)
            report.partitions_created += len(partitions.ensure(engine, months=ahead))
            if settings.telemetry_retention_days:
                apply_retention(engine, settings, report, now=now)
        else:
            report.skipped.append(TELEMETRY)
    with exclusive(engine, BATCHES) as mine:
        if mine:
            export_batches(engine, lake, settings, report)
        else:
            report.skipped.append(BATCHES)
    with exclusive(engine, ANALYTICS) as mine:
        if mine:
            days = analytics.roll_up_closed_days(engine)
            report.analytics_days += days
            if days:
                log.info("analytics_rolled", days=days)
        else:
            report.skipped.append(ANALYTICS)
    return report


def run_until_caught_up(engine: Engine, lake: Lake, settings: Settings) -> Report:
    """Repeat passes while a window or the batch slice was capped."""
    total = Report()
    while True:
        report = run_once(engine, lake, settings)
        total.add(report)
        if not report.more:
            return total


@contextmanager
def exclusive(engine: Engine, stream: str) -> Iterator[bool]:
    """Yield whether this archiver holds `stream`; whoever does not skips the round.

    On PostgreSQL a session advisory lock on a dedicated autocommit connection: it spans the
    uploads without an open transaction, so the engine's idle-in-transaction timeout does not
    apply, and the server releases it if the task dies.
    """
    if not is_postgres(engine):
        # Embedded: one process owns the file, so a process-wide lock is enough.
        key = (str(engine.url), stream)
        with _process_locks_guard:
            lock = _process_locks.setdefault(key, threading.Lock())
        got = lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                lock.release()
        return
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        got = bool(
            conn.execute(
                text("SELECT pg_try_advisory_lock(:id)"), {"id": LOCK_IDS[stream]}
            ).scalar()
        )
        try:
            yield got
        finally:
            if got:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": LOCK_IDS[stream]})
                except Exception:
                    # A pooled connection must never keep the lock: drop it instead.
                    conn.invalidate()


# Telemetry ------------------------------------------------------------------------------------


def export_telemetry(engine: Engine, lake: Lake, settings: Settings, report: Report) -> None:
    """Export the next window of committed telemetry; the caller holds the stream's lock."""
    window = plan_window(engine, settings)
    if window is None:
        return
    with reading(engine) as conn:
        rows = conn.execute(
            select(*(telemetry.c[c] for c in COLUMNS), telemetry.c.received_at)
            .where(telemetry.c.received_at >= window.start, telemetry.c.received_at < window.end)
            .order_by(telemetry.c.robot_id, telemetry.c.timestamp, telemetry.c.procedure_id)
        ).all()
    objects = telemetry_objects(rows, window, prefix=settings.lake_prefix)
    for object_key, data in objects.items():
        lake.put(object_key, data)
    with transaction(engine) as conn:
        advance_mark(conn, stream=TELEMETRY, window=window, rows=len(rows))
    report.telemetry_rows += len(rows)
    report.objects += len(objects)
    report.windows += 1
    report.more = report.more or window.capped
    log.info(
        "telemetry_archived",
        rows=len(rows),
        objects=len(objects),
        window_start=window.start.isoformat(),
        window_end=window.end.isoformat(),
    )


def plan_window(engine: Engine, settings: Settings) -> Window | None:
    """Return the window to export next, pinned in the mark row; None when nothing is due."""
    recv = telemetry.c.received_at
    with transaction(engine) as conn:
        mark = conn.execute(
            select(archive_marks.c.mark, archive_marks.c.pending_end).where(
                archive_marks.c.stream == TELEMETRY
            )
        ).one_or_none()
        if mark is not None and mark.pending_end is not None:
            # An earlier run pinned this window and did not finish: redo exactly it.
            return Window(mark.mark, mark.pending_end, capped=True)
        cutoff = _cutoff(conn, settings)
        in_range = recv < cutoff if mark is None else (recv >= mark.mark) & (recv < cutoff)
        first = conn.execute(select(func.min(recv)).where(in_range)).scalar()
        if first is None:
            return None
        start = first if mark is None else mark.mark
        nth = conn.execute(
            select(recv)
            .where(recv >= first, recv < cutoff)
            .order_by(recv)
            .offset(settings.archive_batch_rows)
            .limit(1)
        ).scalar()
        if nth is not None and nth == first:
            # One transaction's rows share a received_at and are never split: take them all.
            nth = conn.execute(select(func.min(recv)).where(recv > first, recv < cutoff)).scalar()
        end = cutoff if nth is None else nth
        if mark is None:
            conn.execute(
                insert(archive_marks).values(
                    stream=TELEMETRY, mark=start, pending_end=end, updated_at=_utcnow()
                )
            )
        else:
            conn.execute(
                update(archive_marks)
                .where(archive_marks.c.stream == TELEMETRY)
                .values(pending_end=end)
            )
        return Window(start, end, capped=nth is not None)


def _cutoff(conn: Connection, settings: Settings) -> datetime:
    safety = timedelta(seconds=settings.archive_safety_s)
    if not is_postgres(conn):
        # Embedded: this transaction holds the write lock (BEGIN IMMEDIATE), so no ingest
        # transaction is open; the margin only guards against the wall clock stepping back.
        return _utcnow() - safety
    # Rows carry the time they were written, and a streamed batch keeps its transaction open
    # across chunks: nothing newer than the oldest open ingest transaction is safe yet.
    oldest = conn.execute(
        text(
            "SELECT least(clock_timestamp(), min(xact_start)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND application_name = 'medrobotics' AND xact_start IS NOT NULL"
        )
    ).scalar_one()
    return _aware(oldest) - safety


def advance_mark(conn: Connection, *, stream: str, window: Window, rows: int) -> None:
    """Move the mark to the window's end, now that every object of the window is written."""
    done = conn.execute(
        update(archive_marks)
        .where(
            archive_marks.c.stream == stream,
            archive_marks.c.mark == window.start,
            archive_marks.c.pending_end == window.end,
        )
        .values(
            mark=window.end,
            pending_end=None,
            rows_archived=archive_marks.c.rows_archived + rows,
            updated_at=_utcnow(),
        )
    ).rowcount
    if done != 1:
        raise MarkMoved(f"the {stream} mark moved under this archiver")


def telemetry_objects(rows: Sequence[Any], window: Window, *, prefix: str) -> dict[str, bytes]:
    """Return Parquet objects for a window's rows, one per (sample date, robot), by key."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    groups: dict[tuple[date, str], list[Any]] = {}
    for row in rows:
        groups.setdefault((_aware(row.timestamp).date(), row.robot_id), []).append(row)
    part = f"part-{_epoch_us(window.start)}-{_epoch_us(window.end)}.parquet"
    out = {}
    for (day, robot_id), members in sorted(groups.items()):
        object_key = (
            f"{prefix}telemetry/date={day.isoformat()}/robot_id={quote(robot_id, safe='')}/{part}"
        )
        columns = {name: [getattr(r, name) for r in members] for name in FILE_COLUMNS}
        table = pa.Table.from_pydict(columns, schema=_schema())
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        out[object_key] = buf.getvalue()
    return out


# Batches --------------------------------------------------------------------------------------


def export_batches(engine: Engine, lake: Lake, settings: Settings, report: Report) -> None:
    """Copy pending batch payloads to the lake, then mark them archived."""
    with reading(engine) as conn:
        pending = batches_q.pending(conn, limit=BATCHES_PER_RUN)
    if not pending:
        return
    for row in pending:
        if row.payload is not None:
            lake.put(batch_key(row, prefix=settings.lake_prefix), row.payload)
    with transaction(engine) as conn:
        batches_q.mark_archived(conn, batch_ids=[r.batch_id for r in pending], at=_utcnow())
    report.batches += len(pending)
    report.more = report.more or len(pending) == BATCHES_PER_RUN
    log.info("batches_archived", batches=len(pending))


def batch_key(row: Any, *, prefix: str) -> str:
    """Return a batch's object key: entity, day first received, content hash."""
    day = _aware(row.received_at).date().isoformat()
    return f"{prefix}batches/entity={row.entity}/date={day}/{row.batch_id}.json.gz"


# Retention ------------------------------------------------------------------------------------


def apply_retention(
    engine: Engine, settings: Settings, report: Report, *, now: datetime | None = None
) -> None:
    """Remove archived telemetry older than the retention period.

    On PostgreSQL whole monthly partitions, and such rows of the DEFAULT partition.
    """
    if not settings.telemetry_retention_days:
        raise ValueError("retention needs MEDROBOTICS_RETENTION_DAYS")
    before = (now or _utcnow()) - timedelta(days=settings.telemetry_retention_days)
    with reading(engine) as conn:
        mark = conn.execute(
            select(archive_marks.c.mark).where(archive_marks.c.stream == TELEMETRY)
        ).scalar()
    if mark is not None:
        if is_postgres(engine):
            retired = partitions.retire(engine, before=before)
            report.partitions_dropped += len(retired.dropped)
            report.rows_deleted += retired.rows_deleted
        else:
            with transaction(engine) as conn:
                report.rows_deleted += conn.execute(
                    delete(telemetry).where(
                        telemetry.c.timestamp < before, telemetry.c.received_at < mark
                    )
                ).rowcount
    with transaction(engine) as conn:
        batches_q.prune(conn, before=before)


# Lag ------------------------------------------------------------------------------------------


def lag(conn: Connection, *, now: datetime | None = None) -> dict[str, Any]:
    """Return what waits for the lake: rows, age of the oldest, last move, pending batches."""
    now = now or _utcnow()
    mark = conn.execute(
        select(archive_marks.c.mark, archive_marks.c.updated_at).where(
            archive_marks.c.stream == TELEMETRY
        )
    ).one_or_none()
    recv = telemetry.c.received_at
    query = select(func.count(), func.min(recv))
    if mark is not None:
        query = query.where(recv >= mark.mark)
    pending_rows, oldest = conn.execute(query).one()
    return {
        "pending_rows": int(pending_rows),
        "lag_seconds": max(0.0, (now - _aware(oldest)).total_seconds()) if oldest else 0.0,
        "last_archived_at": mark.updated_at if mark is not None else None,
        "archived_through": mark.mark if mark is not None else None,
        "pending_batches": batches_q.count_pending(conn),
    }


# Background loop ------------------------------------------------------------------------------


def backoff(failures: int, *, base: float) -> float:
    """Return the wait after `failures` consecutive failures: exponential, jittered, capped."""
    ceiling = min(BACKOFF_CAP_S, base * 2 ** min(failures - 1, 20))
    return ceiling * random.uniform(0.5, 1.0)  # noqa: S311  # nosec B311


async def run_forever(engine: Engine, lake: Lake, settings: Settings, stop: asyncio.Event) -> None:
    """Archive every interval until `stop` is set; back off while the lake or database fails."""
    failures = 0
    delay = settings.archive_interval_s
    while not stop.is_set():
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        if stop.is_set():
            return
        try:
            report = await anyio.to_thread.run_sync(run_once, engine, lake, settings)
        except Exception as exc:
            # Ingestion goes on regardless: the database holds everything until the lake is back.
            failures += 1
            delay = backoff(failures, base=min(settings.archive_interval_s, 5.0))
            log.warning(
                "archive_failed",
                error=str(exc) if isinstance(exc, LakeError) else type(exc).__name__,
                failures=failures,
                retry_in_s=round(delay, 1),
            )
            with suppress(Exception):
                await anyio.to_thread.run_sync(_publish_lag, engine)
            continue
        if failures:
            log.info("archive_recovered", after_failures=failures)
        failures = 0
        delay = 0.0 if report.more else settings.archive_interval_s
        with suppress(Exception):  # a gauge is not worth failing the loop for
            await anyio.to_thread.run_sync(_publish_lag, engine)


def _publish_lag(engine: Engine) -> None:
    with engine.connect() as conn:
        now = lag(conn)
    metrics.archive_lag(seconds=now["lag_seconds"], rows=now["pending_rows"])


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _epoch_us(value: datetime) -> int:
    return (_aware(value) - EPOCH) // timedelta(microseconds=1)


def _utcnow() -> datetime:
    return datetime.now(UTC)
