"""Lake archive: raw batch payloads and the archiver's high-water marks.

`batches` keeps the gzip body of every accepted /ingest/batch request, written in the same
transaction as its records, until the archiver has copied it to the lake. `archive_marks`
holds one row per exported stream: the received_at up to which everything is in the lake.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=20), nullable=False),
        sa.Column("record_count", sa.Integer(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_batches")),
    )
    op.create_index(
        "ix_batches_pending",
        "batches",
        ["received_at"],
        unique=False,
        postgresql_where=sa.text("archived_at IS NULL"),
        sqlite_where=sa.text("archived_at IS NULL"),
    )
    op.create_table(
        "archive_marks",
        sa.Column("stream", sa.String(length=40), nullable=False),
        sa.Column("mark", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pending_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rows_archived", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("stream", name=op.f("pk_archive_marks")),
    )


def downgrade() -> None:
    op.drop_table("archive_marks")
    op.drop_index("ix_batches_pending", table_name="batches")
    op.drop_table("batches")
