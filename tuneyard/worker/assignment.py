"""One job: restore the trial's checkpoint, run the objective, then pause, complete, fail
or hand back the trial, as its reports and its end decide.

Every call names the job's ``attempt``. When the service answers that the attempt is stale
(the trial runs again elsewhere), the job ends as ``lost`` without another call.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuneyard.client import Conflict, NotFound, StaleAttempt
from tuneyard.protocol import Assignment
from tuneyard.worker.checkpoints import CheckpointStore
from tuneyard.worker.command import CommandObjective, CommandTimeout
from tuneyard.worker.control import JobOptions, WorkerClient
from tuneyard.worker.guards import AttemptTimeout, Heartbeat, Watchdog
from tuneyard.worker.objective import Objective, error_text, final_value
from tuneyard.worker.output import LogShipper, capture_output
from tuneyard.worker.trial import Trial, TrialStopped

log = logging.getLogger("tuneyard.worker")


def _settle(what: str, trial_id: int, call: Callable[[], Any]) -> bool:
    """Tell the service how a job ended; False when it already ended the trial otherwise.

    A 409 may be transient (two requests raced on a row), so it is retried once; the calls
    are idempotent. A second 409 or a 404 means the trial moved on without this worker,
    e.g. its lease expired and it was reaped; a stale attempt says so at once."""
    for attempt in range(2):
        try:
            call()
            return True
        except (NotFound, StaleAttempt) as exc:
            log.warning("trial %s: %s refused: %s", trial_id, what, exc)
            return False
        except Conflict as exc:
            if attempt == 1:
                log.warning("trial %s: %s refused: %s", trial_id, what, exc)
                return False
            time.sleep(0.5)
    return False  # pragma: no cover


def _job_label(study_id: int, job: Assignment, trial: Trial) -> str:
    """``trial 12 (study 1, attempt 1)``; for a replicate ``trial 12 (fold 2/5 of trial 7;
    study 1, attempt 1)``: its own id is the one the service's logs show, its fold or seed
    and its configuration's id tell a reader which evaluation of which trial it is."""
    where = f"study {study_id}, attempt {job.attempt}"
    if job.replicate is not None:
        where = f"{trial.describe_replicate()} of trial {job.replicate.parent_id}; {where}"
    return f"trial {job.trial_id} ({where})"


def run_assignment(
    client: WorkerClient,
    study_id: int,
    assignment: Assignment,
    objective: Objective | CommandObjective,
    store: CheckpointStore,
    workdir: Path,
    opts: JobOptions | None = None,
) -> str:
    """Run one job to its end and tell the service how it ended.

    Returns ``pause``, ``stop``, ``complete``, ``fail``, ``release`` (handed back: the worker
    is stopping), or ``lost`` when the service had already ended the trial (a reaped lease, a
    deleted study). The job runs in ``workdir/trial-<id>``, restored from the store on a
    resume and removed at the end; its output goes to the trial's log."""
    opts = opts or JobOptions()
    job = assignment
    ckpt_dir = Path(workdir) / f"trial-{job.trial_id}"
    if ckpt_dir.exists():
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True)
    trial = Trial(
        client,
        study_id,
        job.trial_id,
        job.number,
        job.params,
        job.resource_from,
        job.resource_to,
        ckpt_dir,
        attempt=job.attempt,
        replicate=job.replicate,
    )
    label = _job_label(study_id, job, trial)
    if opts.checkpoint_every:
        trial.checkpoint_every = opts.checkpoint_every
        trial.on_checkpoint = lambda step: client.checkpoint(
            job.trial_id,
            store.save(study_id, job.trial_id, trial.checkpoint_dir, job.attempt),
            step,
            attempt=job.attempt,
        )
    started = time.monotonic()
    outcome = "fail"
    log.info(
        "%s starts: %s, resource %g..%g",
        label,
        job.kind,
        job.resource_from,
        job.resource_to,
    )
    opts.control.attach(trial)
    try:
        beat = opts.heartbeat_every
        if job.lease_seconds:
            beat = min(beat, job.lease_seconds / 3)  # two beats may be lost before a reap
        with (
            Heartbeat(client, trial, beat, opts.clock),
            LogShipper(client, job.trial_id, job.attempt, opts.log_every) as shipper,
        ):
            outcome = _run(client, study_id, job, objective, store, trial, shipper, opts)
        return outcome
    finally:
        opts.control.attach(None)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        log.info(
            "%s ends after %.1f s: %s, resource %g..%g",
            label,
            time.monotonic() - started,
            outcome,
            job.resource_from,
            trial.resource_to,
        )


def _after_command(
    client: WorkerClient, trial: Trial, code: int, shipper: LogShipper, opts: JobOptions
) -> str | None:
    """Learn what the process's reports decided (they went to the API, not through us).

    Returns an outcome when the service already ended the trial; otherwise sets the
    handle's decision for the common path: pause, hand back, fail, or complete."""
    shipper.flush()
    state = client.get_trial(trial.trial_id)
    if state.attempts != trial.attempt or trial.stale is not None:
        return "lost"  # the trial ran again elsewhere: this attempt's outcome counts no more
    if state.state in ("completed", "stopped", "failed"):
        return {"completed": "complete", "stopped": "stop", "failed": "fail"}[state.state]
    if state.state != "running":
        return "lost"  # reaped and queued again, or deleted: no longer this job's
    if state.resource is not None and state.resource > trial.resource_from:
        trial.last_step = state.resource
    if state.pending == "pause":
        trial.decision, trial.reason = "pause", state.reason
    elif opts.control.stopping.is_set():
        # A process that exited cleanly after SIGTERM saved its state at its last report.
        trial.decision, trial.reason = "pause", opts.control.reason
        trial.handed_back = True
        if code != 0:
            trial.last_step = None  # its checkpoint may be half written: resume from before
    elif code != 0:
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        trial.decision, trial.reason = "fail", f"the command {how}"
    return None


