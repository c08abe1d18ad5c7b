"""Schema migrations as an explicit step: `medrobotics db upgrade`, never on import."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

MIGRATIONS = Path(__file__).with_name("migrations")
# Transaction advisory lock id ("mrmigr"): two deploys that start the migration task at once
# take turns, and the second finds the schema at head. Archiver locks ("mrlake" + n) differ.
LOCK_ID = 0x6D726D696772


def _config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def current(engine: Engine) -> str | None:
    """Return the revision the database is at, or None when it has no schema."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head() -> str:
    """Return the newest revision this code knows."""
    script = ScriptDirectory.from_config(_config_without_engine())
    return str(script.get_current_head())


def _config_without_engine() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate up to `revision`; return (before, after). Does nothing when already there."""
    return _run(engine, command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> tuple[str | None, str | None]:
    """Migrate down to `revision` (`base` removes everything); return (before, after)."""
    return _run(engine, command.downgrade, revision)


def _run(engine: Engine, action: object, revision: str) -> tuple[str | None, str | None]:
    cfg = _config(engine)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Requests are bounded by the engine's statement timeout; a migration that rewrites
            # or backfills a large table is not a request.
            conn.execute(text("SET LOCAL statement_timeout = 0"))
            # Held until this transaction ends; `before` is read once the lock is ours, so a
            # second upgrade waits for the first and then finds nothing to do. SQLite needs no
            # lock: an embedded database is migrated by the one process that opens it.
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": LOCK_ID})
        before = MigrationContext.configure(conn).get_current_revision()
        cfg.attributes["connection"] = conn
        action(cfg, revision)  # type: ignore[operator]
        after = MigrationContext.configure(conn).get_current_revision()
    return before, after
