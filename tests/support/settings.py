"""Settings for a test: its database and a data folder of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from medrobotics import config


def for_engine(engine: Engine, tmp_path: Path, **extra: Any) -> config.Settings:
    """Return settings pointing at `engine`'s database and a data folder under `tmp_path`."""
    return config.load(
        database_url=engine.url.render_as_string(hide_password=False),
        MEDROBOTICS_DATA_DIR=str(tmp_path / "data"),
        environment="test",
        **extra,
    )


def for_archiving(engine: Engine, tmp_path: Path, **extra: Any) -> config.Settings:
    """As `for_engine`, for a test that archives by hand what it has just committed.

    Production waits past the commit bound (the archive safety) and archives in the background.
    """
    return for_engine(
        engine, tmp_path, MEDROBOTICS_ARCHIVE_SAFETY=0, MEDROBOTICS_ARCHIVE=False, **extra
    )
