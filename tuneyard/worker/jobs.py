"""The RQ job a worker runs: one slot of a study, bound late to a trial.

A job carries the study, not a configuration. When it starts it asks the API for the next piece
of work, so ASHA chooses between promotions and new trials with the freshest results (the ASHA
paper's ``get_job()``), and one pool of workers can serve several studies.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError
from rq import Queue, get_current_job
from rq.job import Job

from tuneyard.client import ApiError, Client, NotFound, StudyFinished, Unreachable
from tuneyard.outage import Outage
from tuneyard.protocol import PENDING_KEY, Assignment, StudyOut
from tuneyard.redact import redact_url
from tuneyard.spec import ExecutionSpec
from tuneyard.worker.allow import Allowlist, NotAllowed
from tuneyard.worker.assignment import run_assignment
from tuneyard.worker.checkpoints import store_from_env
from tuneyard.worker.code import accepts, prepare_objective, refusal
from tuneyard.worker.command import CommandObjective
from tuneyard.worker.control import Control, JobOptions
from tuneyard.worker.objective import Objective
from tuneyard.worker.reload import MODULES

# How long a slot job keeps asking while the study has nothing to run (e.g. ASHA waiting on
# running trials), before it gives the slot back to the dispatcher.
IDLE_PATIENCE = 5.0
# The GPUs a slot runs its jobs on, as JSON (``[{"index": "0", "name": ...}]``; ``[]``: a
# CPU slot), set by ``tuneyard worker`` for each slot process.
GPUS_ENV = "TUNEYARD_WORKER_GPUS"
# This process's shutdown switch: the worker's SIGTERM handler flips it (see pool.py).
CONTROL = Control()
# Studies this process refuses to run (its allowlist does not cover their objective), with
# the reason: their jobs end at once, without taking a trial.
REFUSED: dict[int, str] = {}
# Where the slots of one pool note the studies they refused, so that a refusal is said once
# per pool rather than once per slot (the pool names itself in TUNEYARD_POOL_ID).
REFUSED_KEY = "tuneyard:pool:{pool}:refused"
REFUSED_TTL = 7 * 86400
# How a lost API, or one that refuses this worker's token, is said: once, and once when it
# answers again (the client retries quietly meanwhile).
_OUTAGES: dict[str, Outage] = {}
log = logging.getLogger("tuneyard.worker")


def api_outage(url: str, token: bool = False) -> Outage:
    """How this process says that the API at ``url`` is lost (or, with ``token``, that it
    refuses this worker's token)."""
    key = f"token {url}" if token else url
    found = _OUTAGES.get(key)
    if found is None:
        what = f"the API at {redact_url(url)}" + (" for this worker's token" if token else "")
        found = _OUTAGES[key] = Outage(what, log)
    return found


class QuietClient(Client):
    """A client whose retries (a lost API, a 502/503 while it restarts) are said once per
    process, with one line when the API answers again, instead of once per failed call."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.outage = api_outage(self.base_url)

    def _wait(self, attempt: int, retry_after: float | None, why: str = "") -> None:
        if not why.startswith("429"):  # the server's rate limit is no outage
            self.outage.failed(why or "no answer")
        super()._wait(attempt, retry_after, why)

    def request(self, *args: Any, **kw: Any) -> Any:
        resp = super().request(*args, **kw)
        self.outage.ok()
        return resp


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
    if study_id in REFUSED:
        return "refused"  # said once already; the dispatcher's jobs go to other workers
    data_dir = Path(os.environ.get("TUNEYARD_DATA_DIR", "."))
    # A worker knows how it reaches the API; the dispatcher's address is the fallback.
    url = os.environ.get("TUNEYARD_API_URL") or api_url
    token = os.environ.get("TUNEYARD_TOKEN")
    # Patient retries (about two minutes): an API server restarting is a pause, not a failure.
    with QuietClient(url, token=token, retries=10) as client:
        try:
            outcome = _run_slot(client, job, study_id, url, token, data_dir)
            api_outage(url, token=True).ok()
            return outcome
        except Unreachable:
            return "unreachable"  # said by the client's outage; the lease covers its trial
        except ApiError as exc:
            if exc.status not in (401, 403):
                raise
            # The token was revoked, or lost its scope: said once, and the slot waits a while
            # before its next job rather than refuse one job after another.
            refused = api_outage(url, token=True)
            CONTROL.stopping.wait(refused.failed(f"{exc.status}: {exc.detail}"))
            return "unauthorized"


def _run_slot(
    client: Client, job: Job | None, study_id: int, url: str, token: str | None, data_dir: Path
) -> str:
    name = worker_name()
    gpus = slot_gpus()
    try:
        study = client.get_study(study_id)
    except NotFound:
        return "finished"  # deleted since the job was sent
    spec = study.spec
    # Before anything is asked, imported or started: this worker runs only what it allows
    # (shipped code: what --accept-code allowed), and a study it refuses is left to the
    # others, its trials untouched.
    if not accepts(spec.execution):
        refuse(job, study, refusal(study_id, spec.execution))
        return "refused"
    try:
        if not (spec.execution and spec.execution.code and spec.execution.entrypoint):
            Allowlist.from_env().check(spec.execution)
    except NotAllowed as exc:
        refuse(job, study, str(exc))
        return "refused"
    short = cannot_serve(spec.execution, gpus)
    if short is not None:
        refuse(job, study, short)
        return "refused"
    store = store_from_env(client, data_dir)

    def load() -> tuple[Objective | CommandObjective | None, Exception | None]:
        # Per job: a changed module of the user's is imported again. Before the trial is
        # asked for, so that a slow import (torch and a framework: seconds) is not spent on
        # the trial's lease before its heartbeats start.
        try:
            return prepare_objective(spec.execution, url, token, client, data_dir), None
        except Exception as exc:  # an import error, a SyntaxError of an edited module...
            return None, exc

    objective, error = load()
    assignment = _first_assignment(client, study_id, name, gpus)
    if isinstance(assignment, str):
        return assignment
    opts = JobOptions(
        timeout=spec.execution.timeout if spec.execution else None,
        grace=float(os.environ.get("TUNEYARD_STOP_GRACE", "60")),
        hard_exit=True,
        control=CONTROL,
        checkpoint_every=spec.execution.checkpoint_every if spec.execution else None,
    )
    workdir = data_dir / "work" / name.replace("/", "_")
    while True:
        if objective is None:
            client.fail(
                assignment.trial_id, f"{type(error).__name__}: {error}", attempt=assignment.attempt
            )
            return "fail"
        try:
            outcome = run_assignment(client, study_id, assignment, objective, store, workdir, opts)
        finally:
            MODULES.note()  # what the objective imported while it ran
        if opts.timeout is not None or CONTROL.stopping.is_set():
            return outcome
        if _others_waiting(job, study_id):
            return outcome
        objective, error = load()
        try:
            found = client.next(study_id, worker=name, gpus=gpus)
        except StudyFinished:
            return outcome
        if found is None:
            return outcome  # nothing to run now: the dispatcher sends a job when there is
        assignment = found


def cannot_serve(execution: ExecutionSpec | None, gpus: list[dict[str, str]]) -> str | None:
    """Why this slot cannot run the study's trials, or None when it can: a trial that needs
    N GPUs (``execution.gpus``) runs only on a slot of at least N (one GPU's trials run on any
    slot, a CPU slot included, as before GPU counts existed); one that torchrun starts needs
    torch in this worker's Python. A slot with more GPUs than asked runs the trial on all of
    them, and the attempt records them all: no other trial could use them meanwhile."""
    if execution is None:
        return None
    if execution.gpus > 1 and len(gpus) < execution.gpus:
        has = f"{len(gpus)} GPU{'s' if len(gpus) != 1 else ''}" if gpus else "no GPU"
        return (
            f"its trials need {execution.gpus} GPUs each (execution.gpus) and this worker "
            f"slot has {has} (start a worker with --gpus-per-slot {execution.gpus})"
        )
    if execution.ranks is not None and importlib.util.find_spec("torch") is None:
        return (
            "its command runs under torchrun (execution.launcher), and torch is not installed "
            f"in this worker's Python ({sys.executable})"
        )
    return None


def refuse(job: Job | None, study: StudyOut, reason: str) -> None:
    """Remember that this process does not run ``study``, and say so once per pool: the
    first slot to refuse it logs the reason, the others and the later jobs stay quiet."""
    REFUSED[study.id] = reason
    first = True
    pool = os.environ.get("TUNEYARD_POOL_ID")
    if job is not None and pool:
        key = REFUSED_KEY.format(pool=pool)
        try:
            pipe = job.connection.pipeline(transaction=False)
            pipe.sadd(key, study.id)
            pipe.expire(key, REFUSED_TTL)
            added, _ = pipe.execute()
            first = bool(added)
        except RedisError:
            first = True
    if first:
        log.warning(
            "study %s (%s): not taking its jobs, they are left to other workers: %s",
            study.id,
            study.spec.name,
            reason,
        )


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
