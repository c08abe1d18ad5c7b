"""Migrations build the schema from empty, tear it down, and build it again, on both databases."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine, inspect, text

from medrobotics.storage import migrate
from medrobotics.storage.db import make_engine
from medrobotics.storage.tables import POSTGRES_ONLY, metadata

EXPECTED = {
    "robots",
    "procedures",
    "outcomes",
    "maintenance",
    "telemetry",
    "batches",
    "archive_marks",
}


@pytest.mark.parametrize("fresh_url", ["sqlite", "postgresql"], indirect=True)
def test_upgrade_downgrade_reapply(fresh_url: str) -> None:
    engine = make_engine(fresh_url, pool_size=1)
    assert migrate.current(engine) is None

    before, after = migrate.upgrade(engine)
    assert (before, after) == (None, migrate.head())
    assert set(inspect(engine).get_table_names()) >= EXPECTED

    # Up to date: nothing happens.
    assert migrate.upgrade(engine) == (after, after)

    migrate.downgrade(engine, "base")
    assert migrate.current(engine) is None
    assert not EXPECTED & set(inspect(engine).get_table_names())

    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head()
    engine.dispose()


@pytest.mark.parametrize("fresh_url", ["sqlite", "postgresql"], indirect=True)
def test_migrated_schema_matches_table_definitions(fresh_url: str) -> None:
    engine = make_engine(fresh_url, pool_size=1)
    migrate.upgrade(engine)
    insp = inspect(engine)
    for table in metadata.sorted_tables:
        columns = {c["name"] for c in insp.get_columns(table.name)}
        if engine.dialect.name == "postgresql":
            columns -= POSTGRES_ONLY.get(table.name, set())
        assert columns == {c.name for c in table.columns}, table.name
        indexes = {i["name"] for i in insp.get_indexes(table.name)}
        assert {i.name for i in table.indexes} <= indexes, table.name
    engine.dispose()


@pytest.mark.parametrize("fresh_url", ["postgresql"], indirect=True)
def test_telemetry_is_partitioned_on_postgres(fresh_url: str) -> None:
    engine = make_engine(fresh_url, pool_size=1)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        kind = conn.execute(
            text(
                "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'telemetry'::regclass"
            )
        ).scalar()
    assert kind == "r"  # range
    engine.dispose()


@pytest.mark.parametrize("fresh_url", ["postgresql"], indirect=True)
def test_concurrent_upgrades_take_turns_on_postgres(fresh_url: str) -> None:
    """Two deploys start the migration at once: one migrates, the other waits, then finds head.

    PostgreSQL only: the lock is a PostgreSQL advisory lock; an embedded SQLite database is
    migrated by the one process that opens it.
    """
    holder = make_engine(fresh_url, pool_size=1)
    engines = [make_engine(fresh_url, pool_size=1) for _ in range(2)]
    results: list[tuple[str | None, str | None]] = []
    errors: list[BaseException] = []

    def run(engine: Engine) -> None:
        try:
            results.append(migrate.upgrade(engine))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    waiting = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND ((classid::bigint << 32) | objid::bigint) = :id"
    )
    with holder.connect() as lock_conn:
        # The lock is held elsewhere, so both upgrades start and queue behind it.
        lock_conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": migrate.LOCK_ID})
        lock_conn.commit()
        threads = [threading.Thread(target=run, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        queued = 0
        for _ in range(600):  # bounded: at most about a minute
            queued = lock_conn.execute(waiting, {"id": migrate.LOCK_ID}).scalar_one()
            lock_conn.commit()
            if queued == 2 or errors or not any(t.is_alive() for t in threads):
                break
            time.sleep(0.1)
        assert not errors, errors
        assert queued == 2, "both upgrades must wait for the migration lock"
        assert migrate.current(holder) is None, "nothing migrated while the lock is held"
        lock_conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": migrate.LOCK_ID})
        lock_conn.commit()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors, errors
    head = migrate.head()
    assert sorted(results, key=str) == sorted([(None, head), (head, head)], key=str)
    with holder.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    for engine in (holder, *engines):
        engine.dispose()
