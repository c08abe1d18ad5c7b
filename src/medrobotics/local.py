"""The whole platform on one machine: both services and the balancer's front port."""

from __future__ import annotations

import asyncio
import logging
import subprocess  # nosec B404
import sys
import threading
from collections.abc import Callable

import uvloop
from rich.console import Console
from sqlalchemy import func, select

from medrobotics import logs, server
from medrobotics.config import Settings
from medrobotics.storage import migrate
from medrobotics.storage.db import make_engine
from medrobotics.storage.tables import robots

console = Console(stderr=True)


def prepare_database(settings: Settings) -> None:
    """Migrate an embedded database; require an already migrated PostgreSQL."""
    engine = make_engine(settings.db_url, pool_size=1)
    try:
        if engine.dialect.name == "sqlite":
            before, after = migrate.upgrade(engine)
            if before != after:
                console.print(f"embedded database ready at revision {after}")
            return
        at, head = migrate.current(engine), migrate.head()
        if at != head:
            raise SystemExit(
                f"database schema is at {at or 'empty'}, this code needs {head}: "
                "run `medrobotics db upgrade` first"
            )
    finally:
        engine.dispose()


def is_empty(settings: Settings) -> bool:
    """Tell whether the database holds no robots yet."""
    engine = make_engine(settings.db_url, pool_size=1)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(robots)).scalar_one()) == 0
    finally:
        engine.dispose()


def up(
    settings: Settings,
    *,
    host: str,
    port: int,
    api_port: int,
    ingestion_port: int,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run the platform in the foreground until Ctrl-C or SIGTERM."""
    logs.configure(service="local-platform", fmt=settings.log_format, level=settings.log_level)
    # Each server's "started" lines (three servers) say less than the banner below.
    logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, logging.getLogger().level))
    prepare_database(settings)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    front = f"http://{shown}:{port}"

    access = (
        "authentication: required (send Authorization: Bearer <key>)"
        if settings.auth_required
        else "[yellow]authentication: OFF[/yellow] (open to this machine only; "
        "MEDROBOTICS_AUTH=required to turn it on)"
    )

    def ready() -> None:
        console.print(
            f"\n[bold green]medrobotics is up[/bold green] "
            f"({'embedded SQLite' if settings.db_url.startswith('sqlite') else 'PostgreSQL'}, "
            f"lake: {settings.s3_raw_bucket or settings.lake_dir})\n"
            f"  [bold]dashboard:                    {front}/api/dashboard[/bold]\n"
            f"  front (as the load balancer): {front}   export ALB_URL={front}\n"
            f"  ingestion service:            http://{shown}:{ingestion_port}"
            f"   docs {front}/ingest/docs\n"
            f"  API service:                  http://{shown}:{api_port}"
            f"   docs {front}/api/docs\n"
            f"  {access}\n"
            "  Ctrl-C stops it (in-flight requests finish first).\n",
            soft_wrap=True,
        )
        if on_ready is not None:
            threading.Thread(target=on_ready, args=(front,), daemon=True).start()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(
            server.serve_many(
                settings,
                host=host,
                front_port=port,
                api_port=api_port,
                ingestion_port=ingestion_port,
                ready=ready,
            )
        )
    _stop_children()
    console.print("medrobotics stopped")


def seed_in_background(settings: Settings) -> Callable[[str], None]:
    """Return a callback that loads the default sample fleet through the front port."""
    del settings  # the fleet goes through the HTTP API, like any client's data

    def run(front: str) -> None:
        console.print("database is empty: loading the sample fleet through the front port")
        # A child process: the platform can stop at any moment and end it cleanly.
        child = subprocess.Popen(  # noqa: S603  # nosec B603
            [sys.executable, "-m", "medrobotics", "seed", "--url", front]
        )
        _children.append(child)
        child.wait()

    return run


_children: list[subprocess.Popen[bytes]] = []


def _stop_children() -> None:
    for child in _children:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
