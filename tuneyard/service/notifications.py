"""A study's webhook events (``notifications`` in its definition), through an outbox.

An event is a row of ``notifications`` written in the very transaction where it happened (a
trial completed with a new best value, the study moved to failing, the study ended), so it is
told if and only if that transaction commits, and nothing slow runs under the study's lock.
The dispatcher's delivery pass (:class:`Notifier`) posts the due rows afterwards, one at a
time and outside any study lock: a row is claimed with a compare-and-set on its attempts (two
dispatchers never post the same attempt), posted, and marked delivered, or given a next
attempt with exponential backoff, or given up after its ``max_attempts``.

Each post is signed: ``X-Tuneyard-Signature: sha256=<hex>`` is the HMAC-SHA256 of the exact
body with the study's secret (made when the study is created, shown once then). Its
``X-Tuneyard-Delivery`` (also the body's ``id``) is the same on every attempt of one event,
so a receiver can drop a repeat. The hosts the server posts to are its operator's choice
(``TUNEYARD_WEBHOOK_ALLOW``, docs/security.md): by default only public addresses.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tuneyard import __version__
from tuneyard.errors import InvalidRequest
from tuneyard.redact import redact_text
from tuneyard.service.context import StudyContext, Toolkit
from tuneyard.settings import Settings
from tuneyard.spec import StudySpec
from tuneyard.spec.notifications import NotificationEvent
from tuneyard.states import TrialState
from tuneyard.store.models import Notification, Study, Trial

log = logging.getLogger("tuneyard.notifications")

FIELD = "notifications.webhook"
SIGNATURE_HEADER = "X-Tuneyard-Signature"
EVENT_HEADER = "X-Tuneyard-Event"
DELIVERY_HEADER = "X-Tuneyard-Delivery"
# Seconds one post may take; a claimed row whose sender died is posted again after CLAIM.
POST_TIMEOUT = 5.0
CLAIM = timedelta(seconds=60)
# The wait before attempt n+1 is BACKOFF * 2**(n-1), at most MAX_BACKOFF.
BACKOFF = 10.0
MAX_BACKOFF = 3_600.0
# The most of a receiver's answer kept as the row's last error.
ERROR_CHARS = 500

Resolver = Callable[[str, int], list[str]]


def new_secret(spec: StudySpec) -> str | None:
    """The signing secret of a new study with notifications (None without)."""
    return secrets.token_hex(32) if spec.notifications is not None else None


def check_webhook(settings: Settings, spec: StudySpec) -> None:
    """Refuse a new study whose webhook the server may not post to (a 422 naming the field).
    The host is judged as written; its addresses are judged again at each post."""
    if spec.notifications is None:
        return
    refusal = host_refusal(settings, spec.notifications.webhook, resolve=None)
    if refusal is not None:
        raise InvalidRequest(f"{FIELD}: {refusal}", field=FIELD)


def host_refusal(settings: Settings, url: str, resolve: Resolver | None) -> str | None:
    """Why the server may not post to ``url``, or None. With ``TUNEYARD_WEBHOOK_ALLOW`` set,
    the host must match one of its globs; without, neither the host as written nor (given
    ``resolve``) any address it resolves to may be loopback, private, link-local or reserved."""
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "the URL names no host"
    allowed = [g.strip().lower() for g in settings.webhook_allow.split(",") if g.strip()]
    if allowed:
        if any(fnmatch.fnmatchcase(host, glob) for glob in allowed):
            return None
        return f"{host} is not one of the hosts the server posts to (TUNEYARD_WEBHOOK_ALLOW)"
    if host == "localhost" or host.endswith(".localhost"):
        return f"{host} is this machine; the server posts only to public addresses"
    addresses = [host] if _address(host) is not None else []
    if resolve is not None and not addresses:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = resolve(host, port)
        except OSError as exc:
            return f"{host} does not resolve: {exc}"
    for a in addresses:
        ip = _address(a)
        if ip is None or not ip.is_global:
            return (
                f"{host} is {a}, not a public address; the server posts only to public "
                "addresses unless TUNEYARD_WEBHOOK_ALLOW names the host"
            )
    return None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return ip


def _resolve(host: str, port: int) -> list[str]:
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


# -- the events, written in the transaction where they happen --------------------------------
def trial_completed(
    s: Session, kit: Toolkit, ctx: StudyContext, study: Study, trial: Trial
) -> None:
    """A trial (not a replicate) completed: tell ``best`` when its value beats every earlier
    completed trial's. The best so far is kept on the study's row (locked by the caller), so
    no trial is read. A study ranked by fronts has no single best and tells none."""
    spec = ctx.spec.notifications
    if (
        spec is None
        or ctx.spec.ranked_by_fronts
        or trial.parent_id is not None
        or trial.state != TrialState.COMPLETED
        or trial.value is None
    ):
        return
    best = study.notified_best
    if best is not None and (trial.value >= best if ctx.sign > 0 else trial.value <= best):
        return
    study.notified_best = trial.value
    if "best" in spec.on:
        detail = {
            "id": trial.id,
            "number": trial.number,
            "value": trial.value,
            "params": trial.params,
            "previous_best": best,
        }
        _add(s, kit, ctx.spec, study, "best", trial=detail)


def study_failing(s: Session, kit: Toolkit, ctx: StudyContext, study: Study) -> None:
    """The study moved to failing (its reason says why)."""
    _add(s, kit, ctx.spec, study, "failing")


def study_finished(s: Session, kit: Toolkit, study: Study) -> None:
    """The study ended, in the state and for the reason its row now holds."""
    if study.webhook_secret is None:
        return  # no notifications: not even the definition is read
    _add(s, kit, kit.context(study).spec, study, "finished")


def _add(
    s: Session,
    kit: Toolkit,
    spec: StudySpec,
    study: Study,
    event: NotificationEvent,
    trial: dict[str, Any] | None = None,
) -> None:
    notify = spec.notifications
    if notify is None or event not in notify.on:
        return
    now = kit.clock()
    payload: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "event": event,
        "created_at": now.isoformat(),
        "study": {
            "id": study.id,
            "name": study.name,
            "state": study.state,
            "reason": study.reason,
            "metric": spec.metric,
            "direction": spec.direction,
        },
    }
    if trial is not None:
        payload["trial"] = trial
    s.add(
        Notification(
            study_id=study.id,
            event=event,
            url=notify.webhook,
            payload=payload,
            attempts=0,
            max_attempts=notify.max_attempts,
            created_at=now,
            next_attempt_at=now,
        )
    )


# -- delivery, outside any transaction of a study --------------------------------------------
def sign(secret: str, body: bytes) -> str:
    """The signature header's value of ``body``: what a receiver computes to check it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def backoff(attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed post before the next one."""
    return timedelta(seconds=min(MAX_BACKOFF, BACKOFF * 2 ** max(0, attempts - 1)))


