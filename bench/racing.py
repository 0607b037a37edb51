"""Racing on a noisy simulated objective: the compute it saves at equal final quality.

    python bench/racing.py [--seeds 10] [--trials 60] [--replicates 5] [--samplers random,tpe]
                           [--confidence 0.95] [--noise 0.15] [--difficulty 0.3]

The first step of issue 17's benchmark: the pure core alone (the sampler, the aggregate and
the racing rule of ``tuneyard.scheduler``) in a self-contained loop, no service, no Optuna.

The objective: a smooth true loss of three hyperparameters (learning rate, momentum, width)
plus, per replicate k, a difficulty ``b_k ~ N(0, difficulty)`` that every configuration
shares (a hard fold, an unlucky seed: what the paired test cancels) and the configuration's
own noise ``N(0, noise)`` on that replicate. Each replicate costs ``EPOCHS`` epochs: compute is
counted in fold-epochs.

Per sampler and study seed, two runs:

* **no racing**: ``--trials`` trials, each evaluated on every replicate; the budget B is
  what that costs (trials x replicates x epochs);
* **racing**: trials raced against the incumbent (the best mean among trials that ran every
  replicate) after each replicate, until the same budget B is spent.

A run's quality at any point is the *true* loss (without noise) of the configuration it would
return then: the best mean among trials that ran every replicate. Reported, as medians over
the study seeds: the final true loss at equal compute B, and the compute each run needed to
reach the target quality, the upper quartile of the final true losses of the runs without
racing (a quality three in four of them reach within the budget).

Samplers learn from aggregates: a complete trial is observed with its mean at resource
``replicates``, a raced-out one with its mean so far at the number of replicates it ran, so
TPE ranks it below the complete trials (the racing rule's verdict), as it does early-stopped
trials.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuneyard.scheduler.replicates import ReplicateScores, aggregate, race  # noqa: E402
from tuneyard.scheduler.samplers.base import ModelSampler, Observation, make_sampler  # noqa: E402
from tuneyard.scheduler.space import SearchSpace  # noqa: E402
from tuneyard.spec import SamplerSpec, StudySpec  # noqa: E402
from tuneyard.spec.evaluation import RacingSpec  # noqa: E402

EPOCHS = 10  # per replicate
SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99},
    "width": {"type": "int", "low": 16, "high": 1024, "log": True},
}


def true_loss(p: dict[str, Any]) -> float:
    """The loss a configuration would have on average over infinitely many replicates."""
    return (
        0.1
        + (math.log10(p["lr"]) + 2.0) ** 2 / 4.0
        + (p["momentum"] - 0.9) ** 2
        + (math.log2(p["width"]) - 8.0) ** 2 / 16.0
    )


@dataclass
class Problem:
    replicates: int
    noise: float
    difficulty: float

    def replicate_scores(
        self, p: dict[str, Any], rng: np.random.Generator, b: np.ndarray
    ) -> list[float]:
        """One draw of the configuration's score on every replicate (used in order)."""
        return (true_loss(p) + b + rng.normal(0.0, self.noise, self.replicates)).tolist()


@dataclass
class Run:
    """A study's trajectory: after each trial, the compute spent and the true loss of the
    configuration it would return."""

    compute: list[float] = field(default_factory=list)
    quality: list[float] = field(default_factory=list)
    trials: int = 0
    raced: int = 0
    replicates_of_raced: list[int] = field(default_factory=list)

    def quality_at(self, budget: float) -> float:
        best = math.inf
        for c, q in zip(self.compute, self.quality, strict=True):
            if c > budget:
                break
            best = q
        return best

    def compute_to_reach(self, target: float) -> float:
        for c, q in zip(self.compute, self.quality, strict=True):
            if q <= target:
                return c
        return math.inf


