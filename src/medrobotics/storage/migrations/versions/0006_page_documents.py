"""Page documents: each procedure and outcome row carries its list-page JSON (PostgreSQL).

Building a 100-row page's JSON was most of the database's work per list request: json_agg
looks up how to write each column of each row. Here the rows store the JSON objects the pages
show, without patient fields, written by triggers, so a page concatenates stored text
(storage.pages, Shape.doc):

- `procedures.page_doc`: the procedure's object, from its own row (BEFORE INSERT OR UPDATE).
- `outcomes.page_doc`: the outcome's own fields, from its own row (BEFORE INSERT OR UPDATE).
- `procedures.outcome_doc`: what an outcome page shows of its procedure (robot, category,
  start), from the procedure's row.
- `procedures.outcome_page_doc`: the outcome's whole page object, both parts joined, on the
  procedure's row, so that a page of outcomes (ordered by procedure start) is one index range
  over procedures with no lookup per row. An outcome's write sets it (AFTER INSERT OR UPDATE
  OR DELETE, TRUNCATE); a procedure's write keeps the outcome's part and replaces its own.

Locks: an outcome's write locks its procedure's row after its own, as the roll-ups' flush
(0005) already does at commit; a procedure's insert or update never reads or locks outcomes.
An outcome deleted with its procedure (0005's unlink) leaves the doomed procedure row alone.

The objects are exactly what json_agg writes for the same columns: times in UTC, floats at
their shortest exact form (both pinned on the functions, whatever the writer's session says).
Pages with patient fields (callers holding phi:read) are still built by json_agg. SQLite builds
pages in the service and needs none of this. The column lists are frozen here: a later column
shown on the pages gets its own migration, which redefines these functions and rewrites them.

Revision ID: 0006
Revises: 0005
"""

# Every statement here is assembled from this file's constants, never from input; that is
# what each `nosec B608` mark accepts.
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

# Per table: the stored column and the fields it holds, written from the row itself.
DOCS: dict[str, dict[str, tuple[str, ...]]] = {
    "procedures": {"page_doc": PROCEDURE_FIELDS, "outcome_doc": PROCEDURE_OF_OUTCOME},
    "outcomes": {"page_doc": OUTCOME_FIELDS},
}
# An outcome's page object from its own part and its procedure's (both objects ending '"}' or
# starting '{"': one brace each is trimmed).
JOINED = "rtrim({own}, '}}') || ',' || ltrim({theirs}, '{{')"


def upgrade() -> None:
    """Add the document columns, the functions and triggers that write them; backfill."""
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE procedures ADD COLUMN page_doc text, ADD COLUMN outcome_doc text")
    op.execute("ALTER TABLE procedures ADD COLUMN outcome_page_doc text")
    op.execute("ALTER TABLE outcomes ADD COLUMN page_doc text")
    for table, docs in DOCS.items():
        for column, fields in docs.items():
            op.execute(_function(table, column, fields))
    # The backfill writes only the new columns: the roll-up triggers (0005) would find nothing
    # to change and cost a pass each, so every trigger is off while it runs.
    for table in DOCS:
        op.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    op.execute(
        "UPDATE procedures SET page_doc = procedures_page_doc(procedures), "
        "outcome_doc = procedures_outcome_doc(procedures)"
    )
    op.execute("UPDATE outcomes SET page_doc = outcomes_page_doc(outcomes)")
    joined = JOINED.format(own="o.page_doc", theirs="p.outcome_doc")
    op.execute(
        f"UPDATE procedures p SET outcome_page_doc = {joined} "  # nosec B608
        "FROM outcomes o WHERE o.procedure_id = p.procedure_id"
    )
    for table in DOCS:
        op.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    _triggers()


