"""What a job runs under: the calls it makes to the service, its options, the worker's
shutdown switch, and the clock that its timeout, grace period and heartbeats are read on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tuneyard.protocol import Assignment, ReportOut, TrialOut
from tuneyard.worker.trial import Trial


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

    def complete(
        self,
        trial_id: int,
        value: float | None = None,
        metrics: Any = None,
        checkpoint: str | None = None,
        *,
        attempt: int,
    ) -> Any: ...

    def checkpoint(self, trial_id: int, checkpoint: str, step: float, *, attempt: int) -> Any: ...

    def fail(
        self, trial_id: int, error: str, output: str | None = None, *, attempt: int
    ) -> Any: ...

    def heartbeat(self, trial_id: int, *, attempt: int) -> Any: ...


class Clock(Protocol):
    """Monotonic seconds, and a wait for an event bounded in those seconds.

    The system clock in production. A test passes one it moves by hand, so that a timeout or
    a grace period runs out when the test says so, not when a sleep hopes it has."""

    def monotonic(self) -> float: ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait until ``event`` is set (True) or ``seconds`` have passed (False)."""
        ...


class SystemClock:
    """``time.monotonic`` and ``threading.Event.wait``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(seconds)


SYSTEM_CLOCK = SystemClock()


class Control:
    """Lets a worker's shutdown reach the job it is running: the trial is interrupted (it
    pauses at its next report and is handed back with its checkpoint).

    It notes on ``clock`` when it was first told to stop (``stopped_at``): a job's grace
    period counts from then."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self.clock = clock
        self.stopping = threading.Event()
        self.stopped_at: float | None = None
        self.reason = "the worker is stopping"
        self._trial: Trial | None = None
        self._lock = threading.Lock()
        # Told of each job's trial as it starts and ends (the pool's view of its slot).
        self.on_attach: Callable[[Trial | None], None] | None = None

    def stop(self, reason: str | None = None) -> None:
        """Safe to call from a signal handler."""
        if reason:
            self.reason = reason
        if self.stopped_at is None:
            self.stopped_at = self.clock.monotonic()
        self.stopping.set()
        trial = self._trial
        if trial is not None:
            trial.interrupt(self.reason)

    def current_trial_id(self) -> int | None:
        trial = self._trial
        return trial.trial_id if trial is not None else None

    def attach(self, trial: Trial | None) -> None:
        self._trial = trial
        if self.on_attach is not None:
            self.on_attach(trial)
        if trial is not None and self.stopping.is_set():
            trial.interrupt(self.reason)


@dataclass
class JobOptions:
    """How a worker runs a job.

    ``timeout`` is ``execution.timeout``. ``hard_exit`` lets the worker end its own process
    when an objective can be neither interrupted by a timeout nor stopped within ``grace``
    seconds of a shutdown (the trial is failed or handed back first; the pool starts a
    fresh process). Those seconds are read on the control's clock."""

    timeout: float | None = None
    heartbeat_every: float = 10.0
    log_every: float = 2.0
    grace: float = 60.0
    hard_exit: bool = False
    # execution.checkpoint_every: the objective's latest save is uploaded every this many
    # resource units (None: only at a pause, a hand-back and the end).
    checkpoint_every: float | None = None
    control: Control = field(default_factory=Control)

    @property
    def clock(self) -> Clock:
        return self.control.clock
