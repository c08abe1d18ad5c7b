"""The lake archiver: committed telemetry as Parquet, raw batch payloads as gzip JSON.

Telemetry is exported in windows of `received_at`: a window holds the rows with
`mark <= received_at < end`, where `end` is at most the cutoff before which every ingest
transaction has committed. The window's end is pinned in the database before any object is
written and the mark moves to it only after all of them are, so a retry after a crash rebuilds
the same window and overwrites the same keys: each sample lands in the lake exactly once.
One archiver at a time exports a stream (a PostgreSQL advisory lock, or a process lock on the
embedded database); the others skip the round.

A window streams from the database into Arrow record batches and Parquet row groups (the ADBC
PostgreSQL driver's binary COPY on PostgreSQL, `fetchmany` on SQLite): memory stays within
MEDROBOTICS_ARCHIVE_MEMORY_MB whatever the window or transaction size.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import itertools
import random
import tempfile
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import anyio.to_thread
from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update

from medrobotics import logs, metrics
from medrobotics.config import Settings
from medrobotics.domain.telemetry import COLUMNS
from medrobotics.errors import Unavailable
from medrobotics.storage import analytics, manifest, partitions, phi, snapshots
from medrobotics.storage import batches as batches_q
from medrobotics.storage.db import STATEMENT_TIMEOUT_MS, is_postgres, reading, transaction
from medrobotics.storage.lake import Lake, LakeError
from medrobotics.storage.tables import archive_marks, telemetry

log = logs.get("medrobotics.archive")

TELEMETRY = "telemetry"
BATCHES = "batches"
SNAPSHOTS = "snapshots"
ANALYTICS = "analytics"
# Session advisory lock ids, one per stream ("mrlake" + n): constant across every task.
LOCK_IDS = {
    TELEMETRY: 0x6D726C616B650001,
    BATCHES: 0x6D726C616B650002,
    SNAPSHOTS: 0x6D726C616B650007,
    ANALYTICS: 0x6D726C616B65000A,
}
BATCHES_PER_RUN = 200  # payloads up to the body limit each: bounds one run's memory and time
BACKOFF_CAP_S = 300.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Telemetry objects hold the table's columns in its order, then received_at. robot_id is in the
# file as well as in the key: Athena, Spectrum and DuckDB read it from the data, and Redshift's
# COPY maps Parquet columns to a table's by position.
FILE_COLUMNS = (*COLUMNS, "received_at")
STRINGS = ("procedure_id", "robot_id", "tool_type")
TIMES = ("timestamp", "received_at")
REQUIRED = ("procedure_id", "robot_id", "timestamp", "received_at")
# Rows per object: a larger (date, robot) part of a window is split into objects <seq> 0, 1, ...
# (about 100 MB each). A constant, not a setting: a redo of a crashed window must split the
# same way, or it would leave an object of the first attempt beside its own.
PART_ROWS = 1_000_000
# What one fetched row costs as Python objects (SQLite's driver yields nothing else), and as
# Arrow (measured: 146 bytes).
PY_ROW_BYTES = 1024
ARROW_ROW_BYTES = 160
# Objects uploaded at once; each streams from its spool file (S3: two 8 MB parts at a time).
UPLOADS = 4
# The export's own connection: it streams a whole window, which may outlast the 30 s bound on
# ingest statements when one transaction is huge; its name keeps it out of the cutoff's view.
EXPORT_STATEMENT_TIMEOUT_MS = 15 * 60 * 1000
EXPORT_APPLICATION = "medrobotics-archiver"


@functools.cache
def telemetry_schema() -> Any:
    """Return the Arrow schema of a telemetry object."""
    # pyarrow loads on the first export, not at import: the services start faster and a
    # service with the archiver off never pays its memory.
    import pyarrow as pa

    return pa.schema(
        [
            pa.field(
                name,
                pa.timestamp("us", tz="UTC")
                if name in TIMES
                else pa.string()
                if name in STRINGS
                else pa.float64(),
                nullable=name not in REQUIRED,
            )
            for name in FILE_COLUMNS
        ]
    )


def warm_up() -> None:
    """Load the export's libraries (pyarrow, the ADBC driver) now, not on the first window."""
    import importlib

    # Loaded by name: the caller wants the side effect (the import), not the modules.
    for name in ("pyarrow.compute", "pyarrow.parquet", "adbc_driver_postgresql.dbapi"):
        importlib.import_module(name)


