"""The fast paths on PostgreSQL (tuneyard/store/fast_paths.py). The plain report reads its
trial without a lock and writes only if the trial is still as read: a change that lands in
between sends the report to the general path, which decides it again under the trial's lock,
and nothing the other change wrote is lost. A heartbeat moves the lease of the live attempt of
a running trial only."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.helpers import study_spec
from tuneyard.errors import Conflict, StaleAttempt
from tuneyard.service.context import Toolkit
from tuneyard.service.studies import StudyService
from tuneyard.service.trials import TrialService
from tuneyard.settings import Settings
from tuneyard.spec import StudySpec
from tuneyard.states import StudyState
from tuneyard.store.db import make_engine, make_sessionmaker
from tuneyard.store.models import Report, Study, Trial

pytestmark = pytest.mark.postgres


@pytest.fixture
def kit(postgres_url: str, tmp_path: Path) -> Any:
    engine = make_engine(postgres_url)
    yield Toolkit(make_sessionmaker(engine), Settings(database_url=postgres_url, data_dir=tmp_path))
    engine.dispose()


def _running_trial(kit: Toolkit) -> tuple[int, int]:
    spec = study_spec(scheduler={"mode": "stopping"}, limits={"max_trials": 2})
    sid = StudyService(kit).create(StudySpec.model_validate(spec)).study.id
    job = TrialService(kit).next_job(sid, "w")
    assert job is not None
    # Step 1 is the first rung; steps between 1 and 3 reach none.
    TrialService(kit).report(job.trial.id, 1, 0.9, {}, attempt=job.trial.attempts)
    return sid, job.trial.id


def _interleave(
    kit: Toolkit, monkeypatch: pytest.MonkeyPatch, at_step: float, meanwhile: Any
) -> list[int | None]:
    """Run ``meanwhile()`` between the plain report's read and its write at ``at_step``; the
    writes' results, in order."""
    raw = kit.fast_paths
    assert raw is not None
    peek, write = raw.peek, raw.write_report
    written: list[int | None] = []

    def peek_then_change(conn: Any, trial_id: int, step: float) -> Any:
        found = peek(conn, trial_id, step)
        if step == at_step:
            meanwhile()
        return found

    def spy(conn: Any, values: Any) -> int | None:
        written.append(write(conn, values))
        return written[-1]

    monkeypatch.setattr(raw, "peek", peek_then_change)
    monkeypatch.setattr(raw, "write_report", spy)
    return written


def test_a_report_stored_meanwhile_is_not_overwritten(
    kit: Toolkit, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, tid = _running_trial(kit)
    trials = TrialService(kit)
    written = _interleave(
        kit, monkeypatch, 1.5, lambda: trials.report(tid, 2.0, 0.5, {}, attempt=1)
    )
    answer = trials.report(tid, 1.5, 0.4, {}, attempt=1)
    assert answer.decision == "continue"
    # The report of step 2 was written; the one of step 1.5 found its trial changed, wrote
    # nothing, and was stored by the general path.
    assert written[0] is not None and written[1] is None
    with kit.transaction() as s:
        trial = s.get(Trial, tid)
        assert trial is not None
        assert trial.score_count == 3
        assert trial.score_sum == pytest.approx(0.9 + 0.5 + 0.4)
        assert trial.best_score == pytest.approx(0.4)
        steps = s.scalars(select(Report.step).where(Report.trial_id == tid)).all()
    assert sorted(steps) == [1.0, 1.5, 2.0]


def test_a_study_stopped_meanwhile_gets_the_general_answer(
    kit: Toolkit, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid, tid = _running_trial(kit)
    trials = TrialService(kit)
    without_race = trials.report(tid, 1.2, 0.8, {}, attempt=1)
    assert without_race.decision == "continue"

    def stop() -> None:
        StudyService(kit).set_state(sid, StudyState.STOPPED)

    written = _interleave(kit, monkeypatch, 1.5, stop)
    answer = trials.report(tid, 1.5, 0.4, {}, attempt=1)
    assert written == [None]
    assert answer.decision == "stop"
    with kit.transaction() as s:
        study = s.get(Study, sid)
        assert study is not None and study.state == StudyState.STOPPED


def test_a_heartbeat_moves_the_lease_of_the_live_attempt_only(kit: Toolkit) -> None:
    _, tid = _running_trial(kit)
    trials = TrialService(kit)
    fast = kit.fast_paths
    assert fast is not None
    with kit.transaction() as s:
        before = s.get(Trial, tid)
        assert before is not None and before.lease_expires_at is not None
        old_lease = before.lease_expires_at
    kit.clock = lambda: old_lease + timedelta(seconds=30)  # type: ignore[method-assign]
    statements = fast.statements
    lease = trials.heartbeat(tid, attempt=1)
    assert fast.statements == statements + 1  # one statement, no transaction
    assert lease is not None and lease > old_lease
    with kit.transaction() as s:
        trial = s.get(Trial, tid)
        assert trial is not None and trial.lease_expires_at == lease
    # Another attempt's beat changes nothing, and the general path says why.
    with pytest.raises(StaleAttempt):
        trials.heartbeat(tid, attempt=2)
    trials.complete(tid, 0.1, {}, None, attempt=1)
    with pytest.raises(Conflict, match="heartbeats are for running trials"):
        trials.heartbeat(tid, attempt=1)
    with kit.transaction() as s:
        trial = s.get(Trial, tid)
        # The completion ended the lease; the refused beat did not bring one back.
        assert trial is not None and trial.lease_expires_at is None
