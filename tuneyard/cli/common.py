"""What every command shares: the Typer apps, the common options, the API call and formatting.

Commands that read print Rich tables, or with ``--json`` the API's own JSON. An error answer
of the API prints its problem detail and exits 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape

from tuneyard.client import ApiError, Client, Unreachable
from tuneyard.settings import Settings
from tuneyard.states import TrialState

T = TypeVar("T")

app = typer.Typer(
    help="tuneyard: distributed hyperparameter tuning.",
    no_args_is_help=True,
)
study_app = typer.Typer(help="Create and manage studies.", no_args_is_help=True)
trials_app = typer.Typer(help="List a study's trials.", no_args_is_help=True)
trial_app = typer.Typer(help="Look at one trial.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(
    help="API tokens: every request needs one of scope admin, write, worker or read.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study")
app.add_typer(trials_app, name="trials")
app.add_typer(trial_app, name="trial")
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")

console = Console()
err = Console(stderr=True, soft_wrap=True)  # messages stay whole lines, for logs and grep

# ``--api`` is accepted before the command (``tuneyard --api URL study ls``) and after it; the
# one after wins. Without either, Settings reads TUNEYARD_API_URL or uses the local default.
ApiOpt = Annotated[
    str | None,
    typer.Option("--api", help="API base URL (default: the global --api, else $TUNEYARD_API_URL)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
_global: dict[str, str | None] = {"api": None}


@app.callback()
def _root(
    api: Annotated[
        str | None,
        typer.Option("--api", envvar="TUNEYARD_API_URL", help="API base URL for every command."),
    ] = None,
) -> None:
    _global["api"] = api


def api_url(api: str | None = None) -> str:
    """The API URL a command talks to: its own ``--api``, the global one, or Settings'."""
    return (api or _global["api"] or Settings().api_url).rstrip("/")


def make_client(api: str) -> Client:
    """The one place commands get their client from; tests replace it."""
    return Client(api)


def _call(api: str | None, fn: Callable[[Client], T]) -> T:
    """Run ``fn`` with a client; API errors print their detail and exit 1."""
    url = api_url(api)
    client = make_client(url)
    try:
        return fn(client)
    except Unreachable as exc:
        err.print(f"[red]cannot reach the API[/red]: {escape(exc.detail)}")
        err.print(
            f"is the server running at {escape(url)}? start it with `tuneyard server` "
            "(or point --api / TUNEYARD_API_URL at it)"
        )
        raise typer.Exit(1) from exc
    except ApiError as exc:
        err.print(f"[red]{exc.status} {escape(exc.title)}: {escape(exc.detail)}[/red]")
        for e in exc.errors:
            if "field" in e and "message" in e:
                err.print(f"  [red]{escape(str(e['field']))}[/red]: {escape(str(e['message']))}")
        raise typer.Exit(1) from exc
    finally:
        client.close()


def _dump(obj: Any) -> None:
    """JSON on stdout, bypassing Rich so nothing is wrapped or styled."""
    data: Any
    if isinstance(obj, BaseModel):
        data = obj.model_dump(mode="json")
    elif isinstance(obj, list):
        data = [o.model_dump(mode="json") if isinstance(o, BaseModel) else o for o in obj]
    else:
        data = obj
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _age(t: datetime, now: datetime | None = None) -> str:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    secs = max(0.0, ((now or datetime.now(UTC)) - t).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{int(secs // size)}{unit}"
    return f"{int(secs)}s"


def _params(p: dict[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in p.items())


def _counts(counts: dict[str, int]) -> str:
    known = [s.value for s in TrialState if counts.get(s)]
    other = [s for s in counts if s not in TrialState._value2member_map_ and counts[s]]
    return ", ".join(f"{counts[s]} {s}" for s in (*known, *other)) or "none"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to bind) is reachable from this machine only."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
