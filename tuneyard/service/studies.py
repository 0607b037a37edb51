"""Study use cases: create, read, list, pause/resume/stop, delete, and trial listings."""

from __future__ import annotations

import base64
import json
import math
import secrets
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from tuneyard.errors import InvalidRequest, NotFound
from tuneyard.scheduler.sizing import rung_warnings
from tuneyard.service import notifications
from tuneyard.service.budget import Usage, read_usage, usage
from tuneyard.service.checkpoint_locations import study_folder
from tuneyard.service.code import CodeFiles
from tuneyard.service.context import StudyContext, Toolkit
from tuneyard.service.pareto import FrontSummary, ParetoService
from tuneyard.service.replicate_results import (
    RaceMark,
    ReplicateDetail,
    final_values,
    race_marks,
    replicate_detail,
)
from tuneyard.service.transitions import check_study, move_study
from tuneyard.service.warm_start import check_sources
from tuneyard.service.workers import queue_warnings
from tuneyard.spec import StudySpec
from tuneyard.states import StudyState, TrialState
from tuneyard.store import counters
from tuneyard.store.models import Attempt, DecisionLog, Report, Rung, RungEntry, Study, Trial

TRIAL_ORDERS = ("number", "-number", "value", "-value")


@dataclass(frozen=True)
class RungBest:
    """The best value any trial reached at a rung (over the study's brackets)."""

    rung: int
    resource: float
    entries: int
    value: float
    trial_id: int
    number: int


@dataclass(frozen=True)
class StudyView:
    study: Study
    counts: dict[str, int]
    # The best completed trial: a trial stopped early or failed is never the study's best.
    best: Trial | None
    # The best value seen at each rung; read for one study only (None in listings).
    rungs: list[RungBest] | None = None
    usage: Usage | None = None
    # Set while the study waits for workers and no live worker serves its queue.
    queue_warning: str | None = None
    # Several objectives or constraints: the front's size and hypervolume (one study's GET).
    pareto: FrontSummary | None = None

    @cached_property
    def spec(self) -> StudySpec:
        """The study's definition as stored: checked when the study was created, not again."""
        return StudySpec.from_stored(self.study.spec)

    @property
    def warnings(self) -> list[str]:
        """What in the definition keeps the study from working as intended (a max_trials
        too small to fill the rungs): given when it is created, and with it after."""
        return rung_warnings(self.spec)


@dataclass(frozen=True)
class TrialDetail:
    trial: Trial
    reports: list[Report]
    decisions: list[DecisionLog]
    attempts: list[Attempt]
    # The trial's study's definition, for what its objectives and constraints say of it.
    spec: StudySpec | None = None
    # A trial of a study with evaluation: its replicates and per-fold table; its own mark.
    replicates: ReplicateDetail | None = None
    mark: RaceMark | None = None


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def study_page(s: Session, limit: int, cursor: str | None) -> tuple[list[Study], str | None]:
    """Studies, newest first: at most ``limit`` after ``cursor``, and the cursor of the next
    page (None on the last)."""
    q = select(Study).order_by(Study.id.desc()).limit(limit + 1)
    if cursor:
        (last_id,) = decode_cursor(cursor, KEY)
        q = q.where(Study.id < last_id)
    rows = list(s.scalars(q))
    nxt = encode_cursor([rows[limit - 1].id]) if len(rows) > limit else None
    return rows[:limit], nxt


# What a cursor holds, position by position: an id or a trial number, or a trial's value.
KEY, VALUE = "key", "value"
_MAX_KEY = 2**63 - 1


