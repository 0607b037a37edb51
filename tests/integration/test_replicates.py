"""Studies whose trials are evaluated on folds or seeds, driven through HTTP on SQLite and
PostgreSQL: each replicate is a job of its own, the trial's value at a level is the aggregate
of its replicates there, rungs rank the aggregates, racing stops a clearly worse trial before
its last fold, and a replicate that fails fails its trial (the study goes on)."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from tests.helpers import API, checkpoint, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings
from tuneyard.store.models import Observation, ReplicateLevel, ReplicateScore, RungEntry, Trial

# A fold that is hard for every configuration: what the paired test cancels.
FOLD_DIFFICULTY = [0.0, 0.08, -0.05, 0.12, 0.03]

Objective = Callable[[dict[str, Any], float, dict[str, Any]], float]


def cv_loss(params: dict[str, Any], step: float, replicate: dict[str, Any]) -> float:
    """A learning curve whose final quality the params set, shifted by the fold's difficulty."""
    final = (params["x"] - 0.3) ** 2 + 0.1 * abs(math.log10(params["y"]) + 1.5)
    return final + FOLD_DIFFICULTY[replicate["fold"]] + 0.5 / math.sqrt(step)


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def cv_spec(evaluation: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return study_spec(
        **{"evaluation": evaluation, "limits": {"max_trials": 12, "max_concurrent": 6}, **overrides}
    )


def run(http: TestClient, job: dict[str, Any], objective: Objective) -> str:
    """One replicate's job: report each integer step with the fold the job names."""
    tid, attempt = job["trial_id"], job["attempt"]
    step, to = int(job["resource_from"]), job["resource_to"]
    while step < to:
        step += 1
        value = objective(job["params"], step, job["replicate"])
        # A NaN as the workers send it (json.dumps writes NaN; httpx's json= refuses it).
        r = http.post(
            f"{API}/trials/{tid}/reports",
            content=json.dumps({"attempt": attempt, "step": step, "value": value}),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 200, r.text
        ans = r.json()
        if ans["decision"] == "pause":
            p = http.post(
                f"{API}/trials/{tid}/pause",
                json={"attempt": attempt, "checkpoint": checkpoint(http, tid, attempt, str(step))},
            )
            assert p.status_code == 200, p.text
            return "pause"
        if ans["decision"] in ("stop", "complete"):
            return str(ans["decision"])
        to = ans["resource_to"] or to
    r = http.post(f"{API}/trials/{tid}/complete", json={"attempt": attempt})
    assert r.status_code == 200, r.text
    return "complete"


def drive(
    http: TestClient, sid: int, objective: Objective = cv_loss, workers: int = 1
) -> list[dict[str, Any]]:
    """Workers taking turns: each asks for a job and runs it; until the study is over."""
    jobs: list[dict[str, Any]] = []
    for turn in range(5_000):
        r = http.post(f"{API}/studies/{sid}/next", json={"worker": f"w{turn % workers}"})
        if r.status_code == 409:
            return jobs
        if r.status_code == 204:
            continue
        assert r.status_code == 200, r.text
        job = r.json()
        jobs.append({**job, "worker": f"w{turn % workers}"})
        run(http, job, objective)
    raise AssertionError("the study did not finish")


def test_five_folds_in_parallel_aggregate_into_the_trials_rungs(
    http: TestClient, settings: Settings
) -> None:
    r = http.post(
        f"{API}/studies",
        json=cv_spec({"folds": 5, "parallel": True}, sampler={"type": "gp", "seed": 3}),
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    jobs = drive(http, sid, workers=3)
    assert http.get(f"{API}/studies/{sid}").json()["state"] == "completed"
    # Every job was one replicate, and every fold of the first trial ran.
    assert all(j["replicate"] is not None for j in jobs)
    first = {j["replicate"]["fold"] for j in jobs if j["number"] == 0}
    assert first == {0, 1, 2, 3, 4}

    engine = create_engine(settings.database_url)
    with Session(engine) as s:
        trials = s.scalars(
            select(Trial).where(Trial.study_id == sid, Trial.parent_id.is_(None))
        ).all()
        assert len(trials) == 12
        completed = [t for t in trials if t.state == "completed"]
        assert completed
        for t in completed:
            kids = s.scalars(select(Trial).where(Trial.parent_id == t.id)).all()
            assert sorted(k.replicate for k in kids) == [0, 1, 2, 3, 4]
            assert all(k.state == "completed" for k in kids)
            values = [k.value for k in kids]
            assert t.value == pytest.approx(statistics.mean(values))
            assert t.value_std == pytest.approx(statistics.stdev(values))
            assert t.value_stderr == pytest.approx(statistics.stdev(values) / math.sqrt(5))
        # Rungs rank trials (configurations), never replicates; each entry is the mean of
        # the stored per-fold scores at its level.
        entries = s.scalars(select(RungEntry).where(RungEntry.study_id == sid)).all()
        by_id = {t.id: t for t in trials}
        assert entries and all(e.trial_id in by_id for e in entries)
        for e in entries:
            level = s.get(ReplicateLevel, (e.trial_id, _resource(s, sid, e)))
            assert level is not None and level.complete and level.n == 5
            scores = s.scalars(
                select(ReplicateScore.score).where(
                    ReplicateScore.parent_id == e.trial_id,
                    ReplicateScore.resource == level.resource,
                )
            ).all()
            assert e.score == pytest.approx(statistics.mean(scores))
        # Samplers learn from trials only, each mean with its squared standard error.
        observed = s.execute(
            select(Observation.trial_id, Observation.noise).where(Observation.study_id == sid)
        ).all()
        assert {tid for tid, _ in observed} <= set(by_id)
        assert any(noise > 0 for _, noise in observed)
    engine.dispose()


def _resource(s: Session, sid: int, entry: RungEntry) -> float:
    from tuneyard.store.models import Rung

    rung = s.get(Rung, (sid, entry.bracket, entry.rung))
    assert rung is not None
    return rung.resource


def test_racing_stops_a_clearly_worse_trial_after_some_folds(
    http: TestClient, settings: Settings
) -> None:
    spec = cv_spec(
        {"folds": 5, "racing": {"confidence": 0.95}},
        scheduler={"type": "fifo", "max_resource": 3},
        limits={"max_trials": 16, "max_concurrent": 2},
    )
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    drive(http, sid)
    engine = create_engine(settings.database_url)
    with Session(engine) as s:
        trials = s.scalars(
            select(Trial).where(Trial.study_id == sid, Trial.parent_id.is_(None))
        ).all()
        raced = [t for t in trials if t.state == "stopped"]
        assert raced, [t.reason for t in trials]
        pattern = re.compile(
            r"stopped after fold (\d) of 5: mean [\d.]+ ± [\d.]+ is worse than the "
            r"incumbent's [\d.]+ on the same folds \(paired t-test, p = "
        )
        for t in raced:
            m = pattern.match(t.reason or "")
            assert m, t.reason
            ran = int(m.group(1))
            assert 2 <= ran < 5
            kids = s.scalars(select(Trial).where(Trial.parent_id == t.id)).all()
            # One fold at a time: the folds after the test never ran.
            done = [k for k in kids if k.state == "completed"]
            assert len(done) == ran
            # It shows its mean so far.
            assert t.value == pytest.approx(statistics.mean(k.value for k in done))
    engine.dispose()


def test_a_failed_fold_fails_its_trial_and_the_study_goes_on(
    http: TestClient, settings: Settings
) -> None:
    def diverges_on_fold_2(params: dict[str, Any], step: float, rep: dict[str, Any]) -> float:
        if rep["fold"] == 2 and params["x"] > 0.5:
            return math.nan
        return cv_loss(params, step, rep)

    spec = cv_spec({"folds": 3, "parallel": True}, limits={"max_trials": 8})
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    drive(http, sid, diverges_on_fold_2, workers=2)
    engine = create_engine(settings.database_url)
    with Session(engine) as s:
        trials = s.scalars(
            select(Trial).where(Trial.study_id == sid, Trial.parent_id.is_(None))
        ).all()
        failed = [t for t in trials if t.state == "failed"]
        assert failed
        assert all(t.reason and t.reason.startswith("fold 3/3 failed: ") for t in failed)
        # Nothing of a failed trial runs on.
        for t in failed:
            kids = s.scalars(select(Trial).where(Trial.parent_id == t.id)).all()
            assert all(k.state in ("completed", "stopped", "failed") for k in kids)
        assert any(t.state == "completed" for t in trials)
    engine.dispose()
    assert http.get(f"{API}/studies/{sid}").json()["state"] == "completed"


def test_seeds_one_after_another_with_promotions(http: TestClient, settings: Settings) -> None:
    def noisy(params: dict[str, Any], step: float, rep: dict[str, Any]) -> float:
        assert rep["fold"] is None and rep["folds"] is None
        return cv_loss(params, step, {"fold": rep["seed"]})

    spec = cv_spec({"seeds": 3, "aggregate": "median"}, limits={"max_trials": 9})
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    jobs = drive(http, sid, noisy, workers=2)
    assert http.get(f"{API}/studies/{sid}").json()["state"] == "completed"
    # One seed at a time: a trial's first jobs take its seeds in order.
    first = [j for j in jobs if j["number"] == 0][:3]
    assert [j["replicate"]["seed"] for j in first] == [0, 1, 2]
    engine = create_engine(settings.database_url)
    with Session(engine) as s:
        done = s.scalars(
            select(Trial).where(
                Trial.study_id == sid, Trial.parent_id.is_(None), Trial.state == "completed"
            )
        ).all()
        assert done
        for t in done:
            kids = s.scalars(select(Trial).where(Trial.parent_id == t.id)).all()
            assert t.value == pytest.approx(statistics.median(k.value for k in kids))
            # A promoted trial's seeds each resumed from their own checkpoint.
            assert all(k.attempts >= 2 for k in kids) or t.resource == 1
    engine.dispose()


def test_stopping_the_study_stops_trials_whose_folds_run_or_wait(
    http: TestClient, settings: Settings
) -> None:
    r = http.post(f"{API}/studies", json=cv_spec({"folds": 4, "parallel": True}))
    sid = r.json()["id"]
    running = [
        http.post(f"{API}/studies/{sid}/next", json={"worker": f"w{i}"}).json() for i in (0, 1)
    ]
    assert [j["replicate"]["fold"] for j in running] == [0, 1]
    assert http.patch(f"{API}/studies/{sid}", json={"state": "stopped"}).status_code == 200
    job = running[0]
    ans = http.post(
        f"{API}/trials/{job['trial_id']}/reports",
        json={"attempt": job["attempt"], "step": 1, "value": 0.5},
    ).json()
    assert ans["decision"] == "stop"
    ans = http.post(
        f"{API}/trials/{running[1]['trial_id']}/reports",
        json={"attempt": running[1]["attempt"], "step": 1, "value": 0.4},
    ).json()
    assert ans["decision"] == "stop"
    engine = create_engine(settings.database_url)
    with Session(engine) as s:
        rows = s.scalars(select(Trial).where(Trial.study_id == sid)).all()
        assert rows and all(t.state == "stopped" for t in rows), [
            (t.replicate, t.state) for t in rows
        ]
    engine.dispose()


def test_a_fold_that_crashes_runs_again_and_its_trial_completes(
    http: TestClient, settings: Settings
) -> None:
    spec = cv_spec(
        {"folds": 3, "parallel": True},
        scheduler={"type": "fifo", "max_resource": 2},
        limits={"max_trials": 1, "max_concurrent": 3},
        execution={"entrypoint": "x:y", "max_retries": 1},
    )
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    jobs = [http.post(f"{API}/studies/{sid}/next", json={"worker": "w"}).json() for _ in range(3)]
    crashed = jobs[1]
    f = http.post(
        f"{API}/trials/{crashed['trial_id']}/fail",
        json={"attempt": crashed["attempt"], "error": "CUDA error: out of memory"},
    )
    assert f.status_code == 200, f.text
    assert f.json()["state"] == "queued"
    for job in (jobs[0], jobs[2]):
        assert run(http, job, cv_loss) == "complete"
    again = http.post(f"{API}/studies/{sid}/next", json={"worker": "w2"}).json()
    assert again["trial_id"] == crashed["trial_id"] and again["attempt"] == 2
    assert again["replicate"]["fold"] == 1
    assert run(http, again, cv_loss) == "complete"
    study = http.get(f"{API}/studies/{sid}").json()
    assert study["state"] == "completed"
    engine = create_engine(settings.database_url)
    with Session(engine) as s:
        (trial,) = s.scalars(select(Trial).where(Trial.study_id == sid, Trial.parent_id.is_(None)))
        assert trial.state == "completed"
        kids = s.scalars(select(Trial).where(Trial.parent_id == trial.id)).all()
        assert trial.value == pytest.approx(statistics.mean(k.value for k in kids))
    engine.dispose()
