"""``tuneyard import optuna``: an Optuna study's completed and pruned trials, brought into a
new tuneyard study as its history, so that its sampler starts from them.

The new study's space is read from the trials' distributions (a parameter must have one
distribution, or bounds that differ only in range, and appear in every trial: a conditional
Optuna space has no ``when`` to derive and is refused, naming the parameter). Intermediate
values become the trials' reports; Optuna counts steps from 0, tuneyard's resource from the
first step trained, so when a trial reports step 0 every step is moved up by one, as
:mod:`tuneyard.optuna_compat` does for a running objective. Optuna is needed on the machine
that runs the command only (``pip install optuna``), never by the service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.markup import escape

from tuneyard.cli.common import ApiOpt, _call, app, console, err

import_app = typer.Typer(help="Bring studies run elsewhere in.", no_args_is_help=True)
app.add_typer(import_app, name="import")

# Trials sent per request.
CHUNK = 500


class NotImportable(ValueError):
    """What in the Optuna study has no tuneyard counterpart, said to the user (exit 2)."""


def _param(name: str, dists: Sequence[Any]) -> dict[str, Any]:
    """One parameter of the new space from its distributions across the trials."""
    kinds = {type(d).__name__ for d in dists}
    if len(kinds) > 1:
        raise NotImportable(f"{name}: its distribution changes across trials ({sorted(kinds)})")
    first = dists[0]
    kind = type(first).__name__
    if kind == "CategoricalDistribution":
        choices: list[Any] = []
        for d in dists:
            choices += [c for c in d.choices if c not in choices]
        return {"type": "categorical", "choices": choices}
    if kind not in ("FloatDistribution", "IntDistribution"):
        raise NotImportable(f"{name}: an Optuna {kind} has no tuneyard counterpart")
    for d in dists:
        if (d.log, d.step) != (first.log, first.step):
            raise NotImportable(f"{name}: its log or step changes across trials")
    out: dict[str, Any] = {
        "type": "float" if kind == "FloatDistribution" else "int",
        "low": min(d.low for d in dists),
        "high": max(d.high for d in dists),
    }
    if first.log:
        out["log"] = True
    if first.step is not None and not (out["type"] == "int" and first.step == 1):
        out["step"] = first.step
    return out


def definition(
    study: Any, trials: Sequence[Any], name: str, metric: str, sampler: str, more: int
) -> dict[str, Any]:
    """The new study's definition from the Optuna study and its finished ``trials``."""
    if len(study.directions) != 1:
        raise NotImportable(
            f"the study has {len(study.directions)} objectives; importing takes one"
        )
    if not trials:
        raise NotImportable("the study has no completed or pruned trial")
    names: list[str] = []
    for t in trials:
        names += [n for n in t.distributions if n not in names]
    space = {}
    for n in names:
        dists = [t.distributions[n] for t in trials if n in t.distributions]
        if len(dists) < len(trials):
            raise NotImportable(
                f"{n}: suggested in {len(dists)} of {len(trials)} trials; a conditional space "
                "is not imported (write the study's space with `when` by hand)"
            )
        space[n] = _param(n, dists)
    offset = 1 if any(0 in t.intermediate_values for t in trials) else 0
    top = max(
        (max(t.intermediate_values) + offset for t in trials if t.intermediate_values), default=1
    )
    return {
        "name": name,
        "metric": metric,
        "direction": "maximize" if study.direction.name == "MAXIMIZE" else "minimize",
        "space": space,
        "sampler": {"type": sampler},
        "scheduler": {"type": "fifo", "max_resource": max(1, top)},
        "limits": {"max_trials": len(trials) + more},
        "description": f"imported from the Optuna study {study.study_name!r}",
    }


def trial_rows(study_name: str, trials: Sequence[Any], offset: int) -> list[dict[str, Any]]:
    out = []
    for t in trials:
        done = t.state.name == "COMPLETE"
        out.append(
            {
                "params": dict(t.params),
                "state": "completed" if done else "pruned",
                "value": t.value,
                "intermediate": [
                    [float(step) + offset, float(v)]
                    for step, v in sorted(t.intermediate_values.items())
                ],
                "source": f"Optuna {study_name!r} trial {t.number}",
            }
        )
    return out


@import_app.command("optuna")
def import_optuna(
    storage: Annotated[str, typer.Option(help="The Optuna storage URL, e.g. sqlite:///optuna.db")],
    study: Annotated[str, typer.Option(help="The Optuna study's name.")],
    name: Annotated[str | None, typer.Option(help="The new study's name.")] = None,
    metric: Annotated[str, typer.Option(help="What the new study calls the value.")] = "value",
    sampler: Annotated[str, typer.Option(help="The new study's sampler.")] = "tpe",
    more: Annotated[
        int, typer.Option(min=0, help="Trials the new study may run beyond those imported.")
    ] = 100,
    api: ApiOpt = None,
) -> None:
    """Create a study whose history is an Optuna study's completed and pruned trials
    (parameters, intermediate and final values), so that its sampler starts from them."""
    try:
        import optuna
    except ImportError:
        err.print("[red]importing an Optuna study needs optuna: pip install optuna[/red]")
        raise typer.Exit(2) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        source = optuna.load_study(study_name=study, storage=storage)
    except Exception as exc:
        err.print(f"[red]cannot load the Optuna study {escape(study)!r}: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    trials = [
        t
        for t in source.get_trials(deepcopy=False, states=states)
        if t.state.name == "PRUNED" or t.value is not None
    ]
    try:
        spec = definition(source, trials, name or f"{study} (from Optuna)", metric, sampler, more)
    except NotImportable as exc:
        err.print(
            f"[red]the Optuna study {escape(study)!r} cannot be imported: {escape(str(exc))}[/red]"
        )
        raise typer.Exit(2) from None
    offset = 1 if any(0 in t.intermediate_values for t in trials) else 0
    # A pruned trial with neither a value nor an intermediate one says nothing to learn from.
    rows = [
        r
        for r in trial_rows(study, trials, offset)
        if r["state"] == "completed" or r["intermediate"] or r["value"] is not None
    ]
    created = _call(api, lambda c: c.create_study(spec))
    for i in range(0, len(rows), CHUNK):
        chunk = rows[i : i + CHUNK]
        _call(api, lambda c: c.import_trials(created.id, chunk))  # noqa: B023 - called at once
    done = sum(r["state"] == "completed" for r in rows)
    console.print(
        f"created study {created.id} ({escape(created.name)}) with {len(rows)} imported trials "
        f"({done} completed, {len(rows) - done} pruned); its {sampler} sampler starts from them"
    )
