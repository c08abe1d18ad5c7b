"""API keys: issue, verify, scope checks, per-key rate limits, and the patient-data audit."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from sqlalchemy import Engine

from medrobotics.config import Settings
from medrobotics.errors import Forbidden, RateLimited, Unauthorized
from medrobotics.storage import keys
from medrobotics.storage.db import reading, run, transaction
from medrobotics.web import amend_openapi

SCOPES = ("ingest:write", "api:read", "phi:read", "admin")
PREFIX = "mrk"
CACHE_MAX = 10_000


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may do."""

    name: str
    scopes: frozenset[str]
    key_id: str | None = None

    @property
    def phi(self) -> bool:
        """Tell whether this caller may see patient data."""
        return "phi:read" in self.scopes or "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        """Tell whether the caller holds `scope` (admin holds all)."""
        return scope in self.scopes or "admin" in self.scopes


OPEN = Principal(name="anonymous (authentication off)", scopes=frozenset(SCOPES))


def _token(presented: str) -> str:
    # The cache is keyed by a digest of the key so that it never holds a usable key.
    return hashlib.sha256(presented.encode()).hexdigest()


def _digest(salt: str, secret: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + secret.encode()).hexdigest()


@dataclass
class Issued:
    """A key as shown once to its owner."""

    key: str
    key_id: str
    name: str
    scopes: list[str]
    expires_at: datetime | None


def issue(
    engine: Engine, *, name: str, scopes: Sequence[str], expires_at: datetime | None = None
) -> Issued:
    """Create a key; only its salted hash is stored, so this is the one time it is seen."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    with transaction(engine) as conn:
        keys.add(
            conn,
            key_id=key_id,
            name=name,
            salt=salt,
            secret_hash=_digest(salt, secret),
            scopes=sorted(set(scopes)),
            created_at=datetime.now(UTC),
            expires_at=expires_at,
        )
    return Issued(f"{PREFIX}_{key_id}_{secret}", key_id, name, sorted(set(scopes)), expires_at)


