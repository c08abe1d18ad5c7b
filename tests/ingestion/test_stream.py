"""The NDJSON flow: one transaction across a stream's chunks, committed or rolled back whole."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from medrobotics.domain.outcomes import OutcomeIn
from medrobotics.domain.procedures import ProcedureIn
from medrobotics.domain.telemetry import fast_rows
from medrobotics.errors import InvalidInput
from medrobotics.ingestion import flows
from medrobotics.storage.tables import batches, outcomes, telemetry
from tests import factories as f

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def rows(count: int, procedure_n: int = 1) -> list[Any]:
    out = fast_rows(json.dumps(f.samples(count, procedure_n=procedure_n)).encode())
    assert out is not None
    return out


def stored(engine: Engine) -> tuple[int, list[tuple[str, int]]]:
    with engine.connect() as conn:
        samples = conn.execute(select(func.count()).select_from(telemetry)).scalar_one()
        kept = conn.execute(select(batches.c.entity, batches.c.record_count)).all()
    return int(samples), [(e, int(n)) for e, n in kept]


async def test_chunks_commit_together_with_the_payload(engine: Engine) -> None:
    async with flows.streaming(engine, "telemetry", keep=1 << 20) as stream:
        stream.keep(b"the body\n")
        stream.received = 30
        await stream.add(rows(20), base=0)
        assert stored(engine) == (0, [])  # nothing visible before the commit
        assert await stream.commit(rows(10, procedure_n=2), base=20) == 30
        assert not stream.open
    assert stored(engine) == (30, [("telemetry", 30)])
    assert engine.pool.checkedout() == 0


async def test_an_error_after_a_chunk_rolls_it_back(engine: Engine) -> None:
    with pytest.raises(InvalidInput):
        async with flows.streaming(engine, "telemetry", keep=1 << 20) as stream:
            await stream.add(rows(20), base=0)
            assert stream.open
            raise InvalidInput("record 20 is bad")
    assert stored(engine) == (0, [])
    assert engine.pool.checkedout() == 0


async def test_a_refusal_at_the_last_chunk_rolls_back_the_first(engine: Engine) -> None:
    # Outcomes need their procedure: the last chunk names an unknown one (a 422 from the flow).
    await flows.store(engine, "procedures", [_procedure(1)])
    with pytest.raises(InvalidInput) as refused:
        async with flows.streaming(engine, "outcomes", keep=1 << 20) as stream:
            stream.received = 2
            await stream.add([_outcome(1)], base=0)
            await stream.commit([_outcome(2)], base=1)
    assert refused.value.details[0]["index"] == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(outcomes)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(batches)).scalar_one() == 0
    assert engine.pool.checkedout() == 0


async def test_a_stream_with_no_records_opens_no_transaction(engine: Engine) -> None:
    async with flows.streaming(engine, "telemetry", keep=1 << 20) as stream:
        assert await stream.commit([], base=0) == 0
        assert not stream.open
    assert stored(engine) == (0, [])


def _procedure(n: int) -> Any:
    return ProcedureIn.model_validate_json(json.dumps(f.procedure(n)))


def _outcome(n: int) -> Any:
    return OutcomeIn.model_validate_json(json.dumps(f.outcome(n)))
