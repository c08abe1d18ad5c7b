"""Ceilings measured in the same run: raw binary COPY and a commit per row."""

from __future__ import annotations

import time
from datetime import timedelta

import psycopg

from bench.data import BASE, batch_template
from medrobotics.domain.telemetry import COLUMNS, fast_rows

_COLS = ", ".join(f'"{c}"' for c in COLUMNS)
COPY_IN = f"COPY telemetry ({_COLS}) FROM STDIN (FORMAT BINARY)"
_TYPES = ["text", "text", "timestamptz"] + [
    "text" if c == "tool_type" else "float8" for c in COLUMNS[3:]
]
# The same rows as the HTTP bodies (one procedure per 1,000-row batch, 10 ms apart), encoded
# by the server: no Python in the timed loop at all.
_ENCODE = """
COPY (SELECT 'copy-' || %(batch)s::text, 'r-0001',
             %(base)s::timestamptz + make_interval(secs => g * 0.01),
             random() * 200 - 100, random() * 200 - 100, random() * 200 - 100,
             random() * 200 - 100, 'grasper', random() * 200 - 100, random() * 200 - 100,
             random() * 200 - 100, random() * 200 - 100, random() * 200 - 100,
             random() * 200 - 100, random() * 200 - 100, random() * 200 - 100,
             random() * 200 - 100
      FROM generate_series(0, %(n)s - 1) AS g) TO STDOUT (FORMAT BINARY)
"""


def truncate(conn: psycopg.Connection) -> None:
    conn.execute("TRUNCATE telemetry")
    conn.commit()


def encoded_batches(url: str, batches: int, size: int = 1000) -> list[bytes]:
    """Binary COPY buffers produced by the server, one per `size`-row batch."""
    out = []
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        for b in range(batches):
            buf = bytearray()
            params = {"batch": b, "base": BASE, "n": size}
            with cur.copy(_ENCODE, params) as copy:  # type: ignore[arg-type]
                for data in copy:
                    buf += data
            out.append(bytes(buf))
    return out


def copy_server(url: str, buffers: list[bytes], rows_per: int = 1000) -> float:
    """(a) rows/s: COPY pre-encoded binary buffers, one transaction per buffer."""
    with psycopg.connect(url) as conn:
        truncate(conn)
        with conn.cursor() as cur:
            t0 = time.perf_counter()
            for buf in buffers:
                with cur.copy(COPY_IN) as copy:
                    copy.write(buf)
                conn.commit()
            elapsed = time.perf_counter() - t0
    return len(buffers) * rows_per / elapsed


def client_rows(batches: int) -> list[list[tuple[object, ...]]]:
    """Python row tuples as the service's decoder produces them (from the JSON template)."""
    template = batch_template(1000, ndjson=False)
    out = []
    for b in range(batches):
        body = template.replace(b"@PID@", f"client-{b}".encode())
        rows = fast_rows(body[body.index(b"[") : body.rindex(b"]") + 1])
        assert rows is not None
        out.append(rows)
    return out


def copy_client(url: str, batches: list[list[tuple[object, ...]]]) -> float:
    """(b) rows/s: psycopg write_row from Python tuples, one transaction per 1,000 rows."""
    with psycopg.connect(url) as conn:
        truncate(conn)
        with conn.cursor() as cur:
            t0 = time.perf_counter()
            n = 0
            for rows in batches:
                with cur.copy(COPY_IN) as copy:
                    copy.set_types(_TYPES)
                    for row in rows:
                        copy.write_row(row)
                conn.commit()
                n += len(rows)
            elapsed = time.perf_counter() - t0
    return n / elapsed


def insert_commit(url: str, seconds: float) -> float:
    """Single-row INSERT + commit per row, one connection: the fsync-bound rate."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE telemetry")
        sql = (
            "INSERT INTO telemetry (procedure_id, robot_id, timestamp, arm_position_x) "
            "VALUES ('commit', 'r-0001', %s, 1.0)"
        )
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            conn.execute(sql, (BASE + timedelta(milliseconds=n),))
            n += 1
        rate = n / (time.perf_counter() - t0)
        conn.execute("TRUNCATE telemetry")
    return rate
