"""Who may call what: every route declares the scope it needs, as a dependency.

    @router.post("/studies", dependencies=[Depends(require(Scope.WRITE))])

A request presents its token as ``Authorization: Bearer <token>``, nowhere else: a token in a
URL ends up in proxy logs and browser histories. The one route a browser opens without
headers, a study's event stream (EventSource), takes a short-lived ticket in its query
instead (``POST .../stream-ticket``, ``tuneyard.service.tokens.StreamTickets``). No token, or
one that is unknown, revoked or expired, is a 401; a valid token whose scope does not cover
the route is a 403, as is a worker token limited to queues asking about a study, a trial or a
worker of another queue.

The token is checked before anything reads the request's body (``AuthGate``): FastAPI reads
and parses a body before it runs a route's dependencies, which would let a caller without a
token make the server parse what it sends and learn from a 422 what it expects. The route's
dependency checks the same principal again, and adds the queue check, so a route the gate
does not know is still protected.

With ``Settings.auth`` off (a server bound to the loopback interface only, by an explicit
flag) every request acts as an admin; ``tuneyard.api.guards`` then refuses what a web page
could send it from another origin.

Tokens found in the database are remembered for ``CACHE_SECONDS`` per process, so a revoked
token stops working within that time on the other API processes (at once on the one that
revoked it).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as AsgiScope

from tuneyard.api.deps import Id, parse_id
from tuneyard.api.errors import answer
from tuneyard.errors import Forbidden, InvalidRequest, Unauthorized
from tuneyard.lru import LRU
from tuneyard.service.context import Toolkit
from tuneyard.service.tokens import Principal, Scope, StreamTickets, TokenService, digest
from tuneyard.store.models import Study, Trial, Worker

CACHE_SECONDS = 5.0
CACHE_SIZE = 10_000
ANONYMOUS = Principal(None, "anonymous (auth off)", Scope.ADMIN)
DEFAULT_QUEUE = "default"
# Where a request's principal is kept once known (the request's state, shared by the gate and
# the route's dependencies).
PRINCIPAL = "tuneyard_principal"

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token (`tuneyard token create`), as `Authorization: Bearer <token>`.",
)


class TokenCache:
    """Principals by token digest, for a few seconds, at most ``size`` of them (the first
    stored go first: a hit does not keep a token longer)."""

    def __init__(self, ttl: float = CACHE_SECONDS, size: int = CACHE_SIZE) -> None:
        self.ttl, self.size = ttl, size
        self._items: LRU[str, Principal] = LRU(size, ttl=ttl)

    def get(self, key: str) -> Principal | None:
        return self._items.peek(key)

    def put(self, key: str, principal: Principal) -> None:
        self._items.put(key, principal)

    def forget(self, token_id: int) -> None:
        for key, p in self._items.items():
            if p.token_id == token_id:
                self._items.pop(key)


def _kit(request: Request) -> Toolkit:
    kit: Toolkit = request.app.state.kit
    return kit


def token_cache(request: Request) -> TokenCache:
    cache: TokenCache = request.app.state.token_cache
    return cache


async def authenticate(request: Request, token: str | None) -> Principal:
    """The caller's principal; 401 without a valid token (unless auth is off).

    A coroutine, as are the route dependencies built on it: a token seen in the last few
    seconds is answered from memory, on the event loop, without a hand-off to a thread (the
    report path's most frequent case); only a cache miss reads the database, in a thread."""
    kit = _kit(request)
    if not kit.settings.auth:
        return ANONYMOUS
    if not token:
        raise Unauthorized(
            "this operation needs an API token: send 'Authorization: Bearer <token>' "
            "(create one with `tuneyard token create`)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    cache = token_cache(request)
    key = digest(token)
    principal = cache.get(key)
    if principal is None:
        principal = await run_in_threadpool(TokenService(kit).authenticate, token)
        if principal is None:
            raise Unauthorized(
                "the token is unknown, revoked or expired",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        cache.put(key, principal)
    return principal


def bearer_token(request: Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None (no header, another scheme)."""
    scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))
    if scheme.lower() != "bearer" or not credentials:
        return None
    return credentials


async def authorize(request: Request, scope: Scope) -> Principal:
    """The caller's principal, if its token grants ``scope``: 401 without a valid token, 403
    with one of too narrow a scope. The principal is kept on the request, so the gate and the
    route's dependencies look the token up once."""
    principal: Principal | None = getattr(request.state, PRINCIPAL, None)
    if principal is None:
        principal = await authenticate(request, bearer_token(request))
        setattr(request.state, PRINCIPAL, principal)
    if not principal.grants(scope):
        raise Forbidden(
            f"this operation needs a token of scope {scope.value} (or one that includes it); "
            f"this one is {principal.scope.value}"
        )
    return principal


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """The dependency of a route that needs ``scope``; it returns the caller's principal."""

    async def dependency(
        request: Request,
        # Declares the scheme in the OpenAPI document; the token is read by ``authorize``.
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        principal = await authorize(request, scope)
        if scope is Scope.WORKER and limited_to_queues(principal):
            await run_in_threadpool(_check_queue, request, principal)
        return principal

    dependency.scope = scope  # type: ignore[attr-defined]
    return dependency


def limited_to_queues(principal: Principal) -> bool:
    return principal.scope is Scope.WORKER and principal.queues is not None


def check_queue(principal: Principal, queue: str | None) -> None:
    """403 unless ``principal`` may work on ``queue`` (None: the default queue)."""
    queue = queue or DEFAULT_QUEUE
    if not principal.allows_queue(queue):
        raise Forbidden(
            f"this worker token serves the queues {', '.join(principal.queues or ()) or 'none'}, "
            f"not {queue!r}"
        )


# How to find the queue a path's id belongs to; "queue" is the column to read.
_QUEUE = Study.spec["execution"]["queue"].as_string()
_QUEUE_OF: dict[str, Callable[[int], Any]] = {
    "study_id": lambda i: select(_QUEUE).where(Study.id == i),
    "trial_id": lambda i: (
        select(_QUEUE).join(Trial, Trial.study_id == Study.id).where(Trial.id == i)
    ),
    "worker_id": lambda i: select(Worker.queue).where(Worker.id == i),
}
_ID_PARAM = re.compile(r".*_id\Z")


def _check_queue(request: Request, principal: Principal) -> None:
    """403 when the study, trial or worker the path names is on a queue the token does not
    serve. Fails closed: an id the check cannot read is refused (422, as the route's ``Id``
    reads ids the same way, ``parse_id``), and so is a path id it cannot place on a queue."""
    for name, raw in request.path_params.items():
        lookup = _QUEUE_OF.get(name)
        if lookup is None:
            if _ID_PARAM.fullmatch(name):
                raise Forbidden(f"a worker token limited to queues cannot use {name} here")
            continue
        try:
            value = parse_id(raw)
        except ValueError as exc:
            raise InvalidRequest(f"{name}: {exc}", field=name) from exc
        with _kit(request).reading() as s:
            row = s.execute(lookup(value)).first()
        # None: nothing has that id, and the route answers 404. A study without an execution
        # runs nothing; it counts as on the default queue, as does a worker without a queue.
        if row is not None:
            check_queue(principal, row[0])


def check_worker_registration(
    kit: Toolkit, principal: Principal, name: str, queue: str | None
) -> None:
    """A worker token limited to queues registers workers on those queues only, and can't take
    over the name of a worker registered on another queue (registering again under a name
    moves that worker)."""
    if not limited_to_queues(principal):
        return
    check_queue(principal, queue)
    with kit.reading() as s:
        current = s.execute(select(Worker.queue).where(Worker.name == name)).first()
    if current is not None:
        check_queue(principal, current[0])


async def caller(request: Request) -> Principal:
    """The principal the route's scope dependency authorized (put it after that dependency)."""
    principal: Principal | None = getattr(request.state, PRINCIPAL, None)
    if principal is None:  # fail closed: a route that declared no scope has no caller
        raise Unauthorized(
            "this operation needs an API token", headers={"WWW-Authenticate": "Bearer"}
        )
    return principal


CallerDep = Annotated[Principal, Depends(caller)]


async def stream_access(
    study_id: Id,
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ticket: Annotated[
        str | None,
        Query(
            max_length=200,
            description="a ticket from POST .../stream-ticket, for a client that can't send "
            "the Authorization header (a browser's EventSource)",
        ),
    ] = None,
) -> Principal:
    """A study's event stream: read scope, by the Authorization header or by a ticket for
    this very study in the query."""
    if ticket is None or not _kit(request).settings.auth or bearer_token(request) is not None:
        return await authorize(request, Scope.READ)
    principal = await run_in_threadpool(StreamTickets(_kit(request)).redeem, ticket, study_id)
    if principal is None:
        raise Unauthorized(
            "the stream ticket is unknown, expired, for another study or its token was "
            "revoked: get a new one (POST .../stream-ticket)",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    setattr(request.state, PRINCIPAL, principal)
    return principal


stream_access.scope = Scope.READ  # type: ignore[attr-defined]
stream_access.ticket = True  # type: ignore[attr-defined]


async def metrics_access(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """``/metrics``: read scope, unless ``metrics_public`` opens it to every scraper."""
    if _kit(request).settings.metrics_public:
        return
    await authorize(request, Scope.READ)


def route_scope(route: Any) -> Scope | None:
    """The scope a route declares through ``require`` (None: public)."""
    for dep in getattr(route, "dependencies", []):
        found = getattr(dep.dependency, "scope", None)
        if found is not None:
            return Scope(found)
        if dep.dependency is metrics_access:
            return Scope.READ
    return None


class AuthGate:
    """Checks a request's token against the scope of the route it is for, before the route
    reads its body (pure ASGI, inside the app's middleware). Routes are found with the same
    patterns the router uses; a request that matches none goes on (the router answers 404 or
    405), as does one for a public route or for one that takes a stream ticket (a GET: no
    body), whose own dependency checks it. Refusals are rendered by the app's exception
    handlers, as any other error."""

    def __init__(self, app: ASGIApp, api: FastAPI) -> None:
        self.app = app
        self.api = api
        self._routes: list[tuple[re.Pattern[str], frozenset[str], Scope]] | None = None

    def _table(self) -> list[tuple[re.Pattern[str], frozenset[str], Scope]]:
        # Built at the first request, when every route has been added.
        if self._routes is None:
            settings = self.api.state.kit.settings
            table = []
            for route in iter_route_contexts(self.api.routes):
                if not isinstance(route.original_route, APIRoute):
                    continue
                calls = [d.dependency for d in route.dependencies]
                if any(getattr(c, "ticket", False) for c in calls):
                    continue
                if metrics_access in calls and settings.metrics_public:
                    continue
                needed = route_scope(route)
                if needed is not None:
                    table.append((route.path_regex, frozenset(route.methods or ()), needed))
            self._routes = table
        return self._routes

    def _needed(self, scope: AsgiScope) -> Scope | None:
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root + "/"):
            path = path[len(root) :]
        method = scope["method"]
        for pattern, methods, needed in self._table():
            if method in methods and pattern.match(path):
                return needed
        return None

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            needed = self._needed(scope)
            if needed is not None:
                request = Request(scope)
                try:
                    await authorize(request, needed)
                except Exception as exc:
                    response = await answer(self.api, request, exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


# What routes declare: ``@router.get(..., dependencies=[READ])``.
ADMIN = Depends(require(Scope.ADMIN))
WRITE = Depends(require(Scope.WRITE))
WORKER = Depends(require(Scope.WORKER))
READ = Depends(require(Scope.READ))
STREAM = Depends(stream_access)
