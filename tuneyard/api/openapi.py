"""The OpenAPI document says what the API really answers, including its errors.

Errors are mapped to problem+json in one place (``tuneyard.api.errors``), so they are declared
in one place too: after FastAPI has built the document, every error response of every
operation is ``application/problem+json`` with the ``Problem`` schema, and each operation lists
the errors any request can meet: 422 (invalid input) where it takes input, 413 where it takes
a body, 401 and 403 where it needs a token, and 503 with ``Retry-After`` (the database is
unreachable) wherever it reads or writes the database.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

from tuneyard.api.errors import PROBLEM
from tuneyard.api.schemas import Problem

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}
# Operations that never touch the database, so never answer 503 for it.
NO_DATABASE = frozenset({("/healthz", "get")})
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
DESCRIPTIONS = {
    "401": "no token, or one that is unknown or revoked",
    "403": "the token's scope does not cover this operation",
    "413": "the request body exceeds max_body_bytes",
    "422": "invalid input; the detail names the field and the limit",
    "503": "the database is unreachable; retry after Retry-After seconds",
}


def install(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = build()
        declare_errors(document)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def declare_errors(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault(
        "Problem", Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    )
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            responses: dict[str, Any] = op.setdefault("responses", {})
            takes_input = bool(op.get("parameters") or op.get("requestBody"))
            wanted = {
                "422": takes_input,
                "413": "requestBody" in op,
                "401": bool(op.get("security")),
                "403": bool(op.get("security")),
                "503": (path, method) not in NO_DATABASE,
            }
            for code, needed in wanted.items():
                if needed and code not in responses:
                    responses[code] = {"description": DESCRIPTIONS[code]}
            for code, response in responses.items():
                if not code.isdigit() or int(code) < 400:
                    continue
                response["content"] = {PROBLEM: {"schema": PROBLEM_REF}}
                if code in ("429", "503"):
                    response.setdefault("headers", {}).update(RETRY_AFTER)
    # FastAPI's own validation error shapes are never sent: errors are all Problems.
    for unused in ("HTTPValidationError", "ValidationError"):
        if unused in schemas and f'"#/components/schemas/{unused}"' not in json.dumps(document):
            schemas.pop(unused)
