"""How many of the GP samplers' (gp, mfgp) suggestions lie on a boundary of the search
space, on bench/quality's objectives, and the search quality of the same runs.

    python bench/gp_boundary.py [--methods ty-gp-asha,ty-gp-hb] [--objectives crossing]
                                [--seeds 10] [--procs 2] [--workers 4]

Each run is bench/quality's run of that method, objective and seed (the same budget and
simulated workers), with ``GPSampler.suggest`` wrapped to note whether each modelled
suggestion (after the random start-up ones) has a coordinate within 1 % of the range of a
bound. Printed per method and objective: the share of such suggestions (the mean over seeds
of each run's share, and its range), and the best error at half and at the full budget
(mean, std and median over seeds). The GP sampler's module docstring says why the share matters.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Mapping, Sequence
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.quality.methods import ALL
from bench.quality.objectives import OBJECTIVES
from bench.quality.runners import run
from tuneyard.scheduler.samplers.gp import GPSampler

NEAR = 0.01

Task = tuple[str, str, int, int]  # method, objective, seed, workers


def one(task: Task) -> dict[str, Any]:
    """One run: its share of modelled suggestions near a bound and its anytime trace."""
    method, objective, seed, workers = task
    near: list[bool] = []
    original = GPSampler.suggest

    def logged(
        self: GPSampler, number: int, running: Sequence[Mapping[str, Any]] = ()
    ) -> dict[str, Any]:
        params = original(self, number, running)
        if len(self.history) >= self.n_startup:
            u = self.space.to_unit(params)
            near.append(bool(np.any((u < NEAR) | (u > 1.0 - NEAR))))
        return params

    GPSampler.suggest = logged  # type: ignore[method-assign]
    try:
        obj = OBJECTIVES[objective]
        budget = obj.budget_factor * obj.max_epochs
        # One BLAS thread per process, as the service suggests.
        with threadpool_limits(limits=1):
            result = run(ALL[method], obj, seed, budget, workers)
    finally:
        GPSampler.suggest = original  # type: ignore[method-assign]
    return {
        "method": method,
        "objective": objective,
        "near": near,
        "budget": budget,
        "trace": result.trace,
    }


def best_at(trace: Sequence[tuple[int, float]], used: float) -> float:
    """The best error once ``used`` epochs were spent."""
    errors = [e for u, e in trace if u <= used]
    return errors[-1] if errors else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--methods", default="ty-gp-asha,ty-gp-hb")
    p.add_argument("--objectives", default="crossing")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--workers", type=int, default=4)
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    objectives = args.objectives.split(",")
    for m in methods:
        if m not in ALL or ALL[m].sampler not in ("gp", "mfgp"):
            p.error(f"--methods: {m!r} is not a GP method of bench/quality")
    for o in objectives:
        if o not in OBJECTIVES:
            p.error(f"--objectives: {o!r} is not one of {', '.join(OBJECTIVES)}")
    if args.seeds < 1 or args.procs < 1 or args.workers < 1:
        p.error("--seeds, --procs and --workers must be at least 1")
    tasks = [
        (m, o, s, args.workers) for o in objectives for m in methods for s in range(args.seeds)
    ]
    with Pool(args.procs) as pool:
        results = pool.map(one, tasks, chunksize=1)
    print("| objective | method | seeds | on a boundary (range) | 50 % budget | 100 % (median) |")
    print("|---|---|---|---|---|---|")
    for o in objectives:
        for m in methods:
            rs = [r for r in results if r["method"] == m and r["objective"] == o]
            shares = [float(np.mean(r["near"])) for r in rs if r["near"]]
            half = [best_at(r["trace"], r["budget"] / 2) for r in rs]
            full = [best_at(r["trace"], r["budget"]) for r in rs]
            lo, hi = 100 * min(shares), 100 * max(shares)
            share = f"{100 * statistics.mean(shares):.1f} % ({lo:.0f}-{hi:.0f})"
            print(
                f"| {o} | {m} | {len(rs)} | {share} | {statistics.mean(half):.4f} | "
                f"{statistics.mean(full):.4f} ± {statistics.pstdev(full):.4f} "
                f"({statistics.median(full):.4f}) |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
