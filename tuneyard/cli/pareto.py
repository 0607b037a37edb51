"""``study pareto``: a study's Pareto front as a table, with its hypervolume; and the lines
``study show`` prints about the front of a study with several objectives or constraints."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tuneyard.cli.common import ApiOpt, JsonOpt, _call, _dump, _fmt, _params, console, study_app

if TYPE_CHECKING:
    from tuneyard.protocol import ParetoObjective, ParetoOut, ParetoSummary

ARROWS = {"minimize": "↓", "maximize": "↑"}


def objective_heading(o: ParetoObjective) -> str:
    """An objective's column: its metric and which way is better, e.g. ``latency_ms ↓``."""
    return f"{o.metric} {ARROWS.get(o.direction, '')}".strip()


def front_line(p: ParetoSummary) -> str:
    """The front's size and hypervolume against its reference point, e.g. "4 trials,
    hypervolume 12.5 (reference point err=1, acc=0; derived from the trials)"."""
    size = f"{p.size} trial{'' if p.size == 1 else 's'}"
    if p.hypervolume is None or p.reference_point is None:
        return f"{size}, hypervolume - (no completed trial yet)"
    ref = ", ".join(
        f"{o.metric}={_fmt(r)}" for o, r in zip(p.objectives, p.reference_point, strict=True)
    )
    how = "; derived from the trials" if p.reference_derived else ""
    return f"{size}, hypervolume {_fmt(p.hypervolume)} (reference point {ref}{how})"


def front_table(front: ParetoOut) -> Table:
    title = "Pareto front" + (
        f" at resource {_fmt(front.resource)}" if front.resource is not None else ""
    )
    t = Table("#", *(objective_heading(o) for o in front.objectives), "params", title=title)
    for tr in front.trials:
        cells = [_fmt(tr.values.get(o.metric)) for o in front.objectives]
        t.add_row(str(tr.number), *cells, escape(_params(tr.params)))
    return t


@study_app.command("pareto")
def study_pareto(
    study_id: int,
    resource: Annotated[
        float | None,
        typer.Option(
            min=0, help="The front among the trials that reached the rung at this resource."
        ),
    ] = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The feasible non-dominated trials of a study, each objective with its direction, and
    the hypervolume they dominate (--json: ParetoOut)."""
    front = _call(api, lambda c: c.get_pareto(study_id, resource))
    if as_json:
        _dump(front)
        return
    console.print(front_table(front))
    where = "rung" if front.resource is not None else "front"
    console.print(f"{where}: {escape(front_line(front))}")
