"""Patient data on its way to the lake: one rule, a keyed hash, and where the key comes from.

The rule, for snapshots and raw batch payloads alike: `patient_id` becomes `patient_key`, the
hex HMAC-SHA256 of the id under the lake hash key; `patient_age`, `patient_gender` and
`surgeon_notes` are dropped. The same key gives the same `patient_key`, so an analyst can
follow a patient across procedures and days without learning who it is.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

import orjson
from isal import isal_zlib

from medrobotics import logs
from medrobotics.config import Settings
from medrobotics.storage import batches
from medrobotics.storage.lake import LakeError

log = logs.get("medrobotics.phi")
T = TypeVar("T")

PATIENT_ID = "patient_id"
PATIENT_KEY = "patient_key"
DROPPED = frozenset({"patient_age", "patient_gender", "surgeon_notes"})
ENTITIES = frozenset({"procedures", "outcomes"})
"""The entities whose records can carry patient fields; the others' models refuse them."""

KEY_FILE = "lake-hash-key"
MIN_KEY_CHARS = 32


class NoHashKey(LakeError):
    """The lake is S3 and no hash key is set: nothing with patient ids may be exported."""


# The rule -------------------------------------------------------------------------------------


class Hasher:
    """The keyed hash of patient ids (hex HMAC-SHA256)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise ValueError(f"the lake hash key needs at least {MIN_KEY_CHARS} bytes")
        self._base = hmac.new(key, digestmod=hashlib.sha256)

    def __call__(self, patient_id: str) -> str:
        """Return the patient key of `patient_id`."""
        mac = self._base.copy()
        mac.update(patient_id.encode("utf-8", "surrogatepass"))  # any str the parser gave
        return mac.hexdigest()


def rule(fields: Mapping[str, T], key_of: Callable[[T], T]) -> dict[str, T]:
    """Apply the lake's patient-data rule to `fields` (in their order).

    `patient_id` becomes `patient_key`, its value mapped by `key_of`; the dropped fields go.
    Values are a record's (scrub) or whole columns (scrub_columns): one rule for both.
    """
    out: dict[str, T] = {}
    for name, value in fields.items():
        if name == PATIENT_ID:
            out[PATIENT_KEY] = key_of(value)
        elif name not in DROPPED:
            out[name] = value
    return out


def scrub(record: Mapping[str, Any], hasher: Hasher) -> dict[str, Any]:
    """Apply the rule to one record."""
    return rule(record, lambda v: None if v is None else hasher(str(v)))


def scrub_columns(columns: Mapping[str, Sequence[Any]], hasher: Hasher) -> dict[str, Any]:
    """Apply the rule to columns of values (a batch of rows)."""
    return rule(columns, lambda ids: [None if v is None else hasher(str(v)) for v in ids])


def fields(names: Iterable[str]) -> list[str]:
    """Return the field names a record with `names` has once scrubbed (the same rule)."""
    return list(rule(dict.fromkeys(names, ""), lambda v: v))


# Batch payloads -------------------------------------------------------------------------------


def scrub_payload(entity: str, gzipped: bytes, hasher: Hasher) -> bytes:
    """Return a stored batch payload (gzip) with the rule applied to every record.

    Entities without patient fields pass unchanged. A JSON body keeps its shape
    (`{"type": ..., "records": [...]}`, written compact); an NDJSON body stays one record per
    line. Stored payloads are at most the body limit inflated (larger streams keep none), and
    ingestion parsed each whole already: the same bound holds here.
    """
    if entity not in ENTITIES:
        return gzipped
    body = isal_zlib.decompress(gzipped, wbits=31)  # gzip framing
    try:
        doc = _loads(body)
    except ValueError:
        doc = None  # NDJSON: more than one document
    packer = batches.packer()
    if isinstance(doc, dict) and isinstance(doc.get("records"), list):
        doc["records"] = [scrub(r, hasher) for r in doc["records"]]
        return packer.compress(_dumps(doc)) + packer.flush()
    del doc
    out = [
        packer.compress(_dumps(scrub(_loads(line), hasher)) + b"\n")
        for line in body.splitlines()
        if line.strip()
    ]
    return b"".join(out) + packer.flush()


def _loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        # What ingestion's parser took and orjson does not (integers past 64 bits): the
        # standard library reads it, so one odd body never blocks the batches behind it.
        return json.loads(data)


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: what only the standard library read
        return json.dumps(value, separators=(",", ":")).encode()


# The key --------------------------------------------------------------------------------------


def hasher(settings: Settings) -> Hasher:
    """Return the lake's patient-id hasher.

    `MEDROBOTICS_LAKE_HASH_KEY` when set (from Secrets Manager in AWS). Otherwise, for the
    local lake only, a key generated once into the data folder and reused; an S3 lake without
    a key raises NoHashKey rather than let patient ids out unkeyed.
    """
    if settings.lake_hash_key is not None:
        return Hasher(settings.lake_hash_key.get_secret_value().encode())
    if settings.s3_raw_bucket:
        raise NoHashKey(
            "MEDROBOTICS_LAKE_HASH_KEY is not set and the lake is S3: batch payloads and "
            "snapshots are not exported until it is"
        )
    return Hasher(local_key(settings.data_dir))


def local_key(data_dir: Path) -> bytes:
    """Return the data folder's lake hash key, creating it (mode 0600) on first use."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = data_dir / f".{KEY_FILE}-{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as fh:
                fh.write(secrets.token_hex(32) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            # A hard link appears whole or not at all, and fails if another process won.
            with suppress(FileExistsError):
                os.link(tmp, path)
                log.info("lake_hash_key_created", path=str(path))
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_text(encoding="ascii").strip().encode()
