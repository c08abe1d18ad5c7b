"""Rows read through the driver's cursor (`db.first`) are the rows SQLAlchemy reads.

On PostgreSQL the procedure detail's statement runs as compiled SQL on psycopg's cursor; the
values must be what SQLAlchemy's types give (times, dates, JSON lists, nulls), so the detail
reads the same whichever way it is read, and the same as on SQLite.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine

from medrobotics.storage import procedures
from medrobotics.storage.db import first, run, threads
from tests.fleet import make_fleet, make_samples, write


def _typed(engine: Engine, procedure_id: str) -> dict[str, Any] | None:
    with engine.connect() as conn:
        row = conn.execute(procedures.detail_select(), {"procedure_id": procedure_id})
        found = row.mappings().first()
    return dict(found) if found is not None else None


def test_first_reads_the_rows_sqlalchemy_reads(engine: Engine) -> None:
    fleet = make_fleet(n_procedures=40)
    fleet.telemetry = [
        s for p in fleet.procedures[:5] for s in make_samples(p, count=20, step_ms=250)
    ]
    orphan = {"procedure_id": "p-orphan", "robot_id": "robot-unknown"}  # no robot row
    fleet.procedures.append(fleet.procedures[-1].model_copy(update=orphan))
    write(engine, fleet)
    with_outcome = {o.procedure_id for o in fleet.outcomes}
    with_samples = {s.procedure_id for s in fleet.telemetry}
    ids = [p.procedure_id for p in fleet.procedures]
    # Every shape of the joined row: with and without outcome, summary and robot.
    assert with_outcome and set(ids) - with_outcome
    assert with_samples and set(ids) - with_samples
    kinds: set[str] = set()
    with engine.connect() as conn:
        for procedure_id in [*ids, "no-such-procedure"]:
            got = first(conn, procedures.detail_select(), {"procedure_id": procedure_id})
            want = _typed(engine, procedure_id)
            assert got == want, procedure_id
            if got is None:
                continue
            assert list(got) == list(want or {})
            for key, value in got.items():
                assert type(value) is type((want or {})[key]), key
            kinds |= {type(v).__name__ for v in got.values()}
    # The rows held times, dates, numbers, flags, JSON lists and nulls.
    assert {"datetime", "date", "float", "int", "bool", "list", "NoneType"} <= kinds


def test_run_hands_back_results_errors_and_the_log_context(engine: Engine) -> None:
    """`db.run` runs on the engine's threads, in the caller's context, and returns its answer."""

    def where(value: int) -> tuple[int, str, Any]:
        bound = structlog.contextvars.get_contextvars().get("request_id")
        return value * 2, threading.current_thread().name, bound

    def fail() -> None:
        raise LookupError("from the thread")

    async def main() -> None:
        structlog.contextvars.bind_contextvars(request_id="r-42")
        doubled, thread, bound = await run(engine, where, 21)
        assert (doubled, bound) == (42, "r-42")
        assert thread.startswith("db") and thread != threading.current_thread().name
        with pytest.raises(LookupError, match="from the thread"):
            await run(engine, fail)

    asyncio.run(main())


def test_a_cancelled_run_waits_for_the_work_it_began(engine: Engine) -> None:
    """A request cancelled while its work runs goes on only once that work has ended.

    What follows a cancellation (an NDJSON stream's rollback) must not overlap the work on the
    same connection; the late answer is dropped without troubling the loop.
    """
    started, release, ended = threading.Event(), threading.Event(), threading.Event()
    problems: list[dict[str, Any]] = []

    def slow() -> str:
        started.set()
        release.wait(10)
        ended.set()
        return "late"

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: problems.append(ctx))
        task = asyncio.create_task(run(engine, slow))
        while not started.is_set():
            await asyncio.sleep(0.001)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # still waiting for the work it began
        task.cancel()  # a second cancellation does not cut the wait short
        await asyncio.sleep(0.05)
        assert not task.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert ended.is_set()
        assert await run(engine, lambda: "next") == "next"
        await asyncio.sleep(0.05)

    asyncio.run(main())
    assert problems == []


def test_a_cancelled_run_that_had_not_begun_never_runs(engine: Engine) -> None:
    """Work still queued when its request is cancelled is dropped, not run for nobody."""
    size = threads(engine)._max_workers
    busy, release = threading.Barrier(size + 1), threading.Event()
    ran: list[str] = []

    def hold() -> None:
        busy.wait(10)
        release.wait(10)

    async def main() -> None:
        holders = [asyncio.create_task(run(engine, hold)) for _ in range(size)]
        await asyncio.to_thread(busy.wait, 10)  # every thread of the engine is taken
        queued = asyncio.create_task(run(engine, ran.append, "queued"))
        await asyncio.sleep(0.01)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued  # at once: nothing of it had begun
        release.set()
        await asyncio.gather(*holders)
        await run(engine, ran.append, "after")  # the threads are free again

    asyncio.run(main())
    assert ran == ["after"]
