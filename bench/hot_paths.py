"""Cost of the report and next paths as a study grows.

    python bench/hot_paths.py [--database-url URL] [--sizes 100,1000,10000] [--calls 200]
                              [--multi | --replicates]

Prefills an ASHA study with N finished trials (each with rung records, as a real run leaves
them), then times in-process service calls: a plain report (no rung), a report that reaches a
rung (the study lock, a rank query, a promotion search) and ``next``. It also counts the SQL
statements each call issues: that number must not grow with N.

``--multi``: the study has two objectives and a constraint (a fifth of the trials infeasible),
so a report that reaches a rung ranks that rung by fronts (MO-ASHA): that cost grows with the
rung's size, and this measures by how much.

``--replicates``: the study evaluates each trial on 3 folds, in parallel, with racing; the
prefilled trials have their per-fold scores and aggregates at every level they reached. Every
job is then a fold: a report that reaches a rung stores the fold's score, aggregates the
trial's folds there and races the trial against the incumbent (an index probe), or, for the
last fold, decides the trial's rung entry.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import event, insert, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuneyard.service.context import Toolkit  # noqa: E402
from tuneyard.service.studies import StudyService  # noqa: E402
from tuneyard.service.trials import TrialService  # noqa: E402
from tuneyard.settings import Settings  # noqa: E402
from tuneyard.spec import StudySpec  # noqa: E402
from tuneyard.store.db import make_engine, make_sessionmaker  # noqa: E402
from tuneyard.store.models import (  # noqa: E402
    Base,
    Bracket,
    ReplicateLevel,
    ReplicateScore,
    Report,
    Rung,
    RungEntry,
    Study,
    Trial,
)

SPEC = {
    "name": "bench",
    "metric": "loss",
    "space": {"x": {"type": "float", "low": 0, "high": 1}},
    "sampler": {"type": "random", "seed": 1},
    "scheduler": {"type": "asha", "min_resource": 1, "max_resource": 27, "reduction_factor": 3},
    "limits": {"max_trials": 10_000_000, "max_concurrent": 10_000},
}
MULTI = {
    **{k: v for k, v in SPEC.items() if k not in ("metric",)},
    "objectives": [{"metric": "loss"}, {"metric": "latency", "direction": "minimize"}],
    "constraints": [{"metric": "mem", "max": 0.8}],
}
FOLDS = 3
REPLICATED = {**SPEC, "evaluation": {"folds": FOLDS, "parallel": True, "racing": {}}}


def metrics(rng: np.random.Generator, multi: bool) -> dict[str, float]:
    """The other metrics of a report: the second objective and the constrained one."""
    if not multi:
        return {}
    return {"latency": float(rng.uniform()), "mem": float(rng.uniform())}


def prefill(
    kit: Toolkit, study_id: int, n: int, multi: bool = False, replicated: bool = False
) -> None:
    """N finished trials: all reached rung 0, a third rung 1, a ninth rung 2, ...; with
    ``replicated``, each with its folds' scores and their aggregate at every level."""
    rng = np.random.default_rng(0)
    now = kit.clock()
    rungs = [1.0, 3.0, 9.0, 27.0]
    with kit.transaction() as s:
        trials, entries, reports = [], [], []
        for i in range(n):
            top = 0 if i % 3 else (1 if i % 9 else (2 if i % 27 else 3))
            trials.append(
                dict(
                    study_id=study_id,
                    number=i,
                    state="completed" if top == 3 else "stopped",
                    params={"x": float(rng.uniform())},
                    bracket=0,
                    base_rung=0,
                    rung=top,
                    resource_from=0.0,
                    resource_to=rungs[top],
                    value=float(rng.uniform()),
                    resource=rungs[top],
                    score_sum=0.0,
                    score_count=0,
                    attempts=1,
                    created_at=now,
                    updated_at=now,
                )
            )
        s.execute(insert(Trial), trials)
        ids = [
            t.id
            for t in s.query(Trial.id).filter(Trial.study_id == study_id).order_by(Trial.number)
        ]
        counts = [0, 0, 0, 0]
        for i, tid in enumerate(ids):
            top = trials[i]["rung"]
            for k in range(top + 1):
                score = float(rng.uniform())
                other = metrics(rng, multi)
                entries.append(
                    dict(
                        study_id=study_id,
                        bracket=0,
                        rung=k,
                        trial_id=tid,
                        score=score,
                        scores=[score, other["latency"]] if multi else None,
                        violation=max(0.0, other["mem"] - 0.8) if multi else 0.0,
                        promoted=k < top,
                        waiting=False,
                        created_at=now,
                    )
                )
                counts[k] += 1
            for step in range(1, int(rungs[top]) + 1):
                reports.append(
                    dict(
                        trial_id=tid,
                        step=float(step),
                        value=0.5,
                        metrics={},
                        decision="continue",
                        reason="",
                        created_at=now,
                    )
                )
        levels, folds = [], []
        if replicated:
            for e in entries:
                scores = [e["score"] + 0.01 * j for j in range(FOLDS)]
                resource = rungs[e["rung"]]
                levels.append(
                    dict(
                        parent_id=e["trial_id"],
                        resource=resource,
                        study_id=study_id,
                        score=float(np.mean(scores)),
                        value=float(np.mean(scores)),
                        std=0.01,
                        stderr=0.006,
                        n=FOLDS,
                        complete=True,
                    )
                )
                folds += [
                    dict(
                        parent_id=e["trial_id"],
                        resource=resource,
                        replicate=j,
                        score=sc,
                        value=sc,
                        created_at=now,
                    )
                    for j, sc in enumerate(scores)
                ]
        for chunk in range(0, len(entries), 20_000):
            s.execute(insert(RungEntry), entries[chunk : chunk + 20_000])
            if replicated:
                s.execute(insert(ReplicateLevel), levels[chunk : chunk + 20_000])
        for chunk in range(0, len(folds), 20_000):
            s.execute(insert(ReplicateScore), folds[chunk : chunk + 20_000])
        for chunk in range(0, len(reports), 20_000):
            s.execute(insert(Report), reports[chunk : chunk + 20_000])
        cutoff_rank = kit.context(s.get(Study, study_id)).scheduler.cutoff_rank  # type: ignore[arg-type]
        for k in range(4):
            cut = s.execute(
                select(RungEntry.score, RungEntry.id)
                .where(RungEntry.study_id == study_id, RungEntry.rung == k)
                .order_by(RungEntry.score, RungEntry.id)
                .offset(max(0, cutoff_rank(counts[k])))
                .limit(1)
            ).first()
            if cutoff_rank(counts[k]) < 0:
                cut = None
            s.merge(
                Rung(
                    study_id=study_id,
                    bracket=0,
                    rung=k,
                    resource=rungs[k],
                    entries=counts[k],
                    dropped=0,
                    promoted=counts[k + 1] if k < 3 else 0,
                    cut_score=cut[0] if cut else None,
                    cut_entry=cut[1] if cut else None,
                )
            )
        study = s.get(Study, study_id)
        assert study is not None
        study.trials_started = n
        b = s.get(Bracket, (study_id, 0))
        assert b is not None
        b.admitted = n
    if kit.factory.kw["bind"].dialect.name == "postgresql":
        with kit.factory.kw["bind"].begin() as c:
            c.execute(text("ANALYZE"))


