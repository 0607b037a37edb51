"""Tables. PostgreSQL in production, SQLite as the embedded default; one schema for both."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import text
from sqlalchemy.types import TypeDecorator

from tuneyard.states import AttemptState, StudyState, WorkerState

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


# BIGINT primary keys on Postgres, INTEGER (rowid alias, so autoincrementing) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    # The states, decision kinds and log kinds of these tables are the StrEnums of
    # tuneyard.states, stored as their strings (the columns stay strings).
    state: Mapped[str] = mapped_column(String(16), default=StudyState.RUNNING)  # StudyState
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    direction: Mapped[str] = mapped_column(String(8))
    metric: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    # Counters kept under the study lock, so the hot paths never count rows. The slot count
    # and the usage, which a job's end changes without that lock, are StudyCounters'.
    trials_started: Mapped[int] = mapped_column(Integer, default=0)
    brackets_opened: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The last error a trial of the study failed with (its summary line, its exception's class
    # when the error was a traceback, the trial), and how many trials in a row failed with
    # that same summary: what fail fast (limits.fail_fast) decides on and what a failing or
    # failed study shows.
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_type: Mapped[str | None] = mapped_column(String(200), nullable=True)
    last_error_trial_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error_streak: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The SHA-256 of the study's code archive (execution.code), when it carries its code.
    code_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The user's free-text note (its tags are rows of study_tags, to filter by them).
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    # A study with notifications: the secret its webhook posts are signed with (kept as it
    # is: it signs), and the best value a completed trial has had, so a new best is told
    # without reading the study's trials.
    webhook_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    notified_best: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        Index("ix_studies_state_id", "state", "id"),
        Index("ix_studies_code_digest", "code_digest"),
    )
    # Every update of a study through the ORM is a compare-and-set on its state: it carries
    # "AND state = <the state it was read in>", and one that matches no row raises
    # StaleDataError instead of writing over a change made meanwhile.
    __mapper_args__ = {"version_id_col": state, "version_id_generator": False}


class StudyCounters(Base):
    """A study's counters that a job's end changes: a row of their own, changed only by
    increments applied as the transaction commits (tuneyard/store/counters.py), so that a
    pause or a job's end need not wait for the study's row lock, which ``next`` holds."""

    __tablename__ = "study_counters"

    study_id: Mapped[int] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True
    )
    # Jobs running now (the slots ``limits.max_concurrent`` bounds).
    active: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What the study's ended attempts used, added as each one ends (never summed over its
    # attempts): GPU-seconds (wall time times GPUs; a CPU-only attempt adds none) and wall
    # seconds of every attempt, CPU or GPU ("worker time").
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    worker_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class Trial(Base):
    __tablename__ = "trials"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    # A TrialState, changed only by tuneyard.service.transitions.move.
    state: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    bracket: Mapped[int] = mapped_column(Integer, default=0)
    base_rung: Mapped[int] = mapped_column(Integer, default=0)
    rung: Mapped[int] = mapped_column(Integer, default=-1)
    resource_from: Mapped[float] = mapped_column(Float, default=0.0)
    resource_to: Mapped[float] = mapped_column(Float)
    # Latest value of the study's metric and the step it was reported at.
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    resource: Mapped[float | None] = mapped_column(Float, nullable=True)
    # A study with several objectives or constraints: every objective's latest value (in
    # the objectives' order, the user's units), the total constraint violation there (0:
    # feasible) and, when infeasible, which constraints failed.
    values: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    violation: Mapped[float | None] = mapped_column(Float, nullable=True)
    infeasible: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Running statistics of the score (value, negated when maximising) for median stopping.
    best_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    score_sum: Mapped[float] = mapped_column(Float, default=0.0)
    score_count: Mapped[int] = mapped_column(Integer, default=0)
    # DecisionKind.PAUSE when a report decided a pause the worker has not acknowledged yet
    # (its checkpoint not saved), else None.
    pending: Mapped[str | None] = mapped_column(String(16), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The last few kilobytes of the objective's output; the whole of it is in trial_logs.
    log_tail: Mapped[str | None] = mapped_column(Text, nullable=True)
    log_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the checkpoint sweep (service/retention.py) should next look at what is stored
    # for this trial: set when a checkpoint is superseded, when the trial ends, and when a
    # completed trial's model arrives; None when there is nothing to look at.
    sweep_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The user's free-text note and tags (a JSON list of strings; None: none yet).
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    tags: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    # A study with ``evaluation``: a trial (a configuration, ``parent_id`` None) is evaluated
    # by its replicates, rows of their own (a fold and/or seed each, ``replicate`` its index)
    # that run as jobs; the trial itself runs none and holds no lease. Its value is the
    # aggregate of its replicates', with their spread.
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("trials.id", ondelete="CASCADE"), nullable=True
    )
    replicate: Mapped[int | None] = mapped_column(Integer, nullable=True)
    value_std: Mapped[float | None] = mapped_column(Float, nullable=True)
    value_stderr: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        # A trial's number is unique in its study; its replicates share it, each with its
        # own index.
        Index(
            "uq_trials_study_number",
            "study_id",
            "number",
            unique=True,
            postgresql_where=text("parent_id IS NULL"),
            sqlite_where=text("parent_id IS NULL"),
        ),
        Index("uq_trials_parent_replicate", "parent_id", "replicate", unique=True),
        Index("ix_trials_sweep_at", "sweep_at"),
        # The completed trials of a study that hold a model, by value: the sweep keeps the
        # best limits.keep_models of them without reading the study's other trials.
        Index(
            "ix_trials_study_models",
            "study_id",
            "value",
            "id",
            postgresql_where=text("state = 'completed' AND checkpoint IS NOT NULL"),
            sqlite_where=text("state = 'completed' AND checkpoint IS NOT NULL"),
        ),
        Index("ix_trials_study_state_number", "study_id", "state", "number"),
        Index("ix_trials_study_value", "study_id", "value", "id"),
        Index("ix_trials_study_state_value", "study_id", "state", "value", "id"),
        Index("ix_trials_state_lease", "state", "lease_expires_at"),
        # The dashboard's version stamp of a study: the latest change to any of its trials.
        Index("ix_trials_study_updated", "study_id", "updated_at"),
        # The dashboard's aggregates (history buckets, counts by state, resource trained)
        # read only this index.
        Index(
            "ix_trials_study_state_number_value",
            "study_id",
            "state",
            "number",
            "value",
            "resource",
            postgresql_where=text("parent_id IS NULL"),
            sqlite_where=text("parent_id IS NULL"),
        ),
    )
    # A compare-and-set on the trial's state, as for studies.
    __mapper_args__ = {"version_id_col": state, "version_id_generator": False}


class Report(Base):
    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    # The attempt that stored it: a later attempt's report of the same step replaces it.
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    step: Mapped[float] = mapped_column(Float)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    decision: Mapped[str] = mapped_column(String(16))  # DecisionKind
    reason: Mapped[str] = mapped_column(Text)
    resource_to: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("trial_id", "step", name="uq_reports_trial_step"),)


class Bracket(Base):
    __tablename__ = "brackets"

    study_id: Mapped[int] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True
    )
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    base: Mapped[int] = mapped_column(Integer)
    size: Mapped[int | None] = mapped_column(Integer, nullable=True)
    admitted: Mapped[int] = mapped_column(Integer, default=0)
    closed: Mapped[bool] = mapped_column(Boolean, default=False)
    # No more promotions can come out of it; the hot paths skip it.
    done: Mapped[bool] = mapped_column(Boolean, default=False)


class Rung(Base):
    __tablename__ = "rungs"

    study_id: Mapped[int] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True
    )
    bracket: Mapped[int] = mapped_column(Integer, primary_key=True)
    rung: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource: Mapped[float] = mapped_column(Float)
    entries: Mapped[int] = mapped_column(Integer, default=0)
    dropped: Mapped[int] = mapped_column(Integer, default=0)
    promoted: Mapped[int] = mapped_column(Integer, default=0)
    # The entry at the scheduler's cut-off rank (e.g. the floor(n/eta)-th best), moved by one
    # neighbour lookup per new entry so that "is it in the top?" is one comparison.
    cut_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    cut_entry: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RungEntry(Base):
    __tablename__ = "rung_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    bracket: Mapped[int] = mapped_column(Integer)
    rung: Mapped[int] = mapped_column(Integer)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float)
    # Several objectives or constraints: the minimised objective vector and the total
    # constraint violation, which rank the rung by non-dominated sorting.
    scores: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    violation: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
    waiting: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("trial_id", "bracket", "rung", name="uq_rung_entries_trial_rung"),
        # Ranking within a rung: count of better scores, score at a rank.
        Index("ix_rung_entries_rank", "study_id", "bracket", "rung", "score", "id"),
        # Best promotable entry of a rung: a partial index holding only paused, unpromoted
        # entries, so the lookup stays small however many trials a rung has seen.
        Index(
            "ix_rung_entries_waiting",
            "study_id",
            "bracket",
            "rung",
            "score",
            "id",
            postgresql_where=text("waiting AND NOT promoted"),
            sqlite_where=text("waiting AND NOT promoted"),
        ),
    )


class DecisionLog(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # LogKind
    reason: Mapped[str] = mapped_column(Text)
    rung: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resource: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_decisions_trial", "trial_id", "id"),
        Index("ix_decisions_study", "study_id", "id"),
    )


class Attempt(Base):
    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    resource_from: Mapped[float] = mapped_column(Float)
    resource_to: Mapped[float] = mapped_column(Float)
    # AttemptState: running until the attempt ends (ended_at set) in the state it ended in.
    state: Mapped[str] = mapped_column(String(16), default=AttemptState.RUNNING)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The GPUs the attempt ran on, as its worker named them ([{"index": "0", "name": ...}]),
    # and how many: none for a CPU slot.
    gpus: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, server_default="[]")
    gpu_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Seconds from its start to its end, set when it ends.
    wall_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        UniqueConstraint("trial_id", "number", name="uq_attempts_trial_number"),
        # A worker's attempts by time, with their ends: its busy fraction over the last hour
        # from the index alone.
        Index("ix_attempts_worker_started", "worker", "started_at", "ended_at"),
        # The dashboard's timeline of a time window: the attempts that started in it, and
        # those that started before it and ended in it or run still.
        Index("ix_attempts_started", "started_at", "id"),
        Index("ix_attempts_ended", "ended_at"),
    )


class StudyTag(Base):
    """A tag the user put on a study, a row each, so the study list filters by tag through
    an index."""

    __tablename__ = "study_tags"

    study_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(40), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_study_tags_tag_study", "tag", "study_id"),)


class TrialLog(Base):
    """Output of an objective, in the chunks its worker shipped (appended, never rewritten).

    A chunk is keyed by (trial, attempt, offset in that attempt's output), so a chunk sent
    again after a lost answer is stored once."""

    __tablename__ = "trial_logs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    offset: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("trial_id", "attempt", "offset", name="uq_trial_logs_chunk"),
    )


class Worker(Base):
    """A worker process (one per GPU or CPU slot) that registered with the service."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    queue: Mapped[str | None] = mapped_column(String(64), nullable=True)
    slots: Mapped[int] = mapped_column(Integer, default=1)
    # [{"index": "0", "name": "NVIDIA H100", "memory_mib": 81559}], empty on a CPU slot.
    gpus: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16), default=WorkerState.ACTIVE)  # WorkerState
    trial_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Observation(Base):
    """What model-based samplers learn from: a trial's score (lower is better) at a resource,
    appended when a report reaches a rung and when a trial ends. Samplers read the rows after
    their watermark, by (study, id)."""

    __tablename__ = "observations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    resource: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    scores: Mapped[list[float] | None] = mapped_column(JSON, nullable=True)
    violation: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # The score's variance when it is a mean over folds or seeds (its squared standard error).
    noise: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("trial_id", "resource", name="uq_observations_trial_resource"),
        Index("ix_observations_study_id", "study_id", "id"),
    )


