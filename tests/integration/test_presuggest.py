"""Suggestions made before the study's lock (TrialService.presuggest), on SQLite and
PostgreSQL: a lone worker gets what the locked path would give, overlapping calls of one
process get distinct trial numbers and configurations, and a suggestion overtaken by another
process's trial is kept only when it differs from that trial's configuration."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.helpers import API, curve, run_job, study_spec
from tuneyard.api.app import create_app
from tuneyard.service.context import Toolkit
from tuneyard.service.studies import StudyService
from tuneyard.service.trials import TrialService
from tuneyard.settings import Settings
from tuneyard.spec import StudySpec
from tuneyard.store.db import make_engine, make_sessionmaker
from tuneyard.store.models import SamplerState, Study, Trial


def _kit(url: str, tmp_path: Path) -> Toolkit:
    """An API process's toolkit: its own engine, its own sampler copies."""
    return Toolkit(
        make_sessionmaker(make_engine(url)), Settings(database_url=url, data_dir=tmp_path)
    )


def _spec(trials: int = 40) -> StudySpec:
    return StudySpec.model_validate(
        study_spec(
            sampler={"type": "tpe", "seed": 11, "n_startup": 3},
            scheduler={"mode": "stopping"},
            limits={"max_trials": trials, "max_concurrent": 8},
        )
    )


def _finish(trials: TrialService, trial: Trial) -> None:
    """Report the trial's curve until the scheduler stops or completes it."""
    for step in range(int(trial.resource_from) + 1, int(trial.resource_to) + 1):
        r = trials.report(trial.id, step, curve(trial.params, step), {}, attempt=trial.attempts)
        if r.decision != "continue":
            return
    trials.complete(trial.id, None, {}, None, attempt=trial.attempts)


def _warm(trials: TrialService, sid: int, n: int) -> None:
    """n sequential trials: past the sampler's start-up, with its state stored."""
    for _ in range(n):
        job = trials.next_job(sid, "w")
        assert job is not None
        _finish(trials, job.trial)


def _params(kit: Toolkit, sid: int) -> dict[int, dict[str, Any]]:
    with kit.transaction() as s:
        rows = s.execute(select(Trial.number, Trial.params).where(Trial.study_id == sid)).all()
    return {n: p for n, p in rows}


def test_a_lone_worker_gets_what_the_locked_path_suggests(
    database_url: str, tmp_path: Path
) -> None:
    kit = _kit(database_url, tmp_path)
    studies, trials = StudyService(kit), TrialService(kit)
    ahead = studies.create(_spec()).study.id
    locked = studies.create(_spec()).study.id
    _warm(trials, ahead, 6)
    _warm(trials, locked, 6)
    for _ in range(6):
        early = trials.presuggest(ahead)
        assert early is not None
        job = trials.next_job(ahead, "w", early, presuggested=True)
        assert job is not None and job.trial.params == early.params
        _finish(trials, job.trial)
        # The same study state, suggested under the lock only.
        job = trials.next_job(locked, "w", None, presuggested=True)
        assert job is not None
        _finish(trials, job.trial)
    assert _params(kit, ahead) == _params(kit, locked)
    # Made and not handed on: nothing is held for it (a caller that overlaps holds its own).
    assert trials.presuggest(ahead) is not None
    assert kit.ahead.held(ahead) == []


def test_the_api_holds_no_suggestion_once_its_next_calls_are_answered(
    settings: Settings,
) -> None:
    with TestClient(create_app(settings)) as http:
        spec = study_spec(
            sampler={"type": "tpe", "seed": 11, "n_startup": 3},
            # Rungs 1/3/9 that 12 trials can fill: a trial completes and so does the study.
            scheduler={"max_resource": 9},
            limits={"max_trials": 12, "max_concurrent": 4},
        )
        sid = http.post(f"{API}/studies", json=spec).json()["id"]
        for _ in range(200):
            r = http.post(f"{API}/studies/{sid}/next", json={"worker": "w"})
            if r.status_code == 409:
                break
            assert r.status_code == 200, r.text
            run_job(http, r.json(), curve)
        kit: Toolkit = http.app.state.kit  # type: ignore[attr-defined]
        assert kit.ahead.held(sid) == []
        assert http.get(f"{API}/studies/{sid}").json()["state"] == "completed"


