"""The HTTP API under ``/api/v1``: thin routes that validate, call one use case, answer."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Response, status
from fastapi.responses import StreamingResponse

from tuneyard.api.auth import READ, WORKER, WRITE
from tuneyard.api.deps import Id, KitDep, SettingsDep, StudiesDep, TrialsDep
from tuneyard.api.limits import StudyBody, limit_reports, parse_study
from tuneyard.api.schemas import (
    Assignment,
    AttemptOut,
    CompleteIn,
    DecisionOut,
    FailIn,
    HeartbeatIn,
    HypervolumePoint,
    LevelOut,
    NextIn,
    ParetoHistory,
    ParetoOut,
    ParetoSummary,
    ParetoTrial,
    PauseIn,
    Problem,
    ReplicateOut,
    ReplicatePoint,
    ReportIn,
    ReportOut,
    RungBest,
    StudyError,
    StudyOut,
    StudyPage,
    StudyPatch,
    StudyUsage,
    TrialOut,
    TrialPage,
    TrialSummary,
)
from tuneyard.service.pareto import Front, FrontSummary, Objectives, ParetoService
from tuneyard.service.replicate_results import RaceMark, ReplicateDetail, replicate_column
from tuneyard.service.studies import StudyView, TrialDetail, study_error
from tuneyard.spec import StudySpec
from tuneyard.states import StudyState, TrialState
from tuneyard.store.models import Trial

router = APIRouter(prefix="/api/v1")

Responses = dict[int | str, dict[str, Any]]

E404: Responses = {404: {"model": Problem, "description": "no such study or trial"}}
E409: Responses = {
    409: {"model": Problem, "description": "the request conflicts with the current state"}
}
E422: Responses = {
    422: {"model": Problem, "description": "invalid input; the detail names the field"}
}
E429: Responses = {
    429: {
        "model": Problem,
        "description": "the trial reports faster than the server's report_rate; see Retry-After",
    }
}


def _summary(t: Trial, spec: StudySpec | None = None, mark: RaceMark | None = None) -> TrialSummary:
    summary = TrialSummary.model_validate(t, from_attributes=True)
    fields = {**_objective_fields(t, spec), **_replicate_fields(spec, mark)}
    return summary.model_copy(update=fields) if fields else summary


def _replicate_fields(spec: StudySpec | None, mark: RaceMark | None) -> dict[str, Any]:
    """A trial of a study with evaluation: how many replicates it has, how many are in its
    latest aggregate and whether racing stopped it."""
    if spec is None or spec.evaluation is None:
        return {}
    fields: dict[str, Any] = {"replicates_total": spec.evaluation.replicates}
    if mark is not None:
        fields |= {"replicates_run": mark.replicates_run, "raced": mark.raced}
    return fields


def _study_out(v: StudyView) -> StudyOut:
    st = v.study
    return StudyOut(
        id=st.id,
        name=st.name,
        state=StudyState(st.state),
        spec=v.spec,  # as stored: checked when the study was created, not on each read
        created_at=st.created_at,
        updated_at=st.updated_at,
        trials_started=st.trials_started,
        counts=v.counts,
        best=_summary(v.best) if v.best is not None else None,
        reason=st.reason,
        error=_error(study_error(st)),
        warnings=v.warnings,
        best_by_rung=(
            None
            if v.rungs is None
            else [RungBest.model_validate(r, from_attributes=True) for r in v.rungs]
        ),
        usage=StudyUsage.model_validate(v.usage.as_dict()) if v.usage is not None else None,
        queue_warning=v.queue_warning,
        pareto=_pareto_summary(v.pareto),
        webhook_signed=st.webhook_secret is not None,
    )


def _pareto_summary(front: FrontSummary | None) -> ParetoSummary | None:
    return None if front is None else ParetoSummary.model_validate(front.as_dict())


def _error(fields: dict[str, Any] | None) -> StudyError | None:
    return None if fields is None else StudyError.model_validate(fields)


def _trial_out(d: TrialDetail) -> TrialOut:
    t = d.trial
    base = _summary(t, d.spec, d.mark).model_dump()
    return TrialOut(
        **base,
        **_replicates_out(d),
        resource_from=t.resource_from,
        resource_to=t.resource_to,
        checkpoint=t.checkpoint,
        error=t.error,
        worker=t.worker,
        pending=t.pending,
        log_tail=t.log_tail,
        reports=[ReportOut.model_validate(r, from_attributes=True) for r in d.reports],
        decisions=[DecisionOut.model_validate(x, from_attributes=True) for x in d.decisions],
        attempt_log=[AttemptOut.model_validate(a, from_attributes=True) for a in d.attempts],
    )


def _replicates_out(d: TrialDetail) -> dict[str, Any]:
    """A replicate's fold and seed; a trial's replicates with their curves and its per-fold
    table; nothing outside a study with evaluation."""
    ev = d.spec.evaluation if d.spec is not None else None
    t = d.trial
    if ev is None:
        return {}
    if t.parent_id is not None and t.replicate is not None:
        plan = ev.replicate_list()
        r = plan[t.replicate] if t.replicate < len(plan) else None
        return {"fold": r.fold if r else None, "seed": r.seed if r else None}
    detail: ReplicateDetail | None = d.replicates
    if detail is None:
        return {}
    return {
        "replicates": [
            ReplicateOut(
                id=r.trial.id,
                index=r.index,
                label=r.label,
                fold=r.fold,
                seed=r.seed,
                state=TrialState(r.trial.state),
                value=r.trial.value,
                resource=r.trial.resource,
                reason=r.trial.reason,
                attempts=r.trial.attempts,
                worker=r.trial.worker,
                curve=[ReplicatePoint(step=x, value=y) for x, y in r.curve],
            )
            for r in detail.replicates
        ],
        "levels": [LevelOut.model_validate(lv, from_attributes=True) for lv in detail.levels],
    }


def _objective_fields(t: Trial, spec: StudySpec | None) -> dict[str, Any]:
    """A trial's values per objective and its feasibility, for a study with several
    objectives or constraints; nothing for a single unconstrained objective."""
    if spec is None or not spec.ranked_by_fronts:
        return {}
    objectives = Objectives.of(spec)
    vector = objectives.vector(t.values, t.value)
    return {
        "values": None if vector is None else objectives.labelled(vector),
        "feasible": objectives.feasible(t.violation),
        "infeasible": t.infeasible,
    }


# -- studies ---------------------------------------------------------------------------------
@router.post(
    "/studies", status_code=201, response_model=StudyOut, responses=E422, dependencies=[WRITE]
)
def create_study(body: StudyBody, studies: StudiesDep) -> StudyOut:
    """Create a study from its definition; nothing is stored when the definition is invalid."""
    # Checked here, in the route's worker thread, not by FastAPI on the event loop.
    view = studies.create(parse_study(body))
    # The webhook's signing secret is shown this once, as a token's secret is.
    return _study_out(view).model_copy(update={"webhook_secret": view.study.webhook_secret})


@router.get("/studies", response_model=StudyPage, responses=E422, dependencies=[READ])
def list_studies(
    studies: StudiesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> StudyPage:
    """Studies, newest first, in pages: pass ``next_cursor`` back as ``cursor``."""
    views, nxt = studies.list_studies(limit, cursor)
    return StudyPage(items=[_study_out(v) for v in views], next_cursor=nxt)


@router.get("/studies/{study_id}", response_model=StudyOut, responses=E404, dependencies=[READ])
def get_study(study_id: Id, studies: StudiesDep) -> StudyOut:
    """A study with its trial counts per state and its best completed trial."""
    return _study_out(studies.get(study_id))


@router.patch(
    "/studies/{study_id}",
    response_model=StudyOut,
    responses={**E404, **E409, **E422},
    dependencies=[WRITE],
)
def patch_study(study_id: Id, patch: StudyPatch, studies: StudiesDep) -> StudyOut:
    """Pause, resume or stop a study. Stopping ends its paused trials; running ones stop at
    their next report."""
    return _study_out(studies.set_state(study_id, patch.state))


@router.delete("/studies/{study_id}", status_code=204, responses=E404, dependencies=[WRITE])
def delete_study(study_id: Id, studies: StudiesDep) -> Response:
    """Delete a study with all its trials, reports and decisions."""
    studies.delete(study_id)
    return Response(status_code=204)


@router.get(
    "/studies/{study_id}/trials",
    response_model=TrialPage,
    responses={**E404, **E422},
    dependencies=[READ],
)
def list_trials(
    study_id: Id,
    studies: StudiesDep,
    state: Annotated[str | None, Query(max_length=16)] = None,
    order: Annotated[
        str,
        Query(
            max_length=8,
            description="number, -number, value or -value (ordering by value lists only "
            "trials that have one)",
        ),
    ] = "number",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> TrialPage:
    """Trials of a study, filtered by state, in keyset-paged order."""
    rows, nxt = studies.trials(study_id, state, order, limit, cursor)
    spec = studies.definition(study_id) if rows else None
    marks = studies.race_marks(spec, rows) if spec is not None else {}
    return TrialPage(items=[_summary(t, spec, marks.get(t.id)) for t in rows], next_cursor=nxt)


CSV_COLUMNS = (
    "number",
    "id",
    "state",
    "value",
    "resource",
    "rung",
    "bracket",
    "attempts",
    "reason",
    "created_at",
    "updated_at",
)


def _cell(v: Any) -> Any:
    """A CSV cell: empty for a missing value, ISO 8601 for a time, the value otherwise.

    A text a spreadsheet would run as a formula (one that begins with ``= + - @``, a tab, a
    CR or LF, or their full-width forms) gets a leading ``'``, as OWASP advises against CSV
    injection: a string choice, a reason, an error text is user data. Numbers are not text
    and stay as they are, so -0.5 is still a number."""
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.isoformat()
    formula = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
    if isinstance(v, str) and v[:1] in formula:
        return "'" + v
    return v


def _objective_cells(t: Trial, objectives: Objectives) -> list[Any]:
    """A trial's value per objective, then whether it is feasible and why not."""
    vector = objectives.vector(t.values, t.value)
    cells: list[Any] = vector if vector is not None else [None] * len(objectives.metrics)
    feasible = objectives.feasible(t.violation)
    return [*cells, None if feasible is None else str(feasible).lower(), _cell(t.infeasible)]


