"""The Lightning callback with a real Trainer on a tiny model, the service scripted: what it
reports, when it saves and stops, and that a resumed fit goes on exactly where it paused."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from tests.fakes import FakeService, job, run
from tuneyard.integrations._common import CheckpointMismatch, MissingMetric
from tuneyard.integrations.lightning import CHECKPOINT, TuneyardCallback
from tuneyard.spec import StudySpec
from tuneyard.worker import Trial
from tuneyard.worker.runner import load_objective

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Tiny(pl.LightningModule):
    """A linear classifier with an LR schedule stepped per epoch: a resume that skipped or
    repeated an epoch's schedule step would train to other weights."""

    def __init__(self, validate: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 2)
        self.validate = validate

    def training_step(self, batch: Any, _: int) -> Any:
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.layer(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch: Any, _: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.layer(x), y))
        self.log("val_acc", (self.layer(x).argmax(1) == y).float().mean())

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.5, momentum=0.9)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]


def loaders() -> tuple[DataLoader[Any], DataLoader[Any]]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(48, 4, generator=gen)
    y = (x[:, 0] + x[:, 1] > 0).long()
    data = TensorDataset(x, y)
    return DataLoader(data, batch_size=16), DataLoader(data, batch_size=48)


def trainer(callback: TuneyardCallback, **kwargs: Any) -> pl.Trainer:
    return pl.Trainer(
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        **kwargs,
    )


def fit(trial: Trial, model: Tiny | None = None, **kwargs: Any) -> tuple[TuneyardCallback, Tiny]:
    callback = TuneyardCallback(trial, monitor="val_loss")
    model = model or Tiny()
    train, val = loaders()
    callback.fit(trainer(callback, **kwargs), model, train, val)
    return callback, model


def steps(svc: FakeService) -> list[float]:
    return [step for _, step, _, _ in svc.args("report")]


def test_reports_each_epoch_and_saves_when_the_fit_runs_out(tmp_path: Path) -> None:
    svc = FakeService()
    trial = Trial(svc, 1, 5, 0, {}, 0, 3, tmp_path)
    callback, _ = fit(trial, max_epochs=50)  # replaced by the trial's resource_to
    assert steps(svc) == [1, 2, 3]
    for _, _, value, logged in svc.args("report"):  # each epoch's own, the first's included
        assert value is None and set(logged) == {"val_loss", "val_acc", "train_loss"}
    _, _, _, metrics = svc.args("report")[-1]
    assert callback.last_value == metrics["val_loss"]
    assert 0 < metrics["val_loss"] < 5 and 0 <= metrics["val_acc"] <= 1
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert saved["epoch"] == 3


def test_a_pause_saves_a_checkpoint_and_ends_the_fit(tmp_path: Path) -> None:
    svc = FakeService({2: ("pause", None)})
    trial = Trial(svc, 1, 5, 0, {}, 0, 6, tmp_path)
    fit(trial)
    assert steps(svc) == [1, 2] and trial.decision == "pause"
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=False)
    assert saved["epoch"] == 2
    assert not list(tmp_path.glob(".*"))  # the temporary file was renamed into place


@pytest.mark.parametrize("decision", ["stop", "complete"])
def test_stop_ends_the_fit_and_complete_keeps_the_model(tmp_path: Path, decision: str) -> None:
    svc = FakeService({1: (decision, None)})
    trial = Trial(svc, 1, 5, 0, {}, 0, 6, tmp_path)
    fit(trial)
    assert steps(svc) == [1]
    assert (tmp_path / CHECKPOINT).exists() == (decision == "complete")


def test_a_resumed_fit_goes_on_where_the_paused_one_stopped(tmp_path: Path) -> None:
    # Uninterrupted: epochs 1..4 in one fit.
    whole = FakeService()
    _, straight = fit(Trial(whole, 1, 5, 0, {}, 0, 4, tmp_path / "whole"))

    # Paused at 2, then resumed from the checkpoint by a new job (2..4) in a new trainer.
    ckpt = tmp_path / "split"
    first = FakeService({2: ("pause", None)})
    fit(Trial(first, 1, 5, 0, {}, 0, 4, ckpt))
    second = FakeService()
    resumed_trial = Trial(second, 1, 5, 0, {}, 2, 4, ckpt)
    _, resumed = fit(resumed_trial)

    assert steps(first) == [1, 2] and steps(second) == [3, 4]
    # The same training, epoch for epoch: weights, and the losses reported at 3 and 4.
    assert torch.equal(resumed.layer.weight, straight.layer.weight)
    for a, b in zip(whole.args("report")[2:], second.args("report"), strict=True):
        assert a[3]["val_loss"] == pytest.approx(b[3]["val_loss"], rel=1e-6)


