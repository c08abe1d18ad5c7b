"""Migrations build the schema from empty, tear it down, and build it again, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

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
