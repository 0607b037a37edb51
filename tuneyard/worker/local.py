"""Local workers: a loop that asks for jobs until the study is over, and a few processes on
this machine that each run that loop (no Redis needed)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import socket
import sys
import threading
from pathlib import Path

from tuneyard.client import Client, StudyFinished
from tuneyard.worker.assignment import run_assignment
from tuneyard.worker.checkpoints import CheckpointStore, FilesystemCheckpointStore
from tuneyard.worker.control import JobOptions, WorkerClient
from tuneyard.worker.objective import Objective, load_objective

log = logging.getLogger("tuneyard.worker")


class TrialBudget:
    """At most ``n`` new trials started by the workers that share it: threads, or processes
    it was handed to when they were spawned. A worker reserves a place before it asks for
    work and settles it with what it got: a new trial keeps the place, a resumed one (or
    nothing) gives it back. While places are reserved, a worker that finds none free waits
    for them to settle, so the count is exact however many workers ask at once."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"n_trials must be at least 1, got {n}")
        ctx = multiprocessing.get_context("spawn")
        self.n = n
        self._lock = ctx.Lock()
        self._started = ctx.RawValue("i", 0)
        self._reserved = ctx.RawValue("i", 0)

    @property
    def started(self) -> int:
        return int(self._started.value)

    def reserve(self, stop: threading.Event) -> bool:
        """True with a place reserved; False once ``n`` trials started (or ``stop`` is set)."""
        while not stop.is_set():
            with self._lock:
                if self._started.value >= self.n:
                    return False
                if self._started.value + self._reserved.value < self.n:
                    self._reserved.value += 1
                    return True
            stop.wait(0.05)
        return False

    def settle(self, started: bool) -> None:
        with self._lock:
            self._reserved.value -= 1
            if started:
                self._started.value += 1


def work_loop(
    client: WorkerClient,
    study_id: int,
    objective: Objective,
    store: CheckpointStore,
    workdir: Path,
    worker_name: str,
    idle_sleep: float = 0.2,
    stop_event: threading.Event | None = None,
    opts: JobOptions | None = None,
    budget: TrialBudget | None = None,
) -> int:
    """Ask for work until the study is over (or ``stop_event`` is set, or ``budget`` has no
    new trial left); returns how many jobs this worker ran. While nothing can run (ASHA
    waiting for a rung to fill) it polls with a backoff from ``idle_sleep`` up to 2 s."""
    stop = stop_event or threading.Event()
    jobs = 0
    idle = idle_sleep
    while not stop.is_set():
        if budget is not None and not budget.reserve(stop):
            return jobs
        try:
            job = client.next(study_id, worker=worker_name)
        except BaseException as exc:
            if budget is not None:
                budget.settle(started=False)
            if isinstance(exc, StudyFinished):
                return jobs
            raise
        if budget is not None:
            # A trial's first job starts it; a resumed or retried one was counted before.
            budget.settle(started=job is not None and job.resource_from == 0 and job.attempt == 1)
        if job is None:
            stop.wait(idle)
            idle = min(idle * 1.5, max(2.0, idle_sleep))
            continue
        idle = idle_sleep
        run_assignment(client, study_id, job, objective, store, workdir, opts)
        jobs += 1
    return jobs


# Thread pools of numerical libraries, sized per worker so that n workers don't oversubscribe
# the cores (set before the objective imports numpy; a value the user set is kept).
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _worker_main(
    api_url: str,
    study_id: int,
    entrypoint: str,
    data_dir: str,
    index: int,
    paths: list[str],
    threads: int,
    token: str | None = None,
) -> None:
    for var in THREAD_VARS:
        os.environ.setdefault(var, str(threads))
    for p in reversed([*paths, os.getcwd()]):
        if p not in sys.path:
            sys.path.insert(0, p)
    logging.basicConfig(level=logging.WARNING)
    objective = load_objective(entrypoint)
    store = FilesystemCheckpointStore(Path(data_dir) / "checkpoints")
    workdir = Path(data_dir) / "work" / f"local-{index}-{os.getpid()}"
    name = f"{socket.gethostname()}/local-{index}"
    try:
        with Client(api_url, token=token, retries=10) as client:
            execution = client.get_study(study_id).spec.execution
            opts = JobOptions(
                timeout=execution.timeout if execution else None,
                checkpoint_every=execution.checkpoint_every if execution else None,
            )
            work_loop(client, study_id, objective, store, workdir, name, opts=opts)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class WorkerCrashed(RuntimeError):
    """A local worker process exited with an error."""

    def __init__(self, codes: dict[str, int | None]) -> None:
        self.codes = codes
        which = ", ".join(f"{name} (exit code {code})" for name, code in codes.items())
        super().__init__(f"local worker processes failed: {which}; their tracebacks are above")


def run_local_workers(
    api_url: str,
    study_id: int,
    entrypoint: str,
    n_workers: int,
    data_dir: Path,
    import_paths: list[str] | None = None,
    token: str | None = None,
) -> None:
    """Run ``n_workers`` worker processes on this machine until the study is over.

    Each process (multiprocessing's spawn context) imports the objective with its current
    directory and ``import_paths`` on ``sys.path`` and runs :func:`work_loop` with its own
    client; checkpoints go to ``data_dir/checkpoints``. BLAS/OpenMP threads default to
    cores / n_workers per process. Returns once every process has exited; raises
    :class:`WorkerCrashed` naming those that exited with an error. The workers present
    ``token`` (default: TUNEYARD_TOKEN) to the API. As with any spawned
    process, a script that calls this needs an ``if __name__ == "__main__":`` guard."""
    if n_workers < 1:
        raise ValueError(f"n_workers must be at least 1, got {n_workers}")
    ctx = multiprocessing.get_context("spawn")
    args = (api_url, study_id, entrypoint, str(Path(data_dir).absolute()))
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(*args, i, list(import_paths or []), threads, token),
            name=f"tuneyard-local-worker-{i}",
        )
        for i in range(n_workers)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join()
    finally:
        for p in procs:  # only on an interrupt: normally every process has exited here
            if p.pid is not None and p.is_alive():
                p.terminate()
                p.join(10)
    failed = {p.name: p.exitcode for p in procs if p.exitcode != 0}
    if failed:
        for name, code in failed.items():
            log.error("%s exited with code %s", name, code)
        raise WorkerCrashed(failed)
