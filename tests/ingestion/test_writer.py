"""The group writer: a failed shared flush is written again in parts, each request once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from medrobotics.errors import InvalidInput, Unavailable
from medrobotics.ingestion import flows
from medrobotics.ingestion.writer import GroupWriter

REQUESTS = 64


def _requests(bad: set[int]) -> list[list[tuple[Any, ...]]]:
    return [[(f"proc-{n}", "robot-1", n, "bad" if n in bad else "ok")] for n in range(REQUESTS)]


def _run(requests: list[list[tuple[Any, ...]]]) -> list[Any]:
    async def main() -> list[Any]:
        group = GroupWriter(engine=None)  # type: ignore[arg-type]  # flows.write is replaced
        group.start()
        # Queued before the writer's task runs: all of them land in its first flush.
        answers = await asyncio.gather(
            *(group.submit(rows) for rows in requests), return_exceptions=True
        )
        await group.close()
        assert group.isolated == 1
        return answers

    return asyncio.run(main())


@pytest.mark.parametrize("bad", [{0}, {63}, {5, 40}, {10, 11, 12}])
def test_only_the_requests_at_fault_fail_and_no_request_is_written_twice(
    monkeypatch: pytest.MonkeyPatch, bad: set[int]
) -> None:
    committed: Counter[int] = Counter()
    calls: list[int] = []

    def write(_engine: Any, _entity: str, items: list[tuple[Any, ...]]) -> int:
        calls.append(len(items))
        if any(row[3] == "bad" for row in items):
            raise InvalidInput("the database refused tool_type")  # nothing committed
        committed.update(row[2] for row in items)
        return len(items)

    monkeypatch.setattr(flows, "write", write)
    answers = _run(_requests(bad))
    assert calls[0] == REQUESTS  # one shared flush first
    for n, answer in enumerate(answers):
        if n in bad:
            assert isinstance(answer, InvalidInput)
        else:
            assert isinstance(answer, int) and answer >= 1, (n, answer)
    assert committed == Counter(n for n in range(REQUESTS) if n not in bad)
    # Halving finds each request at fault in a few transactions, not one per request.
    assert len(calls) <= 1 + 2 * len(bad) * REQUESTS.bit_length()
    assert len(calls) < REQUESTS // 2


def test_an_outage_while_isolating_fails_the_rest_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def write(_engine: Any, _entity: str, items: list[tuple[Any, ...]]) -> int:
        calls.append(len(items))
        if len(calls) == 1:
            raise InvalidInput("the database refused tool_type")
        raise Unavailable("database unavailable")

    monkeypatch.setattr(flows, "write", write)
    answers = _run(_requests({3}))
    assert all(isinstance(a, Unavailable) for a in answers)
    assert calls == [REQUESTS, REQUESTS // 2]  # the shared flush, then one part: no more
