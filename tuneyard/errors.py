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
