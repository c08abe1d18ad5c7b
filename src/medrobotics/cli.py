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


@app.command()
def seed(
    url: Annotated[
        str,
        typer.Option(
            envvar="MEDROBOTICS_URL",
            help="Ingestion service or front port (a deployed load balancer too).",
        ),
    ] = "http://127.0.0.1:8000",
    robots: Annotated[int, typer.Option(min=1, max=10_000, help="Robots in the fleet.")] = 50,
    facilities: Annotated[int, typer.Option(min=1, max=1_000, help="Facilities.")] = 10,
    procedures: Annotated[
        int, typer.Option(min=0, max=2_000_000, help="Procedures over the two years.")
    ] = 5000,
    telemetry_per_procedure: Annotated[
        int, typer.Option(min=0, max=10_000, help="Telemetry samples per procedure.")
    ] = 20,
    random_seed: Annotated[int, typer.Option(help="Same seed, same data.")] = 42,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="MEDROBOTICS_API_KEY",
            help="Sent as `Authorization: Bearer <key>`.",
            show_default=False,
        ),
    ] = None,
    end: Annotated[
        str, typer.Option(help="End of the two-year window (ISO 8601; no zone means UTC).")
    ] = "2025-10-31T00:00:00Z",
    batch_size: Annotated[int, typer.Option(min=1, max=1000, help="Records per request.")] = 1000,
    concurrency: Annotated[
        int, typer.Option(min=1, max=16, help="Requests in flight at once.")
    ] = 4,
) -> None:
    """Generate a realistic sample fleet and send it through the ingestion batch API."""
    import time
    from datetime import UTC, datetime

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
    from rich.table import Table

    from medrobotics import seed as seeding

    try:
        until = datetime.fromisoformat(end)
    except ValueError:
        console.print(f"[red]--end: not an ISO 8601 time: {end!r}[/red]")
        raise typer.Exit(2) from None
    until = until.replace(tzinfo=UTC) if until.tzinfo is None else until.astimezone(UTC)
    try:
        target = seeding.base_url(url)
    except ValueError as exc:
        console.print(f"[red]--url: {exc}[/red]")
        raise typer.Exit(2) from None

    began = time.monotonic()
    dataset = seeding.generate(
        seed=random_seed,
        robots=robots,
        facilities=facilities,
        procedure_count=procedures,
        telemetry_per_procedure=telemetry_per_procedure,
        end=until,
    )
    counts = dataset.counts()
    console.print(f"seeding {target} (random seed {random_seed})")
    progress = Progress(
        "[progress.description]{task.description:<12}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    tasks = {e: progress.add_task(e, total=counts[e]) for e in seeding.ORDER}
    try:
        with (
            progress,
            seeding.Sender(
                target, api_key=api_key, batch_size=batch_size, concurrency=concurrency
            ) as sender,
        ):
            sent = sender.send(dataset, progress=lambda e, n: progress.advance(tasks[e], n))
    except seeding.SeedError as exc:
        console.print(f"[red]seed failed: {exc}[/red]")
        raise typer.Exit(1) from None
    elapsed = time.monotonic() - began

    table = Table(title=f"Sent to {target} in {elapsed:.1f} s")
    for column in ("entity", "records", "new or updated", "already stored", "requests"):
        table.add_column(column, justify="left" if column == "entity" else "right")
    for entity, s in sent.items():
        dup = str(s.duplicates) if entity == "telemetry" else "-"
        table.add_row(entity, str(s.records), str(s.written), dup, str(s.batches))
    table.add_row(
        "total",
        str(sum(s.records for s in sent.values())),
        str(sum(s.written for s in sent.values())),
        "",
        str(sum(s.batches for s in sent.values())),
        style="bold",
    )
    Console().print(table)


def main() -> None:
    """Entry point."""
    app()
