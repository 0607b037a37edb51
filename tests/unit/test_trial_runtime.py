"""The trial runtime against a fake service: decisions, checkpoints, failures."""

from __future__ import annotations

import math
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeService, job, run
from tuneyard.worker import Trial, TrialStopped, trial_from_env
from tuneyard.worker.checkpoints import FilesystemCheckpointStore
from tuneyard.worker.runner import (
    WorkerCrashed,
    load_objective,
    run_local_workers,
    work_loop,
)

DIGITS = {"lr": 0.01, "batch_size": 64, "layers": 1, "units": 32, "momentum": 0.9}


# -- the trial handle ------------------------------------------------------------------------
def test_epochs_follow_an_on_the_spot_promotion(tmp_path: Path) -> None:
    svc = FakeService({1: ("continue", 3), 3: ("pause", 3)})
    trial = Trial(svc, 1, 5, 4, {}, 0, 1, tmp_path)
    seen = []
    for epoch in trial.epochs():
        seen.append(epoch)
        trial.report(epoch, 0.5)
    assert seen == [1, 2, 3] and trial.resource_to == 3
    assert trial.decision == "pause" and trial.should_stop


@pytest.mark.parametrize("decision", ["stop", "complete", "pause"])
def test_reporting_after_a_terminal_decision_raises(tmp_path: Path, decision: str) -> None:
    svc = FakeService({2: (decision, None)})
    trial = Trial(svc, 1, 5, 4, {}, 0, 9, tmp_path)
    assert [e for e in trial.epochs() if trial.report(e, 0.1)] == [1, 2]
    assert trial.should_stop and trial.decision == decision
    with pytest.raises(TrialStopped, match=decision):
        trial.report(3, 0.1)
    assert len(svc.args("report")) == 2


def test_save_with_renames_what_a_framework_saver_wrote(tmp_path: Path) -> None:
    trial = Trial(FakeService(), 1, 5, 4, {}, 0, 1, tmp_path / "ckpt")
    seen: list[Path] = []

    def write_file(path: Path) -> None:
        seen.append(path)
        path.write_text("model")

    assert trial.save_with(write_file, "model.keras") == trial.checkpoint_dir / "model.keras"
    assert seen[0].suffix == ".keras" and not seen[0].exists()  # the saver's format survives
    assert (trial.checkpoint_dir / "model.keras").read_text() == "model"

    def write_dir(version: str) -> Any:
        def write(path: Path) -> None:
            path.mkdir()
            (path / version).write_text(version)

        return write

    trial.save_with(write_dir("one"), "hf")
    trial.save_with(write_dir("two"), "hf")  # a folder replaces the folder it follows
    assert sorted(p.name for p in (trial.checkpoint_dir / "hf").iterdir()) == ["two"]
    assert sorted(p.name for p in trial.checkpoint_dir.iterdir()) == ["hf", "model.keras"]
    with pytest.raises(FileNotFoundError, match="wrote nothing"):
        trial.save_with(lambda path: None, "lost.bin")


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    trial = Trial(FakeService(), 1, 5, 4, {}, 0, 1, tmp_path / "ckpt")
    assert trial.load() is None and trial.load("x.pkl", default=7) == 7
    trial.save({"w": [1, 2]})
    trial.save("other", name="sub/other.pkl")
    assert trial.load() == {"w": [1, 2]} and trial.load("sub/other.pkl") == "other"
    assert not [p for p in (tmp_path / "ckpt").rglob("*.tmp")]


def test_torch_objects_go_through_torch_save(tmp_path: Path) -> None:
    import torch  # installed by `make test`, as for the PyTorch example's tests

    trial = Trial(FakeService(), 1, 5, 4, {}, 0, 1, tmp_path)
    trial.save({"w": torch.arange(3.0), "epoch": 2}, name="model.pt")
    assert (tmp_path / "model.pt").read_bytes()[:2] == b"PK"  # torch's zip format
    back = trial.load("model.pt")
    assert back["epoch"] == 2 and back["w"].tolist() == [0.0, 1.0, 2.0]
    # A state_dict inside a dict, the usual checkpoint: torch's format too, so a model
    # downloaded later loads with torch.load(weights_only=True).
    net = torch.nn.Linear(2, 1)
    trial.save({"model": net.state_dict(), "epoch": 3}, name="nested.pt")
    loaded = torch.load(tmp_path / "nested.pt", weights_only=True)
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["weight"], net.weight)


