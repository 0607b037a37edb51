"""examples/torch_cnn.py on the CPU: trains, pauses with model + optimizer state, and resumes
in another working directory exactly where it paused."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.fakes import FakeService, job
from tuneyard.worker.checkpoints import FilesystemCheckpointStore
from tuneyard.worker.runner import load_objective, run_assignment


def test_torch_cnn_pauses_and_resumes_elsewhere(tmp_path: Path) -> None:
    train = load_objective("examples.torch_cnn:train")
    store = FilesystemCheckpointStore(tmp_path / "shared")
    first = FakeService({2: ("pause", 2)})
    a = job("new", 0, 2)
    a = a.model_copy(update={"params": {"lr": 0.05, "batch_size": 64, "channels": 8}})
    assert run_assignment(first, 1, a, train, store, tmp_path / "a") == "pause"  # type: ignore[arg-type]
    (location,) = [c[1][1] for c in first.calls if c[0] == "pause"]
    saved = torch.load(Path(location) / "model.pt", weights_only=False)
    assert saved["epoch"] == 2 and "optimizer" in saved

    second = FakeService({4: ("complete", 4)})
    b = a.model_copy(
        update={"kind": "resume", "resource_from": 2, "resource_to": 4, "checkpoint": location}
    )
    assert run_assignment(second, 1, b, train, store, tmp_path / "b") == "complete"  # type: ignore[arg-type]
    errors = [c[1][3]["val_error"] for c in first.calls + second.calls if c[0] == "report"]
    steps = [c[1][1] for c in first.calls + second.calls if c[0] == "report"]
    assert steps == [1, 2, 3, 4]
    assert errors[-1] < 0.3 and errors[-1] <= errors[0]
