"""Lake backends: the local folder and S3 (moto's server on loopback) behave alike."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest

from medrobotics.storage.lake import LakeError, LocalLake, S3Lake
from tests.conftest import closed_port_url


def _roundtrip(lake: LocalLake | S3Lake) -> None:
    lake.put("raw/a/date=2024-01-01/x.bin", b"one")
    lake.put("raw/a/date=2024-01-02/y.bin", b"two")
    lake.put("raw/b/z.bin", b"three")
    lake.put("raw/a/date=2024-01-01/x.bin", b"replaced")  # a retry overwrites
    assert lake.get("raw/a/date=2024-01-01/x.bin") == b"replaced"
    assert lake.list("raw/a/") == ["raw/a/date=2024-01-01/x.bin", "raw/a/date=2024-01-02/y.bin"]
    assert len(lake.list()) == 3
    # A prefix is a string prefix of keys, as S3 has it: part of a name, a whole key, none.
    assert lake.list("raw/a/date=2024-01-0") == lake.list("raw/a/")
    assert lake.list("raw/a/date=2024-01-02") == ["raw/a/date=2024-01-02/y.bin"]
    assert lake.list("raw/b/z") == ["raw/b/z.bin"]
    assert lake.list("raw/a/date=2024-01-01/x.bin") == ["raw/a/date=2024-01-01/x.bin"]
    assert lake.list("ra") == lake.list()
    assert lake.list("raw/c/") == []
    assert lake.list("raw/b/z.bin/") == []


def _files_and_deletes(lake: LocalLake | S3Lake, tmp: Path) -> None:
    big = tmp / "big.bin"
    big.write_bytes(bytes(range(256)) * 40_000)  # 10 MB: a multipart upload on S3
    lake.put_file("raw/f/big.bin", big)
    lake.get_file("raw/f/big.bin", tmp / "back.bin")
    assert (tmp / "back.bin").read_bytes() == big.read_bytes()
    lake.put("raw/f/small.bin", b"s")
    lake.delete(["raw/f/big.bin", "raw/f/never-there.bin"])  # a missing key is no error
    assert lake.list("raw/f/") == ["raw/f/small.bin"]
    lake.delete([])
    with pytest.raises(LakeError):
        lake.get_file("raw/f/big.bin", tmp / "gone.bin")


def test_local_lake_roundtrip(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    assert lake.list() == []
    _roundtrip(lake)
    _files_and_deletes(lake, tmp_path)
    assert lake.uri("raw/b/z.bin") == str((tmp_path / "lake" / "raw" / "b" / "z.bin").absolute())
    # Atomic writes leave no temporary files behind.
    assert not [p for p in (tmp_path / "lake").rglob(".tmp-*")]


def test_local_lake_refuses_keys_outside_its_folder(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    for bad in ("../escape", "a//b", ""):
        with pytest.raises(ValueError):
            lake.put(bad, b"x")


def test_local_lake_missing_object_is_a_lake_error(tmp_path: Path) -> None:
    with pytest.raises(LakeError):
        LocalLake(tmp_path).get("nope")


def test_s3_lake_roundtrip_encrypted(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    lake = S3Lake(bucket, endpoint_url=s3_endpoint)
    _roundtrip(lake)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    head = client.head_object(Bucket=bucket, Key="raw/b/z.bin")
    assert head["ServerSideEncryption"] == "AES256"
    _files_and_deletes(lake, tmp_path)
    lake.put_file("raw/f/big.bin", tmp_path / "big.bin")
    head = client.head_object(Bucket=bucket, Key="raw/f/big.bin")
    assert head["ServerSideEncryption"] == "AES256"  # uploaded files are encrypted too
    assert lake.uri("raw/b/z.bin") == f"s3://{bucket}/raw/b/z.bin"


def test_s3_lake_uses_the_kms_key(s3_endpoint: str, bucket: str) -> None:
    kms = boto3.client("kms", endpoint_url=s3_endpoint, region_name="us-east-1")
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]
    lake = S3Lake(bucket, kms_key_id=key_id, endpoint_url=s3_endpoint)
    lake.put("raw/k.bin", b"secret")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    head = client.head_object(Bucket=bucket, Key="raw/k.bin")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert key_id in head["SSEKMSKeyId"]
    assert lake.get("raw/k.bin") == b"secret"


def test_s3_unreachable_is_a_lake_error(bucket: str) -> None:
    lake = S3Lake(bucket, endpoint_url=closed_port_url())
    with pytest.raises(LakeError):
        lake.put("raw/x", b"x")
    with pytest.raises(LakeError):
        lake.list("raw/")
    with pytest.raises(LakeError):
        lake.delete(["raw/x"])


def test_put_file_writes_one_whole_object(tmp_path: Path, s3_endpoint: str, bucket: str) -> None:
    # Above boto3's multipart threshold (8 MiB): S3 shows the object only once it is complete.
    source = tmp_path / "big.bin"
    data = bytes(range(256)) * (9 * 4096)
    source.write_bytes(data)
    local = LocalLake(tmp_path / "lake")
    local.put_file("raw/s/date=2024-01-01/big.bin", source)
    assert local.get("raw/s/date=2024-01-01/big.bin") == data
    assert not [p for p in (tmp_path / "lake").rglob(".tmp-*")]
    s3 = S3Lake(bucket, endpoint_url=s3_endpoint)
    s3.put_file("raw/s/big.bin", source)
    assert s3.get("raw/s/big.bin") == data
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    head = client.head_object(Bucket=bucket, Key="raw/s/big.bin")
    assert head["ServerSideEncryption"] == "AES256"
    with pytest.raises(LakeError):
        S3Lake(bucket, endpoint_url=closed_port_url()).put_file("raw/x", source)


def _put_file(lake: LocalLake | S3Lake, tmp_path: Path) -> None:
    # Larger than the multipart threshold: S3 takes it in parts, read from the file as sent.
    data = os.urandom(1 << 20) * 20
    for body in (b"first", data):  # the second replaces the first
        path = tmp_path / "spool.bin"
        path.write_bytes(body)
        lake.put_file("raw/t/date=2024-01-01/big.parquet", path)
        path.unlink(missing_ok=True)
    assert lake.get("raw/t/date=2024-01-01/big.parquet") == data
    assert lake.list("raw/t/") == ["raw/t/date=2024-01-01/big.parquet"]


def test_local_lake_put_file(tmp_path: Path) -> None:
    lake = LocalLake(tmp_path / "lake")
    _put_file(lake, tmp_path)
    assert not [p for p in (tmp_path / "lake").rglob(".tmp-*")]


def test_s3_lake_put_file_encrypted(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    lake = S3Lake(bucket, endpoint_url=s3_endpoint)
    _put_file(lake, tmp_path)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    head = client.head_object(Bucket=bucket, Key="raw/t/date=2024-01-01/big.parquet")
    assert head["ServerSideEncryption"] == "AES256"
    with pytest.raises(LakeError):
        S3Lake(bucket, endpoint_url=closed_port_url()).put_file("raw/x", tmp_path / "none")