@dataclass(frozen=True)
class FoldColumns:
    """A study with evaluation's columns: the value's spread, then each replicate's final
    value (``fold_1_value``...), read by ``read`` for a page of trial ids at once."""

    names: list[str]
    read: Callable[[Sequence[int]], dict[int, dict[int, float | None]]]

    def header(self) -> list[str]:
        return ["value_std", "value_stderr", *self.names]

    def cells(self, t: Trial, finals: dict[int, float | None]) -> list[Any]:
        per = [_cell(finals.get(i)) for i in range(len(self.names))]
        return [_cell(t.value_std), _cell(t.value_stderr), *per]


def _csv_chunks(
    pages: Iterable[Sequence[Trial]],
    params: list[str],
    objectives: Objectives | None = None,
    folds: FoldColumns | None = None,
    size: int = 1 << 16,
) -> Iterator[str]:
    """The header, then a line per trial, in chunks of about ``size`` characters (a chunk per
    line would cost the server a thread hop per trial). An inactive parameter is empty.
    With ``objectives`` (several, or constraints), a column per objective's metric and the
    trial's feasibility come before the parameters; with ``folds`` (a study with
    evaluation), the value's spread and each replicate's final value, read once per page."""
    buf = io.StringIO()
    out = csv.writer(buf)
    extra = [] if objectives is None else [*objectives.metrics, "feasible", "infeasible"]
    extra += [] if folds is None else folds.header()
    out.writerow([*CSV_COLUMNS, *(_cell(x) for x in extra), *(f"param_{p}" for p in params)])
    for page in pages:
        finals = folds.read([t.id for t in page]) if folds is not None else {}
        for t in page:
            row = [_cell(getattr(t, c)) for c in CSV_COLUMNS]
            if objectives is not None:
                row += [_cell(x) for x in _objective_cells(t, objectives)]
            if folds is not None:
                row += folds.cells(t, finals.get(t.id, {}))
            out.writerow(row + [_cell(t.params.get(p)) for p in params])
            if buf.tell() >= size:
                yield buf.getvalue()
                buf.seek(0)
                buf.truncate()
    yield buf.getvalue()


