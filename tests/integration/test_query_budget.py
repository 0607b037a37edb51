"""The report and next paths issue a fixed number of SQL statements, whatever the study's size:
the same at 100 finished trials as at 10,000 (SQLite and PostgreSQL), and no more than their
budget. bench/hot_paths.py times the same calls; its prefill builds what a real run leaves
(trials, their reports and rung records, the rungs' cut-offs)."""

from __future__ import annotations

import numpy as np

from bench.hot_paths import SPEC, QueryCounter, prefill
from tuneyard.service.context import Toolkit
from tuneyard.service.studies import StudyService
from tuneyard.service.trials import TrialService
from tuneyard.settings import Settings
from tuneyard.spec import StudySpec
from tuneyard.store.db import make_engine, make_sessionmaker

CALLS = 12
# Statements per call at most, by backend, as measured: PostgreSQL's plain report is two in
# autocommit (a read, then one statement that updates the trial and stores the report if the
# trial is as read; no BEGIN or COMMIT), SQLite's a transaction that locks the trial; a rung
# report's count depends on its decision (a pause, a promotion, a stop). ``next`` reads the
# study's slot count and adds the slot it takes (its counters' row, which a pause changes
# without the study's lock) in two statements of their own, and reads the study's rungs in one
# (the promotion search looks at every rung).
BUDGET = {
    "postgresql": {"next": 16, "plain": 2, "rung": 22},
    "sqlite": {"next": 18, "plain": 4, "rung": 24},
}


def _costs(kit: Toolkit, counter: QueryCounter, n: int) -> dict[str, list[int]]:
    """Statements of CALLS rounds of next, a plain report and a rung report, in a study of
    ``n`` finished trials."""
    sid = StudyService(kit).create(StudySpec.model_validate(SPEC)).study.id
    prefill(kit, sid, n)
    trials = TrialService(kit)
    seen: dict[str, list[int]] = {"next": [], "plain": [], "rung": []}

    def count(kind: str, before: int) -> None:
        seen[kind].append(counter.n - before)

    for _ in range(CALLS):
        before = counter.n
        job = trials.next_job(sid, "w")
        count("next", before)
        assert job is not None
        tid, start, end = job.trial.id, job.trial.resource_from, job.trial.resource_to
        before = counter.n
        trials.report(tid, start + 0.5, 0.7, {}, attempt=1)
        count("plain", before)
        value = float(np.random.default_rng(tid).uniform())
        before = counter.n
        d = trials.report(tid, end, value, {}, attempt=1)
        count("rung", before)
        if d.decision == "pause":
            trials.pause(tid, None, attempt=1)
    return seen


def test_statements_per_call_do_not_grow_with_the_study(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        kit = Toolkit(make_sessionmaker(engine), Settings(database_url=database_url))
        counter = QueryCounter(engine, kit)
        small = _costs(kit, counter, 100)
        large = _costs(kit, counter, 10_000)
        budget = BUDGET[engine.dialect.name]
    finally:
        engine.dispose()
    for kind in ("next", "plain", "rung"):
        # Counted past the first call, whose caches (the study's context) are cold.
        assert max(large[kind][1:]) == max(small[kind][1:]), (kind, small[kind], large[kind])
        assert max(large[kind][1:]) <= budget[kind], (kind, large[kind], budget[kind])
