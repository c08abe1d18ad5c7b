"""Compaction: a closed day's telemetry objects rewritten into one per robot, exactly once.

The archiver writes one object per (day, robot) per window: thousands of small objects a day,
and Athena and Spectrum pay per object opened. Once a UTC day is closed, each robot's objects
are rewritten into `compact-<token>-<seq>.parquet` (several when larger than the target size),
`token` a hash of the input keys, so a re-run after a crash writes the same keys.

Order, so a reader following the manifests never sees a sample twice or misses one:
1. tidy what the manifest does not list (what a crashed run left: outputs never published are
   deleted, inputs a committed compacted object records as replaced are deleted, any other
   part is added to the manifest); 2. write the compacted objects, each recording its input
   keys in its Parquet metadata; 3. publish the manifest with them instead of their inputs
   (the commit point); 4. delete the inputs. A crash before 3 leaves the old set in force; a
   crash after 3 leaves only replaced objects that step 1 removes next time.

The caller holds the telemetry stream's lock, so no window is being written meanwhile, and
days a pinned (unfinished) window touches are left alone: their objects may not all be in the
manifest yet. A sample arriving late for a compacted day is a new part of that day, added to
its manifest by the archiver and folded in by the next compaction.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sqlalchemy import Engine, func, select

from medrobotics import logs
from medrobotics.config import Settings
from medrobotics.storage import archive, manifest
from medrobotics.storage.db import reading
from medrobotics.storage.lake import Lake, LakeError
from medrobotics.storage.tables import archive_marks, telemetry

log = logs.get("medrobotics.compact")

ROW_GROUP_ROWS = 131_072  # rows read and written at a time: bounds memory per robot
# Parquet key-value metadata of a compacted object: the keys it replaced, one per line.
COMPACTED_FROM = b"medrobotics.compacted_from"
SORT_ROWS = 250_000  # overlapping inputs up to this many rows are sorted together in memory

_last_run: dict[tuple[str, str], datetime] = {}
_last_run_guard = threading.Lock()


@dataclass
class DayReport:
    """What compaction did to one day."""

    day: date
    objects_before: int
    objects_after: int
    rows: int = 0
    written: int = 0
    deleted: int = 0


@dataclass
class Report:
    """What one compaction run did."""

    days: list[DayReport] = field(default_factory=list)
    skipped: list[date] = field(default_factory=list)  # open, or touched by a pinned window

    @property
    def rows(self) -> int:
        """Samples rewritten."""
        return sum(d.rows for d in self.days)

    @property
    def written(self) -> int:
        """Compacted objects written."""
        return sum(d.written for d in self.days)

    @property
    def deleted(self) -> int:
        """Objects removed."""
        return sum(d.deleted for d in self.days)


def scheduled(
    engine: Engine, lake: Lake, settings: Settings, *, now: datetime | None = None
) -> Report | None:
    """Compact closed days if the interval passed since this process last tried; the caller
    holds the telemetry lock. A failure is logged, not raised."""
    now = now or datetime.now(UTC)
    where = (str(engine.url), lake.uri(manifest.manifest_key(settings.lake_prefix, date.min)))
    with _last_run_guard:
        last = _last_run.get(where)
    if last is not None and now - last < timedelta(seconds=settings.compact_interval_s):
        return None
    with _last_run_guard:
        _last_run[where] = now
    try:
        report = compact(engine, lake, settings, now=now)
    except Exception as exc:
        # The export of this pass is done and the batches' is still due: a compaction that
        # failed waits for the next interval (whatever it left, the next run finishes).
        log.warning(
            "lake_compaction_failed",
            error=str(exc) if isinstance(exc, LakeError) else type(exc).__name__,
        )
        return None
    if report.written or report.deleted:
        log.info(
            "lake_compacted",
            days=len(report.days),
            rows=report.rows,
            written=report.written,
            deleted=report.deleted,
        )
    return report


def compact(
    engine: Engine,
    lake: Lake,
    settings: Settings,
    *,
    days: Sequence[date] | None = None,
    discover: bool = False,
    now: datetime | None = None,
    target_bytes: int | None = None,
    batch_rows: int = ROW_GROUP_ROWS,
) -> Report:
    """Compact the given days, or every closed day with a manifest; the caller holds the
    telemetry lock.

    `discover` also finds days without a manifest (a lake older than manifests) by listing
    every telemetry object, which is slow on a large bucket.
    """
    prefix = settings.lake_prefix
    today = (now or datetime.now(UTC)).date()
    target = target_bytes or settings.compact_target_mb << 20
    if days is None:
        found = set(manifest.days(lake, prefix))
        if discover:
            found.update(
                manifest.day_of(k)
                for k in lake.list(f"{prefix}telemetry/date=")
                if k.endswith(".parquet")
            )
        days = sorted(found)
    pinned = pinned_days(engine)
    report = Report()
    for day in days:
        if day >= today or day in pinned:
            report.skipped.append(day)
            continue
        with tempfile.TemporaryDirectory(prefix="medrobotics-compact-") as tmp:
            report.days.append(
                compact_day(
                    lake, prefix, day, target_bytes=target, batch_rows=batch_rows, tmp=Path(tmp)
                )
            )
    return report


def pinned_days(engine: Engine) -> set[date]:
    """Return the days a pinned (started, unfinished) archive window has samples on."""
    with reading(engine) as conn:
        mark = conn.execute(
            select(archive_marks.c.mark, archive_marks.c.pending_end).where(
                archive_marks.c.stream == archive.TELEMETRY
            )
        ).one_or_none()
        if mark is None or mark.pending_end is None:
            return set()
        recv = telemetry.c.received_at
        lo, hi = conn.execute(
            select(func.min(telemetry.c.timestamp), func.max(telemetry.c.timestamp)).where(
                recv >= mark.mark, recv < mark.pending_end
            )
        ).one()
    if lo is None:
        return set()
    first, last = _utc(lo).date(), _utc(hi).date()
    return {first + timedelta(days=n) for n in range((last - first).days + 1)}


def compact_day(
    lake: Lake,
    prefix: str,
    day: date,
    *,
    target_bytes: int,
    batch_rows: int = ROW_GROUP_ROWS,
    tmp: Path,
) -> DayReport:
    """Rewrite each robot's objects of one closed day into compacted ones (see the module)."""
    listed = lake.list(manifest.day_prefix(prefix, day))
    entries = manifest.read(lake, prefix, day)
    if entries is None:
        # The first manifest of a day from before manifests: commit the parts as they are
        # before writing anything beside them.
        entries = manifest.current(lake, prefix, day)
        manifest.publish(lake, prefix, day, entries)
    current = set(entries)
    if current - set(listed):
        raise LakeError(f"the manifest of {day.isoformat()} lists missing objects")
    result = DayReport(day, objects_before=len(current), objects_after=len(current))
    stray = [k for k in listed if k not in current]
    # Compacted objects the manifest does not list were never committed; parts it does not
    # list were replaced by a committed compaction (their names are in its objects), or else
    # come from an archiver that wrote no manifest (an older version during a rollout) and
    # are adopted.
    junk = [k for k in stray if _name(k).startswith("compact-")]
    orphans = [k for k in stray if not _name(k).startswith("compact-")]
    if orphans:
        folders_ = {_folder(k) for k in orphans}
        replaced_ = _replaced(lake, [k for k in current if _folder(k) in folders_], tmp)
        junk += [k for k in orphans if k in replaced_]
        adopted = [k for k in orphans if k not in replaced_]
        if adopted:
            current.update(adopted)
            manifest.publish(lake, prefix, day, current)
            result.objects_after = len(current)
    if junk:
        lake.delete(junk)
        result.deleted += len(junk)
    folders: dict[str, list[str]] = {}
    for key in current:
        folders.setdefault(_folder(key), []).append(key)
    replaced: set[str] = set()
    written: set[str] = set()
    for folder, keys in sorted(folders.items()):
        if len(keys) < 2:
            continue
        robot_id = unquote(folder.rsplit("/", 1)[-1].removeprefix("robot_id="))
        outputs, rows = rewrite(
            lake,
            sorted(keys),
            folder=folder,
            robot_id=robot_id,
            target_bytes=target_bytes,
            batch_rows=batch_rows,
            tmp=tmp,
        )
        replaced.update(keys)
        written.update(outputs)
        result.rows += rows
    if not replaced:
        return result
    after = (current - replaced) | written
    manifest.publish(lake, prefix, day, after)
    gone = sorted(replaced - written)
    lake.delete(gone)
    result.objects_after = len(after)
    result.written = len(written)
    result.deleted += len(gone)
    return result


