"""Commands that look at and change studies through the API: ``study ...``, ``trials ls``,
``trial show`` and ``trial log``, ``workers``. An invalid study file exits 2."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel, ValidationError
from rich.markup import escape
from rich.table import Table

from tuneyard.cli.common import (
    ApiOpt,
    JsonOpt,
    _age,
    _call,
    _counts,
    _dump,
    _fmt,
    _params,
    app,
    console,
    err,
    study_app,
    trial_app,
    trials_app,
)
from tuneyard.cli.pareto import front_line
from tuneyard.cli.population import lineage_table
from tuneyard.cli.replicates import (
    fold_table,
    replicate_line,
    replicate_table,
    state_cell,
    value_cell,
)
from tuneyard.progress import trials_done, watch_study
from tuneyard.spec.algorithms import POPULATION_TYPES
from tuneyard.spec.durations import format_duration
from tuneyard.states import LogKind, StudyState, TrialState

if TYPE_CHECKING:
    from tuneyard.protocol import StudyOut, StudyUsage, TrialSummary
    from tuneyard.spec import StudySpec


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"


class TrialOrder(StrEnum):
    number = "number"
    number_desc = "-number"
    value = "value"
    value_desc = "-value"


# -- studies -------------------------------------------------------------------------------------
def load_spec_file(path: Path) -> dict[str, Any]:
    """A study definition file as a mapping: JSON for ``*.json``, YAML otherwise.

    Raises ValueError (a file that does not parse, or is not a mapping)."""
    import yaml

    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot parse {path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping of study fields, got {type(data).__name__}")
    return data


def field_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """(dotted field path, message) per pydantic error, as a user would write the field."""
    out = []
    for e in exc.errors():
        loc = [str(p) for p in e["loc"]]
        # A discriminated union puts the tag after the parameter name: space.lr.float.low.
        if len(loc) >= 3 and loc[0] == "space" and loc[2] in ("float", "int", "categorical"):
            del loc[2]
        out.append((".".join(loc) or "study", e["msg"].removeprefix("Value error, ")))
    return out


def _read_spec(file: Path) -> StudySpec:
    from tuneyard.spec import StudySpec

    try:
        return StudySpec.model_validate(load_spec_file(file))
    except ValidationError as exc:
        err.print(f"[red]{escape(str(file))} is not a valid study definition:[/red]")
        for field, msg in field_errors(exc):
            err.print(f"  [bold]{escape(field)}[/bold]: {escape(msg)}")
        raise typer.Exit(2) from exc
    except (ValueError, OSError) as exc:
        err.print(f"[red]{escape(str(file))}: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc


@study_app.command("create")
def study_create(
    file: Annotated[
        Path,
        typer.Option("-f", "--file", exists=True, dir_okay=False, help="study.yaml or .json"),
    ],
    code: Annotated[
        Path | None,
        typer.Option(
            "--code",
            exists=True,
            file_okay=False,
            help="Ship this directory with the study: workers started with --accept-code run "
            "the entrypoint from it (honours .tuneyardignore, else .gitignore).",
        ),
    ] = None,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a study from a YAML or JSON definition (checked here before it is sent)."""
    spec = _read_spec(file)
    if code is not None:
        from tuneyard.cli.code import ship_code

        spec = ship_code(spec, code, api)
    out = _call(api, lambda c: c.create_study(spec))
    if as_json:
        _dump(out)
    else:
        console.print(f"created study [bold]{out.id}[/bold] ({escape(out.name)}), {out.state}")
        if out.webhook_secret:
            console.print(f"webhook secret (signs its posts; shown once): {out.webhook_secret}")
    # On stderr, so that --json output stays one document.
    for w in out.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(w)}")


# How a study's state is coloured: green only for a study that completed with a result.
STATE_STYLES = {
    StudyState.RUNNING: "blue",
    StudyState.PAUSED: "yellow",
    StudyState.FAILING: "bold red",
    StudyState.STOPPED: "dim",
    StudyState.COMPLETED: "green",
    StudyState.FAILED: "red",
    StudyState.EXHAUSTED: "yellow",
}


def _state(state: str) -> str:
    style = STATE_STYLES.get(StudyState(state)) if state in StudyState._value2member_map_ else None
    return f"[{style}]{escape(state)}[/{style}]" if style else escape(state)


