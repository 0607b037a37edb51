"""A study's views for its page: the optimization history (downsampled in SQL), learning curves
with their decisions as marks, and a sample of configurations; each rendered to JSON and kept
per process until the study's version moves.

- history is downsampled in SQL: trials are bucketed by ``number / width`` and each bucket
  gives its best and worst value (a GROUP BY, then a lookup of the trials holding them);
- curves and parameter samples pick their trials by index (the best by (study, state, value),
  running and paused ones by (study, state, ...), an even spread by ``number IN (...)``) and
  read only those trials' reports, by (trial, step).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from pydantic_core import from_json, to_json
from sqlalchemy import Float, Text, and_, case, func, or_, select
from sqlalchemy import cast as sa_cast
from sqlalchemy.orm import Session

from tuneyard.service.dashboard.base import FINAL, DashboardBase, one_of, study_key
from tuneyard.spec import CategoricalParam, StudySpec
from tuneyard.states import LogKind, TrialState
from tuneyard.store.models import DecisionLog, Report, Study, Trial

# History looks its buckets' extreme trials up by value while that finds at most this many
# rows per value looked for (plus the slack); beyond, values repeat and a pass is cheaper.
HISTORY_LOOKUP_FACTOR = 4
HISTORY_LOOKUP_SLACK = 100


class StudyViews(DashboardBase):
    # -- cached views ------------------------------------------------------------------------
    def view(self, kind: str, study_id: int, arg: int) -> bytes:
        """``kind`` ("history", "curves" or "params") of a study as JSON, kept per process
        until the study's version moves: a finished study is computed once, and viewers of a
        running one share each computation. One query checks the version.

        Rendered straight to JSON bytes (pydantic-core, and the stored text of each
        configuration passed through), without a tree of Python objects per answer: besides
        the time, thousands of short-lived containers per request would set off the garbage
        collector's full passes over the whole process."""
        compute = {"history": self._history, "curves": self._curves, "params": self._params}
        with self.kit.transaction() as s:
            study = self._study(s, study_id)
            token = self._token(study, self._latest_change(s, [study.id]).get(study.id))
            key = (*study_key(study), kind, arg)
            hit = self.caches.views.get(key)
            if hit is not None and hit[0] == token:
                return hit[1]
            # Read after the version: the data are at least as new as the version they are
            # filed under, so a cached view is never older than its key says.
            data = compute[kind](s, study, arg)
        body = _params_json(data) if kind == "params" else to_json(data)
        self.caches.views.put(key, (token, body))
        return body

    # -- history -----------------------------------------------------------------------------
    def history(self, study_id: int, points: int) -> dict[str, Any]:
        with self.kit.transaction() as s:
            return self._history(s, self._study(s, study_id), points)

    def _history(self, s: Session, study: Study, points: int) -> dict[str, Any]:
        """Finished trials with a value, at most ``points`` of them: when there are more, the
        trial numbers are cut in buckets of equal width and each bucket gives its best and its
        worst trial (plus the study's best trial). The best-so-far line is built from each
        bucket's best completed trial, so it is exact at the points where it improves, up to
        the bucket width.

        A GROUP BY per bucket read from the (study, state, number, value) index alone, then
        the trials at the buckets' extremes (their numbers and states)."""
        minimize = study.direction == "minimize"
        finished = and_(
            Trial.study_id == study.id,
            Trial.parent_id.is_(None),
            Trial.state.in_(FINAL),
            Trial.value.is_not(None),
        )
        buckets = max(1, (points - 1) // 2)
        width = max(1, math.ceil(max(1, study.trials_started) / buckets))
        bucket = (Trial.number // width).label("b")
        completed_value = case((Trial.state == TrialState.COMPLETED, Trial.value))
        agg = (
            select(
                bucket,
                func.count().label("n"),
                func.min(Trial.value).label("lo"),
                func.max(Trial.value).label("hi"),
                (func.min if minimize else func.max)(completed_value).label("cb"),
            )
            .where(finished)
            .group_by(bucket)
        )
        extremes = {int(b): (int(n), lo, hi, cb) for b, n, lo, hi, cb in s.execute(agg)}
        total = sum(e[0] for e in extremes.values())
        if total <= points:
            rows = s.execute(
                select(Trial.number, Trial.value, Trial.state)
                .where(finished)
                .order_by(Trial.number)
            ).all()
            pts = [(int(n), float(v or 0.0), st) for n, v, st in rows]
            line = _best_line([(n, v) for n, v, st in pts if st == TrialState.COMPLETED], minimize)
            return _history(study, total, 1, pts, line)
        hits = self._extreme_trials(s, finished, agg, width, extremes)
        lo: dict[int, tuple[int, float, str]] = {}
        hi: dict[int, tuple[int, float, str]] = {}
        cb: dict[int, tuple[int, float]] = {}
        # In number order, so a tie goes to the lowest number.
        for n, v, st in hits:
            b = int(n) // width
            if b not in extremes or v is None:
                continue
            _, blo, bhi, bcb = extremes[b]
            rec = (int(n), float(v), st)
            if v == blo:
                lo.setdefault(b, rec)
            if v == bhi:
                hi.setdefault(b, rec)
            if st == TrialState.COMPLETED and v == bcb:
                cb.setdefault(b, (int(n), float(v)))
        chosen = {rec[0]: rec for rec in [*lo.values(), *hi.values()]}
        line = _best_line(sorted(cb.values()), minimize)
        if line and line[-1][0] not in chosen:
            chosen[line[-1][0]] = (line[-1][0], line[-1][1], TrialState.COMPLETED)
        return _history(study, total, width, sorted(chosen.values()), line)

    def _extreme_trials(
        self,
        s: Session,
        finished: Any,
        agg: Any,
        width: int,
        extremes: dict[int, tuple[int, Any, Any, Any]],
    ) -> Sequence[Any]:
        """(number, value, state) of the trials holding the buckets' extreme values, in
        number order. On PostgreSQL they are looked up by value through the (study, value)
        index; when values repeat across the study so much that the lookup finds far more rows
        than it looks for (a metric with few distinct values), and on other backends, by one
        more pass over the buckets, joined to the extremes."""
        values = sorted({v for e in extremes.values() for v in e[1:] if v is not None})
        if s.get_bind().dialect.name == "postgresql":
            cap = HISTORY_LOOKUP_FACTOR * len(values) + HISTORY_LOOKUP_SLACK
            hits = s.execute(
                select(Trial.number, Trial.value, Trial.state)
                .where(finished, one_of(s, Trial.value, values, Float))
                .order_by(Trial.number)
                .limit(cap + 1)
            ).all()
            if len(hits) <= cap:
                return hits
        sub = agg.subquery()
        return s.execute(
            select(Trial.number, Trial.value, Trial.state)
            .join(sub, (Trial.number // width) == sub.c.b)
            .where(
                finished,
                or_(
                    Trial.value == sub.c.lo,
                    Trial.value == sub.c.hi,
                    and_(Trial.state == TrialState.COMPLETED, Trial.value == sub.c.cb),
                ),
            )
            .order_by(Trial.number)
        ).all()

    # -- picking trials ------------------------------------------------------------------------
    def _pick(
        self,
        s: Session,
        study: Study,
        limit: int,
        best_share: float,
        active_share: float,
        columns: Sequence[Any],
    ) -> list[Any]:
        """At most ``limit`` trials (rows of ``columns``, the first being Trial.id and the
        second Trial.number): the best completed ones, the running and paused ones, then an
        even spread of the rest by number. Each part is one indexed query."""
        picked: dict[int, Any] = {}

        def add(rows: Iterable[Any], most: int) -> None:
            n = 0
            for row in rows:
                if len(picked) >= limit or n >= most:
                    return
                if row[0] not in picked:
                    picked[row[0]] = row
                    n += 1

        order = self._better(study)
        q = select(*columns).where(Trial.study_id == study.id, Trial.parent_id.is_(None))
        n_best = max(1, int(limit * best_share))
        add(
            s.execute(
                q.where(Trial.state == TrialState.COMPLETED, Trial.value.is_not(None))
                .order_by(order(Trial.value), Trial.id)
                .limit(n_best)
            ),
            n_best,
        )
        n_active = int(limit * active_share)
        if n_active > 0:
            before = len(picked)
            add(
                s.execute(
                    q.where(Trial.state == TrialState.RUNNING)
                    .order_by(Trial.number.desc())
                    .limit(n_active)
                ),
                n_active,
            )
            room = n_active - (len(picked) - before)
            if room > 0:
                # Paused trials waiting for a promotion: the best first.
                add(
                    s.execute(
                        q.where(Trial.state == TrialState.PAUSED, Trial.value.is_not(None))
                        .order_by(order(Trial.value), Trial.id)
                        .limit(room)
                    ),
                    room,
                )
        rest = limit - len(picked)
        numbers = _spread(study.trials_started, rest, (row[1] for row in picked.values()))
        # Chunked, so SQLite's limit on bound variables is never reached.
        for i in range(0, len(numbers), 900):
            add(s.execute(q.where(one_of(s, Trial.number, numbers[i : i + 900]))), limit)
        return sorted(picked.values(), key=lambda row: row[1])

    # -- curves ------------------------------------------------------------------------------
    def curves(self, study_id: int, limit: int) -> dict[str, Any]:
        with self.kit.transaction() as s:
            return self._curves(s, self._study(s, study_id), limit)

    def _curves(self, s: Session, study: Study, limit: int) -> dict[str, Any]:
        """Learning curves of at most ``limit`` trials with their decisions as marks."""
        resources = list(self.kit.context(study).scheduler.resources)
        trials = self._pick(
            s,
            study,
            limit,
            best_share=0.25,
            active_share=0.25,
            columns=(Trial.id, Trial.number, Trial.state, Trial.value),
        )
        ids = [t[0] for t in trials]
        reports: dict[int, list[tuple[float, float | None, str]]] = {i: [] for i in ids}
        decisions: dict[int, list[Any]] = {i: [] for i in ids}
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            for tid, step, value, reason in s.execute(
                select(Report.trial_id, Report.step, Report.value, Report.reason)
                .where(one_of(s, Report.trial_id, chunk))
                .order_by(Report.trial_id, Report.step)
            ):
                reports[tid].append((step, value, reason))
            for d in s.execute(
                select(
                    DecisionLog.trial_id,
                    DecisionLog.kind,
                    DecisionLog.reason,
                    DecisionLog.rung,
                    DecisionLog.resource,
                )
                .where(one_of(s, DecisionLog.trial_id, chunk), DecisionLog.kind != LogKind.START)
                .order_by(DecisionLog.trial_id, DecisionLog.id)
            ):
                decisions[d[0]].append(d)
        out = []
        for tid, number, state, value in trials:
            reps = reports[tid]
            out.append(
                {
                    "id": tid,
                    "number": number,
                    "state": state,
                    "value": value,
                    "steps": [r[0] for r in reps],
                    "values": [r[1] for r in reps],
                    "marks": _marks(decisions[tid], reps, resources),
                }
            )
        return {
            "rungs": resources,
            "total": study.trials_started,
            "shown": len(out),
            "trials": out,
        }

    # -- params ------------------------------------------------------------------------------
    def params(self, study_id: int, limit: int) -> dict[str, Any]:
        with self.kit.transaction() as s:
            out = self._params(s, self._study(s, study_id), limit)
        rows = out.pop("rows")
        configs = from_json("[" + ",".join(r[4] for r in rows) + "]") if rows else []
        out["trials"] = [
            {"id": i, "number": n, "state": st, "value": v, "params": p}
            for (i, n, st, v, _), p in zip(rows, configs, strict=True)
        ]
        return out

    def _params(self, s: Session, study: Study, limit: int) -> dict[str, Any]:
        """Configurations of at most ``limit`` trials, for parallel coordinates and slices;
        under "rows", (id, number, state, value, params as JSON text)."""
        spec = StudySpec.from_stored(study.spec)
        rows = self._pick(
            s,
            study,
            limit,
            best_share=0.1,
            active_share=0.0,
            columns=(Trial.id, Trial.number, Trial.state, Trial.value, sa_cast(Trial.params, Text)),
        )
        return {
            "space": space_items(spec),
            "total": study.trials_started,
            "shown": len(rows),
            "rows": rows,
        }


def _spread(total: int, k: int, exclude: Iterable[int] = ()) -> list[int]:
    """About ``k`` trial numbers spread evenly over ``0 .. total - 1``, minus ``exclude``."""
    if total <= 0 or k <= 0:
        return []
    skip = set(exclude)
    if total - len(skip) <= k:
        return [n for n in range(total) if n not in skip]
    picks = np.unique(np.linspace(0, total - 1, k + len(skip)).round().astype(int))
    kept = [int(n) for n in picks if int(n) not in skip]
    if len(kept) > k:
        kept = [kept[i] for i in np.unique(np.linspace(0, len(kept) - 1, k).round().astype(int))]
    return kept


def _params_json(data: dict[str, Any]) -> bytes:
    """The params view as JSON, each trial's configuration spliced in as the database
    stores it (JSON text written by the service, so it needs no parsing here)."""
    head = to_json({k: v for k, v in data.items() if k != "rows"})
    items = ",".join(
        f'{{"id":{i},"number":{n},"state":{json.dumps(st)},"value":{_number(v)},"params":{p}}}'
        for i, n, st, v, p in data["rows"]
    )
    return head[:-1] + b',"trials":[' + items.encode() + b"]}"


def _number(v: float | None) -> str:
    return repr(float(v)) if v is not None and math.isfinite(v) else "null"


def _history(
    study: Study,
    total: int,
    width: int,
    pts: list[tuple[int, float, str]],
    line: list[tuple[int, float]],
) -> dict[str, Any]:
    return {
        "direction": study.direction,
        "total": total,
        "downsampled": width > 1,
        "bucket_width": width,
        "points": [{"number": n, "value": v, "state": st} for n, v, st in pts],
        "best": [{"number": n, "value": v} for n, v in line],
    }


def _best_line(points: Iterable[tuple[int, float]], minimize: bool) -> list[tuple[int, float]]:
    """The best-so-far step line of (number, value) points in number order: the points where
    it improves."""
    out: list[tuple[int, float]] = []
    for n, v in points:
        if not out or (v < out[-1][1] if minimize else v > out[-1][1]):
            out.append((n, v))
    return out


def _marks(
    decisions: list[Any],
    reports: list[tuple[float, float | None, str]],
    resources: list[float],
) -> list[dict[str, Any]]:
    """Each decision at the step it was taken: the report that carried it (same reason), else
    the rung it was taken at, else the resource it names, else the trial's last report."""
    by_reason: dict[str, float] = {}
    for at, _, reason in reports:
        by_reason.setdefault(reason, at)
    last = reports[-1][0] if reports else None
    out = []
    for _, kind, reason, rung, resource in decisions:
        step: float | None
        if reason in by_reason:
            step = by_reason[reason]
        elif rung is not None and 0 <= rung < len(resources):
            step = resources[rung]
        elif resource is not None and kind != LogKind.PROMOTE:
            step = resource
        else:
            step = last
        out.append({"step": step, "kind": kind, "reason": reason})
    return out


def space_items(spec: StudySpec) -> list[dict[str, Any]]:
    out = []
    for name, p in spec.space.items():
        item: dict[str, Any] = {"name": name, "type": p.type, "when": p.when}
        if isinstance(p, CategoricalParam):
            item.update(low=None, high=None, log=False, step=None, choices=list(p.choices))
        else:
            item.update(low=p.low, high=p.high, log=p.log, step=p.step, choices=None)
        out.append(item)
    return out
