"""The one engine factory: PostgreSQL (psycopg 3) in production, SQLite embedded."""

from __future__ import annotations

import asyncio
import contextvars
import math
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from sqlalchemy import Connection, Engine, Select, create_engine, event
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
        # Request handlers run on pool_size threads (see `threads` below), so overflow
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


def driver_row(conn: Connection, sql: str, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """Run compiled PostgreSQL `sql` through the driver's own cursor; return its first row.

    For the hottest reads (a page, a procedure's detail): SQLAlchemy's execution and result
    objects cost as much CPU as the rest of such a request's Python work (docs/design.md).
    """
    driver: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    try:
        row: tuple[Any, ...] | None = driver.execute(sql, values).fetchone()
    except psycopg.OperationalError:
        conn.invalidate()  # as SQLAlchemy would: a broken connection never returns to the pool
        raise
    return row


_compiled: dict[tuple[str, Select[Any]], tuple[str, tuple[str, ...]]] = {}


def first(conn: Connection, stmt: Select[Any], values: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the first row of `stmt` by column key, or None.

    `stmt` is built once (cached by its caller) and its columns need no conversion by
    SQLAlchemy's types on PostgreSQL, whose driver returns the same values: there it is
    compiled once and run by `driver_row`. tests/storage/test_db.py holds both ways equal.
    """
    if conn.dialect.name != "postgresql":
        found = conn.execute(stmt, dict(values)).mappings().first()
        return dict(found) if found is not None else None
    key = (conn.dialect.name, stmt)
    compiled = _compiled.get(key)
    if compiled is None:
        sql = stmt.compile(dialect=conn.dialect).string
        compiled = _compiled[key] = (sql, tuple(str(c.key) for c in stmt.selected_columns))
    row = driver_row(conn, compiled[0], values)
    return dict(zip(compiled[1], row, strict=True)) if row is not None else None


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """Open a read-only unit of work; database outages surface as Unavailable."""
    with _outages(), engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # No BEGIN/ROLLBACK round trips around reads: each statement sees committed data.
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        yield conn


P = ParamSpec("P")
T = TypeVar("T")

_threads: weakref.WeakKeyDictionary[Engine, ThreadPoolExecutor] = weakref.WeakKeyDictionary()
_threads_lock = threading.Lock()


def threads(engine: Engine) -> ThreadPoolExecutor:
    """Return the threads that do `engine`'s blocking work: one per pooled connection.

    More threads than connections would only wait inside the pool. A service's handlers are
    `async` and hand their database work here, one hop per request: FastAPI's thread pool
    for `def` routes queues its waiters in the event loop (an anyio capacity limiter), which
    cost a page about a quarter of its CPU under load (docs/design.md, The read path).
    """
    found = _threads.get(engine)
    if found is None:
        with _threads_lock:
            found = _threads.get(engine)
            if found is None:
                size = getattr(engine.pool, "size", lambda: 4)()
                found = ThreadPoolExecutor(max(1, size), thread_name_prefix="db")
                _threads[engine] = found
    return found


async def run(engine: Engine, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run the blocking `fn` on one of `engine`'s threads, in the caller's context (log ids).

    The answer comes back as `loop.run_in_executor` would bring it, without the concurrent
    future chained to an asyncio one: one callback into the loop per request.

    If the caller is cancelled (a client gone, a shutdown), work not yet begun never runs,
    and work already running is waited for before the cancellation goes on: what the caller
    does next (an NDJSON stream's rollback, say) never overlaps it on the same connection.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def work() -> None:
        try:
            result = context.run(fn, *args, **kwargs)
        except BaseException as exc:
            loop.call_soon_threadsafe(_settle, future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, future, result, None)

    job = threads(engine).submit(work)
    try:
        return await future
    except asyncio.CancelledError:
        if not job.cancel():  # begun: its thread still holds the connection
            await _outlast(job)
        raise


async def _outlast(job: Future[None]) -> None:
    # Wait for `job` to end, whatever cancellations arrive meanwhile (the caller re-raises).
    done = asyncio.wrap_future(job)
    while not done.done():
        with suppress(asyncio.CancelledError):
            await asyncio.shield(done)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.cancelled():  # the request went away (a client gone): nobody awaits the answer
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


async def read(
    engine: Engine, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """Run the query `fn(conn, ...)` in a read-only unit of work on one of `engine`'s threads."""
    return await run(engine, _read, engine, lambda conn: fn(conn, *args, **kwargs))


def _read(engine: Engine, query: Callable[[Connection], T]) -> T:
    with reading(engine) as conn:
        return query(conn)
