"""The Transformers callback with a real Trainer on a tiny randomly initialised BERT (built
from a config: nothing is downloaded), the service scripted: what it reports, when the
Trainer's checkpoint is kept and training stops, and that a resumed run goes on exactly where
the paused one stopped."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from tests.fakes import FakeService, job, run
from tuneyard.integrations._common import CheckpointMismatch, MissingMetric
from tuneyard.integrations.transformers import CHECKPOINT, TuneyardCallback
from tuneyard.spec import StudySpec
from tuneyard.worker import Trial
from tuneyard.worker.runner import load_objective

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """A model this small trains fastest on one thread; more fight over a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Sequences(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Eight tokens each; the label is whether token 1 appears more often than token 2."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randint(1, 6, (n, 8), generator=gen)
        self.y = ((self.x == 1).sum(1) > (self.x == 2).sum(1)).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.x[i], "labels": self.y[i]}


def model() -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def accuracy(pred: Any) -> dict[str, float]:
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


def trainer(callback: TuneyardCallback, out: Path, epochs: int = 4, **kwargs: Any) -> Trainer:
    settings: dict[str, Any] = {
        "eval_strategy": "epoch",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "learning_rate": 5e-3,
        "per_device_train_batch_size": 16,
        "logging_strategy": "no",
        "seed": 3,
        **kwargs,
    }
    args = TrainingArguments(output_dir=str(out), num_train_epochs=epochs, **settings)
    return Trainer(
        model=model(),
        args=args,
        train_dataset=Sequences(48, 1),
        eval_dataset=Sequences(32, 2),
        compute_metrics=accuracy,
        callbacks=[callback],
    )


def train(trial: Trial, out: Path, **kwargs: Any) -> tuple[TuneyardCallback, Trainer]:
    callback = TuneyardCallback(trial, monitor="eval_loss")
    t = trainer(callback, out, **kwargs)
    callback.train(t)
    return callback, t


def steps(svc: FakeService) -> list[float]:
    return [step for _, step, _, _ in svc.args("report")]


def saved_epoch(folder: Path) -> float:
    return float(json.loads((folder / "trainer_state.json").read_text())["epoch"])


def test_reports_each_epoch_s_evaluation_and_keeps_the_last(tmp_path: Path) -> None:
    svc = FakeService()
    trial = Trial(svc, 1, 5, 0, {}, 0, 3, tmp_path / "ckpt")
    callback, _ = train(trial, tmp_path / "out")
    assert steps(svc) == [1, 2, 3]  # resource_to ends it before num_train_epochs (4)
    _, _, value, metrics = svc.args("report")[-1]
    assert value is None and callback.last_value == metrics["eval_loss"]
    assert {"eval_loss", "eval_accuracy", "eval_runtime"} <= set(metrics)
    assert "epoch" not in metrics and 0 <= metrics["eval_accuracy"] <= 1
    assert saved_epoch(tmp_path / "ckpt" / CHECKPOINT) == 3
    assert list((tmp_path / "out").iterdir()) == []  # moved, not left behind


def test_a_pause_keeps_the_trainer_s_checkpoint_and_ends_training(tmp_path: Path) -> None:
    svc = FakeService({2: ("pause", None)})
    trial = Trial(svc, 1, 5, 0, {}, 0, 4, tmp_path / "ckpt")
    train(trial, tmp_path / "out")
    assert steps(svc) == [1, 2] and trial.decision == "pause"
    kept = tmp_path / "ckpt" / CHECKPOINT
    assert saved_epoch(kept) == 2
    assert {"optimizer.pt", "scheduler.pt", "rng_state.pth", "model.safetensors"} <= {
        p.name for p in kept.iterdir()
    }


@pytest.mark.parametrize("decision", ["stop", "complete"])
def test_stop_ends_training_and_complete_keeps_the_model(tmp_path: Path, decision: str) -> None:
    svc = FakeService({1: (decision, None)})
    trial = Trial(svc, 1, 5, 0, {}, 0, 4, tmp_path / "ckpt")
    train(trial, tmp_path / "out")
    assert steps(svc) == [1]
    assert (tmp_path / "ckpt" / CHECKPOINT).exists() == (decision == "complete")


def test_a_resumed_run_goes_on_where_the_paused_one_stopped(tmp_path: Path) -> None:
    whole = FakeService()
    _, straight = train(Trial(whole, 1, 5, 0, {}, 0, 4, tmp_path / "whole"), tmp_path / "o1")

    ckpt = tmp_path / "split"
    first = FakeService({2: ("pause", None)})
    train(Trial(first, 1, 5, 0, {}, 0, 4, ckpt), tmp_path / "o2")
    second = FakeService()
    _, resumed = train(Trial(second, 1, 5, 0, {}, 2, 4, ckpt), tmp_path / "o3")

    assert steps(first) == [1, 2] and steps(second) == [3, 4]
    assert resumed.state.global_step == straight.state.global_step == 12
    for a, b in zip(whole.args("report")[2:], second.args("report"), strict=True):
        assert a[3]["eval_loss"] == pytest.approx(b[3]["eval_loss"], rel=1e-5)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_an_on_the_spot_promotion_trains_on_to_the_new_end(tmp_path: Path) -> None:
    svc = FakeService({1: ("continue", 3), 3: ("pause", None)})
    trial = Trial(svc, 1, 5, 0, {}, 0, 1, tmp_path / "ckpt")
    train(trial, tmp_path / "out")
    assert steps(svc) == [1, 2, 3] and trial.resource_to == 3
    assert saved_epoch(tmp_path / "ckpt" / CHECKPOINT) == 3