def test_trial_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TUNEYARD_API_URL", "TUNEYARD_STUDY_ID", "TUNEYARD_TRIAL_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="TUNEYARD_API_URL is not set"):
        trial_from_env()
    env = {
        "TUNEYARD_API_URL": "http://127.0.0.1:9",
        "TUNEYARD_STUDY_ID": "3",
        "TUNEYARD_TRIAL_ID": "11",
        "TUNEYARD_PARAMS": '{"lr": 0.5, "solver": "sgd"}',
        "TUNEYARD_RESOURCE_FROM": "3",
        "TUNEYARD_RESOURCE_TO": "9",
        "TUNEYARD_CHECKPOINT_DIR": str(tmp_path / "ck"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    trial = trial_from_env()
    assert (trial.study_id, trial.trial_id, trial.params["solver"]) == (3, 11, "sgd")
    assert list(trial.epochs()) == [4, 5, 6, 7, 8, 9]
    assert trial.checkpoint_dir.is_dir()


# -- running a job ---------------------------------------------------------------------------
def counting(trial: Trial) -> None:
    """Counts epochs in its checkpoint, so a resume shows what it restored."""
    state = trial.load(default={"epochs": 0})
    for epoch in trial.epochs():
        state["epochs"] += 1
        trial.report(epoch, 1 / epoch)
    trial.save(state)


def test_pause_saves_a_checkpoint_that_a_resume_elsewhere_restores(tmp_path: Path) -> None:
    svc = FakeService({1: ("pause", 1)})
    assert run(svc, job(), counting, tmp_path, "machine-a") == "pause"
    ((tid, location),) = svc.args("pause")
    assert tid == 5 and Path(location).is_dir() and Path(location).is_absolute()
    assert not (tmp_path / "machine-a" / "trial-5").exists()  # the job's dir is cleaned up

    svc2 = FakeService({3: ("complete", 3)})
    seen: dict[str, Any] = {}

    def resumed(trial: Trial) -> None:
        seen["restored"] = trial.load()["epochs"]
        counting(trial)
        seen["final"] = trial.load()["epochs"]

    out = run(svc2, job("resume", 1, 3, location), resumed, tmp_path, "machine-b")
    assert out == "complete" and seen == {"restored": 1, "final": 3}
    assert [a[1] for a in svc2.args("report")] == [2, 3]
    # The service completed it; the one call after is the model: the objective's last save.
    assert svc2.kinds() == ["report", "report", "complete"]
    (model,) = svc2.models
    assert model is not None  # the shared directory, saved over
    assert pickle.loads((Path(model) / "state.pkl").read_bytes()) == {"epochs": 3}


def test_a_crash_fails_the_trial_with_the_traceback(tmp_path: Path) -> None:
    def objective(trial: Trial) -> None:
        raise ValueError("loss exploded")

    svc = FakeService()
    assert run(svc, job(), objective, tmp_path, "w") == "fail"
    ((_tid, error),) = svc.args("fail")
    assert "ValueError: loss exploded" in error and "Traceback" in error
    assert "in objective" in error  # the frame that raised


def test_a_returned_value_without_reports_completes_the_trial(tmp_path: Path) -> None:
    svc = FakeService()
    assert run(svc, job(), lambda t: 0.25, tmp_path, "w") == "complete"
    assert svc.kinds() == ["complete"] and svc.args("complete") == [(5, 0.25)]


def test_a_numpy_result_completes_the_trial(tmp_path: Path) -> None:
    import numpy as np

    svc = FakeService()
    assert run(svc, job(), lambda t: np.float32(0.5), tmp_path, "w") == "complete"
    assert svc.args("complete") == [(5, 0.5)]


def test_an_interrupt_hands_the_trial_back_without_using_a_retry(tmp_path: Path) -> None:
    def objective(trial: Trial) -> None:
        raise KeyboardInterrupt

    svc = FakeService()
    with pytest.raises(KeyboardInterrupt):
        run(svc, job(), objective, tmp_path, "w")
    assert svc.args("fail") == []
    ((_tid, reason, checkpoint, _step),) = svc.args("release")
    assert "interrupted (KeyboardInterrupt)" in reason and checkpoint is None


def test_a_nan_result_fails_the_trial_with_the_reason(tmp_path: Path) -> None:
    svc = FakeService()
    assert run(svc, job(), lambda t: math.nan, tmp_path, "w") == "fail"
    assert svc.args("fail") == [(5, "the objective returned nan")]


def test_reporting_on_after_a_pause_still_pauses(tmp_path: Path) -> None:
    def ignores_should_stop(trial: Trial) -> None:
        for epoch in range(1, 10):  # not trial.epochs(): report raises TrialStopped
            trial.report(epoch, 0.5)

    svc = FakeService({2: ("pause", 2)})
    assert run(svc, job(to=2), ignores_should_stop, tmp_path, "w") == "pause"
    assert svc.kinds() == ["report", "report", "pause"]


def test_a_lost_checkpoint_fails_the_resume(tmp_path: Path) -> None:
    svc = FakeService()
    a = job("resume", 1, 3, str(tmp_path / "gone"))
    assert run(svc, a, counting, tmp_path, "w") == "fail"
    ((_tid, error),) = svc.args("fail")
    assert "cannot restore" in error and "gone" in error
    assert "report" not in svc.kinds()


def test_every_call_of_a_job_names_the_attempt_it_was_given(tmp_path: Path) -> None:
    svc = FakeService({2: ("pause", 2)})
    a = job(to=2).model_copy(update={"attempt": 3})
    assert run(svc, a, counting, tmp_path, "w") == "pause"
    assert svc.attempts == [("report", 3), ("report", 3), ("pause", 3)]
    svc = FakeService()
    assert run(svc, a, lambda t: 0.25, tmp_path, "w") == "complete"
    assert svc.attempts == [("complete", 3)]


def test_a_stale_attempt_stops_the_job_and_tells_the_service_nothing(tmp_path: Path) -> None:
    """The service says the trial runs elsewhere now: the objective is told to stop at that
    report, and the job ends as lost without a fail, pause or complete of its own."""
    seen = []

    def objective(trial: Trial) -> None:
        for epoch in trial.epochs():
            seen.append(trial.report(epoch, 0.5))
            if trial.should_stop:
                return

    svc = FakeService(stale=frozenset({"report"}))
    assert run(svc, job(to=5), objective, tmp_path, "w") == "lost"
    assert seen == ["stop"]
    assert svc.kinds() == ["report"]  # one refused report; nothing after it

    # An objective that crashes or times out once its attempt is stale sends no /fail.
    def crashes(trial: Trial) -> None:
        trial.report(1, 0.5)
        raise RuntimeError("late")

    svc = FakeService(stale=frozenset({"report"}))
    assert run(svc, job(to=5), crashes, tmp_path, "w") == "lost"
    assert svc.args("fail") == []


def test_a_stale_answer_to_the_final_call_is_lost_at_once(tmp_path: Path) -> None:
    svc = FakeService(stale=frozenset({"complete"}))
    assert run(svc, job(), lambda t: 0.5, tmp_path, "w") == "lost"
    assert svc.kinds() == ["complete"]  # not retried: the attempt is over for good


def test_a_failure_sends_the_error_and_the_output_apart(tmp_path: Path) -> None:
    def objective(trial: Trial) -> None:
        print("epoch 1 done")
        raise ValueError("loss exploded")

    svc = FakeService()
    assert run(svc, job(), objective, tmp_path, "w") == "fail"
    ((_tid, error),) = svc.args("fail")
    assert error.rstrip().endswith("ValueError: loss exploded") and "epoch 1 done" not in error
    assert svc.outputs == ["epoch 1 done"]


def test_a_trial_the_service_already_ended_is_lost_not_a_crash(tmp_path: Path) -> None:
    svc = FakeService(refuse=frozenset({"complete"}))
    assert run(svc, job(), lambda t: 0.5, tmp_path, "w") == "lost"
    assert svc.kinds() == ["complete", "complete"]  # a 409 is retried once

    svc = FakeService(refuse=frozenset({"report", "fail"}))
    assert run(svc, job(), counting, tmp_path, "w") == "lost"


def test_work_loop_runs_jobs_until_the_study_is_finished(tmp_path: Path) -> None:
    svc = FakeService({1: ("complete", 1)}, jobs=[None, job(), None, job()])
    store = FilesystemCheckpointStore(tmp_path / "shared")
    n = work_loop(svc, 1, counting, store, tmp_path / "w", "test/0", idle_sleep=0.001)
    assert n == 2
    assert [k for k in svc.kinds() if k == "next"] == ["next"] * 5
    assert svc.args("next")[0] == (1, "test/0")


def test_work_loop_stops_when_asked(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    svc = FakeService(jobs=[job()])
    store = FilesystemCheckpointStore(tmp_path / "shared")
    assert work_loop(svc, 1, counting, store, tmp_path / "w", "w", stop_event=stop) == 0
    assert svc.calls == []


# -- checkpoints and objectives --------------------------------------------------------------
def test_checkpoint_store_replaces_atomically(tmp_path: Path) -> None:
    store = FilesystemCheckpointStore(tmp_path / "root")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("1")
    loc = store.save(1, 5, src)
    (src / "a").write_text("2")
    (src / "b").write_text("new")
    assert store.save(1, 5, src) == loc
    store.restore(loc, tmp_path / "dest")
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["a", "b"]
    assert (tmp_path / "dest" / "a").read_text() == "2"
    with pytest.raises(FileNotFoundError):
        store.save(1, 5, tmp_path / "missing")  # a failed save keeps the last checkpoint
    assert (Path(loc) / "b").read_text() == "new"
    assert [p.name for p in Path(loc).parent.iterdir()] == ["trial-5"]  # no temporary dirs


def test_load_objective_explains_what_is_missing() -> None:
    with pytest.raises(ImportError, match="no_such_module"):
        load_objective("no_such_module:train")
    with pytest.raises(AttributeError, match="nope"):
        load_objective("examples.mlp_digits:nope")
    with pytest.raises(AttributeError, match="not a function"):
        load_objective("examples.mlp_digits:METRIC")
    with pytest.raises(ValueError, match=r"package\.module:function"):
        load_objective("examples.mlp_digits")
    assert callable(load_objective("examples.mlp_digits:train"))


def test_a_crashing_local_worker_is_reported(tmp_path: Path) -> None:
    with pytest.raises(WorkerCrashed, match="local-worker-0"):
        run_local_workers("http://127.0.0.1:9", 1, "no_such_module:train", 1, tmp_path)


def test_digits_example_trains_and_reports(tmp_path: Path) -> None:
    train = load_objective("examples.mlp_digits:train")
    svc = FakeService({2: ("pause", 2)})
    trial = Trial(svc, 1, 5, 0, {**DIGITS, "solver": "adam"}, 0, 2, tmp_path)
    train(trial)
    reports = svc.args("report")
    assert [r[1] for r in reports] == [1, 2]
    assert all(0 < r[3]["val_error"] < 1 for r in reports)
    assert reports[1][3]["val_error"] < 0.5
    assert trial.load()["epoch"] == 2


def test_digits_example_resumes_exactly_where_it_paused(tmp_path: Path) -> None:
    params = {**DIGITS, "solver": "sgd", "nesterov": True}
    train = load_objective("examples.mlp_digits:train")
    straight = FakeService({3: ("complete", 3)})
    assert run(straight, job(to=3, params=params), train, tmp_path, "s") == "complete"

    first = FakeService({1: ("pause", 1)})
    assert run(first, job(to=1, params=params), train, tmp_path, "a") == "pause"
    ((_, location),) = first.args("pause")
    second = FakeService({3: ("complete", 3)})
    b = job("resume", 1, 3, location, params=params)
    assert run(second, b, train, tmp_path, "b") == "complete"

    def errors(*svcs: FakeService) -> list[float]:
        return [r[3]["val_error"] for s in svcs for r in s.args("report")]

    assert errors(first, second) == errors(straight)


def test_digits_example_reports_nan_when_it_diverges(tmp_path: Path) -> None:
    params = {"lr": 1.0, "batch_size": 16, "layers": 2, "units": 256, "momentum": 0.99}
    train = load_objective("examples.mlp_digits:train")
    svc = FakeService()  # the service would answer stop to the NaN; this one says continue
    trial = Trial(svc, 1, 5, 0, {**params, "solver": "sgd", "nesterov": True}, 0, 27, tmp_path)
    assert train(trial) is None
    (only,) = svc.args("report")
    assert only[1] == 1 and math.isnan(only[3]["val_error"])
