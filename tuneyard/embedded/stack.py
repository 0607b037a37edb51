"""The stack of ``tuneyard up``: Redis, the API server, the dispatcher and a pool of RQ
workers, with the tokens of the run. See :mod:`tuneyard.embedded`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from rich.console import Console

from tuneyard.embedded.private import REDIS_PASSWORD_FILE, private_dir, private_umask
from tuneyard.embedded.processes import free_port, process, wait_ready
from tuneyard.embedded.redis_server import embedded_redis, redis_address
from tuneyard.settings import Settings
from tuneyard.worker.allow import Allowlist

console = Console()
# What the embedded workers run unless told otherwise: the examples shipped with tuneyard.
EXAMPLES = Allowlist.of(["examples.*"])


@dataclass(frozen=True)
class Stack:
    api_url: str
    redis_url: str
    data_dir: Path
    # name -> (process, its log), watched so that a dead component is reported, not waited on
    processes: dict[str, tuple[subprocess.Popen[bytes], Path]] = field(default_factory=dict)
    # The admin token made for this run (None with auth off); the workers hold their own.
    token: str | None = None
    # A read token made for this run: what the dashboard is given, never the admin token.
    read_token: str | None = None

    def problem(self) -> str | None:
        """Which process of the stack exited, if one did."""
        for name, (proc, log) in self.processes.items():
            code = proc.poll()
            if code is not None:
                return f"the {name} process exited with code {code}; see {log}"
        return None


def server_env(
    data_dir: Path, url: str, database_url: str | None, auth: bool = True
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TUNEYARD_TOKEN"}
    return {
        **env,
        "TUNEYARD_AUTH": "true" if auth else "false",
        "TUNEYARD_DATABASE_URL": database_url
        or os.environ.get("TUNEYARD_DATABASE_URL")
        or f"sqlite:///{data_dir / 'tuneyard.db'}",
        "TUNEYARD_DATA_DIR": str(data_dir),
        "TUNEYARD_API_URL": url,
    }


class RunTokens(NamedTuple):
    """The tokens a run of the stack makes: one per use, each of the scope that use needs."""

    admin: str  # the person running the stack: the CLI, the Python client
    worker: str  # its workers
    read: str  # the dashboard: a browser keeps it, so it can read and nothing more


def make_tokens(database_url: str) -> RunTokens:
    """Fresh tokens for this run (admin, worker, read), written straight into the database
    (the API server has migrated it)."""
    from tuneyard.service.context import Toolkit
    from tuneyard.service.tokens import Scope, TokenService
    from tuneyard.store.db import make_engine, make_sessionmaker

    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        kit = Toolkit(make_sessionmaker(engine), Settings(database_url=database_url))
        tokens = TokenService(kit)
        return RunTokens(
            admin=tokens.create("embedded: admin", Scope.ADMIN).secret,
            worker=tokens.create("embedded: local workers", Scope.WORKER).secret,
            read=tokens.create("embedded: dashboard", Scope.READ).secret,
        )
    finally:
        engine.dispose()


def show_token(token: str | None, read_token: str | None = None, api_url: str = "") -> None:
    """Print the run's admin token, for the CLI, and its read token, for the dashboard, once:
    they are stored nowhere else."""
    if token is None:
        console.print(
            "[yellow]authentication is off[/yellow] (--insecure-no-auth): anyone on this "
            "machine can use the API"
        )
        return
    console.print(
        f"admin token (shown once; for the CLI and the API, not the dashboard): "
        f"[bold]{token}[/bold]\nexport TUNEYARD_TOKEN={token}"
    )
    if read_token is not None:
        where = f" at {api_url}/" if api_url else ""
        console.print(
            f"dashboard token (read-only; paste this one when the dashboard{where} asks): "
            f"[bold]{read_token}[/bold]"
        )


def start_server(
    es: ExitStack, data_dir: Path, port: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """``python -m tuneyard.cli server`` as a child process, ready when this returns."""
    log = data_dir / "server.log"
    cmd = [sys.executable, "-m", "tuneyard.cli", "server", "--host", "127.0.0.1"]
    server = es.enter_context(process([*cmd, "--port", str(port)], env, log))
    wait_ready(env["TUNEYARD_API_URL"], server, log)
    return server


@contextmanager
def stack(
    data_dir: Path,
    workers: int,
    port: int = 0,
    paths: list[str] | None = None,
    queue: str = "default",
    gpus: str | None = None,
    database_url: str | None = None,
    allow: Allowlist | None = None,
    auth: bool = True,
    accept_code: bool = False,
) -> Iterator[Stack]:
    """Start Redis, the API, the dispatcher and the workers; stop them all on exit.

    The database is ``database_url``, else TUNEYARD_DATABASE_URL, else SQLite in data_dir.
    The workers run what ``allow`` names (default: the examples' entrypoints). With ``auth``
    (the default) the run makes an admin token (``Stack.token``), a read token for the
    dashboard (``Stack.read_token``) and a worker token its workers hold; without it the API,
    on the loopback interface, takes requests from anyone on this machine.

    data_dir and what the stack writes there are private to this user (0700 and 0600), and
    its own Redis requires a password (``embedded_redis``)."""
    private_dir(data_dir)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with ExitStack() as es:
        redis_url = os.environ.get("TUNEYARD_REDIS_URL") or es.enter_context(
            embedded_redis(data_dir)
        )
        env = {
            **server_env(data_dir, url, database_url, auth),
            "TUNEYARD_REDIS_URL": redis_url,
        }
        py = [sys.executable, "-m", "tuneyard.cli"]
        server = start_server(es, data_dir, port, env)
        tokens = make_tokens(env["TUNEYARD_DATABASE_URL"]) if auth else None
        if tokens is not None:
            env["TUNEYARD_TOKEN"] = tokens.worker
        scheduler_log = data_dir / "scheduler.log"
        scheduler = es.enter_context(process([*py, "dispatcher"], env, scheduler_log))
        extra = [a for p in (paths or []) for a in ("--path", p)]
        allowed = allow if allow is not None else EXAMPLES
        extra += [a for p in allowed.entrypoints for a in ("--allow", p)]
        extra += [a for p in allowed.commands for a in ("--allow-command", p)]
        pool = ["--gpus", gpus] if gpus else ["--slots", str(workers)]
        if accept_code:
            pool.append("--accept-code")
        if tokens is None:
            pool.append("--insecure-no-auth")  # the API, on loopback, asks for no token
        checkpoints = private_dir(data_dir / "checkpoints")
        worker_log = data_dir / "worker.log"
        worker = es.enter_context(
            process(
                [
                    *py,
                    "worker",
                    "--queue",
                    queue,
                    *pool,
                    "--data-dir",
                    str(data_dir),
                    # One machine: the checkpoints stay on its disk.
                    "--checkpoints",
                    str(checkpoints),
                    *extra,
                ],
                env,
                worker_log,
            )
        )
        procs = {
            "API server": (server, data_dir / "server.log"),
            "dispatcher": (scheduler, scheduler_log),
            "worker pool": (worker, worker_log),
        }
        yield Stack(
            url,
            redis_url,
            data_dir,
            procs,
            tokens.admin if tokens else None,
            tokens.read if tokens else None,
        )


def run_data_dir(data_dir: Path | None, prefix: str) -> Path:
    if data_dir is not None:
        return data_dir.resolve()
    # tuneyard's own directory, which lists the runs: private as well.
    base = private_dir(Settings().data_dir.resolve())
    return base / f"{prefix}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def redis_shown(st: Stack) -> str:
    """The stack's Redis for messages: where it listens and where its password is."""
    where = redis_address(st.redis_url)
    if os.environ.get("TUNEYARD_REDIS_URL"):
        return where
    return f"{where} (password in {st.data_dir / REDIS_PASSWORD_FILE})"


def run_up(
    data_dir: Path | None = None,
    workers: int = 2,
    port: int = 0,
    gpus: str | None = None,
    allow: Allowlist | None = None,
    auth: bool = True,
    accept_code: bool = False,
) -> int:
    """The stack alone, until interrupted (or until one of its processes exits: then 1).

    Its workers run the examples' entrypoints and what ``allow`` adds. Prints the admin token
    it made, for the CLI, and a read token, for the dashboard (once), unless ``auth`` is off."""
    data_dir = run_data_dir(data_dir, "up")
    allowed = EXAMPLES.merge(allow or Allowlist())
    with (
        private_umask(),
        stack(
            data_dir,
            workers,
            port,
            paths=[os.getcwd()],
            gpus=gpus,
            allow=allowed,
            auth=auth,
            accept_code=accept_code,
        ) as st,
    ):
        console.print(
            f"[bold]tuneyard[/bold] up: API {st.api_url} (docs {st.api_url}/docs), "
            f"Redis {redis_shown(st)}, {workers} workers, data in {data_dir}"
        )
        show_token(st.token, st.read_token, st.api_url)
        console.print(
            "workers run entrypoints "
            + ", ".join(allowed.entrypoints)
            + (f" and executables {', '.join(allowed.commands)}" if allowed.commands else "")
            + " (more with --allow / --allow-command)"
            + ("; and the code studies ship" if accept_code else "")
        )
        console.print(f"export TUNEYARD_API_URL={st.api_url}; press Ctrl-C to stop")
        try:
            while (problem := st.problem()) is None:
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
        console.print(f"[red]{problem}[/red]")
        return 1
