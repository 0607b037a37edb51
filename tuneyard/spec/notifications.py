"""Where a study tells of its events: a webhook the service posts a signed JSON event to.

``notifications: {webhook: https://hooks.example.com/tuneyard, on: [best, finished]}`` posts
when a trial completes with a value better than every earlier one (``best``), when the study's
first trials keep failing with the same error (``failing``) and when it ends (``finished``).
Only the URL's shape is checked here; which hosts the server may post to is its operator's
setting (``TUNEYARD_WEBHOOK_ALLOW``), checked when the study is created and again on each post.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from tuneyard.spec.params import StrictModel

NotificationEvent = Literal["best", "failing", "finished"]
EVENTS: tuple[NotificationEvent, ...] = ("best", "failing", "finished")
MAX_URL_LENGTH = 2_000
MAX_ATTEMPTS = 20


class NotificationsSpec(StrictModel):
    webhook: str = Field(
        max_length=MAX_URL_LENGTH,
        description="an http or https URL the service posts each event to (a JSON body, "
        "signed with the study's secret in X-Tuneyard-Signature)",
    )
    on: list[NotificationEvent] = Field(
        default_factory=lambda: list(EVENTS),
        min_length=1,
        max_length=len(EVENTS),
        description="the events to post: best (a new best completed trial; a study with one "
        "objective and no constraints), failing, finished",
    )
    max_attempts: int = Field(
        default=8,
        ge=1,
        le=MAX_ATTEMPTS,
        description="posts of one event before it is given up (retried with exponential "
        "backoff while the webhook fails)",
    )

    @field_validator("webhook")
    @classmethod
    def _check_webhook(cls, v: str) -> str:
        try:
            parts = urlsplit(v)
            port = parts.port  # raises on a port that is not a number in range
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc}): {v!r}") from None
        if port == 0:
            raise ValueError(f"port 0 is no port to post to: {v!r}")
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"an http or https URL, got scheme {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError(f"the URL names no host: {v!r}")
        if parts.username is not None or parts.password is not None:
            # Credentials in the URL would be shown with the study's definition to anyone
            # who may read it; the signature is what proves a post came from this service.
            raise ValueError("no user or password in the URL; check the signature instead")
        if any(c.isspace() or ord(c) < 32 for c in v):
            raise ValueError("the URL holds whitespace or control characters")
        return v

    @field_validator("on")
    @classmethod
    def _unique(cls, v: list[NotificationEvent]) -> list[NotificationEvent]:
        for i, event in enumerate(v):
            if event in v[:i]:
                raise ValueError(f"{event!r} is named twice")
        return v
