"""The lake archiver: every committed sample lands in the lake exactly once, whatever happens."""

from __future__ import annotations

import gzip
import io
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text

from medrobotics import config
from medrobotics.domain.telemetry import TelemetryIn
from medrobotics.ingestion import flows
from medrobotics.ingestion.app import create_app
from medrobotics.storage import archive, manifest
from medrobotics.storage.lake import Lake, LakeError, LocalLake, S3Lake
from medrobotics.storage.tables import archive_marks, batches, procedure_days, telemetry
from tests.conftest import closed_port_url
from tests.support.lakes import Forwarding
from tests.support.settings import for_archiving

T0 = datetime(2024, 3, 30, 22, 0, tzinfo=UTC)  # windows straddle days and a month end


def _settings(engine: Engine, tmp_path: Path, **extra: object) -> config.Settings:
    # Batch payloads and snapshots need the lake hash key on S3 (test_lake_patient_data.py).
    key = "test-lake-hash-key-of-32-characters"
    return for_archiving(engine, tmp_path, MEDROBOTICS_LAKE_HASH_KEY=key, **extra)


def _samples(
    n: int, *, start: datetime = T0, step: timedelta = timedelta(minutes=7), seed: int = 0
):
    return [
        TelemetryIn(
            procedure_id=f"proc-{(seed + i) % 4}",
            robot_id=f"robot-{(seed + i) % 3}",
            timestamp=start + i * step,
            arm_position_x=float(i % 10_000),
            tool_type="Grasper" if i % 2 else None,
            grip_pressure=1.5,
        )
        for i in range(n)
    ]


def _rows(items: list[TelemetryIn]) -> list[tuple[object, ...]]:
    # Telemetry travels through the flows as row tuples.
    return [s.row() for s in items]


def _ingest(engine: Engine, items: list[TelemetryIn]) -> None:
    # Several transactions, so windows fall between distinct received_at values.
    for i in range(0, len(items), 5):
        flows.write(engine, "telemetry", _rows(items[i : i + 5]))


def _db_keys(engine: Engine) -> set[tuple[str, str, datetime]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(telemetry.c.procedure_id, telemetry.c.robot_id, telemetry.c.timestamp)
        )
        return {(p, r, t) for p, r, t in rows}


def _lake_keys(lake: Lake, prefix: str = "raw/") -> Counter[tuple[str, str, datetime]]:
    """Read the objects the manifests list with pyarrow; count each sample's appearances."""
    seen: Counter[tuple[str, str, datetime]] = Counter()
    listed: set[str] = set()
    for day in manifest.days(lake, prefix):
        listed.update(manifest.current(lake, prefix, day))
    # Nothing is left beside the manifests once a run has finished.
    assert listed == {k for k in lake.list(f"{prefix}telemetry/date=") if k.endswith(".parquet")}
    for key in sorted(listed):
        parts = dict(p.split("=", 1) for p in key.split("/") if "=" in p)
        table = pq.read_table(io.BytesIO(lake.get(key)))
        assert table.schema == archive.telemetry_schema()
        for row in table.to_pylist():
            assert row["timestamp"].date().isoformat() == parts["date"]
            # robot_id is in the file as well as in the key (Athena, Spectrum, COPY read it).
            assert row["robot_id"] == unquote(parts["robot_id"])
            seen[(row["procedure_id"], row["robot_id"], row["timestamp"])] += 1
    return seen


def _assert_exactly_once(engine: Engine, lake: Lake) -> None:
    in_db = _db_keys(engine)
    in_lake = _lake_keys(lake)
    assert set(in_lake) == in_db
    assert max(in_lake.values(), default=1) == 1


def _lag(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return archive.lag(conn)


class Recording(Forwarding):
    """A lake that counts writes per key (and can pause on the first one)."""

    def __init__(self, inner: Lake) -> None:
        super().__init__(inner)
        self.puts: Counter[str] = Counter()
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=60)
        if key.endswith(".parquet"):  # objects; a manifest is rewritten by every window
            with self._lock:
                self.puts[key] += 1
        self.inner.put(key, data)

    def put_file(self, key: str, source: Path) -> None:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=60)
        with self._lock:
            self.puts[key] += 1
        self.inner.put_file(key, source)


