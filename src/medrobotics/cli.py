"""The `medrobotics` command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from sqlalchemy import Engine

from medrobotics import config
from medrobotics.storage.db import make_engine

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Surgical robotics data platform."
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema migrations.")
app.add_typer(db_app, name="db")
console = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Local data folder (embedded database, lake folder).", show_default=False
    ),
]


def _settings(data_dir: Path | None = None, **extra: object) -> config.Settings:
    if data_dir is not None:
        os.environ["MEDROBOTICS_DATA_DIR"] = str(data_dir)
    config.get_settings.cache_clear()
    try:
        settings = config.load(**{k: v for k, v in extra.items() if v is not None})
    except config.ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    return settings


def _engine(settings: config.Settings) -> Engine:

    return make_engine(settings.db_url, pool_size=2)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    data_dir: DataDir = None,
) -> None:
    """Migrate the database schema up (does nothing when it is current)."""
    from sqlalchemy.exc import OperationalError

    from medrobotics.storage import migrate

    settings = _settings(data_dir)
    try:
        before, after = migrate.upgrade(_engine(settings), revision)
    except OperationalError:
        console.print("[red]database unreachable[/red]")
        raise typer.Exit(1) from None
    if before == after:
        console.print(f"database schema already up to date (revision {after})")
    else:
        console.print(f"database schema migrated from {before or 'empty'} to {after}")


@db_app.command("downgrade")
def db_downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision, or `base` for empty.")],
    data_dir: DataDir = None,
) -> None:
    """Migrate the database schema down to a revision."""
    from medrobotics.storage import migrate

    before, after = migrate.downgrade(_engine(_settings(data_dir)), revision)
    console.print(f"database schema moved from {before} to {after or 'empty'}")


@db_app.command("current")
def db_current(data_dir: DataDir = None) -> None:
    """Print the database's schema revision and the newest one this code knows."""
    from medrobotics.storage import migrate

    at = migrate.current(_engine(_settings(data_dir)))
    typer.echo(f"current: {at or 'empty'}\nhead: {migrate.head()}")


@app.command()
def serve(
    service: Annotated[Literal["ingestion", "api"], typer.Argument(help="Which service to run.")],
    host: Annotated[str | None, typer.Option(help="Bind address (env HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env PORT; 8080 or 5000).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Run one service as its container runs it."""
    from medrobotics import server

    settings = _settings(data_dir, host=host, port=port)
    server.serve_one(settings, service)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Bind address; loopback unless told otherwise.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Front port, routed as the load balancer does.")] = 8000,
    api_port: Annotated[int, typer.Option(help="API service port.")] = 5000,
    ingestion_port: Annotated[int, typer.Option(help="Ingestion service port.")] = 8080,
    data_dir: DataDir = None,
    seed_if_empty: Annotated[
        bool, typer.Option(help="Load the sample fleet through the front port when empty.")
    ] = False,
) -> None:
    """Run the whole platform on this machine: ingestion, API and the front port."""
    from medrobotics import local

    settings = _settings(data_dir, host=host)
    on_ready = None
    if seed_if_empty:
        local.prepare_database(settings)
        if local.is_empty(settings):
            on_ready = local.seed_in_background(settings)
    local.up(
        settings,
        host=host,
        port=port,
        api_port=api_port,
        ingestion_port=ingestion_port,
        on_ready=on_ready,
    )


def main() -> None:
    """Entry point."""
    app()
