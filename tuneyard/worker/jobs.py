"""The RQ job a worker runs: one slot of a study, bound late to a trial.

A job carries the study, not a configuration. When it starts it asks the API for the next piece
of work, so ASHA chooses between promotions and new trials with the freshest results (the ASHA
paper's ``get_job()``), and one pool of workers can serve several studies.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from rq import get_current_job

from tuneyard.client import Client, StudyFinished
from tuneyard.worker.checkpoints import store_from_env
from tuneyard.worker.runner import (
    Control,
    JobOptions,
    make_objective,
    run_assignment,
)

PENDING_KEY = "tuneyard:pending:{study_id}"
# How long a slot job keeps asking while the study has nothing to run (e.g. ASHA waiting on
# running trials), before it gives the slot back to the dispatcher.
IDLE_PATIENCE = 5.0
# This process's shutdown switch: the worker's SIGTERM handler flips it (see pool.py).
CONTROL = Control()


def worker_name() -> str:
    return os.environ.get("TUNEYARD_WORKER_NAME") or f"{socket.gethostname()}/{os.getpid()}"


def run_slot(study_id: int, api_url: str) -> str:
    """Run one piece of work of ``study_id``; returns how it ended."""
    job = get_current_job()
    if job is not None:
        # The job left the queue: the dispatcher no longer counts it as pending.
        job.connection.srem(PENDING_KEY.format(study_id=study_id), job.id)
    if CONTROL.stopping.is_set():
        return "stopping"  # the worker is shutting down: take no new trial
    data_dir = Path(os.environ.get("TUNEYARD_DATA_DIR", "."))
    name = worker_name()
    # A worker knows how it reaches the API; the dispatcher's address is the fallback.
    url = os.environ.get("TUNEYARD_API_URL") or api_url
    token = os.environ.get("TUNEYARD_TOKEN")
    # Patient retries (about two minutes): an API server restarting is a pause, not a failure.
    with Client(url, token=token, retries=10) as client:
        store = store_from_env(client, data_dir)
        deadline = time.monotonic() + IDLE_PATIENCE
        delay = 0.1
        while True:
            try:
                assignment = client.next(study_id, worker=name)
            except StudyFinished:
                return "finished"
            if assignment is not None:
                break
            if time.monotonic() > deadline or CONTROL.stopping.is_set():
                return "idle"
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        spec = client.get_study(study_id).spec
        try:
            objective = make_objective(spec.execution, url, token)
        except (ImportError, AttributeError, ValueError) as exc:
            client.fail(assignment.trial_id, f"{type(exc).__name__}: {exc}")
            return "fail"
        opts = JobOptions(
            timeout=spec.execution.timeout if spec.execution else None,
            grace=float(os.environ.get("TUNEYARD_STOP_GRACE", "60")),
            hard_exit=True,
            control=CONTROL,
        )
        workdir = data_dir / "work" / name.replace("/", "_")
        return run_assignment(client, study_id, assignment, objective, store, workdir, opts)