def test_every_sample_exactly_once_in_windows(engine: Engine, lake: Lake, tmp_path: Path) -> None:
    settings = _settings(engine, tmp_path, MEDROBOTICS_ARCHIVE_BATCH_ROWS=12)
    _ingest(engine, _samples(60))
    report = archive.run_until_caught_up(engine, lake, settings)
    assert report.telemetry_rows == 60
    assert report.windows >= 5  # the row cap split the export
    _assert_exactly_once(engine, lake)
    keys = lake.list("raw/telemetry/date=")
    assert all(k.split("/")[-1].startswith("part-") and k.endswith(".parquet") for k in keys)
    assert {k.split("/")[2] for k in keys} >= {"date=2024-03-30", "date=2024-03-31"}
    # Each day's manifest lists its objects, by full address.
    for day in ("2024-03-30", "2024-03-31"):
        listed = lake.get(f"raw/telemetry/_manifests/date={day}/manifest").decode().split()
        assert sorted(listed) == [lake.uri(k) for k in keys if f"date={day}/" in k]
    lag = _lag(engine)
    assert lag["pending_rows"] == 0 and lag["lag_seconds"] == 0.0
    assert lag["archived_through"] is not None
    # Nothing new: a further run exports nothing and writes nothing.
    assert archive.run_once(engine, lake, settings).objects == 0
    with engine.connect() as conn:
        rows = select(archive_marks.c.rows_archived).where(archive_marks.c.stream == "telemetry")
        assert conn.execute(rows).scalar_one() == 60


def test_equal_received_at_is_never_split(engine: Engine, lake: Lake, tmp_path: Path) -> None:
    settings = _settings(engine, tmp_path, MEDROBOTICS_ARCHIVE_BATCH_ROWS=3)
    flows.write(engine, "telemetry", _rows(_samples(10)))  # one transaction, one received_at
    report = archive.run_once(engine, lake, settings)
    assert report.telemetry_rows == 10 and report.windows == 1
    _assert_exactly_once(engine, lake)


def test_batch_payloads_reach_the_lake(engine: Engine, lake: Lake, tmp_path: Path) -> None:
    settings = _settings(engine, tmp_path)
    body = orjson.dumps(
        {"type": "telemetry", "records": [s.model_dump(mode="json") for s in _samples(3)]}
    )
    items = _samples(3)
    flows.write(engine, "telemetry", _rows(items), raw=body)
    flows.write(engine, "telemetry", _rows(items), raw=body)  # identical re-send: same batch
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(batches)).scalar_one() == 1
    assert _lag(engine)["pending_batches"] == 1
    report = archive.run_once(engine, lake, settings)
    assert report.batches == 1
    (key,) = lake.list("raw/batches/")
    assert key.startswith("raw/batches/entity=telemetry/date=") and key.endswith(".json.gz")
    assert gzip.decompress(lake.get(key)) == body
    assert _lag(engine)["pending_batches"] == 0


def test_s3_down_then_up(engine: Engine, tmp_path: Path, s3_endpoint: str, bucket: str) -> None:
    settings = _settings(engine, tmp_path, MEDROBOTICS_ARCHIVE_BATCH_ROWS=10)
    up = S3Lake(bucket, endpoint_url=s3_endpoint)
    down = S3Lake(bucket, endpoint_url=closed_port_url())
    _ingest(engine, _samples(20))
    archive.run_once(engine, up, settings)  # part of it reaches the lake

    _ingest(engine, _samples(15, seed=1, start=T0 + timedelta(days=3)))
    with pytest.raises(LakeError):
        archive.run_once(engine, down, settings)
    lagging = _lag(engine)
    # Ingestion went on: the database holds what the lake could not take.
    _ingest(engine, _samples(10, seed=2, start=T0 + timedelta(days=5)))
    assert _lag(engine)["pending_rows"] == lagging["pending_rows"] + 10
    assert lagging["lag_seconds"] > 0

    report = archive.run_until_caught_up(engine, up, settings)
    assert report.telemetry_rows == lagging["pending_rows"] + 10
    assert _lag(engine)["pending_rows"] == 0
    _assert_exactly_once(engine, up)


