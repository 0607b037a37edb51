"""From run results to the tables, the verdict on the goal and the plot.

**Score.** The hypervolume of a run at ``E`` epochs is that of its final evaluations (trials
that trained their last epoch) made within the first ``E`` epochs, against the problem's fixed
reference point; dominated points and points outside the reference add nothing, and every
point of these problems is feasible (no constraints). It is shown as a fraction of the true
front's hypervolume (both problems know theirs: ZDT1's analytically, the MLP's from its table
of every configuration; a problem without one would be measured against the best front that
any run found).
Across seeds: mean ± standard error.

**Held out.** Which tuneyard method is "best" is decided on the first half of the seeds
(0-4 of 10) only: the multi-fidelity method with the lowest mean rank, over the problems, of
its mean final hypervolume; Optuna's best is chosen per problem on the same seeds, in its
favour. The verdict is then read on the other half (5-9), which chose nothing.

**The goal** (issue 16): at equal epochs, tuneyard's best multi-fidelity method reaches a
higher mean hypervolume at half the budget than Optuna's best at the full budget, on each
problem.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.multi_objective.methods import ALL
from bench.multi_objective.problems import PROBLEMS
from tuneyard.scheduler.multi import hypervolume

FRACTIONS = (0.25, 0.5, 1.0)
Results = Sequence[dict[str, Any]]


def front_hypervolume(
    finals: Sequence[Sequence[float]], epochs: float, reference: Sequence[float]
) -> float:
    """Hypervolume of the final evaluations made within the first ``epochs`` epochs."""
    points = [f[1:] for f in finals if f[0] <= epochs]
    return hypervolume(np.array(points), reference) if points else 0.0


def yardstick(problem: str, results: Results) -> float:
    """What a hypervolume is divided by: the true front's, else the best front found."""
    p = PROBLEMS[problem]
    if p.true_hypervolume is not None:
        return p.true_hypervolume()
    points = [f[1:] for r in results if r["problem"] == problem for f in r["finals"]]
    best = hypervolume(np.array(points), p.reference) if points else 0.0
    return best if best > 0 else 1.0


