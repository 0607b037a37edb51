"""``tuneyard report``: how a command-line objective reports a step to its trial."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from tuneyard.cli.common import _call, app, err


@app.command()
def report(
    step: Annotated[float, typer.Option(help="Resource consumed so far, e.g. epochs.")],
    value: Annotated[float | None, typer.Option(help="The study's metric.")] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="Another metric, name=value (repeatable).")
    ] = None,
) -> None:
    """Report from a command-line objective (reads the TUNEYARD_* variables its worker set).

    Prints the decision (continue, pause, stop or complete); a script should end when it
    is not ``continue``, after saving its state to $TUNEYARD_CHECKPOINT_DIR on ``pause``."""
    from tuneyard.worker.trial import trial_from_env

    metrics: dict[str, float | None] = {}
    for item in metric or []:
        name, sep, raw = item.partition("=")
        try:
            metrics[name.strip()] = float(raw)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            err.print(f"[red]--metric: expected name=number, got {escape(item)!r}[/red]")
            raise typer.Exit(2)
    try:
        trial = trial_from_env()
    except RuntimeError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    decision = _call(None, lambda _c: trial.report(step, value, **metrics))
    print(decision)
