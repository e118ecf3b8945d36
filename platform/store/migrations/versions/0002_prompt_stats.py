"""Per-prompt telemetry: the prompt_stats table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Written out in full rather than imported from models.py, as 0001 is: a migration is a frozen record of
one revision. Only adds a table, so a database at 0001 keeps every row it has.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prompt_stats",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Text(), nullable=False),
        sa.Column("p_hat", sa.Float(), nullable=True),
        sa.Column("g_hat", sa.Float(), nullable=True),
        sa.Column("n_alloc", sa.Integer(), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("probed", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_prompt_stats"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_prompt_stats_run_id_runs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("run_id", "step", "prompt_id", name="uq_prompt_stats_run_id_step_prompt_id"),
    )
    op.create_index("ix_prompt_stats_run_id_step", "prompt_stats", ["run_id", "step"])


def downgrade() -> None:
    op.drop_index("ix_prompt_stats_run_id_step", table_name="prompt_stats")
    op.drop_table("prompt_stats")