def split_seeds(results: Results) -> tuple[list[int], list[int]]:
    """The seeds that choose (the first half) and the held-out ones (the rest)."""
    seeds = sorted({int(r["seed"]) for r in results})
    half = max(1, len(seeds) // 2)
    return seeds[:half], seeds[half:]


@dataclass
class Cell:
    """One (problem, method): per-seed hypervolume fractions at each budget fraction."""

    values: dict[float, list[float]]
    finals: list[int]
    trials: list[int]
    seconds: list[float]

    def mean(self, f: float) -> float:
        return float(np.mean(self.values[f]))

    def sem(self, f: float) -> float:
        v = self.values[f]
        return float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


def cells(results: Results, seeds: Sequence[int] | None = None) -> dict[str, dict[str, Cell]]:
    """problem -> method -> Cell over ``seeds`` (default: all), seeds in order."""
    scale = {p: yardstick(p, results) for p in {r["problem"] for r in results}}
    out: dict[str, dict[str, Cell]] = defaultdict(dict)
    for r in sorted(results, key=lambda r: (r["problem"], r["method"], r["seed"])):
        if seeds is not None and r["seed"] not in seeds:
            continue
        ref = PROBLEMS[r["problem"]].reference
        empty = Cell({f: [] for f in FRACTIONS}, [], [], [])
        cell = out[r["problem"]].setdefault(r["method"], empty)
        for f in FRACTIONS:
            hv = front_hypervolume(r["finals"], f * r["budget"], ref)
            cell.values[f].append(hv / scale[r["problem"]])
        cell.finals.append(len(r["finals"]))
        cell.trials.append(r["trials"])
        cell.seconds.append(r["seconds"])
    return out


def _label(method: str) -> str:
    return ALL[method].label if method in ALL else method


@dataclass
class Choice:
    """The methods the selection seeds chose: tuneyard's one, Optuna's per problem."""

    tuneyard: str
    optuna: dict[str, str]
    ranks: dict[str, float]


def choose(results: Results) -> Choice | None:
    selection, _ = split_seeds(results)
    by_problem = cells(results, selection)
    tuneyard = sorted(
        {
            m
            for by_method in by_problem.values()
            for m in by_method
            if m in ALL and ALL[m].framework == "tuneyard" and ALL[m].multi_fidelity
        }
    )
    tuneyard = [m for m in tuneyard if all(m in c for c in by_problem.values())]
    optuna: dict[str, str] = {}
    for problem, by_method in by_problem.items():
        ours = [m for m in by_method if m in ALL and ALL[m].framework == "optuna"]
        if ours:
            optuna[problem] = max(ours, key=lambda m: (by_method[m].mean(1.0), m))
    if not tuneyard or len(optuna) != len(by_problem):
        return None
    ranks: dict[str, list[int]] = defaultdict(list)
    for by_method in by_problem.values():
        order = sorted(tuneyard, key=lambda m: -by_method[m].mean(1.0))
        for i, m in enumerate(order):
            ranks[m].append(i + 1)
    mean_rank = {m: float(np.mean(ranks[m])) for m in tuneyard}
    best = min(tuneyard, key=lambda m: (mean_rank[m], m))
    return Choice(best, optuna, mean_rank)


def _fmt(cell: Cell, f: float) -> str:
    return f"{cell.mean(f):.3f} ± {cell.sem(f):.3f}"


def table(results: Results) -> str:
    """Markdown: one table per problem over every seed, methods by their final mean."""
    choice = choose(results)
    lines: list[str] = []
    for problem, by_method in sorted(cells(results).items()):
        p = PROBLEMS[problem]
        budget = max(r["budget"] for r in results if r["problem"] == problem)
        seeds = len(next(iter(by_method.values())).values[1.0])
        against = "the true front" if p.true_hypervolume is not None else "the best front found"
        lines.append(
            f"### {p.title}\n\nbudget {budget} epochs ({p.max_epochs} per full trial), {seeds} "
            f"seeds; hypervolume of the final evaluations against reference point "
            f"{p.reference}, as a fraction of {against}'s "
            f"({yardstick(problem, results):.4f}); mean ± standard error over seeds\n"
        )
        lines.append("| method | 25 % | 50 % | 100 % | final evaluations | trials | s/run |")
        lines.append("|---|---|---|---|---|---|---|")
        for method, cell in sorted(by_method.items(), key=lambda kv: -kv[1].mean(1.0)):
            label = _label(method)
            if choice and method in (choice.tuneyard, choice.optuna.get(problem)):
                label = f"**{label}**"
            row = [label, *(_fmt(cell, f) for f in FRACTIONS)]
            row += [f"{np.mean(cell.finals):.0f}", f"{np.mean(cell.trials):.0f}"]
            row.append(f"{np.mean(cell.seconds):.1f}")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def _p_greater(a: Sequence[float], b: Sequence[float]) -> float:
    """One-sided Mann-Whitney p-value that ``a`` tends to be higher than ``b``."""
    from scipy.stats import mannwhitneyu

    if len(a) < 2 or len(b) < 2:
        return math.nan
    return float(mannwhitneyu(a, b, alternative="greater").pvalue)


def mean_curve(runs: Results, grid: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over runs of the hypervolume fraction after ``grid`` epochs."""
    curves = []
    for r in runs:
        ref = PROBLEMS[r["problem"]].reference
        curves.append([front_hypervolume(r["finals"], e, ref) / scale for e in grid])
    a = np.array(curves)
    sem = a.std(axis=0, ddof=1) / math.sqrt(len(a)) if len(a) > 1 else np.zeros(len(grid))
    return a.mean(axis=0), sem


def reach(runs: Results, target: float, scale: float) -> float | None:
    """Fraction of the budget at which the mean curve first reaches ``target`` (None: never)."""
    budget = int(runs[0]["budget"])
    grid = np.arange(1, budget + 1)
    mean, _ = mean_curve(runs, grid, scale)
    hit = np.nonzero(mean >= target - 1e-12)[0]
    return float(grid[hit[0]] / budget) if hit.size else None


def verdict(results: Results) -> str:
    choice = choose(results)
    if choice is None:
        return "No verdict: it needs tuneyard multi-fidelity methods and Optuna on every problem."
    selection, held_out = split_seeds(results)
    lines = [
        f"Chosen on seeds {selection[0]}-{selection[-1]}: **{_label(choice.tuneyard)}** "
        f"(mean rank {choice.ranks[choice.tuneyard]:.1f} of "
        f"{len(choice.ranks)} multi-fidelity methods); Optuna's best per problem: "
        + ", ".join(f"{p}: {_label(m)}" for p, m in sorted(choice.optuna.items()))
        + ".",
        "",
    ]
    for name, seeds in (("held-out", held_out), ("selection", selection)):
        if not seeds:
            continue
        by_problem = cells(results, seeds)
        lines += [
            f"**{name.capitalize()} seeds {seeds[0]}-{seeds[-1]}.** tuneyard at half the budget "
            "and at the full budget against Optuna at the full budget; *p*: one-sided "
            "Mann-Whitney test that tuneyard's hypervolumes are higher; *reached at*: where "
            "tuneyard's mean curve first gets to Optuna's final mean.",
            "",
            "| problem | Optuna at 100 % | tuneyard at 50 % | difference | p | tuneyard at 100 % "
            "| difference | p | reached at | goal met |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for problem in sorted(by_problem):
            ours, theirs = (
                by_problem[problem][choice.tuneyard],
                by_problem[problem][choice.optuna[problem]],
            )
            target = theirs.mean(1.0)
            runs = [
                r
                for r in results
                if r["problem"] == problem and r["method"] == choice.tuneyard and r["seed"] in seeds
            ]
            at = reach(runs, target, yardstick(problem, results))
            half, full = ours.mean(0.5), ours.mean(1.0)
            lines.append(
                f"| {problem} | {_fmt(theirs, 1.0)} | {_fmt(ours, 0.5)} | {half - target:+.3f} | "
                f"{_p_greater(ours.values[0.5], theirs.values[1.0]):.3f} | {_fmt(ours, 1.0)} | "
                f"{full - target:+.3f} | {_p_greater(ours.values[1.0], theirs.values[1.0]):.3f} | "
                f"{'never' if at is None else f'{100 * at:.0f} %'} | "
                f"{'yes' if half > target else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines)


# Colour: the sampler; line style: early stopping (solid), none (dotted), Optuna (dashed).
_COLORS = {
    "random": "tab:gray",
    "nsga2": "tab:green",
    "nsga2-p20": "tab:olive",
    "motpe": "tab:blue",
    "tpe": "tab:orange",
}


def _style(method: str) -> tuple[str, str]:
    m = ALL.get(method)
    if m is None:
        return "tab:cyan", "-"
    color = _COLORS.get(m.sampler, "black")
    if m.framework == "optuna":
        return color, "--"
    if not m.multi_fidelity:
        return color, ":"
    return color, "-." if m.ranking == "epsnet" else "-"


def plot(results: Results, path: Path) -> None:
    """Mean hypervolume fraction against epochs trained, one panel per problem, every seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    choice = choose(results)
    by_problem: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        by_problem[r["problem"]][r["method"]].append(r)
    fig, axes = plt.subplots(
        1, len(by_problem), figsize=(6.5 * len(by_problem), 6.0), squeeze=False
    )
    handles: dict[str, Any] = {}
    for ax, (problem, by_method) in zip(axes[0], sorted(by_problem.items()), strict=True):
        budget = max(r["budget"] for rs in by_method.values() for r in rs)
        grid = np.unique(np.linspace(1, budget, 150).astype(int))
        scale = yardstick(problem, results)
        for method, runs in sorted(by_method.items()):
            mean, sem = mean_curve(runs, grid, scale)
            chosen = choice is not None and method in (
                choice.tuneyard,
                choice.optuna.get(problem),
            )
            color, style = _style(method)
            (line,) = ax.plot(
                grid, mean, color=color, ls=style, lw=2.8 if chosen else 1.2, label=_label(method)
            )
            if chosen:
                ax.fill_between(grid, mean - sem, mean + sem, color=color, alpha=0.15)
            handles[_label(method)] = line
        p = PROBLEMS[problem]
        ax.set_title(p.title, fontsize=10)
        ax.set_xlabel("epochs trained (budget used)")
        against = "true front" if p.true_hypervolume is not None else "best front found"
        ax.set_ylabel(f"hypervolume / {against}'s (mean over seeds)")
        ax.set_xlim(0, budget * 1.01)
        ax.set_ylim(bottom=0)
        for f in FRACTIONS:
            ax.axvline(f * budget, color="dimgrey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    fig.legend(
        list(handles.values()),
        list(handles.keys()),
        loc="lower center",
        ncol=3,
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
