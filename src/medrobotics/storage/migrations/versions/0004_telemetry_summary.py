"""Per-procedure telemetry summary, kept by the database on every telemetry insert.

Revision ID: 0004
Revises: 0003

The procedure detail shows a procedure's sample count, time span and per-channel count, min,
mean and max. Aggregating the samples on every read costs a pass over the procedure's rows;
here the database folds each insert statement's new rows into one summary row per procedure
(PostgreSQL: one statement-level trigger per COPY or INSERT, over its transition table;
SQLite: a row trigger), so the read is one primary-key lookup. Inserts only: retention drops
whole partitions after the lake holds them, and the summary keeps describing every sample the
platform accepted.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen here: a later channel gets its own migration.
CHANNELS = (
    "arm_position_x",
    "arm_position_y",
    "arm_position_z",
    "arm_rotation",
    "grip_pressure",
    "tremor_compensation",
    "camera_zoom",
    "camera_angle",
    "force_feedback_x",
    "force_feedback_y",
    "force_feedback_z",
    "system_temperature",
    "power_consumption",
)
STATS = ("count", "min", "sum", "max")


def _columns() -> list[str]:
    return [
        "sample_count",
        "first_timestamp",
        "last_timestamp",
        *[f"{c}_{s}" for c in CHANNELS for s in STATS],
    ]


def _aggregates() -> list[str]:
    out = ["count(*)", 'min("timestamp")', 'max("timestamp")']
    for c in CHANNELS:
        out += [f"count({c})", f"min({c})", f"sum({c})", f"max({c})"]
    return out


def _merge(low: str, high: str, s: str) -> list[str]:
    # How a stored summary (s) absorbs new rows (excluded); NULL means "no value yet".
    s += "."
    out = [
        f"sample_count = {s}sample_count + excluded.sample_count",
        f"first_timestamp = coalesce({low}({s}first_timestamp, excluded.first_timestamp), "
        f"{s}first_timestamp, excluded.first_timestamp)",
        f"last_timestamp = coalesce({high}({s}last_timestamp, excluded.last_timestamp), "
        f"{s}last_timestamp, excluded.last_timestamp)",
    ]
    for c in CHANNELS:
        out += [
            f"{c}_count = {s}{c}_count + excluded.{c}_count",
            f"{c}_min = coalesce({low}({s}{c}_min, excluded.{c}_min), {s}{c}_min, excluded.{c}_min)",
            f"{c}_sum = coalesce({s}{c}_sum + excluded.{c}_sum, {s}{c}_sum, excluded.{c}_sum)",
            f"{c}_max = coalesce({high}({s}{c}_max, excluded.{c}_max), {s}{c}_max, excluded.{c}_max)",
        ]
    return out


def _pg_function() -> str:
    cols = ", ".join(_columns())
    aggs = ", ".join(_aggregates())
    merge = ",\n        ".join(_merge("least", "greatest", "s"))
    # Summary rows are taken in procedure order, so concurrent writers never wait on each
    # other in a cycle.
    # Column names come from CHANNELS, never from input.
    return f"""
CREATE FUNCTION telemetry_summary_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO telemetry_summary AS s (procedure_id, {cols})
    SELECT procedure_id, {aggs}
    FROM new_rows GROUP BY procedure_id ORDER BY procedure_id
    ON CONFLICT (procedure_id) DO UPDATE SET
        {merge};
    RETURN NULL;
END
$$"""  # noqa: S608  # nosec B608


def _sqlite_trigger() -> str:
    cols = ", ".join(_columns())
    values = ["1", 'NEW."timestamp"', 'NEW."timestamp"']
    for c in CHANNELS:
        values += [f"NEW.{c} IS NOT NULL", f"NEW.{c}", f"NEW.{c}", f"NEW.{c}"]
    # SQLite's two-argument min/max return NULL when either is NULL; coalesce picks the other.
    merge = ",\n        ".join(_merge("min", "max", "telemetry_summary"))
    # Column names come from CHANNELS, never from input.
    return f"""
CREATE TRIGGER telemetry_summary_add AFTER INSERT ON telemetry BEGIN
    INSERT INTO telemetry_summary (procedure_id, {cols})
    VALUES (NEW.procedure_id, {", ".join(values)})
    ON CONFLICT (procedure_id) DO UPDATE SET
        {merge};
END"""  # noqa: S608  # nosec B608


def upgrade() -> None:
    stats = []
    for c in CHANNELS:
        stats += [
            sa.Column(f"{c}_count", sa.BigInteger(), nullable=False),
            sa.Column(f"{c}_min", sa.Double(), nullable=True),
            sa.Column(f"{c}_sum", sa.Double(), nullable=True),
            sa.Column(f"{c}_max", sa.Double(), nullable=True),
        ]
    op.create_table(
        "telemetry_summary",
        sa.Column("procedure_id", sa.String(length=128), nullable=False),
        sa.Column("sample_count", sa.BigInteger(), nullable=False),
        sa.Column("first_timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_timestamp", sa.DateTime(timezone=True), nullable=False),
        *stats,
        sa.PrimaryKeyConstraint("procedure_id", name=op.f("pk_telemetry_summary")),
    )
    cols = ", ".join(_columns())
    op.execute(
        f"INSERT INTO telemetry_summary (procedure_id, {cols}) "  # noqa: S608  # nosec B608
        f"SELECT procedure_id, {', '.join(_aggregates())} FROM telemetry GROUP BY procedure_id"
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_pg_function())
        op.execute(
            "CREATE TRIGGER telemetry_summary_add AFTER INSERT ON telemetry "
            "REFERENCING NEW TABLE AS new_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION telemetry_summary_add()"
        )
    else:
        op.execute(_sqlite_trigger())


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS telemetry_summary_add ON telemetry")
        op.execute("DROP FUNCTION IF EXISTS telemetry_summary_add()")
    else:
        op.execute("DROP TRIGGER IF EXISTS telemetry_summary_add")
    op.drop_table("telemetry_summary")
