"""The JSON the dashboard reads, under ``/api/v1/dashboard`` (see docs/dashboard.md).

Thin routes over :class:`tuneyard.service.dashboard.DashboardService`; every answer comes
from bounded, indexed queries whatever the size of the study.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tuneyard.api.auth import READ, STREAM, CallerDep
from tuneyard.api.deps import Id, KitDep
from tuneyard.api.routes import E404, E422, _trial_out
from tuneyard.api.schemas import (
    BudgetLine,
    GpuInfo,
    ParetoObjective,
    ParetoSummary,
    RungBest,
    StudyError,
    TrialOut,
)
from tuneyard.errors import NotFound
from tuneyard.service.dashboard import Card, DashboardService, Version, space_items
from tuneyard.service.pareto import Objectives, ParetoService
from tuneyard.service.studies import study_error
from tuneyard.service.tokens import StreamTickets
from tuneyard.spec import StudySpec
from tuneyard.states import AttemptState, LogKind, StudyState, TrialState, WorkerState

# Read scope, by the Authorization header.
router = APIRouter(prefix="/api/v1/dashboard", tags=["dashboard"], dependencies=[READ])
# The event stream, which a browser opens without headers: read scope by a stream ticket too.
stream_router = APIRouter(prefix="/api/v1/dashboard", tags=["dashboard"])

# The event stream checks the study's version this often, and sends a comment at least this
# often so that proxies keep an idle stream open.
POLL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0


def _dashboard(kit: KitDep) -> DashboardService:
    return DashboardService(kit)


DashboardDep = Annotated[DashboardService, Depends(_dashboard)]


# -- response bodies -------------------------------------------------------------------------
class Budget(BaseModel):
    """The study's budgets: trials, GPU-hours and wall time, each used of its limit (a null
    limit: none set), and the one closest to being spent as ``used`` of ``total``."""

    used: float = Field(description="used of the budget closest to being spent, in ``unit``")
    total: float | None = Field(description="that budget's limit, in ``unit``")
    unit: str = Field(description='"trials", "GPU-hours" or "seconds" (of wall time)')
    resource: float = Field(description="resource trained so far, summed over the trials")
    trials: BudgetLine = Field(description="trials started, of the ones the study may start")
    gpu_hours: BudgetLine = Field(description="GPU-hours of its ended attempts, of the limit")
    wall_seconds: BudgetLine = Field(description="seconds since it was created, of the limit")
    worker_hours: float = Field(description="wall time of its ended attempts, CPU or GPU")
    spent: str | None = Field(description="why no new trial starts, once a budget is spent")


class BudgetPoint(BaseModel):
    gpu_hours: float = Field(description="GPU-hours used when the best improved")
    worker_hours: float
    value: float = Field(description="the best completed trial's value from then on")
    trial_id: int
    number: int


class BudgetCurve(BaseModel):
    direction: str
    points: list[BudgetPoint] = Field(description="each improvement of the best, in order")
    gpu_hours: float = Field(description="GPU-hours used so far")
    worker_hours: float


class BestTrial(BaseModel):
    trial_id: int
    number: int
    value: float


class StudyCard(BaseModel):
    id: int
    name: str
    state: StudyState
    direction: str
    metric: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    age_s: float = Field(description="seconds since the study was created")
    counts: dict[str, int] = Field(description="number of trials per state")
    trials_started: int
    max_trials: int
    budget: Budget
    best: BestTrial | None = Field(description="the best completed trial")
    version: str = Field(description="changes whenever the study or one of its trials does")
    tags: list[str] = Field(description="the study's tags, in the order they were set")
    reason: str | None = Field(default=None, description="why the study is in its state")
    error: StudyError | None = Field(
        default=None,
        description="set while the study is failing, or when it ended failed or exhausted",
    )
    queue_warning: str | None = Field(
        default=None,
        description="set while the study waits and no live worker can run its trials (none "
        "serves its queue, or none has the GPUs per slot its trials need)",
    )


class StudyCardPage(BaseModel):
    items: list[StudyCard]
    next_cursor: str | None


class SpaceParam(BaseModel):
    name: str
    type: str
    low: float | None
    high: float | None
    log: bool
    step: float | None
    choices: list[Any] | None
    when: dict[str, Any] | None = Field(description="the parameter is active only when these hold")


class StudySummary(StudyCard):
    space: list[SpaceParam]
    rungs: list[float] = Field(description="resource level of each rung")
    note: str | None = Field(description="the study's note (PATCH .../notes sets it)")
    best_by_rung: list[RungBest] = Field(
        default_factory=list, description="the best value seen at each rung reached so far"
    )
    objectives: list[ParetoObjective] = Field(
        default_factory=list, description="the study's objectives, one or several"
    )
    pareto: bool = Field(
        default=False,
        description="several objectives or constraints: the study has a Pareto view",
    )
    warm_start: list[int] | None = Field(
        default=None,
        description="the studies whose observations it starts from (GET "
        "/api/v1/studies/{id}/priors lists them); null: none",
    )


class ParetoPoint(BaseModel):
    trial_id: int
    number: int
    values: list[float] = Field(description="per objective, in the objectives' order and units")
    feasible: bool | None = Field(description="null when the study has no constraints")
    infeasible: str | None = Field(description="which constraints failed")
    front: bool = Field(description="on the Pareto front (feasible and non-dominated)")


class ParetoPlot(ParetoSummary):
    """The completed trials against the front: every front trial and a spread of the rest."""

    points: list[ParetoPoint]
    total: int = Field(description="completed trials with objective values")


class HistoryPoint(BaseModel):
    number: int
    value: float
    state: TrialState


class BestPoint(BaseModel):
    number: int
    value: float


class History(BaseModel):
    direction: str
    total: int = Field(description="finished trials with a value")
    downsampled: bool
    bucket_width: int = Field(
        description="trial numbers n with the same n // bucket_width share a bucket (1: none)"
    )
    points: list[HistoryPoint]
    best: list[BestPoint] = Field(description="best so far, at the points where it improves")


class Mark(BaseModel):
    step: float | None
    kind: LogKind
    reason: str


class Curve(BaseModel):
    id: int
    number: int
    state: TrialState
    value: float | None
    steps: list[float]
    values: list[float | None]
    marks: list[Mark] = Field(description="the trial's decisions (all but start) at their step")


class Curves(BaseModel):
    rungs: list[float]
    total: int = Field(description="trials started")
    shown: int
    trials: list[Curve]


class ParamsTrial(BaseModel):
    id: int
    number: int
    state: TrialState
    value: float | None
    params: dict[str, Any]


class ParamsSample(BaseModel):
    space: list[SpaceParam]
    total: int = Field(description="trials started")
    shown: int
    trials: list[ParamsTrial]


class ParamImportance(BaseModel):
    name: str
    importance: float = Field(description="share of the importance of all parameters (sum 1)")
    variance_explained: float = Field(
        description="share of the ranked values' variance this parameter explains on its own"
    )


class Importance(BaseModel):
    method: str
    params: list[ParamImportance] = Field(description="most important first")
    trials_used: int
    resource: float | None = Field(description="the resource at which the values were read")
    rung: int | None = Field(
        description="the rung whose values were used (None: the completed trials' final values)"
    )
    rung_trials: int = Field(
        description="trials a rung needs for its values to be used (the highest such rung is)"
    )
    basis: str = Field(description="why these values: which rung, and how many trials reached it")
    computed_at: datetime


class AttemptDetail(BaseModel):
    number: int
    worker: str | None
    host: str | None
    gpus: list[GpuInfo]
    state: AttemptState
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None = Field(description="so far, for an attempt still running")
    resource_from: float
    resource_to: float
    error: str | None


class TrialResources(BaseModel):
    wall_time_s: float = Field(description="the attempts' durations, summed")
    resource_trained: float | None = Field(description="the step of the latest value")
    gpus: list[GpuInfo] = Field(description="the GPUs of the workers that ran it")
    peak_memory_mib: float | None = Field(
        description="the largest peak_memory_mib (or gpu_peak_memory_mib, max_memory_mib) "
        "metric reported, if the objective reports one"
    )


class DashboardTrial(TrialOut):
    # The list of attempts in place of the public trial's count of them (its length).
    attempts: list[AttemptDetail]  # type: ignore[assignment]
    resources: TrialResources
    note: str | None = Field(description="the trial's note (PATCH .../notes sets it)")
    tags: list[str]


class WorkerCard(BaseModel):
    id: int
    name: str
    host: str
    pid: int | None
    queue: str | None
    slots: int
    state: WorkerState = Field(description="active, lost (silent for a lease) or stopped")
    online: bool
    gpus: list[GpuInfo]
    trial_id: int | None
    trial_number: int | None
    study_id: int | None
    started_at: datetime
    last_seen_at: datetime
    stopped_at: datetime | None
    busy_fraction: float | None = Field(
        description="share of the last hour (of its life, if shorter) spent running trials; "
        "null for a worker offline for the whole hour"
    )


class WorkerList(BaseModel):
    items: list[WorkerCard]


class VersionOut(BaseModel):
    version: str
    state: StudyState


class StreamTicketOut(BaseModel):
    ticket: str = Field(description="pass it as the events URL's ticket parameter")
    study_id: int
    expires_at: datetime = Field(
        description="open the stream before this (a minute); the stream then stays open"
    )
    events_url: str = Field(description="the study's event stream, ticket included")


def _json(body: bytes) -> Response:
    """A body the service rendered (and cached) as JSON; its shape is the route's
    response_model, which the tests check it against."""
    return Response(body, media_type="application/json")


def _card(c: Card) -> dict[str, Any]:
    st = c.study
    return {
        "id": st.id,
        "name": st.name,
        "state": st.state,
        "direction": st.direction,
        "metric": st.metric,
        "created_at": st.created_at,
        "updated_at": st.updated_at,
        "finished_at": st.finished_at,
        "age_s": c.age_s,
        "counts": c.counts,
        "trials_started": st.trials_started,
        "max_trials": int(st.spec["limits"]["max_trials"]),
        "budget": _budget(c),
        "best": c.best,
        "version": c.version,
        "tags": c.tags,
        "reason": st.reason,
        "error": study_error(st),
        "queue_warning": c.queue_warning,
    }


def _budget(c: Card) -> dict[str, Any]:
    unit, line = c.usage.binding()
    return {
        "used": line.used,
        "total": line.limit,
        "unit": unit,
        "resource": c.budget_used,
        **c.usage.as_dict(),
    }


# -- routes ----------------------------------------------------------------------------------
@router.get("/studies", response_model=StudyCardPage, responses=E422)
def studies(
    dash: DashboardDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    tag: Annotated[
        list[str] | None,
        Query(max_length=20, description="only the studies that carry this tag (repeat: all)"),
    ] = None,
) -> StudyCardPage:
    """Study cards, newest first, in pages: pass ``next_cursor`` back as ``cursor``."""
    cards, nxt = dash.studies(limit, cursor, tag or ())
    return StudyCardPage.model_validate({"items": [_card(c) for c in cards], "next_cursor": nxt})


@router.get("/studies/{study_id}", response_model=StudySummary, responses=E404)
def study(study_id: Id, dash: DashboardDep) -> StudySummary:
    """A study's card with its search space and rungs."""
    card, rungs, bests = dash.study(study_id)
    spec = StudySpec.from_stored(card.study.spec)
    space = space_items(spec)
    by_rung = [RungBest.model_validate(b, from_attributes=True) for b in bests]
    return StudySummary.model_validate(
        {
            **_card(card),
            "space": space,
            "rungs": rungs,
            "note": card.study.note,
            "best_by_rung": by_rung,
            "objectives": Objectives.of(spec).as_list(),
            "pareto": spec.ranked_by_fronts,
            "warm_start": spec.warm_start.studies if spec.warm_start else None,
        }
    )