@dataclass(frozen=True)
class Budget:
    """The buffers of one export, sized from MEDROBOTICS_ARCHIVE_MEMORY_MB."""

    batch_bytes: int  # one record batch read from the database
    group_bytes: int  # rows held before they are written out as one Parquet row group
    fetch_rows: int  # rows per fetch where the driver yields Python rows (SQLite)
    sort_bytes: int  # a window sorted in memory (read, then sorted: twice its size)

    @classmethod
    def of(cls, settings: Settings) -> Budget:
        """Split the setting: about half for the export's buffers, half for the rest."""
        total = settings.archive_memory_mb << 20
        # The interpreter, pyarrow and the drivers take ~120 MB at rest. At a time the export
        # holds one batch from the driver, up to a row group of rows (and the batches they
        # came from), and that row group encoded: about 4 x total / 16; or a window small
        # enough to sort in memory, total / 4 with its sorted copy.
        batch = max(total // 16, 256 << 10)
        return cls(
            batch_bytes=batch,
            group_bytes=max(total // 16, 256 << 10),
            fetch_rows=max(batch // PY_ROW_BYTES, 64),
            sort_bytes=total // 4,
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
    snapshots: int = 0
    analytics_days: int = 0
    skipped: list[str] = field(default_factory=list)
    # Streams not exported for want of the lake hash key (an S3 lake without one).
    refused: list[str] = field(default_factory=list)
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
        self.snapshots += other.snapshots
        self.analytics_days += other.analytics_days
        self.skipped.extend(s for s in other.skipped if s not in self.skipped)
        self.refused.extend(s for s in other.refused if s not in self.refused)


@dataclass(frozen=True)
class Window:
    """Rows with start <= received_at < end."""

    start: datetime
    end: datetime
    capped: bool


@dataclass
class Written:
    """What one window put in the lake: its rows, the object keys, the UTC days they cover."""

    rows: int = 0
    keys: list[str] = field(default_factory=list)
    dates: set[date] = field(default_factory=set)


def run_once(
    engine: Engine, lake: Lake, settings: Settings, *, now: datetime | None = None
) -> Report:
    """Export one telemetry window and a slice of pending batches, keep the partitions ahead,
    apply retention, write the day's snapshots if not yet done, compact closed days when due,
    then roll up the closed days of analytics."""
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
    export_snapshots(engine, lake, settings, report, now=now)
    with exclusive(engine, TELEMETRY) as mine:
        if mine:
            # Compaction rewrites the manifests the export writes: under the same lock.
            from medrobotics.storage import compact

            compact.scheduled(engine, lake, settings, now=now)
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
    written = write_window(engine, lake, settings, window)
    # Readers follow the manifests: the window is visible once they list it, mark or not.
    manifest.add(lake, settings.lake_prefix, written.keys)
    with transaction(engine) as conn:
        advance_mark(conn, stream=TELEMETRY, window=window, rows=written.rows)
    report.telemetry_rows += written.rows
    report.objects += len(written.keys)
    report.windows += 1
    report.more = report.more or window.capped
    log.info(
        "telemetry_archived",
        rows=written.rows,
        objects=len(written.keys),
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


def write_window(
    engine: Engine, lake: Lake, settings: Settings, window: Window, *, part_rows: int = PART_ROWS
) -> Written:
    """Stream a window's rows into Parquet objects, one (date, robot) part at a time.

    Rows come ordered by robot, time and procedure, so a part's rows arrive together and one
    file is open at a time. Files are spooled to local disk and uploaded once the query is
    done: the database statement never waits on the lake.
    """
    budget = Budget.of(settings)
    with tempfile.TemporaryDirectory(prefix="medrobotics-archive-") as spool:
        parts = Parts(
            Path(spool),
            prefix=f"{settings.lake_prefix}telemetry/",
            window=window,
            budget=budget,
            part_rows=part_rows,
        )
        # closing(): a failed export ends the query (and its connection) now, not at GC.
        with parts, closing(read_window(engine, window, budget)) as batches:
            for batch in batches:
                parts.add(batch)

        def upload(item: tuple[str, Path]) -> None:
            lake.put_file(*item)
            item[1].unlink(missing_ok=True)  # keeps the spool to what is still to upload

        # A few at a time: a window of a busy fleet is a hundred small objects, and one PUT
        # (or fsync) after another would cost more than the export itself.
        with ThreadPoolExecutor(UPLOADS, thread_name_prefix="lake-put") as pool:
            list(pool.map(upload, parts.files))
    return Written(rows=parts.rows, keys=[k for k, _ in parts.files], dates=parts.dates)


def read_window(engine: Engine, window: Window, budget: Budget) -> Generator[Any, None, None]:
    """Yield a window's rows as record batches in (robot, time, procedure) order."""
    if is_postgres(engine):
        return _read_postgres(engine, window, budget)
    return _read_sqlite(engine, window, budget)


def _read_postgres(engine: Engine, window: Window, budget: Budget) -> Generator[Any, None, None]:
    # The ADBC driver runs the query as a binary COPY and decodes it into Arrow in C,
    # batch by batch: no Python object per row or value.
    import adbc_driver_manager
    from adbc_driver_postgresql import dbapi

    cols = ", ".join(f'"{c}"' for c in FILE_COLUMNS)
    # The bounds are this module's own datetimes, inlined: the driver streams a COPY only for
    # a statement without parameters.
    lo, hi = (_aware(t).isoformat() for t in (window.start, window.end))
    where = f"received_at >= '{lo}' AND received_at < '{hi}'"
    # A window that fits its budget twice over (as read, then sorted) is sorted here, in C, in
    # a fraction of what the server's sort costs; a larger one (a huge transaction) streams
    # sorted by the server. Byte order on both paths ("C", as Arrow compares strings): a
    # redo makes the same objects whichever path it takes.
    in_memory = _count(engine, window) * ARROW_ROW_BYTES * 2 <= budget.sort_bytes
    order = (
        "" if in_memory else ' ORDER BY robot_id COLLATE "C", "timestamp", procedure_id COLLATE "C"'
    )
    sql = f"SELECT {cols} FROM telemetry WHERE {where}{order}"  # noqa: S608  # nosec
    uri = _adbc_uri(engine)
    with _adbc_lock:
        conn = _adbc_idle.pop(uri, None)
    done = False
    try:
        if conn is None:
            conn = dbapi.connect(uri, autocommit=True)
        with conn.cursor() as cur:
            cur.adbc_statement.set_options(
                **{"adbc.postgresql.batch_size_hint_bytes": str(budget.batch_bytes)}
            )
            cur.execute(sql)
            if in_memory:
                yield from _sorted(cur.fetch_arrow_table())
            else:
                yield from cur.fetch_record_batch()
        done = True
    except adbc_driver_manager.OperationalError as exc:
        raise Unavailable("database unavailable") from exc
    finally:
        # Kept for the next window (opening one costs up to a few tenths of a second: the
        # driver reads the type catalog); dropped after any failure or an export cut short.
        if conn is not None and done:
            with _adbc_lock:
                conn, _adbc_idle[uri] = _adbc_idle.get(uri), conn
        if conn is not None:
            with suppress(Exception):
                conn.close()


def _count(engine: Engine, window: Window) -> int:
    recv = telemetry.c.received_at
    with reading(engine) as conn:
        query = select(func.count()).where(recv >= window.start, recv < window.end)
        return int(conn.execute(query).scalar_one())


def _sorted(table: Any) -> Iterator[Any]:
    import pyarrow.compute as pc

    keys = [(k, "ascending") for k in ("robot_id", "timestamp", "procedure_id")]
    ordered = table.take(pc.sort_indices(table, sort_keys=keys))
    del table
    yield from ordered.to_batches()


_adbc_idle: dict[str, Any] = {}  # one idle export connection per database
_adbc_lock = threading.Lock()


@atexit.register
def close_idle() -> None:
    """Close the idle export connections (at exit: before the driver's module is torn down)."""
    with _adbc_lock:
        idle = list(_adbc_idle.values())
        _adbc_idle.clear()
    for conn in idle:
        with suppress(Exception):
            conn.close()


def _adbc_uri(engine: Engine) -> str:
    params = {
        **{k: v if isinstance(v, str) else v[-1] for k, v in engine.url.query.items()},
        "connect_timeout": "5",
        "application_name": EXPORT_APPLICATION,
        "options": f"-c statement_timeout={EXPORT_STATEMENT_TIMEOUT_MS}"
        f" -c idle_in_transaction_session_timeout={STATEMENT_TIMEOUT_MS} -c TimeZone=UTC",
    }
    base = engine.url.set(drivername="postgresql", query={})
    # libpq reads %20, not SQLAlchemy's '+', as a space.
    return f"{base.render_as_string(hide_password=False)}?{urlencode(params, quote_via=quote)}"


def _read_sqlite(engine: Engine, window: Window, budget: Budget) -> Generator[Any, None, None]:
    import pyarrow as pa

    schema = telemetry_schema()
    # SQLite compares text bytewise (BINARY): the same order as the PostgreSQL path.
    query = (
        select(*(telemetry.c[c] for c in FILE_COLUMNS))
        .where(telemetry.c.received_at >= window.start, telemetry.c.received_at < window.end)
        .order_by(telemetry.c.robot_id, telemetry.c.timestamp, telemetry.c.procedure_id)
    )
    with reading(engine) as conn:
        result = conn.execution_options(stream_results=True).execute(query)
        for rows in result.partitions(budget.fetch_rows):
            columns = zip(*rows, strict=True)
            yield pa.record_batch(
                [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)],
                schema=schema,
            )


class Parts:
    """A window's Parquet files, one (date, robot) part open at a time, spooled on disk."""

    def __init__(
        self, spool: Path, *, prefix: str, window: Window, budget: Budget, part_rows: int
    ) -> None:
        self.spool = spool
        self.prefix = prefix
        self.name = f"part-{_epoch_us(window.start)}-{_epoch_us(window.end)}"
        self.budget = budget
        self.part_rows = part_rows
        self.files: list[tuple[str, Path]] = []
        self.dates: set[date] = set()
        self.rows = 0
        self._part: tuple[date, str] | None = None
        self._seq = 0
        self._writer: Any = None
        self._file_rows = 0
        self._held: list[Any] = []
        self._held_bytes = 0

    def __enter__(self) -> Parts:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self._close()
        elif self._writer is not None:
            with suppress(Exception):  # the export failed anyway; nothing of it is uploaded
                self._writer.close()

    def add(self, batch: Any) -> None:
        """Append rows given in (robot, time, procedure) order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        n = batch.num_rows
        if n == 0:
            return
        schema = telemetry_schema()
        batch = pa.record_batch(
            [
                col if col.type == f.type else col.cast(f.type)
                for col, f in zip(batch.columns, schema, strict=True)
            ],
            schema=schema,
        )
        self.rows += n
        robots = batch.column("robot_id")
        days = pc.cast(batch.column("timestamp"), pa.date32())
        # Where the (date, robot) part changes, computed over the whole batch at once.
        changed = pc.or_(
            pc.not_equal(robots.slice(1), robots.slice(0, n - 1)),
            pc.not_equal(days.slice(1), days.slice(0, n - 1)),
        )
        starts = [0, *(i + 1 for i in pc.indices_nonzero(changed).to_pylist()), n]
        for a, z in itertools.pairwise(starts):
            self._append((days[a].as_py(), robots[a].as_py()), batch.slice(a, z - a))

    def _append(self, part: tuple[date, str], rows: Any) -> None:
        if part != self._part:
            self._close()
            self._part, self._seq = part, 0
        done = 0
        while done < rows.num_rows:
            if self._writer is None:
                self._open()
            take = min(rows.num_rows - done, self.part_rows - self._file_rows)
            piece = rows.slice(done, take)
            self._held.append(piece)
            self._held_bytes += piece.nbytes
            self._file_rows += take
            done += take
            if self._held_bytes >= self.budget.group_bytes:
                self._flush()
            if self._file_rows >= self.part_rows:
                self._close()
                self._seq += 1

    def _open(self) -> None:
        import pyarrow.parquet as pq

        if self._part is None:
            raise RuntimeError("no part to open")
        day, robot_id = self._part
        object_key = (
            f"{self.prefix}date={day.isoformat()}/robot_id={quote(robot_id, safe='')}/"
            f"{self.name}-{self._seq}.parquet"
        )
        path = self.spool / f"{len(self.files)}.parquet"
        self._writer = pq.ParquetWriter(
            path,
            telemetry_schema(),
            # Snappy: what Athena, Spectrum and Redshift COPY all read. Dictionaries only for
            # the strings: trying them on the readings costs most of the encoding time.
            compression="snappy",
            use_dictionary=list(STRINGS),
        )
        self.files.append((object_key, path))
        self.dates.add(day)

    def _flush(self) -> None:
        import pyarrow as pa

        if self._held:
            table = pa.Table.from_batches(self._held)
            self._writer.write_table(table, row_group_size=table.num_rows)
            self._held, self._held_bytes = [], 0

    def _close(self) -> None:
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None
            self._file_rows = 0


# Batches --------------------------------------------------------------------------------------


def export_batches(engine: Engine, lake: Lake, settings: Settings, report: Report) -> None:
    """Copy pending batch payloads to the lake, then mark them archived."""
    with reading(engine) as conn:
        pending = batches_q.pending(conn, limit=BATCHES_PER_RUN)
    if not pending:
        return
    try:
        hasher = phi.hasher(settings)
    except phi.NoHashKey as exc:
        _refuse(report, BATCHES, exc)
        return
    for row in pending:
        if row.payload is not None:
            # The stored object is the body with the patient-data rule applied; the batch id
            # stays the hash of the body as received.
            data = phi.scrub_payload(row.entity, row.payload, hasher)
            lake.put(batch_key(row, prefix=settings.lake_prefix), data)
    with transaction(engine) as conn:
        batches_q.mark_archived(conn, batch_ids=[r.batch_id for r in pending], at=_utcnow())
    report.batches += len(pending)
    report.more = report.more or len(pending) == BATCHES_PER_RUN
    log.info("batches_archived", batches=len(pending))


def batch_key(row: Any, *, prefix: str) -> str:
    """Return a batch's object key: entity, day first received, content hash."""
    day = _aware(row.received_at).date().isoformat()
    return f"{prefix}batches/entity={row.entity}/date={day}/{row.batch_id}.json.gz"


# Snapshots ------------------------------------------------------------------------------------


def export_snapshots(
    engine: Engine, lake: Lake, settings: Settings, report: Report, *, now: datetime | None = None
) -> None:
    """Write the day's table snapshots on the first pass of each UTC day (storage.snapshots)."""
    with exclusive(engine, SNAPSHOTS) as mine:
        if not mine:
            report.skipped.append(SNAPSHOTS)
            return
        try:
            report.snapshots += len(snapshots.export_due(engine, lake, settings, now=now))
        except phi.NoHashKey as exc:
            _refuse(report, SNAPSHOTS, exc)


def _refuse(report: Report, stream: str, exc: phi.NoHashKey) -> None:
    # The other streams go on; the CLI fails and the log says why, without any data.
    report.refused.append(stream)
    log.error("lake_export_refused", stream=stream, reason=str(exc))


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
