"""Analytics roll-ups: daily and monthly sums of procedures and outcomes, kept by triggers.

A year of procedures is ~500,000 rows; the analytics endpoints read whole days (and, per
robot, whole months) from these tables instead, and only a partial first and last day from
the base tables. The database keeps them exact on every insert, update, delete and truncate,
whoever writes (the services, bulk SQL, COPY):

- PostgreSQL: statement-level triggers with transition tables append the statement's signed
  rows to a pending table (UNLOGGED, empty at every commit); a deferred trigger merges them
  into the roll-ups when the transaction commits, one grouped upsert per roll-up in a fixed
  order, rows in key order, so concurrent writers never deadlock on roll-up rows and a bulk
  statement costs one append. An outcome's day and category come from its procedure, read
  FOR SHARE so a concurrent change of that procedure is either seen here or moves this
  outcome itself.
- SQLite: row-level triggers (one writer at a time).

Deleting a procedure first deletes its outcome, while the procedure still names the outcome's
day and category; the cascade then finds nothing. Counts of non-null values go with every
sum so means are exact; rows whose counts fall to zero stay and are skipped by the readers.

Revision ID: 0005
Revises: 0003
"""

# Every statement here is assembled from this file's constants, never from input.
# ruff: noqa: S608

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

KEY = sa.String(length=128)
SHORT = sa.String(length=20)


def _counts(*names: str) -> list[sa.Column[int]]:
    return [sa.Column(n, sa.Integer(), nullable=False, server_default="0") for n in names]


def _sums(*names: str) -> list[sa.Column[float]]:
    return [sa.Column(n, sa.Double(), nullable=False, server_default="0") for n in names]


# Roll-up columns and how one procedure or outcome row (alias `x`) contributes to each.
PROCEDURE_DAY = {
    "procedures": "1",
    "duration_sum": "coalesce(x.duration_minutes, 0)",
    "duration_n": "CASE WHEN x.duration_minutes IS NULL THEN 0 ELSE 1 END",
    "complexity_sum": "coalesce(x.complexity_score, 0)",
    "complexity_n": "CASE WHEN x.complexity_score IS NULL THEN 0 ELSE 1 END",
}
ROBOT_USE = {"procedures": "1", "duration_sum": "coalesce(x.duration_minutes, 0)"}
OUTCOME_DAY = {
    "outcomes": "1",
    "with_complications": "CASE WHEN {length}(x.complications) > 0 THEN 1 ELSE 0 END",
    "readmitted": "CASE WHEN x.readmission_30day THEN 1 ELSE 0 END",
    "blood_loss_sum": "coalesce(x.blood_loss_ml, 0)",
    "blood_loss_n": "CASE WHEN x.blood_loss_ml IS NULL THEN 0 ELSE 1 END",
    "stay_sum": "coalesce(x.hospital_stay_days, 0)",
    "stay_n": "CASE WHEN x.hospital_stay_days IS NULL THEN 0 ELSE 1 END",
    "satisfaction_sum": "coalesce(x.patient_satisfaction_score, 0)",
    "satisfaction_n": "CASE WHEN x.patient_satisfaction_score IS NULL THEN 0 ELSE 1 END",
}
# Columns of a procedure whose change moves or changes its contribution.
PROCEDURE_INPUTS = (
    "robot_id",
    "procedure_category",
    "status",
    "start_time",
    "duration_minutes",
    "complexity_score",
)
OUTCOME_INPUTS = (
    "success_status",
    "complications",
    "readmission_30day",
    "blood_loss_ml",
    "hospital_stay_days",
    "patient_satisfaction_score",
)
ROLLUPS = ("procedure_days", "robot_days", "robot_months", "outcome_days")
PENDING = ("procedures_pending", "outcome_days_pending")


