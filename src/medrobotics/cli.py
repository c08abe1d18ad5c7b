"""The `medrobotics` command line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console

from medrobotics import config

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


def _engine(settings: config.Settings):  # type: ignore[no-untyped-def]
    from medrobotics.storage.db import make_engine

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


def main() -> None:
    """Entry point."""
    app()
