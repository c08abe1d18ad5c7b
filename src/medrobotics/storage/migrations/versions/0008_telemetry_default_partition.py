"""Telemetry partitions made ahead of time: a DEFAULT partition and the months around now.

Until now the writer created a month's partition when a sample of that month first arrived,
so any client could create as many tables as months it could name (one 27 kB request made
300). From here a request never creates a table: rows of a month without a partition of its
own land in `telemetry_default`, and the months from the current one to three months ahead
are made here and then kept by `storage.partitions` (the archiver's passes, `db upgrade`,
`db partitions`), which retention also retires. Partitions made on demand before stay, with
their rows.

The downgrade detaches the DEFAULT partition, gives each month it holds a partition (as the
old writer would have) and moves its rows there, below the parent's triggers so the
telemetry summary does not count them twice; the partitions made ahead stay, empty ones
being harmless to the previous code.

Revision ID: 0008
Revises: 0007
"""

# Every statement here is assembled from this file's constants and integers, never from
# input; that is what each `nosec B608` mark accepts.
# ruff: noqa: S608

from __future__ import annotations

from datetime import UTC, datetime

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

DEFAULT = "telemetry_default"
AHEAD = 3  # months after the current one; the setting's default at the time of writing


def _next(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def _partition(year: int, month: int) -> str:
    nyear, nmonth = _next(year, month)
    return (
        f"CREATE TABLE IF NOT EXISTS telemetry_y{year:04d}m{month:02d} PARTITION OF telemetry "
        f"FOR VALUES FROM ('{year:04d}-{month:02d}-01 00:00:00+00') "
        f"TO ('{nyear:04d}-{nmonth:02d}-01 00:00:00+00')"
    )


def upgrade() -> None:
    """Add the DEFAULT partition, then the months from this one to AHEAD months on."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"CREATE TABLE {DEFAULT} PARTITION OF telemetry DEFAULT")
    now = datetime.now(UTC)
    year, month = now.year, now.month
    for _ in range(AHEAD + 1):
        # The DEFAULT partition is new and empty: no row of these months can be in it yet.
        op.execute(_partition(year, month))
        year, month = _next(year, month)


def downgrade() -> None:
    """Give the DEFAULT partition's months partitions of their own, move its rows, drop it."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE telemetry DETACH PARTITION {DEFAULT}")
    months = bind.exec_driver_sql(
        "SELECT DISTINCT extract(year FROM t)::int, extract(month FROM t)::int FROM "
        f"(SELECT \"timestamp\" AT TIME ZONE 'UTC' AS t FROM {DEFAULT}) AS d ORDER BY 1, 2"  # nosec B608
    ).all()
    for year, month in months:
        op.execute(_partition(year, month))
        nyear, nmonth = _next(year, month)
        op.execute(
            f"INSERT INTO telemetry_y{year:04d}m{month:02d} "  # nosec B608
            f"SELECT * FROM {DEFAULT} WHERE \"timestamp\" >= '{year:04d}-{month:02d}-01 00:00:00+00' "
            f"AND \"timestamp\" < '{nyear:04d}-{nmonth:02d}-01 00:00:00+00'"
        )
    op.execute(f"DROP TABLE {DEFAULT}")
