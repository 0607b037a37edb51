"""An MLP on scikit-learn's bundled digits for population-based training (PyTorch, SGD).

The learning rate and momentum are mutable: a member that exploits a better one resumes from
that member's checkpoint with perturbed values, so over the run the population discovers a
schedule rather than a constant. The hidden width is fixed (``mutable: false`` in
examples/pbt_study.yaml): a checkpoint only fits a model of its own shape.

The one thing a PBT objective must do that another need not: after restoring the optimizer's
state, set the parameters the job was given. ``load_state_dict`` brings back the learning rate
the checkpoint was saved with, which after an exploit is the donor's old one.

    pip install torch   # an optional extra, not a tuneyard requirement
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

METRIC = "val_error"


@lru_cache(maxsize=1)
def _data() -> tuple[Any, Any, Any, Any]:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return tuple(train_test_split(x, y, test_size=0.25, random_state=0, stratify=y))  # type: ignore[return-value]


def train(trial: Any) -> float | None:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(trial.number)
    x_train, x_val, y_train, y_val = (torch.tensor(a) for a in _data())
    units = int(trial.params.get("units", 64))
    model = torch.nn.Sequential(
        torch.nn.Linear(64, units), torch.nn.ReLU(), torch.nn.Linear(units, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    path = trial.checkpoint_dir / "member.pt"
    if path.exists():
        state = torch.load(path, weights_only=False)
        if state["epoch"] != int(trial.resource_from):
            raise RuntimeError(
                f"checkpoint at epoch {state['epoch']}, job starts at {trial.resource_from}"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
    for group in opt.param_groups:  # this job's parameters, not the checkpoint's
        group["lr"] = float(trial.params["lr"])
        group["momentum"] = float(trial.params["momentum"])
    gen = torch.Generator().manual_seed(trial.number * 1000 + int(trial.resource_from))
    loss_fn = torch.nn.CrossEntropyLoss()
    error = None
    epoch = int(trial.resource_from)
    for epoch in trial.epochs():
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(x_train), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            loss_fn(model(x_train[idx]), y_train[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            error = float((model(x_val).argmax(1) != y_val).float().mean())
        trial.report(epoch, **{METRIC: error})
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch}, path)
    return error
