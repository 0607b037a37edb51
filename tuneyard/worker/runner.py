"""Run assignments: load the objective, restore, run, then pause, complete or fail the trial."""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import shutil
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneyard.api.schemas import Assignment
from tuneyard.client import ApiError, Client, StudyFinished
from tuneyard.worker.checkpoints import CheckpointStore, FilesystemCheckpointStore
from tuneyard.worker.trial import Trial

log = logging.getLogger("tuneyard.worker")
Objective = Callable[[Trial], Any]


def load_objective(entrypoint: str) -> Objective:
    """``package.module:function`` → the function, with an error that says what is missing."""
    module_name, _, attr = entrypoint.partition(":")
    if not module_name or not attr:
        raise ValueError(f"entrypoint must look like 'package.module:function', got {entrypoint!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"cannot import {module_name!r} for entrypoint {entrypoint!r}: {exc}"
        ) from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise AttributeError(f"{module_name!r} has no function {attr!r}")
    return fn


def _error_text(exc: BaseException) -> str:
    tb = "".join(traceback.format_exception(exc))
    return tb[-8000:]


def run_assignment(
    client: Client,
    study_id: int,
    job: Assignment,
    objective: Objective,
    store: CheckpointStore,
    workdir: Path,
    heartbeat_every: float = 10.0,
) -> str:
    """Run one job to its end and tell the service how it ended; returns that ending."""
    ckpt_dir = Path(workdir) / f"trial-{job.trial_id}"
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    if job.kind == "resume" and job.checkpoint:
        store.restore(job.checkpoint, ckpt_dir)
    trial = Trial(
        client,
        study_id,
        job.trial_id,
        job.number,
        job.params,
        job.resource_from,
        job.resource_to,
        ckpt_dir,
    )
    beat_stop = threading.Event()

    def beat() -> None:
        while not beat_stop.wait(heartbeat_every):
            try:
                client.heartbeat(job.trial_id)
            except ApiError:
                return

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    started = time.monotonic()
    try:
        try:
            result = objective(trial)
        except Exception as exc:
            if trial.should_stop and trial.decision in ("stop", "complete"):
                return trial.decision  # the trial already ended; the crash came after
            client.fail(job.trial_id, _error_text(exc))
            return "fail"
        if trial.decision == "pause":
            location = store.save(study_id, job.trial_id, ckpt_dir)
            client.pause(job.trial_id, checkpoint=location)
            return "pause"
        if trial.decision in ("stop", "complete"):
            return trial.decision
        value = float(result) if isinstance(result, int | float) else None
        client.complete(job.trial_id, value=value)
        return "complete"
    finally:
        beat_stop.set()
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        log.info(
            "trial %s (%s) ran %.1fs: %s",
            job.trial_id,
            job.kind,
            time.monotonic() - started,
            trial.decision,
        )


def work_loop(
    client: Client,
    study_id: int,
    objective: Objective,
    store: CheckpointStore,
    workdir: Path,
    worker_name: str,
    idle_sleep: float = 0.2,
    stop_event: threading.Event | None = None,
) -> int:
    """Ask for work until the study is over; returns how many jobs this worker ran."""
    jobs = 0
    idle = idle_sleep
    while stop_event is None or not stop_event.is_set():
        try:
            job = client.next(study_id, worker=worker_name)
        except StudyFinished:
            return jobs
        if job is None:
            time.sleep(idle)
            idle = min(idle * 1.5, 2.0)
            continue
        idle = idle_sleep
        run_assignment(client, study_id, job, objective, store, workdir)
        jobs += 1
    return jobs


def _worker_main(
    api_url: str, study_id: int, entrypoint: str, data_dir: str, index: int, paths: list[str]
) -> None:
    for p in reversed([os.getcwd(), *paths]):
        if p not in sys.path:
            sys.path.insert(0, p)
    logging.basicConfig(level=logging.WARNING)
    objective = load_objective(entrypoint)
    store = FilesystemCheckpointStore(Path(data_dir) / "checkpoints")
    workdir = Path(data_dir) / "work" / f"worker-{index}"
    name = f"{socket.gethostname()}/local-{index}"
    with Client(api_url) as client:
        work_loop(client, study_id, objective, store, workdir, name)


def run_local_workers(
    api_url: str,
    study_id: int,
    entrypoint: str,
    n_workers: int,
    data_dir: Path,
    import_paths: list[str] | None = None,
) -> list[int]:
    """``n_workers`` worker processes on this machine until the study ends; their exit codes.

    The objective is imported in each process with the current directory and
    ``import_paths`` on ``sys.path``."""
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(api_url, study_id, entrypoint, str(data_dir), i, list(import_paths or [])),
            name=f"tuneyard-worker-{i}",
        )
        for i in range(n_workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    codes = [p.exitcode if p.exitcode is not None else -1 for p in procs]
    for p, code in zip(procs, codes, strict=True):
        if code != 0:
            log.error("%s exited with code %s", p.name, code)
    return codes
