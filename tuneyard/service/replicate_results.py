"""What a study with ``evaluation`` shows of its trials' replicates: per trial how many
replicates its latest aggregate holds and whether racing stopped it, each replicate's final
value (the CSV's per-fold columns), and for one trial the per-fold table and every replicate's
curve.

Reads only. A page of trials costs one query for the whole page (by the page's ids, on the
primary keys of ``replicate_levels`` and ``uq_trials_parent_replicate``); one trial's detail
reads its replicates' rows, levels, scores and reports, a query each. Nothing here scans the
study.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneyard.service.trials.replicates import replicate_label
from tuneyard.spec.evaluation import EvaluationSpec
from tuneyard.states import TrialState
from tuneyard.store.models import ReplicateLevel, ReplicateScore, Report, Trial


def replicate_column(ev: EvaluationSpec, index: int) -> str:
    """The CSV column of a replicate's final value: ``fold_3_value``, ``seed_2_value`` or
    ``fold_3_seed_2_value`` (numbered from 1, as the labels are)."""
    r = ev.replicate_list()[index]
    parts = []
    if r.fold is not None:
        parts.append(f"fold_{r.fold + 1}")
    if r.seed is not None:
        parts.append(f"seed_{r.seed + 1}")
    return "_".join(parts) + "_value"


def raced(trial: Trial, ev: EvaluationSpec) -> bool:
    """Whether racing stopped ``trial``. The racing rule's reason is the one a stopped trial
    of an evaluation study starts with "stopped after <unit> k of n" (see
    :func:`tuneyard.scheduler.replicates.racing.race`); a stop by request, by the scheduler or
    with a stopped replicate reads otherwise."""
    return trial.state == TrialState.STOPPED and (trial.reason or "").startswith(
        f"stopped after {ev.unit} "
    )


@dataclass(frozen=True)
class RaceMark:
    """A trial's replicates in its list row."""

    replicates_run: int
    raced: bool


def race_marks(s: Session, trials: Sequence[Trial], ev: EvaluationSpec) -> dict[int, RaceMark]:
    """Per trial of a page: the replicates in its aggregate at the furthest level any of
    them reached (0 before the first), and whether racing stopped it. One query for the
    page's trials."""
    ids = [t.id for t in trials if t.parent_id is None]
    furthest: dict[int, tuple[float, int]] = {}
    if ids:
        rows = s.execute(
            select(ReplicateLevel.parent_id, ReplicateLevel.resource, ReplicateLevel.n).where(
                ReplicateLevel.parent_id.in_(ids)
            )
        )
        for pid, resource, n in rows:
            seen = furthest.get(pid)
            if seen is None or resource > seen[0]:
                furthest[pid] = (resource, n)
    return {
        t.id: RaceMark(furthest.get(t.id, (0.0, 0))[1], raced(t, ev))
        for t in trials
        if t.parent_id is None
    }


def final_values(s: Session, ids: Sequence[int]) -> dict[int, dict[int, float | None]]:
    """Each trial's replicates' latest values by replicate index: one query for ``ids``."""
    out: dict[int, dict[int, float | None]] = {i: {} for i in ids}
    if ids:
        rows = s.execute(
            select(Trial.parent_id, Trial.replicate, Trial.value).where(
                Trial.parent_id.in_(list(ids))
            )
        )
        for pid, index, value in rows:
            if pid is not None and index is not None:
                out[pid][index] = value
    return out


@dataclass(frozen=True)
class LevelRow:
    """A trial's aggregate at a resource level and each replicate's value there by index."""

    resource: float
    value: float
    std: float
    stderr: float
    n: int
    complete: bool
    values: list[float | None]


@dataclass(frozen=True)
class ReplicateRow:
    """One replicate of a trial, with its curve as (step, value) points."""

    trial: Trial
    index: int
    label: str
    fold: int | None
    seed: int | None
    curve: list[tuple[float, float | None]]


@dataclass(frozen=True)
class ReplicateDetail:
    replicates: list[ReplicateRow]
    levels: list[LevelRow]


def replicate_detail(s: Session, trial: Trial, ev: EvaluationSpec) -> ReplicateDetail:
    """A trial's replicates with their curves and its per-fold table: a query for the
    replicates, one for their reports, one for the levels and one for the scores."""
    plan = ev.replicate_list()
    children = list(
        s.scalars(select(Trial).where(Trial.parent_id == trial.id).order_by(Trial.replicate))
    )
    curves: dict[int, list[tuple[float, float | None]]] = {c.id: [] for c in children}
    if children:
        for tid, step, value in s.execute(
            select(Report.trial_id, Report.step, Report.value)
            .where(Report.trial_id.in_(list(curves)))
            .order_by(Report.trial_id, Report.step)
        ):
            curves[tid].append((step, value))
    rows = []
    for c in children:
        index = c.replicate if c.replicate is not None else 0
        r = plan[index] if index < len(plan) else None
        rows.append(
            ReplicateRow(
                c,
                index,
                replicate_label(ev, index) if r is not None else f"replicate {index + 1}",
                r.fold if r is not None else None,
                r.seed if r is not None else None,
                curves[c.id],
            )
        )
    by_level: dict[float, list[float | None]] = {}
    for resource, index, value in s.execute(
        select(ReplicateScore.resource, ReplicateScore.replicate, ReplicateScore.value).where(
            ReplicateScore.parent_id == trial.id
        )
    ):
        cells = by_level.setdefault(resource, [None] * ev.replicates)
        if 0 <= index < len(cells):
            cells[index] = value
    levels = [
        LevelRow(
            lv.resource,
            lv.value,
            lv.std,
            lv.stderr,
            lv.n,
            lv.complete,
            by_level.get(lv.resource, [None] * ev.replicates),
        )
        for lv in s.scalars(
            select(ReplicateLevel)
            .where(ReplicateLevel.parent_id == trial.id)
            .order_by(ReplicateLevel.resource)
        )
    ]
    return ReplicateDetail(rows, levels)
