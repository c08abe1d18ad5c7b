"""Domain errors; the web layer maps each to one HTTP status and one error body."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a client may see; `message` is safe to show."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class NotFound(DomainError):
    """The named thing does not exist."""

    status, code = 404, "not_found"


class InvalidInput(DomainError):
    """Well-formed but invalid: a field, a parameter or a reference is wrong."""

    status, code = 422, "invalid"


class BadRequest(DomainError):
    """The body cannot be read at all (malformed JSON, broken gzip)."""

    status, code = 400, "malformed"


class TooLarge(DomainError):
    """The body or the batch is over its limit."""

    status, code = 413, "too_large"


class UnsupportedMedia(DomainError):
    """The content type or encoding is not one this endpoint takes."""

    status, code = 415, "unsupported_media_type"


class Conflict(DomainError):
    """The write contradicts stored data."""

    status, code = 409, "conflict"


class Unauthorized(DomainError):
    """No valid credentials."""

    status, code = 401, "unauthorized"


class Forbidden(DomainError):
    """Valid credentials without the needed scope."""

    status, code = 403, "forbidden"


class RateLimited(DomainError):
    """Too many requests for this key; retry later."""

    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A dependency (the database) does not answer; retry later."""

    status, code = 503, "unavailable"
    retry_after = 5
