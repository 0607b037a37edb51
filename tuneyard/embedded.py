"""The embedded default (``tuneyard up``): the API on SQLite, local workers, one study to the end.

The same code paths as production: the API is a real server process speaking HTTP, and the
workers are real processes that ask it for work over HTTP.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
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
from tuneyard.worker.runner import run_local_workers

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


def run_demo(
    data_dir: Path | None = None,
    study_file: Path | None = None,
    workers: int = 2,
    port: int = 0,
    max_trials: int | None = None,
) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    data_dir = Path(data_dir or Settings().data_dir / f"demo-{stamp}").resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    study_file = study_file or _default_study()
    raw: dict[str, Any] = yaml.safe_load(study_file.read_text())
    if max_trials is not None:
        raw.setdefault("limits", {})["max_trials"] = max_trials
    spec = StudySpec.model_validate(raw)
    if spec.execution is None or not spec.execution.entrypoint:
        raise ValueError(f"{study_file}: execution.entrypoint is needed to run the study locally")
    entrypoint = spec.execution.entrypoint
    # The objective's package sits beside the study file (examples/study.yaml names
    # examples.mlp_digits), so the workers can import it from any directory.
    here = study_file.resolve().parent
    paths = [str(here.parent), str(here)]

    port = port or _free_port()
    url = f"http://127.0.0.1:{port}"
    db = data_dir / "tuneyard.db"
    env = {
        **os.environ,
        "TUNEYARD_DATABASE_URL": f"sqlite:///{db}",
        "TUNEYARD_DATA_DIR": str(data_dir),
        "TUNEYARD_API_URL": url,
    }
    log = data_dir / "server.log"
    console.print(f"[bold]tuneyard[/bold] embedded: SQLite at {db}")
    with open(log, "wb") as log_file:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuneyard.cli",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(url, server, log)
        console.print(f"API at {url} (docs: {url}/docs); {workers} local workers")
        with Client(url) as client:
            study = client.create_study(spec)
            console.print(
                f"study {study.id} [bold]{spec.name}[/bold]: {spec.scheduler.type} "
                f"{spec.sampler.type}, {spec.limits.max_trials} trials, "
                f"{spec.direction} {spec.metric}"
            )
            codes: list[int] = []
            runner = threading.Thread(
                target=lambda: codes.extend(
                    run_local_workers(url, study.id, entrypoint, workers, data_dir, paths)
                ),
                daemon=True,
            )
            started = time.monotonic()
            runner.start()
            _progress(client, study.id, spec, runner)
            runner.join()
            elapsed = time.monotonic() - started
            final = client.get_study(study.id)
            _summary(client, final, spec, elapsed)
            if any(codes):
                console.print(f"[red]worker exit codes: {codes}[/red]")
                return 1
            return 0 if final.state == "completed" else 1
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def _progress(client: Client, study_id: int, spec: StudySpec, runner: threading.Thread) -> None:
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
            if not runner.is_alive() or s.state != "running":
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
