"""The RQ job a worker runs: one slot of a study, bound late to a trial.

A job carries the study, not a configuration. When it starts it asks the API for the next piece
of work, so ASHA chooses between promotions and new trials with the freshest results (the ASHA
paper's ``get_job()``), and one pool of workers can serve several studies.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from redis.exceptions import RedisError
from rq import Queue, get_current_job
from rq.job import Job

from tuneyard.client import Client, StudyFinished
from tuneyard.protocol import PENDING_KEY, Assignment
from tuneyard.worker.allow import Allowlist
from tuneyard.worker.assignment import run_assignment
from tuneyard.worker.checkpoints import store_from_env
from tuneyard.worker.control import Control, JobOptions
from tuneyard.worker.objective import make_objective

# How long a slot job keeps asking while the study has nothing to run (e.g. ASHA waiting on
# running trials), before it gives the slot back to the dispatcher.
IDLE_PATIENCE = 5.0
# The GPUs a slot runs its jobs on, as JSON (``[{"index": "0", "name": ...}]``; ``[]``: a
# CPU slot), set by ``tuneyard worker`` for each slot process.
GPUS_ENV = "TUNEYARD_WORKER_GPUS"
# This process's shutdown switch: the worker's SIGTERM handler flips it (see pool.py).
CONTROL = Control()


def worker_name() -> str:
    return os.environ.get("TUNEYARD_WORKER_NAME") or f"{socket.gethostname()}/{os.getpid()}"


def slot_gpus() -> list[dict[str, str]]:
    """The GPUs this slot runs its jobs on (set by ``tuneyard worker``); none on a CPU slot
    or when the variable is missing or unreadable."""
    try:
        found = json.loads(os.environ.get(GPUS_ENV) or "[]")
    except ValueError:
        return []
    if not isinstance(found, list):
        return []
    # Cut to what the API takes, so that an odd name never costs the slot its jobs.
    sizes = {"index": 64, "name": 200, "uuid": 100}
    return [
        {k: str(v)[: sizes[k]] for k, v in g.items() if k in sizes and v is not None}
        for g in found[:64]
        if isinstance(g, dict) and g.get("index") is not None
    ]


def run_slot(study_id: int, api_url: str) -> str:
    """Run pieces of work of ``study_id``; returns how the last one ended.

    When a trial ends, the slot asks for the study's next piece of work at once rather than
    handing the worker back to RQ: a fresh job would wait for the dispatcher's next pass (up to
    its interval) and set the client up again. It hands the worker back when a job of another
    study waits in its queue (studies sharing a queue take turns), when the study has nothing
    to run now, when the worker is stopping, and after one trial when the study has an
    ``execution.timeout`` (the job's own timeout was sized for one)."""
    job = get_current_job()
    if job is not None:
        # The job left the queue: the dispatcher no longer counts it as pending.
        job.connection.srem(PENDING_KEY.format(study_id=study_id), job.id)
    if CONTROL.stopping.is_set():
        return "stopping"  # the worker is shutting down: take no new trial
    data_dir = Path(os.environ.get("TUNEYARD_DATA_DIR", "."))
    name = worker_name()
    gpus = slot_gpus()
    # A worker knows how it reaches the API; the dispatcher's address is the fallback.
    url = os.environ.get("TUNEYARD_API_URL") or api_url
    token = os.environ.get("TUNEYARD_TOKEN")
    # Patient retries (about two minutes): an API server restarting is a pause, not a failure.
    with Client(url, token=token, retries=10) as client:
        store = store_from_env(client, data_dir)
        assignment = _first_assignment(client, study_id, name, gpus)
        if isinstance(assignment, str):
            return assignment
        spec = client.get_study(study_id).spec
        try:
            # Before anything is imported or started: this worker runs only what it allows.
            Allowlist.from_env().check(spec.execution)
            objective = make_objective(spec.execution, url, token)
        except (ImportError, AttributeError, ValueError) as exc:
            client.fail(
                assignment.trial_id, f"{type(exc).__name__}: {exc}", attempt=assignment.attempt
            )
            return "fail"
        opts = JobOptions(
            timeout=spec.execution.timeout if spec.execution else None,
            grace=float(os.environ.get("TUNEYARD_STOP_GRACE", "60")),
            hard_exit=True,
            control=CONTROL,
        )
        workdir = data_dir / "work" / name.replace("/", "_")
        while True:
            outcome = run_assignment(client, study_id, assignment, objective, store, workdir, opts)
            if opts.timeout is not None or CONTROL.stopping.is_set():
                return outcome
            if _others_waiting(job, study_id):
                return outcome
            try:
                found = client.next(study_id, worker=name, gpus=gpus)
            except StudyFinished:
                return outcome
            if found is None:
                return outcome  # nothing to run now: the dispatcher sends a job when there is
            assignment = found


def _first_assignment(
    client: Client, study_id: int, name: str, gpus: list[dict[str, str]]
) -> Assignment | str:
    """The job's first piece of work, asked for while the study has nothing to run for up to
    IDLE_PATIENCE seconds; or how the job ends without one."""
    deadline = time.monotonic() + IDLE_PATIENCE
    delay = 0.1
    while True:
        try:
            assignment = client.next(study_id, worker=name, gpus=gpus)
        except StudyFinished:
            return "finished"
        if assignment is not None:
            return assignment
        if time.monotonic() > deadline or CONTROL.stopping.is_set():
            return "idle"
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


def _others_waiting(job: Job | None, study_id: int) -> bool:
    """Whether a job of another study waits in the queue this one came from. (Jobs of this
    study that wait there were sent while this slot was between two trials; they run when a
    slot frees up, as they would have anyway.)"""
    if job is None or not job.origin:
        return False
    redis = job.connection
    try:
        pipe = redis.pipeline(transaction=False)
        pipe.llen(Queue(job.origin, connection=redis).key)
        pipe.scard(PENDING_KEY.format(study_id=study_id))
        queued, mine = pipe.execute()
    except RedisError:
        return True  # can't tell: hand the worker back, as a job that ends always did
    return int(queued) > int(mine)
