"""Daily Parquet snapshots of the entity tables, patient fields replaced by the keyed hash.

Once per UTC day, the first archiver pass writes `raw/snapshots/<table>/date=D/<table>.parquet`
for each table: its rows at that moment, under the lake's patient-data rule (storage.phi).
Rows stream from a server-side cursor into Arrow record batches and Parquet row groups in a
temporary file, which is then put whole: memory holds a few row groups whatever the table's
size. A row per table in `archive_marks` (stream `snapshot:<table>`, `mark` = the day's UTC
midnight) records the day done, so later passes that day skip it.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Double,
    Engine,
    Integer,
    Table,
    insert,
    select,
    text,
    update,
)

from medrobotics import logs
from medrobotics.config import Settings
from medrobotics.storage import phi
from medrobotics.storage.db import is_postgres, transaction
from medrobotics.storage.lake import Lake, LocalLake, S3Lake
from medrobotics.storage.tables import (
    UtcDateTime,
    archive_marks,
    maintenance,
    outcomes,
    procedures,
    robots,
)

log = logs.get("medrobotics.snapshots")

TABLES: tuple[Table, ...] = (robots, procedures, outcomes, maintenance)
STREAM = "snapshot:"  # + table name: the archive_marks row of each table's snapshots
FETCH_ROWS = 5_000  # rows per round trip and per Arrow batch
GROUP_ROWS = 65_536  # rows per Parquet row group: a few MB of Arrow memory for these tables


@dataclass(frozen=True)
class Written:
    """One snapshot object."""

    table: str
    key: str
    rows: int


def snapshot_key(table: str, day: date, *, prefix: str) -> str:
    """Return the object key of `table`'s snapshot of `day`."""
    return f"{prefix}snapshots/{table}/date={day.isoformat()}/{table}.parquet"


def export_due(
    engine: Engine, lake: Lake, settings: Settings, *, now: datetime | None = None
) -> list[Written]:
    """Write today's snapshot of every table not yet done today; the caller holds the lock.

    Raises phi.NoHashKey, before writing anything, when the key is missing for an S3 lake.
    """
    day = (now or datetime.now(UTC)).astimezone(UTC).date()
    due = [t for t in TABLES if not _done(engine, t.name, day)]
    if not due:
        return []
    hasher = phi.hasher(settings)
    written = []
    for table in due:
        key = snapshot_key(table.name, day, prefix=settings.lake_prefix)
        rows = write_snapshot(engine, lake, table, key, hasher)
        _record(engine, table.name, day, rows)
        written.append(Written(table.name, key, rows))
        log.info("snapshot_written", table=table.name, date=day.isoformat(), rows=rows)
    return written


def write_snapshot(engine: Engine, lake: Lake, table: Table, key: str, hasher: phi.Hasher) -> int:
    """Stream `table` into one Parquet object at `key`; return its row count."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(table)
    fd, name = tempfile.mkstemp(prefix="snapshot-", suffix=".parquet")
    os.close(fd)
    path = Path(name)
    rows = 0
    try:
        with pq.ParquetWriter(path, schema, compression="snappy") as writer:
            pending: list[Any] = []
            pending_rows = 0
            names = list(table.c.keys())
            for chunk in _chunks(engine, table):
                columns = dict(zip(names, (list(c) for c in zip(*chunk, strict=True)), strict=True))
                scrubbed = phi.scrub_columns(columns, hasher)
                pending.append(pa.RecordBatch.from_pydict(scrubbed, schema=schema))
                pending_rows += len(chunk)
                rows += len(chunk)
                if pending_rows >= GROUP_ROWS:
                    writer.write_table(pa.Table.from_batches(pending, schema=schema))
                    pending, pending_rows = [], 0
            if pending:
                writer.write_table(pa.Table.from_batches(pending, schema=schema))
        # An empty table still gets its file (schema, no row group): "no rows that day".
        _put_file(lake, key, path)
    finally:
        path.unlink(missing_ok=True)
    return rows


def _chunks(engine: Engine, table: Table) -> Any:
    """Yield the table's rows in primary-key order, FETCH_ROWS at a time.

    On PostgreSQL a server-side cursor in one read transaction (one consistent view; each
    FETCH is its own short statement under the statement timeout); on SQLite a plain read
    transaction, which does not hold up writers.
    """
    order = list(table.primary_key.columns)
    with engine.connect() as conn, conn.begin():
        if is_postgres(conn):
            # The telemetry cutoff waits for open ingest transactions (application_name
            # 'medrobotics'); this one writes nothing, so it must not hold the cutoff back.
            conn.execute(
                text("SELECT set_config('application_name', 'medrobotics-snapshot', true)")
            )
        result = conn.execution_options(stream_results=True, yield_per=FETCH_ROWS).execute(
            select(*table.c).order_by(*order)
        )
        yield from result.partitions(FETCH_ROWS)


def _put_file(lake: Lake, key: str, path: Path) -> None:
    if isinstance(lake, LocalLake | S3Lake):
        lake.put_file(key, path)
    else:  # any other lake takes bytes
        lake.put(key, path.read_bytes())


@functools.cache
def arrow_schema(table: Table) -> Any:
    """Return the snapshot schema of `table`: its columns under the patient-data rule."""
    import pyarrow as pa

    types = {c.name: (_arrow_type(c.type), c.nullable) for c in table.c}
    types[phi.PATIENT_KEY] = (pa.string(), True)
    return pa.schema(
        [pa.field(n, types[n][0], nullable=bool(types[n][1])) for n in phi.fields(table.c.keys())]
    )


def _arrow_type(sql_type: Any) -> Any:
    import pyarrow as pa

    if isinstance(sql_type, UtcDateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(sql_type, Date):
        return pa.date32()
    if isinstance(sql_type, Boolean):
        return pa.bool_()
    if isinstance(sql_type, Double):
        return pa.float64()
    if isinstance(sql_type, Integer):  # BigInteger too
        return pa.int64()
    if isinstance(sql_type, JSON):  # the lists of text (complications, parts replaced)
        return pa.list_(pa.string())
    return pa.string()


def _done(engine: Engine, table: str, day: date) -> bool:
    with engine.connect() as conn:
        mark = conn.execute(
            select(archive_marks.c.mark).where(archive_marks.c.stream == STREAM + table)
        ).scalar()
    return mark is not None and mark.astimezone(UTC).date() >= day


def _record(engine: Engine, table: str, day: date, rows: int) -> None:
    midnight = datetime.combine(day, time(), tzinfo=UTC)
    stream = STREAM + table
    now = datetime.now(UTC)
    with transaction(engine) as conn:
        moved = conn.execute(
            update(archive_marks)
            .where(archive_marks.c.stream == stream)
            .values(
                mark=midnight, rows_archived=archive_marks.c.rows_archived + rows, updated_at=now
            )
        ).rowcount
        if not moved:
            conn.execute(
                insert(archive_marks).values(
                    stream=stream, mark=midnight, rows_archived=rows, updated_at=now
                )
            )
