"""Settings: embedded defaults, the task definitions' variables, and clear refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine
from typer.testing import CliRunner

from medrobotics import config
from medrobotics.cli import app as cli
from medrobotics.domain.types import time_window, use_time_window
from medrobotics.ingestion.app import create_app


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DATABASE_URL",
        "RDS_HOST",
        "RDS_PORT",
        "RDS_DBNAME",
        "RDS_USER",
        "RDS_PASSWORD",
        "RDS_SECRET",
        "PORT",
        "ENVIRONMENT",
        "MEDROBOTICS_DATA_DIR",
        "MEDROBOTICS_AUTH",
        "HOST",
    ):
        monkeypatch.delenv(name, raising=False)


def test_embedded_defaults_need_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = config.load(MEDROBOTICS_DATA_DIR=str(tmp_path))
    assert s.db_url == f"sqlite:///{tmp_path.resolve() / 'medrobotics.db'}"
    assert s.lake_dir == tmp_path / "lake"
    assert s.s3_raw_bucket is None and not s.auth_required


def test_rds_variables_build_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RDS_HOST", "db.internal")
    monkeypatch.setenv("RDS_PORT", "5433")
    monkeypatch.setenv("RDS_DBNAME", "fleet")
    monkeypatch.setenv("RDS_USER", "app")
    monkeypatch.setenv("RDS_PASSWORD", "p@ss:word/1")
    s = config.load()
    assert s.db_url == "postgresql+psycopg://app:p%40ss%3Aword%2F1@db.internal:5433/fleet"
    assert "p@ss" not in repr(s)  # secrets are masked in reprs and logs


def test_secrets_manager_json_supplies_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RDS_HOST", "db.internal")
    monkeypatch.setenv("RDS_SECRET", json.dumps({"username": "svc", "password": "s3cret"}))
    assert config.load().db_url == "postgresql+psycopg://svc:s3cret@db.internal:5432/medrobotics"


def test_database_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RDS_HOST", "db.internal")
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h/d")
    assert config.load().db_url == "postgresql+psycopg://u@h/d"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"RDS_SECRET": "not json"}, "RDS_SECRET"),
        ({"RDS_SECRET": '{"username": "x"}'}, "RDS_SECRET"),
        ({"DATABASE_URL": "mysql://x/y"}, "DATABASE_URL"),
        ({"MEDROBOTICS_AUTH": "maybe"}, "MEDROBOTICS_AUTH"),
        ({"ENVIRONMENT": "production"}, "ENVIRONMENT=production needs"),
        ({"MEDROBOTICS_MAX_GZIP_RATIO": "0"}, "MEDROBOTICS_MAX_GZIP_RATIO"),
        ({"MEDROBOTICS_GZIP_ALLOWANCE_BYTES": "-1"}, "MEDROBOTICS_GZIP_ALLOWANCE_BYTES"),
        ({"MEDROBOTICS_MAX_LINE_BYTES": "100"}, "MEDROBOTICS_MAX_LINE_BYTES"),
    ],
)
def test_bad_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(config.ConfigError, match=named):
        config.load()
    # The command line stops with the same message and a non-zero status.
    result = CliRunner().invoke(cli, ["db", "current"])
    assert result.exit_code == 2 and named in result.output


def test_db_upgrade_says_when_nothing_to_do(tmp_path) -> None:  # type: ignore[no-untyped-def]
    runner = CliRunner()
    first = runner.invoke(cli, ["db", "upgrade", "--data-dir", str(tmp_path)])
    assert first.exit_code == 0 and "migrated from empty" in first.output
    again = runner.invoke(cli, ["db", "upgrade", "--data-dir", str(tmp_path)])
    assert again.exit_code == 0 and "already up to date" in again.output


def test_the_plausible_time_window_is_set_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = config.load().time_window
    assert default.earliest == datetime(2000, 1, 1, tzinfo=UTC)
    assert default.ahead == timedelta(days=1)
    monkeypatch.setenv("MEDROBOTICS_EARLIEST_TIME", "2015-06-01T00:00:00+02:00")
    monkeypatch.setenv("MEDROBOTICS_FUTURE_HOURS", "1.5")
    window = config.load().time_window
    assert window.earliest == datetime(2015, 5, 31, 22, tzinfo=UTC)
    assert window.ahead == timedelta(minutes=90)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MEDROBOTICS_EARLIEST_TIME", "yesterday"),
        ("MEDROBOTICS_EARLIEST_TIME", "1850-01-01T00:00:00Z"),
        ("MEDROBOTICS_EARLIEST_TIME", "2999-01-01T00:00:00Z"),
        ("MEDROBOTICS_FUTURE_HOURS", "-1"),
        ("MEDROBOTICS_FUTURE_HOURS", "100000"),
    ],
)
def test_a_bad_time_window_stops_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(config.ConfigError, match=name):
        config.load()


def test_the_ingestion_service_applies_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    before = time_window()
    try:
        s = config.load(MEDROBOTICS_EARLIEST_TIME="2010-01-01T00:00:00Z")
        create_app(s, engine=create_engine("sqlite://"))
        assert time_window().earliest == datetime(2010, 1, 1, tzinfo=UTC)
    finally:
        use_time_window(before)
