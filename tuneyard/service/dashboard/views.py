"""What the dashboard reads: study cards, optimization history, learning curves, a sample of
configurations, parameter importance, a trial's attempts, workers and a study's version.

Every answer comes from bounded, indexed queries, so a study of 100,000 trials with 27 reports
each costs about what a small one does beyond the aggregation done in SQL:

- history is downsampled in SQL: trials are bucketed by ``number / width`` and each bucket
  gives its best and worst value (a GROUP BY, then a lookup of the trials holding them);
- curves and parameter samples pick their trials by index (the best by (study, state, value),
  running and paused ones by (study, state, ...), an even spread by ``number IN (...)``) and
  read only those trials' reports, by (trial, step);
- importance is fitted on at most ``IMPORTANCE_SAMPLE`` trials and cached per study;
- the version stamp of a study is one query: its row and max(updated_at) of its trials.

Caches here are per process and only caches: each entry is keyed by what it was computed from,
as read from the database, so several API processes serving one database stay correct.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar
from weakref import WeakKeyDictionary

import numpy as np
from pydantic_core import from_json, to_json
from sqlalchemy import (
    BigInteger,
    Float,
    Text,
    and_,
    any_,
    bindparam,
    case,
    func,
    or_,
    select,
)
from sqlalchemy import cast as sa_cast
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from tuneyard.errors import NotFound
from tuneyard.service.context import Toolkit
from tuneyard.service.studies import StudyService, TrialDetail, study_page
from tuneyard.service.transitions import FINAL_STATES, TRIAL_STATES
from tuneyard.service.workers import LOST_AFTER_LEASES
from tuneyard.spec import CategoricalParam, StudySpec
from tuneyard.store.models import (
    Attempt,
    DecisionLog,
    Report,
    Rung,
    RungEntry,
    Study,
    Trial,
    Worker,
)

FINAL = tuple(sorted(FINAL_STATES))
# Importance is fitted on at most this many trials, and needs at least MIN_IMPORTANCE_TRIALS.
IMPORTANCE_SAMPLE = 2000
MIN_IMPORTANCE_TRIALS = 8
# Importance reads the values at the highest rung at least this many trials reached.
IMPORTANCE_RUNG_TRIALS = 50
# A cached importance is kept at least this long, and after that until the trials it would be
# fitted on grew by IMPORTANCE_GROWTH (or its rung changed).
IMPORTANCE_MIN_AGE_S = 10.0
IMPORTANCE_GROWTH = 0.02
BUSY_WINDOW = timedelta(hours=1)
# History looks its buckets' extreme trials up by value while that finds at most this many
# rows per value looked for (plus the slack); beyond, values repeat and a pass is cheaper.
HISTORY_LOOKUP_FACTOR = 4
HISTORY_LOOKUP_SLACK = 100
# Rendered history, curves and params kept per process (about 0.5 MB for a study's params).
VIEW_CACHE_BYTES = 64 * 1024**2
# Metrics a worker or an objective may report that the trial detail shows as peak memory.
PEAK_MEMORY_KEYS = ("peak_memory_mib", "gpu_peak_memory_mib", "max_memory_mib")

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Lru(Generic[K, V]):
    """A small thread-safe LRU map."""

    def __init__(self, size: int) -> None:
        self._data: OrderedDict[K, V] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            v = self._data.get(key)
            if v is not None:
                self._data.move_to_end(key)
            return v

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


class _SizedLru:
    """A thread-safe LRU map of (version, bytes) bounded by the total size of the bytes."""

    def __init__(self, max_bytes: int) -> None:
        self._data: OrderedDict[Hashable, tuple[str, bytes]] = OrderedDict()
        self._max = max_bytes
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> tuple[str, bytes] | None:
        with self._lock:
            v = self._data.get(key)
            if v is not None:
                self._data.move_to_end(key)
            return v

    def put(self, key: Hashable, value: tuple[str, bytes], size: int) -> None:
        if size > self._max:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._size -= len(old[1])
            self._data[key] = value
            self._size += size
            while self._size > self._max:
                _, dropped = self._data.popitem(last=False)
                self._size -= len(dropped[1])


@dataclass(frozen=True)
class _Aggregates:
    version: str
    counts: dict[str, int]
    budget_used: float


@dataclass(frozen=True)
class _Importance:
    basis: tuple[Any, ...]
    computed: float  # time.monotonic()
    result: dict[str, Any]


@dataclass
class _Caches:
    # Keyed by (study id, creation time): SQLite may give a deleted study's id to a new one.
    aggregates: _Lru[tuple[int, float], _Aggregates] = field(default_factory=lambda: _Lru(1024))
    importance: _Lru[tuple[int, float], _Importance] = field(default_factory=lambda: _Lru(256))
    importance_lock: threading.Lock = field(default_factory=threading.Lock)
    views: _SizedLru = field(default_factory=lambda: _SizedLru(VIEW_CACHE_BYTES))


_CACHES: WeakKeyDictionary[Toolkit, _Caches] = WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _caches(kit: Toolkit) -> _Caches:
    with _CACHES_LOCK:
        c = _CACHES.get(kit)
        if c is None:
            c = _CACHES[kit] = _Caches()
        return c


def _key(study: Study) -> tuple[int, float]:
    return (study.id, study.created_at.timestamp())


@dataclass(frozen=True)
class Version:
    study_id: int
    state: str
    token: str


@dataclass(frozen=True)
class Card:
    study: Study
    counts: dict[str, int]
    budget_used: float
    best: dict[str, Any] | None
    version: str
    age_s: float


def version_token(
    state: str,
    trials_started: int,
    active: int,
    study_updated: datetime | None,
    trials_updated: datetime | None,
) -> str:
    """An opaque stamp that changes whenever the study or any of its trials does."""
    parts = (
        state,
        trials_started,
        active,
        study_updated.timestamp() if study_updated else 0.0,
        trials_updated.timestamp() if trials_updated else 0.0,
    )
    return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()


def _one_of(s: Session, column: Any, values: Sequence[Any], kind: Any = BigInteger) -> Any:
    """``column IN values``: on PostgreSQL one array parameter, sent as the text of an array
    literal (a list of thousands of bound parameters, or an array adapted element by element,
    costs more to build than the lookup itself; ``repr`` of a float reads back exactly), a
    plain IN elsewhere."""
    if s.get_bind().dialect.name == "postgresql":
        literal = "{" + ",".join(map(repr, values)) + "}"
        return column == any_(sa_cast(bindparam(None, literal, type_=Text), ARRAY(kind)))
    return column.in_(list(values))


def _seconds(s: Session, start: Any, end: Any) -> Any:
    """``end - start`` in seconds, in SQL."""
    if s.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return func.extract("epoch", end - start)


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


class DashboardService:
    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit
        self.caches = _caches(kit)

    # -- shared ------------------------------------------------------------------------------
    def _study(self, s: Session, study_id: int) -> Study:
        study = s.get(Study, study_id)
        if study is None:
            raise NotFound(f"study {study_id} does not exist")
        return study

    def _better(self, study: Study) -> Callable[[Any], Any]:
        return (lambda c: c.asc()) if study.direction == "minimize" else (lambda c: c.desc())

    def _latest_change(self, s: Session, study_ids: Sequence[int]) -> dict[int, datetime | None]:
        """max(updated_at) of each study's trials: one index probe per study."""
        latest = (
            select(func.max(Trial.updated_at))
            .where(Trial.study_id == Study.id)
            .correlate(Study)
            .scalar_subquery()
        )
        rows = s.execute(select(Study.id, latest).where(Study.id.in_(study_ids))).all()
        return {int(i): t for i, t in rows}

    def _token(self, study: Study, latest: datetime | None) -> str:
        return version_token(
            study.state, study.trials_started, study.active, study.updated_at, latest
        )

    def _aggregates(self, s: Session, studies: Sequence[Study]) -> dict[int, _Aggregates]:
        """Trials by state and the resource trained, per study; recomputed only for the studies
        whose version moved since this process last computed them."""
        if not studies:
            return {}
        latest = self._latest_change(s, [st.id for st in studies])
        out: dict[int, _Aggregates] = {}
        stale: dict[int, str] = {}
        for st in studies:
            token = self._token(st, latest.get(st.id))
            hit = self.caches.aggregates.get(_key(st))
            if hit is not None and hit.version == token:
                out[st.id] = hit
            else:
                stale[st.id] = token
        if stale:
            counts: dict[int, dict[str, int]] = {i: dict.fromkeys(TRIAL_STATES, 0) for i in stale}
            used: dict[int, float] = dict.fromkeys(stale, 0.0)
            rows = s.execute(
                select(
                    Trial.study_id,
                    Trial.state,
                    func.count(),
                    func.coalesce(func.sum(Trial.resource), 0.0),
                )
                .where(Trial.study_id.in_(list(stale)))
                .group_by(Trial.study_id, Trial.state)
            )
            for sid, state, n, r in rows:
                counts[sid][state] = int(n)
                used[sid] += float(r or 0.0)
            by_id = {st.id: st for st in studies}
            for sid, token in stale.items():
                agg = _Aggregates(token, counts[sid], used[sid])
                self.caches.aggregates.put(_key(by_id[sid]), agg)
                out[sid] = agg
        return out

    def _bests(self, s: Session, studies: Sequence[Study]) -> dict[int, dict[str, Any]]:
        """Each study's best completed trial: one probe of (study, state, value) per study,
        in two queries whatever the number of studies."""

        def first(order: Any) -> Any:
            return (
                select(Trial.id)
                .where(
                    Trial.study_id == Study.id,
                    Trial.state == "completed",
                    Trial.value.is_not(None),
                )
                .order_by(order, Trial.id)
                .limit(1)
                .correlate(Study)
                .scalar_subquery()
            )

        best = case(
            (Study.direction == "minimize", first(Trial.value.asc())),
            else_=first(Trial.value.desc()),
        )
        ids = [
            i
            for (i,) in s.execute(select(best).where(Study.id.in_([st.id for st in studies])))
            if i is not None
        ]
        rows = s.execute(
            select(Trial.id, Trial.study_id, Trial.number, Trial.value).where(Trial.id.in_(ids))
        )
        return {
            int(sid): {"trial_id": int(tid), "number": int(n), "value": float(v or 0.0)}
            for tid, sid, n, v in rows
        }

    def _cards(self, s: Session, studies: Sequence[Study]) -> list[Card]:
        aggs = self._aggregates(s, studies)
        bests = self._bests(s, studies) if studies else {}
        now = self.kit.clock()
        return [
            Card(
                study=st,
                counts=aggs[st.id].counts,
                budget_used=aggs[st.id].budget_used,
                best=bests.get(st.id),
                version=aggs[st.id].version,
                age_s=max(0.0, (now - st.created_at).total_seconds()),
            )
            for st in studies
        ]

    # -- studies -----------------------------------------------------------------------------
    def studies(self, limit: int, cursor: str | None) -> tuple[list[Card], str | None]:
        with self.kit.transaction() as s:
            rows, nxt = study_page(s, limit, cursor)
            return self._cards(s, rows), nxt

    def study(self, study_id: int) -> tuple[Card, list[float]]:
        """A study's card and the resource of each rung."""
        with self.kit.transaction() as s:
            study = self._study(s, study_id)
            (card,) = self._cards(s, [study])
            return card, list(self.kit.context(study).scheduler.resources)

    def version(self, study_id: int) -> Version:
        """One query: the study's row and the latest change to any of its trials."""
        latest = (
            select(func.max(Trial.updated_at)).where(Trial.study_id == study_id).scalar_subquery()
        )
        with self.kit.transaction() as s:
            row = s.execute(
                select(
                    Study.state,
                    Study.trials_started,
                    Study.active,
                    Study.updated_at,
                    latest,
                ).where(Study.id == study_id)
            ).first()
            if row is None:
                raise NotFound(f"study {study_id} does not exist")
            state, started, active, updated, trials_updated = row
            return Version(
                study_id, state, version_token(state, started, active, updated, trials_updated)
            )

    def counts(self, study_id: int) -> tuple[Version, dict[str, int]]:
        """The version and the trials by state (cached per version)."""
        with self.kit.transaction() as s:
            study = self._study(s, study_id)
            agg = self._aggregates(s, [study])[study.id]
            return Version(study.id, study.state, agg.version), agg.counts

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
            key = (*_key(study), kind, arg)
            hit = self.caches.views.get(key)
            if hit is not None and hit[0] == token:
                return hit[1]
            # Read after the version: the data are at least as new as the version they are
            # filed under, so a cached view is never older than its key says.
            data = compute[kind](s, study, arg)
        body = _params_json(data) if kind == "params" else to_json(data)
        self.caches.views.put(key, (token, body), len(body))
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
            Trial.study_id == study.id, Trial.state.in_(FINAL), Trial.value.is_not(None)
        )
        buckets = max(1, (points - 1) // 2)
        width = max(1, math.ceil(max(1, study.trials_started) / buckets))
        bucket = (Trial.number // width).label("b")
        completed_value = case((Trial.state == "completed", Trial.value))
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
            line = _best_line([(n, v) for n, v, st in pts if st == "completed"], minimize)
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
            if st == "completed" and v == bcb:
                cb.setdefault(b, (int(n), float(v)))
        chosen = {rec[0]: rec for rec in [*lo.values(), *hi.values()]}
        line = _best_line(sorted(cb.values()), minimize)
        if line and line[-1][0] not in chosen:
            chosen[line[-1][0]] = (line[-1][0], line[-1][1], "completed")
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
                .where(finished, _one_of(s, Trial.value, values, Float))
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
                    and_(Trial.state == "completed", Trial.value == sub.c.cb),
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
        q = select(*columns).where(Trial.study_id == study.id)
        n_best = max(1, int(limit * best_share))
        add(
            s.execute(
                q.where(Trial.state == "completed", Trial.value.is_not(None))
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
                    q.where(Trial.state == "running").order_by(Trial.number.desc()).limit(n_active)
                ),
                n_active,
            )
            room = n_active - (len(picked) - before)
            if room > 0:
                # Paused trials waiting for a promotion: the best first.
                add(
                    s.execute(
                        q.where(Trial.state == "paused", Trial.value.is_not(None))
                        .order_by(order(Trial.value), Trial.id)
                        .limit(room)
                    ),
                    room,
                )
        rest = limit - len(picked)
        numbers = _spread(study.trials_started, rest, (row[1] for row in picked.values()))
        # Chunked, so SQLite's limit on bound variables is never reached.
        for i in range(0, len(numbers), 900):
            add(s.execute(q.where(_one_of(s, Trial.number, numbers[i : i + 900]))), limit)
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
                .where(_one_of(s, Report.trial_id, chunk))
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
                .where(_one_of(s, DecisionLog.trial_id, chunk), DecisionLog.kind != "start")
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

    # -- importance --------------------------------------------------------------------------
    def importance(self, study_id: int) -> dict[str, Any]:
        """Importance of each parameter, cached per study: recomputed once the trials it is
        fitted on have grown by IMPORTANCE_GROWTH, and at most every IMPORTANCE_MIN_AGE_S."""
        import time

        with self.kit.transaction() as s:
            study = self._study(s, study_id)
            key = _key(study)
            basis = self._importance_basis(s, study)
        hit = self.caches.importance.get(key)
        now = time.monotonic()
        if hit is not None and not _stale(hit, basis, now):
            return hit.result
        with self.caches.importance_lock:
            hit = self.caches.importance.get(key)
            if hit is not None and not _stale(hit, basis, time.monotonic()):
                return hit.result
            with self.kit.transaction() as s:
                study = self._study(s, study_id)
                basis = self._importance_basis(s, study)
                result = self._fit_importance(s, study, basis)
            self.caches.importance.put(key, _Importance(basis, time.monotonic(), result))
            return result

    def _importance_basis(self, s: Session, study: Study) -> tuple[Any, ...]:
        """What an importance is fitted on: ("rung", k, resource, entries) for the highest rung
        that IMPORTANCE_RUNG_TRIALS trials reached (or, failing that, the rung most reached),
        else ("completed", count)."""
        rows = s.execute(
            select(Rung.rung, func.sum(Rung.entries), func.min(Rung.resource))
            .where(Rung.study_id == study.id)
            .group_by(Rung.rung)
            .order_by(Rung.rung)
        ).all()
        rungs = [(int(k), int(n or 0), float(r)) for k, n, r in rows]
        enough = [r for r in rungs if r[1] >= IMPORTANCE_RUNG_TRIALS]
        if enough:
            k, n, r = enough[-1]
            return ("rung", k, r, n)
        most = max(rungs, key=lambda r: r[1], default=None)
        if most is not None and most[1] >= MIN_IMPORTANCE_TRIALS:
            return ("rung", most[0], most[2], most[1])
        completed = s.scalar(
            select(func.count())
            .select_from(Trial)
            .where(
                Trial.study_id == study.id,
                Trial.state == "completed",
                Trial.value.is_not(None),
            )
        )
        return ("completed", int(completed or 0))

    def _fit_importance(self, s: Session, study: Study, basis: tuple[Any, ...]) -> dict[str, Any]:
        spec = StudySpec.from_stored(study.spec)
        if basis[0] == "rung":
            _, k, resource, n = basis
            ranked = (
                select(
                    RungEntry.trial_id.label("tid"),
                    RungEntry.score.label("y"),
                    func.row_number().over(order_by=(RungEntry.score, RungEntry.id)).label("rn"),
                )
                .where(RungEntry.study_id == study.id, RungEntry.rung == k)
                .subquery()
            )
            every = max(1, math.ceil(n / IMPORTANCE_SAMPLE))
            rows = s.execute(
                select(sa_cast(Trial.params, Text), ranked.c.y)
                .join(ranked, Trial.id == ranked.c.tid)
                .where((ranked.c.rn - 1) % every == 0)
            ).all()
            source = f"values at rung {k} (resource {resource:g})"
        else:
            resource = None
            n = basis[1]
            ranked = (
                select(
                    sa_cast(Trial.params, Text).label("params"),
                    Trial.value.label("y"),
                    func.row_number().over(order_by=(Trial.value, Trial.id)).label("rn"),
                )
                .where(
                    Trial.study_id == study.id,
                    Trial.state == "completed",
                    Trial.value.is_not(None),
                )
                .subquery()
            )
            every = max(1, math.ceil(n / IMPORTANCE_SAMPLE))
            rows = s.execute(
                select(ranked.c.params, ranked.c.y).where((ranked.c.rn - 1) % every == 0)
            ).all()
            source = "values of completed trials"
        configs = from_json("[" + ",".join(r[0] for r in rows) + "]") if rows else []
        y = np.array([float(r[1]) for r in rows])
        scores = first_order_importance(spec, configs, y)
        total = sum(scores.values())
        ranked_params = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "method": (
                "first-order variance decomposition (fANOVA-style) of the ranked "
                f"{source}: the share of variance explained by each parameter's mean per "
                "quantile bin (per choice for a categorical, inactive as its own bin), "
                "corrected for the number of bins (omega squared); importance is that share "
                "normalised to sum to 1"
            ),
            "params": [
                {
                    "name": name,
                    "importance": (v / total) if total > 0 else 0.0,
                    "variance_explained": v,
                }
                for name, v in ranked_params
            ],
            "trials_used": len(configs),
            "resource": resource,
            "computed_at": self.kit.clock(),
        }

    # -- a trial -----------------------------------------------------------------------------
    def trial(self, trial_id: int) -> tuple[TrialDetail, list[dict[str, Any]], dict[str, Any]]:
        """A trial as the public API gives it, its attempts each with its worker's host and
        GPUs (from the worker registry) and duration, and what the trial used."""
        detail = StudyService(self.kit).trial(trial_id)
        now = self.kit.clock()
        names = sorted({a.worker for a in detail.attempts if a.worker})
        with self.kit.transaction() as s:
            workers = {
                w.name: (w.host, list(w.gpus))
                for w in s.scalars(select(Worker).where(Worker.name.in_(names)))
            }
        peak = None
        for r in detail.reports:
            for key in PEAK_MEMORY_KEYS:
                v = r.metrics.get(key) if isinstance(r.metrics, dict) else None
                if isinstance(v, int | float) and math.isfinite(v):
                    peak = max(peak or 0.0, float(v))
        out = []
        wall = 0.0
        gpus: list[dict[str, Any]] = []
        for a in detail.attempts:
            host, used = workers.get(a.worker or "", (None, []))
            end = a.ended_at or (now if a.state == "running" else None)
            duration = max(0.0, (end - a.started_at).total_seconds()) if end else None
            wall += duration or 0.0
            gpus += [g for g in used if g not in gpus]
            out.append(
                {
                    "number": a.number,
                    "worker": a.worker,
                    "host": host,
                    "gpus": used,
                    "state": a.state,
                    "started_at": a.started_at,
                    "ended_at": a.ended_at,
                    "duration_s": duration,
                    "resource_from": a.resource_from,
                    "resource_to": a.resource_to,
                    "error": a.error,
                }
            )
        resources = {
            "wall_time_s": wall,
            "resource_trained": detail.trial.resource,
            "gpus": gpus,
            "peak_memory_mib": peak,
        }
        return detail, out, resources

    # -- workers -----------------------------------------------------------------------------
    def workers(self, limit: int) -> list[dict[str, Any]]:
        """Every registered worker (stopped ones too), with the trial it runs and the share of
        the last hour it spent running trials (of its life, when that is shorter)."""
        now = self.kit.clock()
        start = now - BUSY_WINDOW
        lost_after = timedelta(seconds=self.kit.settings.lease_seconds * LOST_AFTER_LEASES)
        with self.kit.transaction() as s:
            rows = s.execute(
                select(Worker, Trial.number, Trial.study_id)
                .outerjoin(Trial, Trial.id == Worker.trial_id)
                .order_by(Worker.name)
                .limit(limit)
            ).all()
            inside, edges = self._attempts_in_window(s, [w.name for w, _, _ in rows], start, now)
        out = []
        for w, number, study_id in rows:
            state = w.state
            if state == "active" and w.last_seen_at < now - lost_after:
                state = "lost"
            online = state == "active"
            # The part of the last hour the worker was there: from its registration (if
            # later) to now, or to when it stopped or was last heard of.
            end = now if online else min(now, w.stopped_at or w.last_seen_at)
            begin = max(start, w.started_at)
            busy = None
            if end > begin:
                secs = inside.get(w.name, 0.0)
                for a, b in edges.get(w.name, []):
                    if a >= w.started_at:  # not an attempt left open by an earlier life
                        lo, hi = max(a, begin), min(b or end, end)
                        secs += max(0.0, (hi - lo).total_seconds())
                busy = min(1.0, max(0.0, secs / (end - begin).total_seconds()))
            out.append(
                {
                    "id": w.id,
                    "name": w.name,
                    "host": w.host,
                    "pid": w.pid,
                    "queue": w.queue,
                    "slots": w.slots,
                    "state": state,
                    "online": online,
                    "gpus": w.gpus,
                    "trial_id": w.trial_id if online else None,
                    "trial_number": number if online else None,
                    "study_id": study_id if online else None,
                    "started_at": w.started_at,
                    "last_seen_at": w.last_seen_at,
                    "stopped_at": w.stopped_at,
                    "busy_fraction": busy,
                }
            )
        return out

    def _attempts_in_window(
        self, s: Session, names: list[str], start: datetime, now: datetime
    ) -> tuple[dict[str, float], dict[str, list[tuple[datetime, datetime | None]]]]:
        """Per worker: the seconds of its attempts that started and ended within [start, now]
        since it registered (summed in SQL, one index range per worker), and the attempts at
        the window's edges: still open (or ending later), and the last one started before it
        (one index probe per worker)."""
        inside: dict[str, float] = {}
        edges: dict[str, list[tuple[datetime, datetime | None]]] = {n: [] for n in names}
        for i in range(0, len(names), 500):
            chunk = names[i : i + 500]
            for name, secs in s.execute(
                select(Attempt.worker, func.sum(_seconds(s, Attempt.started_at, Attempt.ended_at)))
                .join(Worker, Worker.name == Attempt.worker)
                .where(
                    Worker.name.in_(chunk),
                    Attempt.started_at >= start,
                    Attempt.started_at >= Worker.started_at,
                    Attempt.ended_at <= now,
                )
                .group_by(Attempt.worker)
            ):
                inside[name] = float(secs or 0.0)
            for name, a, b in s.execute(
                select(Attempt.worker, Attempt.started_at, Attempt.ended_at).where(
                    Attempt.worker.is_not(None),
                    Attempt.worker.in_(chunk),
                    Attempt.started_at >= start,
                    Attempt.started_at < now,
                    or_(Attempt.ended_at.is_(None), Attempt.ended_at > now),
                )
            ):
                edges[str(name)].append((a, b))
            before = (
                select(Worker.name.label("w"), _last_start_before(start).label("t"))
                .where(Worker.name.in_(chunk))
                .subquery()
            )
            for name, a, b in s.execute(
                select(Attempt.worker, Attempt.started_at, Attempt.ended_at).join(
                    before,
                    and_(Attempt.worker == before.c.w, Attempt.started_at == before.c.t),
                )
            ):
                if b is None or b > start:
                    edges[str(name)].append((a, b))
        return inside, edges


def _last_start_before(when: datetime) -> Any:
    return (
        select(func.max(Attempt.started_at))
        .where(Attempt.worker == Worker.name, Attempt.started_at < when)
        .correlate(Worker)
        .scalar_subquery()
    )


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
        elif resource is not None and kind != "promote":
            step = resource
        else:
            step = last
        out.append({"step": step, "kind": kind, "reason": reason})
    return out


def _stale(hit: _Importance, basis: tuple[Any, ...], now: float) -> bool:
    if now - hit.computed < IMPORTANCE_MIN_AGE_S:
        return False
    if hit.basis[:-1] != basis[:-1]:
        return True
    before, after = int(hit.basis[-1]), int(basis[-1])
    return abs(after - before) > max(0, int(IMPORTANCE_GROWTH * before))


# -- the space and importance --------------------------------------------------------------------
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


def _bins(values: list[Any], param: Any, n_bins: int) -> np.ndarray:
    """A bin label per trial: quantile bins of a number, one per choice of a categorical; a
    trial where the parameter is inactive (absent) gets a bin of its own."""
    labels = np.zeros(len(values), dtype=np.int64)
    present = np.array([v is not None for v in values])
    if isinstance(param, CategoricalParam):
        index: dict[str, int] = {}
        for i, v in enumerate(values):
            if v is not None:
                labels[i] = index.setdefault(repr(v), len(index))
        labels[~present] = len(index)
        return labels
    nums = np.array([float(v) if v is not None else np.nan for v in values])
    active = nums[present]
    if active.size:
        distinct = np.unique(active)
        if distinct.size <= n_bins:
            labels[present] = np.searchsorted(distinct, active)
        else:
            edges = np.unique(np.quantile(active, np.linspace(0, 1, n_bins + 1))[1:-1])
            labels[present] = np.searchsorted(edges, active, side="right")
    labels[~present] = labels.max(initial=0) + 1
    return labels


def first_order_importance(
    spec: StudySpec, configs: list[dict[str, Any]], y: np.ndarray
) -> dict[str, float]:
    """Share of the variance of the ranked values explained by each parameter on its own.

    For each parameter the trials are grouped (quantile bins, a group per choice, inactive as
    a group) and the between-group sum of squares is compared with the total: omega squared,
    ``(SSB - (k - 1) MSW) / (SST + MSW)``, which is about 0 for a parameter unrelated to the
    value however many groups it has, where the plain ratio SSB/SST would grow with k/n. Ranks
    keep an outlier (a diverged run) from deciding the answer. Interactions are not counted: a
    parameter that matters only together with another one shows little."""
    n = len(configs)
    names = list(spec.space)
    if n < MIN_IMPORTANCE_TRIALS:
        return dict.fromkeys(names, 0.0)
    order = np.argsort(np.argsort(y, kind="stable"), kind="stable").astype(float)
    # Average ranks of ties, so equal values count as equal.
    _, inverse = np.unique(y, return_inverse=True)
    sums = np.bincount(inverse, weights=order)
    counts = np.bincount(inverse)
    r = (sums / counts)[inverse]
    r = r - r.mean()
    sst = float(np.dot(r, r))
    if sst <= 0:
        return dict.fromkeys(names, 0.0)
    n_bins = max(2, min(10, int(math.sqrt(n) / 2)))
    out = {}
    for name, p in spec.space.items():
        labels = _bins([c.get(name) for c in configs], p, n_bins)
        cnt = np.bincount(labels)
        tot = np.bincount(labels, weights=r)
        used = cnt > 0
        k = int(used.sum())
        if k < 2:
            out[name] = 0.0
            continue
        means = tot[used] / cnt[used]
        ssb = float(np.dot(cnt[used], means**2))
        msw = max(0.0, sst - ssb) / max(1, n - k)
        out[name] = max(0.0, (ssb - (k - 1) * msw) / (sst + msw))
    return out
