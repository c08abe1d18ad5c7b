"""Drop the stored page documents (PostgreSQL): pages are built by the service from rows.

Migrations 0006 and 0007 kept each procedure's, outcome's and robot's list-page JSON in the
rows, written by triggers, so that a page concatenated stored text. The service now reads
typed rows and writes each answer once, with orjson, from the route's response model
(storage.pages, api.params); the columns, their functions and triggers go. Writes of
procedures and outcomes no longer pay for them, and a later field shown on the pages needs no
migration.

The downgrade runs 0006's and 0007's upgrades again: the same columns, functions and
triggers, the documents of every row written back (minutes per million procedures; see
0006). SQLite never had them: nothing to do there.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import importlib
from types import ModuleType

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _version(name: str) -> ModuleType:
    # The earlier migrations themselves, so that the downgrade restores exactly what they made.
    return importlib.import_module(f"medrobotics.storage.migrations.versions.{name}")


PROCEDURES_AND_OUTCOMES = "0006_page_documents"
ROBOTS = "0007_robot_page_documents"


def upgrade() -> None:
    """Drop the document triggers, functions and columns (no-ops on SQLite)."""
    _version(ROBOTS).downgrade()
    _version(PROCEDURES_AND_OUTCOMES).downgrade()


def downgrade() -> None:
    """Restore them, documents written for every row (no-ops on SQLite)."""
    _version(PROCEDURES_AND_OUTCOMES).upgrade()
    _version(ROBOTS).upgrade()
