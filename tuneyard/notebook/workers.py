"""Running a study's trials from a notebook: local workers for ``Study.optimize`` and the
jobs of an ask/tell loop.

A function that can be imported by its module path runs in worker processes (spawned, so a
crash or a hung C extension takes one process down, not the notebook); one defined in the
notebook itself (``__main__``), a lambda or a closure cannot be imported by a fresh process,
so it runs in threads of this one. Either way each worker runs the loop every tuneyard worker
runs (:func:`tuneyard.worker.local.work_loop`), with the same ``trial`` handle, so reports,
pauses, checkpoints and failures behave as they do on a remote worker."""

from __future__ import annotations

import importlib
import multiprocessing
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

from tuneyard.client import Client, StudyFinished
from tuneyard.worker.checkpoints import CheckpointStore
from tuneyard.worker.local import TrialBudget
from tuneyard.worker.trial import Trial

Objective = Callable[[Trial], Any]


def entrypoint_of(fn: Objective) -> str | None:
    """``module:function`` when a fresh process importing that finds ``fn`` itself; None for
    a function of the notebook or script (``__main__``), a lambda, a closure or a method."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or not name or "<" in name or "." in name:
        return None
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return f"{module}:{name}" if found is fn else None


def run_in_processes(
    client: Client,
    study_id: int,
    entrypoint: str,
    n_workers: int,
    data_dir: Path,
    token: str | None,
    deadline: float | None,
    budget: TrialBudget | None = None,
) -> list[int | None]:
    """``n_workers`` spawned worker processes until the study is over or ``deadline`` (on
    ``time.monotonic``) passes; then they are terminated, and the trials they were running
    go back to the queue when their lease runs out. Returns the processes' exit codes."""
    ctx = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // n_workers)
    # The current directory first, as ``tuneyard worker --path .`` would import it.
    paths = [os.getcwd()]
    procs = [
        ctx.Process(
            target=_process_main,
            args=(
                client.base_url,
                study_id,
                entrypoint,
                str(data_dir),
                i,
                paths,
                threads,
                token,
                budget,
            ),
            name=f"tuneyard-notebook-worker-{i}",
            daemon=True,
        )
        for i in range(n_workers)
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.pid is not None and p.is_alive():
                p.terminate()
                p.join(10)
    return [p.exitcode for p in procs]


def _process_main(
    api_url: str,
    study_id: int,
    entrypoint: str,
    data_dir: str,
    index: int,
    paths: list[str],
    threads: int,
    token: str | None,
    budget: TrialBudget | None,
) -> None:
    """One worker process: the objective imported, then the worker loop until the study is
    over. BLAS/OpenMP threads are capped so that n processes do not oversubscribe the cores."""
    import logging
    import sys

    from tuneyard.worker.local import THREAD_VARS
    from tuneyard.worker.objective import load_objective

    for var in THREAD_VARS:
        os.environ.setdefault(var, str(threads))
    for p in reversed(paths):
        if p not in sys.path:
            sys.path.insert(0, p)
    logging.basicConfig(level=logging.WARNING)
    objective = load_objective(entrypoint)
    with Client(api_url, token=token, retries=10) as client:
        _loop(client, study_id, objective, Path(data_dir), f"local-{index}", None, budget)


def _loop(
    client: Client,
    study_id: int,
    fn: Objective,
    data_dir: Path,
    name: str,
    stop: threading.Event | None,
    budget: TrialBudget | None = None,
) -> int:
    """The worker loop as ``tuneyard worker`` runs it: the study's timeout and checkpoint
    interval, checkpoints uploaded to the API server (or where TUNEYARD_CHECKPOINT_STORE
    says), so that a trial paused here may resume on any worker."""
    from tuneyard.worker.checkpoints import store_from_env
    from tuneyard.worker.control import JobOptions
    from tuneyard.worker.local import work_loop

    execution = client.get_study(study_id).spec.execution
    opts = JobOptions(
        timeout=execution.timeout if execution else None,
        checkpoint_every=execution.checkpoint_every if execution else None,
    )
    workdir = data_dir / "work" / f"{name}-{os.getpid()}"
    store = store_from_env(client, data_dir)
    worker = f"{socket.gethostname()}/{name}"
    try:
        return work_loop(client, study_id, fn, store, workdir, worker, 0.2, stop, opts, budget)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_in_threads(
    client: Client,
    study_id: int,
    fn: Objective,
    n_workers: int,
    data_dir: Path,
    deadline: float | None,
    budget: TrialBudget | None = None,
) -> int:
    """``n_workers`` threads of this process, each a worker loop, until the study is over or
    ``deadline`` passes (then each finishes the job it is running). Returns the jobs run.

    A Python objective's ``execution.timeout`` cannot interrupt a thread: the trial is failed
    when the timeout passes, and the thread goes on once the objective returns."""
    stop = threading.Event()
    ran = [0] * n_workers
    errors: list[BaseException] = []

    def loop(i: int) -> None:
        try:
            ran[i] = _loop(client, study_id, fn, data_dir, f"notebook-{i}", stop, budget)
        except BaseException as exc:  # raised by optimize, which stops the other threads
            errors.append(exc)
            stop.set()

    pool = [
        threading.Thread(target=loop, args=(i,), name=f"tuneyard-notebook-{i}", daemon=True)
        for i in range(n_workers)
    ]
    for t in pool:
        t.start()
    try:
        for t in pool:
            while t.is_alive():
                if deadline is not None and time.monotonic() >= deadline:
                    stop.set()
                t.join(0.2)
    except KeyboardInterrupt:
        stop.set()  # each thread ends after its current job
        raise
    if errors:
        raise errors[0]
    return sum(ran)


class Job(Trial):
    """One job of an ask/tell loop: the ``trial`` handle an objective gets (``params``,
    ``report``, ``epochs``, ``save``, ``load``), and the calls that end it.

    ``complete`` ends the job as the service asked: a ``pause`` decision is acknowledged with
    what the job ``save``d (restored by ``load`` when the trial is resumed), after ``stop`` or
    ``complete`` there is nothing left to say, otherwise the trial completes with ``value``
    (default: its latest report) and its saved state as its model."""

    store: CheckpointStore | None = None

    def _keep(self) -> str | None:
        if self.store is None or not any(self.checkpoint_dir.iterdir()):
            return None
        return self.store.save(self.study_id, self.trial_id, self.checkpoint_dir, self.attempt)

    def complete(self, value: float | None = None, **metrics: float | None) -> str:
        """End the job; returns how it ended (complete, pause or stop)."""
        client = cast(Client, self.client)
        if self.stale is not None or self.decision in ("stop", "complete"):
            return self.decision or "stop"
        if self.decision == "pause":
            client.pause(self.trial_id, checkpoint=self._keep(), attempt=self.attempt)
            return "pause"
        client.complete(self.trial_id, value, metrics, self._keep(), attempt=self.attempt)
        self.decision = "complete"
        return "complete"

    def fail(self, error: str) -> None:
        """The objective could not run this configuration: ``error`` says why."""
        client = cast(Client, self.client)
        client.fail(self.trial_id, error, attempt=self.attempt)
        self.decision = "fail"


def ask(client: Client, study_id: int, worker: str | None, tmp: Path, poll: float) -> Iterator[Job]:
    """Jobs of the study until it is over (the service answers ``StudyFinished``); while
    nothing can run (every slot busy, a rung filling) it asks again every ``poll`` seconds.

    While the caller works on a job a heartbeat keeps its lease, as on any worker, so an
    evaluation may take longer than the lease between two reports."""
    from tuneyard.worker.checkpoints import store_from_env
    from tuneyard.worker.control import JobOptions
    from tuneyard.worker.guards import Heartbeat

    store = store_from_env(client, tmp)
    every = JobOptions().heartbeat_every
    while True:
        try:
            job = client.next(study_id, worker=worker)
        except StudyFinished:
            return
        if job is None:
            time.sleep(poll)
            continue
        ckpt = tmp / f"trial-{job.trial_id}-{job.attempt}"
        handle = Job(
            client,
            study_id,
            job.trial_id,
            job.number,
            job.params,
            job.resource_from,
            job.resource_to,
            ckpt,
            attempt=job.attempt,
            replicate=job.replicate,
        )
        handle.store = store
        if job.kind == "resume" and job.checkpoint:
            store.restore(job.checkpoint, ckpt)
        beat = min(every, job.lease_seconds / 3) if job.lease_seconds else every
        try:
            with Heartbeat(client, handle, beat):
                yield handle
        finally:
            shutil.rmtree(ckpt, ignore_errors=True)
