"""The wire protocol: request and response bodies of the HTTP API (``/api/v1``).

This is the contract shared by the server, the typed client, the CLI and the workers. It lives
outside ``tuneyard.api`` so that the worker and the client, which talk to the API only over
HTTP, need nothing of the server's code: it imports pydantic and the study definition only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneyard.spec import StudySpec
from tuneyard.states import (
    DecisionKind,
    JobKind,
    SettableStudyState,
    StudyState,
    TrialState,
    WorkerState,
)

# Integer columns: ids are 64 bits, counters 32.
MAX_ID = 2**63 - 1
MAX_INT32 = 2**31 - 1
# Metrics per report and the length of a metric's name.
MAX_METRICS = 256
MetricName = Annotated[str, Field(max_length=200)]

# The queue's side of the contract, between the dispatcher and the RQ workers: the dispatcher
# enqueues the slot job by its dotted name, so it imports nothing of the worker, and both keep
# the ids of a study's jobs still waiting in its queue in a Redis set under PENDING_KEY.
SLOT_JOB = "tuneyard.worker.jobs.run_slot"
PENDING_KEY = "tuneyard:pending:{study_id}"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Every call of a worker about its trial names the attempt that ``next`` handed it: a call of
# an attempt that is no longer the trial's live one is refused (409, "Stale attempt").
AttemptNo = Annotated[
    int,
    Field(ge=1, le=MAX_INT32, description="the attempt this call belongs to, as `next` gave it"),
]


class _AttemptIn(_In):
    attempt: AttemptNo


class TrialSummary(BaseModel):
    id: int
    study_id: int
    number: int
    state: TrialState
    params: dict[str, Any]
    value: float | None = Field(description="latest value of the study's metric")
    resource: float | None = Field(description="resource (step) of that value")
    bracket: int
    rung: int = Field(description="highest rung reached, -1 before the first")
    attempts: int
    reason: str | None = Field(description="why the trial is in its current state")
    created_at: datetime
    updated_at: datetime
    values: dict[str, float] | None = Field(
        default=None,
        description="several objectives or constraints: each objective's latest value by "
        "metric, in its own units (null for a single unconstrained objective: see value)",
    )
    feasible: bool | None = Field(
        default=None,
        description="whether the latest report kept every constraint (null without "
        "constraints, or before the trial reported)",
    )
    infeasible: str | None = Field(
        default=None, description="which constraints failed, e.g. 'gpu_mem_gb 18.2 > 16'"
    )
    value_std: float | None = Field(
        default=None,
        description="a study with evaluation: the standard deviation of the replicates' "
        "values behind value (null otherwise)",
    )
    value_stderr: float | None = Field(
        default=None,
        description="a study with evaluation: the standard error of value, the band it is "
        "shown with (null otherwise)",
    )
    replicates_run: int | None = Field(
        default=None,
        description="a study with evaluation: how many replicates are in the trial's latest "
        "aggregate, at the furthest resource level any of them reached (all of them once "
        "the trial completed, fewer while they run or when racing stopped it; null otherwise)",
    )
    replicates_total: int | None = Field(
        default=None,
        description="a study with evaluation: how many replicates each trial has (folds x "
        "seeds; null otherwise)",
    )
    raced: bool = Field(
        default=False,
        description="stopped by racing: shown worse than the incumbent on the replicates "
        "both ran, after replicates_run of replicates_total",
    )
    parent_id: int | None = Field(
        default=None, description="a replicate: the trial whose configuration it evaluates"
    )
    replicate: int | None = Field(
        default=None, description="a replicate: its index among its trial's, from 0"
    )

    @field_validator("values", mode="before")
    @classmethod
    def _named_only(cls, v: Any) -> Any:
        # A trial row holds its values as a list in the objectives' order: read from the
        # row alone they have no names, so they are left out; the API names them.
        return None if isinstance(v, list) else v


class StudyError(BaseModel):
    """The error a failing study stopped on, or the last one its trials failed with."""

    summary: str = Field(description="the error's summary: a traceback's exception line")
    type: str | None = Field(description="the exception's class, when the error was a traceback")
    trial_id: int | None = Field(description="the trial that failed with it last")
    count: int = Field(description="trials in a row that failed with this same error")


class RungBest(BaseModel):
    rung: int
    resource: float
    entries: int = Field(description="trials that reached the rung")
    value: float = Field(description="the best value of the study's metric seen at the rung")
    trial_id: int
    number: int


class BudgetLine(BaseModel):
    used: float
    limit: float | None = Field(description="the study's limit, null when it sets none")


class StudyUsage(BaseModel):
    """What a study has used of its budgets. GPU-hours are its ended attempts' wall time
    times their GPUs (a CPU-only attempt counts none); worker-hours their wall time."""

    trials: BudgetLine = Field(description="trials started, of the ones it may start")
    gpu_hours: BudgetLine = Field(description="GPU-hours used, of limits.max_gpu_hours")
    wall_seconds: BudgetLine = Field(
        description="seconds since the study was created (to its end), of limits.max_wall_time"
    )
    worker_hours: float = Field(description="wall time of its ended attempts, CPU or GPU")
    spent: str | None = Field(
        default=None, description="why no new trial may start, once a budget is spent"
    )


class ParetoObjective(BaseModel):
    metric: str
    direction: Literal["minimize", "maximize"]


class ParetoSummary(BaseModel):
    """A study's Pareto front in brief: its size and the hypervolume it dominates."""

    objectives: list[ParetoObjective]
    size: int = Field(description="trials on the front (feasible and non-dominated)")
    hypervolume: float | None = Field(
        description="the volume the front dominates up to the reference point, measured on "
        "minimised objectives (maximised ones negated); null before any trial completed"
    )
    reference_point: list[float] | None = Field(
        description="per objective, in its own units: the definition's reference_point, or "
        "one derived from every completed trial (then reference_derived is true)"
    )
    reference_derived: bool = Field(
        description="the reference point was derived from the trials: it moves as they "
        "complete, so hypervolumes read at different times do not compare"
    )