def _parse(presented: str) -> tuple[str, str] | None:
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 16:
        return None
    return parts[1], parts[2]


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class Guard:
    """Verifies keys (with a short cache) and applies per-key rate limits, per process."""

    engine: Engine
    settings: Settings
    _cache: dict[str, tuple[float, Principal | None]] = field(default_factory=dict)
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def principal(self, presented: str | None) -> Principal:
        """Return who holds `presented`, or raise Unauthorized.

        Async so that the common cases (authentication off, a recently seen key) cost no
        thread hop; only a cache miss reads the database, in a worker thread.
        """
        if not self.settings.auth_required:
            return OPEN
        if not presented:
            raise Unauthorized("an API key is required: send Authorization: Bearer <key>")
        known = self._known(presented)
        if known is not None:
            found = known[0]
        else:
            found = await run(self.engine, self._lookup, presented)
            ttl = self.settings.auth_cache_seconds
            if ttl > 0:
                if len(self._cache) >= CACHE_MAX:
                    self._cache.clear()  # bounded: random keys sent by a scanner cannot grow it
                self._cache[_token(presented)] = (time.monotonic() + ttl, found)
        if found is None:
            raise Unauthorized("API key not valid (unknown, revoked or expired)")
        return found

    def cached(self, presented: str | None) -> Principal | None:
        """Return who holds `presented` when that is known without I/O and valid, else None."""
        if not self.settings.auth_required:
            return OPEN
        if not presented:
            return None
        known = self._known(presented)
        return None if known is None else known[0]

    def _known(self, presented: str) -> tuple[Principal | None] | None:
        # The bootstrap key, or a fresh cache entry (which may say "not valid"); None: look up.
        boot = self.settings.bootstrap_key
        if boot is not None and hmac.compare_digest(presented, boot.get_secret_value()):
            return (Principal(name="bootstrap", scopes=frozenset(SCOPES)),)
        hit = self._cache.get(_token(presented))
        if hit is not None and hit[0] > time.monotonic():
            return (hit[1],)
        return None

    def _lookup(self, presented: str) -> Principal | None:
        parsed = _parse(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        with reading(self.engine) as conn:
            row = keys.get(conn, key_id=key_id)
        if row is None or not hmac.compare_digest(row["secret_hash"], _digest(row["salt"], secret)):
            return None
        now = datetime.now(UTC)
        if row["revoked_at"] is not None and row["revoked_at"] <= now:
            return None
        if row["expires_at"] is not None and row["expires_at"] <= now:
            return None
        return Principal(name=row["name"], scopes=frozenset(row["scopes"]), key_id=key_id)

    def throttle(self, who: Principal) -> None:
        """Spend one request from the caller's bucket, or raise RateLimited."""
        rate = self.settings.rate_limit_per_s
        if rate <= 0 or who is OPEN:
            return
        burst = float(self.settings.rate_limit_burst)
        key = who.key_id or who.name
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(tokens=burst, at=now)
            bucket.tokens = min(burst, bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
            if bucket.tokens < 1:
                wait = max(1, int((1 - bucket.tokens) / rate + 0.999))
                raise RateLimited("rate limit exceeded for this key", retry_after=wait)
            bucket.tokens -= 1


def presented_key(request: Request) -> str | None:
    """Return the key the client sent (Authorization: Bearer, or X-API-Key)."""
    return key_of(request.headers.get("authorization"), request.headers.get("x-api-key"))


def key_of(authorization: str | None, api_key: str | None) -> str | None:
    """Return the key from the Authorization and X-API-Key header values (Bearer first)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return api_key or None


SCHEMES: dict[str, dict[str, Any]] = {
    "HTTPBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <key>`",
    },
    "APIKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same key.",
    },
}
"""The two ways to present a key, as the OpenAPI documents name them."""


@dataclass(frozen=True)
class Require:
    """A dependency admitting callers that hold any of `scopes` (see `require`)."""

    scopes: tuple[str, ...]

    async def __call__(self, request: Request) -> Principal:
        """Check the caller's key and scope, spend one request of its rate, and name it."""
        guard: Guard = request.app.state.guard
        who = await guard.principal(presented_key(request))
        if not any(who.allows(s) for s in self.scopes):
            raise Forbidden(f"this key lacks the scope {' or '.join(self.scopes)}")
        guard.throttle(who)
        request.scope["principal"] = who
        return who


def require(*scopes: str) -> Require:
    """Return a dependency admitting callers that hold any of `scopes`.

    It takes the request alone: FastAPI's `Security` parameters would document the schemes by
    solving two more dependencies at every request (several percent of a single-sample post);
    `document_keys` writes the same schemes into the OpenAPI document instead.
    """
    return Require(scopes)


def document_keys(app: FastAPI) -> None:
    """Name the key schemes in `app`'s OpenAPI document, on each operation that takes a key.

    Those are the operations that document a 401 (web.responses): each is guarded by `require`.
    """

    def edit(doc: dict[str, Any]) -> None:
        doc.setdefault("components", {})["securitySchemes"] = SCHEMES
        for item in doc["paths"].values():
            for op in item.values():
                if "401" in op.get("responses", {}):
                    op["security"] = [{name: []} for name in SCHEMES]

    amend_openapi(app, edit)


def audit_phi(engine: Engine, request: Request, who: Principal, record_ids: Sequence[str]) -> None:
    """Record that `who` read patient data of `record_ids` (never the values)."""
    route = getattr(request.scope.get("route"), "path", request.url.path)
    entry: dict[str, Any] = {
        "at": datetime.now(UTC),
        "key_id": who.key_id,
        "key_name": who.name,
        "action": "read_phi",
        "route": route,
        "record_ids": list(record_ids),
        "request_id": request.scope.get("request_id"),
    }
    with transaction(engine) as conn:
        keys.audit(conn, entries=[entry])
