"""Per-day telemetry manifests: the commit point for every reader of the lake.

`<prefix>telemetry/_manifests/date=D/manifest` is a text file, one full object URI per line
(`s3://bucket/key`, or an absolute path for the local folder), listing exactly the day's
current objects. It is replaced in one put: after the archiver writes a window's objects and
before the mark moves, and by compaction after writing compacted objects and before deleting
the parts they replace. A reader that follows it never sees a sample twice or misses one,
whatever objects a crash left beside it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

from medrobotics.storage.lake import Lake, LakeError

MANIFEST = "manifest"


def day_prefix(prefix: str, day: date) -> str:
    """Return the folder holding a day's telemetry objects."""
    return f"{prefix}telemetry/date={day.isoformat()}/"


def manifest_key(prefix: str, day: date) -> str:
    """Return the key of a day's manifest."""
    return f"{prefix}telemetry/_manifests/date={day.isoformat()}/{MANIFEST}"


def day_of(key: str) -> date:
    """Return the day of a telemetry object key (its `date=` folder)."""
    for part in key.split("/"):
        if part.startswith("date="):
            return date.fromisoformat(part[5:])
    raise ValueError(f"not a telemetry object key: {key!r}")


def days(lake: Lake, prefix: str) -> list[date]:
    """Return every day that has a manifest, oldest first (one listing, one key per day)."""
    found = []
    for key in lake.list(f"{prefix}telemetry/_manifests/"):
        if key.endswith(f"/{MANIFEST}"):
            found.append(day_of(key))
    return sorted(found)


def read(lake: Lake, prefix: str, day: date) -> list[str] | None:
    """Return the object keys a day's manifest lists, or None when the day has none."""
    key = manifest_key(prefix, day)
    if key not in lake.list(key):
        return None
    base = _base(lake, key)
    keys = []
    for line in lake.get(key).decode().splitlines():
        if not line:
            continue
        if not line.startswith(base):
            raise LakeError(f"the manifest of {day.isoformat()} names an object elsewhere")
        keys.append(line[len(base) :])
    return keys


def current(lake: Lake, prefix: str, day: date) -> list[str]:
    """Return the day's current objects: the manifest, or for a day without one the parts.

    A day without a manifest predates manifests or crashed before its first one: compaction
    only ever runs on days with a manifest, so such a day holds archiver parts alone.
    """
    listed = read(lake, prefix, day)
    if listed is not None:
        return listed
    return [k for k in lake.list(day_prefix(prefix, day)) if _name(k).startswith("part-")]


def publish(lake: Lake, prefix: str, day: date, keys: Iterable[str]) -> None:
    """Replace the day's manifest by one listing exactly `keys` (one put: atomic for readers)."""
    body = "".join(f"{lake.uri(k)}\n" for k in sorted(set(keys)))
    lake.put(manifest_key(prefix, day), body.encode())


def add(lake: Lake, prefix: str, keys: Iterable[str]) -> list[date]:
    """Add newly written telemetry objects to their days' manifests; return those days.

    The archiver calls this after a window's objects are written and before its mark moves.
    The new set is the current one plus these keys, never a fresh listing: after a compaction
    crashed before deleting the parts it replaced, a listing would bring them back.
    """
    by_day: dict[date, set[str]] = {}
    for key in keys:
        by_day.setdefault(day_of(key), set()).add(key)
    for day, new in sorted(by_day.items()):
        publish(lake, prefix, day, {*current(lake, prefix, day), *new})
    return sorted(by_day)


def uris(lake: Lake, prefix: str, day: date) -> list[str]:
    """Return the URIs a reader opens for a day (what the manifest file says)."""
    return [lake.uri(k) for k in sorted(current(lake, prefix, day))]


def _base(lake: Lake, key: str) -> str:
    # Every backend's URI is a fixed base followed by the key.
    uri = lake.uri(key)
    if not uri.endswith(key):
        raise LakeError("the lake's object addresses do not end with their keys")
    return uri[: len(uri) - len(key)]


def _name(key: str) -> str:
    return key.rsplit("/", 1)[-1]
