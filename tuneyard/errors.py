"""One error hierarchy; the API maps it to problem+json responses in one place.

The client's errors (:class:`ApiError` and its kinds in :mod:`tuneyard.client`) belong to it
too: an answer of the API raises the client class that is also the server's, so
``except tuneyard.errors.NotFound`` catches a 404 whichever side of the wire it came from."""

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


class StaleAttempt(Conflict):
    """409: the call comes from an attempt of the trial that is no longer the live one (its
    lease ran out and the trial ran again, or it was handed back): nothing was changed, and
    the worker that sent it should stop that job."""

    title = "Stale attempt"
    type = "urn:tuneyard:problem:stale-attempt"

    def __init__(self, trial_id: int, attempt: int, current: int, why: str = "") -> None:
        super().__init__(
            f"attempt {attempt} of trial {trial_id} is no longer the trial's live attempt "
            f"({why or f'attempt {current} is'}): nothing was changed; stop this job",
            attempt=current,
        )


class InvalidTransition(Conflict):
    title = "Invalid state transition"


class InvalidRequest(TuneyardError):
    status = 422
    title = "Invalid request"


class PayloadTooLarge(TuneyardError):
    """A request body over a limit; ``limit`` names the setting (413)."""

    status = 413
    title = "Payload too large"


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


class ApiError(TuneyardError):
    """An error answer of the API, as the client sees it: the fields of its problem+json body
    (``errors`` names the invalid fields). Its kinds live in :mod:`tuneyard.client`."""

    def __init__(
        self, status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        # Not TuneyardError.__init__: the message leads with the status the server answered.
        Exception.__init__(self, f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.extra = {}
        self.errors: list[dict[str, Any]] = errors or []


class Unreachable(ApiError, Unavailable):
    """No answer from the server after every retry (status 0)."""
