"""What a study with several objectives (or constraints) has found: its Pareto front, the
hypervolume of that front, and how the hypervolume grew as trials completed.

Read paths only: the report path stores each trial's objective vector (``Trial.values``, the
user's units), its total constraint violation and, per rung, the minimised vector
(``RungEntry.scores``); everything here is computed from those columns on demand. Dominance
and hypervolume are :mod:`tuneyard.scheduler.multi`'s; this module only gathers the vectors,
minimises them (maximised objectives negated) and turns the answers back into user units.

One objective is the special case: the front is the best completed trial(s) and the
hypervolume the distance from the reference point to the best value.

The reference point is the definition's ``reference_point`` when it gives one; otherwise it is
derived from every completed trial's vector (feasible or not) with
:func:`~tuneyard.scheduler.multi.reference_point`, and reported as derived, since it moves as
trials complete and hypervolumes measured against different ones do not compare.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tuneyard.errors import InvalidRequest, NotFound
from tuneyard.lru import LRU
from tuneyard.scheduler.multi import hypervolume, pareto_mask, reference_point
from tuneyard.service.context import Toolkit
from tuneyard.spec import StudySpec
from tuneyard.states import TrialState
from tuneyard.store.models import Rung, RungEntry, Study, Trial

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Objectives:
    """A study's objectives and constraints as the front needs them."""

    metrics: tuple[str, ...]
    directions: tuple[str, ...]
    constrained: bool
    # The definition's reference point, minimised (None: derive one from the trials).
    given_reference: tuple[float, ...] | None

    @classmethod
    def of(cls, spec: StudySpec) -> Objectives:
        objectives = spec.objective_list
        signs = [o.sign for o in objectives]
        given = (
            None
            if spec.reference_point is None
            else tuple(s * r for s, r in zip(signs, spec.reference_point, strict=True))
        )
        return cls(
            metrics=tuple(o.metric for o in objectives),
            directions=tuple(o.direction for o in objectives),
            constrained=bool(spec.constraints),
            given_reference=given,
        )

    @property
    def signs(self) -> FloatArray:
        """+1 per minimised objective, -1 per maximised one."""
        return np.array([1.0 if d == "minimize" else -1.0 for d in self.directions])

    def as_list(self) -> list[dict[str, str]]:
        pairs = zip(self.metrics, self.directions, strict=True)
        return [{"metric": m, "direction": d} for m, d in pairs]

    def vector(self, values: Sequence[float] | None, value: float | None) -> list[float] | None:
        """A trial's objective vector in user units: its stored ``values``, or for a single
        objective its ``value``; None when it has none (or a malformed one)."""
        if values is not None:
            if len(values) == len(self.metrics) and all(
                isinstance(v, int | float) and math.isfinite(v) for v in values
            ):
                return [float(v) for v in values]
            return None
        if len(self.metrics) == 1 and value is not None and math.isfinite(value):
            return [float(value)]
        return None

    def violation(self, stored: float | None) -> float:
        """A trial's total violation for the front: as stored; 0 in a study without
        constraints; infinite (never on the front) when a constrained study's trial has
        none recorded, since its feasibility is unknown."""
        if stored is None:
            return math.inf if self.constrained else 0.0
        if math.isnan(stored) or stored < 0:
            return math.inf  # not a violation the report path writes: keep it off the front
        return float(stored)

    def feasible(self, stored: float | None) -> bool | None:
        """Whether a trial kept every constraint: None without constraints or a violation."""
        if not self.constrained or stored is None:
            return None
        return stored == 0

    def labelled(self, vector: Sequence[float]) -> dict[str, float]:
        return dict(zip(self.metrics, vector, strict=True))


@dataclass(frozen=True)
class Reference:
    """The point hypervolume is measured against, minimised, and whether it was derived."""

    point: FloatArray
    derived: bool

    def user_units(self, objectives: Objectives) -> list[float]:
        return [float(x) for x in self.point * objectives.signs]


