"""One typed settings object for both services, the CLI and the tests."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from medrobotics.domain.types import EARLIEST, TimeWindow

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


class Settings(BaseSettings):
    """Platform settings, read from the environment (names as the task definitions set them)."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True
    )

    environment: Literal["development", "test", "staging", "production"] = "development"
    data_dir: Path = Field(Path(".medrobotics"), alias="MEDROBOTICS_DATA_DIR")

    # Database: DATABASE_URL wins; otherwise RDS_* (+ the Secrets Manager JSON); else embedded.
    database_url: str | None = None
    rds_host: str | None = None
    rds_port: int = Field(5432, ge=1, le=65535)
    rds_dbname: str = "medrobotics"
    rds_user: str | None = None
    rds_password: SecretStr | None = None
    rds_secret: SecretStr | None = None
    db_pool_size: int = Field(10, ge=1, le=200, alias="MEDROBOTICS_DB_POOL_SIZE")
    # Seconds a request waits for a pooled connection (and for a new one to open) before its
    # 503: at most 2, so an outage answers at once instead of holding every request.
    db_pool_timeout_s: float = Field(2.0, gt=0, le=2, alias="MEDROBOTICS_DB_POOL_TIMEOUT")

    # Lake: S3 bucket when set, else a folder under the data directory.
    s3_raw_bucket: str | None = None
    lake_prefix: str = Field("raw/", alias="MEDROBOTICS_LAKE_PREFIX")
    lake_kms_key_id: str | None = Field(None, alias="MEDROBOTICS_LAKE_KMS_KEY_ID")
    s3_endpoint_url: str | None = Field(None, alias="MEDROBOTICS_S3_ENDPOINT_URL")
    # Keys the hash that replaces patient ids in the lake (storage.phi). In AWS a Secrets
    # Manager secret injected into the archiver; unset with the local lake, a key generated
    # once into the data folder; unset with S3, no batch payload or snapshot is exported.
    lake_hash_key: SecretStr | None = Field(None, min_length=32, alias="MEDROBOTICS_LAKE_HASH_KEY")
    archive_interval_s: float = Field(30.0, gt=0, alias="MEDROBOTICS_ARCHIVE_INTERVAL")
    archive_batch_rows: int = Field(200_000, ge=1, alias="MEDROBOTICS_ARCHIVE_BATCH_ROWS")
    archive_enabled: bool = Field(True, alias="MEDROBOTICS_ARCHIVE")
    # The archiver's peak memory, whatever the window or transaction size: its record batches
    # and Parquet row groups are sized from it (storage.archive.Budget).
    archive_memory_mb: int = Field(256, ge=1, alias="MEDROBOTICS_ARCHIVE_MEMORY_MB")
    # Rows received less than this long ago may belong to an uncommitted ingest transaction
    # (bounded by storage.db.STATEMENT_TIMEOUT_MS), so the archiver leaves them for later.
    archive_safety_s: float = Field(60.0, ge=0, alias="MEDROBOTICS_ARCHIVE_SAFETY")
    # Compaction of closed days: output objects of about this size, at most once per interval
    # in the archiver pass (`medrobotics lake compact` runs it at any time).
    compact_target_mb: int = Field(256, ge=1, le=5000, alias="MEDROBOTICS_COMPACT_TARGET_MB")
    compact_interval_s: float = Field(3600.0, ge=0, alias="MEDROBOTICS_COMPACT_INTERVAL")
    telemetry_retention_days: int | None = Field(None, ge=1, alias="MEDROBOTICS_RETENTION_DAYS")
    # Monthly telemetry partitions kept made after the current month (PostgreSQL); rows of
    # any other month without one land in the DEFAULT partition (storage.partitions).
    partitions_ahead: int = Field(3, ge=1, le=24, alias="MEDROBOTICS_PARTITIONS_AHEAD")

    # Access control. Unset: open on loopback outside production, required everywhere else.
    auth: Literal["required", "off"] | None = Field(None, alias="MEDROBOTICS_AUTH")
    bootstrap_key: SecretStr | None = Field(None, alias="MEDROBOTICS_BOOTSTRAP_KEY")
    auth_cache_seconds: float = Field(10.0, ge=0, le=300, alias="MEDROBOTICS_AUTH_CACHE_SECONDS")
    rate_limit_per_s: float = Field(1000.0, ge=0, alias="MEDROBOTICS_RATE_LIMIT")
    rate_limit_burst: int = Field(2000, ge=1, alias="MEDROBOTICS_RATE_BURST")

    # Observability: Prometheus always; "emf" adds CloudWatch metric lines on stdout (ECS).
    metrics: Literal["prometheus", "emf"] = Field("prometheus", alias="MEDROBOTICS_METRICS")
    emf_interval_s: float = Field(60.0, gt=0, alias="MEDROBOTICS_EMF_INTERVAL")

    # Plausible time: sample and event times before the earliest, or more than the hours given
    # past the server's clock, are refused (docs/data-rules.md).
    earliest_time: datetime = Field(EARLIEST, alias="MEDROBOTICS_EARLIEST_TIME")
    future_hours: float = Field(24.0, ge=0, le=24 * 366, alias="MEDROBOTICS_FUTURE_HOURS")

    # Serving.
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)
    max_body_bytes: int = Field(50 * 1024 * 1024, ge=1024, alias="MEDROBOTICS_MAX_BODY_BYTES")
    max_stream_bytes: int = Field(
        4 * 1024 * 1024 * 1024, ge=1024, alias="MEDROBOTICS_MAX_STREAM_BYTES"
    )
    # A gzip body may inflate to `max_gzip_ratio` times the compressed bytes read so far, or
    # to the allowance whatever its ratio; checked while it inflates, so a bomb stops early.
    # Real telemetry compresses about 10-fold, constant readings about 140-fold (docs/security.md).
    max_gzip_ratio: int = Field(200, ge=1, alias="MEDROBOTICS_MAX_GZIP_RATIO")
    gzip_allowance_bytes: int = Field(
        16 * 1024 * 1024, ge=0, alias="MEDROBOTICS_GZIP_ALLOWANCE_BYTES"
    )
    max_line_bytes: int = Field(1024 * 1024, ge=1024, alias="MEDROBOTICS_MAX_LINE_BYTES")
    max_batch_records: int = Field(100_000, ge=1, alias="MEDROBOTICS_MAX_BATCH_RECORDS")
    max_page_size: int = Field(500, ge=1, le=10_000, alias="MEDROBOTICS_MAX_PAGE_SIZE")
    analytics_cache_seconds: float = Field(
        5.0, ge=0, le=300, alias="MEDROBOTICS_ANALYTICS_CACHE_SECONDS"
    )
    log_format: Literal["auto", "json", "console"] = Field("auto", alias="MEDROBOTICS_LOG_FORMAT")
    log_level: str = Field("INFO", alias="MEDROBOTICS_LOG_LEVEL")

    @field_validator("lake_prefix")
    @classmethod
    def _prefix_slash(cls, value: str) -> str:
        value = value.strip("/")
        return f"{value}/" if value else ""

    @field_validator("lake_hash_key", mode="before")
    @classmethod
    def _empty_key_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("earliest_time")
    @classmethod
    def _earliest_in_the_past(cls, value: datetime) -> datetime:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        if not datetime(1900, 1, 1, tzinfo=UTC) <= value <= datetime.now(UTC):
            raise ValueError("must lie between 1900-01-01 and now")
        return value.astimezone(UTC)

    @field_validator("database_url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if value.startswith(("postgres://", "postgresql://")):
            # Pin the psycopg 3 driver; plain URLs from hosting providers name no driver.
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        if not value.startswith(("postgresql+psycopg://", "sqlite://")):
            raise ValueError("must be a postgresql:// or sqlite:// URL")
        return value

    @field_validator("rds_secret")
    @classmethod
    def _secret_json(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            parsed = json.loads(value.get_secret_value())
        except ValueError:
            raise ValueError('must be the JSON secret {"username": ..., "password": ...}') from None
        if not isinstance(parsed, dict) or "password" not in parsed:
            raise ValueError('must be a JSON object with at least a "password" key')
        return value

    @model_validator(mode="after")
    def _production_needs_real_storage(self) -> Settings:
        if self.environment == "production" and self.db_url.startswith("sqlite"):
            raise ValueError("ENVIRONMENT=production needs DATABASE_URL or RDS_HOST")
        return self

    @model_validator(mode="after")
    def _no_open_service_in_public(self) -> Settings:
        if self.auth == "off" and (self.environment == "production" or not self.is_loopback):
            raise ValueError(
                "MEDROBOTICS_AUTH=off is refused when binding to a non-loopback address "
                "or with ENVIRONMENT=production"
            )
        return self

    @property
    def auth_required(self) -> bool:
        """Tell whether requests need an API key (explicit, or implied by where we listen)."""
        if self.auth is not None:
            return self.auth == "required"
        return self.environment == "production" or not self.is_loopback

    @property
    def db_url(self) -> str:
        """Return the SQLAlchemy URL in force: DATABASE_URL, then RDS_*, then the embedded file."""
        if self.database_url:
            return self.database_url
        if self.rds_host:
            user, password = (
                self.rds_user,
                self.rds_password.get_secret_value() if self.rds_password else None,
            )
            if self.rds_secret:
                secret = json.loads(self.rds_secret.get_secret_value())
                user = secret.get("username", user)
                password = secret["password"]
                host = secret.get("host", self.rds_host)
            else:
                host = self.rds_host
            auth = quote(user or "postgres", safe="")
            if password:
                auth += ":" + quote(password, safe="")
            dbname = quote(self.rds_dbname, safe="")
            return f"postgresql+psycopg://{auth}@{host}:{self.rds_port}/{dbname}"
        return f"sqlite:///{(self.data_dir / 'medrobotics.db').resolve()}"

    @property
    def time_window(self) -> TimeWindow:
        """Return the window sample and event times must lie in."""
        return TimeWindow(self.earliest_time, timedelta(hours=self.future_hours))

    @property
    def lake_dir(self) -> Path:
        """Return the local folder that stands in for the bucket."""
        return self.data_dir / "lake"

    @property
    def is_loopback(self) -> bool:
        """Tell whether the service binds only to this machine."""
        return self.host in LOOPBACK_HOSTS


def load(**overrides: object) -> Settings:
    """Build settings from the environment plus overrides; raise ConfigError naming a bad one."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{_env_name(name)}: {msg}" if name else msg)
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def _env_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    if info is not None and info.alias:
        return info.alias
    return field.upper()
