"""From run results to the table, the anytime plot and the verdict on the goal.

The *best validation error* of a run at a budget fraction f is the lowest error any trial
reported (at any epoch) within the first ``f * budget`` epochs trained. Across seeds we show
mean ± standard deviation.

The goal: tuneyard's best multi-fidelity method reaches, at half the budget, the mean final
result of Optuna's TPE + HyperbandPruner, and ends better than it. "Best" is chosen once for
all objectives (the lowest mean rank of the final mean among tuneyard's multi-fidelity
methods), so that the verdict does not pick a different winner per objective after the fact;
the per-objective best is shown too.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality.methods import ALL, REFERENCE
from bench.quality.objectives import OBJECTIVES

FRACTIONS = (0.25, 0.5, 1.0)


def best_at(trace: Sequence[Sequence[float]], epochs: float) -> float:
    """Best error reported within the first ``epochs`` epochs of a run (inf if none)."""
    best = math.inf
    for used, error in trace:
        if used > epochs:
            break
        best = error
    return best


@dataclass
class Cell:
    """One (objective, method): per-seed best errors at each budget fraction."""

    values: dict[float, list[float]]
    trials: list[int]
    seconds: list[float]

    def mean(self, f: float) -> float:
        return float(np.mean(self.values[f]))

    def std(self, f: float) -> float:
        return float(np.std(self.values[f], ddof=1)) if len(self.values[f]) > 1 else 0.0


def cells(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Cell]]:
    """objective -> method -> Cell, seeds in order."""
    out: dict[str, dict[str, Cell]] = defaultdict(dict)
    for r in sorted(results, key=lambda r: (r["objective"], r["method"], r["seed"])):
        cell = out[r["objective"]].setdefault(r["method"], Cell({f: [] for f in FRACTIONS}, [], []))
        for f in FRACTIONS:
            cell.values[f].append(best_at(r["trace"], f * r["budget"]))
        cell.trials.append(r["trials"])
        cell.seconds.append(r["seconds"])
    return out


def _fmt(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def table(results: Sequence[dict[str, Any]]) -> str:
    """Markdown: one table per objective, methods sorted by their final mean."""
    lines: list[str] = []
    budgets = {r["objective"]: r["budget"] for r in results}
    seeds = {
        r["objective"]: len({x["seed"] for x in results if x["objective"] == r["objective"]})
        for r in results
    }
    for name, by_method in cells(results).items():
        obj = OBJECTIVES[name]
        lines.append(
            f"### {obj.title}\n\nbudget {budgets[name]} epochs ({obj.max_epochs} per full trial), "
            f"{seeds[name]} seeds; best validation error, mean ± std over seeds"
            + (f"; known optimum {obj.optimum:g}" if obj.optimum is not None else "")
            + "\n"
        )
        lines.append("| method | 25 % | 50 % | 100 % | trials | s/run |")
        lines.append("|---|---|---|---|---|---|")
        ranked = sorted(by_method.items(), key=lambda kv: kv[1].mean(1.0))
        for method, cell in ranked:
            label = ALL[method].label if method in ALL else method
            if method == REFERENCE:
                label = f"**{label}** (reference)"
            row = [label] + [_fmt(cell.mean(f), cell.std(f)) for f in FRACTIONS]
            row += [f"{np.mean(cell.trials):.0f}", f"{np.mean(cell.seconds):.1f}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


@dataclass
class Verdict:
    method: str
    per_objective: list[dict[str, Any]]
    text: str


def _mann_whitney_less(a: Sequence[float], b: Sequence[float]) -> float:
    """One-sided p-value that ``a`` tends to be lower than ``b``."""
    from scipy.stats import mannwhitneyu

    if len(a) < 2 or len(b) < 2:
        return math.nan
    return float(mannwhitneyu(a, b, alternative="less").pvalue)


def verdict(results: Sequence[dict[str, Any]]) -> Verdict | None:
    by_obj = cells(results)
    candidates = sorted(
        {
            m
            for cellmap in by_obj.values()
            for m in cellmap
            if m in ALL and ALL[m].framework == "tuneyard" and ALL[m].multi_fidelity
        }
    )
    objs = [o for o in by_obj if REFERENCE in by_obj[o]]
    candidates = [m for m in candidates if all(m in by_obj[o] for o in objs)]
    if not objs or not candidates:
        return None
    ranks: dict[str, list[int]] = defaultdict(list)
    for o in objs:
        order = sorted(candidates, key=lambda m: by_obj[o][m].mean(1.0))
        for i, m in enumerate(order):
            ranks[m].append(i + 1)
    chosen = min(candidates, key=lambda m: (float(np.mean(ranks[m])), m))
    rows = []
    lines = [
        f"Best tuneyard multi-fidelity method over all objectives (mean rank "
        f"{np.mean(ranks[chosen]):.1f} of {len(candidates)}): **{ALL[chosen].label}**.",
        "",
        "| objective | reference final (Optuna TPE + HB, 100 %) | tuneyard at 50 % | "
        "reaches it at 50 %? | tuneyard at 100 % | ends better? | p (final lower) | "
        "best tuneyard MF on this objective |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in objs:
        ref = by_obj[o][REFERENCE]
        cell = by_obj[o][chosen]
        target = ref.mean(1.0)
        half, final = cell.mean(0.5), cell.mean(1.0)
        reaches, ends = half <= target, final < target
        p = _mann_whitney_less(cell.values[1.0], ref.values[1.0])
        local = min(candidates, key=lambda m: by_obj[o][m].mean(1.0))
        lc = by_obj[o][local]
        local_txt = (
            f"{ALL[local].label}: {lc.mean(0.5):.4f} at 50 %, {lc.mean(1.0):.4f} at 100 % "
            f"({'meets' if lc.mean(0.5) <= target and lc.mean(1.0) < target else 'misses'} "
            "the goal)"
        )
        rows.append(
            {
                "objective": o,
                "reference_final": target,
                "half": half,
                "final": final,
                "reaches_at_half": reaches,
                "ends_better": ends,
                "p_final_lower": p,
                "best_local": local,
            }
        )
        lines.append(
            f"| {o} | {target:.4f} | {half:.4f} | {'yes' if reaches else 'no'} | {final:.4f} | "
            f"{'yes' if ends else 'no'} | {p:.3f} | {local_txt} |"
        )
    met = all(r["reaches_at_half"] and r["ends_better"] for r in rows)
    lines += ["", f"Goal met on every objective: **{'yes' if met else 'no'}**."]
    return Verdict(chosen, rows, "\n".join(lines))


def plot(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Anytime curves: mean best-so-far error against epochs used, one panel per objective."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_obj: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        by_obj[r["objective"]][r["method"]].append(r)
    v = verdict(results)
    chosen = v.method if v else None
    names = sorted({m for d in by_obj.values() for m in d})
    cmap = plt.get_cmap("tab20")
    colors = {
        m: cmap(i % 20) for i, m in enumerate(n for n in names if n not in (REFERENCE, chosen))
    }
    fig, axes = plt.subplots(1, len(by_obj), figsize=(6.5 * len(by_obj), 6.5), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, (obj_name, by_method) in zip(axes[0], sorted(by_obj.items()), strict=True):
        budget = max(r["budget"] for rs in by_method.values() for r in rs)
        grid = np.unique(np.geomspace(1, budget, 200).astype(int))
        lows, highs = [], []
        for method, runs in sorted(by_method.items()):
            curve = np.mean([[best_at(r["trace"], e) for e in grid] for r in runs], axis=0)
            ok = np.isfinite(curve)
            lows.append(float(curve[ok].min()))
            highs.append(float(np.interp(budget * 0.1, grid[ok], curve[ok])))
            ref, mine = method == REFERENCE, method == chosen
            label = ALL[method].label if method in ALL else method
            (line,) = ax.plot(
                grid[ok],
                curve[ok],
                color="black" if ref else ("tab:red" if mine else colors[method]),
                lw=2.8 if ref or mine else 1.1,
                ls="--" if method.startswith("op-") else "-",
                alpha=1.0 if ref or mine else 0.75,
                label=label,
            )
            handles[label] = line
        obj = OBJECTIVES[obj_name]
        ax.set_title(obj.title, fontsize=10)
        ax.set_xlabel("epochs trained (budget used)")
        ax.set_ylabel("best validation error so far (mean over seeds)")
        ax.set_xscale("log")
        lo, hi = min(lows), float(np.median(highs))
        ax.set_ylim(lo - 0.05 * (hi - lo), hi)
        for f in FRACTIONS:
            ax.axvline(f * budget, color="grey", lw=0.6, ls=":")
        ax.grid(alpha=0.3)
    fig.legend(
        list(handles.values()),
        list(handles.keys()),
        loc="lower center",
        ncol=2 * len(by_obj),
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.16, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