def _create_tables() -> None:
    op.create_table(
        "procedure_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("procedure_category", SHORT, nullable=False),
        sa.Column("status", SHORT, nullable=False),
        *_counts("procedures", "duration_n", "complexity_n"),
        *_sums("duration_sum", "complexity_sum"),
        sa.PrimaryKeyConstraint(
            "day", "procedure_category", "status", name=op.f("pk_procedure_days")
        ),
    )
    for name, period in (("robot_days", "day"), ("robot_months", "month")):
        op.create_table(
            name,
            sa.Column(period, sa.Date(), nullable=False),
            sa.Column("robot_id", KEY, nullable=False),
            *_counts("procedures"),
            *_sums("duration_sum"),
            sa.PrimaryKeyConstraint(period, "robot_id", name=op.f(f"pk_{name}")),
        )
    # A robot's last day in use (robot-utilization's last_used_at): one backward index step.
    op.create_index("ix_robot_days_robot", "robot_days", ["robot_id", "day"])
    op.create_table(
        "outcome_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("procedure_category", SHORT, nullable=False),
        sa.Column("success_status", SHORT, nullable=False),
        *_counts(
            "outcomes",
            "with_complications",
            "readmitted",
            "blood_loss_n",
            "stay_n",
            "satisfaction_n",
        ),
        *_sums("blood_loss_sum", "stay_sum", "satisfaction_sum"),
        sa.PrimaryKeyConstraint(
            "day", "procedure_category", "success_status", name=op.f("pk_outcome_days")
        ),
    )


class Dialect:
    """The SQL that differs between PostgreSQL and SQLite."""

    def __init__(self, name: str, *, stage: bool = False) -> None:
        self.pg = name == "postgresql"
        self.length = "jsonb_array_length" if self.pg else "json_array_length"
        # Triggers on PostgreSQL stage their deltas for the flush at commit (see _pg_upgrade).
        self.stage = stage

    def day(self, ts: str) -> str:
        return f"({ts} AT TIME ZONE 'UTC')::date" if self.pg else f"date({ts})"

    def month(self, ts: str) -> str:
        if self.pg:
            return f"date_trunc('month', {ts} AT TIME ZONE 'UTC')::date"
        return f"strftime('%Y-%m-01', {ts})"


def _upsert(table: str, keys: list[tuple[str, str]], values: dict[str, str], source: str) -> str:
    """Add the signed contributions of `source` rows (`x`, with `sign`) to `table`, in key order."""
    names = [*dict(keys), *values]
    exprs = [e for _, e in keys] + [f"sum(x.sign * {e})" for e in values.values()]
    return _merge(table, [k for k, _ in keys], list(values), names, exprs, f"({source}) AS x")


def _merge(
    table: str, keys: list[str], values: list[str], names: list[str], exprs: list[str], rows: str
) -> str:
    order = ", ".join(str(i + 1) for i in range(len(keys)))
    sets = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in values)
    return (
        f"INSERT INTO {table} ({', '.join(names)})\n"  # nosec B608
        # WHERE: SQLite's upsert after a SELECT needs one to parse ON CONFLICT.
        f"SELECT {', '.join(exprs)}\nFROM {rows} WHERE true\n"
        f"GROUP BY {order} ORDER BY {order}\n"
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
    )


def _stage(table: str, keys: list[tuple[str, str]], values: dict[str, str], source: str) -> str:
    """Append the signed contributions of `source` rows to `table`'s pending deltas."""
    names = ["xid", *dict(keys), *values]
    exprs = ["txid_current()", *(e for _, e in keys)]
    exprs += [f"sum(x.sign * {e})" for e in values.values()]
    group = ", ".join(str(i + 2) for i in range(len(keys)))
    return (
        f"INSERT INTO {table}_pending ({', '.join(names)})\n"  # nosec B608
        f"SELECT {', '.join(exprs)}\nFROM ({source}) AS x\nGROUP BY {group}"
    )


def _write(d: Dialect) -> Any:
    return _stage if d.stage else _upsert


