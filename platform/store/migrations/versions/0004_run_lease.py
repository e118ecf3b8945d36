"""Run leases: which process owns a running run, and until when.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

Written out in full rather than imported from models.py, as 0001-0003 are. Adds nullable run columns only,
so every row of a database at 0003 is kept; existing runs get no owner, which reads as "not leased" (a run
left `running` by a crashed pre-lease dibs can be resumed as before).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode for SQLite, as in 0003: the table is copied with its rows.
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("owner", sa.String(255), nullable=True))
        batch.add_column(sa.Column("lease_expires", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("lease_expires")
        batch.drop_column("owner")
