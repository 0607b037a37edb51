"""The ``tuneyard`` command line: run the service, manage studies, look at trials.

Commands that read print Rich tables, or with ``--json`` the API's own JSON. An error answer
of the API prints its problem detail and exits 1; an invalid study file exits 2.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import urlsplit

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tuneyard.client import ApiError, Client, Unreachable
from tuneyard.progress import trials_done, watch_study
from tuneyard.settings import Settings

if TYPE_CHECKING:
    from tuneyard.api.schemas import StudyOut, TrialSummary
    from tuneyard.spec import StudySpec

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

TRIAL_STATES = ("queued", "running", "paused", "completed", "stopped", "failed")


class TrialState(StrEnum):
    queued = "queued"
    running = "running"
    paused = "paused"
    completed = "completed"
    stopped = "stopped"
    failed = "failed"


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"


class TrialOrder(StrEnum):
    number = "number"
    number_desc = "-number"
    value = "value"
    value_desc = "-value"


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
    known = [s for s in TRIAL_STATES if counts.get(s)]
    other = [s for s in counts if s not in TRIAL_STATES and counts[s]]
    return ", ".join(f"{counts[s]} {s}" for s in (*known, *other)) or "none"


# -- the service -------------------------------------------------------------------------------
@app.command()
def server(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: $TUNEYARD_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default: $TUNEYARD_PORT or 8765).")
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="Serve without tokens: whoever reaches the server is an admin and can run "
            "code on the workers. Refused unless the server binds a loopback address.",
        ),
    ] = False,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="TUNEYARD_SERVER_WORKERS",
            help="API processes sharing the port (one per core serves many workers best). "
            "Each has its own database pool, /metrics counters and report-rate counts.",
        ),
    ] = 1,
) -> None:
    """Run the API server, migrating the database first.

    Every request needs an API token (`tuneyard token create`), unless --insecure-no-auth
    (or TUNEYARD_AUTH=false) on a loopback-only server."""
    import uvicorn

    from tuneyard.api.app import create_app
    from tuneyard.store.migrate import upgrade

    settings = Settings()
    if insecure_no_auth:
        settings = settings.model_copy(update={"auth": False})
    host = host or settings.host
    port = port if port is not None else settings.port
    if not settings.auth and not is_loopback(host):
        err.print(
            f"[red]refusing to serve without authentication on {escape(host)}[/red]: "
            "--insecure-no-auth (TUNEYARD_AUTH=false) is for a server bound to a loopback "
            "address (127.0.0.1, ::1, localhost) only"
        )
        raise typer.Exit(2)
    upgrade(settings.resolved_database_url())
    err.print(f"tuneyard API on http://{host}:{port} (docs at /docs)")
    if not settings.auth:
        err.print(
            "[yellow]authentication is OFF: anyone who reaches this port is an admin[/yellow]"
        )
    elif _active_tokens(settings) == 0:
        err.print(
            "no API token exists yet: create the first admin token with "
            "`tuneyard token create --scope admin --db` (same TUNEYARD_DATABASE_URL)"
        )
    if workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="warning")
        return
    # Each process builds its own app from the environment: hand it what the options changed.
    if not settings.auth:
        os.environ["TUNEYARD_AUTH"] = "false"
    uvicorn.run(
        "tuneyard.api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to bind) is reachable from this machine only."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _token_service(settings: Settings, migrate: bool = True) -> Any:
    """Tokens straight in the database (``--db``): how the first admin token is made."""
    from tuneyard.service.context import Toolkit
    from tuneyard.service.tokens import TokenService
    from tuneyard.store.db import make_engine, make_sessionmaker
    from tuneyard.store.migrate import upgrade

    url = settings.resolved_database_url()
    if migrate:
        upgrade(url)
    engine = make_engine(url, pool_size=1, max_overflow=1)
    return TokenService(Toolkit(make_sessionmaker(engine), settings))


def _active_tokens(settings: Settings) -> int | None:
    """How many tokens can be used; None when that can't be told (the server will say)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return len(_token_service(settings, migrate=False).list())
    except SQLAlchemyError:
        return None


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply the migrations to TUNEYARD_DATABASE_URL (the embedded SQLite file by default)."""
    from tuneyard.store.migrate import upgrade

    url = Settings().resolved_database_url()
    upgrade(url, revision)
    console.print(f"database at {escape(url.split('@')[-1])} is at revision {escape(revision)}")


class TokenScope(StrEnum):
    admin = "admin"
    write = "write"
    worker = "worker"
    read = "read"


DbOpt = Annotated[
    bool,
    typer.Option(
        "--db",
        help="Work on TUNEYARD_DATABASE_URL directly instead of through the API (how the "
        "first admin token is made).",
    ),
]


def _token_row(row: Any, secret: str | None = None) -> Any:
    from tuneyard.api.schemas import NewTokenOut, TokenOut

    out = TokenOut.model_validate(row, from_attributes=True)
    return NewTokenOut(**out.model_dump(), token=secret) if secret is not None else out


def _direct(fn: Callable[[Any], T]) -> T:
    """Run ``fn`` with a token service on the database; its errors print and exit 1."""
    from tuneyard.errors import TuneyardError

    try:
        return fn(_token_service(Settings()))
    except TuneyardError as exc:
        err.print(f"[red]{escape(exc.detail)}[/red]")
        raise typer.Exit(1) from exc


@token_app.command("create")
def token_create(
    scope: Annotated[
        TokenScope,
        typer.Option(
            help="admin: everything, tokens too; write: create and change studies; worker: "
            "run trials (next, reports, checkpoints); read: look (dashboard, lists, /metrics)."
        ),
    ],
    name: Annotated[
        str | None, typer.Option(help="What or who it is for (default: the scope).")
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue", help="Worker tokens: a queue it may serve (repeatable; default: any)."
        ),
    ] = None,
    expires_in_days: Annotated[
        float | None, typer.Option(min=0.001, help="Expire after this many days (default: never).")
    ] = None,
    db: DbOpt = False,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token and print it, once: only its hash is stored.

    The token alone goes to standard output (TOKEN=$(tuneyard token create ...)); clients read
    it from TUNEYARD_TOKEN. Through the API this needs an admin token; --db needs the database."""
    from datetime import timedelta

    label = name or f"{scope.value} token"
    if db:
        days = timedelta(days=expires_in_days) if expires_in_days else None
        new = _direct(lambda svc: svc.create(label, scope.value, queue, days))
        out = _token_row(new.token, new.secret)
    else:
        out = _call(api, lambda c: c.create_token(label, scope.value, queue, expires_in_days))
    if as_json:
        _dump(out)
        return
    queues = f" on queues {', '.join(out.queues)}" if out.queues else ""
    expires = f", expires {out.expires_at:%Y-%m-%d %H:%M} UTC" if out.expires_at else ""
    err.print(
        f"token {out.id} ({escape(out.name)}): scope {out.scope}{escape(queues)}{expires}; "
        "shown once, store it now"
    )
    sys.stdout.write(out.token + "\n")


