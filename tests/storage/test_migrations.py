"""Migrations build the schema from empty, tear it down, and build it again, on both databases."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, insert, inspect, select, text
from typer.testing import CliRunner

from medrobotics.cli import app as cli
from medrobotics.storage import migrate, partitions
from medrobotics.storage.db import make_engine
from medrobotics.storage.tables import metadata, telemetry, telemetry_summary

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


def _partitions(conn: Connection) -> set[str]:
    return set(
        conn.execute(
            text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'telemetry'::regclass"
            )
        ).scalars()
    )


def _sample(proc: str, at: datetime) -> dict[str, Any]:
    return {"procedure_id": proc, "robot_id": "robot-1", "timestamp": at, "arm_position_x": 1.5}


@pytest.mark.parametrize("fresh_url", ["postgresql"], indirect=True)
def test_default_partition_up_and_down(fresh_url: str) -> None:
    engine = make_engine(fresh_url, pool_size=1)
    migrate.upgrade(engine, "0007")
    with engine.begin() as conn:
        # A partition made on demand before 0008, with its rows.
        conn.execute(
            text(
                "CREATE TABLE telemetry_y2024m02 PARTITION OF telemetry FOR VALUES "
                "FROM ('2024-02-01 00:00:00+00') TO ('2024-03-01 00:00:00+00')"
            )
        )
        conn.execute(insert(telemetry), _sample("p-on-demand", datetime(2024, 2, 9, tzinfo=UTC)))

    migrate.upgrade(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        made = _partitions(conn)
        ahead = {partitions.name(m) for m in partitions.months_from(now, 3)}
        assert made == {"telemetry_default", "telemetry_y2024m02", *ahead}
        # Months without a partition of their own land in the DEFAULT one.
        conn.execute(
            insert(telemetry),
            [
                _sample("p-old", datetime(2003, 5, 6, tzinfo=UTC)),
                _sample("p-old", datetime(2003, 5, 7, tzinfo=UTC)),
                _sample("p-old", datetime(2011, 12, 31, 23, tzinfo=UTC)),
                _sample("p-now", now),
            ],
        )
        summary = conn.execute(select(telemetry_summary)).mappings().all()
        assert sorted(s["sample_count"] for s in summary) == [1, 1, 3]
        in_default = conn.execute(text("SELECT count(*) FROM telemetry_default")).scalar()
        assert in_default == 3

    migrate.downgrade(engine, "0007")
    with engine.connect() as conn:
        # Each month the DEFAULT partition held has its own again, with its rows.
        assert _partitions(conn) == {"telemetry_y2003m05", "telemetry_y2011m12"} | (
            made - {"telemetry_default"}
        )
        rows = conn.execute(
            text('SELECT tableoid::regclass::text, procedure_id, "timestamp" FROM telemetry')
        ).all()
        assert sorted(r[0] for r in rows) == [
            "telemetry_y2003m05",
            "telemetry_y2003m05",
            "telemetry_y2011m12",
            "telemetry_y2024m02",
            partitions.name((now.year, now.month)),
        ]
        # Moved below the parent's triggers: the summary still counts each sample once.
        assert conn.execute(select(telemetry_summary)).mappings().all() == summary

    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert "telemetry_default" in _partitions(conn)
        assert conn.execute(select(func.count()).select_from(telemetry)).scalar() == 5
        assert conn.execute(text("SELECT count(*) FROM telemetry_default")).scalar() == 0
    engine.dispose()


def _schema(conn: Connection) -> dict[str, Any]:
    """The schema objects by name and definition: columns, triggers, functions."""
    tables = ("robots", "procedures", "outcomes")
    if conn.dialect.name == "sqlite":
        rows = conn.execute(text("SELECT type, name, sql FROM sqlite_master ORDER BY name"))
        return {"objects": [tuple(r) for r in rows]}
    insp = inspect(conn)
    columns = {t: sorted(c["name"] for c in insp.get_columns(t)) for t in tables}
    triggers = conn.execute(
        text(
            "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE NOT tgisinternal ORDER BY 1, 2"
        )
    )
    functions = conn.execute(
        text(
            "SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public' AND p.prokind = 'f' ORDER BY 1, 2"
        )
    )
    return {
        "columns": columns,
        "triggers": [tuple(r) for r in triggers],
        "functions": [tuple(r) for r in functions],
    }


DOCUMENTS = {
    "procedures": ("page_doc", "outcome_doc", "outcome_page_doc"),
    "outcomes": ("page_doc",),
    "robots": ("page_doc",),
}
"""The stored page JSON of migrations 0006 and 0007, which 0009 drops."""
WRITERS = {
    "procedures_docs",
    "procedures_page_doc",
    "procedures_outcome_doc",
    "outcomes_docs",
    "outcomes_page_doc",
    "outcomes_link",
    "outcomes_unlink_all",
    "robots_docs",
    "robots_page_doc",
}
"""Their triggers and functions."""


def _write(conn: Connection, n: int) -> None:
    start = datetime(2024, 6, 1, 8, n, tzinfo=UTC)
    conn.execute(
        text(
            "INSERT INTO robots (robot_id, robot_model, facility_id) "
            "VALUES (:r, 'Versius', 'fac-1')"
        ),
        {"r": f"robot-{n}"},
    )
    conn.execute(
        text(
            "INSERT INTO procedures (procedure_id, robot_id, procedure_category, start_time, "
            "status, patient_id) VALUES (:p, :r, 'cardiac', :t, 'completed', 'pat-1')"
        ),
        {"p": f"proc-{n}", "r": f"robot-{n}", "t": start},
    )
    conn.execute(
        text(
            "INSERT INTO outcomes (procedure_id, success_status, complications) "
            "VALUES (:p, 'successful', '[]')"
        ),
        {"p": f"proc-{n}"},
    )


@pytest.mark.parametrize("fresh_url", ["sqlite", "postgresql"], indirect=True)
def test_page_documents_dropped_and_restored(fresh_url: str) -> None:
    """0009 drops the stored page JSON; its downgrade restores 0006's and 0007's exactly."""
    engine = make_engine(fresh_url, pool_size=1)
    postgres = engine.dialect.name == "postgresql"
    migrate.upgrade(engine, "0008")
    with engine.begin() as conn:
        before = _schema(conn)
        _write(conn, 1)
    if postgres:
        assert all(set(cols) <= set(before["columns"][t]) for t, cols in DOCUMENTS.items())

    migrate.upgrade(engine, "0009")
    with engine.begin() as conn:
        at_head = _schema(conn)
        if postgres:
            for table, cols in DOCUMENTS.items():
                assert not set(cols) & set(at_head["columns"][table]), table
            names = {f[0] for f in at_head["functions"]} | {t[1] for t in at_head["triggers"]}
            assert not names & WRITERS, names & WRITERS
        else:
            assert at_head == before
        # Written while no documents are kept: the downgrade writes theirs.
        _write(conn, 2)
        conn.execute(text("UPDATE procedures SET status = 'aborted' WHERE procedure_id = 'proc-1'"))

    migrate.downgrade(engine, "0008")
    with engine.begin() as conn:
        assert _schema(conn) == before
        if postgres:
            built = conn.execute(
                text(
                    "SELECT p.procedure_id, p.page_doc = procedures_page_doc(p), "
                    "p.outcome_page_doc, o.page_doc = outcomes_page_doc(o), "
                    "r.page_doc = robots_page_doc(r), p.page_doc FROM procedures p "
                    "JOIN outcomes o USING (procedure_id) JOIN robots r USING (robot_id) "
                    "ORDER BY 1"
                )
            ).all()
            assert [(r[0], r[1], r[3], r[4]) for r in built] == [
                ("proc-1", True, True, True),
                ("proc-2", True, True, True),
            ]
            assert '"aborted"' in built[0][5] and '"robot-2"' in built[1][2]
            assert all("pat-1" not in r[2] + r[5] for r in built)
            # The triggers are back: a write keeps its document.
            _write(conn, 3)
            doc = conn.execute(
                text("SELECT outcome_page_doc FROM procedures WHERE procedure_id = 'proc-3'")
            ).scalar_one()
            assert '"successful"' in doc and '"robot-3"' in doc

    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head()
    with engine.connect() as conn:
        again = _schema(conn)
    if postgres:
        for table, cols in DOCUMENTS.items():
            assert not set(cols) & set(again["columns"][table]), table
    engine.dispose()


@pytest.mark.parametrize("fresh_url", ["sqlite"], indirect=True)
def test_partitions_command_on_the_embedded_database(
    fresh_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", fresh_url)
    runner = CliRunner()
    refused = runner.invoke(cli, ["db", "partitions"])
    assert refused.exit_code == 1 and "db upgrade" in refused.output
    upgraded = runner.invoke(cli, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert "none on the embedded database" in upgraded.output
    result = runner.invoke(cli, ["db", "partitions"])
    assert result.exit_code == 0 and "none on the embedded database" in result.output


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