def run_study(
    sampler_type: str,
    seed: int,
    problem: Problem,
    budget: float,
    rule: RacingSpec | None,
) -> Run:
    spec = StudySpec.model_validate({"name": "racing", "space": SPACE})
    space = SearchSpace(spec.space)
    sampler = make_sampler(SamplerSpec(type=sampler_type), space, seed)  # type: ignore[arg-type]
    # The replicates' difficulties are the problem's, fixed per study seed; each evaluation
    # draws its own noise.
    b = np.random.default_rng([seed, 10**6]).normal(0.0, problem.difficulty, problem.replicates)
    run = Run()
    spent = 0.0
    incumbent: ReplicateScores | None = None
    incumbent_mean = math.inf
    best_true = math.inf
    number = 0
    while spent < budget:
        params = sampler.suggest(number)
        draws = problem.replicate_scores(params, np.random.default_rng([seed, number]), b)
        scores: dict[int, float] = {}
        raced = False
        for k, value in enumerate(draws):
            scores[k] = value
            spent += EPOCHS
            if rule is not None and len(scores) < problem.replicates:
                mine = ReplicateScores(number, scores)
                if race(mine, incumbent, rule, total=problem.replicates).stop:
                    raced = True
                    break
        mean = aggregate(scores.values()).value
        if isinstance(sampler, ModelSampler):
            sampler.observe([Observation(number, params, float(len(scores)), mean)])
        run.trials += 1
        if raced:
            run.raced += 1
            run.replicates_of_raced.append(len(scores))
        elif mean < incumbent_mean:
            incumbent, incumbent_mean = ReplicateScores(number, dict(scores)), mean
            best_true = true_loss(params)
        run.compute.append(spent)
        run.quality.append(best_true)
        number += 1
    return run


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def iqr(xs: list[float]) -> str:
    q1, q3 = np.percentile(xs, [25, 75])
    return f"{q1:.3f}-{q3:.3f}"


def compare(sampler: str, args: argparse.Namespace, log: Callable[[str], None]) -> list[str]:
    """One table row per mode for this sampler: the runs without racing set the budget and
    the target; the racing runs are measured against both."""
    problem = Problem(args.replicates, args.noise, args.difficulty)
    budget = float(args.trials * args.replicates * EPOCHS)
    rule = RacingSpec(confidence=args.confidence)
    plain = [run_study(sampler, s, problem, budget, None) for s in range(args.seeds)]
    raced = [run_study(sampler, s, problem, budget, rule) for s in range(args.seeds)]
    # A quality three of four runs without racing reach within the budget.
    target = float(np.percentile([r.quality_at(budget) for r in plain], 75))
    reach_plain = median([r.compute_to_reach(target) for r in plain])
    rows = []
    for name, runs in (("no racing", plain), (f"racing {args.confidence}", raced)):
        final = [r.quality_at(budget) for r in runs]
        reach = [r.compute_to_reach(target) for r in runs]
        reached = sum(math.isfinite(c) for c in reach)
        per_raced = [float(k) for r in runs for k in r.replicates_of_raced]
        saved = 1 - median(reach) / reach_plain
        rows.append(
            f"| {sampler} | {name} | {median([float(r.trials) for r in runs]):.0f} "
            f"| {median([r.raced / r.trials for r in runs]):.0%} "
            f"| {f'{median(per_raced):.0f}' if per_raced else '-'} "
            f"| {median(final):.3f} ({iqr(final)}) "
            f"| {median(reach):,.0f} ({reached}/{len(reach)}) "
            f"| {'-' if runs is plain else f'{saved:.0%}'} |"
        )
        log(rows[-1])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=60, help="trials of the run without racing")
    ap.add_argument("--replicates", type=int, default=5)
    ap.add_argument("--samplers", default="random,tpe")
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--noise", type=float, default=0.15)
    ap.add_argument("--difficulty", type=float, default=0.3)
    args = ap.parse_args()
    budget = args.trials * args.replicates * EPOCHS
    print(
        f"{args.replicates} replicates x {EPOCHS} epochs, noise {args.noise}, difficulty "
        f"{args.difficulty}, budget {budget:,} fold-epochs, {args.seeds} seeds"
    )
    print()
    print(
        "| sampler | mode | trials | raced out | replicates when raced | true loss at the "
        "budget (IQR) | fold-epochs to the target (runs that reached it) | saved |"
    )
    print("|---|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    for sampler in args.samplers.split(","):
        compare(sampler, args, print)
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