def _run(
    client: WorkerClient,
    study_id: int,
    job: Assignment,
    objective: Objective | CommandObjective,
    store: CheckpointStore,
    trial: Trial,
    shipper: LogShipper,
    opts: JobOptions,
) -> str:
    def fail(error: str) -> str:
        if trial.stale is not None:
            return "lost"  # the trial runs again elsewhere; this attempt's error is moot
        shipper.flush()
        tail = shipper.tail() or None
        ok = _settle(
            "fail",
            job.trial_id,
            lambda: client.fail(job.trial_id, error, tail, attempt=job.attempt),
        )
        return "fail" if ok else "lost"

    def release(reason: str, with_checkpoint: bool) -> str:
        location = step = None
        if with_checkpoint and trial.last_step is not None and any(trial.checkpoint_dir.iterdir()):
            try:
                location = store.save(study_id, job.trial_id, trial.checkpoint_dir, job.attempt)
                step = trial.last_step
            except Exception as exc:
                log.warning("trial %s: cannot save its checkpoint: %s", job.trial_id, exc)
        shipper.flush()
        ok = _settle(
            "release",
            job.trial_id,
            lambda: client.release(
                job.trial_id, reason, checkpoint=location, step=step, attempt=job.attempt
            ),
        )
        return "release" if ok else "lost"

    def keep_model() -> str | None:
        """Store the checkpoint directory as the completed trial's model (None: it is empty,
        or could not be stored; the trial completes all the same)."""
        if not any(trial.checkpoint_dir.iterdir()):
            return None
        try:
            return store.save(study_id, job.trial_id, trial.checkpoint_dir, job.attempt)
        except Exception as exc:
            log.warning("trial %s: its model was not kept: %s", job.trial_id, exc)
            return None

    if job.kind == "resume" and job.checkpoint:
        try:
            store.restore(job.checkpoint, trial.checkpoint_dir)
        except Exception as exc:
            return fail(f"cannot restore the checkpoint to resume from:\n{error_text(exc)}")
    result: Any = None
    try:
        if isinstance(objective, CommandObjective):
            code = objective.run(
                trial,
                job.attempt,
                shipper,
                opts.timeout,
                opts.control.stopping,
                sys.stdout,
                grace=opts.grace,
            )
            ended = _after_command(client, trial, code, shipper, opts)
            if ended == "complete":
                # A report of the process completed the trial: its last save is the model.
                trial.decision = "complete"
            elif ended is not None:
                return ended
            error, result = objective.outcome()  # a shipped entrypoint's error or value
            if error is not None and trial.decision == "fail":
                trial.reason = error
        else:
            with Watchdog(client, trial, opts), capture_output(shipper):
                result = objective(trial)
    except TrialStopped:
        result = None  # reported after a terminal decision: end as that decision says
    except (AttemptTimeout, CommandTimeout) as exc:
        return fail(str(exc))
    except Exception as exc:
        if trial.stale is not None:
            log.warning("trial %s raised after its attempt went stale: %r", job.trial_id, exc)
            return "lost"
        if trial.decision in ("stop", "complete"):
            # The service already ended the trial; the crash came afterwards.
            log.warning("trial %s raised after %s: %r", job.trial_id, trial.decision, exc)
            return trial.decision
        return fail(error_text(exc))
    except (KeyboardInterrupt, SystemExit) as exc:
        # Not the trial's fault: hand it back now rather than let the lease run out.
        with contextlib.suppress(Exception):
            release(f"the worker was interrupted ({type(exc).__name__})", with_checkpoint=False)
        raise
    if trial.stale is not None:
        log.warning("trial %s: attempt %s ended: %s", job.trial_id, job.attempt, trial.stale)
        return "lost"
    if trial.decision == "fail":
        return fail(trial.reason or "the command failed")
    if trial.handed_back:
        return release(trial.reason or opts.control.reason, with_checkpoint=True)
    if trial.decision == "pause":
        try:
            location = store.save(study_id, job.trial_id, trial.checkpoint_dir, job.attempt)
        except Exception as exc:
            return fail(f"cannot save the checkpoint of a paused trial:\n{error_text(exc)}")
        ok = _settle(
            "pause",
            job.trial_id,
            lambda: client.pause(job.trial_id, checkpoint=location, attempt=job.attempt),
        )
        return "pause" if ok else "lost"
    if trial.decision == "complete":
        # A report completed the trial: what the objective saved last is its model.
        model = keep_model()
        if model is not None:
            _settle(
                "model",
                job.trial_id,
                lambda: client.complete(job.trial_id, checkpoint=model, attempt=job.attempt),
            )
        return "complete"
    if trial.decision == "stop":
        return "stop"
    # No terminal decision (e.g. a FIFO objective that returns its final value).
    value = final_value(result)
    if value is not None and not math.isfinite(value):
        # JSON has no NaN: say it in words, as the service does for a NaN report.
        return fail(f"the objective returned {value}")
    model = keep_model()
    ok = _settle(
        "complete",
        job.trial_id,
        lambda: client.complete(job.trial_id, value=value, checkpoint=model, attempt=job.attempt),
    )
    return "complete" if ok else "lost"