@router.get("/studies/{study_id}/pareto", response_model=ParetoPlot, responses={**E404, **E422})
def pareto(
    study_id: Id,
    kit: KitDep,
    points: Annotated[
        int, Query(ge=10, le=20_000, description="most trials to return (the front is whole)")
    ] = 2000,
) -> ParetoPlot:
    """The completed trials' objective values, each marked on the front, dominated or
    infeasible, with the front's size and hypervolume."""
    summary, shown, total = ParetoService(kit).plot(study_id, points)
    return ParetoPlot.model_validate(
        {
            **summary.as_dict(),
            "points": [ParetoPoint.model_validate(p, from_attributes=True) for p in shown],
            "total": total,
        }
    )


@router.get("/studies/{study_id}/history", response_model=History, responses={**E404, **E422})
def history(
    study_id: Id,
    dash: DashboardDep,
    points: Annotated[
        int, Query(ge=10, le=20_000, description="most points to return (downsampled beyond)")
    ] = 2000,
) -> Response:
    """The optimization history: finished trials' values by trial number (downsampled per
    bucket of numbers to its best and worst) and the best-so-far line."""
    return _json(dash.view("history", study_id, points))


@router.get("/studies/{study_id}/curves", response_model=Curves, responses={**E404, **E422})
def curves(
    study_id: Id,
    dash: DashboardDep,
    trials: Annotated[int, Query(ge=1, le=1000, description="most trials to return")] = 200,
) -> Response:
    """Learning curves: the best trials, the running and paused ones, and an even spread of
    the rest, with their decisions as marks."""
    return _json(dash.view("curves", study_id, trials))


