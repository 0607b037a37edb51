"""A lost dependency (the API, Redis, the database) said once, retried with a capped
exponential backoff, and said once more when it answers again.

A process that retries a call every half second and logs each failure with its traceback
buries the one line that matters under hundreds; an :class:`Outage` logs one warning when the
dependency is first lost, then nothing while it stays lost, and one line when it is back.

This module imports nothing of tuneyard's: the worker, the dispatcher and the CLI all use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class Outage:
    """The state of one dependency (``what``: "the API at http://…", "Redis at host:6379").

    ``failed(why)`` records a failed call and returns how long to wait before the next try:
    ``base`` seconds after the first failure, doubling up to ``cap``. ``ok()`` records a
    call that worked. Thread-safe: a job's heartbeat thread and its main thread share one."""

    def __init__(
        self,
        what: str,
        log: logging.Logger,
        *,
        base: float = 0.5,
        cap: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what, self.log, self.base, self.cap, self.clock = what, log, base, cap, clock
        self.down_since: float | None = None
        self.failures = 0
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, why: str) -> float:
        with self._lock:
            if self.down_since is None:
                self.down_since = self.clock()
                self.log.warning(
                    "lost %s (%s); retrying with backoff, at most every %g s",
                    self.what,
                    why,
                    self.cap,
                )
            self.failures += 1
            return float(min(self.cap, self.base * 2 ** (self.failures - 1)))

    def ok(self) -> None:
        if self.down_since is None:  # the common case, without the lock
            return
        with self._lock:
            if self.down_since is None:
                return
            self.log.warning(
                "%s answers again, after %.0f s", self.what, self.clock() - self.down_since
            )
            self.down_since = None
            self.failures = 0