def choose_reference(objectives: Objectives, minimised: FloatArray) -> Reference | None:
    """The definition's reference point, else one derived from ``minimised`` (every observed
    vector); None when there is neither."""
    if objectives.given_reference is not None:
        return Reference(np.array(objectives.given_reference, dtype=float), derived=False)
    if len(minimised) == 0:
        return None
    return Reference(reference_point(minimised), derived=True)


@dataclass(frozen=True)
class Point:
    """One trial's (or rung entry's) place among the candidates: its vector in user units
    and its total violation as stored (None: none recorded)."""

    trial_id: int
    values: list[float]
    violation: float | None
    number: int = -1
    infeasible: str | None = None


@dataclass(frozen=True)
class Member:
    """A trial on the front, with its vector (at the rung, for a rung's front)."""

    trial: Trial
    values: dict[str, float]
    feasible: bool | None


@dataclass(frozen=True)
class FrontSummary:
    objectives: Objectives
    size: int
    hypervolume: float | None
    reference: Reference | None

    def as_dict(self) -> dict[str, Any]:
        ref = self.reference
        return {
            "objectives": self.objectives.as_list(),
            "size": self.size,
            "hypervolume": self.hypervolume,
            "reference_point": None if ref is None else ref.user_units(self.objectives),
            "reference_derived": ref is not None and ref.derived,
        }


@dataclass(frozen=True)
class Front:
    summary: FrontSummary
    members: list[Member]
    resource: float | None


@dataclass(frozen=True)
class PlotPoint:
    """A completed trial on the dashboard's Pareto plot."""

    trial_id: int
    number: int
    values: list[float]
    feasible: bool | None
    infeasible: str | None
    front: bool


@dataclass(frozen=True)
class HypervolumeStep:
    """The hypervolume once the ``completed``-th trial (``trial_id``) had completed."""

    completed: int
    at: datetime
    trial_id: int
    number: int
    hypervolume: float


@dataclass(frozen=True)
class FrontAnalysis:
    """Which candidates are on the front, and the front's size and hypervolume."""

    on_front: NDArray[np.bool_]
    summary: FrontSummary


def analyse(objectives: Objectives, points: list[Point]) -> FrontAnalysis:
    """The feasible non-dominated points and their hypervolume against the reference point
    (the given one, or one derived from all of ``points``)."""
    m = len(objectives.metrics)
    minimised = np.array([p.values for p in points], dtype=float).reshape(len(points), m)
    minimised = minimised * objectives.signs
    violations = np.array([objectives.violation(p.violation) for p in points], dtype=float)
    on_front = pareto_mask(minimised, violations) if len(points) else np.zeros(0, dtype=np.bool_)
    ref = choose_reference(objectives, minimised)
    hv = None if ref is None else hypervolume(minimised[on_front].reshape(-1, m), ref.point)
    summary = FrontSummary(objectives, int(on_front.sum()), hv, ref)
    return FrontAnalysis(on_front, summary)


def completed_points(s: Session, study_id: int, objectives: Objectives) -> list[Point]:
    """Every completed trial's vector and violation: one query over narrow columns (not
    the trials' params or logs), by trial id."""
    rows = s.execute(
        select(Trial.id, Trial.number, Trial.values, Trial.value, Trial.violation, Trial.infeasible)
        .where(Trial.study_id == study_id, Trial.state == TrialState.COMPLETED)
        .order_by(Trial.id)
    ).all()
    out = []
    for tid, number, values, value, violation, infeasible in rows:
        vector = objectives.vector(values, value)
        if vector is not None:
            out.append(Point(tid, vector, violation, number, infeasible))
    return out


def rung_resources(s: Session, study_id: int, planned: Sequence[float]) -> list[float]:
    """The resources of a study's rungs, ascending: the scheduler's levels (``planned``) and
    any other level its stored rungs have (a study whose definition planned other rungs)."""
    stored = s.scalars(select(Rung.resource).where(Rung.study_id == study_id).distinct())
    return sorted({float(r) for r in planned} | {float(r) for r in stored})


