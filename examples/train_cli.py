"""A command-line objective: any program that can run under a worker can be tuned.

    execution:
      command: ["python", "examples/train_cli.py", "--lr={lr}", "--width={width}"]

The worker starts this script for each job with the trial in ``TUNEYARD_*`` variables;
``tuneyard.trial_from_env()`` reads them. Reports go straight to the API; the decisions say
when to stop. State saved to the trial's checkpoint directory travels with the trial, so a
paused trial resumes on any worker where it stopped. What the script prints is the trial's
log (``tuneyard trial log ID``).

A shell script can do the same with ``tuneyard report --step N --value V``, which prints the
decision.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import tuneyard


def loss_at(lr: float, width: int, epoch: int) -> float:
    """A learning curve: the best lr is near 0.03, wider is a little better."""
    final = 0.05 + 0.2 * abs(math.log10(lr) - math.log10(0.03)) + 2.0 / width
    return final + 0.8 * math.exp(-0.35 * epoch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--epoch-seconds", type=float, default=0.0, help="simulated work")
    args = parser.parse_args()

    trial = tuneyard.trial_from_env()
    state = trial.load(default={"epoch": 0})
    if state["epoch"] != int(trial.resource_from):
        print(
            f"checkpoint holds epoch {state['epoch']}, the job starts at {trial.resource_from}",
            file=sys.stderr,
        )
        return 2
    print(f"trial {trial.number}: lr={args.lr:g} width={args.width}, from epoch {state['epoch']}")
    for epoch in trial.epochs():
        time.sleep(args.epoch_seconds)
        loss = loss_at(args.lr, args.width, epoch)
        state["epoch"] = epoch
        print(f"epoch {epoch}: val_loss {loss:.4f}", flush=True)
        decision = trial.report(epoch, val_loss=loss)
        if decision != "continue":
            print(f"told to {decision}: {trial.reason}")
    trial.save(state)  # what a promoted (or handed back) trial resumes from
    return 0


if __name__ == "__main__":
    sys.exit(main())
