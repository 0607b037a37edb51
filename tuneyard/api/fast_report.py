"""``POST /api/v1/trials/{trial_id}/reports`` without FastAPI's routing and dependency solving.

A study's traffic is mostly reports, and for a report FastAPI's own machinery (matching the
path against every route, solving the route's five dependencies, building the request and
the response) cost about 1 ms of the API's 5.6-5.9 ms of CPU per report (bench/README.md,
"Where a report's CPU goes"). This middleware, the innermost one, answers the well-formed
report of an authorized worker itself, with the same checks and the same service call:

- the token, by the same :func:`~tuneyard.api.auth.authorize` as the route's ``WORKER``
  dependency (the :class:`~tuneyard.api.auth.AuthGate` outside it has already checked it);
- the body, by :class:`~tuneyard.protocol.ReportIn` on the raw JSON;
- the trial's report rate (429, as :func:`~tuneyard.api.limits.limit_reports`);
- :meth:`TrialService.report` in the thread pool; its errors are answered by the app's
  exception handlers, as the route's would be.

Anything else goes to the route unchanged, with the body read so far handed on: an id or a
body the fast path would not take as is (the route answers 422 naming the field), a
content type other than JSON, a worker token limited to queues (the route checks the
trial's queue). So the route stays the one definition of the endpoint (its OpenAPI entry,
its error answers), and this is only a shorter way to its happy path.
"""

from __future__ import annotations

import inspect
import re

from fastapi import FastAPI
from fastapi.routing import RouteContext, iter_route_contexts
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tuneyard.api.auth import authorize, limited_to_queues
from tuneyard.api.limits import check_report_rate
from tuneyard.protocol import MAX_ID, ReportIn, ReportOut
from tuneyard.service.tokens import Scope as TokenScope
from tuneyard.service.trials import TrialService

PATH = "/api/v1/trials/{trial_id}/reports"
# The canonical spelling of an id (tuneyard.api.deps.parse_id), and only that.
_PATH = re.compile(r"/api/v1/trials/(0|[1-9][0-9]{0,18})/reports\Z")
_JSON = re.compile(rb"application/(?:[\w.+-]+\+)?json\s*(?:;.*)?\Z", re.IGNORECASE)


class FastReports:
    """Answers a report's happy path before the router; see the module's docstring."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._route: RouteContext | None = None

    def route(self) -> RouteContext:
        # Found at the first request, when every route has been added.
        if self._route is None:
            for r in iter_route_contexts(self.api.routes):
                if r.path == PATH and "POST" in (r.methods or ()):
                    self._route = r
                    break
            else:  # pragma: no cover - the route is part of the app
                raise LookupError(f"no route POST {PATH}")
        return self._route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trial_id = _report_trial(scope)
        if trial_id is None or not _is_json(scope):
            await self.app(scope, receive, send)
            return
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
        try:
            report = ReportIn.model_validate_json(body)
        except ValidationError:
            # The route reads it again and answers 422 in its words.
            await self.app(scope, _replay(body, receive), send)
            return
        scope["route"] = self.route()  # what the latency histogram labels it with
        try:
            check_report_rate(self.api.state.report_limiter, trial_id)
            trials = TrialService(self.api.state.kit)
            stored = await run_in_threadpool(
                trials.report,
                trial_id,
                report.step,
                report.value,
                dict(report.metrics),
                attempt=report.attempt,
            )
        except Exception as exc:
            response = await self._error(request, exc)
        else:
            out = ReportOut.model_validate(stored, from_attributes=True)
            response = Response(out.model_dump_json(), media_type="application/json")
        await response(scope, receive, send)

    async def _error(self, request: Request, exc: Exception) -> Response:
        """The app's own answer to ``exc``; an error no handler maps goes up, to the 500."""
        for cls in type(exc).__mro__:
            handler = self.api.exception_handlers.get(cls)
            if handler is not None:
                response = handler(request, exc)
                if inspect.isawaitable(response):
                    response = await response
                return response
        raise exc


def _report_trial(scope: Scope) -> int | None:
    """The trial id of a ``POST .../trials/{id}/reports``, else None."""
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
    return trial_id if trial_id <= MAX_ID else None


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
