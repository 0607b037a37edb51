"""The trial runtime against a fake service: decisions, checkpoints, failures."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tuneyard.api.schemas import Assignment, ReportOut
from tuneyard.worker.checkpoints import FilesystemCheckpointStore
from tuneyard.worker.runner import load_objective, run_assignment
from tuneyard.worker.trial import Trial, TrialStopped


class FakeService:
    """Answers reports from a script: {step: (decision, resource_to)}; records every call."""

    def __init__(self, script: dict[float, tuple[str, float]] | None = None) -> None:
        self.script = script or {}
        self.calls: list[tuple[str, Any]] = []

    def report(
        self, trial_id: int, step: float, value: float | None = None, **metrics: Any
    ) -> ReportOut:
        self.calls.append(("report", (trial_id, step, value, metrics)))
        decision, to = self.script.get(step, ("continue", None))
        return ReportOut(
            step=step,
            value=value if value is not None else metrics.get("val_error"),
            metrics=metrics,
            decision=decision,  # type: ignore[arg-type]
            reason="scripted",
            resource_to=to,
            created_at=datetime.now(UTC),
        )

    def pause(self, trial_id: int, checkpoint: str | None = None) -> None:
        self.calls.append(("pause", (trial_id, checkpoint)))

    def complete(self, trial_id: int, value: float | None = None, **kw: Any) -> None:
        self.calls.append(("complete", (trial_id, value)))

    def fail(self, trial_id: int, error: str) -> None:
        self.calls.append(("fail", (trial_id, error)))

    def heartbeat(self, trial_id: int) -> None:
        self.calls.append(("heartbeat", trial_id))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.calls if k != "heartbeat"]


def job(
    kind: str = "new", frm: float = 0, to: float = 1, checkpoint: str | None = None
) -> Assignment:
    return Assignment(
        trial_id=5,
        number=4,
        params={"lr": 0.1},
        resource_from=frm,
        resource_to=to,
        checkpoint=checkpoint,
        kind=kind,  # type: ignore[arg-type]
        reason="test",
    )


def test_epochs_follow_an_on_the_spot_promotion(tmp_path: Path) -> None:
    svc = FakeService({1: ("continue", 3), 3: ("pause", 3)})
    trial = Trial(svc, 1, 5, 4, {}, 0, 1, tmp_path)  # type: ignore[arg-type]
    seen = []
    for epoch in trial.epochs():
        seen.append(epoch)
        trial.report(epoch, 0.5)
    assert seen == [1, 2, 3] and trial.decision == "pause" and trial.should_stop
    with pytest.raises(TrialStopped):
        trial.report(4, 0.1)


def test_pause_saves_a_checkpoint_that_a_resume_elsewhere_restores(tmp_path: Path) -> None:
    store = FilesystemCheckpointStore(tmp_path / "shared")

    def objective(trial: Trial) -> None:
        state = trial.load(default={"epochs": 0})
        for epoch in trial.epochs():
            state["epochs"] += 1
            trial.report(epoch, 1 / epoch)
        trial.save(state)

    svc = FakeService({1: ("pause", 1)})
    assert run_assignment(svc, 1, job(), objective, store, tmp_path / "machine-a") == "pause"  # type: ignore[arg-type]
    ((_kind, (tid, location)),) = [c for c in svc.calls if c[0] == "pause"]
    assert tid == 5 and Path(location).is_dir()

    svc2 = FakeService({3: ("complete", 3)})
    seen: dict[str, Any] = {}

    def resumed(trial: Trial) -> None:
        seen.update(trial.load())
        objective(trial)
        seen.update(trial.load())

    out = run_assignment(
        svc2, 1, job("resume", 1, 3, location), resumed, store, tmp_path / "machine-b"
    )  # type: ignore[arg-type]
    assert out == "complete" and seen["epochs"] == 3
    assert [c[1][1] for c in svc2.calls if c[0] == "report"] == [2, 3]


def test_a_crash_fails_the_trial_with_the_traceback(tmp_path: Path) -> None:
    def objective(trial: Trial) -> None:
        raise ValueError("loss exploded")

    svc = FakeService()
    store = FilesystemCheckpointStore(tmp_path / "c")
    assert run_assignment(svc, 1, job(), objective, store, tmp_path) == "fail"  # type: ignore[arg-type]
    ((_, (_tid, error)),) = [c for c in svc.calls if c[0] == "fail"]
    assert "ValueError: loss exploded" in error and "Traceback" in error


def test_a_returned_value_without_reports_completes_the_trial(tmp_path: Path) -> None:
    svc = FakeService()
    store = FilesystemCheckpointStore(tmp_path / "c")
    assert run_assignment(svc, 1, job(), lambda t: 0.25, store, tmp_path) == "complete"  # type: ignore[arg-type]
    assert ("complete", (5, 0.25)) in svc.calls


def test_load_objective_explains_what_is_missing() -> None:
    with pytest.raises(ImportError, match="no_such_module"):
        load_objective("no_such_module:train")
    with pytest.raises(AttributeError, match="nope"):
        load_objective("examples.mlp_digits:nope")
    assert callable(load_objective("examples.mlp_digits:train"))


def test_digits_example_trains_and_reports(tmp_path: Path) -> None:
    train = load_objective("examples.mlp_digits:train")
    svc = FakeService({2: ("pause", 2)})
    params = {
        "lr": 0.01,
        "batch_size": 64,
        "layers": 1,
        "units": 32,
        "momentum": 0.9,
        "solver": "adam",
    }
    trial = Trial(svc, 1, 5, 0, params, 0, 2, tmp_path)  # type: ignore[arg-type]
    train(trial)
    reports = [c[1] for c in svc.calls if c[0] == "report"]
    assert [r[1] for r in reports] == [1, 2]
    assert all(0 < r[3]["val_error"] < 1 for r in reports)
    assert reports[1][3]["val_error"] < 0.5
    assert trial.load() is not None
