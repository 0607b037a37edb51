"""Managing API tokens (admin scope): create one (its secret is in the answer, once), list
them, revoke one; and, for any token, asking who it is (``GET /whoami``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request

from tuneyard.api.auth import ADMIN, READ, CallerDep, TokenCache, token_cache
from tuneyard.api.deps import Id, KitDep
from tuneyard.api.routes import E404, E422
from tuneyard.api.schemas import NewTokenOut, TokenIn, TokenOut
from tuneyard.protocol import CallerOut
from tuneyard.service.tokens import GRANTS, Scope, TokenService
from tuneyard.store.models import ApiToken

router = APIRouter(prefix="/api/v1", tags=["tokens"], dependencies=[ADMIN])
# Any valid token may ask who it is: every scope includes read.
self_router = APIRouter(prefix="/api/v1", tags=["tokens"])


def _out(row: ApiToken) -> TokenOut:
    return TokenOut.model_validate(row, from_attributes=True)


@router.post("/tokens", status_code=201, response_model=NewTokenOut, responses=E422)
def create_token(body: TokenIn, kit: KitDep) -> NewTokenOut:
    """Create a token; the answer holds its secret, which is stored nowhere (only a hash)."""
    days = timedelta(days=body.expires_in_days) if body.expires_in_days else None
    new = TokenService(kit).create(body.name, body.scope, body.queues, days)
    return NewTokenOut(**_out(new.token).model_dump(), token=new.secret)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(kit: KitDep, include_revoked: Annotated[bool, Query()] = False) -> list[TokenOut]:
    """Every token (its hint, never its secret)."""
    return [_out(t) for t in TokenService(kit).list(include_revoked)]


@router.delete("/tokens/{token_id}", response_model=TokenOut, responses=E404)
def revoke_token(token_id: Id, kit: KitDep, request: Request) -> TokenOut:
    """Revoke a token: at once on this server, within seconds on the others."""
    row = TokenService(kit).revoke(token_id)
    cache: TokenCache = token_cache(request)
    cache.forget(token_id)
    return _out(row)


@self_router.get("/whoami", response_model=CallerOut, dependencies=[READ])
def whoami(kit: KitDep, who: CallerDep) -> CallerOut:
    """The token this request presents: its name, scope and queues. A worker and the
    dispatcher ask it when they start, to say at once which setting is wrong rather than fail
    every job later; the dashboard, to offer only what the token may do. Read-only; it names
    no secret."""
    return CallerOut(
        name=who.name,
        scope=who.scope.value,
        grants=[g.value for g in sorted(GRANTS[who.scope], key=list(Scope).index)],
        queues=list(who.queues) if who.queues is not None else None,
        auth=kit.settings.auth,
    )