def test_two_archivers_never_export_the_same_rows(
    engine: Engine, lake: Lake, tmp_path: Path
) -> None:
    settings = _settings(engine, tmp_path, MEDROBOTICS_ARCHIVE_BATCH_ROWS=10)
    _ingest(engine, _samples(40))
    first = Recording(lake)
    first.gate = threading.Event()
    errors: list[BaseException] = []

    def run_first() -> None:
        try:
            archive.run_until_caught_up(engine, first, settings)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run_first)
    thread.start()
    assert first.entered.wait(timeout=60)  # the first archiver is mid-window
    second = Recording(lake)
    report = archive.run_once(engine, second, settings)
    assert "telemetry" in report.skipped and report.telemetry_rows == 0
    assert not any(k.startswith("raw/telemetry/") for k in second.puts)
    first.gate.set()
    thread.join(timeout=120)
    assert not errors
    _assert_exactly_once(engine, lake)
    assert max(first.puts.values()) == 1


def test_many_archivers_in_threads(engine: Engine, lake: Lake, tmp_path: Path) -> None:
    settings = _settings(engine, tmp_path, MEDROBOTICS_ARCHIVE_BATCH_ROWS=7)
    _ingest(engine, _samples(50))
    shared = Recording(lake)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker() -> None:
        try:
            start.wait()
            for _ in range(10):
                archive.run_once(engine, shared, settings)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    archive.run_until_caught_up(engine, shared, settings)
    assert max(shared.puts.values()) == 1  # no object written twice
    _assert_exactly_once(engine, lake)


