"""``execution.checkpoint_every``: the worker uploads the objective's latest save every N
resource units, labelled with the epoch it was saved in, so a retry resumes where it says."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tests.fakes import FakeService, job, run
from tuneyard.client import Conflict
from tuneyard.spec import StudySpec
from tuneyard.worker import Trial
from tuneyard.worker.runner import JobOptions


class Recording(FakeService):
    """Also reads what each checkpoint call's location holds at the time of the call."""

    def __init__(self, *a: Any, fail_first: int = 0, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.kept: list[tuple[float, int]] = []  # (step, the epoch the saved state is at)
        self.fail_first = fail_first

    def checkpoint(self, trial_id: int, checkpoint: str, step: float, *, attempt: int) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise Conflict(409, "Conflict", "try again")
        super().checkpoint(trial_id, checkpoint, step, attempt=attempt)
        state = pickle.loads((Path(checkpoint) / "state.pkl").read_bytes())
        self.kept.append((step, state["epoch"]))


def save_then_report(trial: Trial) -> None:
    for epoch in trial.epochs():
        trial.save({"epoch": epoch})
        trial.report(epoch, 1 / epoch)


def report_then_save(trial: Trial) -> None:
    for epoch in trial.epochs():
        trial.report(epoch, 1 / epoch)
        trial.save({"epoch": epoch})


def every(n: float) -> JobOptions:
    return JobOptions(checkpoint_every=n)


def test_every_two_epochs_the_latest_save_is_kept_with_its_epoch(tmp_path: Path) -> None:
    for objective in (save_then_report, report_then_save):
        svc = Recording({7: ("complete", None)})
        out = run(svc, job(to=7), objective, tmp_path, objective.__name__, every(2))
        assert out == "complete"
        # Not at 7: the report completed the trial, whose last save is then its model.
        assert svc.kept == [(2, 2), (4, 4), (6, 6)], objective.__name__
        assert svc.kinds()[-1] == "complete" and svc.models[-1] is not None
        # Each checkpoint call comes right after the report of its step.
        calls = [(k, a) for k, a in svc.calls if k in ("report", "checkpoint")]
        for (before, b_args), (kind, args) in itertools.pairwise(calls):
            if kind == "checkpoint":
                assert before == "report" and b_args[1] == args[2], calls


def test_a_resumed_job_counts_from_where_it_started(tmp_path: Path) -> None:
    svc = Recording({9: ("complete", None)})
    out = run(svc, job("new", 3, 9), save_then_report, tmp_path, "w", every(3))
    assert out == "complete"
    assert svc.kept == [(6, 6)]  # 9 completed the trial: kept as its model


def test_only_new_saves_are_uploaded_and_with_the_epoch_they_were_made_in(
    tmp_path: Path,
) -> None:
    def every_third(trial: Trial) -> None:
        for epoch in trial.epochs():
            if epoch % 3 == 0:
                trial.save({"epoch": epoch})
            trial.report(epoch, 1 / epoch)

    svc = Recording({8: ("complete", None)})
    run(svc, job(to=8), every_third, tmp_path, "w", every(1))
    assert svc.kept == [(3, 3), (6, 6)]


def test_without_checkpoint_every_nothing_is_uploaded_until_the_end(tmp_path: Path) -> None:
    svc = Recording({4: ("complete", None)})
    assert run(svc, job(to=4), save_then_report, tmp_path, "w") == "complete"
    assert svc.kept == [] and "checkpoint" not in svc.kinds()
    assert svc.models[-1] is not None


def test_a_pause_keeps_its_checkpoint_through_pause_not_as_a_periodic_one(
    tmp_path: Path,
) -> None:
    svc = Recording({3: ("pause", None)})
    assert run(svc, job(to=9), save_then_report, tmp_path, "w", every(1)) == "pause"
    assert [step for step, _ in svc.kept] == [1, 2]
    assert svc.kinds()[-1] == "pause"


def test_a_refused_upload_does_not_stop_training_and_the_next_one_goes(tmp_path: Path) -> None:
    svc = Recording({5: ("complete", None)}, fail_first=1)
    assert run(svc, job(to=5), save_then_report, tmp_path, "w", every(1)) == "complete"
    assert svc.kept == [(2, 2), (3, 3), (4, 4)]
    assert [a[1] for a in svc.args("report")] == [1, 2, 3, 4, 5]


def test_a_stale_attempt_ends_the_job_at_its_checkpoint_call(tmp_path: Path) -> None:
    svc = Recording(stale=frozenset({"checkpoint"}))
    assert run(svc, job(to=6), save_then_report, tmp_path, "w", every(2)) == "lost"
    assert [a[1] for a in svc.args("report")] == [1, 2]
    assert "complete" not in svc.kinds() and "fail" not in svc.kinds()


# -- the definition ------------------------------------------------------------------------------
def test_the_definition_takes_checkpoint_every_and_keep_models() -> None:
    base = {"name": "s", "space": {"x": {"type": "float", "low": 0, "high": 1}}}
    spec = StudySpec.model_validate(
        {**base, "execution": {"entrypoint": "m.train:run", "checkpoint_every": 2}}
    )
    assert spec.execution is not None and spec.execution.checkpoint_every == 2
    assert spec.limits.keep_models == 3, "the best three keep their model by default"
    assert StudySpec.model_validate({**base, "limits": {"keep_models": 0}}).limits.keep_models == 0


@pytest.mark.parametrize(
    ("section", "words"),
    [
        ({"execution": {"entrypoint": "m.train:run", "checkpoint_every": 0}}, "checkpoint_every"),
        ({"execution": {"entrypoint": "m.train:run", "checkpoint_every": -1}}, "checkpoint_every"),
        ({"execution": {"command": ["python", "t.py"], "checkpoint_every": 1}}, "entrypoint"),
        ({"limits": {"keep_models": -1}}, "keep_models"),
    ],
)
def test_a_bad_checkpoint_setting_is_refused_naming_it(section: dict[str, Any], words: str) -> None:
    base = {"name": "s", "space": {"x": {"type": "float", "low": 0, "high": 1}}}
    with pytest.raises(ValidationError) as info:
        StudySpec.model_validate({**base, **section})
    text = str(info.value)
    assert words in text and ("checkpoint_every" in text or "keep_models" in text), text


def test_checkpoint_every_is_refused_with_shipped_code() -> None:
    from pydantic import ValidationError

    from tuneyard.spec.study import ExecutionSpec

    with pytest.raises(ValidationError, match="checkpoint_every: not available with shipped code"):
        ExecutionSpec(entrypoint="train:main", code="sha256:" + "0" * 64, checkpoint_every=1)