@dataclass(frozen=True)
class Delivery:
    """One post of an event: whether the receiver took it, and if not why and what next."""

    notification_id: int
    study_id: int
    event: str
    attempt: int
    delivered: bool
    error: str | None = None
    given_up: bool = False


@dataclass(frozen=True)
class _Claim:
    id: int
    study_id: int
    event: str
    url: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    secret: str


class Notifier:
    """The delivery pass the dispatcher runs: posts due events, a bounded number per pass."""

    def __init__(
        self, kit: Toolkit, client: httpx.Client | None = None, resolve: Resolver = _resolve
    ) -> None:
        self.kit = kit
        self._client = client
        self._resolve = resolve

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            # Redirects are not followed: a receiver answers 2xx itself or the post failed.
            self._client = httpx.Client(timeout=POST_TIMEOUT, follow_redirects=False)
        return self._client

    def deliver_due(self, limit: int = 10, budget: float = 10.0) -> list[Delivery]:
        """Post at most ``limit`` due events, and start none once ``budget`` seconds have
        gone, so a slow receiver holds the dispatcher's pass up for a bounded time."""
        started = time.monotonic()
        done: list[Delivery] = []
        while len(done) < limit and time.monotonic() - started < budget:
            claim = self._claim()
            if claim is None:
                break
            done.append(self._post(claim))
        return done

    def _claim(self) -> _Claim | None:
        """The next due event, its attempt counted and its next attempt put off by CLAIM
        (a compare-and-set on its attempts: a concurrent pass that took it first wins)."""
        now = self.kit.clock()
        with self.kit.transaction() as s:
            for _ in range(3):
                row = s.execute(
                    select(Notification, Study.webhook_secret)
                    .join(Study, Study.id == Notification.study_id)
                    .where(
                        Notification.delivered_at.is_(None),
                        Notification.next_attempt_at <= now,
                    )
                    .order_by(Notification.next_attempt_at, Notification.id)
                    .limit(1)
                ).first()
                if row is None:
                    return None
                n, secret = row
                taken = s.execute(
                    update(Notification)
                    .where(Notification.id == n.id, Notification.attempts == n.attempts)
                    .values(attempts=n.attempts + 1, next_attempt_at=now + CLAIM)
                    .execution_options(synchronize_session=False)
                )
                if getattr(taken, "rowcount", 0) == 1:
                    return _Claim(
                        n.id,
                        n.study_id,
                        n.event,
                        n.url,
                        n.payload,
                        n.attempts + 1,
                        n.max_attempts,
                        secret or "",
                    )
                s.expire_all()  # another pass claimed it: read the next due row afresh
        return None

    def _post(self, claim: _Claim) -> Delivery:
        error = host_refusal(self.kit.settings, claim.url, self._resolve)
        if error is None:
            body = body_of(claim.payload)
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"tuneyard/{__version__}",
                EVENT_HEADER: claim.event,
                DELIVERY_HEADER: str(claim.payload.get("id", claim.id)),
                SIGNATURE_HEADER: sign(claim.secret, body),
            }
            try:
                answer = self.client.post(claim.url, content=body, headers=headers)
                if not answer.is_success:
                    error = f"HTTP {answer.status_code}: {answer.text[:ERROR_CHARS]}".rstrip(": ")
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        return self._record(claim, redact_text(error) if error is not None else None)

    def _record(self, claim: _Claim, error: str | None) -> Delivery:
        now = self.kit.clock()
        given_up = error is not None and claim.attempt >= claim.max_attempts
        values: dict[str, Any]
        if error is None:
            values = {"delivered_at": now, "next_attempt_at": None, "last_error": None}
        elif given_up:
            values = {"next_attempt_at": None, "last_error": error}
        else:
            values = {"next_attempt_at": now + backoff(claim.attempt), "last_error": error}
        with self.kit.transaction() as s:
            s.execute(
                update(Notification)
                .where(Notification.id == claim.id, Notification.attempts == claim.attempt)
                .values(**values)
            )
        host = urlsplit(claim.url).hostname
        if given_up:
            log.warning(
                "study %s: gave up the %s event after %s attempts to %s: %s",
                claim.study_id,
                claim.event,
                claim.attempt,
                host,
                error,
            )
        elif error is not None:
            log.info(
                "study %s: the %s event's attempt %s to %s failed: %s",
                claim.study_id,
                claim.event,
                claim.attempt,
                host,
                error,
            )
        return Delivery(
            claim.id, claim.study_id, claim.event, claim.attempt, error is None, error, given_up
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
