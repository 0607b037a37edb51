"""``tuneyard init --template NAME``: a starter study definition with ranges from published
practice, each commented with where it comes from, to edit and create."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneyard.cli.common import app, console, err

TEMPLATES = ("mlp", "cnn", "transformer-finetune", "gbdt")


def template_text(name: str) -> str:
    """The template's YAML, comments included."""
    if name not in TEMPLATES:
        raise ValueError(f"template: {name!r} is not one of {', '.join(TEMPLATES)}")
    return (resources.files("tuneyard") / "templates" / f"{name}.yaml").read_text()


@app.command("init")
def init(
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            "-t",
            help=f"One of {', '.join(TEMPLATES)}; without it the templates are listed.",
        ),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the definition.")
    ] = Path("study.yaml"),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write a starter study definition: a few parameters over the ranges published practice
    found good, commented with their sources. Edit the metric and the entrypoint, then
    ``tuneyard study create -f study.yaml``."""
    if template is None:
        for name in TEMPLATES:
            first = template_text(name).splitlines()[0].removeprefix("# ").split(":")[0]
            console.print(f"{name:<22} {escape(first)}")
        return
    try:
        text = template_text(template)
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    if output.exists() and not force:
        err.print(f"[red]{escape(str(output))} exists; use --force to overwrite it[/red]")
        raise typer.Exit(2)
    output.write_text(text)
    where = escape(str(output))
    console.print(
        f"wrote the {template} template to {where}: set metric and execution.entrypoint to "
        f"your objective's, then tuneyard study create -f {where}"
    )