class PopulationStep(Base):
    """A pbt or pb2 member at an interval boundary: the score it reached, the checkpoint it
    saved there, the parameters it trained with up to there, and the step's outcome (kept, or
    exploited: the donor it cloned, the parameters from here on, the donor's schedule up to
    the clone). A trial's rows are its lineage; scores are lower-is-better, None when not
    finite."""

    __tablename__ = "population_steps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    resource: Mapped[float] = mapped_column(Float)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The score the interval started from: the member's at its previous boundary, or after
    # an exploit there, the donor's (PB2's improvement is score_from - score).
    score_from: Mapped[float | None] = mapped_column(Float, nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    decision: Mapped[str] = mapped_column(String(16))  # keep | exploit
    new_params: Mapped[dict[str, Any]] = mapped_column(JSON)
    donor_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    donor_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    donor_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    # An exploit: the donor's schedule up to the clone, [[resource, params], ...].
    inherited: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("trial_id", "resource", name="uq_population_steps_trial_resource"),
        Index("ix_population_steps_study_resource", "study_id", "resource"),
    )


class ReplicateScore(Base):
    """A replicate's score (lower is better) and value at a resource level of its trial's
    ladder: what the trial's aggregate there and the racing test are made of."""

    __tablename__ = "replicate_scores"

    parent_id: Mapped[int] = mapped_column(
        ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True
    )
    resource: Mapped[float] = mapped_column(Float, primary_key=True)
    replicate: Mapped[int] = mapped_column(Integer, primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    value: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReplicateLevel(Base):
    """A trial's aggregate over its replicates at a resource level, with their spread;
    ``complete`` once every replicate reached the level. The study's incumbent at a level,
    which racing compares a trial with, is its best complete row there: one index probe."""

    __tablename__ = "replicate_levels"

    parent_id: Mapped[int] = mapped_column(
        ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True
    )
    resource: Mapped[float] = mapped_column(Float, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    score: Mapped[float] = mapped_column(Float)
    value: Mapped[float] = mapped_column(Float)
    std: Mapped[float] = mapped_column(Float)
    stderr: Mapped[float] = mapped_column(Float)
    n: Mapped[int] = mapped_column(Integer)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        Index("ix_replicate_levels_incumbent", "study_id", "resource", "complete", "score"),
    )


class SamplerState(Base):
    """A model-based sampler's state (versioned JSON) and the last observation it has seen.

    ``revision`` grows with each save, so an API process can tell whether the sampler it keeps
    in memory is the one stored."""

    __tablename__ = "sampler_states"

    study_id: Mapped[int] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    watermark: Mapped[int] = mapped_column(BigInteger, default=0)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ApiToken(Base):
    """A bearer token of the API. Only the SHA-256 of its secret is stored: the secret itself is
    shown once, when the token is created. ``queues`` limits a worker token to those queues
    (null: any); a revoked or expired token authenticates nothing."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    scope: Mapped[str] = mapped_column(String(16))
    queues: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the token, to recognise it in a listing.
    hint: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StreamTicket(Base):
    """A short-lived ticket to open one study's event stream (``?ticket=`` in its URL: a
    browser's EventSource can send no header). Only its SHA-256 is stored. It is valid until
    ``expires_at`` and only while the token it was issued to is valid (``token_id`` null: issued
    by a server running without authentication, worth nothing to one that has it)."""

    __tablename__ = "stream_tickets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("api_tokens.id", ondelete="CASCADE"), nullable=True
    )
    study_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Notification(Base):
    """An event of a study to post to its webhook: written in the transaction where it
    happened, posted after it by the dispatcher's delivery pass (an outbox). A row is due
    while ``delivered_at`` is null and ``next_attempt_at`` has passed; a delivered one, or
    one given up after its last attempt, has no ``next_attempt_at``."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_notifications_due", "delivered_at", "next_attempt_at"),
        Index("ix_notifications_study_id", "study_id", "id"),
    )