def rung_points(
    s: Session, study_id: int, resource: float, levels: Sequence[float], objectives: Objectives
) -> tuple[float, list[Point]]:
    """The rung entries recorded at ``resource`` (over brackets) as points in user units,
    and the rung's resource as stored. A resource that is no rung's (``levels``) is a 422
    naming the field and listing the study's rung resources."""
    match = next((r for r in levels if math.isclose(r, resource, rel_tol=1e-9)), None)
    if match is None:
        known = ", ".join(f"{r:g}" for r in levels) or "none"
        raise InvalidRequest(
            f"resource: the study has no rung at {resource:g}; its rungs' resources: {known}",
            field="resource",
        )
    rows = s.execute(
        select(RungEntry.trial_id, RungEntry.scores, RungEntry.score, RungEntry.violation)
        .join(
            Rung,
            (Rung.study_id == RungEntry.study_id)
            & (Rung.bracket == RungEntry.bracket)
            & (Rung.rung == RungEntry.rung),
        )
        .where(RungEntry.study_id == study_id, Rung.resource == match)
        .order_by(RungEntry.id)
    ).all()
    signs = objectives.signs
    out = []
    for tid, scores, score, violation in rows:
        # Rung entries hold minimised scores; a single-objective entry only ``score``.
        minimised = objectives.vector(scores, score)
        if minimised is not None:
            user = [float(x) for x in np.array(minimised) * signs]
            out.append(Point(tid, user, violation))
    return match, out


def hypervolume_steps(
    objectives: Objectives, rows: Sequence[Sequence[Any]]
) -> tuple[Reference | None, list[HypervolumeStep]]:
    """The hypervolume after each completion that changed it (from 0), in one pass over the
    completed trials in the order they completed: ``rows`` are (trial id, number, values,
    value, violation, completion time). A completion that the front so far dominates (or that is
    infeasible) changes nothing and costs one Pareto mask of the front and the point; one
    that joins the front costs a hypervolume of the new front. The reference point is the
    one the study's front is measured against now, so the last step equals its hypervolume.
    """
    vectors = []
    for i, (tid, number, values, value, violation, at) in enumerate(rows):
        vector = objectives.vector(values, value)
        if vector is not None:
            vectors.append((i + 1, tid, number, vector, objectives.violation(violation), at))
    m = len(objectives.metrics)
    everything = np.array([v[3] for v in vectors], dtype=float).reshape(-1, m) * objectives.signs
    ref = choose_reference(objectives, everything)
    if ref is None:
        return None, []
    front = np.empty((0, m))
    steps: list[HypervolumeStep] = []
    for point, (completed, tid, number, _, violation, at) in zip(everything, vectors, strict=True):
        # Infeasible, or no better anywhere than a point of the front so far (a twin
        # included): it adds no volume. The common case, so it is tested before the mask.
        if violation != 0 or (len(front) and np.all(front <= point, axis=1).any()):
            continue
        candidate = np.vstack([front, point])
        mask = pareto_mask(candidate)
        if not mask[-1]:
            continue
        front = candidate[mask]
        hv = hypervolume(front, ref.point)
        if hv == (steps[-1].hypervolume if steps else 0.0):
            continue  # a twin of a front point, or a point beyond the reference
        steps.append(HypervolumeStep(completed, at, tid, number, hv))
    return ref, steps


# The hypervolume histories computed by this process, keyed by what they were computed from
# (the study, its completed trials' count and the last completion), so a dashboard polling a
# study that has not changed costs a read, not the hypervolumes again.
History = tuple[Reference | None, list[HypervolumeStep]]
_HISTORIES: WeakKeyDictionary[Toolkit, LRU[Hashable, History]] = WeakKeyDictionary()
_HISTORIES_LOCK = threading.Lock()


def _history_cache(kit: Toolkit) -> LRU[Hashable, History]:
    with _HISTORIES_LOCK:
        cache = _HISTORIES.get(kit)
        if cache is None:
            cache = _HISTORIES[kit] = LRU(64)
        return cache


