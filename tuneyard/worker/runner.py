"""Run assignments: load the objective, restore, run, then pause, complete or fail the trial.

``run_assignment`` is one job; ``work_loop`` asks for jobs until the study is over;
``run_local_workers`` runs that loop in a few processes on this machine (no Redis needed).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import multiprocessing
import numbers
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tuneyard.client import Client, Conflict, NotFound, StaleAttempt, StudyFinished
from tuneyard.protocol import Assignment, ReportOut, TrialOut
from tuneyard.spec import ExecutionSpec
from tuneyard.worker.checkpoints import CheckpointStore, FilesystemCheckpointStore
from tuneyard.worker.command import CommandObjective, CommandTimeout
from tuneyard.worker.output import LogShipper, capture_output
from tuneyard.worker.trial import Trial, TrialStopped

log = logging.getLogger("tuneyard.worker")
Objective = Callable[[Trial], Any]
# How much of a traceback a failed trial keeps (the API accepts up to 20,000 characters).
ERROR_TAIL = 8000


class WorkerClient(Protocol):
    """The part of :class:`tuneyard.client.Client` the runtime uses."""

    def next(self, study_id: int, worker: str | None = None) -> Assignment | None: ...

    def report(
        self,
        trial_id: int,
        step: float,
        value: float | None = None,
        *,
        attempt: int,
        **metrics: float | None,
    ) -> ReportOut: ...

    def pause(self, trial_id: int, checkpoint: str | None = None, *, attempt: int) -> Any: ...

    def release(
        self,
        trial_id: int,
        reason: str,
        checkpoint: str | None = None,
        step: float | None = None,
        *,
        attempt: int,
    ) -> Any: ...

    def append_log(self, trial_id: int, attempt: int, offset: int, text: str) -> int: ...

    def get_trial(self, trial_id: int) -> TrialOut: ...

    def complete(self, trial_id: int, value: float | None = None, *, attempt: int) -> Any: ...

    def fail(
        self, trial_id: int, error: str, output: str | None = None, *, attempt: int
    ) -> Any: ...

    def heartbeat(self, trial_id: int, *, attempt: int) -> Any: ...


def load_objective(entrypoint: str) -> Objective:
    """``package.module:function`` → the function, with an error that says what is missing."""
    module_name, _, attr = entrypoint.partition(":")
    if not module_name or not attr:
        raise ValueError(f"entrypoint must look like 'package.module:function', got {entrypoint!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"cannot import {module_name!r} for entrypoint {entrypoint!r}: {exc} "
            f"(sys.path starts with {sys.path[:3]})"
        ) from exc
    fn = getattr(module, attr, None)
    if fn is None:
        raise AttributeError(f"module {module_name!r} has no attribute {attr!r} ({entrypoint!r})")
    if not callable(fn):
        raise AttributeError(f"{entrypoint!r} is a {type(fn).__name__}, not a function")
    return fn


def make_objective(
    execution: ExecutionSpec | None, api_url: str, token: str | None = None
) -> Objective | CommandObjective:
    """The objective a study's ``execution`` names; ValueError when it names none."""
    if execution is not None and execution.command:
        return CommandObjective(execution.command, api_url, token)
    if execution is None or not execution.entrypoint:
        raise ValueError("the study names no execution.entrypoint or execution.command to run")
    return load_objective(execution.entrypoint)


def error_text(exc: BaseException) -> str:
    """Exception type, message and the tail of its traceback, as a failed trial records it."""
    text = "".join(traceback.format_exception(exc))
    if len(text) <= ERROR_TAIL:
        return text
    head = f"{type(exc).__name__}: {exc}"[:500]
    return f"{head}\n…\n{text[-(ERROR_TAIL - len(head) - 3) :]}"


