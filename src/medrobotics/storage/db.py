"""The one engine factory: PostgreSQL (psycopg 3) in production, SQLite embedded."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from sqlalchemy import Connection, Engine, Select, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from medrobotics.errors import Unavailable
from medrobotics.storage import pages
from medrobotics.storage.pages import Query, Rows

# Every ingest transaction is bounded: the archiver's watermark trusts that nothing received
# more than this long ago is still uncommitted.
STATEMENT_TIMEOUT_MS = 30_000


def make_engine(url: str, *, pool_size: int = 10, **kwargs: Any) -> Engine:
    """Create an engine for `url` with the pool and session options this platform relies on."""
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
        # Fail fast when the pool is exhausted: a 503 beats a request hanging past the ALB.
        pool_timeout=10,
        # RDS and the ALB drop idle connections; recycle before they do.
        pool_recycle=1800,
        # No pre-ping: it costs a round trip per request; dead connections are detected on
        # use and the whole pool is invalidated, so the next request reconnects.
        pool_pre_ping=False,
        connect_args=SESSION,
        **kwargs,
    )


SESSION: dict[str, Any] = {
    "connect_timeout": 5,
    "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
    f" -c idle_in_transaction_session_timeout={STATEMENT_TIMEOUT_MS}"
    # Pages built by PostgreSQL write times in the session's zone: always UTC.
    " -c TimeZone=UTC",
    "application_name": "medrobotics",
}
"""The options of every PostgreSQL connection, pooled by the engine or by the async pool."""


def make_pool(engine: Engine, *, size: int) -> AsyncConnectionPool[Any] | None:
    """Create (unopened) the async connection pool the API reads through; None off PostgreSQL.

    Reads on the event loop cost no thread hand-off per request, which with one worker was a
    large share of a page's time.
    """
    if engine.dialect.name != "postgresql":
        return None
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return AsyncConnectionPool(
        url,
        min_size=1,
        max_size=size,
        kwargs={**SESSION, "autocommit": True},
        open=False,
        # Fail fast when the pool is exhausted: a 503 beats a request hanging past the ALB.
        timeout=10,
        max_idle=1800,
        name="api-reads",
    )


class Reader:
    """Runs reads: on PostgreSQL over the async pool, elsewhere in a worker thread."""

    def __init__(self, engine: Engine, pool: AsyncConnectionPool[Any] | None) -> None:
        self.engine = engine
        self.pool = pool

    async def page(self, query: Query) -> Rows:
        """Read one page."""
        if self.pool is None:
            return await anyio.to_thread.run_sync(self._page, query)
        async with self._connection() as conn:
            return await pages.fetch_async(conn, query)

    async def first(self, stmt: Select[Any], params: dict[str, Any]) -> Mapping[str, Any] | None:
        """Return the first row of `stmt` (built once, reused) as a mapping, or None."""
        if self.pool is None:
            return await anyio.to_thread.run_sync(self._first, stmt, params)
        async with self._connection() as conn:
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(pages.postgres_sql(stmt), params)
            return await cur.fetchone()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        if self.pool is None:
            raise RuntimeError("no async pool off PostgreSQL")
        with _outages():
            async with self.pool.connection() as conn:
                yield conn

    def _page(self, query: Query) -> Rows:
        with reading(self.engine) as conn:
            return pages.fetch(conn, query)

    def _first(self, stmt: Select[Any], params: dict[str, Any]) -> Mapping[str, Any] | None:
        with reading(self.engine) as conn:
            row = conn.execute(stmt, params).mappings().first()
            return dict(row) if row is not None else None


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
    # A database that does not answer is the client's "retry later", not a crash.
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
