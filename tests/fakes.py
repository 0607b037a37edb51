"""Fakes the tests share: a clock to move by hand, and a service that answers a worker's
calls from a script. Test files import them from here, never from one another."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tuneyard.client import Conflict, StaleAttempt, StudyFinished
from tuneyard.protocol import Assignment, ReportOut
from tuneyard.worker import Trial
from tuneyard.worker.checkpoints import FilesystemCheckpointStore
from tuneyard.worker.runner import JobOptions, run_assignment


class FakeClock:
    """The time of the service under test, moved by hand (``advance``) or set (``now``)."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class ManualClock:
    """The worker runtime's clock (monotonic seconds), moved by hand with ``advance``.

    A wait on it ends when its event is set or when ``advance`` has moved the time past its
    end; so a timeout or a grace period runs out exactly when a test says, however slow the
    machine."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._moved = threading.Condition()

    def monotonic(self) -> float:
        return self.now

    def wait(self, event: threading.Event, seconds: float) -> bool:
        with self._moved:
            end = self.now + seconds
            while not event.is_set() and self.now < end:
                # Setting the event does not notify this condition: look again soon.
                self._moved.wait(0.01)
        return event.is_set()

    def advance(self, seconds: float) -> None:
        with self._moved:
            self.now += seconds
            self._moved.notify_all()


class FakeService:
    """Answers reports from a script: {step: (decision, resource_to)}; records every call.

    ``jobs`` are handed out by ``next`` (a None entry: nothing to run right now), then the
    study is finished. ``refuse`` names calls that answer 409, as for a reaped trial;
    ``stale`` those that answer 409 "Stale attempt", as for a trial that runs elsewhere.
    ``arrived(kind)`` is an event set once a call of that kind has been recorded, for a
    test to wait on instead of sleeping."""

    def __init__(
        self,
        script: dict[float, tuple[str, float | None]] | None = None,
        jobs: list[Assignment | None] | None = None,
        refuse: frozenset[str] = frozenset(),
        stale: frozenset[str] = frozenset(),
    ) -> None:
        self.script = script or {}
        self.jobs = list(jobs or [])
        self.refuse = refuse
        self.stale = stale
        self.calls: list[tuple[str, Any]] = []
        self.attempts: list[tuple[str, int]] = []  # (call, attempt it named)
        self.outputs: list[str | None] = []  # the output tail each fail sent
        self.models: list[str | None] = []  # the checkpoint each complete named
        self._arrived: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self._lock = threading.Lock()  # calls come from the job's threads too

    def _record(self, kind: str, args: Any) -> None:
        self.calls.append((kind, args))
        self.arrived(kind).set()

    def arrived(self, kind: str) -> threading.Event:
        with self._lock:
            return self._arrived[kind]

    def _refuse(self, what: str, attempt: int | None = None) -> None:
        if attempt is not None:
            self.attempts.append((what, attempt))
        if what in self.stale:
            raise StaleAttempt(409, "Stale attempt", f"attempt {attempt} is stale")
        if what in self.refuse:
            raise Conflict(409, "Conflict", f"trial is failed; no {what}")

    def next(self, study_id: int, worker: str | None = None) -> Assignment | None:
        self._record("next", (study_id, worker))
        if not self.jobs:
            raise StudyFinished(409, "Study finished", "the study is completed")
        return self.jobs.pop(0)

    def report(
        self,
        trial_id: int,
        step: float,
        value: float | None = None,
        *,
        attempt: int,
        **metrics: Any,
    ) -> ReportOut:
        self._record("report", (trial_id, step, value, metrics))
        self._refuse("report", attempt)
        decision, to = self.script.get(step, ("continue", None))
        return ReportOut(
            attempt=attempt,
            step=step,
            value=value if value is not None else metrics.get("val_error"),
            metrics=metrics,
            decision=decision,  # type: ignore[arg-type]
            reason="scripted",
            resource_to=to,
            created_at=datetime.now(UTC),
        )

    def pause(self, trial_id: int, checkpoint: str | None = None, *, attempt: int) -> None:
        self._record("pause", (trial_id, checkpoint))
        self._refuse("pause", attempt)

    def complete(
        self, trial_id: int, value: float | None = None, *, attempt: int, **kw: Any
    ) -> None:
        self._record("complete", (trial_id, value))
        self.models.append(kw.get("checkpoint"))
        self._refuse("complete", attempt)

    def checkpoint(self, trial_id: int, checkpoint: str, step: float, *, attempt: int) -> None:
        self._record("checkpoint", (trial_id, checkpoint, step))
        self._refuse("checkpoint", attempt)

    def fail(self, trial_id: int, error: str, output: str | None = None, *, attempt: int) -> None:
        self._record("fail", (trial_id, error))
        self.outputs.append(output)
        self._refuse("fail", attempt)

    def heartbeat(self, trial_id: int, *, attempt: int) -> None:
        self._record("heartbeat", trial_id)
        self._refuse("heartbeat", attempt)

    def release(
        self,
        trial_id: int,
        reason: str,
        checkpoint: str | None = None,
        step: float | None = None,
        *,
        attempt: int,
    ) -> None:
        self._record("release", (trial_id, reason, checkpoint, step))
        self._refuse("release", attempt)

    def append_log(self, trial_id: int, attempt: int, offset: int, text: str) -> int:
        self._record("log", (attempt, offset, text))
        return offset + len(text)

    def output(self) -> str:
        return "".join(a[2] for a in self.args("log"))

    def get_trial(self, trial_id: int) -> Any:
        raise NotImplementedError("a Python objective's runner does not read the trial back")

    def kinds(self) -> list[str]:
        return [k for k, _ in self.calls if k not in ("heartbeat", "log")]

    def args(self, kind: str) -> list[Any]:
        return [a for k, a in self.calls if k == kind]


def job(
    kind: str = "new",
    frm: float = 0,
    to: float = 1,
    checkpoint: str | None = None,
    params: dict[str, Any] | None = None,
    number: int = 4,
) -> Assignment:
    return Assignment(
        trial_id=5,
        number=number,
        params=params if params is not None else {"lr": 0.1},
        resource_from=frm,
        resource_to=to,
        checkpoint=checkpoint,
        kind=kind,  # type: ignore[arg-type]
        reason="test",
    )


def run(
    svc: FakeService,
    a: Assignment,
    objective: Callable[[Trial], Any],
    tmp: Path,
    where: str,
    opts: JobOptions | None = None,
) -> str:
    store = FilesystemCheckpointStore(tmp / "shared")
    return run_assignment(svc, 1, a, objective, store, tmp / where, opts)
