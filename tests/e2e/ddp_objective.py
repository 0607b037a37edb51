"""A data-parallel command objective for the multi-GPU end-to-end test, started by the worker
under torchrun with one process per GPU of its slot, on CPU: the gloo backend stands in for
NCCL and the slot's GPU ids are only names in CUDA_VISIBLE_DEVICES.

    python ddp_objective.py OUT_DIR [SECONDS_PER_EPOCH]

Every rank trains a shard of one regression problem through DistributedDataParallel and
calls ``trial.report`` each epoch (rank 0's report is the one sent; the others get its
decision). At the end rank 0 writes ``OUT_DIR/trial-<number>.json``: what each rank saw
(its rank, LOCAL_RANK, CUDA_VISIBLE_DEVICES, the decisions it got, whether it started from
a checkpoint, its weights), gathered with all_gather_object.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import tuneyard


def main(out: Path, epoch_seconds: float) -> None:
    dist.init_process_group("gloo")
    trial = tuneyard.trial_from_env()
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    shard = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    model = DistributedDataParallel(torch.nn.Linear(4, 1))
    state = trial.load()
    if state is not None:
        model.module.load_state_dict(state["model"])
    opt = torch.optim.SGD(model.parameters(), lr=float(trial.params["lr"]))
    decisions = []
    for epoch in trial.epochs():
        for _ in range(10):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x[shard]), y[shard])
            loss.backward()  # DDP averages the gradients of the ranks here
            opt.step()
        time.sleep(epoch_seconds)
        total = torch.nn.functional.mse_loss(model(x[shard]), y[shard]).detach()
        dist.all_reduce(total)
        trial.save({"model": model.module.state_dict()})
        decisions.append(trial.report(epoch, loss=float(total) / world))
    weights = torch.cat([p.detach().flatten() for p in model.module.parameters()])
    seen = {
        "rank": rank,
        "trial_rank": trial.rank,
        "world_size": world,
        "local_rank": int(os.environ["LOCAL_RANK"]),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "decisions": decisions,
        "resumed": state is not None,
        "weights": weights.tolist(),
    }
    everyone: list[dict[str, object] | None] = [None] * world
    dist.all_gather_object(everyone, seen)
    if rank == 0:
        target = out / f"trial-{trial.number}.json"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(everyone))
        os.replace(tmp, target)  # the test reads it as soon as it appears
    # Both ranks leave together: gloo aborts a rank (std::terminate) whose peer tears the
    # group down while it still has work on it, and a rank that dies so makes the whole
    # launch fail, which turns a clean hand-back into one without its checkpoint.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)