@token_app.command("list")
def token_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False,
    db: DbOpt = False,
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The tokens: id, name, scope, queues, first characters; never a secret."""
    if db:
        rows = [_token_row(t) for t in _direct(lambda svc: svc.list(all_))]
    else:
        rows = _call(api, lambda c: c.list_tokens(include_revoked=all_))
    if as_json:
        _dump(rows)
        return
    t = Table("id", "name", "scope", "queues", "starts with", "created", "expires", "revoked")
    for r in rows:
        t.add_row(
            str(r.id),
            escape(r.name),
            r.scope,
            escape(", ".join(r.queues)) if r.queues else "any",
            escape(r.hint) + "…",
            r.created_at.strftime("%Y-%m-%d"),
            r.expires_at.strftime("%Y-%m-%d") if r.expires_at else "-",
            r.revoked_at.strftime("%Y-%m-%d") if r.revoked_at else "-",
        )
    console.print(t)


@token_app.command("revoke")
def token_revoke(token_id: int, db: DbOpt = False, api: ApiOpt = None) -> None:
    """Revoke a token: refused at once by the server that revoked it, within seconds by the
    others (a --db revocation: within seconds by every server)."""
    if db:
        out = _direct(lambda svc: svc.revoke(token_id))
    else:
        out = _call(api, lambda c: c.revoke_token(token_id))
    console.print(f"token {out.id} ({escape(out.name)}) revoked")


@app.command()
def scheduler(
    api: ApiOpt = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis", envvar="TUNEYARD_REDIS_URL", help="Redis URL.")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between passes.")] = 0.5,
) -> None:
    """The dispatcher: keep each running study's queue filled with slot jobs."""
    import logging

    from redis import Redis

    from tuneyard.service.context import Toolkit
    from tuneyard.service.dispatch import Dispatcher
    from tuneyard.store.db import make_engine, make_sessionmaker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    engine = make_engine(settings.resolved_database_url(), pool_size=2, max_overflow=2)
    kit = Toolkit(make_sessionmaker(engine), settings)
    redis = Redis.from_url(redis_url or settings.redis_url)
    Dispatcher(kit, redis, api_url(api)).run(interval)