class StudyOut(BaseModel):
    id: int
    name: str
    state: StudyState
    reason: str | None = Field(
        default=None, description="why the study is in its state (failing, ended, resumed)"
    )
    spec: StudySpec
    created_at: datetime
    updated_at: datetime
    trials_started: int
    counts: dict[str, int] = Field(description="number of trials per state")
    best: TrialSummary | None = Field(description="the best completed trial")
    error: StudyError | None = Field(
        default=None,
        description="set while the study is failing, or when it ended failed or exhausted",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what in the definition keeps the study from working as intended, "
        "e.g. a max_trials too small to fill the rungs",
    )
    best_by_rung: list[RungBest] | None = Field(
        default=None,
        description="the best value seen at each rung (one study's GET only; null in lists)",
    )
    usage: StudyUsage | None = None
    queue_warning: str | None = Field(
        default=None,
        description="set while the study waits for workers and no live worker can run its "
        "trials: none serves its queue (e.g. \"no live worker serves queue 'gpu'\"), or none "
        "has a slot with the GPUs its trials need (execution.gpus)",
    )
    pareto: ParetoSummary | None = Field(
        default=None,
        description="several objectives or constraints: the front's size and hypervolume "
        "(one study's GET only; null in lists and for a single unconstrained objective)",
    )
    webhook_secret: str | None = Field(
        default=None,
        description="the secret the study's webhook posts are signed with (HMAC-SHA256 in "
        "X-Tuneyard-Signature): in the answer to the study's creation only, never again",
    )
    webhook_signed: bool = Field(
        default=False, description="whether the study has a webhook secret (notifications)"
    )


class StudyPage(BaseModel):
    items: list[StudyOut]
    next_cursor: str | None


class StudyPatch(_In):
    state: SettableStudyState


class ReportIn(_AttemptIn):
    step: float = Field(ge=0, description="resource consumed so far, e.g. epochs trained")
    value: float | None = Field(
        default=None, description="value of the study's metric; may be given in metrics instead"
    )
    metrics: dict[MetricName, float | None] = Field(
        default_factory=dict, max_length=MAX_METRICS, description="other metrics by name"
    )


class ReportOut(BaseModel):
    attempt: int = Field(default=1, description="the attempt whose report this is")
    step: float
    value: float | None
    metrics: dict[str, Any]
    decision: DecisionKind
    reason: str
    resource_to: float | None = Field(
        description="end of the trial's current job; moves up when a trial is promoted on the spot"
    )
    created_at: datetime


class DecisionOut(BaseModel):
    kind: str
    reason: str
    rung: int | None
    resource: float | None
    created_at: datetime


class GpuInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: str = Field(max_length=64)
    name: str | None = Field(default=None, max_length=200)
    memory_mib: int | None = Field(default=None, ge=0)
    uuid: str | None = Field(default=None, max_length=100)


class AttemptOut(BaseModel):
    number: int
    resource_from: float
    resource_to: float
    state: str
    worker: str | None
    gpus: list[GpuInfo] = Field(default_factory=list, description="none: a CPU slot")
    error: str | None
    started_at: datetime
    ended_at: datetime | None
    wall_seconds: float | None = Field(default=None, description="set when the attempt ends")


