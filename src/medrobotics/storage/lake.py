"""The raw data lake: a local folder (embedded) or an S3 bucket, behind one small protocol."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from medrobotics.config import Settings


class LakeError(Exception):
    """The lake did not accept or return an object; the archiver backs off and retries."""


class Lake(Protocol):
    """Where archived objects go; keys are '/'-separated and already carry the lake prefix."""

    def put(self, key: str, data: bytes) -> None:
        """Write (or overwrite) one object."""

    def get(self, key: str) -> bytes:
        """Read one object."""

    def list(self, prefix: str = "") -> list[str]:
        """Return every key under `prefix`, sorted."""

    def put_file(self, key: str, source: Path) -> None:
        """Write (or overwrite) one object from a local file, without holding it in memory."""

    def get_file(self, key: str, path: Path) -> None:
        """Copy one object to a local file, without holding it in memory."""

    def delete(self, keys: Iterable[str]) -> None:
        """Remove objects; a key already gone is not an error."""

    def uri(self, key: str) -> str:
        """Return the full address readers use: `s3://bucket/key`, or an absolute path."""


class LocalLake:
    """A folder standing in for the bucket."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"invalid object key: {key!r}")
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes) -> None:
        """Write atomically: readers never see half an object, a retry replaces it whole."""
        self._write(key, lambda fh: fh.write(data))

    def put_file(self, key: str, source: Path) -> None:
        """Write a file's content as one object, atomically, without reading it into memory."""

        def copy(fh: BinaryIO) -> None:
            with source.open("rb") as src:
                shutil.copyfileobj(src, fh, 1024 * 1024)

        self._write(key, copy)

    def _write(self, key: str, fill: Callable[[BinaryIO], object]) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fill(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise LakeError(f"cannot write to the lake folder: {exc.strerror}") from exc

    def get_file(self, key: str, path: Path) -> None:
        """Copy one object to a local file."""
        try:
            shutil.copyfile(self._path(key), path)
        except OSError as exc:
            raise LakeError(f"cannot read from the lake folder: {exc.strerror}") from exc

    def delete(self, keys: Iterable[str]) -> None:
        """Remove objects; a key already gone is not an error."""
        try:
            for key in keys:
                self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise LakeError(f"cannot remove objects in the lake folder: {exc.strerror}") from exc

    def uri(self, key: str) -> str:
        """Return the object's absolute path."""
        return str(self._path(key).absolute())

    def get(self, key: str) -> bytes:
        """Read one object."""
        try:
            return self._path(key).read_bytes()
        except OSError as exc:
            raise LakeError(f"cannot read from the lake folder: {exc.strerror}") from exc

    def list(self, prefix: str = "") -> list[str]:
        """Return every key under `prefix`, sorted (temporary files excluded)."""
        # Only the folder the prefix ends in is walked, as S3 lists only the keys under it:
        # the archiver reads a day's manifest per day of a window, and walking the whole lake
        # for each made a pass slower the bigger the lake grew.
        folder, _, _ = prefix.rpartition("/")
        start = self._path(folder) if folder else self.root
        if not start.is_dir():
            return []
        keys = (
            p.relative_to(self.root).as_posix()
            for p in start.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
        return sorted(k for k in keys if k.startswith(prefix))


class S3Lake:
    """An S3 bucket (or an S3-compatible store), objects encrypted at rest.

    Credentials come from the standard AWS chain: the task role in ECS, the environment or a
    profile elsewhere. Never from settings.
    """

    def __init__(
        self,
        bucket: str,
        *,
        kms_key_id: str | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        if kms_key_id:
            self._sse: dict[str, str] = {
                "ServerSideEncryption": "aws:kms",
                "SSEKMSKeyId": kms_key_id,
            }
        else:
            self._sse = {"ServerSideEncryption": "AES256"}
        self._client = client or _client(endpoint_url)

    def put(self, key: str, data: bytes) -> None:
        """Write one object with server-side encryption (a PUT replaces any previous one)."""
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, **self._sse)
        except Exception as exc:
            raise LakeError(f"S3 put failed: {_reason(exc)}") from exc

    def put_file(self, key: str, source: Path) -> None:
        """Upload a local file with server-side encryption, in parts when it is large."""
        try:
            self._client.upload_file(
                str(source), self.bucket, key, ExtraArgs=dict(self._sse), Config=_transfer()
            )
        except Exception as exc:
            raise LakeError(f"S3 put failed: {_reason(exc)}") from exc

    def get(self, key: str) -> bytes:
        """Read one object."""
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=key)["Body"]
            return bytes(body.read())
        except Exception as exc:
            raise LakeError(f"S3 get failed: {_reason(exc)}") from exc

    def list(self, prefix: str = "") -> list[str]:
        """Return every key under `prefix`, sorted."""
        keys: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                keys.extend(obj["Key"] for obj in page.get("Contents", []))
        except Exception as exc:
            raise LakeError(f"S3 list failed: {_reason(exc)}") from exc
        return sorted(keys)

    def get_file(self, key: str, path: Path) -> None:
        """Download one object to a local file."""
        try:
            self._client.download_file(self.bucket, key, str(path))
        except Exception as exc:
            raise LakeError(f"S3 download failed: {_reason(exc)}") from exc

    def delete(self, keys: Iterable[str]) -> None:
        """Remove objects, a thousand per request; a key already gone is not an error."""
        todo = list(keys)
        for i in range(0, len(todo), 1000):
            chunk = [{"Key": k} for k in todo[i : i + 1000]]
            try:
                answer = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True}
                )
            except Exception as exc:
                raise LakeError(f"S3 delete failed: {_reason(exc)}") from exc
            errors = answer.get("Errors") or []
            if errors:
                raise LakeError(f"S3 delete failed: {errors[0].get('Code', 'unknown')}")

    def uri(self, key: str) -> str:
        """Return `s3://bucket/key`."""
        return f"s3://{self.bucket}/{key}"


def _client(endpoint_url: str | None) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        # Short timeouts and few attempts: the archiver has its own backoff, and a stuck call
        # would hold the archive lock for nothing.
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


def _transfer() -> Any:
    from boto3.s3.transfer import TransferConfig

    # Parts are read from the file as they are sent; two at a time keeps the upload's memory
    # to a few parts, inside the archiver's budget.
    return TransferConfig(
        multipart_threshold=16 << 20, multipart_chunksize=8 << 20, max_concurrency=2
    )


def _reason(exc: Exception) -> str:
    # botocore errors carry a code; connection errors only a class name. Never the payload.
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if code:
            return str(code)
    return type(exc).__name__


def open_lake(settings: Settings) -> Lake:
    """Return the lake the settings name: the S3 bucket when set, else the local folder."""
    if settings.s3_raw_bucket:
        return S3Lake(
            settings.s3_raw_bucket,
            kms_key_id=settings.lake_kms_key_id,
            endpoint_url=settings.s3_endpoint_url,
        )
    return LocalLake(settings.lake_dir)