@app.command()
def worker(
    api: ApiOpt = None,
    redis_url: Annotated[
        str | None, typer.Option("--redis", envvar="TUNEYARD_REDIS_URL", help="Redis URL.")
    ] = None,
    queue: Annotated[str, typer.Option(help="Queue to take jobs from.")] = "default",
    gpus: Annotated[str | None, typer.Option(help="GPU ids ('0,1,3'), 'auto' or 'none'.")] = None,
    slots: Annotated[int | None, typer.Option(help="CPU worker processes (no GPU).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Work and checkpoint directory.")] = None,
    path: Annotated[
        list[str] | None, typer.Option(help="Extra import path for objectives (repeatable).")
    ] = None,
    checkpoints: Annotated[
        str,
        typer.Option(
            envvar="TUNEYARD_CHECKPOINT_STORE",
            help="Where paused trials' checkpoints go: 'api' (uploaded to the API server) "
            "or a directory every worker shares.",
        ),
    ] = "api",
    grace: Annotated[
        float,
        typer.Option(min=0, help="Seconds a running trial gets to reach a report after SIGTERM."),
    ] = 60.0,
    name: Annotated[
        str | None,
        typer.Option(help="Worker names are NAME/gpu-N or NAME/slot-N (default: host name)."),
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow",
            envvar="TUNEYARD_ALLOW",
            help="Entrypoints this worker runs, as 'module:function' patterns, e.g. "
            "'examples.*' or 'myproj.train:*' (repeatable). Nothing else runs.",
        ),
    ] = None,
    allow_command: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-command",
            envvar="TUNEYARD_ALLOW_COMMAND",
            help="Executables of command objectives this worker runs: a name looked up on "
            "the PATH ('python3') or an absolute path pattern ('/opt/train/*') (repeatable).",
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            envvar="TUNEYARD_TOKEN",
            show_default=False,
            help="The worker token it calls the API with (`tuneyard token create --scope "
            "worker`). Prefer TUNEYARD_TOKEN: a command line is visible to every user.",
        ),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="Run without a token, for an API on this machine started with "
            "--insecure-no-auth. Refused unless the API URL is a loopback address.",
        ),
    ] = False,
) -> None:
    """Attach this machine: one RQ worker process per GPU, or --slots CPU processes.

    Each registers with the API (host, GPU model and memory). On SIGTERM the running trials
    pause at their next report and are handed back with a checkpoint. A job whose objective
    no --allow or --allow-command pattern covers fails its trial with that reason. It needs
    a worker token (TUNEYARD_TOKEN or --token) and refuses to start without one."""
    from tuneyard.worker.allow import Allowlist
    from tuneyard.worker.pool import plan_slots, run_pool

    settings = Settings()
    url = api_url(api)
    if token:
        # The slot processes (and the objectives' handles) read it from the environment.
        os.environ["TUNEYARD_TOKEN"] = token
    elif not insecure_no_auth:
        err.print(
            "[red]tuneyard worker: no API token[/red]: set TUNEYARD_TOKEN (or --token) to a "
            "worker token, made with `tuneyard token create --scope worker`"
        )
        raise typer.Exit(2)
    elif not is_loopback(urlsplit(url).hostname or ""):
        err.print(
            f"[red]tuneyard worker: --insecure-no-auth is for an API on this machine[/red], "
            f"not {escape(url)}: set TUNEYARD_TOKEN (or --token) to a worker token"
        )
        raise typer.Exit(2)
    try:
        plan = plan_slots(gpus, slots)
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from exc
    where = ", ".join(
        f"GPU {g.index}" + (f" ({g.name})" if g.name else "") if g is not None else "CPU"
        for g in plan
    )
    err.print(f"tuneyard worker: {len(plan)} processes ({where}) on queue {queue!r}")
    allowed = Allowlist.of(allow or [], allow_command or [])
    if allowed:
        err.print(
            "runs entrypoints "
            + (", ".join(escape(p) for p in allowed.entrypoints) or "none")
            + "; executables "
            + (", ".join(escape(p) for p in allowed.commands) or "none")
        )
    else:
        err.print("[yellow]no --allow or --allow-command given: every job will be refused[/yellow]")
    code = run_pool(
        url,
        redis_url or settings.redis_url,
        queue,
        plan,
        (data_dir or settings.data_dir).resolve(),
        path,
        checkpoints=checkpoints if checkpoints == "api" else str(Path(checkpoints).resolve()),
        grace=grace,
        name=name,
        allow=allowed,
    )
    raise typer.Exit(code)