class ReplicatePoint(BaseModel):
    step: float
    value: float | None


class ReplicateOut(BaseModel):
    """One replicate of a trial (a fold and/or seed): a job of its own, with its curve."""

    id: int
    index: int = Field(description="its position among the trial's replicates, from 0")
    label: str = Field(description="how it is named, e.g. 'fold 3/5' (numbered from 1)")
    fold: int | None = Field(description="the fold the objective saw (0-based), null: no folds")
    seed: int | None = Field(description="the seed the objective saw, null: no seeds")
    state: TrialState
    value: float | None = Field(description="its latest value of the study's metric")
    resource: float | None = Field(description="resource (step) of that value")
    reason: str | None
    attempts: int
    worker: str | None
    curve: list[ReplicatePoint] = Field(description="its reports by step")


class LevelOut(BaseModel):
    """A trial's aggregate at one resource level of the ladder, and each replicate's value
    there: a row of the per-fold table."""

    resource: float
    value: float = Field(description="the aggregate (mean or median) of the values there")
    std: float
    stderr: float
    n: int = Field(description="replicates that reached the level")
    complete: bool = Field(description="every replicate reached it: the trial's report there")
    values: list[float | None] = Field(
        description="each replicate's value there, by index (null: it has not reached it)"
    )


class TrialOut(TrialSummary):
    resource_from: float
    resource_to: float
    checkpoint: str | None
    error: str | None
    worker: str | None = Field(
        default=None, description="the worker running (or that last ran) the trial"
    )
    pending: str | None = Field(
        default=None, description="``pause`` while a pause decision awaits the worker's checkpoint"
    )
    log_tail: str | None = Field(
        default=None,
        description="the last few kilobytes of the objective's output; the whole is at /log",
    )
    reports: list[ReportOut]
    decisions: list[DecisionOut]
    attempt_log: list[AttemptOut]
    fold: int | None = Field(
        default=None, description="a replicate: the fold it evaluates (0-based), null: none"
    )
    seed: int | None = Field(default=None, description="a replicate: its seed, null: none")
    replicates: list[ReplicateOut] | None = Field(
        default=None,
        description="a trial of a study with evaluation: its replicates, by index, each "
        "with its curve (those not started yet are left out)",
    )
    levels: list[LevelOut] | None = Field(
        default=None,
        description="a trial of a study with evaluation: its aggregate at each resource "
        "level reached, with each replicate's value there",
    )


class ParetoTrial(TrialSummary):
    values: dict[str, float] = Field(
        description="each objective's value by metric, in its own units (at the rung, for a "
        "rung's front)"
    )
    feasible: bool | None = Field(description="null when the study has no constraints")


class ParetoOut(ParetoSummary):
    """The feasible non-dominated trials of a study, or of one of its rungs."""

    resource: float | None = Field(
        description="the rung's resource when the front is a rung's; null: completed trials"
    )
    trials: list[ParetoTrial] = Field(description="the front, by trial number")


class HypervolumePoint(BaseModel):
    completed: int = Field(description="completed trials so far, this one included")
    at: datetime = Field(description="when this trial completed")
    trial_id: int
    number: int
    hypervolume: float


class ParetoHistory(BaseModel):
    """The hypervolume as trials completed, against the study's current reference point:
    a point per completion that changed it (the others leave it as it was)."""

    objectives: list[ParetoObjective]
    reference_point: list[float] | None
    reference_derived: bool
    completed: int = Field(description="completed trials in all")
    points: list[HypervolumePoint]


class TrialPage(BaseModel):
    items: list[TrialSummary]
    next_cursor: str | None


class NextIn(_In):
    worker: str | None = Field(default=None, max_length=200)
    gpus: list[GpuInfo] = Field(
        default_factory=list,
        max_length=64,
        description="the GPUs the worker runs the job on (none: a CPU slot), recorded on the "
        "attempt; a study's GPU-hours are its attempts' wall time times their GPUs",
    )


class ReplicateInfo(BaseModel):
    """Which replicate of its trial a job evaluates, in a study with ``evaluation``: the
    objective trains the trial's configuration on this fold and/or with this seed."""

    index: int = Field(description="the replicate's position, 0 .. of - 1")
    of: int = Field(description="how many replicates each trial has (folds x seeds)")
    fold: int | None = Field(
        default=None, description="the fold, 0 .. folds - 1; None without folds"
    )
    folds: int | None = Field(default=None, description="the number of folds; None without folds")
    seed: int | None = Field(
        default=None, description="the seed, 0 .. seeds - 1; None without seeds"
    )
    parent_id: int = Field(description="the trial (configuration) this replicate evaluates")


