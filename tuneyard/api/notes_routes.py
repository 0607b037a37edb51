"""The user's notes and tags on studies and trials (write scope), and the dashboard's
timeline of the workers' attempts (read scope)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from tuneyard.api.auth import READ, WRITE
from tuneyard.api.dashboard_routes import DashboardDep
from tuneyard.api.deps import Id, KitDep
from tuneyard.api.routes import E404, E422
from tuneyard.api.schemas import GpuInfo
from tuneyard.service.dashboard.notes import MAX_NOTE_CHARS, MAX_TAGS, TAG_RULE, Notes
from tuneyard.states import AttemptState, TrialState

notes_router = APIRouter(prefix="/api/v1", tags=["notes"], dependencies=[WRITE])
timeline_router = APIRouter(prefix="/api/v1/dashboard", tags=["dashboard"], dependencies=[READ])


class NotesIn(BaseModel):
    """What to change: a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(
        default=None,
        description=f"free text, at most {MAX_NOTE_CHARS} characters; null or blank clears it",
    )
    # Checked by the service (each tag, their count), so that a 422 says which tag and why.
    tags: list[Any] | None = Field(
        default=None,
        description=f"replaces the tags: at most {MAX_TAGS}, each {TAG_RULE}; [] clears them",
    )


class NotesOut(BaseModel):
    note: str | None
    tags: list[str]


@notes_router.patch(
    "/studies/{study_id}/notes", response_model=NotesOut, responses={**E404, **E422}
)
def study_notes(study_id: Id, body: NotesIn, kit: KitDep) -> NotesOut:
    """Set a study's note and tags (each only when given)."""
    note, tags = Notes(kit).set_study(
        study_id, body.note, body.tags, set_note="note" in body.model_fields_set
    )
    return NotesOut(note=note, tags=tags)


@notes_router.patch("/trials/{trial_id}/notes", response_model=NotesOut, responses={**E404, **E422})
def trial_notes(trial_id: Id, body: NotesIn, kit: KitDep) -> NotesOut:
    """Set a trial's note and tags (each only when given)."""
    note, tags = Notes(kit).set_trial(
        trial_id, body.note, body.tags, set_note="note" in body.model_fields_set
    )
    return NotesOut(note=note, tags=tags)


class TimelineAttempt(BaseModel):
    trial_id: int
    study_id: int
    trial_number: int
    trial_state: TrialState
    attempt: int
    worker: str | None
    state: AttemptState = Field(description="running, or how the attempt ended")
    started_at: datetime
    ended_at: datetime | None
    resource_from: float
    resource_to: float


class TimelineWorker(BaseModel):
    name: str
    host: str | None = Field(description="None for a worker no longer registered")
    gpus: list[GpuInfo]


class TimelineOut(BaseModel):
    since: datetime
    until: datetime
    now: datetime
    study_id: int | None
    items: list[TimelineAttempt] = Field(description="by start, then id")
    workers: list[TimelineWorker] = Field(description="the workers of this page's attempts")
    next_cursor: str | None


@timeline_router.get("/timeline", response_model=TimelineOut, responses={**E404, **E422})
def timeline(
    dash: DashboardDep,
    since: Annotated[
        datetime | None,
        Query(
            description="start of the window (default: 6 hours before its end; a study's creation)"
        ),
    ] = None,
    until: Annotated[
        datetime | None,
        Query(description="end of the window (default: now; a finished study's end)"),
    ] = None,
    study_id: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="only this study's attempts")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> TimelineOut:
    """The attempts that overlap a window of at most 31 days (all workers, or one study's),
    by start, in pages: pass ``next_cursor`` back as ``cursor`` with the same window."""
    return TimelineOut.model_validate(dash.timeline(since, until, study_id, limit, cursor))
