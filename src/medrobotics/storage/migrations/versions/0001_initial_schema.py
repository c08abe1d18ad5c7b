"""Initial schema: robots, procedures, outcomes, maintenance, telemetry.

Telemetry on PostgreSQL is range-partitioned by month on `timestamp`: retention drops whole
partitions, time ranges prune, and each partition's indexes stay small enough to keep in
memory at hundreds of millions of rows. The primary key (procedure, robot, time) is the
idempotency key and the per-procedure index; a BRIN index on `timestamp` costs almost
nothing on an append-only table; `received_at` gets a B-tree because the archiver and the
stats read its newest and ranged values. Partitions were created by the writer as months
appeared; since 0008 they are made ahead of time (storage.partitions).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "procedures",
        sa.Column("procedure_id", sa.String(length=128), nullable=False),
        sa.Column("robot_id", sa.String(length=128), nullable=False),
        sa.Column("procedure_type", sa.String(length=200), nullable=True),
        sa.Column("procedure_category", sa.String(length=20), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_minutes", sa.Double(), nullable=True),
        sa.Column("surgeon_id", sa.String(length=128), nullable=True),
        sa.Column("surgeon_name", sa.String(length=200), nullable=True),
        sa.Column("patient_id", sa.String(length=128), nullable=True),
        sa.Column("patient_age", sa.Integer(), nullable=True),
        sa.Column("patient_gender", sa.String(length=200), nullable=True),
        sa.Column("complexity_score", sa.Double(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "procedure_category IN ('urological', 'gynecological', 'cardiac', 'thoracic', 'general', 'orthopedic')",
            name=op.f("ck_procedures_category"),
        ),
        sa.CheckConstraint(
            "status IN ('completed', 'in_progress', 'aborted', 'cancelled')",
            name=op.f("ck_procedures_status"),
        ),
        sa.CheckConstraint(
            "complexity_score IS NULL OR complexity_score BETWEEN 1.0 AND 5.0",
            name=op.f("ck_procedures_complexity"),
        ),
        sa.CheckConstraint(
            "duration_minutes IS NULL OR duration_minutes >= 0", name=op.f("ck_procedures_duration")
        ),
        sa.CheckConstraint(
            "end_time IS NULL OR end_time >= start_time", name=op.f("ck_procedures_end_after_start")
        ),
        sa.CheckConstraint(
            "patient_age IS NULL OR patient_age BETWEEN 0 AND 120",
            name=op.f("ck_procedures_patient_age"),
        ),
        sa.PrimaryKeyConstraint("procedure_id", name=op.f("pk_procedures")),
    )
    op.create_index(
        "ix_procedures_category_start",
        "procedures",
        ["procedure_category", "start_time", "procedure_id"],
        unique=False,
    )
    op.create_index(
        "ix_procedures_robot_start",
        "procedures",
        ["robot_id", "start_time", "procedure_id"],
        unique=False,
    )
    op.create_index(
        "ix_procedures_start", "procedures", ["start_time", "procedure_id"], unique=False
    )
    op.create_index(
        "ix_procedures_status_start",
        "procedures",
        ["status", "start_time", "procedure_id"],
        unique=False,
    )
    op.create_index(
        "ix_procedures_surgeon_start",
        "procedures",
        ["surgeon_id", "start_time", "procedure_id"],
        unique=False,
    )
    op.create_table(
        "robots",
        sa.Column("robot_id", sa.String(length=128), nullable=False),
        sa.Column("robot_serial_number", sa.String(length=200), nullable=True),
        sa.Column("robot_model", sa.String(length=200), nullable=False),
        sa.Column("manufacturer", sa.String(length=200), nullable=True),
        sa.Column("installation_date", sa.Date(), nullable=True),
        sa.Column("facility_id", sa.String(length=128), nullable=False),
        sa.Column("facility_name", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), server_default="operational", nullable=False),
        sa.Column("last_maintenance_date", sa.Date(), nullable=True),
        sa.Column("firmware_version", sa.String(length=200), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('operational', 'maintenance', 'retired')", name=op.f("ck_robots_status")
        ),
        sa.PrimaryKeyConstraint("robot_id", name=op.f("pk_robots")),
        sa.UniqueConstraint("robot_serial_number", name=op.f("uq_robots_robot_serial_number")),
    )
    op.create_index(op.f("ix_robots_facility_id"), "robots", ["facility_id"], unique=False)
    op.create_index(op.f("ix_robots_robot_model"), "robots", ["robot_model"], unique=False)
    op.create_index(op.f("ix_robots_status"), "robots", ["status"], unique=False)
    op.create_table(
        "telemetry",
        sa.Column("procedure_id", sa.String(length=128), nullable=False),
        sa.Column("robot_id", sa.String(length=128), nullable=False),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("arm_position_x", sa.Double(), nullable=True),
        sa.Column("arm_position_y", sa.Double(), nullable=True),
        sa.Column("arm_position_z", sa.Double(), nullable=True),
        sa.Column("arm_rotation", sa.Double(), nullable=True),
        sa.Column("tool_type", sa.String(length=200), nullable=True),
        sa.Column("grip_pressure", sa.Double(), nullable=True),
        sa.Column("tremor_compensation", sa.Double(), nullable=True),
        sa.Column("camera_zoom", sa.Double(), nullable=True),
        sa.Column("camera_angle", sa.Double(), nullable=True),
        sa.Column("force_feedback_x", sa.Double(), nullable=True),
        sa.Column("force_feedback_y", sa.Double(), nullable=True),
        sa.Column("force_feedback_z", sa.Double(), nullable=True),
        sa.Column("system_temperature", sa.Double(), nullable=True),
        sa.Column("power_consumption", sa.Double(), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("procedure_id", "robot_id", "timestamp", name=op.f("pk_telemetry")),
        postgresql_partition_by='RANGE ("timestamp")',
    )
    op.create_index("ix_telemetry_received", "telemetry", ["received_at"], unique=False)
    op.create_index(
        "ix_telemetry_time", "telemetry", ["timestamp"], unique=False, postgresql_using="brin"
    )
    op.create_table(
        "maintenance",
        sa.Column("maintenance_id", sa.String(length=128), nullable=False),
        sa.Column("robot_id", sa.String(length=128), nullable=False),
        sa.Column("maintenance_date", sa.Date(), nullable=False),
        sa.Column("maintenance_type", sa.String(length=20), nullable=False),
        sa.Column("technician_id", sa.String(length=128), nullable=True),
        sa.Column("technician_name", sa.String(length=200), nullable=True),
        sa.Column("issues_found", sa.Text(), nullable=True),
        sa.Column("actions_taken", sa.Text(), nullable=True),
        sa.Column(
            "parts_replaced",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("downtime_hours", sa.Double(), server_default="0", nullable=False),
        sa.Column("next_maintenance_date", sa.Date(), nullable=True),
        sa.Column("cost", sa.Double(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "maintenance_type IN ('routine', 'emergency', 'upgrade', 'calibration')",
            name=op.f("ck_maintenance_type"),
        ),
        sa.CheckConstraint("cost >= 0", name=op.f("ck_maintenance_cost")),
        sa.CheckConstraint("downtime_hours >= 0", name=op.f("ck_maintenance_downtime")),
        sa.CheckConstraint(
            "next_maintenance_date IS NULL OR next_maintenance_date >= maintenance_date",
            name=op.f("ck_maintenance_next_after"),
        ),
        sa.ForeignKeyConstraint(
            ["robot_id"],
            ["robots.robot_id"],
            name=op.f("fk_maintenance_robot_id_robots"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("maintenance_id", name=op.f("pk_maintenance")),
    )
    op.create_index(
        op.f("ix_maintenance_maintenance_date"), "maintenance", ["maintenance_date"], unique=False
    )
    op.create_index(
        op.f("ix_maintenance_robot_id_maintenance_date"),
        "maintenance",
        ["robot_id", "maintenance_date"],
        unique=False,
    )
    op.create_table(
        "outcomes",
        sa.Column("procedure_id", sa.String(length=128), nullable=False),
        sa.Column("success_status", sa.String(length=20), nullable=False),
        sa.Column("blood_loss_ml", sa.Double(), nullable=True),
        sa.Column(
            "complications",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("hospital_stay_days", sa.Double(), nullable=True),
        sa.Column("readmission_30day", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("patient_satisfaction_score", sa.Double(), nullable=True),
        sa.Column("surgeon_notes", sa.Text(), nullable=True),
        sa.Column("recovery_score", sa.Double(), nullable=True),
        sa.Column("follow_up_required", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("CURRENT_TIMESTAMP"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "success_status IN ('successful', 'complicated', 'failed')",
            name=op.f("ck_outcomes_success_status"),
        ),
        sa.CheckConstraint(
            "blood_loss_ml IS NULL OR blood_loss_ml >= 0", name=op.f("ck_outcomes_blood_loss")
        ),
        sa.CheckConstraint(
            "hospital_stay_days IS NULL OR hospital_stay_days >= 0", name=op.f("ck_outcomes_stay")
        ),
        sa.CheckConstraint(
            "patient_satisfaction_score IS NULL OR patient_satisfaction_score BETWEEN 1 AND 10",
            name=op.f("ck_outcomes_satisfaction"),
        ),
        sa.CheckConstraint(
            "recovery_score IS NULL OR recovery_score BETWEEN 1 AND 100",
            name=op.f("ck_outcomes_recovery"),
        ),
        sa.ForeignKeyConstraint(
            ["procedure_id"],
            ["procedures.procedure_id"],
            name=op.f("fk_outcomes_procedure_id_procedures"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("procedure_id", name=op.f("pk_outcomes")),
    )
    op.create_index(
        op.f("ix_outcomes_success_status"), "outcomes", ["success_status"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_outcomes_success_status"), table_name="outcomes")
    op.drop_table("outcomes")
    op.drop_index(op.f("ix_maintenance_robot_id_maintenance_date"), table_name="maintenance")
    op.drop_index(op.f("ix_maintenance_maintenance_date"), table_name="maintenance")
    op.drop_table("maintenance")
    op.drop_index("ix_telemetry_time", table_name="telemetry", postgresql_using="brin")
    op.drop_index("ix_telemetry_received", table_name="telemetry")
    op.drop_table("telemetry")
    op.drop_index(op.f("ix_robots_status"), table_name="robots")
    op.drop_index(op.f("ix_robots_robot_model"), table_name="robots")
    op.drop_index(op.f("ix_robots_facility_id"), table_name="robots")
    op.drop_table("robots")
    op.drop_index("ix_procedures_surgeon_start", table_name="procedures")
    op.drop_index("ix_procedures_status_start", table_name="procedures")
    op.drop_index("ix_procedures_start", table_name="procedures")
    op.drop_index("ix_procedures_robot_start", table_name="procedures")
    op.drop_index("ix_procedures_category_start", table_name="procedures")
    op.drop_table("procedures")
