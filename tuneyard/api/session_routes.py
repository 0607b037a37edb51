"""Who the caller is: its token's name, scope and what that scope grants, so a client (the
dashboard) can offer only what the token may do. Read scope: any valid token."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from tuneyard.api.auth import READ, CallerDep
from tuneyard.api.deps import KitDep
from tuneyard.service.tokens import GRANTS, Scope

router = APIRouter(prefix="/api/v1", tags=["tokens"], dependencies=[READ])


class WhoAmI(BaseModel):
    name: str = Field(description="the token's name")
    scope: Scope
    grants: list[Scope] = Field(description="every scope this token's scope includes")
    queues: list[str] | None = Field(description="the queues a worker token is limited to")
    auth: bool = Field(description="false when the server requires no token (loopback only)")


@router.get("/whoami", response_model=WhoAmI)
def whoami(who: CallerDep, kit: KitDep) -> WhoAmI:
    """The calling token: its name, scope and the scopes it grants (never its secret)."""
    return WhoAmI(
        name=who.name,
        scope=who.scope,
        grants=sorted(GRANTS[who.scope], key=list(Scope).index),
        queues=list(who.queues) if who.queues is not None else None,
        auth=kit.settings.auth,
    )
