"""Stored page documents (PostgreSQL, migrations 0006 and 0007) give exactly the pages json_agg
builds, kept on writes."""

from __future__ import annotations

import dataclasses
import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, select, text

from medrobotics.domain.outcomes import OutcomeIn
from medrobotics.domain.procedures import ProcedureIn
from medrobotics.storage import migrate, outcomes, pages, procedures, robots
from medrobotics.storage.db import make_engine, transaction
from medrobotics.storage.pages import Query
from medrobotics.storage.tables import outcome_days, procedure_days, robot_days, robot_months
from tests.fleet import make_fleet, write
from tests.storage.test_analytics_rollups import concurrent_writes

POSTGRES = pytest.mark.parametrize("migrated_engine", ["postgresql"], indirect=True)

ROLLUPS = (procedure_days, robot_days, robot_months, outcome_days)


def _page(engine: Engine, query: Query) -> tuple[bytes, pages.Rows]:
    with engine.connect() as conn:
        rows = pages.fetch(conn, query)
    return orjson.dumps(rows.items), rows


def _built(query: Query) -> Query:
    # The same page, built by json_agg from the columns instead of read from the documents.
    shape = dataclasses.replace(query.shape, doc=None, name=(query.shape.name, "built"))
    return dataclasses.replace(query, shape=shape)


def _queries(limit: int, after: Any = None) -> list[Query]:
    since = datetime(2000, 1, 1, tzinfo=UTC)
    return [
        procedures.page(limit=limit, after=after, phi=False),
        procedures.page(limit=limit, after=after, phi=False, category="cardiac"),
        outcomes.page(limit=limit, after=after, phi=False),
        outcomes.page(limit=limit, after=after, phi=False, category="general", start=since),
        outcomes.page(limit=limit, after=after, phi=False, readmission=True),
        outcomes.page(limit=limit, after=after, phi=False, success_status="successful"),
        robots.page(limit=limit),
        robots.page(limit=limit, offset=2),
        robots.page(limit=limit, status="operational"),
    ]


def _assert_same_pages(engine: Engine) -> int:
    """Compare every page both ways; return how many items the pages held."""
    shown = 0
    for limit in (1, 7, 500):
        for query in _queries(limit):
            stored, rows = _page(engine, query)
            built, expected = _page(engine, _built(query))
            assert query.shape.doc is not None
            assert stored == built, query.shape.name
            assert (rows.more, rows.last, rows.total) == (
                expected.more,
                expected.last,
                expected.total,
            )
            shown += len(orjson.loads(stored))
    return shown


@POSTGRES
def test_documents_match_built_pages_after_inserts_and_updates(engine: Engine) -> None:
    fleet = write(engine, make_fleet(n_procedures=60))
    assert _assert_same_pages(engine) > 60

    rng = random.Random(5)
    # Re-sends through the write path change fields and times...
    changed = [
        ProcedureIn.model_validate(
            p.model_dump() | {"complexity_score": round(rng.uniform(1, 5), 3), "status": "aborted"}
        )
        for p in fleet.procedures[::3]
    ]
    notes = [
        OutcomeIn.model_validate(
            o.model_dump() | {"blood_loss_ml": 0.1 + 0.2, "surgeon_notes": "seen by Dr. X"}
        )
        for o in fleet.outcomes[::2]
    ]
    with transaction(engine) as conn:
        procedures.upsert_many(conn, items=changed)
        outcomes.upsert_many(conn, items=notes)
    # ...and a writer whose session shows times and floats its own way changes more.
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL timezone TO 'Asia/Kolkata'"))
        conn.execute(text("SET LOCAL extra_float_digits TO -3"))
        conn.execute(
            text(
                "UPDATE procedures SET start_time = start_time - interval '90 minutes', "
                "duration_minutes = 1.0 / 3 WHERE procedure_id IN ('proc-001', 'proc-002')"
            )
        )
        conn.execute(text("UPDATE outcomes SET hospital_stay_days = 2.0 / 3"))
        conn.execute(text("UPDATE robots SET status = 'maintenance', updated_at = now()"))
    assert _assert_same_pages(engine) > 60

    with engine.connect() as conn:
        shown = conn.execute(
            text("SELECT page_doc FROM procedures WHERE procedure_id = 'proc-001'")
        ).scalar_one()
    doc = orjson.loads(shown)
    assert doc["duration_minutes"] == 1 / 3  # the shortest exact form, whatever the session
    assert doc["start_time"].endswith("+00:00")
    assert not {"patient_id", "patient_age", "patient_gender"} & set(doc)
    with engine.connect() as conn:
        robot = orjson.loads(
            conn.execute(
                text("SELECT page_doc FROM robots WHERE robot_id = 'robot-1'")
            ).scalar_one()
        )
    assert robot["status"] == "maintenance" and robot["updated_at"].endswith("+00:00")


