"""Group commit for single samples: concurrent requests share one transaction.

A commit per request is bound by the disk's fsync rate (about 2,000 a second here); sharing
commits lets throughput follow CPU instead. No timer: while one flush runs, new samples
queue, and the next flush takes all of them, so an idle service answers at once and a busy
one batches more.

When a shared flush fails, nothing of it was committed. An outage fails every request in it
(a 503: each alone would fail as well); any other failure is the data's (a value the database
refuses, or two samples whose sum overflows), so the requests are written again, in halves,
until each one at fault stands alone in its own transaction and fails alone. No request is
ever committed twice.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from operator import itemgetter
from typing import Any

from sqlalchemy import Engine

from medrobotics import logs, metrics
from medrobotics.errors import Unavailable
from medrobotics.ingestion import flows
from medrobotics.storage.telemetry import Row

log = logs.get("medrobotics.ingestion.writer")
MAX_FLUSH = 20_000  # samples per transaction: bounds the time any one commit holds locks
# Commits in flight at once: while one waits on the database the next one fills, so a
# round trip's latency does not cap throughput at (connections / latency).
FLUSHES = 2
_KEY = itemgetter(0, 1, 2)  # procedure_id, robot_id, timestamp: the primary key
Waiter = tuple[Sequence[Row], asyncio.Future[int]]
"""One request's rows and the future its handler awaits."""


class GroupWriter:
    """Collects samples from concurrent requests and commits them together."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: deque[Waiter] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._flushes: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(FLUSHES)
        # Its own threads: flushes never queue behind request handlers for a worker thread.
        self._threads = ThreadPoolExecutor(FLUSHES, thread_name_prefix="group-writer")
        self.submitted = 0
        """Requests queued since start."""
        self.isolated = 0
        """Shared flushes that failed and were written again in parts (see `_isolate`)."""

    def start(self) -> None:
        """Start the flushing task on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-writer")

    async def submit(self, items: Sequence[Row]) -> int:
        """Queue sample rows; return once they are committed (how many were new, for this flush)."""
        if self._closing:
            raise RuntimeError("writer closed")
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        self.submitted += 1
        self._wake.set()
        return await future

    async def close(self) -> None:
        """Flush what is queued and stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._threads.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._slots.acquire()
                batch, size = [], 0
                while self._pending and size < MAX_FLUSH:
                    entry = self._pending.popleft()
                    batch.append(entry)
                    size += len(entry[0])
                task = loop.create_task(self._flush(batch))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)
            if self._closing:
                while self._flushes:
                    await asyncio.gather(*self._flushes)
                if not self._pending:
                    return

    async def _flush(self, batch: list[Waiter]) -> None:
        try:
            try:
                written = await self._write(batch)
            except Unavailable as exc:  # an outage: trying each request alone would only wait
                _fail(batch, exc)
                return
            except Exception as exc:
                if len(batch) == 1:
                    _fail(batch, exc)
                    return
                self.isolated += 1
                log.info("flush_isolated", requests=len(batch), error_type=type(exc).__name__)
                await self._isolate(batch)
                return
            for _, future in batch:
                if not future.done():
                    future.set_result(written)
        finally:
            self._slots.release()

    async def _isolate(self, batch: list[Waiter]) -> None:
        """Write a failed flush's requests again, in halves, down to each one at fault.

        Halving rather than one request at a time: a flush holds up to MAX_FLUSH requests, and
        one bad request among n then costs about 2·log2(n) transactions instead of n commits.
        Each part is committed once or not at all, so no request is ever written twice.
        """
        parts = _halves(batch)
        while parts:
            part = parts.pop()
            try:
                written = await self._write(part)
            except Unavailable as exc:  # the database went away meanwhile: no more tries
                _fail([entry for rest in (*parts, part) for entry in rest], exc)
                return
            except Exception as exc:
                if len(part) == 1:
                    _fail(part, exc)
                else:
                    parts.extend(_halves(part))
                continue
            for _, future in part:
                if not future.done():
                    future.set_result(written)

    async def _write(self, batch: list[Waiter]) -> int:
        """Commit the rows of `batch` in one transaction; return how many were new."""
        # In key order: two flushes in flight that share samples (a re-send) then take their
        # row locks in the same order and cannot deadlock.
        items: list[Any] = sorted((s for rows, _ in batch for s in rows), key=_KEY)
        loop = asyncio.get_running_loop()
        written = await loop.run_in_executor(
            self._threads, flows.write, self.engine, "telemetry", items
        )
        metrics.written("telemetry", written)
        return written


def _halves(batch: list[Waiter]) -> list[list[Waiter]]:
    # Last in, first out: the first half is written first.
    half = len(batch) // 2
    return [batch[half:], batch[:half]]


def _fail(batch: list[Waiter], exc: Exception) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
