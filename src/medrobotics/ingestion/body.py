"""Reading request bodies safely: content type, size limits, gzip, NDJSON lines."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from fastapi import Request

from medrobotics.errors import BadRequest, TooLarge, UnsupportedMedia

JSON = "application/json"
NDJSON = "application/x-ndjson"


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


def _decoder(request: Request) -> zlib._Decompress | None:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    raise UnsupportedMedia("Content-Encoding must be gzip or identity")


async def chunks(request: Request, *, limit: int) -> AsyncIterator[bytes]:
    """Yield the decoded body in chunks, refusing more than `limit` bytes (before or after gzip)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"request body over the {limit}-byte limit")
    decoder = _decoder(request)
    received = produced = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise TooLarge(f"request body over the {limit}-byte limit")
        if decoder is None:
            if chunk:
                yield chunk
            continue
        try:
            # Bounded output per call so a small gzip bomb cannot allocate gigabytes at once.
            data = decoder.decompress(chunk, limit - produced + 1)
            while data:
                produced += len(data)
                if produced > limit:
                    raise TooLarge(f"decompressed body over the {limit}-byte limit")
                yield data
                data = decoder.decompress(decoder.unconsumed_tail, limit - produced + 1)
        except zlib.error:
            raise BadRequest("body is not valid gzip") from None
    if decoder is not None and not decoder.eof:
        raise BadRequest("body is not valid gzip (truncated)")


async def read(request: Request, *, limit: int) -> bytes:
    """Return the whole decoded body, within `limit` bytes."""
    parts = [c async for c in chunks(request, limit=limit)]
    return b"".join(parts)


async def line_batches(request: Request, *, limit: int) -> AsyncIterator[bytes]:
    """Yield the NDJSON body as it arrives, in blocks of whole lines (each ending in a newline).

    Whole network chunks at a time, cut at their last newline and never split into lines
    here: a yield or a copy per line would cost more than decoding it.
    """
    pending = b""
    async for chunk in chunks(request, limit=limit):
        cut = chunk.rfind(b"\n")
        if cut < 0:
            pending += chunk
            continue
        block, pending = pending + chunk[: cut + 1], chunk[cut + 1 :]
        yield block
    if pending.strip():
        yield pending + b"\n"