def _final_value(result: Any) -> float | None:
    """A number the objective returned (a Python or numpy float, a one-element tensor)."""
    if isinstance(result, bool | str | bytes) or result is None:
        return None
    if isinstance(result, numbers.Real):
        return float(result)
    if hasattr(result, "__float__"):
        try:
            return float(result)
        except (TypeError, ValueError):
            return None
    return None


class _Heartbeat:
    """Extends the trial's lease while a long epoch runs without reports."""

    def __init__(self, client: WorkerClient, trial: Trial, every: float) -> None:
        self.client, self.trial, self.every = client, trial, every
        self.trial_id = trial.trial_id
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"beat-{trial.trial_id}")

    def _run(self) -> None:
        while not self.done.wait(self.every):
            try:
                self.client.heartbeat(self.trial_id, attempt=self.trial.attempt)
            except StaleAttempt as exc:
                # The trial runs again elsewhere: this job stops at its next report.
                log.warning("trial %s: %s", self.trial_id, exc.detail)
                self.trial.revoke(exc.detail)
                return
            except (Conflict, NotFound):
                return  # the trial is no longer running: nothing left to keep alive
            except Exception as exc:  # a missed beat is retried at the next one
                log.debug("heartbeat of trial %s failed: %s", self.trial_id, exc)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()


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


class AttemptTimeout(BaseException):
    """Raised in the objective when its attempt runs past ``execution.timeout``.

    A BaseException, so that an objective's own ``except Exception`` does not swallow it."""


