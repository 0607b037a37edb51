"""The objective's standard output and error: echoed as usual, and shipped to the API in
chunks while it runs, so the whole log is fetchable there and survives the worker."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from types import TracebackType
from typing import Any, Protocol, TextIO

log = logging.getLogger("tuneyard.worker")
# Characters per request; a burst of output goes out in several.
CHUNK = 256 * 1024


class LogSink(Protocol):
    def append_log(self, trial_id: int, attempt: int, offset: int, text: str) -> int: ...


class LogShipper:
    """Buffers output and sends it every ``every`` seconds and at the end.

    Chunks are keyed by their offset in the attempt's output, so one resent after a lost
    answer is stored once. A send that fails is retried at the next tick; output is never
    dropped while the API is down, only kept in memory until it is back."""

    def __init__(self, client: LogSink, trial_id: int, attempt: int, every: float = 2.0) -> None:
        self.client, self.trial_id, self.attempt, self.every = client, trial_id, attempt, every
        self._buf: list[str] = []
        self._sent = 0  # characters acknowledged by the API
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._done = threading.Event()
        self._tail = ""
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"log-{trial_id}")

    def write(self, text: str) -> None:
        if not text:
            return
        with self._lock:
            self._buf.append(text)
            self._tail = (self._tail + text)[-8000:]

    def tail(self, lines: int = 30) -> str:
        with self._lock:
            return "\n".join(self._tail.rstrip("\n").splitlines()[-lines:])

    def flush(self) -> bool:
        """Send what is buffered; False if the API could not be reached (kept for later)."""
        with self._send_lock:
            with self._lock:
                pending = "".join(self._buf)
                self._buf = [pending] if pending else []
            pos = 0
            while pos < len(pending):
                chunk = pending[pos : pos + CHUNK]
                try:
                    self.client.append_log(self.trial_id, self.attempt, self._sent, chunk)
                except Exception as exc:
                    log.debug("shipping output of trial %s failed: %s", self.trial_id, exc)
                    with self._lock:
                        self._buf = [pending[pos:], *self._buf[1:]]
                    return False
                self._sent += len(chunk)
                pos += len(chunk)
            with self._lock:
                self._buf = self._buf[1:] if pending else self._buf
            return True

    def _run(self) -> None:
        while not self._done.wait(self.every):
            self.flush()

    def __enter__(self) -> LogShipper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self.flush()


class _Tee:
    """A text stream that writes through to ``stream`` and copies into ``shipper``."""

    def __init__(self, stream: TextIO, shipper: LogShipper) -> None:
        self._stream, self._shipper = stream, shipper

    def write(self, text: str) -> int:
        self._shipper.write(text)
        try:
            return self._stream.write(text)
        except (OSError, ValueError):
            return len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class capture_output:
    """Copy ``sys.stdout`` and ``sys.stderr`` into ``shipper`` while the block runs.

    This catches what Python code writes to them (print, warnings, progress bars, a logging
    handler created during the job); output written straight to the file descriptors by C
    code is not seen. A command-line objective's output is captured whole."""

    def __init__(self, shipper: LogShipper) -> None:
        self.shipper = shipper
        self._saved: tuple[Any, Any] | None = None

    def __enter__(self) -> LogShipper:
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _Tee(sys.stdout, self.shipper)
        sys.stderr = _Tee(sys.stderr, self.shipper)
        return self.shipper

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._saved is not None
        sys.stdout, sys.stderr = self._saved
