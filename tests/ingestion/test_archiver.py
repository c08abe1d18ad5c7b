"""The lake archiver: every committed sample lands in the lake exactly once, whatever happens."""

from __future__ import annotations

import gzip
import io
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
from medrobotics.storage import archive
from medrobotics.storage.lake import Lake, LakeError, LocalLake, S3Lake
from medrobotics.storage.tables import archive_marks, batches, procedure_days, telemetry
from tests.conftest import closed_port_url

T0 = datetime(2024, 3, 30, 22, 0, tzinfo=UTC)  # windows straddle days and a month end


def _settings(engine: Engine, tmp_path: Path, **extra: object) -> config.Settings:
    return config.load(
        database_url=engine.url.render_as_string(hide_password=False),
        MEDROBOTICS_DATA_DIR=str(tmp_path / "data"),
        environment="test",
        # Tests archive what they just committed; production waits past the commit bound.
        MEDROBOTICS_ARCHIVE_SAFETY=0,
        MEDROBOTICS_ARCHIVE=False,
        **extra,
    )


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    """The local folder, or a fresh bucket on the loopback S3 server."""
    if request.param == "local":
        return LocalLake(tmp_path / "lake")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3Lake(request.getfixturevalue("bucket"), endpoint_url=endpoint)


def _samples(
    n: int, *, start: datetime = T0, step: timedelta = timedelta(minutes=7), seed: int = 0
):
    return [
        TelemetryIn(
            procedure_id=f"proc-{(seed + i) % 4}",
            robot_id=f"robot-{(seed + i) % 3}",
            timestamp=start + i * step,
            arm_position_x=float(i),
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
    """Read every telemetry object back with pyarrow; count each sample's appearances."""
    seen: Counter[tuple[str, str, datetime]] = Counter()
    for key in lake.list(f"{prefix}telemetry/"):
        parts = dict(p.split("=", 1) for p in key.split("/") if "=" in p)
        table = pq.read_table(io.BytesIO(lake.get(key)))
        assert str(table.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
        assert "robot_id" not in table.schema.names  # it is the partition
        for row in table.to_pylist():
            assert row["timestamp"].date().isoformat() == parts["date"]
            seen[(row["procedure_id"], unquote(parts["robot_id"]), row["timestamp"])] += 1
    return seen


def _assert_exactly_once(engine: Engine, lake: Lake) -> None:
    in_db = _db_keys(engine)
    in_lake = _lake_keys(lake)
    assert set(in_lake) == in_db
    assert max(in_lake.values(), default=1) == 1


def _lag(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return archive.lag(conn)


class Recording:
    """A lake that counts writes per key (and can pause on the first one)."""

    def __init__(self, inner: Lake) -> None:
        self.inner = inner
        self.puts: Counter[str] = Counter()
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(timeout=60)
        with self._lock:
            self.puts[key] += 1
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)


def test_every_sample_exactly_once_in_windows(engine: Engine, lake: Lake, tmp_path: Path) -> None:
    settings = _settings(engine, tmp_path, MEDROBOTICS_ARCHIVE_BATCH_ROWS=12)
    _ingest(engine, _samples(60))
    report = archive.run_until_caught_up(engine, lake, settings)
    assert report.telemetry_rows == 60
    assert report.windows >= 5  # the row cap split the export
    _assert_exactly_once(engine, lake)
    keys = lake.list("raw/telemetry/")
    assert all(k.split("/")[-1].startswith("part-") and k.endswith(".parquet") for k in keys)
    assert {k.split("/")[2] for k in keys} >= {"date=2024-03-30", "date=2024-03-31"}
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


def test_duckdb_over_the_lake_matches_the_database(engine: Engine, tmp_path: Path) -> None:
    settings = _settings(engine, tmp_path, MEDROBOTICS_ARCHIVE_BATCH_ROWS=9)
    lake = LocalLake(settings.lake_dir)
    _ingest(engine, _samples(45))
    archive.run_until_caught_up(engine, lake, settings)
    root = settings.lake_dir / settings.lake_prefix / "telemetry"
    # The query docs/lake.md documents.
    got = duckdb.sql(
        f"SELECT procedure_id, count(*) FROM read_parquet('{root}/**/*.parquet', "
        "hive_partitioning = true) GROUP BY procedure_id ORDER BY procedure_id"
    ).fetchall()
    with engine.connect() as conn:
        want = conn.execute(
            select(telemetry.c.procedure_id, func.count())
            .group_by(telemetry.c.procedure_id)
            .order_by(telemetry.c.procedure_id)
        ).all()
    assert got == [tuple(r) for r in want]
    robots = duckdb.sql(
        f"SELECT DISTINCT robot_id FROM read_parquet('{root}/**/*.parquet', "
        "hive_partitioning = true) ORDER BY 1"
    ).fetchall()
    assert robots == [("robot-0",), ("robot-1",), ("robot-2",)]


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
