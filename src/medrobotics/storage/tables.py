"""Core table definitions: the single metadata that migrations and queries read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    false,
    func,
    text,
)
from sqlalchemy.dialects import postgresql

from medrobotics.domain.maintenance import MAINTENANCE_TYPES
from medrobotics.domain.outcomes import SUCCESS_STATUSES
from medrobotics.domain.procedures import CATEGORIES, PROCEDURE_STATUSES
from medrobotics.domain.robots import ROBOT_STATUSES
from medrobotics.domain.telemetry import READINGS

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (timestamptz on PostgreSQL, ISO text on SQLite)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        # SQLite keeps text; a fixed naive UTC form keeps it sortable and comparable.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _enum_check(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


def _now() -> Any:
    return func.current_timestamp()


ID = String(128)
JSON_LIST = JSON().with_variant(postgresql.JSONB(), "postgresql")

robots = Table(
    "robots",
    metadata,
    Column("robot_id", ID, primary_key=True),
    Column("robot_serial_number", String(200), unique=True),
    Column("robot_model", String(200), nullable=False),
    Column("manufacturer", String(200)),
    Column("installation_date", Date),
    Column("facility_id", ID, nullable=False),
    Column("facility_name", String(200)),
    Column("status", String(20), nullable=False, server_default="operational"),
    Column("last_maintenance_date", Date),
    Column("firmware_version", String(200)),
    Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    Column("updated_at", UtcDateTime, nullable=False, server_default=_now()),
    _enum_check("status", ROBOT_STATUSES, "status"),
    Index(None, "facility_id"),
    Index(None, "status"),
    Index(None, "robot_model"),
)

procedures = Table(
    "procedures",
    metadata,
    Column("procedure_id", ID, primary_key=True),
    # No foreign key: a robot reports its own procedures, often before the registry sync.
    Column("robot_id", ID, nullable=False),
    Column("procedure_type", String(200)),
    Column("procedure_category", String(20), nullable=False),
    Column("start_time", UtcDateTime, nullable=False),
    Column("end_time", UtcDateTime),
    Column("duration_minutes", Double),
    Column("surgeon_id", ID),
    Column("surgeon_name", String(200)),
    Column("patient_id", ID),
    Column("patient_age", Integer),
    Column("patient_gender", String(200)),
    Column("complexity_score", Double),
    Column("status", String(20), nullable=False),
    Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    Column("updated_at", UtcDateTime, nullable=False, server_default=_now()),
    _enum_check("procedure_category", CATEGORIES, "category"),
    _enum_check("status", PROCEDURE_STATUSES, "status"),
    CheckConstraint("end_time IS NULL OR end_time >= start_time", name="end_after_start"),
    CheckConstraint("patient_age IS NULL OR patient_age BETWEEN 0 AND 120", name="patient_age"),
    CheckConstraint(
        "complexity_score IS NULL OR complexity_score BETWEEN 1.0 AND 5.0", name="complexity"
    ),
    CheckConstraint("duration_minutes IS NULL OR duration_minutes >= 0", name="duration"),
    # Newest-first listing and each filter's keyset walk: (filter, start_time, id).
    Index("ix_procedures_start", "start_time", "procedure_id"),
    Index("ix_procedures_robot_start", "robot_id", "start_time", "procedure_id"),
    Index("ix_procedures_category_start", "procedure_category", "start_time", "procedure_id"),
    Index("ix_procedures_surgeon_start", "surgeon_id", "start_time", "procedure_id"),
    Index("ix_procedures_status_start", "status", "start_time", "procedure_id"),
)

outcomes = Table(
    "outcomes",
    metadata,
    Column(
        "procedure_id",
        ID,
        ForeignKey("procedures.procedure_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("success_status", String(20), nullable=False),
    Column("blood_loss_ml", Double),
    Column("complications", JSON_LIST, nullable=False),
    Column("hospital_stay_days", Double),
    Column("readmission_30day", Boolean, nullable=False, server_default=false()),
    Column("patient_satisfaction_score", Double),
    Column("surgeon_notes", Text),
    Column("recovery_score", Double),
    Column("follow_up_required", Boolean, nullable=False, server_default=false()),
    Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    Column("updated_at", UtcDateTime, nullable=False, server_default=_now()),
    _enum_check("success_status", SUCCESS_STATUSES, "success_status"),
    CheckConstraint("blood_loss_ml IS NULL OR blood_loss_ml >= 0", name="blood_loss"),
    CheckConstraint("hospital_stay_days IS NULL OR hospital_stay_days >= 0", name="stay"),
    CheckConstraint(
        "patient_satisfaction_score IS NULL OR patient_satisfaction_score BETWEEN 1 AND 10",
        name="satisfaction",
    ),
    CheckConstraint("recovery_score IS NULL OR recovery_score BETWEEN 1 AND 100", name="recovery"),
    Index(None, "success_status"),
)

maintenance = Table(
    "maintenance",
    metadata,
    Column("maintenance_id", ID, primary_key=True),
    Column("robot_id", ID, ForeignKey("robots.robot_id", ondelete="CASCADE"), nullable=False),
    Column("maintenance_date", Date, nullable=False),
    Column("maintenance_type", String(20), nullable=False),
    Column("technician_id", ID),
    Column("technician_name", String(200)),
    Column("issues_found", Text),
    Column("actions_taken", Text),
    Column("parts_replaced", JSON_LIST, nullable=False),
    Column("downtime_hours", Double, nullable=False, server_default="0"),
    Column("next_maintenance_date", Date),
    Column("cost", Double, nullable=False, server_default="0"),
    Column("created_at", UtcDateTime, nullable=False, server_default=_now()),
    Column("updated_at", UtcDateTime, nullable=False, server_default=_now()),
    _enum_check("maintenance_type", MAINTENANCE_TYPES, "type"),
    CheckConstraint("downtime_hours >= 0", name="downtime"),
    CheckConstraint("cost >= 0", name="cost"),
    CheckConstraint(
        "next_maintenance_date IS NULL OR next_maintenance_date >= maintenance_date",
        name="next_after",
    ),
    Index(None, "robot_id", "maintenance_date"),
    Index(None, "maintenance_date"),
)

# Telemetry: append-mostly, hundreds of millions of rows. On PostgreSQL the migration makes it
# range-partitioned by month on `timestamp` (see migrations), so retention drops whole
# partitions and time-range scans prune; the primary key doubles as the per-procedure index.
telemetry = Table(
    "telemetry",
    metadata,
    Column("procedure_id", ID, primary_key=True),
    Column("robot_id", ID, primary_key=True),
    Column("timestamp", UtcDateTime, primary_key=True),
    *[Column(name, Double) for name in READINGS[:4]],
    Column("tool_type", String(200)),
    *[Column(name, Double) for name in READINGS[4:]],
    # Transaction start time: ingest transactions are time-bounded, so everything received
    # before (now - bound) is committed, which is what the archiver's watermark relies on.
    Column("received_at", UtcDateTime, nullable=False, server_default=_now()),
    Index("ix_telemetry_received", "received_at"),
    Index("ix_telemetry_time", "timestamp", postgresql_using="brin"),
    postgresql_partition_by='RANGE ("timestamp")',
)

telemetry_summary = Table(
    "telemetry_summary",
    metadata,
    # One row per procedure, kept by a database trigger on every telemetry insert (migration
    # 0004): the procedure detail reads it instead of aggregating the samples.
    Column("procedure_id", ID, primary_key=True),
    Column("sample_count", BigInteger, nullable=False),
    Column("first_timestamp", UtcDateTime, nullable=False),
    Column("last_timestamp", UtcDateTime, nullable=False),
    *[
        Column(
            f"{name}_{stat}", BigInteger if stat == "count" else Double, nullable=stat != "count"
        )
        for name in READINGS
        for stat in ("count", "min", "sum", "max")
    ],
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    # Salted SHA-256 of the secret part: keys are 256-bit random, so a slow hash adds nothing
    # but latency; the salt keeps equal secrets from sharing a hash.
    Column("salt", String(64), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("scopes", JSON_LIST, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime),
    Column("revoked_at", UtcDateTime),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("audit_id", Integer, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("key_id", String(32)),
    Column("key_name", String(200), nullable=False),
    Column("action", String(40), nullable=False),
    Column("route", String(200), nullable=False),
    # Which records were read (their ids), never the values that were returned.
    Column("record_ids", JSON_LIST, nullable=False),
    Column("request_id", String(128)),
    Index("ix_audit_log_at", "at"),
)
"""Who read patient data, when, through which route, and which records."""


# The raw body of every accepted /ingest/batch request, written in the same transaction as its
# records so the lake gets exactly what was committed. `batch_id` is the SHA-256 of entity and
# payload: an identical re-send maps to the same row and the same lake object.
batches = Table(
    "batches",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("entity", String(20), nullable=False),
    Column("record_count", Integer, nullable=False),
    Column("received_at", UtcDateTime, nullable=False, server_default=_now()),
    # gzip of the decoded body; NULL when an NDJSON stream was too large to keep (see flows).
    Column("payload", LargeBinary),
    Column("archived_at", UtcDateTime),
    # Only unarchived rows are looked up by the exporter: a small partial index.
    Index(
        "ix_batches_pending",
        "received_at",
        postgresql_where=text("archived_at IS NULL"),
        sqlite_where=text("archived_at IS NULL"),
    ),
)

# The archiver's high-water marks, one row per exported stream. `mark` moves only after every
# object of a window is written; `pending_end` pins the window being exported so a retry after
# a crash rebuilds the same window and rewrites the same object keys.
archive_marks = Table(
    "archive_marks",
    metadata,
    Column("stream", String(40), primary_key=True),
    Column("mark", UtcDateTime, nullable=False),
    Column("pending_end", UtcDateTime),
    Column("rows_archived", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", UtcDateTime, nullable=False, server_default=_now()),
)


# Analytics roll-ups: sums and counts per closed UTC day (robots also per month) of `procedures`
# and of `outcomes` by their procedure's day and category. Written only by the roll-up job
# (storage.analytics.roll_up) for days before the `analytics` row of archive_marks; readers take
# the other days, and those in `stale_days`, from the base tables.
def _counts(*names: str) -> list[Column[int]]:
    return [Column(n, Integer, nullable=False, server_default="0") for n in names]


def _sums(*names: str) -> list[Column[float]]:
    return [Column(n, Double, nullable=False, server_default="0") for n in names]


procedure_days = Table(
    "procedure_days",
    metadata,
    Column("day", Date, primary_key=True),
    Column("procedure_category", String(20), primary_key=True),
    Column("status", String(20), primary_key=True),
    *_counts("procedures", "duration_n", "complexity_n"),
    *_sums("duration_sum", "complexity_sum"),
)

# Robots' use: procedures not cancelled, per day and per month (a year is 500 x 12 rows).
robot_days = Table(
    "robot_days",
    metadata,
    Column("day", Date, primary_key=True),
    Column("robot_id", ID, primary_key=True),
    *_counts("procedures"),
    *_sums("duration_sum"),
    # A robot's last day in use: one backward step per robot.
    Index("ix_robot_days_robot", "robot_id", "day"),
)

robot_months = Table(
    "robot_months",
    metadata,
    Column("month", Date, primary_key=True),
    Column("robot_id", ID, primary_key=True),
    *_counts("procedures"),
    *_sums("duration_sum"),
)

outcome_days = Table(
    "outcome_days",
    metadata,
    Column("day", Date, primary_key=True),
    Column("procedure_category", String(20), primary_key=True),
    Column("success_status", String(20), primary_key=True),
    *_counts(
        "outcomes", "with_complications", "readmitted", "blood_loss_n", "stay_n", "satisfaction_n"
    ),
    *_sums("blood_loss_sum", "stay_sum", "satisfaction_sum"),
)

# Closed days changed since their roll-up, marked by triggers on procedures and outcomes
# (migration 0010); the job re-rolls and unmarks them. No key: writers never wait on each other.
stale_days = Table(
    "stale_days",
    metadata,
    Column("day", Date, nullable=False),
    Index("ix_stale_days_day", "day"),
)

ROLLUPS = (procedure_days, robot_days, robot_months, outcome_days, stale_days)
"""Tables derived from others: emptied after their sources (whose deletes mark days)."""
