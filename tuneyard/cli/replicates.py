"""How the CLI shows a study with ``evaluation``: a trial's value with its standard error, a
trial raced out and after how many replicates, and ``trial show``'s per-fold table (a row per
resource level, a column per replicate, then the aggregate) and its replicates' jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from tuneyard.cli.common import _fmt

if TYPE_CHECKING:
    from tuneyard.protocol import TrialOut, TrialSummary


def value_cell(tr: TrialSummary) -> str:
    """``0.231 ± 0.012`` for a trial with replicates (value ± its standard error), the value
    alone otherwise."""
    if tr.value is None or tr.value_stderr is None:
        return _fmt(tr.value)
    return f"{_fmt(tr.value)} ± {_fmt(tr.value_stderr)}"


def state_cell(tr: TrialSummary) -> str:
    """The trial's state, with ``raced out after 2/5`` when racing stopped it."""
    if not tr.raced:
        return tr.state
    return f"{tr.state} (raced out after {tr.replicates_run}/{tr.replicates_total})"


def fold_table(tr: TrialOut) -> Table | None:
    """The per-fold table: each level the trial's replicates reached, each replicate's value
    there and their aggregate ± its standard error (``*`` marks a level not every replicate
    reached yet); None for a trial without replicates."""
    if not tr.levels and not tr.replicates:
        return None
    total = tr.replicates_total or len(tr.replicates or [])
    labels = {r.index: r.label for r in tr.replicates or []}
    t = Table("resource", title="per-fold values")
    for i in range(total):
        t.add_column(escape(labels.get(i, f"#{i + 1}")), justify="right")
    t.add_column("aggregate ± stderr", justify="right")
    t.add_column("n", justify="right")
    for lv in tr.levels or []:
        cells = [_fmt(lv.values[i]) if i < len(lv.values) else "-" for i in range(total)]
        mark = "" if lv.complete else " *"
        t.add_row(
            _fmt(lv.resource),
            *cells,
            f"{_fmt(lv.value)} ± {_fmt(lv.stderr)}{mark}",
            f"{lv.n}/{total}",
        )
    return t


def replicate_table(tr: TrialOut) -> Table | None:
    """The trial's replicates as jobs: each one's state, latest value, attempts and why."""
    if not tr.replicates:
        return None
    t = Table("replicate", "id", "state", "value", "resource", "attempts", "worker", "reason")
    t.title = "replicates"
    for r in tr.replicates:
        t.add_row(
            escape(r.label),
            str(r.id),
            r.state,
            _fmt(r.value),
            _fmt(r.resource),
            str(r.attempts),
            escape(r.worker or "-"),
            escape(r.reason or ""),
        )
    return t


def replicate_line(tr: TrialOut) -> str | None:
    """For a replicate's own detail: which trial it evaluates, on which fold and seed."""
    if tr.parent_id is None:
        return None
    parts = [f"replicate {(tr.replicate or 0) + 1} of trial {tr.number} (id {tr.parent_id})"]
    if tr.fold is not None:
        parts.append(f"fold {tr.fold + 1}")
    if tr.seed is not None:
        parts.append(f"seed {tr.seed + 1}")
    return "  " + ", ".join(parts)