class ParetoService:
    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    @staticmethod
    def _study(s: Session, study_id: int) -> tuple[Study, StudySpec]:
        study = s.get(Study, study_id)
        if study is None:
            raise NotFound(f"study {study_id} does not exist")
        return study, StudySpec.from_stored(study.spec)

    def front(self, study_id: int, resource: float | None = None) -> Front:
        """The feasible non-dominated completed trials of a study, or with ``resource`` those
        among the rung entries recorded at that resource, with the front's hypervolume."""
        with self.kit.transaction() as s:
            study, spec = self._study(s, study_id)
            objectives = Objectives.of(spec)
            if resource is None:
                at, points = None, completed_points(s, study_id, objectives)
            else:
                planned = self.kit.context(study).scheduler.resources
                levels = rung_resources(s, study_id, planned)
                at, points = rung_points(s, study_id, resource, levels, objectives)
            found = analyse(objectives, points)
            chosen = [p for p, on in zip(points, found.on_front.tolist(), strict=True) if on]
            trials = {
                t.id: t
                for t in s.scalars(select(Trial).where(Trial.id.in_([p.trial_id for p in chosen])))
            }
            members = [
                Member(
                    trials[p.trial_id],
                    objectives.labelled(p.values),
                    objectives.feasible(p.violation),
                )
                for p in chosen
            ]
            members.sort(key=lambda x: x.trial.number)
            return Front(found.summary, members, at)

    def plot(self, study_id: int, limit: int) -> tuple[FrontSummary, list[PlotPoint], int]:
        """The completed trials as the dashboard draws them against the front: every front
        trial and an even spread of the others, ``limit`` in all at most (the front is kept
        whole), by number; with the front's summary and the number of completed trials."""
        with self.kit.transaction() as s:
            _, spec = self._study(s, study_id)
            objectives = Objectives.of(spec)
            points = completed_points(s, study_id, objectives)
        found = analyse(objectives, points)
        on_front = found.on_front.tolist()
        rest = [i for i, on in enumerate(on_front) if not on]
        room = max(0, limit - found.summary.size)
        if len(rest) > room:
            rest = (
                [rest[k] for k in np.linspace(0, len(rest) - 1, room).astype(int)] if room else []
            )
        shown = sorted([i for i, on in enumerate(on_front) if on] + rest)
        out = [
            PlotPoint(
                points[i].trial_id,
                points[i].number,
                points[i].values,
                objectives.feasible(points[i].violation),
                points[i].infeasible,
                on_front[i],
            )
            for i in shown
        ]
        out.sort(key=lambda p: p.number)
        return found.summary, out, len(points)

    def summary(self, s: Session, spec: StudySpec, study_id: int) -> FrontSummary | None:
        """The front's size and hypervolume for a study's summary; None for a study with one
        objective and no constraints (its summary shows the best trial instead)."""
        if not spec.ranked_by_fronts:
            return None
        objectives = Objectives.of(spec)
        return analyse(objectives, completed_points(s, study_id, objectives)).summary

    def history(self, study_id: int) -> tuple[Objectives, Reference | None, int, list[Any]]:
        """The hypervolume over the study's completions (see :func:`hypervolume_steps`), the
        reference point it is measured against and the number of completed trials."""
        with self.kit.transaction() as s:
            study, spec = self._study(s, study_id)
            objectives = Objectives.of(spec)
            when = func.coalesce(Trial.ended_at, Trial.updated_at)
            rows = s.execute(
                select(Trial.id, Trial.number, Trial.values, Trial.value, Trial.violation, when)
                .where(Trial.study_id == study_id, Trial.state == TrialState.COMPLETED)
                .order_by(when, Trial.id)
            ).all()
        last = (rows[-1][0], rows[-1][5].timestamp()) if rows else None
        key = (study_id, study.created_at.timestamp(), len(rows), last)
        cache = _history_cache(self.kit)
        found = cache.get(key)
        if found is None:
            found = hypervolume_steps(objectives, [tuple(r) for r in rows])
            cache.put(key, found)
        ref, steps = found
        return objectives, ref, len(rows), steps