class Control:
    """Lets a worker's shutdown reach the job it is running: the trial is interrupted (it
    pauses at its next report and is handed back with its checkpoint)."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.reason = "the worker is stopping"
        self._trial: Trial | None = None
        self._lock = threading.Lock()

    def stop(self, reason: str | None = None) -> None:
        """Safe to call from a signal handler."""
        if reason:
            self.reason = reason
        self.stopping.set()
        trial = self._trial
        if trial is not None:
            trial.interrupt(self.reason)

    def current_trial_id(self) -> int | None:
        trial = self._trial
        return trial.trial_id if trial is not None else None

    def attach(self, trial: Trial | None) -> None:
        self._trial = trial
        if trial is not None and self.stopping.is_set():
            trial.interrupt(self.reason)


@dataclass
class JobOptions:
    """How a worker runs a job.

    ``timeout`` is ``execution.timeout``. ``hard_exit`` lets the worker end its own process
    when an objective can be neither interrupted by a timeout nor stopped within ``grace``
    seconds of a shutdown (the trial is failed or handed back first; the pool starts a
    fresh process)."""

    timeout: float | None = None
    heartbeat_every: float = 10.0
    log_every: float = 2.0
    grace: float = 60.0
    hard_exit: bool = False
    control: Control = field(default_factory=Control)


class _Watchdog:
    """Enforces the timeout of a Python objective and the grace period of a shutdown.

    At the deadline the objective is interrupted with :class:`AttemptTimeout` (a signal to
    the main thread, which also breaks a ``time.sleep``); objectives that sit in C code for
    another ``INTERRUPT_GRACE`` seconds are failed from here and, with ``hard_exit``, their
    process ends. The same goes for a job still running ``grace`` seconds after a shutdown,
    whose trial is handed back instead."""

    INTERRUPT_GRACE = 10.0

    def __init__(self, client: WorkerClient, trial: Trial, opts: JobOptions) -> None:
        self.client, self.trial, self.opts = client, trial, opts
        self.finished = threading.Event()
        self.timed_out = False
        self._main = threading.current_thread() is threading.main_thread()
        self._old_handler: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="watchdog")

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        if self.timed_out and not self.finished.is_set():
            raise AttemptTimeout(self._timeout_text())

    def _timeout_text(self) -> str:
        return f"timed out: the objective ran past execution.timeout ({self.opts.timeout:g} s)"

    def _run(self) -> None:
        start = time.monotonic()
        stop_seen: float | None = None
        while not self.finished.wait(0.2):
            now = time.monotonic()
            if self.opts.timeout is not None and now - start > self.opts.timeout:
                self.timed_out = True
                if self._main:
                    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
                if self.finished.wait(self.INTERRUPT_GRACE):
                    return
                why = self._timeout_text() + " and could not be interrupted"
                with contextlib.suppress(Exception):
                    self.client.fail(self.trial.trial_id, why, attempt=self.trial.attempt)
                self._exit(why)
                return
            if self.opts.control.stopping.is_set():
                stop_seen = stop_seen or now
                if now - stop_seen > self.opts.grace:
                    why = (
                        f"{self.opts.control.reason}; the objective did not reach a report "
                        f"within {self.opts.grace:g} s"
                    )
                    with contextlib.suppress(Exception):
                        self.client.release(self.trial.trial_id, why, attempt=self.trial.attempt)
                    self._exit(why)
                    return

    def _exit(self, why: str) -> None:
        if self.opts.hard_exit:
            log.error("trial %s: %s; ending this worker process", self.trial.trial_id, why)
            logging.shutdown()
            os._exit(EXIT_RESTART)

    def __enter__(self) -> _Watchdog:
        if self._main and self.opts.timeout is not None:
            self._old_handler = signal.signal(signal.SIGUSR1, self._on_signal)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.finished.set()
        if self._old_handler is not None:
            signal.signal(signal.SIGUSR1, self._old_handler)


# The exit code of a worker process that ended itself to get rid of a stuck objective.
EXIT_RESTART = 75


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
    )
    started = time.monotonic()
    outcome = "fail"
    opts.control.attach(trial)
    try:
        beat = opts.heartbeat_every
        if job.lease_seconds:
            beat = min(beat, job.lease_seconds / 3)  # two beats may be lost before a reap
        with (
            _Heartbeat(client, trial, beat),
            LogShipper(client, job.trial_id, job.attempt, opts.log_every) as shipper,
        ):
            outcome = _run(client, study_id, job, objective, store, trial, shipper, opts)
        return outcome
    finally:
        opts.control.attach(None)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        log.info(
            "trial %s (%s, resource %g..%g) ran %.1f s: %s",
            job.trial_id,
            job.kind,
            job.resource_from,
            trial.resource_to,
            time.monotonic() - started,
            outcome,
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

    if job.kind == "resume" and job.checkpoint:
        try:
            store.restore(job.checkpoint, trial.checkpoint_dir)
        except Exception as exc:
            return fail(f"cannot restore the checkpoint to resume from:\n{error_text(exc)}")
    result: Any = None
    try:
        if isinstance(objective, CommandObjective):
            code = objective.run(
                trial, job.attempt, shipper, opts.timeout, opts.control.stopping, sys.stdout
            )
            ended = _after_command(client, trial, code, shipper, opts)
            if ended is not None:
                return ended
        else:
            with _Watchdog(client, trial, opts), capture_output(shipper):
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
    if trial.decision in ("stop", "complete"):
        return trial.decision
    # No terminal decision (e.g. a FIFO objective that returns its final value).
    value = _final_value(result)
    if value is not None and not math.isfinite(value):
        # JSON has no NaN: say it in words, as the service does for a NaN report.
        return fail(f"the objective returned {value}")
    ok = _settle(
        "complete",
        job.trial_id,
        lambda: client.complete(job.trial_id, value=value, attempt=job.attempt),
    )
    return "complete" if ok else "lost"


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
) -> int:
    """Ask for work until the study is over (or ``stop_event`` is set); returns how many
    jobs this worker ran. While nothing can run (ASHA waiting for a rung to fill) it polls
    with a backoff from ``idle_sleep`` up to 2 s."""
    stop = stop_event or threading.Event()
    jobs = 0
    idle = idle_sleep
    while not stop.is_set():
        try:
            job = client.next(study_id, worker=worker_name)
        except StudyFinished:
            return jobs
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
            opts = JobOptions(timeout=execution.timeout if execution else None)
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