NO_AUTH = (
    "No tokens: the API (on 127.0.0.1 only) takes requests from anyone on this machine, "
    "who can then run code as you on the workers."
)


@app.command()
def up(
    data_dir: Annotated[Path | None, typer.Option(help="Where the stack keeps its files.")] = None,
    study: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, help="Also run this study (YAML) to the end, then exit."
        ),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 2,
    port: Annotated[int, typer.Option(help="API port (0: any free port).")] = 0,
    gpus: Annotated[
        str | None, typer.Option(help="One worker per GPU: ids, 'auto' (instead of --workers).")
    ] = None,
    allow: Annotated[
        list[str] | None,
        typer.Option(
            "--allow", help="More entrypoint patterns the workers run (besides 'examples.*')."
        ),
    ] = None,
    allow_command: Annotated[
        list[str] | None,
        typer.Option("--allow-command", help="Executables of command objectives they run."),
    ] = None,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth", help=NO_AUTH)] = False,
) -> None:
    """Everything on this machine: API on SQLite, Redis, dispatcher, local workers.

    Runs until interrupted; with --study, until that study is over. The workers run the
    examples, the --study's own objective and what --allow / --allow-command name. Prints an
    admin token for this run, once."""
    from tuneyard import embedded
    from tuneyard.worker.allow import Allowlist

    allowed = Allowlist.of(allow or [], allow_command or [])
    if study is not None:
        code = embedded.run_demo(
            data_dir=data_dir,
            study_file=study,
            workers=workers,
            port=port,
            gpus=gpus,
            allow=allowed,
            auth=not insecure_no_auth,
        )
    else:
        code = embedded.run_up(
            data_dir=data_dir,
            workers=workers,
            port=port,
            gpus=gpus,
            allow=allowed,
            auth=not insecure_no_auth,
        )
    raise typer.Exit(code)


