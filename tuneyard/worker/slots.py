"""What a slot process shares with the pool that started it, and how it stays tied to it.

- :class:`SlotState`: the trial (and attempt) a slot runs and its id in the worker registry,
  in shared memory, so that the pool can hand the trial back at once and sign the worker off
  when the slot dies (an objective that crashed the interpreter, an out-of-memory kill).
- :func:`die_with_parent`: a slot is killed by the kernel when its pool dies, even by SIGKILL
  (Linux's parent-death signal), so that no slot runs on as an orphan.
- :func:`watch_redis`: one warning when Redis is lost, one line when it is back, instead of
  RQ's error line at every retry.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
import threading
from typing import Any

from tuneyard.outage import Outage
from tuneyard.redact import redact_text

log = logging.getLogger("tuneyard.worker")

# A trial id and an attempt number in one 64-bit word, written and read at once: the pool
# never reads the trial of one job with the attempt of another.
_ATTEMPT_BITS = 20
_ATTEMPT_MASK = (1 << _ATTEMPT_BITS) - 1
PR_SET_PDEATHSIG = 1


class SlotState:
    """The running trial and the worker id of one slot, shared with the pool.

    Lock-free (``RawValue``): a slot killed while it held a lock would leave the pool stuck
    on it. Each value is one aligned 64-bit word, which the slot writes whole."""

    def __init__(self, ctx: Any = None) -> None:
        ctx = ctx or multiprocessing.get_context("spawn")
        self._job = ctx.RawValue(ctypes.c_int64, 0)
        self._worker = ctx.RawValue(ctypes.c_int64, 0)

    def set_trial(self, trial: Any) -> None:
        """``trial``: the handle of the job that starts (``trial_id``, ``attempt``), or None."""
        if trial is None:
            self._job.value = 0
        else:
            self._job.value = (int(trial.trial_id) << _ATTEMPT_BITS) | (
                int(trial.attempt) & _ATTEMPT_MASK
            )

    def trial(self) -> tuple[int, int] | None:
        """(trial id, attempt) of the job the slot runs, or None."""
        word = int(self._job.value)
        return (word >> _ATTEMPT_BITS, word & _ATTEMPT_MASK) if word else None

    def set_worker(self, worker_id: int | None) -> None:
        self._worker.value = worker_id or 0

    def worker(self) -> int | None:
        return int(self._worker.value) or None


def die_with_parent(parent: int | None) -> None:
    """Ask the kernel to SIGKILL this process when the process that started it dies, and end
    at once if it is already gone (it may die before this call). Linux only; elsewhere the
    pool's process group and its shutdown are what stop the slots."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError) as exc:
            log.warning("cannot ask to be killed with the worker: %s", exc)
    if parent is not None and os.getppid() != parent:
        os._exit(1)  # the pool died before the request above took effect


class _RedisNoise(logging.Filter):
    """Drops RQ's log records about a Redis it cannot reach (an error line per retry, a
    traceback when its loop gives up): :func:`watch_redis` says it once."""

    WORDS = ("could not connect to Redis", "Redis connection timeout")

    def filter(self, record: logging.LogRecord) -> bool:
        from redis.exceptions import ConnectionError, TimeoutError

        if any(w in str(record.msg) for w in self.WORDS):
            return False
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionError | TimeoutError)


def watch_redis(
    connection: Any, stop: threading.Event, every: float = 2.0, cap: float = 30.0
) -> threading.Event:
    """Ping Redis from a thread; the event returned is set while it answers. A loss is one
    warning, its return one line; the pings back off up to ``cap`` seconds while it is lost."""
    logging.getLogger("rq.worker").addFilter(_RedisNoise())
    up = threading.Event()
    where = connection.connection_pool.connection_kwargs
    what = f"Redis at {where.get('host', '?')}:{where.get('port', '?')}"
    outage = Outage(what, log, base=every, cap=cap)

    def run() -> None:
        from redis.exceptions import RedisError

        wait = 0.0
        while not stop.wait(wait):
            try:
                connection.ping()
            except RedisError as exc:
                up.clear()
                wait = outage.failed(redact_text(str(exc)))
                continue
            outage.ok()
            up.set()
            wait = every

    threading.Thread(target=run, daemon=True, name="redis-watch").start()
    return up
