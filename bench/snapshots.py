"""Daily snapshot of a large procedures table: rows/s and the archiver's peak memory.

    python -m bench.snapshots --rows 1000000        # the figure (a few minutes of loading)
    BENCH_SNAPSHOT_ROWS=20000 python -m bench.snapshots   # a quick check that it works

Loads `--rows` procedures into a scratch database on the PostgreSQL server given (created and
dropped here), then writes the procedures snapshot in a child process, as the archiver does,
and reports its wall time, rows/s and peak RSS next to the RSS of the same process before it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.tools import peak_rss_mb

ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGET_PEAK_MB = 256  # the archiver's memory setting (issue #19)

LOAD = """
INSERT INTO procedures (procedure_id, robot_id, procedure_type, procedure_category, start_time,
    end_time, duration_minutes, surgeon_id, surgeon_name, patient_id, patient_age,
    patient_gender, complexity_score, status)
SELECT 'proc-' || lpad(i::text, 8, '0'), 'robot-' || (i % 500), 'Radical Prostatectomy',
    'urological', ts, ts + interval '150 minutes', 150, 'surg-' || (i % 900), 'Dr. Grey',
    'patient-' || (i % 400000), 20 + i % 80, 'F', 1 + (i % 40) / 10.0, 'completed'
FROM (SELECT i, timestamptz '2020-01-01' + i * interval '3 minutes' AS ts
      FROM generate_series(CAST(:lo AS integer), CAST(:hi AS integer)) AS i) AS s
"""


def _child(url: str, out: Path) -> None:
    from medrobotics.storage import phi, snapshots
    from medrobotics.storage.db import make_engine
    from medrobotics.storage.lake import LocalLake
    from medrobotics.storage.tables import procedures

    engine = make_engine(url, pool_size=2)
    before = peak_rss_mb()
    started = time.perf_counter()
    rows = snapshots.write_snapshot(
        engine, LocalLake(out), procedures, "procedures.parquet", phi.Hasher(b"b" * 32)
    )
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    size = (out / "procedures.parquet").stat().st_size
    print(
        json.dumps(
            {
                "rows": rows,
                "seconds": seconds,
                "rss_before_mb": before,
                "peak_rss_mb": peak,
                "object_mb": size / 2**20,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=int(os.environ.get("BENCH_SNAPSHOT_ROWS", 1_000_000))
    )
    parser.add_argument("--child", nargs=2, metavar=("URL", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]))
        return

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from medrobotics.storage import migrate
    from medrobotics.storage.db import make_engine

    name = f"mr_bench_snap_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        engine = make_engine(url, pool_size=2)
        migrate.upgrade(engine)
        started = time.perf_counter()
        step = 100_000  # one statement each: under the 30 s statement timeout
        for lo in range(1, args.rows + 1, step):
            with engine.begin() as conn:
                conn.execute(text(LOAD), {"lo": lo, "hi": min(lo + step - 1, args.rows)})
        print(
            f"loaded {args.rows} procedures in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        engine.dispose()
        with tempfile.TemporaryDirectory() as out:
            run = subprocess.run(  # nosec B603: our own interpreter and module
                [sys.executable, "-m", "bench.snapshots", "--child", url, out],
                check=True,
                capture_output=True,
                text=True,
            )
        got = json.loads(run.stdout)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print(
        f"snapshot of {got['rows']} procedures: {got['seconds']:.1f} s, "
        f"{got['rows'] / got['seconds']:,.0f} rows/s, object {got['object_mb']:.1f} MB"
    )
    print(
        f"archiver peak RSS {got['peak_rss_mb']:.0f} MB (before the snapshot "
        f"{got['rss_before_mb']:.0f} MB; target under {TARGET_PEAK_MB} MB)"
    )


if __name__ == "__main__":
    main()