def test_overlapping_calls_of_one_process_take_the_next_numbers(
    database_url: str, tmp_path: Path
) -> None:
    kit = _kit(database_url, tmp_path)
    trials = TrialService(kit)
    sid = StudyService(kit).create(_spec()).study.id
    _warm(trials, sid, 5)
    first = trials.presuggest(sid)
    assert first is not None
    kit.ahead.hold(sid, first)  # as the API does while the first is not a trial yet
    second = trials.presuggest(sid)
    assert second is not None
    kit.ahead.hold(sid, second)
    assert (first.number, second.number) == (5, 6)
    assert first.params != second.params
    a = trials.next_job(sid, "w1", first, presuggested=True)
    b = trials.next_job(sid, "w2", second, presuggested=True)
    assert a is not None and b is not None
    assert (a.trial.number, a.trial.params) == (5, first.params)
    assert (b.trial.number, b.trial.params) == (6, second.params)
    assert kit.ahead.held(sid) == []


def test_a_suggestion_overtaken_by_another_process_is_kept_only_if_new(
    database_url: str, tmp_path: Path
) -> None:
    one, two = _kit(database_url, tmp_path), _kit(database_url, tmp_path)
    sid = StudyService(one).create(_spec()).study.id
    _warm(TrialService(one), sid, 5)
    # Both processes suggest trial 5 from the same state and random stream: the same point.
    mine = TrialService(one).presuggest(sid)
    theirs = TrialService(two).presuggest(sid)
    assert mine is not None and theirs is not None
    assert mine.params == theirs.params
    won = TrialService(two).next_job(sid, "w2", theirs, presuggested=True)
    assert won is not None and won.trial.number == 5
    lost = TrialService(one).next_job(sid, "w1", mine, presuggested=True)
    assert lost is not None and lost.trial.number == 6
    assert lost.trial.params != won.trial.params  # suggested again, under the lock
    # A suggestion that differs from the trials made meanwhile is kept: here the other
    # process's trial 7 is the second of two suggestions it made ahead.
    mine = TrialService(one).presuggest(sid)
    held = TrialService(two).presuggest(sid)
    assert held is not None
    two.ahead.hold(sid, held)
    ahead = TrialService(two).presuggest(sid)
    assert mine is not None and ahead is not None
    assert (mine.number, held.number, ahead.number) == (7, 7, 8)
    other = TrialService(two).next_job(sid, "w2", ahead, presuggested=True)
    assert other is not None and other.trial.number == 7
    assert other.trial.params == ahead.params != mine.params
    kept = TrialService(one).next_job(sid, "w1", mine, presuggested=True)
    assert kept is not None and kept.trial.number == 8
    assert kept.trial.params == mine.params
    two.ahead.forget(sid, held)
    assert one.ahead.held(sid) == two.ahead.held(sid) == []


def test_a_copy_another_process_moved_past_meanwhile_is_not_saved_over_its_state(
    database_url: str, tmp_path: Path
) -> None:
    one, two = _kit(database_url, tmp_path), _kit(database_url, tmp_path)
    sid = StudyService(one).create(_spec(80)).study.id
    _warm(TrialService(one), sid, 5)
    made = TrialService(one).presuggest(sid)
    assert made is not None
    # The other process, suggesting from the same state, would make this very configuration
    # (and this one would be made again under the lock); one no trial holds is kept.
    early = replace(made, params={"x": 0.123456, "y": 0.0123456, "kind": "a"})
    # Meanwhile the other process runs enough trials to save the state, more than once.
    _warm(TrialService(two), sid, 40)
    with two.transaction() as s:
        stored = s.get(SamplerState, sid)
        assert stored is not None
        revision, watermark = stored.revision, stored.watermark
    with one.transaction() as s:
        copy = one.context(s.get(Study, sid)).model  # type: ignore[arg-type]
    assert copy is not None and copy.revision < revision
    copy.unsaved = 10_000  # a save would be due, were this copy the latest
    job = TrialService(one).next_job(sid, "w1", early, presuggested=True)
    assert job is not None and job.trial.number == 45
    assert job.trial.params == early.params  # taken, not suggested again under the lock
    with one.transaction() as s:
        stored = s.get(SamplerState, sid)
        assert stored is not None
        assert (stored.revision, stored.watermark) == (revision, watermark)
    # The next call of the lagging process loads the stored state and goes on from there.
    later = TrialService(one).presuggest(sid)
    assert later is not None and copy.revision == revision and copy.watermark >= watermark


@pytest.mark.parametrize("kind", ["random", "cmaes"])
def test_samplers_that_suggest_under_the_lock_make_nothing_ahead(
    database_url: str, tmp_path: Path, kind: str
) -> None:
    kit = _kit(database_url, tmp_path)
    spec = study_spec(
        sampler={"type": kind, "seed": 11},
        scheduler={"mode": "stopping"},
        limits={"max_trials": 40, "max_concurrent": 8},
    )
    sid = StudyService(kit).create(StudySpec.model_validate(spec)).study.id
    _warm(TrialService(kit), sid, 4)
    assert TrialService(kit).presuggest(sid) is None
