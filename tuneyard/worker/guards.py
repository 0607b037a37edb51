"""The threads that watch over a running job: the heartbeat that keeps its lease, and the
watchdog that enforces its timeout and the grace period of a shutdown."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from typing import Any

from tuneyard.client import Conflict, NotFound, StaleAttempt
from tuneyard.worker.control import SYSTEM_CLOCK, Clock, JobOptions, WorkerClient
from tuneyard.worker.trial import Trial

log = logging.getLogger("tuneyard.worker")

# The exit code of a worker process that ended itself to get rid of a stuck objective.
EXIT_RESTART = 75


class AttemptTimeout(BaseException):
    """Raised in the objective when its attempt runs past ``execution.timeout``.

    A BaseException, so that an objective's own ``except Exception`` does not swallow it."""


class Heartbeat:
    """Extends the trial's lease while a long epoch runs without reports."""

    def __init__(
        self, client: WorkerClient, trial: Trial, every: float, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self.client, self.trial, self.every = client, trial, every
        self.clock = clock
        self.trial_id = trial.trial_id
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"beat-{trial.trial_id}")

    def _run(self) -> None:
        while not self.clock.wait(self.done, self.every):
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

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()


class Watchdog:
    """Enforces the timeout of a Python objective and the grace period of a shutdown.

    At the deadline the objective is interrupted with :class:`AttemptTimeout` (a signal to
    the main thread, which also breaks a ``time.sleep``); objectives that sit in C code for
    another ``INTERRUPT_GRACE`` seconds are failed from here and, with ``hard_exit``, their
    process ends. The same goes for a job still running ``grace`` seconds after a shutdown
    (counted from the stop, or from the job's start when the worker was already stopping),
    whose trial is handed back instead. Time is read on ``opts.clock``."""

    INTERRUPT_GRACE = 10.0
    # How often the thread looks at the clock and at the shutdown switch.
    POLL = 0.2

    def __init__(self, client: WorkerClient, trial: Trial, opts: JobOptions) -> None:
        self.client, self.trial, self.opts = client, trial, opts
        self.clock = opts.clock
        self.finished = threading.Event()
        self.timed_out = False
        self.started = 0.0
        self._main = threading.current_thread() is threading.main_thread()
        self._old_handler: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="watchdog")

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        if self.timed_out and not self.finished.is_set():
            raise AttemptTimeout(self._timeout_text())

    def _timeout_text(self) -> str:
        return f"timed out: the objective ran past execution.timeout ({self.opts.timeout:g} s)"

    def _run(self) -> None:
        control = self.opts.control
        stop_seen: float | None = None
        while not self.clock.wait(self.finished, self.POLL):
            now = self.clock.monotonic()
            if self.opts.timeout is not None and now - self.started > self.opts.timeout:
                self.timed_out = True
                if self._main:
                    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
                if self.clock.wait(self.finished, self.INTERRUPT_GRACE):
                    return
                why = self._timeout_text() + " and could not be interrupted"
                with contextlib.suppress(Exception):
                    self.client.fail(self.trial.trial_id, why, attempt=self.trial.attempt)
                self._exit(why)
                return
            if control.stopping.is_set():
                if stop_seen is None:
                    at = control.stopped_at
                    stop_seen = max(at, self.started) if at is not None else now
                if now - stop_seen > self.opts.grace:
                    why = (
                        f"{control.reason}; the objective did not reach a report "
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

    def __enter__(self) -> Watchdog:
        if self._main and self.opts.timeout is not None:
            self._old_handler = signal.signal(signal.SIGUSR1, self._on_signal)
        # Read here, not in the thread: the objective may move a test's clock before the
        # thread first runs.
        self.started = self.clock.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.finished.set()
        if self._old_handler is not None:
            signal.signal(signal.SIGUSR1, self._old_handler)