@app.command()
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="Where the demo keeps its files.")] = None,
    study: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="Study definition (YAML).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Local worker processes.")] = 2,
    port: Annotated[int, typer.Option(help="API port (0: any free port).")] = 0,
    max_trials: Annotated[int | None, typer.Option(help="Override limits.max_trials.")] = None,
    gpus: Annotated[
        str | None, typer.Option(help="One worker per GPU: ids, 'auto' (instead of --workers).")
    ] = None,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth", help=NO_AUTH)] = False,
) -> None:
    """`tuneyard up` plus the example study (digits MLP, ASHA) run to the end."""
    from tuneyard.embedded import run_demo

    raise typer.Exit(
        run_demo(
            data_dir=data_dir,
            study_file=study,
            workers=workers,
            port=port,
            max_trials=max_trials,
            gpus=gpus,
            auth=not insecure_no_auth,
        )
    )


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
    api: ApiOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a study from a YAML or JSON definition (checked here before it is sent)."""
    spec = _read_spec(file)
    out = _call(api, lambda c: c.create_study(spec))
    if as_json:
        _dump(out)
    else:
        console.print(f"created study [bold]{out.id}[/bold] ({escape(out.name)}), {out.state}")


def _study_table(studies: Iterable[StudyOut]) -> Table:
    t = Table("id", "name", "state", "trials", "best", "age")
    for s in studies:
        best = _fmt(s.best.value) if s.best else "-"
        t.add_row(
            str(s.id),
            escape(s.name),
            s.state,
            f"{s.trials_started}/{s.spec.limits.max_trials}: {_counts(s.counts)}",
            best,
            _age(s.created_at),
        )
    return t


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
    console.print(f"[bold]study {s.id}: {escape(s.name)}[/bold]  {s.state}, {_age(s.created_at)}")
    if sp.description:
        console.print(f"  {escape(sp.description)}")
    console.print(f"  objective: {sp.direction} {escape(sp.metric)}")
    console.print(
        f"  search:    {sp.sampler.type} sampler"
        + (f" (seed {sp.sampler.seed})" if sp.sampler.seed is not None else "")
        + f"; {sch.type} scheduler, resource {_fmt(sch.min_resource)}..{_fmt(sch.max_resource)}"
        + f", eta {sch.reduction_factor}"
        + (f", {sch.mode}" if sch.type == "asha" else "")
    )
    for name, p in sp.space.items():
        console.print(f"    {escape(_space_line(name, p))}")
    if sp.execution is not None:
        what = sp.execution.entrypoint or " ".join(sp.execution.command or []) or "-"
        console.print(f"  runs:      {escape(what)} on queue {escape(sp.execution.queue)}")
    console.print(
        f"  trials:    {s.trials_started}/{sp.limits.max_trials} started, "
        f"{sp.limits.max_concurrent} at a time; {_counts(s.counts)}"
    )
    if s.best is None:
        console.print("  best:      - (no completed trial yet)")
        return
    b = s.best
    console.print(
        f"  best:      trial {b.number} (id {b.id}) {escape(sp.metric)}={_fmt(b.value)} "
        f"at resource {_fmt(b.resource)}"
    )
    for k, v in b.params.items():
        console.print(f"    {escape(k)} = {escape(_fmt(v))}")


def _set_state(study_id: int, state: str, api: str | None, as_json: bool) -> None:
    s = _call(api, lambda c: c.set_study_state(study_id, state))
    if as_json:
        _dump(s)
    else:
        console.print(f"study {s.id} is {s.state}")


@study_app.command("pause")
def study_pause(study_id: int, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """Pause: no new work is handed out until resumed."""
    _set_state(study_id, "paused", api, as_json)


@study_app.command("resume")
def study_resume(study_id: int, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """Resume a paused study."""
    _set_state(study_id, "running", api, as_json)


@study_app.command("stop")
def study_stop(study_id: int, api: ApiOpt = None, as_json: JsonOpt = False) -> None:
    """Stop for good: paused trials end, running ones stop at their next report."""
    _set_state(study_id, "stopped", api, as_json)


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
    """Follow a study live until it is completed or stopped, then print a summary line."""
    try:
        watched = _call(api, lambda c: watch_study(c, study_id, console, interval=interval))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    s = watched.study
    if s is None:  # only a ``problem`` callback ends a watch early, and this one has none
        raise typer.Exit(1)
    best = (
        f"best {escape(s.spec.metric)} {_fmt(s.best.value)} (trial #{s.best.number})"
        if s.best is not None
        else "no completed trial"
    )
    console.print(
        f"study {s.id} {s.state}: {trials_done(s.counts)}/{s.spec.limits.max_trials} trials "
        f"done ({_counts(s.counts)}); {best}"
    )


# -- trials --------------------------------------------------------------------------------------
def _trial_table(trials: Iterable[TrialSummary]) -> Table:
    t = Table("#", "state", "value", "resource", "rung", "params", "reason")
    for tr in trials:
        t.add_row(
            str(tr.number),
            tr.state,
            _fmt(tr.value),
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
    console.print(f"  params: {escape(_params(tr.params))}")
    console.print(
        f"  value {_fmt(tr.value)} at resource {_fmt(tr.resource)}; rung {tr.rung}, "
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


def main() -> None:
    app(prog_name="tuneyard")


if __name__ == "__main__":
    main()
