"""A worker's two most frequent calls, ``POST /api/v1/trials/{trial_id}/reports`` and
``.../heartbeat``, without FastAPI's routing and dependency solving.

A study's traffic is mostly reports and heartbeats, and for each FastAPI's own machinery
(matching the path against every route, solving the route's dependencies, building the
request and the response) cost about 1 ms of the API's 5.6-5.9 ms of CPU per report
(bench/README.md, "Where a report's CPU goes"). This middleware, the innermost one, answers
such a call itself when it is well-formed and from an authorized worker, with the same checks
and the same service call as the route:

- the token, by the same :func:`~tuneyard.api.auth.authorize` as the route's ``WORKER``
  dependency (the :class:`~tuneyard.api.auth.AuthGate` outside it has already checked it);
- the body, by the route's model (:class:`~tuneyard.protocol.ReportIn`,
  :class:`~tuneyard.protocol.HeartbeatIn`) on the raw JSON;
- a report's rate (429, as :func:`~tuneyard.api.limits.limit_reports`);
- the :class:`TrialService` call in the thread pool; its errors are answered by the app's
  exception handlers, as the route's would be.

Anything else goes to the route unchanged, with the body read so far handed on: an id or a
body the shortcut would not take as is (the route answers 422 naming the field), a content
type other than JSON, a worker token limited to queues (the route checks the trial's queue).
So the routes stay the one definition of these endpoints (their OpenAPI entries, their error
answers), and this is only a shorter way to their happy paths.
"""

from __future__ import annotations

import re
from datetime import datetime

from fastapi import FastAPI
from fastapi.routing import RouteContext, iter_route_contexts
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneyard.api.auth import authorize, limited_to_queues
from tuneyard.api.errors import answer
from tuneyard.api.limits import check_report_rate
from tuneyard.protocol import MAX_ID, HeartbeatIn, ReportIn, ReportOut
from tuneyard.service.tokens import Scope as TokenScope
from tuneyard.service.trials import TrialService

# The canonical spelling of an id (tuneyard.api.deps.parse_id), and only that.
_PATH = re.compile(r"/api/v1/trials/(0|[1-9][0-9]{0,18})/(reports|heartbeat)\Z")
_JSON = re.compile(rb"application/(?:[\w.+-]+\+)?json\s*(?:;.*)?\Z", re.IGNORECASE)
_LEASE = TypeAdapter(dict[str, datetime | None])


class FastCalls:
    """Answers a report's and a heartbeat's happy path before the router; see the module's
    docstring."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._routes: dict[str, RouteContext] = {}

    def route(self, call: str) -> RouteContext:
        """The route of ``call`` ("reports", "heartbeat"), found at the first request, when
        every route has been added."""
        if not self._routes:
            for r in iter_route_contexts(self.api.routes):
                for name in ("reports", "heartbeat"):
                    if r.path == f"/api/v1/trials/{{trial_id}}/{name}" and "POST" in (
                        r.methods or ()
                    ):
                        self._routes[name] = r
        return self._routes[call]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = _trial_call(scope)
        if found is None or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        trial_id, call = found
        request = Request(scope)
        try:
            principal = await authorize(request, TokenScope.WORKER)
        except Exception:
            principal = None  # the route refuses it, in its words
        if principal is None or limited_to_queues(principal):
            # A worker token limited to queues: the route checks the trial's queue.
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive)
        if not complete:
            return  # the client went away, or the body limit answered
        model = ReportIn if call == "reports" else HeartbeatIn
        try:
            sent = model.model_validate_json(body)
        except ValidationError:
            # The route reads it again and answers 422 in its words.
            await self.app(scope, _replay(body, receive), send)
            return
        scope["route"] = self.route(call)  # what the latency histogram labels it with
        try:
            if isinstance(sent, ReportIn):
                content = await self._report(trial_id, sent)
            else:
                content = await self._heartbeat(trial_id, sent)
        except Exception as exc:
            response = await answer(self.api, request, exc)
        else:
            response = Response(content, media_type="application/json")
        await response(scope, receive, send)

    async def _report(self, trial_id: int, sent: ReportIn) -> bytes:
        check_report_rate(self.api.state.report_limiter, trial_id)
        trials = TrialService(self.api.state.kit)
        stored = await run_in_threadpool(
            trials.report,
            trial_id,
            sent.step,
            sent.value,
            dict(sent.metrics),
            attempt=sent.attempt,
        )
        return ReportOut.model_validate(stored, from_attributes=True).model_dump_json().encode()

    async def _heartbeat(self, trial_id: int, sent: HeartbeatIn) -> bytes:
        trials = TrialService(self.api.state.kit)
        lease = await run_in_threadpool(trials.heartbeat, trial_id, attempt=sent.attempt)
        return _LEASE.dump_json({"lease_expires_at": lease})


def _trial_call(scope: Scope) -> tuple[int, str] | None:
    """The trial id and the call ("reports", "heartbeat") of a ``POST .../trials/{id}/...``
    this module answers, else None."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root + "/"):
        path = path[len(root) :]
    m = _PATH.match(path)
    if m is None:
        return None
    trial_id = int(m[1])
    return (trial_id, m[2]) if trial_id <= MAX_ID else None


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return _JSON.match(value) is not None
    return False


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request's body, and whether it arrived whole."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the route, giving it the body already read, then the rest as it comes."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
