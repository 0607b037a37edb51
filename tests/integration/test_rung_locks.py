"""Many workers of one study on PostgreSQL at once, as a fleet runs it: rung decisions take
their rungs' locks, not the study's, so reports at rungs, pauses and ``next`` interleave.
Whatever the interleaving, the study's books must balance at the end: no trial promoted twice
from a rung, no promotion lost, every rung's counts and cut-off those of its entries, no slot
lost, and every observation seen once by the sampler that reads them after its watermark."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.helpers import curve, study_spec
from tuneyard.errors import StudyFinished
from tuneyard.service.context import Toolkit
from tuneyard.service.studies import StudyService
from tuneyard.service.trials import AssignmentResult, TrialService
from tuneyard.settings import Settings
from tuneyard.spec import StudySpec
from tuneyard.states import LogKind, StudyState, TrialState
from tuneyard.store import counters
from tuneyard.store.db import make_engine, make_sessionmaker
from tuneyard.store.models import DecisionLog, Observation, Rung, RungEntry, Study, Trial

pytestmark = pytest.mark.postgres
WORKERS = 12
ETA = 3


def work(
    trials: TrialService,
    sid: int,
    name: str,
    seed: int,
    next_job: Callable[[int, str], AssignmentResult | None] | None = None,
) -> Counter[str]:
    """One worker: ``next`` (``trials.next_job`` unless given), a report per epoch following
    each decision, then ``pause`` or ``complete``, until the study is over. Returns the
    decisions it was given."""
    rng = random.Random(seed)
    seen: Counter[str] = Counter()
    ask = next_job or trials.next_job
    while True:
        try:
            job = ask(sid, name)
        except StudyFinished:
            return seen
        if job is None:
            time.sleep(0.005)
            continue
        trial = job.trial
        step, end, attempt = trial.resource_from, trial.resource_to, trial.attempts
        decision = "continue"
        while step < end and decision == "continue":
            step += 1
            noise = rng.uniform(0.0, 0.02)
            answer = trials.report(
                trial.id, step, curve(trial.params, step) + noise, {}, attempt=attempt
            )
            decision = str(answer.decision)
            end = answer.resource_to  # a promotion in place moves it
            seen[decision] += 1
        if decision == "pause":
            trials.pause(trial.id, None, attempt=attempt)
        elif decision == "continue":
            trials.complete(trial.id, None, {}, None, attempt=attempt)


@pytest.mark.parametrize(
    ("mode", "brackets", "batched"),
    [
        ("promotion", 1, False),
        ("promotion", 3, False),
        ("stopping", 3, False),
        # ``next`` as the API serves it: the calls that queue meanwhile, one turn each.
        ("promotion", 3, True),
        ("stopping", 3, True),
    ],
)
def test_a_fleet_on_rung_locks_keeps_the_books(
    postgres_url: str, tmp_path: Path, mode: str, brackets: int, batched: bool
) -> None:
    engine = make_engine(postgres_url, pool_size=WORKERS + 2)
    kit = Toolkit(make_sessionmaker(engine), Settings(database_url=postgres_url, data_dir=tmp_path))
    spec = study_spec(
        sampler={"type": "tpe", "seed": 11, "n_startup": 4},
        scheduler={"mode": mode, "max_resource": 9, "brackets": brackets},
        limits={"max_trials": 60, "max_concurrent": WORKERS},
    )
    sid = StudyService(kit).create(StudySpec.model_validate(spec)).study.id
    trials = TrialService(kit)
    gate = threading.Barrier(WORKERS)
    loop = asyncio.new_event_loop()
    served = threading.Thread(target=loop.run_forever, daemon=True)
    served.start()

    def through_the_api(study_id: int, name: str) -> AssignmentResult | None:
        asked = kit.ahead.next(trials, study_id, name)
        return asyncio.run_coroutine_threadsafe(asked, loop).result(timeout=60)

    def worker(i: int) -> Counter[str]:
        gate.wait()
        return work(trials, sid, f"w{i}", seed=i, next_job=through_the_api if batched else None)

    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            decided = sum(
                (f.result() for f in [pool.submit(worker, i) for i in range(WORKERS)]), Counter()
            )
    finally:
        loop.call_soon_threadsafe(loop.stop)
        served.join(10)
        loop.close()
    # The run exercised what it is about: pauses at rungs and promotions (or stops at rungs),
    # and completions.
    ended_at_rungs = "pause" if mode == "promotion" else "stop"
    assert decided[ended_at_rungs] > 0 and decided["complete"] > 0, decided

    with kit.transaction() as s:
        study = s.get(Study, sid)
        assert study is not None
        assert study.state == StudyState.COMPLETED
        # No slot lost: nothing runs, and the count says so.
        assert counters.read(s, sid).active == 0
        states = Counter(s.scalars(select(Trial.state).where(Trial.study_id == sid)))
        # Trials left paused are stopped as the study ends.
        assert set(states) <= {TrialState.COMPLETED, TrialState.STOPPED}, states
        assert sum(states.values()) == 60

        entries = s.execute(
            select(
                RungEntry.id,
                RungEntry.bracket,
                RungEntry.rung,
                RungEntry.trial_id,
                RungEntry.score,
                RungEntry.promoted,
            ).where(RungEntry.study_id == sid)
        ).all()
        by_rung: dict[tuple[int, int], list[tuple[float, int]]] = {}
        promoted: dict[tuple[int, int], int] = Counter()
        reached = {(e.trial_id, e.rung) for e in entries}
        for e in entries:
            by_rung.setdefault((e.bracket, e.rung), []).append((e.score, e.id))
            if e.promoted:
                promoted[(e.bracket, e.rung)] += 1
                # No promotion lost: a trial promoted from rung k got to rung k + 1.
                assert (e.trial_id, e.rung + 1) in reached, e
        rungs = s.scalars(select(Rung).where(Rung.study_id == sid)).all()
        assert {(r.bracket, r.rung) for r in rungs} == set(by_rung)
        for r in rungs:
            mine = sorted(by_rung[(r.bracket, r.rung)])
            assert r.entries == len(mine), (r.bracket, r.rung)
            assert r.promoted == promoted[(r.bracket, r.rung)], (r.bracket, r.rung)
            # The cut-off is the floor(n / eta)-th best entry (ceil when stopping), as if the
            # entries were written one at a time.
            n = len(mine)
            rank = (n // ETA if mode == "promotion" else -(-n // ETA)) - 1
            expected = mine[rank] if rank >= 0 else (None, None)
            assert (r.cut_score, r.cut_entry) == expected, (r.bracket, r.rung)

        # No trial promoted twice from the same rung.
        promotions = Counter(
            s.execute(
                select(DecisionLog.trial_id, DecisionLog.rung).where(
                    DecisionLog.study_id == sid, DecisionLog.kind == LogKind.PROMOTE
                )
            ).all()
        )
        assert max(promotions.values(), default=1) == 1, promotions.most_common(3)
        assert promotions or mode == "stopping"

        # Every rung record is observed once, and the sampler read every observation once.
        observed = s.scalar(
            select(func.count()).select_from(Observation).where(Observation.study_id == sid)
        )
        assert observed == len(entries)
    with kit.transaction() as s:
        study = s.get(Study, sid)
        assert study is not None
        model = kit.context(study).model
        assert model is not None
        # This process's sampler, brought up to date as next does: from its watermark on.
        with model.guard:
            model.refresh(s, sid)
        history = model.sampler.history.trials
        assert sum(len(scores) for _, scores in history.values()) == observed
    engine.dispose()