def _procedure_statements(d: Dialect, source: str) -> list[str]:
    """Statements applying signed procedure rows to the procedure roll-ups."""
    if d.stage:
        # One append of the rows themselves: the flush groups them for all three roll-ups.
        return [f"INSERT INTO procedures_pending SELECT txid_current(), x.* FROM ({source}) AS x"]  # nosec B608
    used = f"SELECT * FROM ({source}) AS u WHERE u.status <> 'cancelled'"  # nosec B608
    write = _write(d)
    return [
        write(
            "procedure_days",
            [
                ("day", d.day("x.start_time")),
                ("procedure_category", "x.procedure_category"),
                ("status", "x.status"),
            ],
            PROCEDURE_DAY,
            source,
        ),
        write(
            "robot_days",
            [("day", d.day("x.start_time")), ("robot_id", "x.robot_id")],
            ROBOT_USE,
            used,
        ),
        write(
            "robot_months",
            [("month", d.month("x.start_time")), ("robot_id", "x.robot_id")],
            ROBOT_USE,
            used,
        ),
    ]


def _outcome_statement(d: Dialect, source: str) -> str:
    """Apply signed outcome rows joined to their procedure (`start_time`, `category`)."""
    values = {k: v.format(length=d.length) for k, v in OUTCOME_DAY.items()}
    return _write(d)(
        "outcome_days",
        [
            ("day", d.day("x.start_time")),
            ("procedure_category", "x.procedure_category"),
            ("success_status", "x.success_status"),
        ],
        values,
        source,
    )


def _differs(
    columns: tuple[str, ...], old: str = "o", new: str = "n", op: str = "IS DISTINCT FROM"
) -> str:
    return "(" + " OR ".join(f"{old}.{c} {op} {new}.{c}" for c in columns) + ")"


# The SQL texts in this module are assembled from its own table and column names, never
# from input; that is what each `nosec B608` mark accepts.

# --- PostgreSQL -----------------------------------------------------------------------------

PG_LOCKED = (
    # Read the outcome's procedure FOR SHARE, in key order: a concurrent procedure update
    # either commits first (and is read here) or waits and then moves this outcome itself.
    "SELECT procedure_id, start_time, procedure_category FROM procedures "
    "WHERE procedure_id IN (SELECT procedure_id FROM {rows}) "
    "ORDER BY procedure_id FOR SHARE"
)


MARK = "INSERT INTO rollup_flush (xid) VALUES (txid_current()) ON CONFLICT DO NOTHING"


# The services' writes are executemany: one statement, so one firing, per row. A firing that
# changes nothing (an upsert's INSERT half when every row existed, a re-send that changes
# nothing counted) stops at its first query; the mark is written once per transaction.
NEW_ROWS, OLD_ROWS = "SELECT 1 FROM new_rows", "SELECT 1 FROM old_rows"
SETTING = "medrobotics.rollup_mark"


def _pg_function(name: str, guard: str, statements: list[str]) -> str:
    body = "".join(f"{x};\n" for x in statements)
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
        f"IF NOT EXISTS ({guard}) THEN RETURN NULL; END IF;\n{body}"
        f"IF current_setting('{SETTING}', true) IS DISTINCT FROM txid_current()::text THEN\n"
        f"{MARK};\nPERFORM set_config('{SETTING}', txid_current()::text, true);\nEND IF;\n"
        "RETURN NULL;\nEND $$"
    )


