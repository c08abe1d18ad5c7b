"""Compaction: closed days rewritten into one object per robot, every sample once for readers
that follow the manifests, whatever a crash leaves behind."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, select

from medrobotics import config
from medrobotics.domain.telemetry import TelemetryIn
from medrobotics.ingestion import flows
from medrobotics.storage import archive, compact, manifest
from medrobotics.storage.lake import Lake, LakeError, LocalLake
from medrobotics.storage.tables import telemetry
from tests.support.lakes import Forwarding
from tests.support.settings import for_archiving

T0 = datetime(2024, 3, 30, 20, 0, tzinfo=UTC)  # two days, closed long ago
DAY1, DAY2 = date(2024, 3, 30), date(2024, 3, 31)
Sample = tuple[str, str, datetime]


def _ingest(engine: Engine, n: int, *, start: datetime = T0, seed: int = 0) -> None:
    items = [
        TelemetryIn(
            procedure_id=f"proc-{(seed + i) % 4}",
            robot_id=f"robot:{(seed + i) % 3}",  # a colon: percent-encoded in the key
            timestamp=start + i * timedelta(minutes=11),
            arm_position_x=float(i),
            tool_type="Grasper" if i % 2 else None,
        )
        for i in range(n)
    ]
    for i in range(0, n, 4):  # several transactions: several windows
        flows.write(engine, "telemetry", [s.row() for s in items[i : i + 4]])


def _archived(engine: Engine, lake: Lake, tmp_path: Path, n: int = 48) -> config.Settings:
    """Samples over two closed days, archived in many small windows (many parts a day)."""
    settings = for_archiving(engine, tmp_path, MEDROBOTICS_ARCHIVE_BATCH_ROWS=9)
    _ingest(engine, n)
    archive.run_until_caught_up(engine, lake, settings)
    return settings


def _compact(engine: Engine, lake: Lake, settings: config.Settings, **kw: object) -> compact.Report:
    with archive.exclusive(engine, archive.TELEMETRY) as mine:
        assert mine
        return compact.compact(engine, lake, settings, **kw)  # type: ignore[arg-type]


def _db(engine: Engine) -> set[Sample]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(telemetry.c.procedure_id, telemetry.c.robot_id, telemetry.c.timestamp)
        )
        return {(p, r, t) for p, r, t in rows}


def _read(lake: Lake, keys: Iterable[str]) -> Counter[Sample]:
    seen: Counter[Sample] = Counter()
    for key in keys:
        robot_id = unquote(key.split("/robot_id=")[1].split("/")[0])
        for row in pq.read_table(io.BytesIO(lake.get(key))).to_pylist():
            assert row.get("robot_id", robot_id) == robot_id
            seen[(row["procedure_id"], robot_id, row["timestamp"])] += 1
    return seen


def _manifested(lake: Lake) -> list[str]:
    """Every object the manifests list: what a reader following the layout opens."""
    keys: list[str] = []
    for day in manifest.days(lake, "raw/"):
        listed = manifest.read(lake, "raw/", day)
        assert listed is not None
        keys.extend(listed)
    return keys


def _objects(lake: Lake) -> list[str]:
    return [k for k in lake.list("raw/telemetry/date=") if k.endswith(".parquet")]


def _assert_once(engine: Engine, lake: Lake) -> None:
    seen = _read(lake, _manifested(lake))
    assert set(seen) == _db(engine)
    assert max(seen.values()) == 1


def _folders(keys: Iterable[str]) -> Counter[str]:
    return Counter(k.rsplit("/", 1)[0] for k in keys)


class NoManifests(Forwarding):
    """An archiver from before manifests: it writes parts and never a manifest."""

    def put(self, key: str, data: bytes) -> None:
        if not key.endswith("/manifest"):
            self.inner.put(key, data)

    def list(self, prefix: str = "") -> list[str]:
        return [k for k in self.inner.list(prefix) if not k.endswith("/manifest")]


class Crashing(Forwarding):
    """The lake, except that the chosen operation fails like a process dying at that point."""

    def __init__(
        self, inner: Lake, *, delete: bool = False, manifest: bool = False, pin: bool = False
    ) -> None:
        super().__init__(inner)
        self.fail_delete = delete
        self.fail_manifest = manifest  # after compacted objects are written
        self.fail_window = pin  # after a window's objects are written
        self.uploaded: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        if key.endswith("/manifest") and (
            self.fail_window or (self.fail_manifest and self.uploaded)
        ):
            raise LakeError("process died before the manifest")
        self.inner.put(key, data)

    def put_file(self, key: str, source: Path) -> None:
        self.inner.put_file(key, source)
        self.uploaded.append(key)

    def delete(self, keys: Iterable[str]) -> None:
        if self.fail_delete:
            raise LakeError("process died before deleting")
        self.inner.delete(keys)


def test_one_sorted_snappy_object_per_day_and_robot(
    engine: Engine, lake: Lake, tmp_path: Path
) -> None:
    settings = _archived(engine, lake, tmp_path)
    before = _objects(lake)
    assert max(_folders(before).values()) > 1  # many windows: many parts per robot and day
    report = _compact(engine, lake, settings)
    assert {d.day for d in report.days} == {DAY1, DAY2}
    assert report.rows == 48 and report.deleted == len(before)
    after = _objects(lake)
    assert sorted(_manifested(lake)) == after
    assert set(_folders(after).values()) == {1}
    assert len(after) == report.written == 6  # 2 days x 3 robots
    assert all(k.rsplit("/", 1)[1].startswith("compact-") for k in after)
    for key in after:
        meta = pq.ParquetFile(io.BytesIO(lake.get(key))).metadata
        assert meta.row_group(0).column(0).compression == "SNAPPY"
        table = pq.read_table(io.BytesIO(lake.get(key)))
        assert table.schema.field("robot_id").type == "string"
        times = table.column("timestamp").to_pylist()
        assert times == sorted(times)
    _assert_once(engine, lake)
    # The manifest names full addresses: a path for the folder, s3://bucket/key for S3.
    text = lake.get(manifest.manifest_key("raw/", DAY1)).decode().splitlines()
    assert text == sorted(lake.uri(k) for k in after if "date=2024-03-30" in k)


def test_compaction_is_idempotent(engine: Engine, lake: Lake, tmp_path: Path) -> None:
    settings = _archived(engine, lake, tmp_path)
    _compact(engine, lake, settings)
    first = _objects(lake)
    again = _compact(engine, lake, settings)
    assert (again.rows, again.written, again.deleted) == (0, 0, 0)
    assert _objects(lake) == first
    _assert_once(engine, lake)


def test_crash_between_writing_and_deleting_then_rerun(
    engine: Engine, lake: Lake, tmp_path: Path
) -> None:
    settings = _archived(engine, lake, tmp_path)
    parts = _objects(lake)
    crashing = Crashing(lake, delete=True)
    with pytest.raises(LakeError):
        _compact(engine, crashing, settings)
    # The new objects are committed, the old ones still there: readers see each sample once.
    assert crashing.uploaded and set(parts) < set(_objects(lake))
    _assert_once(engine, lake)
    # The archiver goes on meanwhile: its manifest update must not bring the old parts back.
    _ingest(engine, 3, start=T0 + timedelta(days=3), seed=7)
    archive.run_until_caught_up(engine, lake, settings)
    _assert_once(engine, lake)

    report = _compact(engine, lake, settings)
    assert not set(parts) & set(_objects(lake))  # the replaced parts are gone
    assert set(crashing.uploaded) <= set(_objects(lake))  # the same compacted objects
    # The crash hit the first day; the rerun finished it without rewriting it, then the next.
    day1 = [k for k in parts if "date=2024-03-30/" in k]
    assert (report.days[0].day, report.days[0].written) == (DAY1, 0)
    assert report.days[0].deleted == len(day1) and report.deleted == len(parts)
    assert sorted(_manifested(lake)) == _objects(lake)
    _assert_once(engine, lake)


def test_crash_before_the_manifest_then_rerun(engine: Engine, lake: Lake, tmp_path: Path) -> None:
    settings = _archived(engine, lake, tmp_path)
    parts = _objects(lake)
    crashing = Crashing(lake, manifest=True)
    with pytest.raises(LakeError):
        _compact(engine, crashing, settings)
    assert crashing.uploaded and set(crashing.uploaded) <= set(_objects(lake))
    assert sorted(_manifested(lake)) == parts  # not committed: the old set is in force
    _assert_once(engine, lake)

    _compact(engine, lake, settings)
    # Same inputs, same token: the rerun wrote the keys the crashed run had.
    assert set(crashing.uploaded) <= set(_objects(lake))
    assert sorted(_manifested(lake)) == _objects(lake)
    assert set(_folders(_objects(lake)).values()) == {1}
    _assert_once(engine, lake)


def test_a_late_sample_joins_the_next_compaction(
    engine: Engine, lake: Lake, tmp_path: Path
) -> None:
    settings = _archived(engine, lake, tmp_path)
    _compact(engine, lake, settings)
    compacted = set(_objects(lake))
    # A robot back online sends a sample of a compacted day: a new part of that day.
    late = TelemetryIn(procedure_id="late", robot_id="robot:1", timestamp=T0 + timedelta(hours=1))
    flows.write(engine, "telemetry", [late.row()])
    archive.run_until_caught_up(engine, lake, settings)
    _assert_once(engine, lake)  # visible at once, through the manifest
    folder = "raw/telemetry/date=2024-03-30/robot_id=robot%3A1"
    assert _folders(_manifested(lake))[folder] == 2

    report = _compact(engine, lake, settings)
    assert report.written == 1 and report.deleted == 2
    now = set(_objects(lake))
    assert len(now - compacted) == 1 and _folders(now)[folder] == 1
    _assert_once(engine, lake)
    assert ("late", "robot:1", T0 + timedelta(hours=1)) in _read(lake, _manifested(lake))


def test_parts_of_the_target_size(engine: Engine, lake: Lake, tmp_path: Path) -> None:
    settings = _archived(engine, lake, tmp_path, n=60)
    report = _compact(engine, lake, settings, target_bytes=1, batch_rows=3)
    after = _objects(lake)
    assert max(_folders(after).values()) > 1
    assert report.written == len(after)
    by_folder: dict[str, list[str]] = {}
    for key in after:
        by_folder.setdefault(key.rsplit("/", 1)[0], []).append(key)
    for keys in by_folder.values():
        names = sorted(k.rsplit("/", 1)[1] for k in keys)
        token = names[0].split("-")[1]
        assert names == sorted(f"compact-{token}-{n}.parquet" for n in range(len(names)))
    _assert_once(engine, lake)


def test_open_and_pinned_days_are_left_alone(engine: Engine, lake: Lake, tmp_path: Path) -> None:
    settings = _archived(engine, lake, tmp_path)
    # Today is open: samples keep arriving for it.
    report = _compact(engine, lake, settings, now=datetime(2024, 3, 31, 12, tzinfo=UTC))
    assert report.skipped == [DAY2] and {d.day for d in report.days} == {DAY1}

    # A window that failed half-way stays pinned; the days it touches wait for its retry.
    _ingest(engine, 8, start=T0 + timedelta(days=1, hours=1), seed=2)
    with pytest.raises(LakeError):
        archive.run_once(engine, Crashing(lake, pin=True), settings)
    assert compact.pinned_days(engine) == {DAY2}
    report = _compact(engine, lake, settings)
    assert report.skipped == [DAY2]
    archive.run_until_caught_up(engine, lake, settings)
    assert compact.pinned_days(engine) == set()
    _compact(engine, lake, settings)
    assert set(_folders(_objects(lake)).values()) == {1}
    _assert_once(engine, lake)


def test_the_archiver_pass_compacts_closed_days(engine: Engine, lake: Lake, tmp_path: Path) -> None:
    settings = for_archiving(
        engine, tmp_path, MEDROBOTICS_ARCHIVE_BATCH_ROWS=5, MEDROBOTICS_COMPACT_INTERVAL=0
    )
    _ingest(engine, 48)
    archive.run_until_caught_up(engine, lake, settings)
    # Every pass compacted after exporting: the last one left one object per robot and day.
    assert set(_folders(_objects(lake)).values()) == {1}
    assert sorted(_manifested(lake)) == _objects(lake)
    _assert_once(engine, lake)


def test_a_failed_compaction_does_not_stop_the_pass(
    engine: Engine, lake: Lake, tmp_path: Path
) -> None:
    settings = for_archiving(
        engine, tmp_path, MEDROBOTICS_ARCHIVE_BATCH_ROWS=9, MEDROBOTICS_COMPACT_INTERVAL=0
    )
    _ingest(engine, 48)
    crashing = Crashing(lake, delete=True)
    report = archive.run_until_caught_up(engine, crashing, settings)
    assert report.telemetry_rows == 48 and crashing.uploaded  # compactions ran and failed
    assert set(_objects(lake)) > set(_manifested(lake))
    _assert_once(engine, lake)
    archive.run_once(engine, lake, settings)  # the next pass finishes the job
    assert sorted(_manifested(lake)) == _objects(lake)
    assert set(_folders(_objects(lake)).values()) == {1}
    _assert_once(engine, lake)


def test_a_day_from_before_manifests(engine: Engine, tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    settings = _archived(engine, lake, tmp_path)
    for day in (DAY1, DAY2):
        (tmp_path / "lake" / manifest.manifest_key("raw/", day)).unlink()
    assert _compact(engine, lake, settings).days == []  # found through the manifests only
    report = _compact(engine, lake, settings, discover=True)
    assert {d.day for d in report.days} == {DAY1, DAY2}
    _assert_once(engine, lake)


def test_parts_no_manifest_lists_are_adopted(engine: Engine, lake: Lake, tmp_path: Path) -> None:
    settings = _archived(engine, lake, tmp_path)
    _compact(engine, lake, settings)
    # An older archiver, still running during a rollout, adds a day's samples without a word
    # to the manifests: compaction must fold them in, not take them for leftovers.
    _ingest(engine, 6, start=T0 + timedelta(hours=2), seed=5)
    archive.run_until_caught_up(engine, NoManifests(lake), settings)  # type: ignore[arg-type]
    unlisted = set(_objects(lake)) - set(_manifested(lake))
    assert unlisted
    _compact(engine, lake, settings)
    assert not unlisted & set(_objects(lake))
    assert sorted(_manifested(lake)) == _objects(lake)
    assert set(_folders(_objects(lake)).values()) == {1}
    _assert_once(engine, lake)


def test_lake_compact_command(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from medrobotics.cli import app

    data = tmp_path / "data"
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("MEDROBOTICS_DATA_DIR", str(data))
    lake = LocalLake(data / "lake")
    _archived(engine, lake, tmp_path)
    runner = CliRunner()
    bad = runner.invoke(app, ["lake", "compact", "--date", "30/03/2024"])
    assert bad.exit_code == 2 and "--date" in bad.output
    result = runner.invoke(app, ["lake", "compact", "--date", "2024-03-30"])
    assert result.exit_code == 0, result.output
    assert "2024-03-30: " in result.output and "-> 3 objects" in result.output
    assert "2024-03-31" not in result.output
    result = runner.invoke(app, ["lake", "compact"])
    assert result.exit_code == 0, result.output
    assert "compacted 26 samples into 3 objects" in result.output
    _assert_once(engine, lake)