@router.get("/studies/{study_id}/params", response_model=ParamsSample, responses={**E404, **E422})
def params(
    study_id: Id,
    dash: DashboardDep,
    trials: Annotated[int, Query(ge=1, le=10_000, description="most trials to return")] = 2000,
) -> Response:
    """Configurations and values of the best trials and an even spread of the rest."""
    return _json(dash.view("params", study_id, trials))


@router.get("/studies/{study_id}/budget", response_model=BudgetCurve, responses=E404)
def budget(study_id: Id, dash: DashboardDep) -> Response:
    """The best value against the GPU-hours (and worker-hours) used: a point at each
    improvement of the best completed trial, in the order the attempts ended."""
    return _json(dash.budget_curve(study_id))


@router.get("/studies/{study_id}/importance", response_model=Importance, responses=E404)
def importance(study_id: Id, dash: DashboardDep) -> Importance:
    """Importance of each parameter for the value, computed on at most 2,000 trials at one
    resource level and cached until the study has grown enough to change it."""
    return Importance.model_validate(dash.importance(study_id))


@router.get("/studies/{study_id}/version", response_model=VersionOut, responses=E404)
def version(study_id: Id, dash: DashboardDep) -> VersionOut:
    """The study's version: it changes whenever the study or one of its trials does."""
    v = dash.version(study_id)
    return VersionOut(version=v.token, state=StudyState(v.state))