@router.get(
    "/studies/{study_id}/trials.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "CSV, a row per trial"}, **E404},
    dependencies=[READ],
)
def export_trials_csv(study_id: Id, studies: StudiesDep) -> StreamingResponse:
    """Every trial of the study as CSV, by number: its fields, then a ``param_<name>`` column
    per parameter of the space (empty where the parameter is inactive). A study with several
    objectives or constraints adds a column per objective (named by its metric), then
    ``feasible`` and ``infeasible``, before the parameters. A study with evaluation adds
    ``value_std``, ``value_stderr`` and each replicate's final value (``fold_1_value``,
    ``seed_1_value`` or ``fold_1_seed_1_value``...), also before the parameters. Streamed a
    page at a time, so the size of the study does not matter."""
    spec = studies.get(study_id).spec
    objectives = Objectives.of(spec) if spec.ranked_by_fronts else None
    ev = spec.evaluation
    folds = (
        None
        if ev is None
        else FoldColumns(
            [replicate_column(ev, i) for i in range(ev.replicates)], studies.final_values
        )
    )
    return StreamingResponse(
        _csv_chunks(studies.iter_trial_pages(study_id), list(spec.space), objectives, folds),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="study-{study_id}-trials.csv"'},
    )


def _pareto_trial(m: Any) -> ParetoTrial:
    base = TrialSummary.model_validate(m.trial, from_attributes=True).model_dump()
    return ParetoTrial(**{**base, "values": m.values, "feasible": m.feasible})


