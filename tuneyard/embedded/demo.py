"""``tuneyard demo``: a study run to the end on this machine, on the whole stack or, where no
Redis is at hand, on the API server alone with local worker processes. See
:mod:`tuneyard.embedded`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import yaml
from rich.markup import escape
from rich.table import Table

from tuneyard.client import ApiError, Client
from tuneyard.embedded.private import private_dir, private_umask
from tuneyard.embedded.processes import free_port
from tuneyard.embedded.redis_server import redis_available
from tuneyard.embedded.stack import (
    EXAMPLES,
    console,
    make_tokens,
    redis_shown,
    run_data_dir,
    server_env,
    show_token,
    stack,
    start_server,
)
from tuneyard.progress import watch_study
from tuneyard.spec import StudySpec
from tuneyard.states import StudyState, TrialState
from tuneyard.worker.allow import Allowlist

DemoMode = Literal["auto", "rq", "local"]


def _default_study() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / "examples" / "study.yaml"
        if candidate.exists():
            return candidate
    raise FileNotFoundError("examples/study.yaml not found; pass --study FILE")


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
    data_dir = run_data_dir(data_dir, "demo")
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
                    f"API at {st.api_url} (docs: {st.api_url}/docs), Redis {redis_shown(st)}"
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
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    pool: _LocalPool | None = None
    try:
        with ExitStack() as es:
            env = server_env(data_dir, url, database_url, auth)
            server = start_server(es, data_dir, port, env)
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
    for w in study.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}")
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
    return 0 if final.state == StudyState.COMPLETED else 1


def _summary(client: Client, study: Any, spec: StudySpec, elapsed: float) -> None:
    """The count per state, and a table of the best trials: completed ones first, then the
    others that reported (early-stopped trials, ranked by their value at their last rung)."""
    order = "value" if spec.direction == "minimize" else "-value"
    best = client.list_trials(study.id, state=TrialState.COMPLETED, order=order, limit=5).items
    if len(best) < 5:
        others = client.list_trials(study.id, order=order, limit=5 + len(best)).items
        best += [t for t in others if t.state != TrialState.COMPLETED][: 5 - len(best)]
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
