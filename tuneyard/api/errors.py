"""Every error becomes an RFC 9457 problem+json response, here and only here."""

from __future__ import annotations

import inspect
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import (
    DataError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException

from tuneyard.errors import TuneyardError

log = logging.getLogger("tuneyard.api")
_STATUSES = {s.value for s in HTTPStatus}
PROBLEM = "application/problem+json"
# Seconds a client should wait before retrying while the database is unreachable.
DB_RETRY_AFTER = 2
# What a lost, restarting or saturated database raises: the request may succeed if retried.
DB_UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    retry_after: float | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update({k: v for k, v in extra.items() if v is not None})
    headers = dict(headers or {})
    if retry_after is None and status == 503:
        retry_after = DB_RETRY_AFTER
    if retry_after is not None:
        headers["Retry-After"] = str(max(0, round(retry_after)))
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers or None)


async def answer(api: FastAPI, request: Request, exc: Exception) -> Response:
    """The app's own answer to ``exc``, for the code that runs outside its routes (pure ASGI
    middleware): its exception handlers map errors in one place. An error that no handler
    maps goes up, to the 500."""
    for cls in type(exc).__mro__:
        handler = api.exception_handlers.get(cls)
        if handler is not None:
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response
            return response
    raise exc


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
        return problem(
            exc.status,
            exc.title,
            exc.detail,
            retry_after=exc.extra.get("retry_after"),
            headers=exc.extra.get("headers"),
            field=field,
            limit=exc.extra.get("limit"),
            type=getattr(exc, "type", None),
            current_attempt=exc.extra.get("attempt"),
            errors=errors,
        )

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

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        # The framework's own answers (an unknown path, a method not allowed, a body it could
        # not read) in the same problem+json shape; a body that can't be read is invalid input.
        if exc.status_code == 400:
            detail = f"body: cannot be read as JSON ({exc.detail})"
            errors = [{"field": "body", "message": detail, "type": "json_invalid"}]
            return problem(422, "Invalid request", detail, errors=errors)
        title = HTTPStatus(exc.status_code).phrase if exc.status_code in _STATUSES else "Error"
        return problem(
            exc.status_code, title, str(exc.detail), headers=dict(exc.headers or {}) or None
        )

    @app.exception_handler(OverflowError)
    @app.exception_handler(DataError)
    async def _out_of_range(_: Request, exc: Exception) -> JSONResponse:
        # A number the database can't store (an id past 64 bits): invalid input, not a crash.
        log.info("value out of range: %s", exc)
        return problem(422, "Invalid request", "a number in the request is out of range")

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        log.warning("integrity error: %s", exc.orig)
        return problem(409, "Conflict", "a concurrent request changed the same record; retry")

    @app.exception_handler(StaleDataError)
    async def _stale(_: Request, exc: StaleDataError) -> JSONResponse:
        # A state's compare-and-set matched no row: another request moved it first.
        log.warning("state changed concurrently: %s", exc)
        return problem(409, "Conflict", "a concurrent request changed the same record; retry")

    async def _db_down(_: Request, exc: Exception) -> JSONResponse:
        # Connections lost to a restart are invalidated, and pool_pre_ping replaces stale ones,
        # so the next requests after the database is back succeed without a restart of ours.
        log.warning("database unavailable: %s", getattr(exc, "orig", None) or exc)
        return problem(503, "Service unavailable", "the database is unreachable; retry shortly")

    for cls in DB_UNAVAILABLE:
        app.add_exception_handler(cls, _db_down)

    @app.exception_handler(SQLAlchemyError)
    async def _db_error(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        # A DBAPIError whose cause is a lost connection is as transient as an OperationalError.
        if getattr(exc, "connection_invalidated", False):
            return await _db_down(request, exc)
        log.exception("database error", exc_info=exc)
        return problem(500, "Internal error", f"{type(exc).__name__}: the error was logged")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "Internal error", f"{type(exc).__name__}: the error was logged")
