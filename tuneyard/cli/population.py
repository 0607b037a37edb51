"""How the CLI shows a pbt or pb2 study: ``trial show``'s lineage of a member (its step at
every boundary: kept, or cloned a donor and explored, and why) and ``study schedule``, the
best member's replayable schedule, printed or written to a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from tuneyard.cli.common import ApiOpt, JsonOpt, _call, _dump, _fmt, _params, console, study_app

if TYPE_CHECKING:
    from tuneyard.protocol import LineageOut


def lineage_table(lin: LineageOut) -> Table:
    """A row per boundary: the value there, the step (``exploit ← #7 (0.188)`` for a clone)
    and the parameters the member trains with from there on."""
    t = Table("resource", "value", "step", "params from here", "reason", title="lineage")
    for st in lin.steps:
        if st.decision == "exploit":
            step = f"exploit ← #{st.donor_number} ({_fmt(st.donor_value)})"
        else:
            step = "keep"
        t.add_row(
            _fmt(st.resource),
            _fmt(st.value),
            escape(step),
            escape(_params(st.new_params)),
            escape(st.reason),
        )
    return t


def schedule_table(lin: LineageOut) -> Table:
    t = Table("from resource", "params", title=f"schedule of trial {lin.trial_id} (#{lin.number})")
    for st in lin.schedule:
        t.add_row(_fmt(st.resource), escape(_params(st.params)))
    return t


def schedule_json(lin: LineageOut) -> str:
    """The replayable schedule: a list of {resource, params}, from resource 0."""
    return json.dumps([s.model_dump(mode="json") for s in lin.schedule], indent=2) + "\n"


@study_app.command("schedule")
def study_schedule(
    study_id: int,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the schedule as JSON ([{resource, params}])."),
    ] = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A pbt or pb2 study's best member: the schedule of parameters that replays its training
    from scratch (its donors' parameters up to its last clone, then its own) (--json:
    LineageOut)."""
    lin = _call(api, lambda c: c.get_schedule(study_id))
    if as_json:
        _dump(lin)
        return
    if out is not None:
        out.write_text(schedule_json(lin))
        console.print(
            f"wrote the schedule of trial {lin.trial_id} (#{lin.number}, value "
            f"{_fmt(lin.value)}): {len(lin.schedule)} setting(s) to {escape(str(out))}"
        )
        return
    console.print(schedule_table(lin))
    console.print(f"value {_fmt(lin.value)} at resource {_fmt(lin.resource)}")