def _triggers() -> None:
    # Procedures: their own objects on every write of their columns; the outcome's part of
    # outcome_page_doc (everything before the procedure's part) is kept.
    columns = ", ".join(sorted({*PROCEDURE_FIELDS, "patient_id", "patient_age", "patient_gender"}))
    op.execute(
        "CREATE FUNCTION procedures_docs() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "NEW.page_doc := procedures_page_doc(NEW);\n"
        "NEW.outcome_doc := procedures_outcome_doc(NEW);\n"
        "IF TG_OP = 'UPDATE' AND NEW.outcome_page_doc IS NOT NULL\n"
        "   AND NEW.outcome_doc IS DISTINCT FROM OLD.outcome_doc THEN\n"
        "  NEW.outcome_page_doc := left(NEW.outcome_page_doc,\n"
        "    length(NEW.outcome_page_doc) - length(OLD.outcome_doc) + 1)\n"
        "    || ltrim(NEW.outcome_doc, '{');\n"
        "END IF;\n"
        "RETURN NEW;\nEND $$"
    )
    op.execute(
        f"CREATE TRIGGER procedures_docs BEFORE INSERT OR UPDATE OF {columns} ON procedures "
        "FOR EACH ROW EXECUTE FUNCTION procedures_docs()"
    )
    op.execute(
        "CREATE FUNCTION outcomes_docs() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\nNEW.page_doc := outcomes_page_doc(NEW);\nRETURN NEW;\nEND $$"
    )
    op.execute(
        "CREATE TRIGGER outcomes_docs BEFORE INSERT OR UPDATE ON outcomes "
        "FOR EACH ROW EXECUTE FUNCTION outcomes_docs()"
    )
    # The outcome's page object onto its procedure's row. An outcome deleted from within
    # another trigger (its procedure's delete) leaves the procedure row, which goes too.
    joined = JOINED.format(own="NEW.page_doc", theirs="outcome_doc")
    op.execute(
        "CREATE FUNCTION outcomes_link() RETURNS trigger LANGUAGE plpgsql AS $$\n"  # nosec B608
        "BEGIN\n"
        "IF TG_OP <> 'INSERT' AND (TG_OP = 'DELETE' OR NEW.procedure_id <> OLD.procedure_id)\n"
        "   AND pg_trigger_depth() = 1 THEN\n"
        "  UPDATE procedures SET outcome_page_doc = NULL WHERE procedure_id = OLD.procedure_id;\n"
        "END IF;\n"
        "IF TG_OP = 'DELETE' THEN RETURN NULL; END IF;\n"
        "IF TG_OP = 'UPDATE' AND NEW.procedure_id = OLD.procedure_id\n"
        "   AND NEW.page_doc = OLD.page_doc THEN RETURN NULL; END IF;\n"
        f"UPDATE procedures SET outcome_page_doc = {joined}\n"
        "  WHERE procedure_id = NEW.procedure_id;\n"
        "RETURN NULL;\nEND $$"
    )
    op.execute(
        "CREATE TRIGGER outcomes_link AFTER INSERT OR UPDATE OR DELETE ON outcomes "
        "FOR EACH ROW EXECUTE FUNCTION outcomes_link()"
    )
    op.execute(
        "CREATE FUNCTION outcomes_unlink_all() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n"
        "UPDATE procedures SET outcome_page_doc = NULL WHERE outcome_page_doc IS NOT NULL;\n"
        "RETURN NULL;\nEND $$"
    )
    op.execute(
        "CREATE TRIGGER outcomes_unlink_all AFTER TRUNCATE ON outcomes "
        "FOR EACH STATEMENT EXECUTE FUNCTION outcomes_unlink_all()"
    )


def downgrade() -> None:
    """Drop the triggers, functions and columns."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, name in [
        ("outcomes", "outcomes_unlink_all"),
        ("outcomes", "outcomes_link"),
        ("outcomes", "outcomes_docs"),
        ("procedures", "procedures_docs"),
    ]:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    for table, docs in DOCS.items():
        for column in docs:
            op.execute(f"DROP FUNCTION IF EXISTS {_name(table, column)}({table})")
    op.execute("ALTER TABLE outcomes DROP COLUMN page_doc")
    op.execute(
        "ALTER TABLE procedures DROP COLUMN page_doc, DROP COLUMN outcome_doc, "
        "DROP COLUMN outcome_page_doc"
    )


def _name(table: str, column: str) -> str:
    return f"{table}_{column}"


def _function(table: str, column: str, fields: tuple[str, ...]) -> str:
    # row_to_json over a subselect writes exactly what json_agg writes for a row of the same
    # columns. The SET clauses pin what the text depends on besides the row.
    picked = ", ".join(f"r.{f} AS {f}" for f in fields)
    return (
        f"CREATE FUNCTION {_name(table, column)}(r {table}) RETURNS text LANGUAGE sql STABLE "  # nosec B608
        "SET timezone TO 'UTC' SET extra_float_digits TO 1 AS $$ "
        f"SELECT row_to_json(d)::text FROM (SELECT {picked}) d $$"
    )
