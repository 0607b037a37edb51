"""A command-line objective for end-to-end tests: later trials are worse, so paused trials are
promoted through ``next`` (resumed by whichever worker asks) rather than on the spot."""

from __future__ import annotations

import math
import sys

import tuneyard


def main() -> int:
    trial = tuneyard.trial_from_env()
    state = trial.load(default={"epoch": 0})
    if state["epoch"] != int(trial.resource_from):
        print(
            f"checkpoint at {state['epoch']}, job starts at {trial.resource_from}", file=sys.stderr
        )
        return 2
    for epoch in trial.epochs():
        state["epoch"] = epoch
        print(f"epoch {epoch}: trial {trial.number}", flush=True)
        loss = 0.01 * trial.number + 0.001 * float(sys.argv[1]) + 0.5 / math.sqrt(epoch)
        trial.report(epoch, val_loss=loss)
    trial.save(state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
