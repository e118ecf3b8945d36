"""Experiments, sweeps and their trials (`sweep_trials`: Optuna, sharing the database, owns `trials`),
evaluations; runs tagged with their experiment, sweep and trial.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28

Written out in full rather than imported from models.py, as 0001 and 0002 are. Adds tables and nullable
run columns only, so every row of a database at 0002 is kept; ``experiments`` is filled from the
experiment paths the existing runs recorded, and each run is pointed at its row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _create_tables()
    # Batch mode: SQLite cannot add a foreign key to an existing table, so Alembic copies it (rows too).
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("experiment_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sweep_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("trial_id", sa.String(64), nullable=True))
        batch.create_foreign_key(
            "fk_runs_experiment_id_experiments", "experiments", ["experiment_id"], ["id"]
        )
        batch.create_foreign_key("fk_runs_sweep_id_sweeps", "sweeps", ["sweep_id"], ["id"])
        batch.create_foreign_key("fk_runs_trial_id_sweep_trials", "sweep_trials", ["trial_id"], ["id"])
        batch.create_index("ix_runs_sweep_id", ["sweep_id"])
    _backfill_experiments()


def _create_tables() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
        sa.UniqueConstraint("name", name="uq_experiments_name"),
    )
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=True),
        sa.Column("objective", sa.String(255), nullable=False),
        sa.Column("mode", sa.String(8), nullable=False),
        sa.Column("space", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sweeps"),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name="fk_sweeps_experiment_id_experiments"
        ),
    )
    op.create_table(
        "sweep_trials",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("sweep_id", sa.String(64), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("objective", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sweep_trials"),
        sa.ForeignKeyConstraint(
            ["sweep_id"], ["sweeps.id"], name="fk_sweep_trials_sweep_id_sweeps", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_sweep_trials_sweep_id", "sweep_trials", ["sweep_id"])
    op.create_table(
        "evaluations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("set_name", sa.String(255), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=False),
        sa.Column("mean_at_k", sa.Float(), nullable=True),
        sa.Column("pass_at_k", sa.Float(), nullable=True),
        sa.Column("n_problems", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_evaluations"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_evaluations_run_id_runs", ondelete="CASCADE"
        ),
        sa.UniqueConstraint(
            "run_id",
            "step",
            "set_name",
            "k",
            "temperature",
            name="uq_evaluations_run_id_step_set_name_k_temperature",
        ),
    )


def _backfill_experiments() -> None:
    runs = sa.table("runs", sa.column("experiment", sa.Text()), sa.column("experiment_id", sa.Integer()))
    experiments = sa.table(
        "experiments",
        sa.column("id", sa.Integer()),
        sa.column("name", sa.Text()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    conn = op.get_bind()
    names = sorted(conn.execute(sa.select(runs.c.experiment).distinct()).scalars())
    if not names:
        return
    now = datetime.now(timezone.utc)
    conn.execute(sa.insert(experiments), [{"name": name, "created_at": now} for name in names])
    ids = sa.select(experiments.c.id).where(experiments.c.name == runs.c.experiment).scalar_subquery()
    conn.execute(sa.update(runs).values(experiment_id=ids))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_sweep_id")
        batch.drop_constraint("fk_runs_trial_id_sweep_trials", type_="foreignkey")
        batch.drop_constraint("fk_runs_sweep_id_sweeps", type_="foreignkey")
        batch.drop_constraint("fk_runs_experiment_id_experiments", type_="foreignkey")
        batch.drop_column("trial_id")
        batch.drop_column("sweep_id")
        batch.drop_column("experiment_id")
    op.drop_table("evaluations")
    op.drop_index("ix_sweep_trials_sweep_id", table_name="sweep_trials")
    op.drop_table("sweep_trials")
    op.drop_table("sweeps")
    op.drop_table("experiments")