def _replaced(lake: Lake, keys: Iterable[str], tmp: Path) -> set[str]:
    # The input keys each compacted object records; one object per token is enough.
    import pyarrow.parquet as pq

    out: set[str] = set()
    seen: set[str] = set()
    for key in sorted(keys):
        name = _name(key)
        if not name.startswith("compact-") or name.split("-")[1] in seen:
            continue
        seen.add(name.split("-")[1])
        path = tmp / "footer.parquet"
        lake.get_file(key, path)
        meta = pq.read_metadata(path).metadata or {}
        out.update(meta.get(COMPACTED_FROM, b"").decode().split())
        path.unlink()
    return out


def token(keys: Iterable[str]) -> str:
    """Return the name shared by the outputs of one set of inputs: a hash of their keys."""
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def rewrite(
    lake: Lake,
    inputs: Sequence[str],
    *,
    folder: str,
    robot_id: str,
    target_bytes: int,
    batch_rows: int = ROW_GROUP_ROWS,
    tmp: Path,
) -> tuple[list[str], int]:
    """Write `inputs` again as `compact-<token>-<seq>.parquet` objects in `folder`, sorted by
    time where memory allows; return the new keys and the row count.

    Inputs are copied to local files and read a row group at a time; outputs are written to
    local files and uploaded when they reach the target size: memory stays bounded whatever
    the day's size.
    """
    import pyarrow.parquet as pq

    schema = file_schema().with_metadata({COMPACTED_FROM: "\n".join(sorted(inputs))})
    files = []
    for n, key in enumerate(inputs):
        path = tmp / f"in-{n}.parquet"
        lake.get_file(key, path)
        meta = pq.ParquetFile(path).metadata
        lo, hi = _time_range(meta)
        files.append((lo, hi, key, path, meta.num_rows))
    files.sort(key=lambda f: (f[0], f[2]))
    out = _Output(
        lake,
        folder=folder,
        name=token(inputs),
        schema=schema,
        target=target_bytes,
        batch_rows=batch_rows,
        tmp=tmp,
    )
    for cluster in _overlapping(files):
        if len(cluster) > 1 and sum(f[4] for f in cluster) <= SORT_ROWS:
            # Windows of late samples overlap in time: merge them so the object stays sorted.
            import pyarrow as pa

            table = pa.concat_tables(
                _conform(pq.read_table(f[3]), schema, robot_id) for f in cluster
            ).sort_by([("timestamp", "ascending"), ("procedure_id", "ascending")])
            out.write(table)
        else:
            for f in cluster:
                parquet = pq.ParquetFile(f[3])
                for batch in parquet.iter_batches(batch_size=batch_rows):
                    out.write(_conform(batch, schema, robot_id))
        for f in cluster:
            f[3].unlink()
    return out.close(), sum(f[4] for f in files)