def _pareto_out(front: Front) -> ParetoOut:
    return ParetoOut(
        **front.summary.as_dict(),
        resource=front.resource,
        trials=[_pareto_trial(m) for m in front.members],
    )


@router.get(
    "/studies/{study_id}/pareto",
    response_model=ParetoOut,
    responses={**E404, **E422},
    dependencies=[READ],
)
def get_pareto(
    study_id: Id,
    kit: KitDep,
    resource: Annotated[
        float | None,
        Query(
            ge=0,
            allow_inf_nan=False,
            description="the front among the rung entries recorded at this resource (a "
            "rung's level, over brackets) instead of the completed trials",
        ),
    ] = None,
) -> ParetoOut:
    """The feasible non-dominated completed trials (the Pareto front), each with its value
    per objective, and the hypervolume they dominate up to the reference point. With one
    objective, the front is the best completed trial (and its ties)."""
    return _pareto_out(ParetoService(kit).front(study_id, resource))


@router.get(
    "/studies/{study_id}/pareto/history",
    response_model=ParetoHistory,
    responses=E404,
    dependencies=[READ],
)
def get_pareto_history(study_id: Id, kit: KitDep) -> ParetoHistory:
    """The front's hypervolume as trials completed, in the order they completed, against
    the reference point the study's front is measured against now."""
    objectives, ref, completed, steps = ParetoService(kit).history(study_id)
    return ParetoHistory(
        objectives=objectives.as_list(),  # type: ignore[arg-type]
        reference_point=None if ref is None else ref.user_units(objectives),
        reference_derived=ref is not None and ref.derived,
        completed=completed,
        points=[HypervolumePoint.model_validate(x, from_attributes=True) for x in steps],
    )


@router.get("/trials/{trial_id}", response_model=TrialOut, responses=E404, dependencies=[READ])
def get_trial(trial_id: Id, studies: StudiesDep) -> TrialOut:
    """A trial with its params, every report, every decision with its reason, and attempts."""
    return _trial_out(studies.trial(trial_id))


