"""Hostile bodies: gzip bombs, endless lines, blank lines and echoes, on both databases."""

from __future__ import annotations

import gzip
import tracemalloc
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from medrobotics import seed
from medrobotics.config import Settings
from medrobotics.ingestion.app import create_app
from medrobotics.storage.tables import batches, robots, telemetry
from medrobotics.web import FIELD_CHARS, MAX_DETAILS, TRUNCATED
from tests import factories as f

NDJSON = {"content-type": "application/x-ndjson"}
GZIP_NDJSON = NDJSON | {"content-encoding": "gzip"}
JSON = {"content-type": "application/json"}
GZIP_JSON = JSON | {"content-encoding": "gzip"}
MiB = 1 << 20
# The figure: about 1 MB of gzip that inflates to 1 GiB.
GIB = 1024


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def refused(r: Any, status: int) -> dict[str, Any]:
    """Check the one error body shape and return its `error`."""
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    err: dict[str, Any] = r.json()["error"]
    assert err["code"] and err["message"] and err["request_id"] == r.headers["x-request-id"]
    return err


def nothing_written(engine: Engine) -> None:
    for table in (telemetry, robots, batches):
        assert count(engine, table) == 0, table.name


# Each about 1 MB of gzip that inflates to 1 GiB (the unit repeated 1,024 times).
BOMBS = {
    "newlines": (b"", b"\n" * MiB),
    "NULs": (b"", b"\0" * MiB),
    "one endless line": (b'{"robot_id": "', b"r" * MiB),
    "blank lines of spaces": (b"", b" \r\n\t" * (MiB // 4)),
}


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {name: f.gzip_bomb(unit, GIB, head=head) for name, (head, unit) in BOMBS.items()}


@pytest.mark.parametrize("name", list(BOMBS))
def test_an_ndjson_gzip_bomb_is_413_in_bounded_memory(
    client: TestClient, engine: Engine, bombs: dict[str, bytes], name: str
) -> None:
    bomb = bombs[name]
    assert len(bomb) < 1.1 * MiB
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        r = client.post("/ingest/batch?type=robots", content=bomb, headers=GZIP_NDJSON)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    err = refused(r, 413)
    assert err["code"] == "too_large"
    # The whole request, the test client's copies of the body included (about 2 MiB in all),
    # against 1 GiB inflated.
    assert peak < 16 * MiB, f"{peak / MiB:.0f} MiB"
    nothing_written(engine)


def test_a_gzip_bomb_of_telemetry_lines_is_413(
    client: TestClient, engine: Engine, bombs: dict[str, bytes]
) -> None:
    # The fast decoder's path (telemetry) as well as the record-by-record one (robots).
    err = refused(
        client.post("/ingest/batch?type=telemetry", content=bombs["newlines"], headers=GZIP_NDJSON),
        413,
    )
    assert "gzip" in err["message"]
    nothing_written(engine)


def test_an_endless_line_is_refused_naming_its_record(
    client: TestClient, engine: Engine, bombs: dict[str, bytes]
) -> None:
    err = refused(
        client.post(
            "/ingest/batch?type=robots", content=bombs["one endless line"], headers=GZIP_NDJSON
        ),
        413,
    )
    assert err["details"] == [
        {"field": "body", "message": err["details"][0]["message"], "index": 0}
    ]
    assert "line limit" in err["message"]
    nothing_written(engine)


def test_a_plain_endless_line_is_413(client: TestClient, engine: Engine) -> None:
    body = b'{"robot_id": "' + b"r" * (8 * MiB)
    err = refused(client.post("/ingest/batch?type=robots", content=body, headers=NDJSON), 413)
    assert err["details"][0]["index"] == 0
    nothing_written(engine)


@pytest.fixture
def short_lines(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """The ingestion service with a 2 KiB line limit."""
    small = settings.model_copy(update={"max_line_bytes": 2048})
    with TestClient(create_app(small, engine=engine), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("where", ["between records", "last, without its newline"])
def test_a_long_line_is_413_naming_its_record(
    short_lines: TestClient, engine: Engine, where: str
) -> None:
    good = [f.robot(n) for n in range(1, 6)]
    long = orjson.dumps(f.robot(9, firmware_version="v" * 3000))
    body = ndjson(good[:3]) + b"\n  \n" + ndjson(good[3:]) + long
    if where == "between records":
        body += b"\n" + ndjson([f.robot(10)])
    err = refused(short_lines.post("/ingest/batch?type=robots", content=body, headers=NDJSON), 413)
    # Blank lines are not records: the long one is the sixth record, index 5.
    assert err["details"][0]["index"] == 5
    assert "record 5" in err["message"]
    nothing_written(engine)


def test_a_long_line_arriving_in_pieces_is_refused(short_lines: TestClient, engine: Engine) -> None:
    # Sent chunked: the line's start is held while the rest arrives, and refused at the limit.
    def pieces() -> Iterator[bytes]:
        yield ndjson([f.robot(1)])
        for _ in range(100):
            yield b"x" * 100

    r = short_lines.post("/ingest/batch?type=robots", content=pieces(), headers=NDJSON)
    err = refused(r, 413)
    assert err["details"][0]["index"] == 1
    nothing_written(engine)


@pytest.mark.parametrize("entity", ["telemetry", "robots"])
def test_blank_lines_are_skipped_wherever_they_are(
    client: TestClient, engine: Engine, entity: str
) -> None:
    records = f.samples(4) if entity == "telemetry" else [f.robot(n) for n in range(1, 5)]
    lines = [orjson.dumps(r) for r in records]
    blank = b"\n" * 5000 + b"  \r\n\t\n\x0b\n" + b"\r\n" * 1000
    body = blank + lines[0] + b"\n" + blank + lines[1] + b"\r\n" + lines[2] + blank + lines[3]
    gz = gzip.compress(body + blank)
    r = client.post(f"/ingest/batch?type={entity}", content=gz, headers=GZIP_NDJSON)
    assert r.status_code == 201, r.text
    assert r.json()["received"] == 4
    assert count(engine, telemetry if entity == "telemetry" else robots) == 4


def test_bad_records_among_blank_lines_are_named_by_record(
    client: TestClient, engine: Engine
) -> None:
    body = b"\n\n" + ndjson([f.robot(1)]) + b"   \n\n" + ndjson([f.robot(2, extra=1)])
    err = refused(client.post("/ingest/batch?type=robots", content=body, headers=NDJSON), 422)
    assert [(d["field"], d["index"]) for d in err["details"]] == [("extra", 1)]
    nothing_written(engine)


def test_a_stream_stops_reading_once_the_error_list_is_full(
    client: TestClient, engine: Engine
) -> None:
    bad = orjson.dumps({"robot_id": "r-1", "unknown": 1}) + b"\n"
    r = client.post("/ingest/batch?type=robots", content=bad * (3 * MAX_DETAILS), headers=NDJSON)
    err = refused(r, 422)
    assert len(err["details"]) == MAX_DETAILS
    nothing_written(engine)


def test_gzip_bombs_to_json_endpoints_are_413(
    client: TestClient, engine: Engine, bombs: dict[str, bytes]
) -> None:
    spaces = f.gzip_bomb(b" " * MiB, GIB, head=b'{"type": "robots", "records": [')
    err = refused(client.post("/ingest/batch", content=spaces, headers=GZIP_JSON), 413)
    assert "gzip" in err["message"]
    refused(client.post("/ingest/robot", content=bombs["NULs"], headers=GZIP_JSON), 413)
    nothing_written(engine)


def test_realistic_compressible_uploads_are_accepted(
    client: TestClient, engine: Engine, settings: Settings
) -> None:
    # Seeded telemetry compresses about tenfold (measured in docs/security.md).
    data = seed.generate(seed=7, robots=2, procedure_count=20, telemetry_per_procedure=200)
    samples = list(data.telemetry())
    body = gzip.compress(ndjson(samples), compresslevel=9)
    r = client.post("/ingest/batch?type=telemetry", content=body, headers=GZIP_NDJSON)
    assert r.status_code == 201, r.text
    assert r.json()["received"] == len(samples) == count(engine, telemetry)


def test_constant_readings_pass_the_ratio_limit(settings: Settings, engine: Engine) -> None:
    # A parked arm: every reading the same, only the time moving, about 140-fold in gzip. With
    # the allowance lowered to 1 MiB, the default ratio itself is what lets it through.
    assert settings.max_gzip_ratio == 200
    small = settings.model_copy(update={"gzip_allowance_bytes": MiB})
    one = f.samples(1)[0]
    samples = [one | {"timestamp": s["timestamp"]} for s in f.samples(8000, every_ms=10)]
    raw = ndjson(samples)
    body = gzip.compress(raw, compresslevel=9)
    assert len(raw) > 3 * MiB and len(raw) / len(body) > 100
    with TestClient(create_app(small, engine=engine)) as c:
        r = c.post("/ingest/batch?type=telemetry", content=body, headers=GZIP_NDJSON)
        assert r.status_code == 201, r.text
        # The same limits refuse what inflates faster than the ratio past the allowance.
        bomb = f.gzip_bomb(b"\n" * MiB, 4)
        assert (
            c.post("/ingest/batch?type=telemetry", content=bomb, headers=GZIP_NDJSON).status_code
            == 413
        )
    assert count(engine, telemetry) == len(samples)


def test_concatenated_gzip_members_are_one_body(client: TestClient, engine: Engine) -> None:
    # RFC 1952: a gzip file may be several members; `cat a.gz b.gz` is one valid stream.
    body = gzip.compress(ndjson([f.robot(1)])) + gzip.compress(ndjson([f.robot(2)]))
    r = client.post("/ingest/batch?type=robots", content=body, headers=GZIP_NDJSON)
    assert r.status_code == 201, r.text
    assert r.json()["received"] == 2 == count(engine, robots)
    garbage = gzip.compress(ndjson([f.robot(3)])) + b"not gzip"
    refused(client.post("/ingest/batch?type=robots", content=garbage, headers=GZIP_NDJSON), 400)
    assert count(engine, robots) == 2


# --- Echoes: an error names what was wrong in a few bytes, whatever was sent ----------------

HUGE = "k" * 1_000_000


def small_and_clipped(r: Any, *, most: int = 4096) -> dict[str, Any]:
    err = refused(r, 422)
    assert len(r.content) < most, len(r.content)
    assert "k" * (FIELD_CHARS + 1) not in r.text
    assert any(d["field"].endswith(TRUNCATED) for d in err["details"]), err
    return err


def test_a_huge_unknown_key_in_a_record_is_not_echoed(client: TestClient, engine: Engine) -> None:
    small_and_clipped(client.post("/ingest/robot", json=f.robot(1) | {HUGE: 1}))
    small_and_clipped(client.post("/ingest/telemetry", json=f.samples(1)[0] | {HUGE: 1}))
    small_and_clipped(client.post("/ingest/telemetry", json=[f.samples(1)[0] | {HUGE: 1}]))
    nothing_written(engine)


def test_a_huge_unknown_key_in_a_batch_record_is_not_echoed(
    client: TestClient, engine: Engine
) -> None:
    records = [f.robot(1), f.robot(2) | {HUGE: 1}]
    err = small_and_clipped(
        client.post("/ingest/batch", json={"type": "robots", "records": records})
    )
    assert err["details"][0]["index"] == 1
    big_key = {"type": "robots", "records": [f.robot(1)], HUGE: 1}
    small_and_clipped(client.post("/ingest/batch", json=big_key))
    line = ndjson([f.robot(1) | {HUGE[:500_000]: 1}])
    err = small_and_clipped(client.post("/ingest/batch?type=robots", content=line, headers=NDJSON))
    assert err["details"][0]["index"] == 0
    nothing_written(engine)


def test_the_error_list_is_bounded(client: TestClient, engine: Engine) -> None:
    many = f.robot(1) | {f"unknown-{n}-{'k' * 200}": 1 for n in range(3 * MAX_DETAILS)}
    r = client.post("/ingest/robot", json=many)
    err = refused(r, 422)
    assert len(err["details"]) == MAX_DETAILS
    # Every detail is short: the whole answer is bounded by the list's length.
    assert len(r.content) < MAX_DETAILS * 300
    assert len(err["message"]) < 2000
    batch = {"type": "robots", "records": [many]}
    r = client.post("/ingest/batch", json=batch)
    assert len(refused(r, 422)["details"]) == MAX_DETAILS
    assert len(r.content) < MAX_DETAILS * 300
    nothing_written(engine)


def test_the_bomb_fixture_inflates_to_what_it_says() -> None:
    # The bodies above are what they claim: valid gzip, repeated to the stated size.
    small = f.gzip_bomb(b"ab\n" * 1000, 50, head=b"head\n")
    assert gzip.decompress(small) == b"head\n" + b"ab\n" * 50_000
