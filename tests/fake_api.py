"""A fake tuneyard API for the client and the CLI: answers as the server would send them
(problem+json included), and a route table of canned answers behind the client's transport."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from typer.testing import CliRunner

from tuneyard import cli

Handler = Callable[[httpx.Request], httpx.Response]
NOW = "2026-01-01T00:00:00Z"
SPEC: dict[str, Any] = {
    "name": "demo",
    "metric": "loss",
    "space": {
        "lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
        "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
    },
}
ASSIGNMENT = {
    "trial_id": 3,
    "number": 2,
    "params": {"x": 0.5},
    "resource_from": 0,
    "resource_to": 1,
    "checkpoint": None,
    "kind": "new",
    "reason": "new trial",
}


def trial_json(number: int = 0, **over: Any) -> dict[str, Any]:
    """A TrialSummary as the server sends it."""
    return {
        "id": 100 + number,
        "study_id": 1,
        "number": number,
        "state": "completed",
        "params": {"lr": 0.01, "opt": "adam"},
        "value": 0.25,
        "resource": 27.0,
        "bracket": 0,
        "rung": 3,
        "attempts": 1,
        "reason": "reached max_resource",
        "created_at": NOW,
        "updated_at": NOW,
        **over,
    }


def study_json(study_id: int = 1, **over: Any) -> dict[str, Any]:
    """A StudyOut as the server sends it."""
    return {
        "id": study_id,
        "name": "demo",
        "state": "running",
        "spec": SPEC,
        "created_at": NOW,
        "updated_at": NOW,
        "trials_started": 5,
        "counts": {"running": 2, "completed": 3},
        "best": trial_json(),
        **over,
    }


def report_json(**over: Any) -> dict[str, Any]:
    return {
        "step": 1,
        "value": 0.5,
        "metrics": {},
        "decision": "continue",
        "reason": "ok",
        "resource_to": 3,
        "created_at": NOW,
        **over,
    }


def problem(status: int, detail: str, **extra: Any) -> httpx.Response:
    body = {"type": "about:blank", "title": "Oops", "status": status, "detail": detail, **extra}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json"})


Route = Callable[[httpx.Request], httpx.Response]


class FakeApi:
    """Canned answers by (method, path); records the requests and the URL asked for."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        self.requests: list[httpx.Request] = []
        self.urls: list[str] = []

    def on(self, method: str, path: str, answer: Route | httpx.Response) -> None:
        self.routes[(method, "/api/v1" + path)] = (
            answer if callable(answer) else (lambda req, a=answer: a)
        )

    def handle(self, req: httpx.Request) -> httpx.Response:
        self.requests.append(req)
        route = self.routes.get((req.method, req.url.path))
        if route is None:
            return problem(404, f"no route {req.method} {req.url.path}")
        return route(req)


def run(*args: str) -> Any:
    result = CliRunner().invoke(cli.app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result
