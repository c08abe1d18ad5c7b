"""Shared fixtures: every storage-backed test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from medrobotics import config, logs
from medrobotics.ingestion.app import create_app
from medrobotics.storage import migrate
from medrobotics.storage.db import make_engine
from medrobotics.storage.lake import Lake, LocalLake, S3Lake
from medrobotics.storage.tables import ROLLUPS, metadata
from tests.support.settings import for_engine

PG_ADMIN_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ["sqlite", "postgresql"]


def _pg_reachable() -> bool:
    try:
        eng = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect():
            pass
        eng.dispose()
        return True
    except OperationalError:
        return False


PG_OK = _pg_reachable()


# One file per run: concurrent runs on one machine must not share it.
LOG_FILE = Path(tempfile.mkstemp(prefix="medrobotics-test-log-", suffix=".jsonl")[1])
# Patient identifiers and key material used anywhere in the suite follow these shapes; none
# may ever appear in a log line.
FORBIDDEN_IN_LOGS = (
    re.compile(r"pat-\d+"),
    re.compile(r"patient-\d+"),
    re.compile(r"mrk_[0-9a-f]{16}_"),
    re.compile(r"SECRET PATIENT"),
    re.compile(r"bootstrap-x{10}"),
)


def pytest_configure(config: pytest.Config) -> None:
    # Every log line of the whole run goes to one file, searched at the end.
    stream = LOG_FILE.open("w", encoding="utf-8")
    config.stash[_LOG_STREAM] = stream
    logs.configure(service="tests", fmt="json", level="DEBUG", stream=stream)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stream = session.config.stash.get(_LOG_STREAM, None)
    if stream is None:
        return
    stream.flush()
    text_ = LOG_FILE.read_text(encoding="utf-8")
    leaks = [p.pattern for p in FORBIDDEN_IN_LOGS if p.search(text_)]
    lines = text_.count("\n")
    if leaks:
        print(f"\nLOG LEAK: patterns {leaks} found in {LOG_FILE} ({lines} lines)")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        print(f"\nlog check: {lines} log lines searched, no patient id or key found")
        LOG_FILE.unlink(missing_ok=True)


_LOG_STREAM = pytest.StashKey[Any]()


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("CI") and not PG_OK:
        raise pytest.UsageError(
            f"PostgreSQL is unreachable at {make_url(PG_ADMIN_URL).render_as_string()} "
            "and CI is set: the PostgreSQL half of the suite must run."
        )


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    if not PG_OK:
        pytest.skip("PostgreSQL not reachable (set TEST_DATABASE_URL); CI never skips this")
    name = f"mr_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _url(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    if backend == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'medrobotics.db'}"


@pytest.fixture(scope="session", params=BACKENDS)
def migrated_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """An engine on a migrated database, one per backend for the session."""
    engine = make_engine(_url(request.param, request, tmp_path_factory), pool_size=5)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def clean(engine: Engine) -> None:
    """Empty every table (children first)."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(t.name for t in metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} CASCADE"))
        else:
            # Roll-ups last: deleting their sources runs triggers that subtract from them.
            tables = [t for t in reversed(metadata.sorted_tables) if t not in ROLLUPS]
            for table in (*tables, *ROLLUPS):
                conn.execute(table.delete())


@pytest.fixture
def engine(migrated_engine: Engine) -> Iterator[Engine]:
    """A migrated database, emptied before each test."""
    clean(migrated_engine)
    yield migrated_engine


@pytest.fixture
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (no schema) on the test's backend, for migration tests."""
    backend = request.param
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    base = request.getfixturevalue("pg_url")
    name = f"mr_fresh_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(base).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def settings(engine: Engine, tmp_path: Path) -> config.Settings:
    """Settings pointing at the test's database and a temporary data folder."""
    return for_engine(engine, tmp_path)


GUIDE_SAMPLE = {
    "procedure_id": "test-123",
    "robot_id": "robot-1",
    "timestamp": "2025-10-27T10:00:00",
    "arm_position_x": 100.5,
    "arm_position_y": 200.3,
    "arm_position_z": 150.2,
}


@pytest.fixture
def client(settings: config.Settings, engine: Engine) -> Iterator[TestClient]:
    """The ingestion service on the test's database, lifespan running."""
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API on loopback (moto's standalone server) for the whole session."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    server = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            if proc.poll() is not None:
                pytest.fail("moto_server exited at start")
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("moto_server did not answer")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    """A new, empty bucket on the loopback S3 server."""
    import boto3

    name = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> Lake:
    """The local folder, or a fresh bucket on the loopback S3 server."""
    if request.param == "local":
        return LocalLake(tmp_path / "lake")
    endpoint = request.getfixturevalue("s3_endpoint")
    return S3Lake(request.getfixturevalue("bucket"), endpoint_url=endpoint)


def closed_port_url() -> str:
    """Return an endpoint on loopback where nothing listens (S3 unreachable)."""
    return f"http://127.0.0.1:{_free_port()}"
