"""The client retries what is safe to retry and turns problem+json into exceptions."""

from __future__ import annotations

import httpx
import pytest

from tuneyard.client import Client, InvalidRequest, NotFound, StudyFinished, Unreachable

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


def problem(status: int, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"title": "t", "status": status, "detail": detail})


def client(handler) -> Client:  # type: ignore[no-untyped-def]
    return Client("http://api", transport=httpx.MockTransport(handler), backoff=0.001)


def test_retries_503_then_succeeds_and_sends_the_same_body() -> None:
    bodies = []

    def handler(req: httpx.Request) -> httpx.Response:
        bodies.append(req.content)
        if len(bodies) < 3:
            return problem(503, "database restarting")
        return httpx.Response(
            200,
            json={
                "step": 1,
                "value": 0.5,
                "metrics": {},
                "decision": "continue",
                "reason": "ok",
                "resource_to": 3,
                "created_at": "2026-01-01T00:00:00Z",
            },
        )

    ans = client(handler).report(7, 1, 0.5)
    assert ans.decision == "continue" and len(bodies) == 3 and len(set(bodies)) == 1


def test_never_retries_a_4xx() -> None:
    calls = []

    def handler(req: httpx.Request) -> httpx.Response:
        calls.append(1)
        return problem(422, "step: must be >= 0")

    with pytest.raises(InvalidRequest) as exc:
        client(handler).report(7, -1, 0.5)
    assert "step" in exc.value.detail and len(calls) == 1


def test_next_maps_204_and_409() -> None:
    answers = iter(
        [httpx.Response(204), httpx.Response(200, json=ASSIGNMENT), problem(409, "done")]
    )
    c = client(lambda req: next(answers))
    assert c.next(1) is None
    job = c.next(1)
    assert job is not None and job.trial_id == 3 and job.kind == "new"
    with pytest.raises(StudyFinished):
        c.next(1)


def test_not_found_and_unreachable() -> None:
    with pytest.raises(NotFound):
        client(lambda req: problem(404, "no study 9")).get_study(9)

    def down(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    c = Client("http://api", transport=httpx.MockTransport(down), retries=2, backoff=0.001)
    with pytest.raises(Unreachable):
        c.health()
