"""Copies of one report sent at the same moment (a worker retrying while the first is in
flight) on PostgreSQL: one is stored, and every copy is answered with its decision."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.helpers import curve, study_spec
from tuneyard.errors import StudyFinished
from tuneyard.service.context import Toolkit
from tuneyard.service.studies import StudyService
from tuneyard.service.trials import TrialService
from tuneyard.settings import Settings
from tuneyard.spec import StudySpec
from tuneyard.store.db import make_engine, make_sessionmaker
from tuneyard.store.models import Report

pytestmark = pytest.mark.postgres
COPIES = 6


@pytest.mark.parametrize("mode", ["stopping", "promotion"])
def test_copies_of_a_report_get_the_answer_stored_once(
    postgres_url: str, tmp_path: Path, mode: str
) -> None:
    engine = make_engine(postgres_url)
    kit = Toolkit(make_sessionmaker(engine), Settings(database_url=postgres_url, data_dir=tmp_path))
    spec = study_spec(
        sampler={"type": "tpe", "seed": 5, "n_startup": 2},
        scheduler={"mode": mode},
        limits={"max_trials": 8, "max_concurrent": 8},
    )
    sid = StudyService(kit).create(StudySpec.model_validate(spec)).study.id
    trials = TrialService(kit)
    jobs = 0
    while True:
        try:
            job = trials.next_job(sid, "w")
        except StudyFinished:
            break
        if job is None:
            break
        jobs += 1
        tid = job.trial.id
        # A new trial's step 1 reaches the first rung (the study lock); step 2, if the trial
        # gets there, reaches none (the trial's row only).
        start = job.trial.resource_from
        for step in (start + 1, start + 2):
            value = curve(job.trial.params, step)
            gate = threading.Barrier(COPIES)
            with ThreadPoolExecutor(COPIES) as pool:
                copy = (gate, trials, tid, job.trial.attempts, step, value)
                answers = set(pool.map(send, [copy] * COPIES))
            assert len(answers) == 1, answers
            with kit.transaction() as s:
                stored = s.scalar(
                    select(func.count())
                    .select_from(Report)
                    .where(Report.trial_id == tid, Report.step == step)
                )
            assert stored == 1
            ((decision, _),) = answers
            if decision != "continue":
                if decision == "pause":
                    trials.pause(tid, None, attempt=job.trial.attempts)
                break
    assert jobs >= 8
    engine.dispose()


def send(
    args: tuple[threading.Barrier, TrialService, int, int, float, float],
) -> tuple[str, str]:
    """One copy of a report, sent when every copy is ready."""
    gate, trials, tid, attempt, step, value = args
    gate.wait()
    r = trials.report(tid, step, value, {}, attempt=attempt)
    return r.decision, r.reason