# -- ask / tell ----------------------------------------------------------------------------
@router.post(
    "/studies/{study_id}/next",
    response_model=Assignment,
    responses={
        204: {"description": "nothing to run right now (all slots busy, or waiting on rungs)"},
        **E404,
        409: {"model": Problem, "description": "the study is finished or stopped"},
    },
    dependencies=[WORKER],
)
async def next_job(
    study_id: Id,
    trials: TrialsDep,
    settings: SettingsDep,
    response: Response,
    body: Annotated[NextIn | None, Body()] = None,
) -> Any:
    """The next piece of work: a promoted trial to resume (preferred) or a new trial."""
    # A model-based suggestion is made ahead of the study's lock, while the previous call of
    # this process holds it (see SuggestAhead).
    gpus = [g.model_dump(exclude_none=True) for g in body.gpus] if body else []
    res = await trials.kit.ahead.next(trials, study_id, body.worker if body else None, gpus)
    if res is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    t = res.trial
    return Assignment(
        trial_id=t.id,
        number=t.number,
        params=t.params,
        resource_from=t.resource_from,
        resource_to=t.resource_to,
        checkpoint=t.checkpoint,
        kind=res.kind,
        reason=res.reason,
        attempt=t.attempts,
        lease_seconds=settings.lease_seconds,
        replicate=res.replicate,
    )


@router.post(
    "/trials/{trial_id}/reports",
    response_model=ReportOut,
    responses={**E404, **E409, **E422, **E429},
    dependencies=[WORKER, Depends(limit_reports)],
)
def report(trial_id: Id, body: ReportIn, trials: TrialsDep) -> Response:
    """An intermediate result; the answer says whether to continue, pause or stop.

    Idempotent on (trial, step) within an attempt: repeating a report returns the decision
    stored the first time; a later attempt's report of the step replaces it. A call of an
    attempt that is no longer the trial's live one is a 409 ("Stale attempt"): nothing is
    stored, and the worker should stop that job. A NaN, infinite or missing metric fails the
    trial (the answer is ``stop``)."""
    r = trials.report(trial_id, body.step, body.value, dict(body.metrics), attempt=body.attempt)
    # Serialised here, once: the model built from the stored row is valid by construction,
    # so the response model's second validation on the way out would only cost time.
    out = ReportOut.model_validate(r, from_attributes=True)
    return Response(out.model_dump_json(), media_type="application/json")


@router.post(
    "/trials/{trial_id}/pause",
    response_model=TrialSummary,
    responses={**E404, **E409},
    dependencies=[WORKER],
)
def pause(trial_id: Id, body: PauseIn, trials: TrialsDep) -> TrialSummary:
    """Acknowledge a ``pause`` decision once the checkpoint is saved."""
    return _summary(trials.pause(trial_id, body.checkpoint, attempt=body.attempt))


@router.post(
    "/trials/{trial_id}/complete",
    response_model=TrialSummary,
    responses={**E404, **E409},
    dependencies=[WORKER],
)
def complete(trial_id: Id, body: CompleteIn, trials: TrialsDep) -> TrialSummary:
    """The objective finished; ``value`` (or the latest report's) is the trial's result."""
    t = trials.complete(
        trial_id, body.value, dict(body.metrics), body.checkpoint, attempt=body.attempt
    )
    return _summary(t)


@router.post(
    "/trials/{trial_id}/fail",
    response_model=TrialSummary,
    responses={**E404, **E409},
    dependencies=[WORKER],
)
def fail(trial_id: Id, body: FailIn, trials: TrialsDep) -> TrialSummary:
    """The objective crashed; the error is stored on the trial, its summary is the reason."""
    return _summary(trials.fail(trial_id, body.error, body.output, attempt=body.attempt))


@router.post("/trials/{trial_id}/heartbeat", responses={**E404, **E409}, dependencies=[WORKER])
def heartbeat(trial_id: Id, body: HeartbeatIn, trials: TrialsDep) -> dict[str, datetime | None]:
    """Extend the lease of the trial's live attempt."""
    return {"lease_expires_at": trials.heartbeat(trial_id, attempt=body.attempt)}