def file_schema() -> Any:
    """Return the telemetry file schema with `robot_id` inside, as compaction writes it."""
    import pyarrow as pa

    base = archive.telemetry_schema()
    if "robot_id" in base.names:
        return base
    return base.insert(1, pa.field("robot_id", pa.string(), nullable=False))


class _Output:
    """Compacted objects being written: row groups into a local file, uploaded when full."""

    def __init__(
        self,
        lake: Lake,
        *,
        folder: str,
        name: str,
        schema: Any,
        target: int,
        batch_rows: int,
        tmp: Path,
    ) -> None:
        self.lake, self.folder, self.name, self.schema = lake, folder, name, schema
        self.target, self.batch_rows, self.tmp = target, batch_rows, tmp
        self.keys: list[str] = []
        self.pending: list[Any] = []
        self.pending_rows = 0
        self.sink: Any = None
        self.writer: Any = None

    def write(self, data: Any) -> None:
        for batch in data.to_batches() if hasattr(data, "to_batches") else [data]:
            self.pending.append(batch)
            self.pending_rows += batch.num_rows
            if self.pending_rows >= self.batch_rows:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.pending_rows:
            return
        table = pa.Table.from_batches(self.pending, schema=self.schema)
        self.pending, self.pending_rows = [], 0
        if self.writer is None:
            self.sink = pa.OSFile(str(self._path()), "wb")
            self.writer = pq.ParquetWriter(self.sink, self.schema, compression="snappy")
        self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        if self.sink.tell() >= self.target:
            self._finish()

    def _path(self) -> Path:
        return self.tmp / f"out-{len(self.keys)}.parquet"

    def _finish(self) -> None:
        self.writer.close()
        self.sink.close()
        self.writer = self.sink = None
        key = f"{self.folder}/compact-{self.name}-{len(self.keys)}.parquet"
        path = self._path()
        self.lake.put_file(key, path)
        path.unlink()
        self.keys.append(key)

    def close(self) -> list[str]:
        """Write what is left; return every key written."""
        self._flush()
        if self.writer is not None:
            self._finish()
        return self.keys


def _conform(data: Any, schema: Any, robot_id: str) -> Any:
    # Parts from before robot_id was stored in the file get it from their folder.
    import pyarrow as pa

    n = data.num_rows
    columns = []
    for fld in schema:
        if fld.name in data.schema.names:
            columns.append(data.column(fld.name).cast(fld.type))
        elif fld.name == "robot_id":
            columns.append(pa.nulls(n, type=pa.string()).fill_null(robot_id))
        else:
            columns.append(pa.nulls(n, type=fld.type))
    if isinstance(data, pa.Table):
        return pa.Table.from_arrays(columns, schema=schema)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _time_range(meta: Any) -> tuple[int, int]:
    # Parquet statistics give each file's time span without reading it; unknown spans
    # overlap everything (and so are merged in memory when small enough).
    lo, hi = None, None
    column = meta.schema.names.index("timestamp")
    for i in range(meta.num_row_groups):
        stats = meta.row_group(i).column(column).statistics
        if stats is None or not stats.has_min_max:
            return (-(2**63), 2**63 - 1)
        a, b = _as_us(stats.min), _as_us(stats.max)
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
    return (lo or 0, hi or 0)


def _as_us(value: Any) -> int:
    if isinstance(value, datetime):
        return archive._epoch_us(value)
    return int(value)


def _overlapping(files: list[Any]) -> list[list[Any]]:
    # Files sorted by start time, grouped into runs whose time spans overlap.
    clusters: list[list[Any]] = []
    end = None
    for f in files:
        if clusters and end is not None and f[0] <= end:
            clusters[-1].append(f)
            end = max(end, f[1])
        else:
            clusters.append([f])
            end = f[1]
    return clusters


def _name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _folder(key: str) -> str:
    return key.rsplit("/", 1)[0]


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
