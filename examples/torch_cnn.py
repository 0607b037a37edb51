"""A small CNN on scikit-learn's bundled digits (8x8 images), trained with PyTorch.

Uses the GPU the worker pinned (``CUDA_VISIBLE_DEVICES``) when there is one, the CPU otherwise.
Model and optimizer state are checkpointed after each job, so a promoted trial resumes on any
worker exactly where it paused. Hyperparameters: ``lr``, ``batch_size``, ``channels``,
``momentum``, optional ``dropout``; reports ``val_error`` each epoch.

    pip install torch   # an optional extra, not a tuneyard requirement
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

METRIC = "val_error"


@lru_cache(maxsize=1)
def _data() -> tuple[Any, Any, Any, Any]:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    return tuple(train_test_split(x, y, test_size=0.25, random_state=0, stratify=y))  # type: ignore[return-value]


def build(params: dict[str, Any]) -> Any:
    import torch.nn as nn

    c = int(params.get("channels", 16))
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c, 2 * c, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(float(params.get("dropout", 0.1))),
        nn.Linear(2 * c * 16, 10),
    )


def train(trial: Any) -> float | None:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(trial.number)
    x_train, x_val, y_train, y_val = _data()
    xt = torch.tensor(x_train, device=device)
    yt = torch.tensor(y_train, device=device)
    xv = torch.tensor(x_val, device=device)
    yv = torch.tensor(y_val, device=device)

    model = build(trial.params).to(device)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=float(trial.params.get("lr", 0.05)),
        momentum=float(trial.params.get("momentum", 0.9)),
    )
    path = trial.checkpoint_dir / "model.pt"
    if path.exists():
        state = torch.load(path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if state["epoch"] != int(trial.resource_from):
            raise RuntimeError(
                f"checkpoint at epoch {state['epoch']}, job starts at {trial.resource_from}"
            )
    batch = int(trial.params.get("batch_size", 64))
    gen = torch.Generator(device="cpu").manual_seed(trial.number)
    loss_fn = torch.nn.CrossEntropyLoss()
    error = None
    epoch = int(trial.resource_from)
    for epoch in trial.epochs():
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(xt), generator=gen).to(device)
        for i in range(0, len(xt), batch):
            idx = order[i : i + batch]
            opt.zero_grad()
            loss_fn(model(xt[idx]), yt[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            error = float((model(xv).argmax(1) != yv).float().mean())
        metrics = {"epoch_seconds": time.perf_counter() - started}
        if device.type == "cuda":
            metrics["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
        trial.report(epoch, **{METRIC: error}, **metrics)
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "epoch": epoch,
            "device": str(device),
        },
        path,
    )
    return error
