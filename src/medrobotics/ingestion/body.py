"""Reading request bodies safely: content type, size limits, gzip, NDJSON lines.

Every limit is enforced while the body arrives, in steps of bounded size, so a hostile body
costs bounded memory and never holds the event loop for long: a gzip bomb is refused while it
inflates, and a line with no end is refused once it is longer than any record can be.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from fastapi import Request

from medrobotics.config import Settings
from medrobotics.errors import BadRequest, TooLarge, UnsupportedMedia

JSON = "application/json"
NDJSON = "application/x-ndjson"
STEP = 256 * 1024
"""Most bytes handed on at once: bounds what one step holds and how long it keeps the loop."""
FEED = 64 * 1024
"""Most compressed bytes given to zlib at once."""


@dataclass(frozen=True)
class Limits:
    """What one body may hold."""

    size: int
    """Bytes received, and bytes after gzip."""
    ratio: int
    """Bytes a gzip body may inflate to per compressed byte read so far..."""
    allowance: int
    """...once past this many inflated bytes (small bodies may be very repetitive)."""
    line: int
    """Longest NDJSON line, in bytes."""

    @classmethod
    def of(cls, settings: Settings, *, size: int) -> Limits:
        """Return the limits in `settings` for bodies of at most `size` bytes."""
        return cls(
            size=size,
            ratio=settings.max_gzip_ratio,
            allowance=settings.gzip_allowance_bytes,
            line=settings.max_line_bytes,
        )


class LongLine(TooLarge):
    """An NDJSON line over the limit; `offset` counts the non-blank lines before it in its block."""

    def __init__(self, limit: int, offset: int) -> None:
        super().__init__(f"an NDJSON line is longer than the {limit}-byte limit")
        self.limit, self.offset = limit, offset


def media_type(request: Request, allowed: tuple[str, ...]) -> str:
    """Return the request's media type if it is one of `allowed`, else refuse with 415."""
    raw = request.headers.get("content-type", "")
    kind = raw.split(";", 1)[0].strip().lower()
    if kind in ("application/jsonl", "application/json-lines"):
        kind = NDJSON
    if kind not in allowed:
        names = " or ".join(allowed)
        raise UnsupportedMedia(f"Content-Type must be {names}")
    return kind


def _gzipped(request: Request) -> bool:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return False
    if encoding in ("gzip", "x-gzip"):
        return True
    raise UnsupportedMedia("Content-Encoding must be gzip or identity")


class _Inflater:
    """Inflates a gzip body piece by piece, refusing it as soon as it grows past its limits."""

    def __init__(self, limit: Limits) -> None:
        self.limit = limit
        self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self.consumed = 0
        self.produced = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Yield what `data` inflates to, at most STEP bytes at a time."""
        while data:
            if self.decoder.eof:
                # A gzip file may be several members one after another (RFC 1952); zero
                # padding after the last is tolerated, as gzip(1) does.
                data = data.lstrip(b"\0")
                if not data:
                    return
                self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = self.decoder.decompress(data, STEP)
            except zlib.error:
                raise BadRequest("body is not valid gzip") from None
            left = self.decoder.unconsumed_tail or self.decoder.unused_data
            self.consumed += len(data) - len(left)
            data = left
            if out:
                self._check(len(out))
                yield out
        # Output zlib still holds for input already consumed (a long run being copied out).
        while not self.decoder.eof:
            out = self.decoder.decompress(b"", STEP)
            if not out:
                return
            self._check(len(out))
            yield out

    def _check(self, more: int) -> None:
        self.produced += more
        limit = self.limit
        if self.produced > limit.size:
            raise TooLarge(f"decompressed body over the {limit.size}-byte limit")
        if self.produced > max(limit.ratio * self.consumed, limit.allowance):
            raise TooLarge(f"gzip body inflates more than {limit.ratio} times")

    @property
    def done(self) -> bool:
        """Tell whether the body ended where a gzip member ends."""
        return self.decoder.eof


async def chunks(request: Request, *, limit: Limits) -> AsyncIterator[bytes]:
    """Yield the decoded body in pieces of at most STEP bytes, refusing it (413) past `limit`."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit.size:
        raise TooLarge(f"request body over the {limit.size}-byte limit")
    inflater = _Inflater(limit) if _gzipped(request) else None
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit.size:
            raise TooLarge(f"request body over the {limit.size}-byte limit")
        if inflater is None:
            for start in range(0, len(chunk), STEP):
                yield chunk[start : start + STEP]
            continue
        # Fed a slice at a time: zlib copies the input it has not used yet at every step.
        for start in range(0, len(chunk), FEED):
            for piece in inflater.feed(chunk[start : start + FEED]):
                yield piece
                # A chunk off the network may inflate to a thousand steps: let the other
                # requests on this loop (the other service, locally) run between them.
                await asyncio.sleep(0)
    if inflater is not None and not inflater.done:
        raise BadRequest("body is not valid gzip (truncated)")


async def read(request: Request, *, limit: Limits) -> bytes:
    """Return the whole decoded body, within `limit`."""
    parts = [c async for c in chunks(request, limit=limit)]
    return b"".join(parts)


async def line_batches(request: Request, *, limit: Limits) -> AsyncIterator[bytes]:
    """Yield the NDJSON body as it arrives, in blocks of whole lines (each ending in a newline).

    Whole pieces at a time, cut at their last newline and never split into lines here: a
    yield or a copy per line would cost more than decoding it. A line longer than
    `limit.line` is refused (LongLine, a 413) as soon as that much of it has arrived.
    """
    head: list[bytes] = []  # the start of a line whose end has not arrived yet
    held = 0
    async for chunk in chunks(request, limit=limit):
        cut = chunk.rfind(b"\n")
        if cut < 0:
            held += len(chunk)
            if held > limit.line:
                raise LongLine(limit.line, 0)
            head.append(chunk)
            continue
        block = b"".join((*head, chunk[: cut + 1])) if head else chunk[: cut + 1]
        rest = chunk[cut + 1 :]
        head, held = ([rest], len(rest)) if rest else ([], 0)
        # Blocks are at most a line plus a step: only a long one can hold a line too long.
        if len(block) > limit.line:
            over = _long_line(block, limit.line)
            if over is not None:
                raise LongLine(limit.line, over)
        yield block
        if held > limit.line:
            raise LongLine(limit.line, 0)
    tail = b"".join(head)
    if tail.strip():
        yield tail + b"\n"


def _long_line(block: bytes, most: int) -> int | None:
    """Return how many non-blank lines of `block` precede its first line over `most` bytes."""
    start = 0
    while True:
        end = block.find(b"\n", start, start + most + 1)
        if end < 0:
            if len(block) - start <= most:
                return None
            before = block[:start]
            return len([line for line in before.split(b"\n") if line.strip()])
        start = end + 1
