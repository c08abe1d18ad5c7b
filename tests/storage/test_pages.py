"""Pages built by PostgreSQL (json_agg) are the typed rows as the service writes them: the same
strings (times included, written alike) and the same numbers (a whole float may read `39`
rather than `39.0`), so an answer reads the same from either database and from a detail."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sqlalchemy import Engine

from medrobotics.storage import outcomes, pages, procedures, robots
from medrobotics.storage.db import reading
from medrobotics.storage.keyset import next_key
from medrobotics.storage.pages import Query
from medrobotics.web import dumps
from tests.fleet import make_fleet, write


def _read(engine: Engine, query: Query) -> pages.Rows:
    with reading(engine) as conn:
        return pages.fetch(conn, query)


def _typed(engine: Engine, query: Query) -> tuple[bytes, Any, list[str], int | None]:
    # The same page statement, its rows read with SQLAlchemy's types and written by orjson.
    with engine.connect() as conn:
        stmt = pages._statement(conn, query)
        result = conn.execute(stmt.stmt, query.values())
        names = tuple(result.keys())
        rows = [dict(zip(names, r, strict=True)) for r in result.all()]
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    shape = query.shape
    flagged = [r[shape.ident] for r in rows if any(r[f] is not None for f in shape.flag)]
    last = {k: rows[-1][k] for k in shape.keys} if more else None
    return dumps(rows), last, flagged, None


@pytest.mark.parametrize("migrated_engine", ["postgresql"], indirect=True)
def test_postgres_pages_are_the_typed_rows_as_written(engine: Engine) -> None:
    fleet = write(engine, make_fleet(n_procedures=60))
    queries = [
        procedures.page(limit=7, phi=False),
        procedures.page(limit=500, phi=True),
        procedures.page(limit=5, phi=False, category="cardiac", status="completed"),
        procedures.page(limit=3, phi=True, facility_id="fac-boston"),
        procedures.page(limit=5, phi=False, surgeon_id="nobody"),
        outcomes.page(limit=9, phi=False),
        outcomes.page(limit=500, phi=True, readmission=False),
        robots.page(limit=3, offset=2),
        robots.page(limit=500, status="operational"),
    ]
    seen_more = seen_flagged = False
    for query in queries:
        got = _read(engine, query)
        assert isinstance(got.items, orjson.Fragment)
        text = orjson.dumps(got.items)
        assert orjson.loads(text) == orjson.loads(_typed(engine, query)[0]), query.shape.name
        _, last, flagged, _ = _typed(engine, query)
        assert got.last == last and got.flagged == flagged
        seen_more |= bool(query.shape.keys) and next_key(got) is not None
        seen_flagged |= bool(flagged)
        hidden = (b'"patient_id"', b'"patient_age"', b'"surgeon_notes"')
        assert query.shape.flag or not any(name in text for name in hidden)
    assert seen_more and seen_flagged
    assert _read(engine, robots.page(limit=500)).total == len(fleet.robots)
    assert _read(engine, robots.page(limit=5, offset=1000)).total == len(fleet.robots)


def test_pages_on_either_database_report_more_and_total(engine: Engine) -> None:
    fleet = write(engine, make_fleet(n_procedures=12))
    first = _read(engine, procedures.page(limit=5))
    assert first.more and next_key(first) is not None
    rest = _read(engine, procedures.page(limit=50, after=next_key(first)))
    assert not rest.more and rest.last is None
    items = (
        orjson.loads(dumps({"a": first.items}))["a"] + orjson.loads(dumps({"a": rest.items}))["a"]
    )
    assert [i["procedure_id"] for i in items] == [
        p.procedure_id
        for p in sorted(
            fleet.procedures, key=lambda p: (p.start_time, p.procedure_id), reverse=True
        )
    ]
    empty = _read(engine, robots.page(limit=5, offset=100))
    assert orjson.loads(dumps({"a": empty.items}))["a"] == [] and empty.total == len(fleet.robots)
