"""API tokens: scoped bearer secrets, stored as their SHA-256 only.

A token is ``ty_`` and 43 characters of a 256-bit random secret (URL-safe base64). It is shown
once, when created; the database keeps its SHA-256 (a salt adds nothing to a random secret of
this size), so a copy of the database authenticates nobody. A request's token is found by the
digest of what it presents, through a unique index: nothing compares secrets byte by byte.

Scopes, each a superset of the ones below it where drawn:

    admin   everything, and managing tokens
    write   create, change and delete studies      (and read)
    worker  next, reports, heartbeats, checkpoints, logs and the worker registry, on its
            queues when the token names some    (and read)
    read    studies, trials, logs, workers, the dashboard, /metrics

A stream ticket (``tyt_`` and 256 random bits) opens one study's event stream for a minute: a
browser's EventSource sends no header, so what it presents is in the URL, where proxies and
browser histories keep it; a ticket found there is worth little (one stream, read only, for
``TICKET_SECONDS``). Tickets live in the database, SHA-256 only, like tokens: every API process
and server on that database honours them, a copy of the database authenticates nobody (a
signed ticket would need a key those processes share, which a copy would hold), and revoking
the token a ticket was issued to ends the ticket too.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, select, update

from tuneyard.errors import InvalidRequest, NotFound
from tuneyard.service.context import Toolkit
from tuneyard.store.models import ApiToken, StreamTicket

PREFIX = "ty_"
HINT_LENGTH = 10
TICKET_PREFIX = "tyt_"
TICKET_SECONDS = 60.0
# Expired tickets deleted by each new one, at most: enough to keep up with any rate of issue.
TICKET_PURGE_BATCH = 100


class Scope(StrEnum):
    ADMIN = "admin"
    WRITE = "write"
    WORKER = "worker"
    READ = "read"


GRANTS: dict[Scope, frozenset[Scope]] = {
    Scope.ADMIN: frozenset(Scope),
    Scope.WRITE: frozenset({Scope.WRITE, Scope.READ}),
    Scope.WORKER: frozenset({Scope.WORKER, Scope.READ}),
    Scope.READ: frozenset({Scope.READ}),
}


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id (None when auth is off), name, scope and queues."""

    token_id: int | None
    name: str
    scope: Scope
    queues: tuple[str, ...] | None = None

    def grants(self, scope: Scope) -> bool:
        return scope in GRANTS[self.scope]

    def allows_queue(self, queue: str) -> bool:
        """Whether this principal may work on ``queue``; only worker tokens are limited."""
        return self.scope is not Scope.WORKER or self.queues is None or queue in self.queues


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str


class TokenService:
    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    def create(
        self,
        name: str,
        scope: Scope | str,
        queues: list[str] | None = None,
        expires_in: timedelta | None = None,
    ) -> NewToken:
        try:
            scope = Scope(scope)
        except ValueError as exc:
            raise InvalidRequest(
                f"scope: {scope!r} is none of {', '.join(s.value for s in Scope)}", field="scope"
            ) from exc
        if queues is not None and scope is not Scope.WORKER:
            raise InvalidRequest("queues: only a worker token is limited to queues", field="queues")
        secret = new_secret()
        now = self.kit.clock()
        row = ApiToken(
            name=name,
            scope=scope.value,
            queues=sorted(set(queues)) if queues is not None else None,
            secret_sha256=digest(secret),
            hint=secret[:HINT_LENGTH],
            created_at=now,
            expires_at=now + expires_in if expires_in is not None else None,
        )
        with self.kit.transaction() as s:
            s.add(row)
            s.flush()
            s.expunge(row)
        return NewToken(row, secret)

    def list(self, include_revoked: bool = False) -> list[ApiToken]:
        with self.kit.transaction() as s:
            q = select(ApiToken).order_by(ApiToken.id)
            if not include_revoked:
                q = q.where(ApiToken.revoked_at.is_(None))
            rows = list(s.scalars(q))
            s.expunge_all()
        return rows

    def revoke(self, token_id: int) -> ApiToken:
        """Revoke a token (a no-op for one already revoked)."""
        with self.kit.transaction() as s:
            s.execute(
                update(ApiToken)
                .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=self.kit.clock())
            )
            row = s.get(ApiToken, token_id)
            if row is None:
                raise NotFound(f"token {token_id} does not exist")
            s.expunge(row)
        return row

    def authenticate(self, token: str, now: datetime | None = None) -> Principal | None:
        """The principal a presented token stands for; None for an unknown, revoked or
        expired one."""
        if not token.startswith(PREFIX) or len(token) > 200:
            return None
        with self.kit.transaction() as s:
            row = s.scalar(select(ApiToken).where(ApiToken.secret_sha256 == digest(token)))
        if row is None or row.revoked_at is not None:
            return None
        if row.expires_at is not None and row.expires_at <= (now or self.kit.clock()):
            return None
        queues = tuple(row.queues) if row.queues is not None else None
        return Principal(row.id, row.name, Scope(row.scope), queues)


@dataclass(frozen=True)
class NewTicket:
    secret: str
    study_id: int
    expires_at: datetime


class StreamTickets:
    """Tickets for one study's event stream (see the module docstring)."""

    def __init__(self, kit: Toolkit) -> None:
        self.kit = kit

    def issue(self, principal: Principal, study_id: int) -> NewTicket:
        """A ticket for ``study_id``'s stream, for whoever ``principal`` is; expired tickets
        are deleted on the way, a batch at a time (rows another process is deleting are
        skipped, not waited for)."""
        secret = TICKET_PREFIX + secrets.token_urlsafe(32)
        now = self.kit.clock()
        expires_at = now + timedelta(seconds=TICKET_SECONDS)
        expired = (
            select(StreamTicket.id)
            .where(StreamTicket.expires_at < now)
            .order_by(StreamTicket.id)
            .limit(TICKET_PURGE_BATCH)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        with self.kit.transaction() as s:
            s.execute(delete(StreamTicket).where(StreamTicket.id.in_(expired)))
            s.add(
                StreamTicket(
                    secret_sha256=digest(secret),
                    token_id=principal.token_id,
                    study_id=study_id,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return NewTicket(secret, study_id, expires_at)

    def redeem(self, secret: str, study_id: int) -> Principal | None:
        """The principal a ticket stands for on ``study_id``'s stream (read scope only); None
        for a ticket that is unknown, expired, for another study, or whose token is no longer
        valid."""
        if not secret.startswith(TICKET_PREFIX) or len(secret) > 200:
            return None
        now = self.kit.clock()
        with self.kit.reading() as s:
            row = s.execute(
                select(StreamTicket.study_id, StreamTicket.expires_at, ApiToken)
                .join(ApiToken, ApiToken.id == StreamTicket.token_id)
                .where(StreamTicket.secret_sha256 == digest(secret))
            ).first()
        if row is None:
            return None
        ticket_study, expires_at, token = row
        if ticket_study != study_id or expires_at <= now:
            return None
        if token.revoked_at is not None or (
            token.expires_at is not None and token.expires_at <= now
        ):
            return None
        return Principal(token.id, f"{token.name} (stream ticket)", Scope.READ)
