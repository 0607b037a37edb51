"""One error hierarchy; the API maps it to problem+json responses in one place."""

from __future__ import annotations

from typing import Any


class TuneyardError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(TuneyardError):
    status = 404
    title = "Not found"


class Conflict(TuneyardError):
    status = 409
    title = "Conflict"


class StudyFinished(Conflict):
    title = "Study finished"


class InvalidTransition(Conflict):
    title = "Invalid state transition"


class InvalidSpec(TuneyardError):
    status = 422
    title = "Invalid study definition"


class InvalidRequest(TuneyardError):
    status = 422
    title = "Invalid request"


class Unavailable(TuneyardError):
    status = 503
    title = "Service unavailable"


class Unauthorized(TuneyardError):
    """No credentials, or credentials that name no valid token (401)."""

    status = 401
    title = "Unauthorized"


class Forbidden(TuneyardError):
    """A valid token whose scope does not cover the request (403)."""

    status = 403
    title = "Forbidden"


class TooManyRequests(TuneyardError):
    """A rate limit; ``retry_after`` (seconds) goes out as the Retry-After header (429)."""

    status = 429
    title = "Too many requests"
