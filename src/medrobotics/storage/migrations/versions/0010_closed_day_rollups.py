"""Analytics roll-ups of closed UTC days, made by a job; the 0005 triggers go.

The roll-up tables stay; a job on the archiver's schedule (`storage.analytics.roll_up`) fills
them for closed days, and readers take today, days not rolled yet and days changed since from
the base tables. A write keeps the answer exact by marking the closed day it changes in
`stale_days`; a write to today marks nothing (a row trigger's WHEN test, no function call).

On PostgreSQL the mark is written or, when one exists, locked FOR KEY SHARE until commit: the
job deletes marks FOR UPDATE SKIP LOCKED, so a mark whose writer has not committed survives
the roll-up that could not see that writer's rows. An outcome reads its procedure FOR SHARE,
so the procedure's day cannot move under it before it commits.

The roll-ups are emptied here: the next archiver pass (or `medrobotics analytics rollup`)
rolls the history; until then every answer comes from the base tables.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import importlib
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ROLLUPS = ("procedure_days", "robot_days", "robot_months", "outcome_days")
STREAM = "analytics"  # its row in archive_marks: days before `mark` are rolled

# Columns whose change moves or changes a row's contribution to some roll-up.
PROCEDURE_INPUTS = (
    "robot_id",
    "procedure_category",
    "status",
    "start_time",
    "duration_minutes",
    "complexity_score",
)
OUTCOME_INPUTS = (
    "procedure_id",
    "success_status",
    "complications",
    "readmission_30day",
    "blood_loss_ml",
    "hospital_stay_days",
    "patient_satisfaction_score",
)

MIDNIGHT = "date_trunc('day', now(), 'UTC')"  # today's start in UTC, at transaction start

PG = [
    """CREATE FUNCTION mark_stale(ts timestamptz) RETURNS void LANGUAGE plpgsql AS $$
DECLARE d date := (ts AT TIME ZONE 'UTC')::date;
BEGIN
IF ts IS NULL OR ts >= date_trunc('day', now(), 'UTC') THEN RETURN; END IF;
PERFORM 1 FROM stale_days WHERE day = d LIMIT 1 FOR KEY SHARE;
IF NOT FOUND THEN INSERT INTO stale_days (day) VALUES (d); END IF;
END $$""",
    """CREATE FUNCTION procedures_stale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
IF TG_OP <> 'INSERT' THEN PERFORM mark_stale(OLD.start_time); END IF;
IF TG_OP <> 'DELETE' THEN PERFORM mark_stale(NEW.start_time); END IF;
RETURN NULL;
END $$""",
    # FOR SHARE: a concurrent move of the procedure waits for this outcome's commit (and then
    # marks both days itself), or commits first and is read here.
    """CREATE FUNCTION outcomes_stale() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
IF TG_OP <> 'INSERT' THEN
PERFORM mark_stale((SELECT start_time FROM procedures
                    WHERE procedure_id = OLD.procedure_id FOR SHARE));
END IF;
IF TG_OP <> 'DELETE' THEN
PERFORM mark_stale((SELECT start_time FROM procedures
                    WHERE procedure_id = NEW.procedure_id FOR SHARE));
END IF;
RETURN NULL;
END $$""",
    f"CREATE TRIGGER procedures_stale_insert AFTER INSERT ON procedures FOR EACH ROW "
    f"WHEN (NEW.start_time < {MIDNIGHT}) EXECUTE FUNCTION procedures_stale()",
    f"CREATE TRIGGER procedures_stale_update AFTER UPDATE ON procedures FOR EACH ROW "
    f"WHEN ((OLD.start_time < {MIDNIGHT} OR NEW.start_time < {MIDNIGHT}) AND "
    f"({', '.join(f'OLD.{c}' for c in PROCEDURE_INPUTS)}) IS DISTINCT FROM "
    f"({', '.join(f'NEW.{c}' for c in PROCEDURE_INPUTS)})) EXECUTE FUNCTION procedures_stale()",
    f"CREATE TRIGGER procedures_stale_delete AFTER DELETE ON procedures FOR EACH ROW "
    f"WHEN (OLD.start_time < {MIDNIGHT}) EXECUTE FUNCTION procedures_stale()",
    *(
        f"CREATE TRIGGER outcomes_stale_{e.lower()} AFTER {e} ON outcomes FOR EACH ROW "
        "EXECUTE FUNCTION outcomes_stale()"
        for e in ("INSERT", "DELETE")
    ),
    f"CREATE TRIGGER outcomes_stale_update AFTER UPDATE ON outcomes FOR EACH ROW "
    f"WHEN (({', '.join(f'OLD.{c}' for c in OUTCOME_INPUTS)}) IS DISTINCT FROM "
    f"({', '.join(f'NEW.{c}' for c in OUTCOME_INPUTS)})) EXECUTE FUNCTION outcomes_stale()",
    # A truncate leaves nothing rolled: every answer from the base tables until the next job.
    """CREATE FUNCTION rollups_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
