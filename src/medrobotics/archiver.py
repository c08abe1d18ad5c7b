"""The lake archiver as a process of its own: the ECS archiver service runs `medrobotics archiver`.

It serves no HTTP. Ingestion tasks then run with MEDROBOTICS_ARCHIVE=0, so scaling ingestion
neither multiplies archivers nor shares ingestion's memory with a window's export. Two archivers
at once (a deployment overlap) are safe: each stream is taken under an advisory lock
(storage.archive.exclusive) and the second one skips it.
"""

from __future__ import annotations

import asyncio
import signal
from contextlib import suppress

from medrobotics import logs, metrics
from medrobotics.config import Settings
from medrobotics.storage import archive
from medrobotics.storage.db import make_engine
from medrobotics.storage.lake import open_lake

SERVICE = "archiver"

log = logs.get("medrobotics.archiver")


def run(settings: Settings) -> None:
    """Archive until SIGTERM or SIGINT, then finish the pass in progress and return."""
    logs.configure(service=SERVICE, fmt=settings.log_format, level=settings.log_level)
    asyncio.run(_main(settings))


async def _main(settings: Settings) -> None:
    # One connection archives; the second serves the lag query beside a long pass.
    engine = make_engine(settings.db_url, pool_size=2)
    lake = open_lake(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    emf = None
    if settings.metrics == "emf":
        emf = asyncio.create_task(
            metrics.emit_emf(
                SERVICE, settings.environment, interval=settings.emf_interval_s, lag=True
            )
        )
    where = f"s3://{settings.s3_raw_bucket}" if settings.s3_raw_bucket else str(settings.lake_dir)
    log.info(
        "starting",
        database="postgresql" if settings.db_url.startswith("postgresql") else "sqlite",
        lake=f"{where}/{settings.lake_prefix}",
        interval_s=settings.archive_interval_s,
    )
    try:
        # Returns once `stop` is set and the pass in progress (if any) has finished.
        await archive.run_forever(engine, lake, settings, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if emf is not None:
            emf.cancel()  # writes the last line on its way out
            with suppress(asyncio.CancelledError):
                await emf
        engine.dispose()
    log.info("stopped")