def _pg_procedure_functions(d: Dialect) -> dict[str, tuple[str, list[str]]]:
    cols = ", ".join(f"{{t}}.{c}" for c in ("procedure_id", *PROCEDURE_INPUTS))
    changed = (
        "SELECT n.procedure_id FROM old_rows o JOIN new_rows n USING (procedure_id) "  # nosec B608
        f"WHERE {_differs(PROCEDURE_INPUTS)}"
    )
    moved = (
        "SELECT n.procedure_id FROM old_rows o JOIN new_rows n USING (procedure_id) "
        "WHERE (o.start_time, o.procedure_category) IS DISTINCT FROM "
        "(n.start_time, n.procedure_category)"
    )
    ins = f"SELECT 1 AS sign, {cols.format(t='n')} FROM new_rows n"  # nosec B608
    upd = (
        f"SELECT -1 AS sign, {cols.format(t='o')} FROM old_rows o "  # nosec B608
        f"WHERE o.procedure_id IN ({changed}) UNION ALL "
        f"SELECT 1, {cols.format(t='n')} FROM new_rows n WHERE n.procedure_id IN ({changed})"
    )
    dele = f"SELECT -1 AS sign, {cols.format(t='o')} FROM old_rows o"  # nosec B608
    # A procedure that changes day or category moves its outcome (read here, after the
    # procedure rows are locked by this statement) from the old group to the new one.
    outcome_cols = ", ".join(f"c.{c}" for c in ("success_status", *OUTCOME_INPUTS[1:]))
    move = (
        f"SELECT -1 AS sign, o.start_time, o.procedure_category, {outcome_cols} "  # nosec B608
        f"FROM old_rows o JOIN outcomes c USING (procedure_id) "
        f"WHERE o.procedure_id IN ({moved}) UNION ALL "
        f"SELECT 1, n.start_time, n.procedure_category, {outcome_cols} "
        f"FROM new_rows n JOIN outcomes c USING (procedure_id) "
        f"WHERE n.procedure_id IN ({moved})"
    )
    return {
        "INSERT": (NEW_ROWS, _procedure_statements(d, ins)),
        "UPDATE": (
            changed,
            [
                *_procedure_statements(d, upd),
                f"IF EXISTS ({moved}) THEN\n{_outcome_statement(d, move)};\nEND IF",
            ],
        ),
        "DELETE": (OLD_ROWS, _procedure_statements(d, dele)),
    }


def _pg_outcome_functions(d: Dialect) -> dict[str, tuple[str, list[str]]]:
    cols = ", ".join(f"{{t}}.{c}" for c in OUTCOME_INPUTS)

    def joined(sign: str, rows: str, where: str = "") -> str:
        return (
            f"SELECT {sign} AS sign, p.start_time, p.procedure_category, {cols.format(t='r')} "  # nosec B608
            f"FROM {rows} r JOIN ({PG_LOCKED.format(rows=rows)}) p USING (procedure_id){where}"
        )

    changed = (
        "SELECT n.procedure_id FROM old_rows o JOIN new_rows n USING (procedure_id) "  # nosec B608
        f"WHERE {_differs(OUTCOME_INPUTS)}"
    )
    where = f" WHERE r.procedure_id IN ({changed})"
    both = f"{joined('-1', 'old_rows', where)} UNION ALL {joined('1', 'new_rows', where)}"
    return {
        "INSERT": (NEW_ROWS, [_outcome_statement(d, joined("1", "new_rows"))]),
        "UPDATE": (changed, [_outcome_statement(d, both)]),
        "DELETE": (OLD_ROWS, [_outcome_statement(d, joined("-1", "old_rows"))]),
    }


def _pg_flush() -> None:
    """Create the pending deltas and the flush that applies them when a transaction commits.

    Statement triggers only append deltas (no locks on shared rows) and mark the transaction;
    the mark's deferred trigger then merges them into the roll-ups at commit, one statement
    per roll-up in a fixed order, rows in key order. A transaction thus locks roll-up rows
    only while committing, after its last wait on any other row, and always in the same
    order: concurrent writers cannot deadlock on them, however many statements they run
    (executemany sends one per row). The tables are UNLOGGED: they are empty at every commit.
    """
    op.execute(
        "CREATE UNLOGGED TABLE procedures_pending (xid bigint NOT NULL, sign integer NOT NULL, "
        "procedure_id varchar(128), robot_id varchar(128), procedure_category varchar(20), "
        "status varchar(20), start_time timestamptz, duration_minutes double precision, "
        "complexity_score double precision)"
    )
    op.execute(
        "CREATE UNLOGGED TABLE outcome_days_pending (xid bigint NOT NULL, "
        "LIKE outcome_days INCLUDING DEFAULTS)"
    )
    for table in PENDING:
        op.execute(f"CREATE INDEX ix_{table}_xid ON {table} (xid)")
    op.execute("CREATE UNLOGGED TABLE rollup_flush (xid bigint PRIMARY KEY)")
    pending = "SELECT * FROM procedures_pending WHERE xid = NEW.xid"
    merges = [
        *_procedure_statements(Dialect("postgresql"), pending),
        "DELETE FROM procedures_pending WHERE xid = NEW.xid",
    ]
    keys, values = ["day", "procedure_category", "success_status"], list(OUTCOME_DAY)
    exprs = [*keys, *(f"sum({v})" for v in values)]
    merges.append(
        "WITH d AS (DELETE FROM outcome_days_pending WHERE xid = NEW.xid RETURNING *)\n"  # nosec B608
        + _merge("outcome_days", keys, values, [*keys, *values], exprs, "d")
    )
    merges.append("DELETE FROM rollup_flush WHERE xid = NEW.xid")
    # Flushed early (SET CONSTRAINTS ... IMMEDIATE): later writes must mark again.
    merges.append(f"PERFORM set_config('{SETTING}', '', true)")
    op.execute(
        "CREATE FUNCTION rollup_flush() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
        + "".join(f"{m};\n" for m in merges)
        + "RETURN NULL;\nEND $$"
    )
    op.execute(
        "CREATE CONSTRAINT TRIGGER rollup_flush AFTER INSERT ON rollup_flush "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION rollup_flush()"
    )