class Assignment(BaseModel):
    """A piece of work: a new trial, or a paused trial promoted to a higher rung. In a study
    with ``evaluation``, one replicate (a fold, a seed) of a trial: ``trial_id`` is the
    replicate's own id, which its reports, heartbeats and checkpoints use."""

    trial_id: int
    number: int
    params: dict[str, Any]
    resource_from: float
    resource_to: float
    checkpoint: str | None
    kind: JobKind
    reason: str
    attempt: int = Field(default=1, description="this run's number among the trial's attempts")
    lease_seconds: float | None = Field(
        default=None,
        description="the trial is reaped when no report or heartbeat comes for this long",
    )
    replicate: ReplicateInfo | None = Field(
        default=None, description="the fold and/or seed this job evaluates (evaluation studies)"
    )


class CompleteIn(_AttemptIn):
    value: float | None = None
    metrics: dict[MetricName, float | None] = Field(default_factory=dict, max_length=MAX_METRICS)
    checkpoint: str | None = Field(default=None, max_length=2000)


class FailIn(_AttemptIn):
    error: str = Field(
        min_length=1,
        max_length=20_000,
        description="what went wrong: a message or a traceback (its summary is the reason)",
    )
    output: str | None = Field(
        default=None, max_length=20_000, description="the end of the objective's output"
    )

    @field_validator("error", "output")
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        # PostgreSQL's text can't hold NUL: stored as U+FFFD, as in a trial's log.
        return None if v is None else v.replace("\x00", "\ufffd")


class HeartbeatIn(_AttemptIn):
    pass


class PauseIn(_AttemptIn):
    checkpoint: str | None = Field(default=None, max_length=2000)


class ReleaseIn(_AttemptIn):
    reason: str = Field(min_length=1, max_length=2000)
    checkpoint: str | None = Field(default=None, max_length=2000)
    step: float | None = Field(
        default=None, ge=0, description="the step the checkpoint was saved at (with checkpoint)"
    )

    @field_validator("reason")
    @classmethod
    def _no_nul(cls, v: str) -> str:
        # PostgreSQL's text can't hold NUL: stored as U+FFFD, as in a trial's log.
        return v.replace("\x00", "\ufffd")


class LogChunkIn(_In):
    attempt: int = Field(ge=1, le=MAX_INT32, description="the attempt whose output this is")
    offset: int = Field(
        ge=0, le=MAX_ID, description="characters of that attempt's output sent before it"
    )
    text: str = Field(max_length=1_000_000)


class LogChunkOut(BaseModel):
    log_bytes: int


class CheckpointOut(BaseModel):
    location: str = Field(description="pass it to /pause, /complete or /release")


class CodeOut(BaseModel):
    code: str = Field(description="the value for the study's execution.code: sha256:<digest>")
    size: int = Field(description="the archive's size in bytes")
    created: bool = Field(description="false when the server already held this archive")


class CheckpointIn(_AttemptIn):
    """A running trial's latest checkpoint (``execution.checkpoint_every``): a retry resumes
    from it, at ``step``."""

    checkpoint: str = Field(min_length=1, max_length=2000)
    step: float = Field(ge=0, description="the reported step the checkpoint was saved at")


class WorkerIn(_In):
    name: str = Field(min_length=1, max_length=200, description="unique, e.g. host/gpu-0")
    host: str = Field(min_length=1, max_length=200)
    pid: int | None = Field(default=None, ge=0, le=MAX_INT32)
    queue: str | None = Field(default=None, max_length=64)
    slots: int = Field(default=1, ge=1, le=1024)
    gpus: list[GpuInfo] = Field(default_factory=list, max_length=64)


class WorkerBeatIn(_In):
    trial_id: int | None = Field(
        default=None, ge=-MAX_ID, le=MAX_ID, description="the trial it is running, if any"
    )


class WorkerOut(BaseModel):
    id: int
    name: str
    host: str
    pid: int | None
    queue: str | None
    slots: int
    gpus: list[GpuInfo]
    state: WorkerState
    trial_id: int | None
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None


TokenScope = Literal["admin", "write", "worker", "read"]
QueueName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")]


