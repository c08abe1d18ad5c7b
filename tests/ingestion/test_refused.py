"""Data the database refuses: a 422 for the request that sent it, and only for that one.

The refusal comes from a trigger installed for these tests, so that no validation rule, however
strict, can catch the marked sample before the database does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from medrobotics.domain.procedures import ProcedureIn
from medrobotics.domain.telemetry import COLUMNS
from medrobotics.errors import InvalidInput, Unavailable
from medrobotics.ingestion import flows
from medrobotics.storage.db import transaction
from tests import factories as f
from tests.conftest import GUIDE_SAMPLE

MARK = "refused-by-db"
JSON = {"content-type": "application/json"}
ROUNDS = 6
POSTS = 24
# Where the refused request stands among the round's posts: first (likely alone in the first
# flush) as well as in the middle and last (queued behind the held flushes, so shared).
BAD_AT = (0, 23, 11, 5, 17, 2)

PG_TRIGGER = (
    "CREATE TABLE telemetry_attempts (procedure_id text, timestamp timestamptz)",
    """CREATE FUNCTION refuse_marked_telemetry() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.tool_type = 'refused-by-db' THEN
        RAISE EXCEPTION 'tool_type refused' USING ERRCODE = '22023', COLUMN = 'tool_type';
      END IF;
      INSERT INTO telemetry_attempts VALUES (NEW.procedure_id, NEW.timestamp);
      RETURN NEW;
    END $$""",
    "CREATE TRIGGER refuse_marked BEFORE INSERT ON telemetry "
    "FOR EACH ROW EXECUTE FUNCTION refuse_marked_telemetry()",
)
PG_UNDO = (
    "DROP TRIGGER refuse_marked ON telemetry",
    "DROP FUNCTION refuse_marked_telemetry()",
    "DROP TABLE telemetry_attempts",
)
SQLITE_TRIGGER = (
    "CREATE TABLE telemetry_attempts (procedure_id TEXT, timestamp TEXT)",
    "CREATE TRIGGER refuse_marked BEFORE INSERT ON telemetry "
    "WHEN NEW.tool_type = 'refused-by-db' BEGIN SELECT RAISE(ABORT, 'tool_type refused'); END",
    "CREATE TRIGGER log_attempt BEFORE INSERT ON telemetry "
    "BEGIN INSERT INTO telemetry_attempts VALUES (NEW.procedure_id, NEW.timestamp); END",
)
SQLITE_UNDO = (
    "DROP TRIGGER refuse_marked",
    "DROP TRIGGER log_attempt",
    "DROP TABLE telemetry_attempts",
)


@pytest.fixture
def refusing(engine: Engine) -> Iterator[Engine]:
    """The telemetry table refuses samples whose tool_type is MARK; every other sample written
    is logged to telemetry_attempts (a committed write, each time it is committed)."""
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        for statement in PG_TRIGGER if postgres else SQLITE_TRIGGER:
            conn.exec_driver_sql(statement)
    yield engine
    with engine.begin() as conn:
        for statement in PG_UNDO if postgres else SQLITE_UNDO:
            conn.exec_driver_sql(statement)


def sample(n: int, *, bad: bool = False, procedure: str = "proc-1") -> dict[str, Any]:
    ms = n % 1000
    return GUIDE_SAMPLE | {
        "procedure_id": procedure,
        "timestamp": f"2025-10-27T10:{n // 60000 % 60:02d}:{n // 1000 % 60:02d}.{ms:03d}Z",
        "tool_type": MARK if bad else "forceps",
    }


def scalar(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


@contextmanager
def writes_held(engine: Engine) -> Iterator[None]:
    """Hold the database's write lock: the writer's flushes wait, new requests queue behind."""
    with transaction(engine) as conn:  # on SQLite, BEGIN IMMEDIATE takes the write lock
        if engine.dialect.name == "postgresql":
            conn.execute(text("LOCK TABLE telemetry IN SHARE MODE"))
        yield


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60  # a guard against hanging, not a measure
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def assert_refused(response: Any, engine: Engine) -> None:
    """The refusal's answer: a 422 naming the field where the database says which."""
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid"
    assert error["request_id"] == response.headers["x-request-id"]
    assert MARK not in response.text  # the value is never echoed
    if engine.dialect.name == "postgresql":  # the trigger names the column (RAISE .. COLUMN)
        assert error["details"] == [
            {
                "field": "tool_type",
                "message": "refused by the database: invalid parameter value",
                "index": None,
            }
        ]
    else:  # SQLite gives the trigger's own words
        assert error["message"] == "the database refused the record: tool_type refused"


def test_one_refused_request_among_concurrent_ones_fails_alone(
    client: TestClient, refusing: Engine
) -> None:
    app: Any = client.app
    writer = app.state.ingest.writer
    isolated = writer.isolated
    with ThreadPoolExecutor(POSTS) as pool:
        for r, bad in enumerate(BAD_AT[:ROUNDS]):
            bodies = [sample(r * 100 + n, bad=n == bad) for n in range(POSTS)]
            with writes_held(refusing):
                before = writer.submitted
                futures = [
                    pool.submit(client.post, "/ingest/telemetry", json=body) for body in bodies
                ]
                wait_for(lambda b=before: writer.submitted - b == POSTS, "all posts queued")
            answers = [f.result() for f in futures]
            for n, answer in enumerate(answers):
                if n == bad:
                    assert_refused(answer, refusing)
                else:
                    assert answer.status_code == 201, answer.text
    good = ROUNDS * (POSTS - 1)
    assert scalar(refusing, "SELECT count(*) FROM telemetry") == good
    assert scalar(refusing, f"SELECT count(*) FROM telemetry WHERE tool_type = '{MARK}'") == 0
    # Each good sample's write was committed once: none was written again after its answer.
    assert scalar(refusing, "SELECT count(*) FROM telemetry_attempts") == good
    keys = (
        "SELECT count(*) FROM (SELECT DISTINCT procedure_id, timestamp FROM telemetry_attempts) k"
    )
    assert scalar(refusing, keys) == good
    # The refused request shared a flush with good ones (it failed, then was written in parts).
    assert writer.isolated > isolated


