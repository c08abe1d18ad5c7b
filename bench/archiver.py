"""One archiver process for the benchmark: `python -m bench.archiver --lake DIR`.

Exports telemetry window after window until caught up (DATABASE_URL from the environment),
then runs the remaining archiver passes (batch payloads), and prints one JSON line: rows,
objects, windows and seconds of the telemetry export alone (not the interpreter's start),
batches and seconds of the rest, and the process's peak RSS after the telemetry export and at
the end.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench.tools import peak_rss_mb
from medrobotics import config
from medrobotics.storage import archive
from medrobotics.storage.db import make_engine
from medrobotics.storage.lake import LocalLake


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lake", required=True, help="the local lake folder")
    args = parser.parse_args()
    settings = config.load()
    if settings.database_url is None:
        raise SystemExit("DATABASE_URL is not set")
    engine = make_engine(settings.database_url, pool_size=2)
    lake = LocalLake(Path(args.lake))
    # The archiver is a long-running process: its libraries are loaded once, not per pass.
    archive.warm_up()
    # Telemetry first, window after window, timed alone: the figure is the export's rate.
    report = archive.Report()
    t0 = time.perf_counter()
    while True:
        one = archive.Report()
        with archive.exclusive(engine, archive.TELEMETRY) as mine:
            if not mine:
                raise SystemExit("another archiver holds the telemetry stream")
            archive.export_telemetry(engine, lake, settings, one)
        report.add(one)
        if not one.more:
            break
    seconds = time.perf_counter() - t0
    # The peak so far is the telemetry export's alone: the passes below add snapshots of the
    # other tables and the analytics roll-ups, whose memory follows those tables' sizes.
    rss_telemetry = peak_rss_mb()
    # Then the rest of the passes (batch payloads, partitions), timed on their own.
    t1 = time.perf_counter()
    rest = archive.run_until_caught_up(engine, lake, settings)
    print(
        json.dumps(
            {
                "rows": report.telemetry_rows,
                "objects": report.objects,
                "windows": report.windows,
                "seconds": seconds,
                "batches": rest.batches,
                "rest_seconds": time.perf_counter() - t1,
                "rss_telemetry_mb": rss_telemetry,
                "rss_peak_mb": peak_rss_mb(),
            }
        )
    )
    engine.dispose()


if __name__ == "__main__":
    main()