def test_a_promotion_past_num_train_epochs_fails_naming_it(tmp_path: Path) -> None:
    svc = FakeService({1: ("continue", 6)})
    trial = Trial(svc, 1, 5, 0, {}, 0, 1, tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r"promoted to 6 epochs, past .*num_train_epochs=4"):
        train(trial, tmp_path / "out")


def test_a_metric_not_logged_fails_naming_it(tmp_path: Path) -> None:
    trial = Trial(FakeService(), 1, 5, 0, {}, 0, 2, tmp_path / "ckpt")
    callback = TuneyardCallback(trial, monitor="eval_acc")
    with pytest.raises(MissingMetric, match=r"no 'eval_acc' \(it logged: eval_accuracy, "):
        callback.train(trainer(callback, tmp_path / "out"))


def test_a_resume_checks_the_checkpoint_s_epoch(tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    nothing = TuneyardCallback(Trial(FakeService(), 1, 5, 0, {}, 2, 4, ckpt))
    with pytest.raises(CheckpointMismatch, match="resumes after epoch 2, but there is no Trainer"):
        _ = nothing.resume_from
    train(Trial(FakeService({1: ("pause", None)}), 1, 5, 0, {}, 0, 4, ckpt), tmp_path / "o1")
    svc = FakeService()
    with pytest.raises(
        CheckpointMismatch, match="holds epoch 1, but the job resumes after epoch 2"
    ):
        train(Trial(svc, 1, 5, 0, {}, 2, 4, ckpt), tmp_path / "o2")
    # Training from scratch where a resume was due fails before the first step.
    callback = TuneyardCallback(Trial(svc, 1, 5, 0, {}, 1, 4, ckpt))
    with pytest.raises(CheckpointMismatch, match=r"resume_from_checkpoint=callback\.resume_from"):
        trainer(callback, tmp_path / "o3").train()
    assert svc.args("report") == []


def test_arguments_the_callback_cannot_work_with_are_refused(tmp_path: Path) -> None:
    trial = Trial(FakeService(), 1, 5, 0, {}, 0, 3, tmp_path / "ckpt")
    with pytest.raises(ValueError, match=r'eval_strategy is "no".*eval_strategy="epoch"'):
        train(trial, tmp_path / "o1", eval_strategy="no")
    with pytest.raises(ValueError, match=r"num_train_epochs=2 ends before .* resource_to \(3\)"):
        train(trial, tmp_path / "o2", epochs=2)
    with pytest.raises(ValueError, match="max_steps=5 overrides num_train_epochs"):
        train(trial, tmp_path / "o3", max_steps=5)


def test_the_example_pauses_and_resumes_through_the_worker_s_checkpoint_store(
    tmp_path: Path,
) -> None:
    """examples/transformers_tiny.py as its study runs it: the job runner uploads the kept
    folder at the pause and restores it for the resume in another directory."""
    from examples import transformers_tiny

    spec = StudySpec.model_validate(
        yaml.safe_load((EXAMPLES / "transformers_study.yaml").read_text())
    )
    assert (
        spec.execution is not None and spec.scheduler.max_resource == transformers_tiny.MAX_EPOCHS
    )
    train = load_objective(spec.execution.entrypoint or "")
    params = {
        "lr": 5e-3,
        "hidden": 32,
        "layers": 2,
        "schedule": "linear",
        "weight_decay": 1e-3,
        "batch_size": 64,
    }
    assert set(params) == set(spec.space)
    svc = FakeService({2: ("pause", None)})
    assert run(svc, job(to=3, params=params), train, tmp_path, "worker-a") == "pause"
    ((_, location),) = svc.args("pause")
    svc.script = {}
    resume = job("resume", 2, 4, location, params=params)
    assert run(svc, resume, train, tmp_path, "worker-b") == "complete"
    assert steps(svc) == [1, 2, 3, 4]
    losses = [m["eval_loss"] for _, _, _, m in svc.args("report")]
    ((_, value),) = svc.args("complete")
    assert value == losses[-1] < losses[0]


def test_training_over_several_processes_is_refused(tmp_path: Path) -> None:
    """Each process of a torchrun would report the same epochs (the arguments of one stand
    in for it: a unit test can't start several)."""
    callback = TuneyardCallback(Trial(FakeService(), 1, 5, 0, {}, 0, 3, tmp_path))
    args = SimpleNamespace(world_size=2, eval_strategy="epoch", max_steps=-1, num_train_epochs=3)
    with pytest.raises(ValueError, match=r"runs in 2 processes.*one process"):
        callback.on_train_begin(args, SimpleNamespace(epoch=0), SimpleNamespace())
