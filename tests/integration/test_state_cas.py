"""A change of a trial's or a study's state is a compare-and-set on the state it was read in:
one made from a copy that another transaction moved on meanwhile writes nothing (SQLite and
PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.orm.exc import StaleDataError

from tests.helpers import study_spec
from tuneyard.service.context import Toolkit
from tuneyard.service.studies import StudyService
from tuneyard.service.transitions import move, move_study
from tuneyard.service.trials import TrialService
from tuneyard.settings import Settings
from tuneyard.spec import StudySpec
from tuneyard.states import StudyState, TrialState
from tuneyard.store.db import make_engine, make_sessionmaker
from tuneyard.store.models import Study, Trial


def test_a_state_change_from_a_stale_copy_writes_nothing(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        kit = Toolkit(make_sessionmaker(engine), Settings(database_url=database_url))
        sid = StudyService(kit).create(StudySpec.model_validate(study_spec())).study.id
        job = TrialService(kit).next_job(sid, "w")
        assert job is not None
        tid = job.trial.id
        # A copy of each row read in one transaction (left open no longer than that)...
        with kit.factory() as s:
            trial, study = s.get(Trial, tid), s.get(Study, sid)
            s.commit()  # the copies stay as read (expire_on_commit is off)
            assert trial is not None and study is not None
            assert trial.state == TrialState.RUNNING and study.state == StudyState.RUNNING
            # ... while another transaction fails the trial and stops the study.
            with kit.transaction() as other:
                other.execute(update(Trial).where(Trial.id == tid).values(state="failed"))
                other.execute(update(Study).where(Study.id == sid).values(state="stopped"))
            move(trial, TrialState.COMPLETED)  # allowed from running, as the copy says
            with pytest.raises(StaleDataError):
                s.flush()
            s.rollback()
        with kit.factory() as s:
            study = s.get(Study, sid)
            assert study is not None
            study.state = StudyState.RUNNING  # a copy as it was before the stop
            s.commit()
        # The row says running again; a copy that thinks it is paused is stale.
        with kit.factory() as s:
            study = s.get(Study, sid)
            assert study is not None
            s.commit()
            with kit.transaction() as other:
                other.execute(update(Study).where(Study.id == sid).values(state="stopped"))
            move_study(study, StudyState.PAUSED)  # allowed from running, as the copy says
            with pytest.raises(StaleDataError):
                s.flush()
            s.rollback()
        with kit.transaction() as check:
            assert check.get(Trial, tid).state == TrialState.FAILED  # type: ignore[union-attr]
            assert check.get(Study, sid).state == StudyState.STOPPED  # type: ignore[union-attr]
    finally:
        engine.dispose()