def test_a_flush_on_a_database_outage_is_not_retried_per_request(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def down(_engine: Engine, _entity: str, items: list[Any], **_: Any) -> int:
        calls.append(len(items))
        gate.wait(60)  # holds the first flushes while the other posts queue behind them
        raise Unavailable("database unavailable")

    monkeypatch.setattr(flows, "write", down)
    writer = client.app.state.ingest.writer  # type: ignore[attr-defined]
    before = writer.submitted
    with ThreadPoolExecutor(POSTS) as pool:
        futures = [
            pool.submit(client.post, "/ingest/telemetry", json=sample(n)) for n in range(POSTS)
        ]
        wait_for(lambda: writer.submitted - before == POSTS, "all posts queued")
        gate.set()
        answers = [f.result() for f in futures]
    assert {a.status_code for a in answers} == {503}
    assert all(a.headers["retry-after"] == "5" for a in answers)
    assert all(a.json()["error"]["code"] == "unavailable" for a in answers)
    # One attempt per flush, never one per request.
    assert sum(calls) == POSTS
    assert len(calls) < POSTS
    assert writer.isolated == 0


def batch(records: list[dict[str, Any]]) -> tuple[str, bytes, dict[str, str]]:
    return "/ingest/batch", json.dumps({"type": "telemetry", "records": records}).encode(), JSON


def ndjson(records: list[dict[str, Any]]) -> tuple[str, bytes, dict[str, str]]:
    body = b"\n".join(json.dumps(r).encode() for r in records)
    return "/ingest/batch?type=telemetry", body, {"content-type": "application/x-ndjson"}


def array(records: list[dict[str, Any]]) -> tuple[str, bytes, dict[str, str]]:
    return "/ingest/telemetry", json.dumps(records).encode(), JSON


@pytest.mark.parametrize("form", [batch, ndjson, array], ids=lambda f: f.__name__)
def test_every_write_path_answers_a_refusal_with_a_422(
    client: TestClient, refusing: Engine, form: Callable[..., tuple[str, bytes, dict[str, str]]]
) -> None:
    records = [sample(n, bad=n == 7) for n in range(10)]
    path, body, headers = form(records)
    response = client.post(path, content=body, headers=headers)
    assert_refused(response, refusing)
    assert scalar(refusing, "SELECT count(*) FROM telemetry") == 0
    good = client.post(path, content=form([sample(n) for n in range(10)])[1], headers=headers)
    assert good.status_code == 201, good.text
    assert scalar(refusing, "SELECT count(*) FROM telemetry_attempts") == 10


def test_a_single_sample_refused_is_answered_once(client: TestClient, refusing: Engine) -> None:
    writer: Any = client.app.state.ingest.writer  # type: ignore[attr-defined]
    before = writer.submitted
    body = json.dumps(sample(1, bad=True)).encode()
    r = client.post("/ingest/telemetry", content=body, headers=JSON | {"x-request-id": "ref-1"})
    assert_refused(r, refusing)
    assert r.json()["error"]["request_id"] == "ref-1"
    assert writer.submitted - before == 1  # one write tried: none replayed
    assert scalar(refusing, "SELECT count(*) FROM telemetry") == 0


def _row(n: int, **values: Any) -> tuple[Any, ...]:
    fields = {c: None for c in COLUMNS} | {"procedure_id": "proc-1", "robot_id": "robot-1"}
    fields |= {"timestamp": datetime(2025, 10, 27, 10, n, tzinfo=UTC)} | values
    return tuple(fields[c] for c in COLUMNS)


@pytest.mark.parametrize("migrated_engine", ["postgresql"], indirect=True)
def test_postgres_refusals_name_the_column_when_it_says_which(engine: Engine) -> None:
    # Both pass no schema rule of their own here (the rows skip validation); SQLite stores them.
    with pytest.raises(InvalidInput) as nul:
        flows.write(engine, "telemetry", [_row(0), _row(1, tool_type="for\x00ceps")])
    assert nul.value.message == "the database refused tool_type: character not in repertoire"
    assert [d["field"] for d in nul.value.details] == ["tool_type"]
    # The procedure's telemetry summary sums the channel: the sum overflows, in a trigger.
    with pytest.raises(InvalidInput) as overflow:
        flows.write(engine, "telemetry", [_row(n, arm_position_x=1.7e308) for n in range(2)])
    assert overflow.value.message == "the database refused the record: numeric value out of range"
    assert overflow.value.details == []
    assert scalar(engine, "SELECT count(*) FROM telemetry") == 0


@pytest.mark.parametrize("migrated_engine", ["postgresql"], indirect=True)
def test_a_refusal_through_sqlalchemy_is_a_422_too(engine: Engine) -> None:
    # psycopg refuses a NUL in text before sending it; SQLAlchemy wraps that refusal.
    item = ProcedureIn.model_validate_json(json.dumps(f.procedure(1)))
    item = item.model_copy(update={"surgeon_name": "Dr.\x00Grey"})
    with pytest.raises(InvalidInput) as refused:
        flows.write(engine, "procedures", [item])
    assert refused.value.message == "the database refused the record: cannot be stored"
    assert "Grey" not in str(refused.value)
    assert scalar(engine, "SELECT count(*) FROM procedures") == 0