def _study_table(studies: Iterable[StudyOut]) -> Table:
    t = Table("id", "name", "state", "trials", "best", "age")
    for s in studies:
        best = _fmt(s.best.value) if s.best else "-"
        t.add_row(
            str(s.id),
            escape(s.name),
            _state(s.state),
            f"{s.trials_started}/{s.spec.limits.max_trials}: {_counts(s.counts)}",
            best,
            _age(s.created_at),
        )
    return t


def _usage_line(u: StudyUsage) -> str:
    """GPU-hours, wall time and worker-hours used, each against its limit when it has one:
    "GPU-hours 1.5 of 2 (75%); wall time 1h5m of 8h; worker-hours 3"."""

    def of(used: str, limit: str | None, frac: float | None) -> str:
        if limit is None:
            return used
        return f"{used} of {limit}" + (f" ({frac:.0%})" if frac is not None else "")

    g, w = u.gpu_hours, u.wall_seconds
    gpu = of(
        _fmt(round(g.used, 2)),
        _fmt(g.limit) if g.limit is not None else None,
        g.used / g.limit if g.limit else None,
    )
    wall = of(
        format_duration(w.used) if w.used > 0 else "0s",
        format_duration(w.limit) if w.limit is not None else None,
        w.used / w.limit if w.limit else None,
    )
    return f"GPU-hours {gpu}; wall time {wall}; worker-hours {_fmt(round(u.worker_hours, 2))}"


def _study_warnings(studies: Iterable[StudyOut]) -> None:
    for s in studies:
        if s.queue_warning:
            err.print(f"[yellow]warning:[/yellow] study {s.id}: {escape(s.queue_warning)}")


def _more(next_cursor: str | None) -> None:
    if next_cursor:
        err.print(f"more: --cursor {escape(next_cursor)} (or --all)")


@study_app.command("ls")
def study_ls(
    api: ApiOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Page size.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Page to start at.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every page.")] = False,
) -> None:
    """List studies, newest first (--json: a list of StudyOut)."""
    if all_:
        items = _call(api, lambda c: list(c.iter_studies(limit)))
        nxt = None
    else:
        page = _call(api, lambda c: c.list_studies(limit=limit, cursor=cursor))
        items, nxt = page.items, page.next_cursor
    if as_json:
        _dump(items)
        return
    console.print(_study_table(items))
    _study_warnings(items)
    _more(nxt)


def _space_line(name: str, p: Any) -> str:
    if p.type == "categorical":
        what = "{" + ", ".join(_fmt(c) for c in p.choices) + "}"
    else:
        what = f"{p.type} [{_fmt(p.low)}, {_fmt(p.high)}]"
        if p.log:
            what += " log"
        if (p.type == "int" and p.step != 1) or (p.type == "float" and p.step is not None):
            what += f" step {_fmt(p.step)}"
    if p.when:
        what += " when " + ", ".join(f"{k}={v}" for k, v in p.when.items())
    if not p.mutable:
        what += " (fixed)"
    return f"{name}: {what}"


