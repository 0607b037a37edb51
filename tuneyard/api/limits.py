"""Limits on what a client may send: the size of a request body, and how often a trial reports.

The bounds of each field (parameters in a space, choices of a categorical, grid size, string
lengths, metrics per report) are part of the schemas themselves (``tuneyard.spec``,
``tuneyard.api.schemas``) and answer 422. Here are the two that are not about one field: a
body larger than ``max_body_bytes`` (a study definition: larger than ``MAX_STUDY_BYTES``)
answers 413 before it is read whole, and a trial reporting faster than ``report_rate`` per
second (after a burst of ``report_burst``) answers 429 with ``Retry-After``. The report rate is
counted per API process: with n replicas behind a load balancer a trial may report up to n
times the rate.

Why a study definition has a size of its own: it is checked as a whole (every choice, every
value a condition names), so its size bounds that work. With the grid's count capped as well
(``tuneyard.spec.MAX_GRID_WORK``), the worst definition within these limits is checked in
tens of milliseconds of CPU.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Body, Request
from fastapi.exceptions import RequestValidationError
from pydantic import PlainValidator, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneyard.api.deps import Id
from tuneyard.errors import TooManyRequests
from tuneyard.lru import LRU
from tuneyard.spec import StudySpec

# Uploads with their own limit (max_checkpoint_bytes, max_code_bytes), streamed to disk by
# their route.
STREAMED = (
    ("PUT", re.compile(r"^/api/v1/trials/[^/]+/checkpoint$")),
    ("PUT", re.compile(r"^/api/v1/code/[^/]+$")),
)

# The largest study definition accepted; real ones are a few kilobytes.
MAX_STUDY_BYTES = 128 * 1024
# Routes whose bodies have a tighter limit than max_body_bytes: (method, path, bytes, name).
SMALLER = (("POST", re.compile(r"^/api/v1/studies/?$"), MAX_STUDY_BYTES, "max_study_bytes"),)


class BodyLimitMiddleware:
    """Answers 413 (problem+json naming the limit) to a request whose body is larger than
    ``max_bytes``: at once when its Content-Length says so, or as soon as that many bytes of
    a chunked body arrived; the rest is not read."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        limit, name = self._limit(scope)
        length = _content_length(scope)
        if length is not None and length > limit:
            await self._reject(send, limit, name)
            return
        received = 0
        started = answered = False

        async def limited_receive() -> Message:
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    answered = True
                    if not started:
                        await self._reject(send, limit, name)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered and not started:
                return  # the client has its 413; the app's own answer to the cut body is moot
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not answered:
                raise

    @staticmethod
    def _exempt(scope: Scope) -> bool:
        return any(scope["method"] == m and p.match(scope["path"]) for m, p in STREAMED)

    def _limit(self, scope: Scope) -> tuple[int, str]:
        """The limit on this request's body, and its name."""
        for method, path, size, name in SMALLER:
            if scope["method"] == method and path.match(scope["path"]) and size < self.max_bytes:
                return size, name
        return self.max_bytes, "max_body_bytes"

    async def _reject(self, send: Send, limit: int, name: str) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Payload too large",
                "status": 413,
                "detail": f"the request body exceeds the limit of {limit} bytes ({name})",
                "limit": name,
                "max": limit,
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class RateLimiter:
    """Token buckets by key: ``rate`` per second, up to ``burst`` at once. Keeps at most
    ``max_keys`` buckets (the least recently used go first), so made-up keys can't fill the
    memory."""

    def __init__(
        self,
        rate: float,
        burst: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.max_keys = max_keys
        self.clock = clock
        # key -> (tokens, when last counted)
        self._buckets: LRU[object, tuple[float, float]] = LRU(max_keys)
        self._lock = threading.Lock()

    def acquire(self, key: object) -> float | None:
        """Take a token; None when one was there, otherwise the seconds until one is."""
        if self.rate <= 0:
            return None
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(key) or (float(self.burst), now)
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            wait = None
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / self.rate
            self._buckets.put(key, (tokens, now))
            return wait


def check_report_rate(limiter: RateLimiter, trial_id: int) -> None:
    """Raise :class:`TooManyRequests` when the trial reports faster than the limiter allows."""
    wait = limiter.acquire(trial_id)
    if wait is not None:
        raise TooManyRequests(
            f"trial {trial_id} reports faster than {limiter.rate:g} per second (report_rate, "
            f"bursts of {limiter.burst}); retry in {wait:.2f} s",
            limit="report_rate",
            retry_after=max(1, math.ceil(wait)),
        )


async def limit_reports(trial_id: Id, request: Request) -> None:
    """The report route's dependency: this trial's report rate (429 beyond it). A coroutine:
    the buckets are in memory, so a thread hand-off would cost more than the check."""
    check_report_rate(request.app.state.report_limiter, trial_id)


# -- the study definition: read on the event loop, checked in a worker thread -----------------
def _as_sent(value: Any) -> Any:
    return value


# The body of ``POST /studies`` as parsed JSON, unchecked. FastAPI validates a body model on
# the event loop, before a sync route's thread starts, so a definition checked there would hold
# up every other request meanwhile (``/healthz`` included). The OpenAPI document still shows
# the StudySpec schema (``json_schema_input_type``); ``parse_study`` checks it in the thread.
StudyBody = Annotated[Any, PlainValidator(_as_sent, json_schema_input_type=StudySpec), Body()]


def parse_study(body: Any) -> StudySpec:
    """The definition sent, checked; a 422 naming each bad field as FastAPI would answer it."""
    try:
        return StudySpec.model_validate(body)
    except ValidationError as exc:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=body) from None
