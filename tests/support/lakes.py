"""Test doubles of the lake: a lake that forwards everything, for doubles to override."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from medrobotics.storage.lake import Lake


class Forwarding:
    """Pass every call to `inner`; a double overrides only the calls it watches or breaks."""

    def __init__(self, inner: Lake) -> None:
        self.inner = inner

    def put(self, key: str, data: bytes) -> None:
        self.inner.put(key, data)

    def put_file(self, key: str, source: Path) -> None:
        self.inner.put_file(key, source)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def get_file(self, key: str, path: Path) -> None:
        self.inner.get_file(key, path)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        self.inner.delete(keys)

    def uri(self, key: str) -> str:
        return self.inner.uri(key)