@router.post(
    "/studies/{study_id}/stream-ticket",
    status_code=201,
    response_model=StreamTicketOut,
    responses=E404,
)
def stream_ticket(study_id: Id, dash: DashboardDep, kit: KitDep, who: CallerDep) -> StreamTicketOut:
    """A ticket that opens this study's event stream for a minute, for a client that can't
    send the Authorization header (a browser's EventSource): the URL carries the ticket,
    never the token. Get a new one for each connection."""
    dash.version(study_id)  # a 404 for a study that does not exist
    new = StreamTickets(kit).issue(who, study_id)
    url = f"{router.prefix}/studies/{study_id}/events?ticket={new.secret}"
    return StreamTicketOut(
        ticket=new.secret, study_id=study_id, expires_at=new.expires_at, events_url=url
    )


@stream_router.get(
    "/studies/{study_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": 'a `change` event, data `{"version", "counts", "state"}`, whenever '
            "the study changes (checked every second); a comment every 15 s otherwise",
        },
        **E404,
    },
    dependencies=[STREAM],
)
async def events(study_id: Id, request: Request, dash: DashboardDep) -> StreamingResponse:
    """Server-sent events: ``change`` when the study changes. The first event comes at once
    (unless ``Last-Event-ID`` names the current version); the stream ends when the client
    goes or the study is deleted. Read scope: a token in the Authorization header, or a
    ``ticket`` for this study from ``POST .../stream-ticket``."""
    first = await run_in_threadpool(dash.counts, study_id)  # a 404 before the stream starts
    return StreamingResponse(
        _event_stream(dash, study_id, request, first, request.headers.get("last-event-id")),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _change(version: Version, counts: dict[str, int]) -> str:
    data = json.dumps({"version": version.token, "counts": counts, "state": version.state})
    return f"id: {version.token}\nevent: change\ndata: {data}\n\n"


async def _event_stream(
    dash: DashboardService,
    study_id: int,
    request: Request,
    first: tuple[Version, dict[str, int]],
    last: str | None,
) -> AsyncIterator[str]:
    yield "retry: 3000\n\n"
    if first[0].token != last:
        last = first[0].token
        yield _change(*first)
    quiet_until = time.monotonic() + KEEPALIVE_SECONDS
    while True:
        await anyio.sleep(POLL_SECONDS)
        if await request.is_disconnected():
            return
        try:
            current = await run_in_threadpool(dash.version, study_id)
            if current.token != last:
                version, counts = await run_in_threadpool(dash.counts, study_id)
                last = version.token
                yield _change(version, counts)
                quiet_until = time.monotonic() + KEEPALIVE_SECONDS
        except NotFound:
            yield f"event: deleted\ndata: {json.dumps({'study_id': study_id})}\n\n"
            return
        if time.monotonic() >= quiet_until:
            yield ": keep-alive\n\n"
            quiet_until = time.monotonic() + KEEPALIVE_SECONDS


@router.get("/trials/{trial_id}", response_model=DashboardTrial, responses=E404)
def trial(trial_id: Id, dash: DashboardDep) -> DashboardTrial:
    """A trial as ``GET /api/v1/trials/{id}`` gives it, but with each attempt (its worker's
    host and GPUs, its duration) in place of their count, and the resources the trial used."""
    detail, attempts, resources = dash.trial(trial_id)
    base = _trial_out(detail).model_dump()
    t = detail.trial
    return DashboardTrial.model_validate(
        {
            **base,
            "attempts": attempts,
            "resources": resources,
            "note": t.note,
            "tags": list(t.tags or []),
        }
    )


@router.get("/workers", response_model=WorkerList, responses=E422)
def workers(dash: DashboardDep, limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> WorkerList:
    """Every registered worker, online or not, with the trial it runs and its busy fraction."""
    return WorkerList.model_validate({"items": dash.workers(limit)})