@POSTGRES
def test_pages_without_rows_and_with_patient_fields(engine: Engine) -> None:
    for query in _queries(5):
        stored, rows = _page(engine, query)
        assert stored == b"[]" and not rows.more
    write(engine, make_fleet(n_procedures=12))
    with_phi = procedures.page(limit=50, phi=True)
    assert with_phi.shape.doc is None  # patient fields: built by json_agg, rows flagged
    _, rows = _page(engine, with_phi)
    assert rows.flagged


@pytest.mark.parametrize("fresh_url", ["postgresql"], indirect=True)
def test_upgrade_writes_documents_of_existing_rows(fresh_url: str) -> None:
    engine = make_engine(fresh_url, pool_size=2)
    migrate.upgrade(engine, "0005")
    write(engine, make_fleet(n_procedures=40))
    with engine.connect() as conn:
        before = [conn.execute(select(t).order_by(*t.primary_key)).all() for t in ROLLUPS]
    migrate.upgrade(engine, "0008")  # 0010 empties the roll-ups for their job
    assert _assert_same_pages(engine) > 40
    with engine.connect() as conn:
        after = [conn.execute(select(t).order_by(*t.primary_key)).all() for t in ROLLUPS]
        for table in ("procedures", "robots"):
            missing = text(f"SELECT count(*) FROM {table} WHERE page_doc IS NULL")
            assert conn.execute(missing).scalar() == 0, table
    assert after == before  # the backfill moved no roll-up
    engine.dispose()


@POSTGRES
def test_outcome_pages_follow_deletes_moves_and_truncate(engine: Engine) -> None:
    fleet = write(engine, make_fleet(n_procedures=40))
    with_outcome = [o.procedure_id for o in fleet.outcomes]
    with engine.begin() as conn:
        # A procedure moves: its outcome's page object follows, the outcome's part kept.
        conn.execute(
            text(
                "UPDATE procedures SET start_time = start_time - interval '7 days', "
                "robot_id = 'robot-moved', procedure_category = 'cardiac' "
                "WHERE procedure_id = :a"
            ),
            {"a": with_outcome[0]},
        )
        conn.execute(text("DELETE FROM outcomes WHERE procedure_id = :b"), {"b": with_outcome[1]})
        # Deleting a procedure deletes its outcome first (migration 0005).
        conn.execute(text("DELETE FROM procedures WHERE procedure_id = :c"), {"c": with_outcome[2]})
    _assert_same_pages(engine)
    with engine.connect() as conn:
        moved = conn.execute(
            text("SELECT outcome_page_doc FROM procedures WHERE procedure_id = :a"),
            {"a": with_outcome[0]},
        ).scalar_one()
    assert orjson.loads(moved)["robot_id"] == "robot-moved"
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE outcomes"))
    assert _assert_same_pages(engine) > 0  # the procedures' pages
    with engine.connect() as conn:
        left = conn.execute(text("SELECT count(outcome_page_doc) FROM procedures")).scalar()
    assert left == 0


@POSTGRES
def test_concurrent_writers_keep_documents_exact(engine: Engine) -> None:
    errors = concurrent_writes(engine, first_seed=20)
    assert not errors, errors
    assert _assert_same_pages(engine) > 100