def test_an_on_the_spot_promotion_trains_on_to_the_new_end(tmp_path: Path) -> None:
    svc = FakeService({2: ("continue", 4), 4: ("pause", None)})
    trial = Trial(svc, 1, 5, 0, {}, 0, 2, tmp_path)
    fit(trial)
    assert steps(svc) == [1, 2, 3, 4] and trial.resource_to == 4
    assert torch.load(tmp_path / CHECKPOINT, weights_only=False)["epoch"] == 4


def test_a_metric_not_logged_fails_naming_it(tmp_path: Path) -> None:
    trial = Trial(FakeService(), 1, 5, 0, {}, 0, 3, tmp_path)
    callback = TuneyardCallback(trial, monitor="val_los")
    train, val = loaders()
    with pytest.raises(MissingMetric, match=r"no 'val_los' \(it logged: .*val_loss"):
        callback.fit(trainer(callback), Tiny(), train, val)


def test_an_epoch_without_validation_fails(tmp_path: Path) -> None:
    trial = Trial(FakeService(), 1, 5, 0, {}, 0, 3, tmp_path)
    callback = TuneyardCallback(trial)
    train, _ = loaders()
    with pytest.raises(ValueError, match="epoch 1 ended without a validation"):
        callback.fit(trainer(callback), Tiny(), train)


def test_a_resume_without_its_checkpoint_fails(tmp_path: Path) -> None:
    trial = Trial(FakeService(), 1, 5, 0, {}, 2, 4, tmp_path)
    with pytest.raises(CheckpointMismatch, match="resumes after epoch 2, but there is no"):
        fit(trial)


def test_a_resume_from_another_epoch_fails_before_training(tmp_path: Path) -> None:
    fit(Trial(FakeService({1: ("pause", None)}), 1, 5, 0, {}, 0, 4, tmp_path))
    svc = FakeService()
    with pytest.raises(
        CheckpointMismatch, match="starting epoch 2, but the job resumes after epoch 3"
    ):
        fit(Trial(svc, 1, 5, 0, {}, 3, 6, tmp_path))
    assert svc.args("report") == []


def test_a_resume_that_fits_from_scratch_fails(tmp_path: Path) -> None:
    fit(Trial(FakeService({1: ("pause", None)}), 1, 5, 0, {}, 0, 4, tmp_path))
    trial = Trial(FakeService(), 1, 5, 0, {}, 1, 4, tmp_path)
    callback = TuneyardCallback(trial)
    train, val = loaders()
    with pytest.raises(CheckpointMismatch, match=r"ckpt_path=callback\.ckpt_path"):
        trainer(callback).fit(Tiny(), train, val)


def test_settings_that_would_outlast_a_pause_are_refused(tmp_path: Path) -> None:
    trial = Trial(FakeService(), 1, 5, 0, {}, 0, 3, tmp_path)
    with pytest.raises(ValueError, match="min_epochs"):
        fit(trial, min_epochs=2)
    with pytest.raises(ValueError, match="max_steps=5"):
        fit(trial, max_steps=5)
    with pytest.raises(ValueError, match=r"whole units, but the trial's resource_to is 2\.5"):
        TuneyardCallback(Trial(FakeService(), 1, 5, 0, {}, 0, 2.5, tmp_path))


def test_the_example_pauses_and_resumes_through_the_worker_s_checkpoint_store(
    tmp_path: Path,
) -> None:
    """examples/lightning_digits.py as its study runs it: the job runner uploads the checkpoint
    the callback saved at the pause and restores it for the resume in another directory."""
    spec = StudySpec.model_validate(yaml.safe_load((EXAMPLES / "lightning_study.yaml").read_text()))
    assert spec.execution is not None
    train = load_objective(spec.execution.entrypoint or "")
    params = {"lr": 0.01, "hidden": 32, "dropout": 0.1, "weight_decay": 1e-4, "batch_size": 64}
    assert set(params) == set(spec.space)
    svc = FakeService({2: ("pause", None)})
    assert run(svc, job(to=3, params=params), train, tmp_path, "worker-a") == "pause"
    ((_, location),) = svc.args("pause")
    svc.script = {}
    resume = job("resume", 2, 4, location, params=params)
    assert run(svc, resume, train, tmp_path, "worker-b") == "complete"
    assert steps(svc) == [1, 2, 3, 4]
    losses = [m["val_loss"] for _, _, _, m in svc.args("report")]
    ((_, value),) = svc.args("complete")
    assert value == losses[-1] < losses[0]
    assert svc.args("report")[-1][3]["val_acc"] > 0.8


def test_a_fit_over_several_processes_is_refused(tmp_path: Path) -> None:
    """Each DDP rank would report the same epochs; the hook refuses before training (a
    trainer's attributes stand in for a multi-process run, which a unit test can't start)."""
    callback = TuneyardCallback(Trial(FakeService(), 1, 5, 0, {}, 0, 3, tmp_path))
    ddp = SimpleNamespace(world_size=4, max_steps=-1, fit_loop=SimpleNamespace())
    with pytest.raises(ValueError, match=r"runs in 4 processes.*devices=1"):
        callback.on_fit_start(ddp, None)