@study_app.command("show")
def study_show(study_id: int, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """One study: its definition, trial counts and best trial."""
    s = _call(api, lambda c: c.get_study(study_id))
    if as_json:
        _dump(s)
        return
    sp = s.spec
    sch = sp.scheduler
    console.print(
        f"[bold]study {s.id}: {escape(s.name)}[/bold]  {_state(s.state)}, {_age(s.created_at)}"
    )
    if s.reason:
        console.print(f"  reason:    {escape(s.reason)}")
    if s.error is not None:
        e = s.error
        where = f"trial id {e.trial_id}" if e.trial_id is not None else "a trial"
        console.print(
            f"  [red]error:     {escape(e.summary)}[/red]\n"
            f"             {escape(e.type or 'no exception class')}, last from {where}, "
            f"{e.count} trial(s) in a row"
        )
        if s.state == StudyState.FAILING and sp.execution and sp.execution.code:
            # Its code is fixed when it is created: a fix ships with a new study.
            console.print(
                "             fix the code, then create the study again with --code (this "
                f"one runs the code it was created with); the traceback: tuneyard trial "
                f"show {e.trial_id}"
            )
        elif s.state == StudyState.FAILING:
            console.print(
                f"             fix it, then: tuneyard study resume {s.id}"
                f"  (the traceback: tuneyard trial show {e.trial_id})"
            )
    for w in s.warnings:
        console.print(f"  [yellow]warning:[/yellow]   {escape(w)}")
    if sp.description:
        console.print(f"  {escape(sp.description)}")
    if sp.multi_objective:
        listed = ", ".join(f"{o.direction} {o.metric}" for o in sp.objective_list)
        console.print(f"  objectives: {escape(listed)}")
    else:
        console.print(f"  objective: {sp.direction} {escape(sp.metric)}")
    if sp.constraints:
        console.print(f"  constraints: {escape(constraint_list(sp))}")
    if sch.type in POPULATION_TYPES:
        pop = sch.population_spec()
        how = (
            f"{pop.type} scheduler, population {pop.population}, a step every "
            f"{_fmt(pop.interval)} up to {_fmt(pop.max_resource)}, quantile {_fmt(pop.quantile)}"
        )
    else:
        how = (
            f"{sch.type} scheduler, resource {_fmt(sch.min_resource)}..{_fmt(sch.max_resource)}"
            f", eta {sch.reduction_factor}" + (f", {sch.mode}" if sch.type == "asha" else "")
        )
    console.print(
        f"  search:    {sp.sampler.type} sampler"
        + (f" (seed {sp.sampler.seed})" if sp.sampler.seed is not None else "")
        + f"; {how}"
    )
    for name, p in sp.space.items():
        console.print(f"    {escape(_space_line(name, p))}")
    if sp.execution is not None:
        what = sp.execution.entrypoint or " ".join(sp.execution.command or []) or "-"
        where = f" from code {sp.execution.code[:19]}…" if sp.execution.code else ""
        console.print(
            f"  runs:      {escape(what)}{escape(where)} on queue {escape(sp.execution.queue)}"
        )
    console.print(
        f"  trials:    {s.trials_started}/{sp.limits.max_trials} started, "
        f"{sp.limits.max_concurrent} at a time; {_counts(s.counts)}"
    )
    for r in s.best_by_rung or []:
        console.print(
            f"  rung {r.rung}:    best {escape(sp.metric)}={_fmt(r.value)} at resource "
            f"{_fmt(r.resource)} (trial {r.number}, id {r.trial_id}; {r.entries} reached it)"
        )
    if s.usage is not None:
        console.print(f"  budget:    {escape(_usage_line(s.usage))}")
        if s.usage.spent:
            console.print(f"  spent:     {escape(s.usage.spent)}: no new trial starts")
    if s.queue_warning:
        err.print(f"[yellow]warning:[/yellow] study {s.id}: {escape(s.queue_warning)}")
    if s.pareto is not None:
        console.print(
            f"  front:     {escape(front_line(s.pareto))}; the trials: tuneyard study pareto {s.id}"
        )
        if sp.multi_objective:
            return  # no single best trial: the front is the answer
    if s.best is None:
        ended = s.state in (StudyState.FAILED, StudyState.EXHAUSTED, StudyState.STOPPED)
        console.print(f"  best:      - (no completed trial{'' if ended else ' yet'})")
        return
    b = s.best
    console.print(
        f"  best:      trial {b.number} (id {b.id}) {escape(sp.metric)}={_fmt(b.value)} "
        f"at resource {_fmt(b.resource)}, the best completed trial"
    )
    for k, v in b.params.items():
        console.print(f"    {escape(k)} = {escape(_fmt(v))}")


def constraint_list(sp: StudySpec) -> str:
    """The definition's constraints as bounds, e.g. "gpu_mem_gb <= 16, accuracy >= 0.8"."""
    bounds = []
    for c in sp.constraints:
        if c.min is not None:
            bounds.append(f"{c.metric} >= {_fmt(c.min)}")
        if c.max is not None:
            bounds.append(f"{c.metric} <= {_fmt(c.max)}")
    return ", ".join(bounds)


def _set_state(study_id: int, state: StudyState, api: str | None, as_json: bool) -> None:
    s = _call(api, lambda c: c.set_study_state(study_id, state))
    if as_json:
        _dump(s)
    else:
        console.print(f"study {s.id} is {_state(s.state)}")


@study_app.command("pause")
def study_pause(study_id: int, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """Pause: no new work is handed out until resumed."""
    _set_state(study_id, StudyState.PAUSED, api, as_json)


@study_app.command("resume")
def study_resume(study_id: int, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """Resume a paused study, or a failing one once its code is fixed."""
    _set_state(study_id, StudyState.RUNNING, api, as_json)


@study_app.command("stop")
def study_stop(study_id: int, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """Stop for good: paused trials end, running ones stop at their next report."""
    _set_state(study_id, StudyState.STOPPED, api, as_json)


@study_app.command("delete")
def study_delete(study_id: int, api: ApiOpt = None) -> None:
    """Delete a study and everything recorded about it."""
    _call(api, lambda c: c.delete_study(study_id))
    console.print(f"study {study_id} deleted")


@study_app.command("export")
def study_export(
    study_id: int,
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="csv: a column per field and per parameter; json: a list of TrialSummary.",
        ),
    ] = ExportFormat.csv,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", dir_okay=False, help="Write here (default: stdout)."),
    ] = None,
    api: ApiOpt = None,
) -> None:
    """Every trial of a study, by number, as CSV or JSON.

    Downloaded page by page into a temporary file first: --output is replaced only by a
    whole export, and stdout gets nothing when the API fails half-way."""
    if output is None:
        fd, name = tempfile.mkstemp(prefix="tuneyard-export-", suffix=f".{fmt.value}")
        os.close(fd)
        part = Path(name)
    else:
        part = output.with_name(f".{output.name}.part")
    try:
        if fmt is ExportFormat.csv:
            _call(api, lambda c: c.export_trials_csv(study_id, part))
        else:
            _call(api, lambda c: _write_json_list(c.iter_trials(study_id), part))
        if output is not None:
            part.replace(output)
            err.print(f"study {study_id}: trials written to {escape(str(output))}")
        else:
            sys.stdout.flush()
            with part.open("rb") as f:
                shutil.copyfileobj(f, sys.stdout.buffer)
            sys.stdout.buffer.flush()
    finally:
        part.unlink(missing_ok=True)


def _write_json_list(items: Iterable[BaseModel], dest: Path) -> None:
    """A JSON list written an item at a time, so a large study is never held whole."""
    with dest.open("w", encoding="utf-8") as f:
        sep = "[\n"
        for item in items:
            f.write(sep + "  " + item.model_dump_json())
            sep = ",\n"
        f.write("[]\n" if sep == "[\n" else "\n]\n")


@study_app.command("watch")
def study_watch(
    study_id: int,
    interval: Annotated[float, typer.Option(min=0, help="Seconds between polls.")] = 2.0,
    api: ApiOpt = None,
) -> None:
    """Follow a study live until it is completed or stopped, then print a summary line.

    On a terminal it draws a live progress bar; piped or redirected, it prints a line each
    time the progress changes."""
    plain = not console.is_terminal
    try:
        watched = _call(
            api, lambda c: watch_study(c, study_id, console, interval=interval, plain=plain)
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    s = watched.study
    if s is None:  # only a ``problem`` callback ends a watch early, and this one has none
        raise typer.Exit(1)
    if s.pareto is not None and s.spec.multi_objective:
        best = f"front {escape(front_line(s.pareto))}"
    elif s.best is not None:
        best = f"best {escape(s.spec.metric)} {_fmt(s.best.value)} (trial #{s.best.number})"
    else:
        best = "no completed trial"
    console.print(
        f"study {s.id} {s.state}: {trials_done(s.counts)}/{s.spec.limits.max_trials} trials "
        f"done ({_counts(s.counts)}); {best}"
    )


# -- trials --------------------------------------------------------------------------------------
def _trial_table(trials: Iterable[TrialSummary]) -> Table:
    """Trials as a table; a study with several objectives or constraints gets a column per
    objective (named by its metric) and one saying whether the trial is feasible."""
    rows = list(trials)
    metrics = next((list(tr.values) for tr in rows if tr.values), [])
    constrained = any(tr.feasible is not None for tr in rows)
    values = [escape(m) for m in metrics] or ["value"]
    t = Table("#", "state", *values, *(["feasible"] if constrained else []), "resource", "rung")
    t.add_column("params")
    t.add_column("reason")
    for tr in rows:
        named = tr.values or {}
        shown = [_fmt(named.get(m)) for m in metrics] if metrics else [value_cell(tr)]
        feasible = ["-" if tr.feasible is None else "yes" if tr.feasible else "no"]
        t.add_row(
            str(tr.number),
            state_cell(tr),
            *shown,
            *(feasible if constrained else []),
            _fmt(tr.resource),
            str(tr.rung),
            escape(_params(tr.params)),
            escape(tr.reason or ""),
        )
    return t


@trials_app.command("ls")
def trials_ls(
    study_id: Annotated[int, typer.Argument(metavar="STUDY", help="Study id.")],
    api: ApiOpt = None,
    as_json: JsonOpt = False,
    state: Annotated[TrialState | None, typer.Option(help="Only trials in this state.")] = None,
    order: Annotated[
        TrialOrder, typer.Option(help="Sort key; by value lists only trials with a value.")
    ] = TrialOrder.number,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Page size.")] = 100,
    cursor: Annotated[str | None, typer.Option(help="Page to start at.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every page.")] = False,
) -> None:
    """A study's trials (--json: a list of TrialSummary)."""
    st = state.value if state else None
    if all_:
        items = _call(api, lambda c: list(c.iter_trials(study_id, st, order.value, limit)))
        nxt = None
    else:
        page = _call(
            api,
            lambda c: c.list_trials(
                study_id, state=st, order=order.value, limit=limit, cursor=cursor
            ),
        )
        items, nxt = page.items, page.next_cursor
    if as_json:
        _dump(items)
        return
    console.print(_trial_table(items))
    _more(nxt)


@trial_app.command("show")
def trial_show(trial_id: int, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """One trial: params, reports, every decision with its reason, attempts."""
    tr = _call(api, lambda c: c.get_trial(trial_id))
    if as_json:
        _dump(tr)
        return
    console.print(
        f"[bold]trial {tr.id} (#{tr.number} of study {tr.study_id})[/bold] {tr.state}"
        + (f": {escape(tr.reason)}" if tr.reason else "")
    )
    line = replicate_line(tr)
    if line:
        console.print(line)
    console.print(f"  params: {escape(_params(tr.params))}")
    console.print(
        f"  value {value_cell(tr)} at resource {_fmt(tr.resource)}; rung {tr.rung}, "
        f"bracket {tr.bracket}; job {_fmt(tr.resource_from)}..{_fmt(tr.resource_to)}"
    )
    if tr.checkpoint:
        console.print(f"  checkpoint: {escape(tr.checkpoint)}")
    if tr.error:
        lines = tr.error.strip().splitlines() or [""]
        console.print(f"  [red]error[/red]: {escape(lines[-1])}")
    d = Table("when", "decision", "rung", "resource", "reason", title="decisions")
    for x in tr.decisions:
        d.add_row(
            x.created_at.strftime("%H:%M:%S"),
            x.kind,
            _fmt(x.rung),
            _fmt(x.resource),
            escape(x.reason),
        )
    console.print(d)
    for table in (fold_table(tr), replicate_table(tr)):
        if table is not None:
            console.print(table)
    if any(x.kind in (LogKind.KEEP, LogKind.EXPLOIT) for x in tr.decisions):
        console.print(lineage_table(_call(api, lambda c: c.get_lineage(trial_id))))
    r = Table("step", "value", "decision", "metrics", title="reports")
    for rep in tr.reports:
        r.add_row(_fmt(rep.step), _fmt(rep.value), rep.decision, escape(_params(rep.metrics)))
    console.print(r)
    if tr.attempt_log:
        a = Table("#", "range", "state", "worker", "started", "error", title="attempts")
        for at in tr.attempt_log:
            a.add_row(
                str(at.number),
                f"{_fmt(at.resource_from)}..{_fmt(at.resource_to)}",
                at.state,
                escape(at.worker or "-"),
                at.started_at.strftime("%H:%M:%S"),
                escape((at.error or "").strip().splitlines()[-1] if at.error else ""),
            )
        console.print(a)


@trial_app.command("log")
def trial_log(
    trial_id: int,
    api: ApiOpt = None,
    attempt: Annotated[int | None, typer.Option(min=1, help="Only this attempt.")] = None,
) -> None:
    """The objective's whole output (standard output and error), every attempt."""
    text = _call(api, lambda c: c.read_log(trial_id, attempt))
    sys.stdout.write(text)


@app.command("workers")
def workers_ls(
    api: ApiOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Include stopped workers.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Attached workers: host, GPU, state and the trial each runs."""
    rows = _call(api, lambda c: c.list_workers(include_stopped=all_))
    if as_json:
        _dump(rows)
        return
    t = Table("id", "name", "state", "queue", "gpu", "trial", "last seen", title="workers")
    now = datetime.now(UTC)
    for w in rows:
        gpu = ", ".join(
            f"{g.name or 'GPU ' + g.index}"
            + (f" {g.memory_mib // 1024} GiB" if g.memory_mib else "")
            for g in w.gpus
        )
        t.add_row(
            str(w.id),
            escape(w.name),
            w.state,
            escape(w.queue or "-"),
            escape(gpu or "CPU"),
            str(w.trial_id) if w.trial_id is not None else "-",
            _age(w.last_seen_at, now),
        )
    console.print(t)