class QueryCounter:
    """SQL statements run on ``engine``: SQLAlchemy's, and with ``kit`` the plain report's,
    which run on the driver's connection (tuneyard/store/fast_paths.py)."""

    def __init__(self, engine: Any, kit: Toolkit | None = None) -> None:
        self._sql = 0
        self._raw = kit.fast_paths if kit is not None else None
        self._raw_start = self._raw.statements if self._raw is not None else 0
        event.listen(engine, "before_cursor_execute", self._count)

    @property
    def n(self) -> int:
        raw = self._raw.statements - self._raw_start if self._raw is not None else 0
        return self._sql + raw

    def _count(self, *args: Any) -> None:
        self._sql += 1


def measure(
    url: str, n: int, calls: int, multi: bool = False, replicated: bool = False
) -> dict[str, Any]:
    engine = make_engine(url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    kit = Toolkit(make_sessionmaker(engine), Settings(database_url=url))
    spec = StudySpec.model_validate(MULTI if multi else REPLICATED if replicated else SPEC)
    sid = StudyService(kit).create(spec).study.id
    prefill(kit, sid, n, multi, replicated)
    trials = TrialService(kit)
    counter = QueryCounter(engine, kit)
    t_next, t_plain, t_rung, q_next, q_plain, q_rung = [], [], [], [], [], []
    for _ in range(calls):
        c0, a = counter.n, time.perf_counter()
        job = trials.next_job(sid, "bench")
        t_next.append(time.perf_counter() - a)
        q_next.append(counter.n - c0)
        assert job is not None
        tid = job.trial.id
        c0, a = counter.n, time.perf_counter()
        # Half way through the job's range: a report that reaches no rung.
        rng = np.random.default_rng(tid)
        trials.report(
            tid,
            job.trial.resource_from + 0.5,
            0.7,
            metrics(rng, multi),
            attempt=job.trial.attempts,
        )
        t_plain.append(time.perf_counter() - a)
        q_plain.append(counter.n - c0)
        c0, a = counter.n, time.perf_counter()
        value = float(rng.uniform())
        d = trials.report(
            tid, job.trial.resource_to, value, metrics(rng, multi), attempt=job.trial.attempts
        )
        t_rung.append(time.perf_counter() - a)
        q_rung.append(counter.n - c0)
        if d.decision == "pause":
            trials.pause(tid, None, attempt=job.trial.attempts)
    engine.dispose()

    def ms(xs: list[float], q: float) -> float:
        return 1000 * float(np.quantile(xs, q))

    return {
        "n": n,
        "next_p50": ms(t_next, 0.5),
        "next_p95": ms(t_next, 0.95),
        "plain_p50": ms(t_plain, 0.5),
        "plain_p95": ms(t_plain, 0.95),
        "rung_p50": ms(t_rung, 0.5),
        "rung_p95": ms(t_rung, 0.95),
        "q_next": statistics.median(q_next),
        "q_plain": statistics.median(q_plain),
        "q_rung": statistics.median(q_rung),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--database-url", default="")
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--calls", type=int, default=200)
    kind = ap.add_mutually_exclusive_group()
    kind.add_argument("--multi", action="store_true", help="two objectives and a constraint")
    kind.add_argument("--replicates", action="store_true", help="3 folds, parallel, racing")
    args = ap.parse_args()
    url = args.database_url or f"sqlite:///{tempfile.mkdtemp()}/bench.db"
    print(f"database: {url.split('@')[-1]}")
    print(
        f"{'trials':>8} {'next p50/p95 ms':>16} {'report p50/p95':>15} {'rung report p50/p95':>20}"
        f" {'SQL: next/report/rung':>22}"
    )
    for n in [int(x) for x in args.sizes.split(",")]:
        r = measure(url, n, args.calls, args.multi, args.replicates)
        print(
            f"{r['n']:>8} {r['next_p50']:>7.2f}/{r['next_p95']:<7.2f}"
            f" {r['plain_p50']:>6.2f}/{r['plain_p95']:<7.2f}"
            f" {r['rung_p50']:>10.2f}/{r['rung_p95']:<8.2f}"
            f" {r['q_next']:>10.0f}/{r['q_plain']:.0f}/{r['q_rung']:.0f}"
        )


if __name__ == "__main__":
    main()