def _pg_upgrade(d: Dialect) -> None:
    _pg_flush()
    for table, functions in (
        ("procedures", _pg_procedure_functions(d)),
        ("outcomes", _pg_outcome_functions(d)),
    ):
        for event, (guard, statements) in functions.items():
            name = f"{table}_rollup_{event.lower()}"
            op.execute(_pg_function(name, guard, statements))
            refs = {
                "INSERT": "NEW TABLE AS new_rows",
                "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
                "DELETE": "OLD TABLE AS old_rows",
            }[event]
            op.execute(
                f"CREATE TRIGGER {name} AFTER {event} ON {table} REFERENCING {refs} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
            )
    # The outcome goes first, while its procedure still gives its day and category.
    op.execute(
        "CREATE FUNCTION procedures_rollup_unlink() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\nDELETE FROM outcomes WHERE procedure_id = OLD.procedure_id;\nRETURN OLD;\n"
        "END $$"
    )
    op.execute(
        "CREATE TRIGGER procedures_rollup_unlink BEFORE DELETE ON procedures "
        "FOR EACH ROW EXECUTE FUNCTION procedures_rollup_unlink()"
    )
    for table, targets in (("procedures", ROLLUPS), ("outcomes", ("outcome_days",))):
        name = f"{table}_rollup_truncate"
        op.execute(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            # DELETE: a TRUNCATE naming the roll-ups too has them open in this session.
            "BEGIN\n"
            + "".join(f"DELETE FROM {t};\n" for t in targets)  # nosec B608
            + "".join(
                f"DELETE FROM {t} WHERE xid = txid_current();\n"  # nosec B608
                for t in (PENDING if table == "procedures" else PENDING[1:])
            )
            + "RETURN NULL;\nEND $$"
        )
        op.execute(
            f"CREATE TRIGGER {name} AFTER TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}()"
        )


def _pg_downgrade() -> None:
    for table in ("procedures", "outcomes"):
        for event in ("insert", "update", "delete", "truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_rollup_{event} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {table}_rollup_{event}()")
    op.execute("DROP TRIGGER IF EXISTS procedures_rollup_unlink ON procedures")
    op.execute("DROP FUNCTION IF EXISTS procedures_rollup_unlink()")
    op.execute("DROP TABLE IF EXISTS rollup_flush")  # its trigger goes with it
    op.execute("DROP FUNCTION IF EXISTS rollup_flush()")
    for table in PENDING:
        op.execute(f"DROP TABLE IF EXISTS {table}")


# --- SQLite ---------------------------------------------------------------------------------


def _row(sign: str, ref: str, columns: tuple[str, ...], extra: str = "") -> str:
    cols = ", ".join(f"{ref}.{c} AS {c}" for c in columns)
    return f"SELECT {sign} AS sign, {cols}{extra}"


