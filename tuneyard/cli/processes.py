"""Commands that run a part of the service: the API server, the database migrations, the
dispatcher, a worker pool, and the whole stack on one machine (``up``, ``demo``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.markup import escape

from tuneyard.cli import startup
from tuneyard.cli.common import ApiOpt, api_url, app, console, db_app, err, is_loopback
from tuneyard.cli.startup import StartupError
from tuneyard.cli.tokens import _active_tokens
from tuneyard.settings import Settings

if TYPE_CHECKING:
    from tuneyard.worker.pool import Gpu


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
    # uvicorn sets logging up in each of its processes: tuneyard's own lines (one per job
    # start and end) at INFO, the access log off, the rest at warnings.
    log_config = _server_logging()
    if workers == 1:
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level="warning",
            log_config=log_config,
        )
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
        log_config=log_config,
    )


def _server_logging() -> dict[str, Any]:
    """uvicorn's logging configuration plus a handler for tuneyard's loggers at INFO."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["tuneyard"] = {"format": "%(asctime)s %(name)s %(message)s"}
    config["handlers"]["tuneyard"] = {
        "class": "logging.StreamHandler",
        "formatter": "tuneyard",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["tuneyard"] = {"handlers": ["tuneyard"], "level": "INFO", "propagate": False}
    return config


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply the migrations to TUNEYARD_DATABASE_URL (the embedded SQLite file by default)."""
    from tuneyard.store.migrate import upgrade

    url = Settings().resolved_database_url()
    upgrade(url, revision)
    console.print(f"database at {escape(url.split('@')[-1])} is at revision {escape(revision)}")


StartupWaitOpt = Annotated[
    float,
    typer.Option(
        "--startup-wait",
        min=0,
        envvar="TUNEYARD_STARTUP_WAIT",
        help="Seconds an API or Redis that does not answer yet is tried again at start "
        "(a server starting alongside) before the command gives up.",
    ),
]
RedisOpt = Annotated[
    str | None,
    typer.Option(
        "--redis",
        envvar="TUNEYARD_REDIS_URL",
        show_default=False,
        help="Redis URL, the same for the dispatcher and every worker (required).",
    ),
]


def _cannot_start(command: str, exc: StartupError) -> typer.Exit:
    """One line naming the setting to fix; exit code 2."""
    err.print(f"tuneyard {command}: {escape(str(exc))}", markup=True, highlight=False)
    return typer.Exit(2)


def _log_setup() -> None:
    """INFO lines of tuneyard's own loggers (a line per job, a lost and found dependency),
    warnings of the libraries."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("tuneyard").setLevel(logging.INFO)


@app.command()
def dispatcher(
    api: ApiOpt = None,
    redis_url: RedisOpt = None,
    interval: Annotated[float, typer.Option(help="Seconds between passes.")] = 0.5,
    startup_wait: StartupWaitOpt = startup.PATIENCE,
) -> None:
    """The dispatcher: keep each running study's queue filled with slot jobs.

    It works on the database (TUNEYARD_DATABASE_URL) and Redis, and needs no API token. At
    start it checks that the database, Redis and the API (whose URL its jobs carry) answer,
    and exits with one line naming the setting to fix when one does not. Its old name,
    `tuneyard scheduler`, still runs it."""
    from redis import Redis

    from tuneyard.service.context import Toolkit
    from tuneyard.service.dispatch import Dispatcher
    from tuneyard.store.db import make_engine, make_sessionmaker

    settings = Settings()
    url = api_url(api)
    database_url = settings.resolved_database_url()
    try:
        redis = startup.check_redis(redis_url, patience=startup_wait)
        startup.check_database(database_url)
        startup.check_api_answers(url, patience=startup_wait)
    except StartupError as exc:
        raise _cannot_start("dispatcher", exc) from None
    _log_setup()
    engine = make_engine(database_url, pool_size=2, max_overflow=2)
    kit = Toolkit(make_sessionmaker(engine), settings)
    Dispatcher(kit, Redis.from_url(redis), url).run(interval)


# The command's name until the dispatcher was named for what it does; "scheduler" is the
# ASHA/Hyperband part of a study definition. Kept, unlisted, so deployments that start
# `tuneyard scheduler` go on working.
app.command(
    "scheduler",
    hidden=True,
    help="The old name of `tuneyard dispatcher`, which it runs; use that name instead.",
)(dispatcher)


@app.command()
def worker(
    api: ApiOpt = None,
    redis_url: RedisOpt = None,
    queue: Annotated[str, typer.Option(help="Queue to take jobs from.")] = "default",
    gpus: Annotated[
        str | None,
        typer.Option(
            help="GPU ids ('0,1,3'), 'auto', 'slurm' (the GPUs of this Slurm job) or 'none'. "
            "Inside a Slurm job, 'auto' is the job's GPUs.",
        ),
    ] = None,
    slots: Annotated[int | None, typer.Option(help="CPU worker processes (no GPU).")] = None,
    gpus_per_slot: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="GPUs per worker process: 2 makes slots of GPUs 0,1 and 2,3 of --gpus "
            "0,1,2,3, for studies whose trials need that many (execution.gpus).",
        ),
    ] = 1,
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
    accept_code: Annotated[
        bool,
        typer.Option(
            "--accept-code",
            envvar="TUNEYARD_ACCEPT_CODE",
            help="Run the code studies ship (`study create --code DIR`) on this worker's "
            "queue: whoever may create a study there runs any program on this machine "
            "(docs/security.md). Without it such jobs are left to other workers.",
        ),
    ] = False,
    code_cache: Annotated[
        Path | None,
        typer.Option(
            envvar="TUNEYARD_CODE_CACHE",
            help="Where shipped code is kept, one directory per archive (default: DATA_DIR/code).",
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
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            envvar="TUNEYARD_TOKEN_FILE",
            show_default=False,
            help="A file that holds the worker token, readable by this user only (mode "
            "0600), read at start; instead of --token (used by `tuneyard slurm submit`).",
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
    startup_wait: StartupWaitOpt = startup.PATIENCE,
) -> None:
    """Attach this machine: one RQ worker process per GPU (per --gpus-per-slot GPUs), or
    --slots CPU processes.

    Each registers with the API (host, GPU model and memory). On SIGTERM the running trials
    pause at their next report and are handed back with a checkpoint. A study whose objective
    no --allow or --allow-command pattern covers is left to other workers (said once per
    study); its trials are not failed. A study that ships its code runs only with --accept-code
    (else its jobs are left to other workers).

    At start it checks its settings: a worker token (TUNEYARD_TOKEN or --token) the API at
    --api takes, with the worker scope and this queue; a Redis URL (--redis or
    TUNEYARD_REDIS_URL) where Redis answers; an allowlist that is not empty (or
    --accept-code). When one is wrong it exits 2 with one line naming it."""
    from tuneyard.worker.allow import Allowlist
    from tuneyard.worker.pool import group_slots, plan_slots, run_pool, slot_gpus

    settings = Settings()
    url = api_url(api)
    allowed = Allowlist.of(allow or [], allow_command or [])
    try:
        if token_file is not None:
            if token:
                raise StartupError(
                    startup.TOKEN_FILE,
                    "give the token once: --token-file, or --token / TUNEYARD_TOKEN, not both",
                )
            token = startup.read_token_file(token_file)
        if token:
            # The slot processes (and the objectives' handles) read it from the environment.
            os.environ["TUNEYARD_TOKEN"] = token
        elif not insecure_no_auth:
            raise StartupError(
                startup.TOKEN,
                "no API token given: set it to a worker token, made with "
                "`tuneyard token create --scope worker`",
            )
        elif not is_loopback(urlsplit(url).hostname or ""):
            raise StartupError(
                startup.TOKEN,
                f"--insecure-no-auth is for an API on this machine, not {url}: "
                "set a worker token instead",
            )
        if not redis_url:
            startup.check_redis(redis_url)  # says which setting is missing
        if not allowed and not accept_code:
            raise StartupError(
                startup.ALLOW,
                "this worker may run nothing, so it would refuse every job: name the "
                "entrypoints it runs, e.g. --allow 'myproj.*' (see docs/security.md)",
            )
        try:
            plan = plan_slots(gpus, slots)
        except ValueError as exc:
            raise StartupError("--gpus", str(exc)) from exc
        try:
            grouped = group_slots(plan, gpus_per_slot)
        except ValueError as exc:
            raise StartupError("--gpus-per-slot", str(exc)) from exc
        startup.check_api(
            url,
            token or "",
            scopes=None if insecure_no_auth else startup.WORKER_SCOPES,
            queue=queue,
            patience=startup_wait,
        )
        redis = startup.check_redis(redis_url, patience=startup_wait)
    except StartupError as exc:
        raise _cannot_start("worker", exc) from None
    where = ", ".join(_describe_slot(slot_gpus(slot)) for slot in grouped)
    err.print(f"tuneyard worker: {len(grouped)} processes ({where}) on queue {queue!r}")
    if allowed:
        err.print(
            "runs entrypoints "
            + (", ".join(escape(p) for p in allowed.entrypoints) or "none")
            + "; executables "
            + (", ".join(escape(p) for p in allowed.commands) or "none")
        )
    if accept_code:
        err.print(f"runs the code studies ship on queue {queue!r} (--accept-code)")
    _log_setup()
    code = run_pool(
        url,
        redis,
        queue,
        grouped,
        (data_dir or settings.data_dir).resolve(),
        path,
        checkpoints=checkpoints if checkpoints == "api" else str(Path(checkpoints).resolve()),
        grace=grace,
        name=name,
        allow=allowed,
        accept_code=accept_code,
        code_cache=code_cache.resolve() if code_cache else None,
    )
    raise typer.Exit(code)


def _describe_slot(gpus: Sequence[Gpu]) -> str:
    """``GPU 0 (A100)``, ``GPUs 0,1 (A100)`` or ``CPU``: what one worker process runs on."""
    if not gpus:
        return "CPU"
    names = sorted({g.name for g in gpus if g.name})
    ids = ",".join(g.index for g in gpus)
    return (
        ("GPUs " if len(gpus) > 1 else "GPU ") + ids + (f" ({', '.join(names)})" if names else "")
    )


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
    accept_code: Annotated[
        bool,
        typer.Option(
            "--accept-code",
            help="The workers also run the code studies ship (`study create --code DIR`).",
        ),
    ] = False,
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
            accept_code=accept_code,
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