class TokenIn(_In):
    name: str = Field(min_length=1, max_length=200, description="what or who it is for")
    scope: TokenScope
    queues: list[QueueName] | None = Field(
        default=None,
        max_length=100,
        description="worker tokens only: the queues it may work on (default: any)",
    )
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class TokenOut(BaseModel):
    id: int
    name: str
    scope: TokenScope
    queues: list[str] | None
    hint: str = Field(description="the token's first characters")
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class NewTokenOut(TokenOut):
    token: str = Field(description="the secret: shown only in this answer")


class CallerOut(BaseModel):
    """Who a request's token is: what a worker or a dispatcher checks when it starts, and what
    the dashboard asks to offer only what the token may do."""

    name: str = Field(description="the token's name ('anonymous (auth off)' without auth)")
    scope: TokenScope
    grants: list[TokenScope] = Field(
        default_factory=list, description="every scope the token's scope includes"
    )
    queues: list[str] | None = Field(description="the queues a worker token serves (None: any)")
    auth: bool = Field(description="whether the server checks tokens at all")


# -- warm starts -----------------------------------------------------------------------------
class PriorOut(BaseModel):
    """An earlier study's observation that a warm-started study's sampler was given: a prior,
    not one of the study's trials."""

    study_id: int = Field(description="the source study")
    trial_number: int = Field(description="the trial's number in the source study")
    number: int = Field(description="its number for this study's sampler: -1, -2, ...")
    params: dict[str, Any] = Field(description="its configuration, mapped into this space")
    resource: float
    value: float = Field(description="its value, in the metric's units")


class PriorSourceOut(BaseModel):
    study_id: int
    name: str | None = Field(description="the source study's name (None: since deleted)")
    observations: int = Field(description="its observations this study's space accepts")
    trials: int = Field(description="the source trials they come from")


class PriorsOut(BaseModel):
    """The priors of a warm-started study (``warm_start`` in its definition). They are not
    counted in its trials, budget or results."""

    study_id: int
    read: bool = Field(
        description="whether its sampler has read them (at its first suggestion); before, "
        "what it would read now"
    )
    total: int = Field(description="observations, from every source")
    trials: int = Field(description="source trials they come from")
    sources: list[PriorSourceOut]
    priors: list[PriorOut] = Field(
        description="at most ``limit`` observations, the best first chosen, listed in the "
        "order the sampler got them"
    )


# -- population-based training -------------------------------------------------------------
class PopulationStepOut(BaseModel):
    """A pbt or pb2 member at an interval boundary: the value it reached there (the study's
    units), the parameters it trained with up to there, and what the step decided: ``keep``
    its checkpoint and parameters, or ``exploit``: clone the donor's checkpoint there and
    train on with ``new_params``."""

    resource: float
    value: float | None
    decision: Literal["keep", "exploit"]
    params: dict[str, Any]
    new_params: dict[str, Any]
    donor_trial_id: int | None = None
    donor_number: int | None = None
    donor_value: float | None = None
    reason: str
    created_at: datetime


class ScheduleStep(BaseModel):
    """From ``resource`` on, train with ``params``."""

    resource: float
    params: dict[str, Any]


class LineageOut(BaseModel):
    """A member's history: its steps at every boundary, and the replayable schedule that
    trains its model from scratch (its donors' parameters before its last clone, then its
    own)."""

    study_id: int
    trial_id: int
    number: int
    state: TrialState
    value: float | None
    resource: float | None
    steps: list[PopulationStepOut]
    schedule: list[ScheduleStep]


class ExploitMark(BaseModel):
    """Where a member cloned a donor: the dashboard's jump on its curve."""

    trial_id: int
    number: int
    resource: float
    donor_trial_id: int
    donor_number: int
    value: float | None
    donor_value: float | None


class PopulationOut(BaseModel):
    """A pbt or pb2 study's population: its exploits, and the best member's lineage with its
    schedule (None before any member reported)."""

    study_id: int
    interval: float
    max_resource: float
    members: int
    steps: int
    exploits: list[ExploitMark]
    best: LineageOut | None


# -- importing trials run elsewhere --------------------------------------------------------
MAX_IMPORT = 1_000


class ImportedTrialIn(_In):
    """A trial run elsewhere (an Optuna study's): its parameters, how it ended, its final value
    and its intermediate values as [step, value] pairs."""

    params: dict[str, Any]
    state: Literal["completed", "pruned"]
    value: float | None = None
    intermediate: list[tuple[float, float]] = Field(default_factory=list, max_length=100_000)
    source: str = Field(default="", max_length=200)


class ImportIn(_In):
    trials: list[ImportedTrialIn] = Field(min_length=1, max_length=MAX_IMPORT)


class ImportOut(BaseModel):
    imported: int
    numbers: list[int]
