"""Request and response bodies of the HTTP API (``/api/v1``).

These are the wire contract shared by the server, the typed client, the CLI and the workers.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneyard.spec import StudySpec

StudyState = Literal["running", "paused", "stopped", "completed"]
TrialState = Literal["queued", "running", "paused", "completed", "stopped", "failed"]
DecisionKind = Literal["continue", "pause", "stop", "complete"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class StudyOut(BaseModel):
    id: int
    name: str
    state: StudyState
    spec: StudySpec
    created_at: datetime
    updated_at: datetime
    trials_started: int
    counts: dict[str, int] = Field(description="number of trials per state")
    best: TrialSummary | None


class StudyPage(BaseModel):
    items: list[StudyOut]
    next_cursor: str | None


class StudyPatch(_In):
    state: Literal["running", "paused", "stopped"]


class ReportIn(_In):
    step: float = Field(ge=0, description="resource consumed so far, e.g. epochs trained")
    value: float | None = Field(
        default=None, description="value of the study's metric; may be given in metrics instead"
    )
    metrics: dict[str, float | None] = Field(default_factory=dict, max_length=256)


class ReportOut(BaseModel):
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


class AttemptOut(BaseModel):
    number: int
    resource_from: float
    resource_to: float
    state: str
    worker: str | None
    error: str | None
    started_at: datetime
    ended_at: datetime | None


class TrialOut(TrialSummary):
    resource_from: float
    resource_to: float
    checkpoint: str | None
    error: str | None
    reports: list[ReportOut]
    decisions: list[DecisionOut]
    attempt_log: list[AttemptOut]


class TrialPage(BaseModel):
    items: list[TrialSummary]
    next_cursor: str | None


class NextIn(_In):
    worker: str | None = Field(default=None, max_length=200)


class Assignment(BaseModel):
    """A piece of work: a new trial, or a paused trial promoted to a higher rung."""

    trial_id: int
    number: int
    params: dict[str, Any]
    resource_from: float
    resource_to: float
    checkpoint: str | None
    kind: Literal["new", "resume"]
    reason: str


class CompleteIn(_In):
    value: float | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict, max_length=256)
    checkpoint: str | None = Field(default=None, max_length=2000)


class FailIn(_In):
    error: str = Field(min_length=1, max_length=20_000)


class PauseIn(_In):
    checkpoint: str | None = Field(default=None, max_length=2000)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
