"""Test helpers: walking pages, reading times, checking the error body."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient


def walk(client: TestClient, path: str, **params: Any) -> tuple[list[dict[str, Any]], int]:
    """Follow `next` links from `path`; return every item and how many pages there were."""
    response = client.get(path, params=params)
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        pages += 1
        assert pages < 1000
        if body["next"] is None:
            return items, pages
        response = client.get(body["next"])


def ts(value: str) -> datetime:
    """Parse a returned time, insisting on an explicit UTC offset."""
    assert value.endswith("+00:00"), value
    return datetime.fromisoformat(value)


def assert_error(response: Any, status: int, code: str, field: str | None = None) -> None:
    """Check the common error body, and that `field` is named in its details."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    if field is not None:
        assert field in [d["field"] for d in error["details"]], error
        assert field in error["message"]


class Rounded:
    """Equal to `expected` as the service rounds it: within half a unit of the last of
    `places` decimals (plus float noise), and itself carrying no more decimals than that."""

    def __init__(self, expected: float, places: int) -> None:
        self.expected, self.places = expected, places

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, int | float) or isinstance(other, bool):
            return False
        slack = 0.5 * 10**-self.places + 1e-9 * max(1.0, abs(self.expected))
        return round(other, self.places) == other and abs(other - self.expected) <= slack

    def __repr__(self) -> str:
        return f"{self.expected!r} to {self.places} places"


def rounded(expected: float | None, places: int) -> Any:
    """Return a matcher for a figure rounded to `places` decimals (None matches None)."""
    return None if expected is None else Rounded(expected, places)
