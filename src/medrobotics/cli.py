"""The `medrobotics` command line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
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
db_app = typer.Typer(
    no_args_is_help=True, help="Database schema migrations and telemetry partitions."
)
app.add_typer(db_app, name="db")
keys_app = typer.Typer(no_args_is_help=True, help="API keys: create, list, expire, revoke.")
app.add_typer(keys_app, name="keys")
lake_app = typer.Typer(no_args_is_help=True, help="The lake: compaction of closed days.")
app.add_typer(lake_app, name="lake")
analytics_app = typer.Typer(no_args_is_help=True, help="Analytics roll-ups of closed days.")
app.add_typer(analytics_app, name="analytics")
console = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Local data folder (embedded database, lake folder).", show_default=False
    ),
]


def _settings(data_dir: Path | None = None, **extra: object) -> config.Settings:
    overrides = {k: v for k, v in extra.items() if v is not None}
    if data_dir is not None:
        overrides["MEDROBOTICS_DATA_DIR"] = str(data_dir)
    try:
        settings = config.load(**overrides)
    except config.ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    return settings


@contextmanager
def _failing(what: str) -> Iterator[None]:
    """Turn a lake or database failure into a one-line message and exit status 1."""
    from sqlalchemy.exc import SQLAlchemyError

    from medrobotics.errors import Unavailable
    from medrobotics.storage.lake import LakeError

    try:
        yield
    except (LakeError, Unavailable) as exc:
        console.print(f"[red]{what} failed: {exc}[/red]")
        raise typer.Exit(1) from None
    except SQLAlchemyError as exc:
        console.print(f"[red]{what} failed: database error ({type(exc).__name__})[/red]")
        raise typer.Exit(1) from None


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
    engine = _engine(settings)
    try:
        before, after = migrate.upgrade(engine, revision)
    except OperationalError:
        console.print("[red]database unreachable[/red]")
        raise typer.Exit(1) from None
    if before == after:
        console.print(f"database schema already up to date (revision {after})")
    else:
        console.print(f"database schema migrated from {before or 'empty'} to {after}")
    if after == migrate.head():
        _maintain_partitions(engine, settings)


@db_app.command("partitions")
def db_partitions(data_dir: DataDir = None) -> None:
    """Make the telemetry partitions ahead and retire those retention emptied (PostgreSQL)."""
    from sqlalchemy.exc import OperationalError

    from medrobotics.storage import migrate

    settings = _settings(data_dir)
    engine = _engine(settings)
    try:
        at = migrate.current(engine)
    except OperationalError:
        console.print("[red]database unreachable[/red]")
        raise typer.Exit(1) from None
    if at != migrate.head():
        console.print(f"[red]schema at {at or 'empty'}: run `medrobotics db upgrade` first[/red]")
        raise typer.Exit(1)
    _maintain_partitions(engine, settings)


def _maintain_partitions(engine: Engine, settings: config.Settings) -> None:
    from medrobotics.storage import partitions
    from medrobotics.storage.db import is_postgres

    if not is_postgres(engine):
        typer.echo("telemetry partitions: none on the embedded database")
        return
    from sqlalchemy.exc import SQLAlchemyError

    from medrobotics.errors import Unavailable

    try:
        done = partitions.maintain(
            engine,
            ahead=settings.partitions_ahead,
            retention_days=settings.telemetry_retention_days,
        )
        with engine.connect() as conn:
            months = sorted(partitions.existing(conn))
    except (Unavailable, SQLAlchemyError) as exc:
        console.print(f"[red]partition maintenance failed: {type(exc).__name__}[/red]")
        raise typer.Exit(1) from None
    span = "none"
    if months:
        span = f"{months[0][0]}-{months[0][1]:02d} to {months[-1][0]}-{months[-1][1]:02d}"
    typer.echo(f"telemetry partitions: {len(months)} monthly ({span}) and the default")
    typer.echo(f"created: {', '.join(done.created) or 'none'}")
    typer.echo(f"dropped: {', '.join(done.dropped) or 'none'}")
    if done.rows_deleted:
        typer.echo(f"retention: {done.rows_deleted} rows deleted from the default partition")


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


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="Who or what holds the key.")],
    scope: Annotated[
        list[str], typer.Option(help="ingest:write, api:read, phi:read or admin (repeatable).")
    ],
    expires_days: Annotated[
        int | None, typer.Option(help="Days until the key expires (never when omitted).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an API key and print it once (only a salted hash is stored)."""
    from datetime import UTC, datetime, timedelta

    from medrobotics import auth

    expires = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    try:
        issued = auth.issue(
            _engine(_settings(data_dir)), name=name, scopes=scope, expires_at=expires
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(
        f"key {issued.key_id} for {name!r}, scopes {', '.join(issued.scopes)}"
        f"{f', expires {expires:%Y-%m-%d}' if expires else ''}. It is shown only now:"
    )
    typer.echo(issued.key)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List keys (ids, names, scopes, state; never the keys)."""
    from datetime import UTC, datetime

    from rich.table import Table

    from medrobotics.storage import keys

    with _engine(_settings(data_dir)).connect() as conn:
        rows = keys.list_all(conn)
    now = datetime.now(UTC)
    table = Table("key id", "name", "scopes", "created", "state")
    for r in rows:
        state = "active"
        if r["revoked_at"] is not None:
            state = f"revoked {r['revoked_at']:%Y-%m-%d}"
        elif r["expires_at"] is not None:
            verb = "expired" if r["expires_at"] <= now else "expires"
            state = f"{verb} {r['expires_at']:%Y-%m-%d}"
        table.add_row(
            r["key_id"], r["name"], " ".join(r["scopes"]), f"{r['created_at']:%Y-%m-%d}", state
        )
    Console().print(table)


def _set_key_time(key_id: str, column: str, data_dir: Path | None) -> None:
    from datetime import UTC, datetime

    from medrobotics.storage import keys

    with _engine(_settings(data_dir)).begin() as conn:
        found = keys.set_time(conn, key_id=key_id, column=column, at=datetime.now(UTC))
    if not found:
        console.print(f"[red]no key {key_id}[/red]")
        raise typer.Exit(1)
    console.print(f"key {key_id} {'revoked' if column == 'revoked_at' else 'expired'}")


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None) -> None:
    """Revoke a key now."""
    _set_key_time(key_id, "revoked_at", data_dir)


@keys_app.command("expire")
def keys_expire(key_id: str, data_dir: DataDir = None) -> None:
    """Expire a key now."""
    _set_key_time(key_id, "expires_at", data_dir)


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
        str | None,
        typer.Option(
            help="End of the two-year window (ISO 8601; no zone means UTC). Default: today "
            "00:00 UTC, so the analytics' recent windows have data; pin it to reproduce a "
            "fleet exactly.",
            show_default=False,
        ),
    ] = None,
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

    if end is None:
        end = datetime.now(UTC).date().isoformat()
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


@app.command("archiver")
def archiver_cmd(data_dir: DataDir = None) -> None:
    """Run the lake archiver until SIGTERM or SIGINT (no HTTP; the ECS archiver service)."""
    from medrobotics import archiver

    archiver.run(_settings(data_dir))


@app.command("archive")
def archive_cmd(data_dir: DataDir = None) -> None:
    """Export committed telemetry, batch payloads and the day's snapshots to the lake."""

    from medrobotics.storage import archive
    from medrobotics.storage.db import reading
    from medrobotics.storage.lake import open_lake

    settings = _settings(data_dir)
    engine = _engine(settings)
    try:
        with _failing("archive"):
            report = archive.run_until_caught_up(engine, open_lake(settings), settings)
            with reading(engine) as conn:
                lag = archive.lag(conn)
    finally:
        engine.dispose()
    where = (settings.s3_raw_bucket and f"s3://{settings.s3_raw_bucket}") or settings.lake_dir
    typer.echo(
        f"archived {report.telemetry_rows} samples in {report.objects} objects "
        f"({report.windows} windows) and {report.batches} batches to {where}/"
        f"{settings.lake_prefix}"
    )
    if report.partitions_created:
        typer.echo(f"partitions: {report.partitions_created} months made ahead")
    if report.partitions_dropped or report.rows_deleted:
        typer.echo(
            f"retention: {report.partitions_dropped} partitions dropped, "
            f"{report.rows_deleted} rows deleted"
        )
    if report.snapshots:
        typer.echo(f"snapshots: {report.snapshots} tables")
    if report.skipped:
        typer.echo(f"skipped (another archiver is running): {', '.join(report.skipped)}")
    typer.echo(
        f"pending: {lag['pending_rows']} samples (oldest {lag['lag_seconds']:.0f} s), "
        f"{lag['pending_batches']} batches"
    )
    if report.refused:
        console.print(
            f"[red]not exported: {', '.join(report.refused)} (the lake is S3 and "
            "MEDROBOTICS_LAKE_HASH_KEY is not set)[/red]"
        )
        raise typer.Exit(1)


@lake_app.command("compact")
def lake_compact(
    day: Annotated[
        list[str] | None,
        typer.Option(
            "--date",
            help="A UTC day to compact (YYYY-MM-DD, repeatable); default every closed day.",
            show_default=False,
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Rewrite closed days' telemetry objects into one per robot and print what changed."""
    from datetime import date

    from medrobotics.storage import archive, compact
    from medrobotics.storage.lake import open_lake

    try:
        days = sorted({date.fromisoformat(d) for d in day}) if day else None
    except ValueError:
        raise typer.BadParameter("expected YYYY-MM-DD", param_hint="--date") from None
    settings = _settings(data_dir)
    engine = _engine(settings)
    try:
        with _failing("compaction"), archive.exclusive(engine, archive.TELEMETRY) as mine:
            if not mine:
                console.print("[red]skipped: an archiver holds the lake; try again later[/red]")
                raise typer.Exit(1)
            report = compact.compact(
                engine, open_lake(settings), settings, days=days, discover=days is None
            )
    finally:
        engine.dispose()
    for d in report.days:
        typer.echo(
            f"{d.day.isoformat()}: {d.objects_before} -> {d.objects_after} objects, "
            f"{d.rows} samples rewritten, {d.deleted} objects removed"
        )
    if report.skipped:
        typer.echo(
            "left alone (open, or an archive window still pending): "
            + ", ".join(d.isoformat() for d in report.skipped)
        )
    typer.echo(
        f"compacted {report.rows} samples into {report.written} objects, "
        f"removed {report.deleted} objects over {len(report.days)} days"
    )


@analytics_app.command("rollup")
def analytics_rollup(data_dir: DataDir = None) -> None:
    """Roll up closed UTC days not rolled yet or changed since (the archiver does it too)."""

    from medrobotics.storage import analytics, archive

    engine = _engine(_settings(data_dir))
    try:
        with _failing("roll-up"), archive.exclusive(engine, archive.ANALYTICS) as mine:
            if not mine:
                typer.echo("skipped: another roll-up is running")
                return
            days = analytics.roll_up_closed_days(engine)
    finally:
        engine.dispose()
    typer.echo(f"rolled up {days} days")


def main() -> None:
    """Entry point."""
    app()
