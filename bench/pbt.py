"""The toy example of the PBT paper (figure 2), run on tuneyard's population-based core.

    python bench/pbt.py --out bench/results/pbt    # 10 seeds, table and plot (README)
    python bench/pbt.py --seeds 3                  # a quick look, no files
    python bench/pbt.py --model --out bench/results/pbt   # the real model (bench/pbt_model.py)

Jaderberg et al., "Population Based Training of Neural Networks", 2017,
https://arxiv.org/abs/1711.09846, figure 2. The model's parameters are
``theta`` in R^2; the objective to maximise is ``Q(theta) = 1.2 - (theta0^2 + theta1^2)``
(optimum 1.2 at theta = 0), but training only sees the surrogate
``Q_hat(theta | h) = 1.2 - (h0 * theta0^2 + h1 * theta1^2)``, whose hyperparameters h weight
the two coordinates. A worker takes gradient-ascent steps on the surrogate with a fixed step
size; with h fixed at [1, 0] it never moves theta1, with [0, 1] never theta0, so neither
reaches the optimum alone. Two workers start at theta = [0.9, 0.9], one with h = [1, 0] and
one with h = [0, 1]; every ``INTERVAL`` steps each is scored by the true Q and, depending on
the method:

* **PBT**: :class:`tuneyard.scheduler.pbt.PopulationRule` (type ``pbt``, quantile 0.5, so the
  worse of the two exploits the better): the worse copies the better's theta and h, then
  explores h (resample with probability 0.25, else scale by 0.8 or 1.2; an h of 0 moves by
  +-0.2 of the range).
* **PB2**: the same rule with type ``pb2``: h chosen by GP-UCB on the improvement of Q per
  interval, both workers' intervals as the data.
* **explore only**: no copying; every worker explores its own h at every interval (PBT's
  explore step, :func:`tuneyard.scheduler.pbt.perturb_explore`).
* **exploit only**: the rule's decision, but the worse worker takes the better's theta and h
  unchanged.
* **grid search**: each worker keeps its h for the whole run (the paper's grid of the two
  initial settings).

Exploit and explore go through the core exactly as the service will call it: each member's
latest score at the boundary, the rule's decision, the lineage. Scores are ``-Q`` (lower is
better, as the core wants). Reported, over 10 seeds: the better worker's Q at several steps
(median), its range at the last step, and the steps until a worker first reached
Q >= 1.19. The paper's result is qualitative: PBT reaches the optimum; explore-only and
exploit-only fall short, and grid search stays at 1.2 - 0.81 = 0.39.

The space is h0, h1 in [0, 1]; the step size is ``LR``; ``STEPS`` steps in all. These were
fixed before the first run (which read Q at the last step only; with 200 steps explore-only
gets there too, late, so the table now reads Q at several steps). Explore runs with the
definition's defaults; the quantile is 0.5 because with two workers a bottom quarter holds
nobody, and the paper's worse worker copies the better one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuneyard.scheduler.pbt import (  # noqa: E402
    Interval,
    Lineage,
    MemberScore,
    ParamMover,
    PopulationRule,
    perturb_explore,
)
from tuneyard.scheduler.space import SearchSpace  # noqa: E402
from tuneyard.spec import StudySpec  # noqa: E402
from tuneyard.spec.pbt import PBTSpec  # noqa: E402

STEPS = 200
INTERVAL = 4
LR = 0.02
THETA0 = (0.9, 0.9)
H0 = ({"h0": 1.0, "h1": 0.0}, {"h0": 0.0, "h1": 1.0})
TARGET = 1.19
# The steps the table reads Q at (the better worker's, median over seeds).
CHECKPOINTS = (20, 40, 100, 200)
METHODS = ("pbt", "pb2", "explore only", "exploit only", "grid search")
SPACE = {
    "h0": {"type": "float", "low": 0.0, "high": 1.0},
    "h1": {"type": "float", "low": 0.0, "high": 1.0},
}


def q(theta: np.ndarray) -> float:
    return float(1.2 - (theta**2).sum())


def step(theta: np.ndarray, h: dict[str, float]) -> np.ndarray:
    """One gradient-ascent step on the surrogate Q_hat(theta | h)."""
    grad = -2.0 * np.array([h["h0"], h["h1"]]) * theta
    return theta + LR * grad


@dataclass
class Worker:
    member: int
    theta: np.ndarray
    h: dict[str, float]
    lineage: Lineage
    curve: list[float] = field(default_factory=list)
    path: list[tuple[float, float]] = field(default_factory=list)


@dataclass
class Run:
    method: str
    seed: int
    curves: list[list[float]]
    paths: list[list[tuple[float, float]]]
    best_final: float
    steps_to_target: int | None
    exploits: int
    reasons: list[str]


def space() -> SearchSpace:
    spec = StudySpec.model_validate({"name": "toy", "space": SPACE})
    return SearchSpace(spec.space)


def run(method: str, seed: int) -> Run:
    s = space()
    spec = PBTSpec(
        type="pb2" if method == "pb2" else "pbt",
        population=2,
        interval=INTERVAL,
        max_resource=STEPS,
        quantile=0.5,
    )
    rule = PopulationRule(s, spec, seed=seed)
    mover = ParamMover(s)
    rng = np.random.default_rng([seed, 1])  # explore-only's own draws
    workers = [Worker(i, np.array(THETA0), dict(h), Lineage.start(i, h)) for i, h in enumerate(H0)]
    for w in workers:
        w.curve.append(q(w.theta))
        w.path.append((float(w.theta[0]), float(w.theta[1])))
    intervals: list[Interval] = []
    start_score = {w.member: -q(w.theta) for w in workers}
    exploits = 0
    reasons: list[str] = []
    for t in range(1, STEPS + 1):
        for w in workers:
            w.theta = step(w.theta, w.h)
            w.curve.append(q(w.theta))
            w.path.append((float(w.theta[0]), float(w.theta[1])))
        if t % INTERVAL or t == STEPS or method == "grid search":
            continue
        # Each member's latest score at this boundary, as reported before anyone decides.
        scores = {
            w.member: MemberScore(w.member, float(t), -q(w.theta), dict(w.h)) for w in workers
        }
        for w in workers:
            intervals.append(
                Interval(
                    w.member, float(t), dict(w.h), start_score[w.member] - scores[w.member].score
                )
            )
        snapshot = {w.member: (w.theta.copy(), dict(w.h), w.lineage) for w in workers}
        for w in workers:
            if method == "explore only":
                new, _ = perturb_explore(s, mover, w.h, frozenset(s.names), spec.explore, rng)
                w.h = {k: float(v) for k, v in new.items()}
                start_score[w.member] = scores[w.member].score
                continue
            others = [m for k, m in scores.items() if k != w.member]
            d = rule.decide(scores[w.member], others, intervals)
            if d.kind == "exploit" and d.donor is not None:
                exploits += 1
                reasons.append(d.reason)
                theta, h, lineage = snapshot[d.donor]
                w.theta = theta.copy()
                w.h = (
                    dict(h)
                    if method == "exploit only"
                    else {k: float(v) for k, v in d.params.items()}
                )
                w.lineage = w.lineage.record(d, donor=lineage)
                start_score[w.member] = scores[d.donor].score
            else:
                start_score[w.member] = scores[w.member].score
    best = max(workers, key=lambda w: w.curve[-1])
    reached = [
        min((i for i, v in enumerate(w.curve) if v >= TARGET), default=None) for w in workers
    ]
    hits = [r for r in reached if r is not None]
    return Run(
        method,
        seed,
        [w.curve for w in workers],
        [w.path for w in workers],
        best.curve[-1],
        min(hits) if hits else None,
        exploits,
        reasons[:3],
    )


def table(runs: list[Run]) -> str:
    head = " | ".join(f"Q at {c}" for c in CHECKPOINTS)
    lines = [
        f"| method | {head} | min-max at {STEPS} | seeds reaching {TARGET} | steps to {TARGET} |",
        "|---|" + "---|" * (len(CHECKPOINTS) + 3),
    ]
    for method in METHODS:
        rs = [r for r in runs if r.method == method]
        if not rs:
            continue
        at = [
            f"{statistics.median(max(c[k] for c in r.curves) for r in rs):.3f}" for k in CHECKPOINTS
        ]
        finals = [r.best_final for r in rs]
        hit = [r.steps_to_target for r in rs if r.steps_to_target is not None]
        steps = f"{statistics.median(hit):g}" if hit else "never"
        lines.append(
            f"| {method} | {' | '.join(at)} | {min(finals):.3f}-{max(finals):.3f} | "
            f"{len(hit)} of {len(rs)} | {steps} |"
        )
    return "\n".join(lines)


def plot(runs: list[Run], out: Path) -> bool:
    if importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = dict(zip(METHODS, ("C0", "C1", "C2", "C3", "C7"), strict=True))
    ax = axes[0]
    for method in METHODS:
        rs = [r for r in runs if r.method == method]
        best = np.array([np.maximum(*map(np.array, r.curves)) for r in rs])
        x = np.arange(best.shape[1])
        # Exploit-only and grid search coincide (the clone copies h = [1, 0] for good): dashed,
        # so both show.
        style = "--" if method == "exploit only" else "-"
        ax.plot(x, np.median(best, axis=0), style, color=colours[method], label=method, zorder=3)
        ax.fill_between(x, best.min(axis=0), best.max(axis=0), color=colours[method], alpha=0.15)
    ax.axhline(1.2, color="k", lw=0.5, ls=":")
    ax.set_xlabel("step")
    ax.set_ylabel("Q of the better worker (median, min-max over seeds)")
    ax.set_ylim(0.3, 1.22)
    ax.legend(loc="lower right")
    ax = axes[1]
    g = np.linspace(-0.1, 1.0, 120)
    xx, yy = np.meshgrid(g, g)
    ax.contour(xx, yy, 1.2 - xx**2 - yy**2, levels=12, colors="0.85", linewidths=0.6)
    for method in METHODS:
        r = next(r for r in runs if r.method == method and r.seed == 0)
        for k, path in enumerate(r.paths):
            p = np.array(path)
            ax.plot(
                p[:, 0], p[:, 1], ".", ms=2, color=colours[method], label=method if k == 0 else None
            )
    ax.set_xlabel("theta0")
    ax.set_ylabel("theta1")
    ax.set_title("both workers' theta, seed 0")
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(out / "pbt_toy.png", dpi=110)
    plt.close(fig)
    return True


def plot_model(runs: Sequence[Any], out: Path, methods: Sequence[str], epochs: int) -> bool:
    """The model benchmark's plot (bench/pbt_model.py): validation error against epochs spent,
    and the best PBT and PB2 members' learning rate over their lives, every seed."""
    if importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    colours = dict(zip(methods, ("C0", "C1", "C3", "C7"), strict=True))
    ax = axes[0]
    grid = np.arange(1, max(r.curve[-1][0] for r in runs) + 1)
    for method in methods:
        rs = [r for r in runs if r.method == method]
        if not rs:
            continue
        ys = []
        for r in rs:
            at, v = np.array([c[0] for c in r.curve]), np.array([c[1] for c in r.curve])
            idx = np.searchsorted(at, grid, side="right") - 1
            ys.append(np.where(idx >= 0, v[np.clip(idx, 0, None)], np.nan))
        y = 100 * np.array(ys)
        ax.plot(grid, np.nanmedian(y, axis=0), color=colours[method], label=method)
        q1, q3 = np.nanpercentile(y, [25, 75], axis=0)
        ax.fill_between(grid, q1, q3, color=colours[method], alpha=0.15)
    ax.set_xlabel("epochs spent (all members or trials)")
    ax.set_ylabel("lowest validation error so far, % (median, IQR)")
    ax.set_ylim(1, 8)
    ax.legend()
    ax = axes[1]
    # Every seed's schedule, not a chosen one: most keep their first learning rate.
    for method, style in (("pbt", "-"), ("pb2", "--")):
        for k, r in enumerate(r for r in runs if r.method == method):
            xs = [e for e, _ in r.schedule] + [float(epochs)]
            ys = [lr for _, lr in r.schedule] + [r.schedule[-1][1]]
            label = f"{method}, best member" if k == 0 else None
            ax.step(xs, ys, style, where="post", color=colours[method], alpha=0.7, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title("the best member's schedule (its lineage), one line per seed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "pbt_model.png", dpi=110)
    plt.close(fig)
    return True


def _methods(given: list[str] | None, known: tuple[str, ...]) -> list[str]:
    unknown = [m for m in given or () if m not in known]
    if unknown:
        raise SystemExit(f"--methods: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    return list(given or known)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument(
        "--methods", nargs="*", default=None, help="some of the methods (default: all of them)"
    )
    ap.add_argument("--out", type=Path, default=None, help="write table.md, results.json, the plot")
    ap.add_argument(
        "--model",
        action="store_true",
        help="the MLP-on-digits benchmark instead (bench/pbt_model.py): pbt, pb2, asha+tpe, "
        "random; writes model_table.md, model_results.json, pbt_model.png",
    )
    args = ap.parse_args()
    if args.model:
        from bench import pbt_model

        model_runs = pbt_model.main(args.seeds, _methods(args.methods, pbt_model.METHODS), args.out)
        if args.out is not None and not plot_model(
            model_runs, args.out, pbt_model.METHODS, pbt_model.Size().epochs
        ):
            print("matplotlib is not installed (a bench extra): no plot")
        return
    methods = _methods(args.methods, METHODS)
    runs: list[Run] = []
    started = time.perf_counter()
    timing: dict[str, float] = {}
    for method in methods:
        t0 = time.perf_counter()
        runs.extend(run(method, seed) for seed in range(args.seeds))
        timing[method] = time.perf_counter() - t0
    text = table(runs)
    print(text)
    print()
    for method, secs in timing.items():
        print(f"{method}: {secs:.1f} s for {args.seeds} seeds")
    print(f"total {time.perf_counter() - started:.1f} s")
    first = next((r for r in runs if r.method == "pbt" and r.reasons), None)
    if first is not None:
        print("\nfirst exploits of PBT, seed 0:")
        for reason in first.reasons:
            print("  " + reason)
    pb2 = next((r for r in runs if r.method == "pb2" and r.reasons), None)
    if pb2 is not None:
        print("first exploits of PB2, seed 0:")
        for reason in pb2.reasons:
            print("  " + reason)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(text + "\n")
        summary: list[dict[str, Any]] = [
            {
                "method": r.method,
                "seed": r.seed,
                "best_final": r.best_final,
                "steps_to_target": r.steps_to_target,
                "exploits": r.exploits,
            }
            for r in runs
        ]
        (args.out / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
        if not plot(runs, args.out):
            print("matplotlib is not installed (a bench extra): no plot")


if __name__ == "__main__":
    main()