def _sqlite_upgrade(d: Dialect) -> None:
    pcols = ("procedure_id", *PROCEDURE_INPUTS)
    ocols = OUTCOME_INPUTS

    def outcome(sign: str, ref: str) -> str:
        return (
            f"SELECT {sign} AS sign, p.start_time, p.procedure_category, "
            + ", ".join(f"{ref}.{c} AS {c}" for c in ocols)
            + f" FROM procedures p WHERE p.procedure_id = {ref}.procedure_id"
        )

    def moved_outcome(sign: str, ref: str) -> str:
        return (
            f"SELECT {sign} AS sign, {ref}.start_time AS start_time, "
            f"{ref}.procedure_category AS procedure_category, "
            + ", ".join(f"c.{c} AS {c}" for c in ocols)
            + f" FROM outcomes c WHERE c.procedure_id = {ref}.procedure_id"
        )

    def body(statements: list[str]) -> str:
        return "BEGIN\n" + "".join(f"{s};\n" for s in statements) + "END"

    proc_when = _differs(PROCEDURE_INPUTS, "OLD", "NEW", "IS NOT")
    triggers = {
        "procedures_rollup_insert": (
            "AFTER INSERT ON procedures FOR EACH ROW",
            _procedure_statements(d, _row("1", "NEW", pcols)),
        ),
        "procedures_rollup_update": (
            f"AFTER UPDATE ON procedures FOR EACH ROW WHEN {proc_when}",
            [
                *_procedure_statements(d, _row("-1", "OLD", pcols)),
                *_procedure_statements(d, _row("1", "NEW", pcols)),
                _outcome_statement(d, moved_outcome("-1", "OLD")),
                _outcome_statement(d, moved_outcome("1", "NEW")),
            ],
        ),
        # Before: the outcome goes while the procedure still gives its day and category.
        "procedures_rollup_delete": (
            "BEFORE DELETE ON procedures FOR EACH ROW",
            [
                "DELETE FROM outcomes WHERE procedure_id = OLD.procedure_id",
                *_procedure_statements(d, _row("-1", "OLD", pcols)),
            ],
        ),
        "outcomes_rollup_insert": (
            "AFTER INSERT ON outcomes FOR EACH ROW",
            [_outcome_statement(d, outcome("1", "NEW"))],
        ),
        "outcomes_rollup_update": (
            "AFTER UPDATE ON outcomes FOR EACH ROW WHEN "
            + _differs(OUTCOME_INPUTS, "OLD", "NEW", "IS NOT"),
            [
                _outcome_statement(d, outcome("-1", "OLD")),
                _outcome_statement(d, outcome("1", "NEW")),
            ],
        ),
        "outcomes_rollup_delete": (
            "AFTER DELETE ON outcomes FOR EACH ROW",
            [_outcome_statement(d, outcome("-1", "OLD"))],
        ),
    }
    for name, (event, statements) in triggers.items():
        op.execute(f"CREATE TRIGGER {name} {event} {body(statements)}")


def _sqlite_downgrade() -> None:
    for table in ("procedures", "outcomes"):
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_rollup_{event}")


# --- Backfill -------------------------------------------------------------------------------


def _backfill(d: Dialect) -> None:
    procs = "SELECT 1 AS sign, * FROM procedures"
    for statement in _procedure_statements(d, procs):
        op.execute(statement)
    cols = ", ".join(f"c.{c}" for c in OUTCOME_INPUTS)
    joined = (
        f"SELECT 1 AS sign, p.start_time, p.procedure_category, {cols} "  # nosec B608
        "FROM outcomes c JOIN procedures p ON p.procedure_id = c.procedure_id"
    )
    op.execute(_outcome_statement(d, joined))


def upgrade() -> None:
    _create_tables()
    name = op.get_bind().dialect.name
    d = Dialect(name)
    # Triggers first, then the backfill, in one transaction: creating a trigger locks the
    # table against writers until commit, so no write falls between the two.
    if d.pg:
        _pg_upgrade(Dialect(name, stage=True))
    else:
        _sqlite_upgrade(d)
    _backfill(d)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _pg_downgrade()
    else:
        _sqlite_downgrade()
    for name in reversed(ROLLUPS):
        op.drop_table(name)