def decode_cursor(cursor: str, *shape: str) -> list[int | float]:
    """The positions held by a cursor this API returned, in ``shape``: a key (an id or a
    number: an integer in [0, 2**63)) or a value (a finite number). Anything else (not
    base64, not JSON, another length, another type, out of range) is a 422 naming ``cursor``:
    it reaches no query."""
    bad = InvalidRequest("cursor: not a cursor this API returned", field="cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # binascii, JSON and UTF-8 errors are these
        raise bad from exc
    if not isinstance(values, list) or len(values) != len(shape):
        raise bad
    out: list[int | float] = []
    for kind, v in zip(shape, values, strict=True):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise bad
        if kind == KEY:
            if not isinstance(v, int) or not 0 <= v <= _MAX_KEY:
                raise bad
        elif not math.isfinite(v):
            raise bad
        out.append(v)
    return out


# The states in which a study shows the error its trials failed with.
SHOWS_ERROR = frozenset({StudyState.FAILING, StudyState.FAILED, StudyState.EXHAUSTED})


def study_error(study: Study) -> dict[str, Any] | None:
    """The error a failing study stopped on, or that the trials of a study which ended with no
    completed trial failed with last (the API's ``StudyError``); None otherwise."""
    if study.last_error is None or study.state not in SHOWS_ERROR:
        return None
    return {
        "summary": study.last_error,
        "type": study.last_error_type,
        "trial_id": study.last_error_trial_id,
        "count": study.error_streak,
    }


def rung_bests(s: Session, study: Study) -> list[RungBest]:
    """The best value seen at each rung of ``study``: one probe of the rung entries' ranking
    index per (bracket, rung) with entries, the best over brackets kept per rung."""
    sign = 1.0 if study.direction == "minimize" else -1.0
    rungs = s.execute(
        select(Rung.bracket, Rung.rung, Rung.resource, Rung.entries)
        .where(Rung.study_id == study.id, Rung.entries > 0)
        .order_by(Rung.rung, Rung.bracket)
    ).all()
    out: dict[int, RungBest] = {}
    for bracket, rung, resource, entries in rungs:
        top = s.execute(
            select(RungEntry.score, Trial.id, Trial.number)
            .join(Trial, Trial.id == RungEntry.trial_id)
            .where(
                RungEntry.study_id == study.id,
                RungEntry.bracket == bracket,
                RungEntry.rung == rung,
            )
            .order_by(RungEntry.score, RungEntry.id)
            .limit(1)
        ).first()
        if top is None:
            continue
        seen = out.get(rung)
        total = entries + (seen.entries if seen else 0)
        if seen is None or top.score < sign * seen.value:
            out[rung] = RungBest(rung, resource, total, sign * top.score, top.id, top.number)
        else:
            out[rung] = RungBest(rung, seen.resource, total, seen.value, seen.trial_id, seen.number)
    return [out[k] for k in sorted(out)]


class StudyService:
    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    def create(self, spec: StudySpec) -> StudyView:
        seed = spec.sampler.seed if spec.sampler.seed is not None else secrets.randbits(62)
        # Build the algorithm objects before storing anything: a spec they refuse is a 422.
        try:
            ctx = StudyContext.build(spec, seed)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        code = spec.execution.code if spec.execution is not None else None
        # The archive is uploaded before the study that names it (a 422 otherwise).
        digest = CodeFiles(self.kit).require(code) if code else None
        notifications.check_webhook(self.kit.settings, spec)
        now = self.kit.clock()
        with self.kit.transaction() as s:
            check_sources(s, spec, model_based=ctx.model is not None)
            study = Study(
                name=spec.name,
                code_digest=digest,
                webhook_secret=notifications.new_secret(spec),
                state=StudyState.RUNNING,
                spec=spec.model_dump(mode="json"),
                direction=spec.direction,
                metric=spec.metric,
                seed=seed,
                trials_started=0,
                brackets_opened=0,
                error_streak=0,
                created_at=now,
                updated_at=now,
            )
            s.add(study)
            s.flush()
            counters.create(s, study.id)
            study.brackets_opened = ctx.engine.open(ctx.board(s, study.id))
            zero = counters.Counts()
            return StudyView(
                study, {}, None, usage=usage(study, zero, spec.limits, ctx.capacity, now)
            )

    def definition(self, study_id: int) -> StudySpec:
        """A study's definition (this process's copy when it has built the study's context)."""
        with self.kit.reading() as s:
            row = s.execute(
                select(Study.spec, Study.created_at).where(Study.id == study_id)
            ).first()
            if row is None:
                raise NotFound(f"study {study_id} does not exist")
            ctx = self.kit.cached_context(study_id, row.created_at)
            return ctx.spec if ctx is not None else StudySpec.from_stored(row.spec)

    def _get(self, s: Session, study_id: int) -> Study:
        study = s.get(Study, study_id)
        if study is None:
            raise NotFound(f"study {study_id} does not exist")
        return study

    def _views(self, s: Session, studies: Sequence[Study]) -> list[StudyView]:
        spent = counters.read_many(s, [st.id for st in studies])
        warnings = queue_warnings(s, self.kit, studies, spent)
        return [self._view(s, st, spent[st.id], warnings.get(st.id)) for st in studies]

    def _view(
        self,
        s: Session,
        study: Study,
        used: counters.Counts,
        queue_warning: str | None = None,
    ) -> StudyView:
        counts = {state.value: 0 for state in TrialState}
        for state, n in s.execute(
            select(Trial.state, func.count())
            .where(Trial.study_id == study.id, Trial.parent_id.is_(None))
            .group_by(Trial.state)
        ):
            counts[state] = int(n)
        order = Trial.value.asc() if study.direction == "minimize" else Trial.value.desc()
        best = s.scalar(
            select(Trial)
            .where(
                Trial.study_id == study.id,
                Trial.parent_id.is_(None),
                Trial.state == TrialState.COMPLETED,
                Trial.value.is_not(None),
            )
            .order_by(order, Trial.id)
            .limit(1)
        )
        spent = read_usage(self.kit, study, used, self.kit.clock())
        return StudyView(study, counts, best, usage=spent, queue_warning=queue_warning)

    def get(self, study_id: int) -> StudyView:
        with self.kit.transaction() as s:
            view = self._views(s, [self._get(s, study_id)])[0]
            front = ParetoService(self.kit).summary(s, view.spec, study_id)
            return replace(view, rungs=rung_bests(s, view.study), pareto=front)

    def list_studies(self, limit: int, cursor: str | None) -> tuple[list[StudyView], str | None]:
        with self.kit.transaction() as s:
            rows, nxt = study_page(s, limit, cursor)
            return self._views(s, rows), nxt

    def set_state(self, study_id: int, state: str) -> StudyView:
        """Pause, resume or stop a study, as the table of its transitions allows; stopping
        stops its trials that wait (paused or queued) too."""
        from tuneyard.service.trials import TrialService

        with self.kit.transaction() as s:
            study = s.scalar(
                select(Study)
                .where(Study.id == study_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
            if study is None:
                raise NotFound(f"study {study_id} does not exist")
            if study.state != state:
                check_study(study_id, study.state, state)
                if state == StudyState.STOPPED:
                    stopped, why = StudyState.STOPPED, "stopped by request"
                    TrialService(self.kit)._finish(s, study, stopped, why)
                else:
                    was = study.state
                    if was == StudyState.FAILING:
                        # Resumed after fail fast (the code was fixed, presumably): the streak
                        # starts over, so the same error again makes it fail fast again.
                        study.error_streak = 0
                        study.reason = f"resumed after failing with: {study.last_error}"
                    move_study(study, StudyState(state))
                    if was == StudyState.FAILING:
                        # Its last trials may have ended while it was failing: with nothing
                        # left to start, it ends now.
                        trials = TrialService(self.kit)
                        ctx = self.kit.context(study)
                        trials._maybe_finish(s, ctx, study, ctx.board(s, study.id))
            return self._views(s, [study])[0]

    def delete(self, study_id: int) -> None:
        with self.kit.transaction() as s:
            study = self._get(s, study_id)
            s.execute(delete(Study).where(Study.id == study.id))
        # Its uploaded checkpoints and models go with it (once the rows are gone for good).
        shutil.rmtree(study_folder(self.kit.settings, study_id), ignore_errors=True)

    # -- trials ------------------------------------------------------------------------------
    def trials(
        self,
        study_id: int,
        state: str | None,
        order: str,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Trial], str | None]:
        if order not in TRIAL_ORDERS:
            raise InvalidRequest(
                f"order: must be one of {', '.join(TRIAL_ORDERS)}, got {order!r}", field="order"
            )
        if state is not None and state not in TrialState._value2member_map_:
            raise InvalidRequest(
                f"state: must be one of {', '.join(TrialState)}, got {state!r}", field="state"
            )
        with self.kit.transaction() as s:
            self._get(s, study_id)
            # The study's trials; a trial's replicates (folds, seeds) are listed with it.
            q = select(Trial).where(Trial.study_id == study_id, Trial.parent_id.is_(None))
            if state is not None:
                q = q.where(Trial.state == state)
            desc = order.startswith("-")
            if order.endswith("number"):
                if cursor:
                    (n,) = decode_cursor(cursor, KEY)
                    q = q.where(Trial.number < n if desc else Trial.number > n)
                q = q.order_by(Trial.number.desc() if desc else Trial.number.asc())
            else:
                # Ordered by value, trials without a value yet are left out.
                q = q.where(Trial.value.is_not(None))
                if cursor:
                    v, i = decode_cursor(cursor, VALUE, KEY)
                    if desc:
                        q = q.where(or_(Trial.value < v, and_(Trial.value == v, Trial.id < i)))
                    else:
                        q = q.where(or_(Trial.value > v, and_(Trial.value == v, Trial.id > i)))
                if desc:
                    q = q.order_by(Trial.value.desc(), Trial.id.desc())
                else:
                    q = q.order_by(Trial.value.asc(), Trial.id.asc())
            rows = list(s.scalars(q.limit(limit + 1)))
            nxt = None
            if len(rows) > limit:
                last = rows[limit - 1]
                nxt = encode_cursor(
                    [last.number] if order.endswith("number") else [last.value, last.id]
                )
            return rows[:limit], nxt

    def iter_trials(self, study_id: int, page_size: int = 1000) -> Iterator[Trial]:
        """Every trial of a study by number, a keyset page per short transaction: an export
        of any size holds one page in memory and no transaction open while it is sent."""
        for rows in self.iter_trial_pages(study_id, page_size):
            yield from rows

    def iter_trial_pages(self, study_id: int, page_size: int = 1000) -> Iterator[list[Trial]]:
        """:meth:`iter_trials` a page at a time, for what is read per page with it."""
        cursor = None
        while True:
            rows, cursor = self.trials(study_id, None, "number", page_size, cursor)
            if rows:
                yield rows
            if cursor is None:
                return

    def race_marks(self, spec: StudySpec, rows: Sequence[Trial]) -> dict[int, RaceMark]:
        """A page of a study with evaluation: per trial the replicates in its latest
        aggregate and whether racing stopped it (one query for the page; none without)."""
        if spec.evaluation is None or not rows:
            return {}
        with self.kit.reading() as s:
            return race_marks(s, rows, spec.evaluation)

    def final_values(self, ids: Sequence[int]) -> dict[int, dict[int, float | None]]:
        """Each of these trials' replicates' latest values by index: one query."""
        with self.kit.reading() as s:
            return final_values(s, ids)

    def trial(self, trial_id: int) -> TrialDetail:
        with self.kit.transaction() as s:
            trial = s.get(Trial, trial_id)
            if trial is None:
                raise NotFound(f"trial {trial_id} does not exist")
            reports = list(
                s.scalars(select(Report).where(Report.trial_id == trial_id).order_by(Report.step))
            )
            decisions = list(
                s.scalars(
                    select(DecisionLog)
                    .where(DecisionLog.trial_id == trial_id)
                    .order_by(DecisionLog.id)
                )
            )
            attempts = list(
                s.scalars(
                    select(Attempt).where(Attempt.trial_id == trial_id).order_by(Attempt.number)
                )
            )
            stored = s.scalar(select(Study.spec).where(Study.id == trial.study_id))
            spec = StudySpec.from_stored(stored) if stored is not None else None
            ev = spec.evaluation if spec is not None else None
            if ev is None or trial.parent_id is not None:
                return TrialDetail(trial, reports, decisions, attempts, spec)
            return TrialDetail(
                trial,
                reports,
                decisions,
                attempts,
                spec,
                replicate_detail(s, trial, ev),
                race_marks(s, [trial], ev)[trial.id],
            )