DELETE FROM archive_marks WHERE stream = 'analytics';
RETURN NULL;
END $$""",
    "CREATE TRIGGER procedures_rollups_reset AFTER TRUNCATE ON procedures "
    "FOR EACH STATEMENT EXECUTE FUNCTION rollups_reset()",
    "CREATE TRIGGER outcomes_rollups_reset AFTER TRUNCATE ON outcomes "
    "FOR EACH STATEMENT EXECUTE FUNCTION rollups_reset()",
]
PG_DROP = [
    "DROP TRIGGER IF EXISTS procedures_rollups_reset ON procedures",
    "DROP TRIGGER IF EXISTS outcomes_rollups_reset ON outcomes",
    "DROP FUNCTION IF EXISTS rollups_reset()",
    *(
        f"DROP TRIGGER IF EXISTS procedures_stale_{e} ON procedures"
        for e in ("insert", "update", "delete")
    ),
    *(
        f"DROP TRIGGER IF EXISTS outcomes_stale_{e} ON outcomes"
        for e in ("insert", "update", "delete")
    ),
    "DROP FUNCTION IF EXISTS procedures_stale()",
    "DROP FUNCTION IF EXISTS outcomes_stale()",
    "DROP FUNCTION IF EXISTS mark_stale(timestamptz)",
]

# SQLite: one writer at a time, so a plain insert when the day has no mark yet.
CLOSED = "{ref}.start_time < date('now')"  # ISO texts: '2025-03-31 21:00...' < '2025-04-01'
MARK = (
    "INSERT INTO stale_days (day) SELECT date({ts}) "
    "WHERE {ts} < date('now') AND NOT EXISTS "
    "(SELECT 1 FROM stale_days WHERE day = date({ts}));"
)
START = "(SELECT start_time FROM procedures WHERE procedure_id = {ref}.procedure_id)"


def _sqlite_triggers() -> dict[str, str]:
    old, new = MARK.format(ts="OLD.start_time"), MARK.format(ts="NEW.start_time")
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in PROCEDURE_INPUTS)
    out_changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in OUTCOME_INPUTS)
    out_old, out_new = (MARK.format(ts=START.format(ref=r)) for r in ("OLD", "NEW"))
    return {
        "procedures_stale_insert": f"AFTER INSERT ON procedures FOR EACH ROW "
        f"WHEN {CLOSED.format(ref='NEW')} BEGIN {new} END",
        "procedures_stale_update": f"AFTER UPDATE ON procedures FOR EACH ROW "
        f"WHEN ({CLOSED.format(ref='OLD')} OR {CLOSED.format(ref='NEW')}) AND ({changed}) "
        f"BEGIN {old} {new} END",
        # The cascaded outcome finds no procedure: this mark covers its day.
        "procedures_stale_delete": f"AFTER DELETE ON procedures FOR EACH ROW "
        f"WHEN {CLOSED.format(ref='OLD')} BEGIN {old} END",
        "outcomes_stale_insert": f"AFTER INSERT ON outcomes FOR EACH ROW BEGIN {out_new} END",
        "outcomes_stale_update": f"AFTER UPDATE ON outcomes FOR EACH ROW WHEN {out_changed} "
        f"BEGIN {out_old} {out_new} END",
        "outcomes_stale_delete": f"AFTER DELETE ON outcomes FOR EACH ROW BEGIN {out_old} END",
    }


def _v0005() -> Any:
    # The triggers 0005 made, and the code to make them again on the way down.
    return importlib.import_module("medrobotics.storage.migrations.versions.0005_analytics_rollups")


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    v0005 = _v0005()
    if pg:
        v0005._pg_downgrade()
    else:
        v0005._sqlite_downgrade()
    for name in ROLLUPS:
        op.execute(f"DELETE FROM {name}")  # noqa: S608  # nosec B608
    op.create_table("stale_days", sa.Column("day", sa.Date(), nullable=False))
    op.create_index("ix_stale_days_day", "stale_days", ["day"])
    if pg:
        for statement in PG:
            op.execute(statement)
    else:
        for name, body in _sqlite_triggers().items():
            op.execute(f"CREATE TRIGGER {name} {body}")


def downgrade() -> None:
    bind = op.get_bind()
    pg = bind.dialect.name == "postgresql"
    if pg:
        for statement in PG_DROP:
            op.execute(statement)
    else:
        for name in _sqlite_triggers():
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("stale_days")
    op.execute(f"DELETE FROM archive_marks WHERE stream = '{STREAM}'")  # noqa: S608  # nosec B608
    for name in ROLLUPS:
        op.execute(f"DELETE FROM {name}")  # noqa: S608  # nosec B608
    # 0005 as it was: its triggers, then the roll-ups rebuilt from the base tables.
    v0005 = _v0005()
    dialect = v0005.Dialect(bind.dialect.name)
    if pg:
        v0005._pg_upgrade(v0005.Dialect(bind.dialect.name, stage=True))
    else:
        v0005._sqlite_upgrade(dialect)
    v0005._backfill(dialect)