def test_crash_between_object_write_and_mark_move(
    engine: Engine, lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(engine, tmp_path, MEDROBOTICS_ARCHIVE_BATCH_ROWS=10)
    _ingest(engine, _samples(30))
    recording = Recording(lake)
    real = archive.advance_mark

    def crash_once(*args: Any, **kwargs: Any) -> None:
        monkeypatch.setattr(archive, "advance_mark", real)
        raise RuntimeError("process died")

    monkeypatch.setattr(archive, "advance_mark", crash_once)
    with pytest.raises(RuntimeError):
        archive.run_once(engine, recording, settings)
    written = set(recording.puts)
    assert written and _lag(engine)["pending_rows"] == 30  # objects written, mark not moved

    _ingest(engine, _samples(10, seed=3, start=T0 + timedelta(days=2)))  # more arrives meanwhile
    archive.run_until_caught_up(engine, recording, settings)
    # The retry rebuilt the same window and overwrote the same keys.
    assert all(recording.puts[k] == 2 for k in written)
    _assert_exactly_once(engine, lake)


def test_retention_removes_only_archived_rows(engine: Engine, tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    settings = _settings(engine, tmp_path, MEDROBOTICS_RETENTION_DAYS=30)
    old = datetime(2020, 1, 10, tzinfo=UTC)
    _ingest(engine, _samples(6, start=old, step=timedelta(hours=1)))
    recent = datetime.now(UTC) - timedelta(hours=1)
    _ingest(engine, _samples(4, seed=1, start=recent, step=timedelta(minutes=1)))

    # Nothing archived yet: retention removes nothing.
    archive.apply_retention(engine, settings, archive.Report())
    assert len(_db_keys(engine)) == 10

    report = archive.run_once(engine, lake, settings)
    assert report.telemetry_rows == 10
    assert len(_db_keys(engine)) == 4  # the old month went; the recent rows stay
    # On PostgreSQL a month without a partition of its own is in the DEFAULT one: rows go
    # one by one there too (whole partitions: tests/storage/test_partitions.py).
    assert report.rows_deleted == 6
    if engine.dialect.name == "postgresql":
        assert not _partition_exists(engine, "telemetry_y2020m01")

    # A late old sample, not yet archived, survives retention until it is in the lake.
    late = _samples(1, seed=2, start=datetime(2020, 2, 3, tzinfo=UTC))
    flows.write(engine, "telemetry", _rows(late))
    archive.apply_retention(engine, settings, archive.Report())
    assert len(_db_keys(engine)) == 5
    archive.run_once(engine, lake, settings)
    assert len(_db_keys(engine)) == 4
    assert sum(_lake_keys(lake).values()) == 11  # the lake keeps everything


def _partition_exists(engine: Engine, name: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT to_regclass(:n)"), {"n": name}).scalar() is not None


def test_ingestion_keeps_batches_and_reports_lag(engine: Engine, tmp_path: Path) -> None:
    settings = _settings(engine, tmp_path)
    records = [s.model_dump(mode="json") for s in _samples(4)]
    ndjson = b"\n".join(orjson.dumps(r) for r in records) + b"\n"
    with TestClient(create_app(settings, engine=engine)) as client:
        r = client.post("/ingest/batch", json={"type": "telemetry", "records": records[:2]})
        assert r.status_code == 201
        r = client.post(
            "/ingest/batch?type=telemetry",
            content=ndjson,
            headers={"content-type": "application/x-ndjson"},
        )
        assert r.status_code == 201
        stats = client.get("/ingest/stats").json()
    assert stats["archive"]["pending_rows"] == 4
    assert stats["archive"]["pending_batches"] == 2
    with engine.connect() as conn:
        kept = conn.execute(select(batches.c.entity, batches.c.record_count, batches.c.payload))
        by_count = {r.record_count: gzip.decompress(r.payload) for r in kept}
    assert by_count[4] == ndjson
    assert orjson.loads(by_count[2])["records"] == records[:2]


def test_background_archiver_runs_with_the_app(engine: Engine, tmp_path: Path) -> None:
    settings = _settings(engine, tmp_path).model_copy(
        update={"archive_enabled": True, "archive_interval_s": 0.05}
    )
    lake = LocalLake(settings.lake_dir)
    with TestClient(create_app(settings, engine=engine)) as client:
        r = client.post("/ingest/telemetry", json=[s.model_dump(mode="json") for s in _samples(5)])
        assert r.status_code == 201
        for _ in range(600):  # wait for the loop (bounded), not a timing assertion
            if client.get("/ingest/stats").json()["archive"]["pending_rows"] == 0:
                break
            time.sleep(0.05)
    assert _lag(engine)["pending_rows"] == 0
    _assert_exactly_once(engine, lake)


def test_backoff_grows_and_is_capped() -> None:
    waits = [archive.backoff(n, base=1.0) for n in range(1, 30)]
    assert all(0.5 <= w <= archive.BACKOFF_CAP_S for w in waits)
    assert archive.backoff(1, base=1.0) <= 1.0 < archive.backoff(4, base=1.0)


def test_archive_command(engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from medrobotics.cli import app

    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("MEDROBOTICS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEDROBOTICS_ARCHIVE_SAFETY", "0")
    _ingest(engine, _samples(12))
    result = CliRunner().invoke(app, ["archive", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "archived 12 samples" in result.output
    _assert_exactly_once(engine, LocalLake(tmp_path / "data" / "lake"))


# Memory -----------------------------------------------------------------------------------

PEAK = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stdout + done.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(done.returncode)
"""


def _archive_peak_mb(engine: Engine, data_dir: Path, memory_mb: int) -> float:
    """Run `medrobotics archive` in a child process; return the child's peak RSS in MB."""
    env = {
        **os.environ,
        "DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "MEDROBOTICS_DATA_DIR": str(data_dir),
        "MEDROBOTICS_ARCHIVE_SAFETY": "0",
        "MEDROBOTICS_ARCHIVE_MEMORY_MB": str(memory_mb),
    }
    command = [str(Path(sys.executable).with_name("medrobotics")), "archive"]
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *command, "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1]) / 1024


def _noisy_rows(n: int, *, start: datetime, robots: int = 3) -> list[tuple[object, ...]]:
    """Rows in table order with varied readings, which Parquet cannot shrink much."""
    rng = random.Random(7)
    step = timedelta(milliseconds=20)
    return [
        (
            f"proc-{i % robots}",
            f"robot-{i % robots}",
            start + (i // robots) * step,
            *(rng.random() * 100 for _ in range(4)),
            "Grasper" if i % 2 else None,
            *(rng.random() * 100 for _ in range(9)),
        )
        for i in range(n)
    ]


def test_huge_transaction_in_bounded_memory(engine: Engine, tmp_path: Path) -> None:
    memory_mb = 2
    data_dir = tmp_path / "data"
    # A small transaction first: the child's footprint at rest (interpreter, pyarrow, drivers)
    # after one export, so what follows measures only what the data size adds.
    flows.write(engine, "telemetry", _rows(_samples(100, seed=5)))
    small = _archive_peak_mb(engine, data_dir, memory_mb)
    huge = _noisy_rows(100_000, start=T0 + timedelta(days=3))
    flows.write(engine, "telemetry", huge)  # one transaction: one received_at
    del huge
    peak = _archive_peak_mb(engine, data_dir, memory_mb)
    lake = LocalLake(data_dir / "lake")
    parquet_mb = sum((data_dir / "lake" / k).stat().st_size for k in lake.list()) / 2**20
    print(f"peak {peak:.0f} MB, at rest {small:.0f} MB, {parquet_mb:.0f} MB of Parquet")
    # The transaction is several times what the setting allows in one piece...
    assert parquet_mb > 4 * memory_mb
    # ...and streams through buffers sized from the setting.
    assert peak - small < 4 * memory_mb + 12
    _assert_exactly_once(engine, lake)


def test_large_part_split_and_redone_into_the_same_objects(
    engine: Engine, lake: Lake, tmp_path: Path
) -> None:
    settings = _settings(engine, tmp_path, MEDROBOTICS_ARCHIVE_MEMORY_MB=1)
    flows.write(engine, "telemetry", _noisy_rows(25, start=T0 + timedelta(hours=1), robots=1))
    recording = Recording(lake)
    window = archive.plan_window(engine, settings)
    assert window is not None
    first = archive.write_window(engine, recording, settings, window, part_rows=10)
    # The process dies here: objects written, mark not moved. The redo gets the same window.
    redo = archive.plan_window(engine, settings)
    assert redo is not None and (redo.start, redo.end) == (window.start, window.end)
    again = archive.write_window(engine, recording, settings, redo, part_rows=10)
    assert again.keys == first.keys and again.rows == first.rows == 25
    assert again.dates == {(T0 + timedelta(hours=1)).date()}
    names = [k.rsplit("/", 1)[1] for k in first.keys]
    stem = f"part-{archive._epoch_us(window.start)}-{archive._epoch_us(window.end)}"
    assert names == [f"{stem}-{seq}.parquet" for seq in range(3)]
    sizes = [pq.read_metadata(io.BytesIO(lake.get(k))).num_rows for k in first.keys]
    assert sizes == [10, 10, 5]
    assert all(recording.puts[k] == 2 for k in first.keys)  # overwritten, not added
    manifest.add(lake, settings.lake_prefix, again.keys)  # as export_telemetry does next
    with archive.transaction(engine) as conn:
        archive.advance_mark(conn, stream="telemetry", window=window, rows=again.rows)
    _assert_exactly_once(engine, lake)


def test_duckdb_reads_robot_id_from_files_and_keys(engine: Engine, tmp_path: Path) -> None:
    settings = _settings(engine, tmp_path)
    lake = LocalLake(settings.lake_dir)
    odd = "robot:7@site.b"  # percent-encoded in the key, as it is in the file
    flows.write(engine, "telemetry", _rows(_samples(4)))
    rows = [(r[0], odd, *r[2:]) for r in _rows(_samples(3, seed=1, start=T0 + timedelta(days=1)))]
    flows.write(engine, "telemetry", rows)
    archive.run_until_caught_up(engine, lake, settings)
    assert any("robot_id=robot%3A7%40site.b/" in k for k in lake.list())
    root = settings.lake_dir / settings.lake_prefix / "telemetry"
    source = f"read_parquet('{root}/**/*.parquet', hive_partitioning = true)"
    got = duckdb.sql(
        f"SELECT robot_id, count(*) FROM {source} GROUP BY robot_id ORDER BY robot_id"
    ).fetchall()
    with engine.connect() as conn:
        want = conn.execute(
            select(telemetry.c.robot_id, func.count())
            .group_by(telemetry.c.robot_id)
            .order_by(telemetry.c.robot_id)
        ).all()
    assert got == [tuple(r) for r in want]
    # A filter on the partition column prunes by key and still matches the file's column.
    got = duckdb.sql(f"SELECT count(*) FROM {source} WHERE robot_id = '{odd}'").fetchall()
    assert got == [(3,)]
    types = {r[0]: r[1] for r in duckdb.sql(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    assert types["robot_id"] == "VARCHAR" and types["timestamp"] == "TIMESTAMP WITH TIME ZONE"


def test_sorted_in_memory_or_by_the_database_the_objects_are_the_same(
    engine: Engine, tmp_path: Path
) -> None:
    # Ids whose byte order differs from a linguistic one, and ties on (robot, timestamp).
    robots = ["Robot-b", "robot-a", "robot-B", "r:1", "r@2", "r.3"]
    procedures = ["P-1", "p-1", "p_1"]
    rows = [
        (p, r, T0 + timedelta(seconds=i), *(float(i),) * 4, None, *(1.0,) * 9)
        for i in range(70)
        for r in robots
        for p in procedures
    ]
    flows.write(engine, "telemetry", rows)  # 1,260 rows in one transaction
    small = _settings(engine, tmp_path, MEDROBOTICS_ARCHIVE_MEMORY_MB=256)
    tight = _settings(engine, tmp_path, MEDROBOTICS_ARCHIVE_MEMORY_MB=1)
    assert len(rows) * archive.ARROW_ROW_BYTES * 2 > archive.Budget.of(tight).sort_bytes
    assert len(rows) * archive.ARROW_ROW_BYTES * 2 <= archive.Budget.of(small).sort_bytes
    window = archive.plan_window(engine, small)
    assert window is not None
    a, b = LocalLake(tmp_path / "a"), LocalLake(tmp_path / "b")
    one = archive.write_window(engine, a, small, window, part_rows=100)
    two = archive.write_window(engine, b, tight, window, part_rows=100)
    assert one.keys == two.keys and len(one.keys) == 6 * 3  # 210 rows a robot: 100, 100, 10
    for key in one.keys:
        first, second = (pq.read_table(io.BytesIO(x.get(key))) for x in (a, b))
        assert first.equals(second), key
        assert first.column("timestamp").to_pylist() == sorted(
            first.column("timestamp").to_pylist()
        )


def test_the_pass_rolls_up_closed_days_of_analytics(engine: Engine, tmp_path: Path) -> None:
    from tests.fleet import make_fleet, write

    fleet = write(engine, make_fleet(n_procedures=30))
    settings, lake = _settings(engine, tmp_path), LocalLake(tmp_path / "lake")
    report = archive.run_once(engine, lake, settings)
    first = min(p.start_time for p in fleet.procedures).date()
    assert report.analytics_days == (datetime.now(UTC).date() - first).days
    with engine.connect() as conn:
        rolled = conn.execute(select(func.sum(procedure_days.c.procedures))).scalar()
    today = datetime.now(UTC).date()
    assert rolled == sum(p.start_time.date() < today for p in fleet.procedures)
    assert archive.run_once(engine, lake, settings).analytics_days == 0  # nothing new
