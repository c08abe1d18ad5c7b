"""Page documents: each procedure and outcome row carries its list-page JSON (PostgreSQL).

Building a 100-row page's JSON was most of the database's work per list request: json_agg
looks up how to write each column of each row. Here each row stores the JSON object the pages
show, without patient fields, written by a BEFORE INSERT OR UPDATE trigger from the row itself,
so a page concatenates stored text (storage.pages, Shape.doc). An outcome's page object joins
its own stored object with its procedure's robot, category and start, which the procedure row
stores: each trigger reads only its own row.

The objects are exactly what json_agg writes for the same columns: times in UTC, floats at
their shortest exact form (both pinned on the functions, whatever the writer's session says).
Pages with patient fields (callers holding phi:read) are still built by json_agg. SQLite builds
pages in the service and needs none of this. The column lists are frozen here: a later column
shown on the pages gets its own migration, which redefines these functions and rewrites them.

Revision ID: 0006
Revises: 0005
"""

# Every statement here is assembled from this file's constants, never from input.
# ruff: noqa: S608

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PROCEDURE_FIELDS = (
    "procedure_id",
    "robot_id",
    "procedure_type",
    "procedure_category",
    "start_time",
    "end_time",
    "duration_minutes",
    "surgeon_id",
    "surgeon_name",
    "complexity_score",
    "status",
    "created_at",
    "updated_at",
)
OUTCOME_FIELDS = (
    "procedure_id",
    "success_status",
    "blood_loss_ml",
    "complications",
    "hospital_stay_days",
    "readmission_30day",
    "patient_satisfaction_score",
    "recovery_score",
    "follow_up_required",
    "created_at",
    "updated_at",
)
# What the outcome pages show of the outcome's procedure, after the outcome's own fields.
PROCEDURE_OF_OUTCOME = ("robot_id", "procedure_category", "start_time")

# Per table: the stored column and the fields it holds.
DOCS: dict[str, dict[str, tuple[str, ...]]] = {
    "procedures": {"page_doc": PROCEDURE_FIELDS, "outcome_doc": PROCEDURE_OF_OUTCOME},
    "outcomes": {"page_doc": OUTCOME_FIELDS},
}


def upgrade() -> None:
    """Add the document columns, the functions that write them, their triggers; backfill."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, docs in DOCS.items():
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"ADD COLUMN {c} text" for c in docs))
        for column, fields in docs.items():
            op.execute(_function(table, column, fields))
        sets = ", ".join(f"{c} = {_name(table, c)}(NEW)" for c in docs)
        op.execute(
            f"CREATE FUNCTION {table}_docs() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            + "".join(f"NEW.{c} := {_name(table, c)}(NEW);\n" for c in docs)
            + "RETURN NEW;\nEND $$"
        )
        # The backfill writes only the new columns: the roll-up triggers (0005) would find
        # nothing to change and cost a pass each, so they are off while it runs.
        op.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        op.execute(f"UPDATE {table} SET {sets.replace('(NEW)', f'({table})')}")
        op.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        op.execute(
            f"CREATE TRIGGER {table}_docs BEFORE INSERT OR UPDATE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_docs()"
        )


def downgrade() -> None:
    """Drop the triggers, functions and columns."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, docs in DOCS.items():
        op.execute(f"DROP TRIGGER IF EXISTS {table}_docs ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {table}_docs()")
        for column in docs:
            op.execute(f"DROP FUNCTION IF EXISTS {_name(table, column)}({table})")
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"DROP COLUMN {c}" for c in docs))


def _name(table: str, column: str) -> str:
    return f"{table}_{column}"


def _function(table: str, column: str, fields: tuple[str, ...]) -> str:
    # row_to_json over a subselect writes exactly what json_agg writes for a row of the same
    # columns. The SET clauses pin what the text depends on besides the row.
    picked = ", ".join(f"r.{f} AS {f}" for f in fields)
    return (
        f"CREATE FUNCTION {_name(table, column)}(r {table}) RETURNS text LANGUAGE sql STABLE "
        "SET timezone TO 'UTC' SET extra_float_digits TO 1 AS $$ "
        f"SELECT row_to_json(d)::text FROM (SELECT {picked}) d $$"
    )
