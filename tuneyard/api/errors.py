"""Every error becomes an RFC 9457 problem+json response, here and only here."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from tuneyard.errors import TuneyardError

log = logging.getLogger("tuneyard.api")
PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = {"Retry-After": "2"} if status == 503 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    # Discriminated unions add the tag ("float") to the path; it is not a field name.
    parts = [p for p in parts if p not in ("float", "int", "categorical")]
    return ".".join(parts) or "body"


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def install(app: FastAPI) -> None:
    @app.exception_handler(TuneyardError)
    async def _tuneyard(_: Request, exc: TuneyardError) -> JSONResponse:
        field = exc.extra.get("field")
        # The same shape as a validation error: errors[] names the field and the reason.
        errors = None
        if field is not None:
            message = exc.detail.removeprefix(f"{field}: ")
            errors = [{"field": field, "message": message, "type": "value_error"}]
        return problem(exc.status, exc.title, exc.detail, field=field, errors=errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            field = _field(err.get("loc", ()))
            if err.get("type") == "json_invalid":
                field = "body"
                msg = f"malformed JSON: {err.get('ctx', {}).get('error', 'cannot parse')}"
            elif err.get("type") == "missing" and field == "body":
                msg = "a JSON body is required"
            else:
                msg = _message(err)
            errors.append({"field": field, "message": msg, "type": err.get("type")})
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid request", detail, errors=errors)

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("integrity error: %s", exc.orig)
        return problem(409, "Conflict", "a concurrent request changed the same record; retry")

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: DBAPIError) -> JSONResponse:
        log.warning("database unavailable: %s", exc.orig)
        return problem(503, "Service unavailable", "the database is unreachable; retry shortly")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "Internal error", f"{type(exc).__name__}: the error was logged")
