"""Who may call what: every route declares the scope it needs, as a dependency.

    @router.post("/studies", dependencies=[Depends(require(Scope.WRITE))])

A request presents its token as ``Authorization: Bearer <token>``; a GET of read scope may put
it in the ``access_token`` query parameter instead (the dashboard's event stream: a browser's
EventSource sends no headers). No token, or one that is unknown, revoked or expired, is a 401;
a valid token whose scope does not cover the route is a 403, as is a worker token limited to
queues asking about a study of another queue.

With ``Settings.auth`` off (a server bound to the loopback interface only, by an explicit
flag) every request acts as an admin.

Tokens found in the database are remembered for ``CACHE_SECONDS`` per process, so a revoked
token stops working within that time on the other API processes (at once on the one that
revoked it).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from tuneyard.errors import Forbidden, Unauthorized
from tuneyard.service.context import Toolkit
from tuneyard.service.tokens import Principal, Scope, TokenService, digest
from tuneyard.store.models import Study, Trial

CACHE_SECONDS = 5.0
CACHE_SIZE = 10_000
ANONYMOUS = Principal(None, "anonymous (auth off)", Scope.ADMIN)
DEFAULT_QUEUE = "default"

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token (`tuneyard token create`), as `Authorization: Bearer <token>`.",
)
_query = APIKeyQuery(
    name="access_token",
    auto_error=False,
    scheme_name="token_query",
    description="The same token as a query parameter; only GET requests of read scope.",
)


class TokenCache:
    """Principals by token digest, for a few seconds, at most ``size`` of them."""

    def __init__(self, ttl: float = CACHE_SECONDS, size: int = CACHE_SIZE) -> None:
        self.ttl, self.size = ttl, size
        self._items: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Principal | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] < time.monotonic():
                self._items.pop(key, None)
                return None
            return item[1]

    def put(self, key: str, principal: Principal) -> None:
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl, principal)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def forget(self, token_id: int) -> None:
        with self._lock:
            for key in [k for k, (_, p) in self._items.items() if p.token_id == token_id]:
                del self._items[key]


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


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """The dependency of a route that needs ``scope``; it returns the caller's principal."""

    if scope is Scope.READ:

        async def read(
            request: Request,
            bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
            access_token: Annotated[str | None, Depends(_query)],
        ) -> Principal:
            token = bearer.credentials if bearer is not None else None
            if token is None and request.method in ("GET", "HEAD"):
                token = access_token
            return await _check(request, await authenticate(request, token), scope)

        read.scope = scope  # type: ignore[attr-defined]
        return read

    async def dependency(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        token = bearer.credentials if bearer is not None else None
        return await _check(request, await authenticate(request, token), scope)

    dependency.scope = scope  # type: ignore[attr-defined]
    return dependency


async def _check(request: Request, principal: Principal, scope: Scope) -> Principal:
    if not principal.grants(scope):
        raise Forbidden(
            f"this operation needs a token of scope {scope.value} (or one that includes it); "
            f"this one is {principal.scope.value}"
        )
    if scope is Scope.WORKER and principal.queues is not None and principal.scope is Scope.WORKER:
        queue = await run_in_threadpool(_queue_of, request)
        if queue is not None and not principal.allows_queue(queue):
            raise Forbidden(
                f"this worker token serves the queues {', '.join(principal.queues) or 'none'}, "
                f"not {queue!r}"
            )
    return principal


def _queue_of(request: Request) -> str | None:
    """The queue of the study a request is about (by its study_id or trial_id), or None when
    it names neither or the study does not exist (the route answers 404 then)."""
    params = request.path_params
    kit = _kit(request)
    queue = Study.spec["execution"]["queue"].as_string()
    try:
        if "study_id" in params:
            q = select(queue).where(Study.id == int(params["study_id"]))
        elif "trial_id" in params:
            q = (
                select(queue)
                .join(Trial, Trial.study_id == Study.id)
                .where(Trial.id == int(params["trial_id"]))
            )
        else:
            return None
    except ValueError:
        return None  # not a number: the route's validation answers
    with kit.transaction() as s:
        row = s.execute(q).first()
    if row is None:
        return None
    # A study without an execution runs nothing; it counts as on the default queue.
    return row[0] or DEFAULT_QUEUE


async def metrics_access(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """``/metrics``: read scope, unless ``metrics_public`` opens it to every scraper."""
    if _kit(request).settings.metrics_public:
        return
    token = bearer.credentials if bearer is not None else None
    await _check(request, await authenticate(request, token), Scope.READ)


def route_scope(route: Any) -> Scope | None:
    """The scope a route declares through ``require`` (None: public)."""
    for dep in getattr(route, "dependencies", []):
        found = getattr(dep.dependency, "scope", None)
        if found is not None:
            return Scope(found)
        if dep.dependency is metrics_access:
            return Scope.READ
    return None


# What routes declare: ``@router.get(..., dependencies=[READ])``.
ADMIN = Depends(require(Scope.ADMIN))
WRITE = Depends(require(Scope.WRITE))
WORKER = Depends(require(Scope.WORKER))
READ = Depends(require(Scope.READ))
