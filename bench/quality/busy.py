"""Where a multi-fidelity method's epochs go at 1 and at many workers (issue 20, item 2).

Runs one (method, objective, seed) the way :func:`bench.quality.runners.run_tuneyard` does,
keeps the simulator's result, and says per run:

- ``best``: the best validation error seen (the benchmark's score), the trial and epoch of it;
- ``at_max``: that trial's configuration trained alone to ``max_epochs`` (same model seed),
  its best error then: what the search *found*, apart from how deep it could train it;
- ``deepest``: the most epochs any trial trained; ``wall``: the simulated time the budget
  lasted (``budget / workers`` when no worker idles);
- ``by_bracket``: epochs trained per bracket; ``late``: epochs of trials started in the
  last 40 % of the wall time.

    python -m bench.quality.busy ty-tpe-hb branin-2d,crossing 1,16 5 [--budget-factor 10]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from typing import Any

from bench.quality.methods import ALL
from bench.quality.objectives import OBJECTIVES
from bench.quality.runners import Ledger, Trainer, model_seed, tuneyard_parts
from tuneyard.scheduler.samplers.base import ModelSampler
from tuneyard.scheduler.schedulers import make_scheduler
from tuneyard.scheduler.simulator import SimTrial, Simulator


def one(name: str, objective_name: str, seed: int, workers: int, factor: int) -> dict[str, Any]:
    method, objective = ALL[name], OBJECTIVES[objective_name]
    budget = factor * objective.max_epochs
    trainer = Trainer(objective, seed, Ledger(budget))
    sampler, spec = tuneyard_parts(method, objective, seed)
    best: list[Any] = [math.inf, -1, 0]

    def curve(t: SimTrial, step: float) -> float:
        error = trainer.epoch(t.number, t.params, round(step))
        if error < best[0]:
            best[:] = [error, t.number, round(step)]
        return error

    res = Simulator(
        make_scheduler(spec),
        suggest=sampler.suggest,
        curve=None,
        trial_curve=curve,
        on_end=lambda t: trainer.drop(t.number),
        budget=budget,
        max_trials=budget,
        workers=workers,
        sampler=sampler if isinstance(sampler, ModelSampler) else None,
    ).run()
    by_bracket: dict[int, float] = defaultdict(float)
    for t in res.trials:
        by_bracket[t.bracket] += t.trained
    starts = {e.trial_id: e.time for e in res.events if e.kind == "start"}
    found = res.trials[best[1]]
    run = objective.start(found.params, model_seed(seed, found.number))
    return {
        "best": best[0],
        "at_max": min(run.step() for _ in range(objective.max_epochs)),
        "deepest": max(t.trained for t in res.trials),
        "wall": res.elapsed,
        "trials": len(res.trials),
        "by_bracket": dict(sorted(by_bracket.items())),
        "late": sum(t.trained for t in res.trials if starts[t.trial_id] > 0.6 * res.elapsed),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("method")
    ap.add_argument("objectives", help="comma-separated")
    ap.add_argument("workers", help="comma-separated worker counts")
    ap.add_argument("seeds", type=int)
    ap.add_argument("--budget-factor", type=int, default=10)
    a = ap.parse_args()
    for obj in a.objectives.split(","):
        for w in (int(x) for x in a.workers.split(",")):
            started = time.perf_counter()
            rows = [one(a.method, obj, s, w, a.budget_factor) for s in range(a.seeds)]
            n = len(rows)

            def mean(key: str, rows: list[dict[str, Any]] = rows, n: int = n) -> float:
                return sum(r[key] for r in rows) / n

            brackets: dict[int, float] = defaultdict(float)
            for r in rows:
                for b, v in r["by_bracket"].items():
                    brackets[b] += v / n
            print(
                f"{a.method} {obj} {w}w: best {mean('best'):.4f}, at_max {mean('at_max'):.4f}, "
                f"deepest {mean('deepest'):.1f}, wall {mean('wall'):.1f}, "
                f"trials {mean('trials'):.0f}, late {mean('late'):.0f}, by bracket "
                f"{ {b: round(v) for b, v in sorted(brackets.items())} } "
                f"({time.perf_counter() - started:.0f} s)"
            )


if __name__ == "__main__":
    main()
