"""SQLAlchemy models of the results store: ``experiments``, ``sweeps`` and ``sweep_trials`` (what ran),
``runs``, and what a run recorded: ``metrics``, ``prompt_stats``, ``evaluations`` and ``checkpoints``.

The schema itself is owned by the Alembic migrations in ``migrations/versions``; these models must
describe the head revision exactly (docs/conventions.md, "Metrics and the store"). A change here needs a
new migration, never an edit of an old one.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# "submitted": created by `dibs submit`, waiting for its Ray job to start it (Ray Jobs)
RUN_STATUSES = ("submitted", "running", "finished", "failed", "stopped")
TRIAL_STATUSES = ("pending", *RUN_STATUSES)  # a sweep's trial may be scheduled before its run starts
SWEEP_MODES = ("max", "min")

# Deterministic constraint names, so later migrations (and SQLite batch mode) can address them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL keeps the offset itself; SQLite stores text without one, so values are converted to UTC
    on the way in and tagged as UTC on the way out. Naive datetimes are rejected: they are ambiguous.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps timezone-aware UTC datetimes")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Experiment(Base):
    """An experiment YAML that runs were made from; ``name`` is the path as the runs recorded it."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text, unique=True)  # uq_experiments_name
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Sweep(Base):
    """A hyper-parameter search over one experiment (Ray Tune): its space and its objective."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    experiment_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("experiments.id", name="fk_sweeps_experiment_id_experiments"), nullable=True
    )
    objective: Mapped[str] = mapped_column(String(255))  # a metric name, e.g. eval/accuracy
    mode: Mapped[str] = mapped_column(String(8))  # one of SWEEP_MODES
    space: Mapped[dict[str, Any]] = mapped_column(JSON)  # the search space as the sweep described it
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Trial(Base):
    """One point of a sweep: its parameters, status and objective value (NULL until it reports one)."""

    __tablename__ = "sweep_trials"
    __table_args__ = (Index("ix_sweep_trials_sweep_id", "sweep_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sweep_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("sweeps.id", name="fk_sweep_trials_sweep_id_sweeps", ondelete="CASCADE")
    )
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # dotted config key -> value
    status: Mapped[str] = mapped_column(String(16))  # one of TRIAL_STATUSES
    objective: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Run(Base):
    """One training run: what it ran (config, commit, versions, seed) and how it ended.

    ``experiment`` keeps the YAML path as given; ``experiment_id`` points at the same name in
    ``experiments``. ``sweep_id``/``trial_id`` are set for a run made by a sweep trial.
    """

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), index=True)
    experiment: Mapped[str] = mapped_column(Text)  # path of the experiment YAML
    status: Mapped[str] = mapped_column(String(16))  # one of RUN_STATUSES
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # resolved config
    git_commit: Mapped[str | None] = mapped_column(String(64), nullable=True)
    versions: Mapped[dict[str, Any]] = mapped_column(JSON)  # package -> version
    seed: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    experiment_id: Mapped[int | None] = mapped_column(
        Integer, ForeignKey("experiments.id", name="fk_runs_experiment_id_experiments"), nullable=True
    )
    sweep_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("sweeps.id", name="fk_runs_sweep_id_sweeps"), nullable=True, index=True
    )
    trial_id: Mapped[str | None] = mapped_column(
        String(64), ForeignKey("sweep_trials.id", name="fk_runs_trial_id_sweep_trials"), nullable=True
    )
    # The lease (store/lease.py): the driver process that may write the run ("host:pid:token") and until
    # when; it renews the lease while it runs and clears it when it closes the run. NULL: nobody holds it.
    owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    lease_expires: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Metric(Base):
    """One scalar at one step, with the budget spent so far (rollouts incl. probe, tokens, seconds).

    ``value`` is NULL for a non-finite number (nan, inf): JSON and PostgreSQL cannot carry them.
    """

    __tablename__ = "metrics"
    __table_args__ = (
        UniqueConstraint("run_id", "name", "step", name="uq_metrics_run_id_name_step"),
        Index("ix_metrics_run_id_name", "run_id", "name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("runs.id", name="fk_metrics_run_id_runs", ondelete="CASCADE")
    )
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    rollouts_consumed: Mapped[int] = mapped_column(Integer)
    tokens_generated: Mapped[int] = mapped_column(Integer)
    wall_seconds: Mapped[float] = mapped_column(Float)


class Checkpoint(Base):
    """Where the checkpoint of a run at a step was written."""

    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_checkpoints_run_id_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("runs.id", name="fk_checkpoints_run_id_runs", ondelete="CASCADE")
    )
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PromptStatRow(Base):
    """Where one step's rollout budget went for one prompt (a stored
    ``dibs.platform.core.metrics.PromptStat``).

    ``p_hat``/``g_hat`` are NULL when the allocator had no estimate (NaN) or a non-finite one, as for
    ``Metric.value``. ``prompt_id`` is the prompt text itself, so rows line up across runs of a task.
    """

    __tablename__ = "prompt_stats"
    __table_args__ = (
        UniqueConstraint("run_id", "step", "prompt_id", name="uq_prompt_stats_run_id_step_prompt_id"),
        Index("ix_prompt_stats_run_id_step", "run_id", "step"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("runs.id", name="fk_prompt_stats_run_id_runs", ondelete="CASCADE")
    )
    step: Mapped[int] = mapped_column(Integer)
    prompt_id: Mapped[str] = mapped_column(Text)
    p_hat: Mapped[float | None] = mapped_column(Float, nullable=True)
    g_hat: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_alloc: Mapped[int] = mapped_column(Integer)  # training rollouts given to the prompt (0: skipped)
    accepted: Mapped[int] = mapped_column(Integer)  # of those, how many scored 1
    probed: Mapped[bool] = mapped_column(Boolean)  # estimates from a fresh probe at this step


class Evaluation(Base):
    """One evaluation of a run's policy at a step on one problem set (`dibs eval`).

    ``mean_at_k`` is the mean accuracy of k samples per problem at ``temperature`` and ``pass_at_k`` the
    share of problems with at least one correct sample; NULL when not measured or non-finite.
    """

    __tablename__ = "evaluations"
    __table_args__ = (
        UniqueConstraint(
            "run_id",
            "step",
            "set_name",
            "k",
            "temperature",
            name="uq_evaluations_run_id_step_set_name_k_temperature",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("runs.id", name="fk_evaluations_run_id_runs", ondelete="CASCADE")
    )
    step: Mapped[int] = mapped_column(Integer)
    set_name: Mapped[str] = mapped_column(String(255))
    k: Mapped[int] = mapped_column(Integer)
    temperature: Mapped[float] = mapped_column(Float)
    mean_at_k: Mapped[float | None] = mapped_column(Float, nullable=True)
    pass_at_k: Mapped[float | None] = mapped_column(Float, nullable=True)
    n_problems: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
