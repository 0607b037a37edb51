"""The ``tuneyard`` command line: run the service, manage studies, look at trials.

Commands that read print Rich tables, or with ``--json`` the API's own JSON. An error answer
of the API prints its problem detail and exits 1; an invalid study file exits 2.

The commands live by what they do: ``processes`` runs the service (server, db, dispatcher,
worker, up, demo), ``tokens`` makes and revokes API tokens, ``studies`` calls the API about
studies, trials and workers, ``pareto`` prints a study's Pareto front, ``models`` downloads
a trial's model, ``report`` is the command objective's side, ``slurm`` submits workers to a
Slurm cluster; ``common`` holds the Typer apps, the shared options and the one way to call
the API. Importing this package registers them all, in the order ``tuneyard --help`` lists
them, and loads no server code.
"""

from __future__ import annotations

# isort: off
# Importing registers the commands; this order is the order ``tuneyard --help`` lists them in.
from tuneyard.cli import processes
from tuneyard.cli import tokens
from tuneyard.cli import studies
from tuneyard.cli import pareto
from tuneyard.cli import population
from tuneyard.cli import models
from tuneyard.cli import report
from tuneyard.cli import init
from tuneyard.cli import importer
from tuneyard.cli import slurm

# isort: on
from tuneyard.cli.common import api_url, app, console, err, is_loopback
from tuneyard.cli.studies import field_errors, load_spec_file

__all__ = [
    "api_url",
    "app",
    "console",
    "err",
    "field_errors",
    "importer",
    "init",
    "is_loopback",
    "load_spec_file",
    "main",
    "models",
    "pareto",
    "population",
    "processes",
    "report",
    "slurm",
    "studies",
    "tokens",
]


def main() -> None:
    app(prog_name="tuneyard")
