"""The one engine factory: PostgreSQL (psycopg 3) in production, SQLite embedded."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from medrobotics.errors import Unavailable

# Every ingest transaction is bounded: the archiver's watermark trusts that nothing received
# more than this long ago is still uncommitted.
STATEMENT_TIMEOUT_MS = 30_000


POOL_TIMEOUT_S = 2.0
"""The longest a request waits for a pooled connection (MEDROBOTICS_DB_POOL_TIMEOUT)."""


def make_engine(
    url: str, *, pool_size: int = 10, pool_timeout: float = POOL_TIMEOUT_S, **kwargs: Any
) -> Engine:
    """Create an engine for `url` with the pool and session options this platform relies on.

    Every read and write of a service goes through this engine's pool. A request waits at most
    `pool_timeout` seconds for a connection, and a new connection at most as long (rounded up
    to libpq's least, 2 s), so a database outage or an exhausted pool answers 503 at once
    rather than after the load balancer gives up.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            # One file, many threads: SQLite serialises writers itself; wait instead of failing.
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=pool_timeout,
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own BEGIN handling is off (see pragmas); writers take the lock up front so
        # a read-then-write transaction never fails on a lock upgrade.
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        # Request handlers are capped at pool_size threads (see web.cap_threads), so overflow
        # serves only the occasional extra: the archiver, a long NDJSON stream. Overflow
        # connections are opened and closed per use, which costs more than the query.
        max_overflow=max(2, pool_size // 2),
        pool_timeout=pool_timeout,
        # RDS and the ALB drop idle connections; recycle before they do.
        pool_recycle=1800,
        # No pre-ping: it costs a round trip per request; dead connections are detected on
        # use and the whole pool is invalidated, so the next request reconnects.
        pool_pre_ping=False,
        connect_args={**SESSION, "connect_timeout": max(2, math.ceil(pool_timeout))},
        **kwargs,
    )


SESSION: dict[str, Any] = {
    "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
    f" -c idle_in_transaction_session_timeout={STATEMENT_TIMEOUT_MS}"
    # Times read without SQLAlchemy's types (storage.pages) come in the session's zone: UTC.
    " -c TimeZone=UTC",
    "application_name": "medrobotics",
}
"""The options of every PostgreSQL connection (the connect timeout is the engine's)."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Autocommit at the driver level so the "begin" listener controls transactions.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
    cur.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))


def is_postgres(conn: Connection | Engine) -> bool:
    """Tell whether this connection talks to PostgreSQL."""
    return conn.dialect.name == "postgresql"


@contextmanager
def _outages() -> Iterator[None]:
    # A database that does not answer, or a pool with no connection free in time, is the
    # client's "retry later", not a crash.
    try:
        yield
    except (OperationalError, psycopg.OperationalError, PoolTimeout) as exc:
        raise Unavailable("database unavailable") from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise Unavailable("database unavailable") from exc
        raise


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """Open a transaction; database outages surface as Unavailable."""
    with _outages(), engine.connect() as conn:
        conn = conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        with conn.begin():
            yield conn


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """Open a read-only unit of work; database outages surface as Unavailable."""
    with _outages(), engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # No BEGIN/ROLLBACK round trips around reads: each statement sees committed data.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn
