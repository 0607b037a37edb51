"""The client retries what is safe to retry and turns problem+json into exceptions."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.fake_api import (
    ASSIGNMENT,
    NOW,
    SPEC,
    Handler,
    problem,
    report_json,
    study_json,
    trial_json,
)
from tuneyard.client import (
    ApiError,
    Client,
    Conflict,
    InvalidRequest,
    NotFound,
    StaleAttempt,
    StudyFinished,
    Unreachable,
    retry_after_seconds,
)
from tuneyard.spec import StudySpec


class Sleeps(list[float]):
    """The waits a client asked for, instead of sleeping."""


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    waits = Sleeps()
    monkeypatch.setattr(Client, "_sleep", lambda self, s: waits.append(s))
    return waits


def client(handler: Handler, **kw: Any) -> Client:
    return Client("http://api", transport=httpx.MockTransport(handler), **kw)


def answers(*responses: httpx.Response) -> tuple[Handler, list[httpx.Request]]:
    """A handler that gives the responses in turn, and the requests it saw."""
    seen: list[httpx.Request] = []
    it: Iterator[httpx.Response] = iter(responses)

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        return next(it)

    return handler, seen


# -- retries -----------------------------------------------------------------------------------
def test_retries_503_then_succeeds_with_the_same_body_and_growing_waits(sleeps: Sleeps) -> None:
    handler, seen = answers(
        problem(503, "database restarting"),
        httpx.Response(502, text="bad gateway"),
        httpx.Response(200, json=report_json()),
    )
    ans = client(handler, backoff=1.0).report(7, 1, 0.5, attempt=1)
    assert ans.decision == "continue"
    assert len(seen) == 3 and len({r.content for r in seen}) == 1
    assert seen[0].url.path == "/api/v1/trials/7/reports"
    assert json.loads(seen[0].content) == {"attempt": 1, "step": 1, "value": 0.5, "metrics": {}}
    # Exponential with jitter in [0.5, 1] of the nominal wait.
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 2.0


def test_honours_retry_after_but_caps_it(sleeps: Sleeps) -> None:
    handler, _ = answers(
        httpx.Response(503, headers={"Retry-After": "3"}),
        httpx.Response(503, headers={"Retry-After": "3600"}),
        httpx.Response(200, json=study_json()),
    )
    client(handler, backoff=0.01, max_backoff=10).get_study(1)
    assert sleeps[0] >= 3 and sleeps[1] == 10


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("2") == 2
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30
    assert retry_after_seconds("Wed, 31 Dec 2025 00:00:00 GMT", now) == 0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_gives_up_after_the_retries_with_the_last_error(sleeps: Sleeps) -> None:
    handler, seen = answers(*[problem(503, "still down")] * 4)
    with pytest.raises(ApiError) as exc:
        client(handler, retries=3).get_study(1)
    assert exc.value.status == 503 and exc.value.detail == "still down"
    assert len(seen) == 4 and len(sleeps) == 3


def test_a_429_is_retried_after_its_retry_after(sleeps: Sleeps) -> None:
    handler, seen = answers(
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.Response(200, json=study_json()),
    )
    client(handler, backoff=0.01).get_study(1)
    assert len(seen) == 2 and sleeps[0] >= 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 413, 422, 500])
def test_never_retries_a_4xx_or_a_500(sleeps: Sleeps, status: int) -> None:
    handler, seen = answers(problem(status, "no"))
    with pytest.raises(ApiError) as exc:
        client(handler).get_study(1)
    assert exc.value.status == status and len(seen) == 1 and not sleeps


def test_connection_errors_are_retried_then_reported_as_unreachable(sleeps: Sleeps) -> None:
    calls = []

    def flaky(req: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) < 3:
            raise httpx.ConnectError("refused", request=req)
        return httpx.Response(200, json={"status": "ready"})

    assert client(flaky).health() == {"status": "ready"}
    assert len(calls) == 3 and len(sleeps) == 2

    def down(req: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=req)

    with pytest.raises(Unreachable) as exc:
        client(down, retries=2).health()
    assert exc.value.status == 0 and "http://api" in exc.value.detail and len(sleeps) == 4


# -- errors ------------------------------------------------------------------------------------
def test_problem_json_becomes_typed_errors() -> None:
    errors = [{"field": "step", "message": "must be >= 0", "type": "greater_than_equal"}]
    handler, _ = answers(problem(422, "step: must be >= 0", errors=errors))
    with pytest.raises(InvalidRequest) as exc:
        client(handler).report(7, -1, 0.5, attempt=1)
    e = exc.value
    assert (e.status, e.title, e.detail, e.errors) == (422, "Oops", "step: must be >= 0", errors)
    assert "422" in str(e)

    with pytest.raises(NotFound):
        client(lambda req: problem(404, "no study 9")).get_study(9)
    with pytest.raises(Conflict) as conflict:
        client(lambda req: problem(409, "study 1 is stopped")).resume_study(1)
    assert not isinstance(conflict.value, StudyFinished)


def test_errors_without_a_problem_body_still_say_what_happened() -> None:
    html = httpx.Response(502, text="<html>bad gateway</html>")
    with pytest.raises(ApiError) as exc:
        client(lambda req: html, retries=0).get_study(1)
    assert exc.value.status == 502 and "bad gateway" in exc.value.detail

    fastapi_default = httpx.Response(422, json={"detail": [{"loc": ["x"], "msg": "bad x"}]})
    with pytest.raises(InvalidRequest) as exc:
        client(lambda req: fastapi_default).get_study(1)
    assert exc.value.detail == "bad x" and exc.value.errors[0]["loc"] == ["x"]


def test_an_answer_of_the_wrong_shape_is_an_api_error() -> None:
    with pytest.raises(ApiError) as exc:
        client(lambda req: httpx.Response(200, text="<html>hello</html>")).get_study(1)
    assert "not a StudyOut" in exc.value.detail
    with pytest.raises(ApiError):
        client(lambda req: httpx.Response(200, json={"id": 1})).get_study(1)


# -- ask / tell --------------------------------------------------------------------------------
def test_next_maps_204_to_none_and_409_to_study_finished() -> None:
    handler, seen = answers(
        httpx.Response(204), httpx.Response(200, json=ASSIGNMENT), problem(409, "done")
    )
    c = client(handler)
    assert c.next(1, worker="gpu-0") is None
    job = c.next(1)
    assert job is not None and job.trial_id == 3 and job.kind == "new"
    with pytest.raises(StudyFinished) as exc:
        c.next(1)
    assert isinstance(exc.value, Conflict) and exc.value.detail == "done"
    assert json.loads(seen[0].content) == {"worker": "gpu-0"}
    assert seen[0].method == "POST" and seen[0].url.path == "/api/v1/studies/1/next"


def test_nan_and_infinite_metrics_go_out_for_the_server_to_record() -> None:
    handler, seen = answers(httpx.Response(200, json=report_json(decision="stop")))
    ans = client(handler).report(7, 2, float("nan"), attempt=1, loss=float("inf"))
    assert ans.decision == "stop"
    body = json.loads(seen[0].content)  # Python's json reads NaN/Infinity, as the server does
    assert math.isnan(body["value"]) and body["metrics"] == {"loss": math.inf}


def test_trial_transitions_and_heartbeat() -> None:
    handler, seen = answers(
        httpx.Response(200, json=trial_json(state="paused")),
        httpx.Response(200, json=trial_json()),
        httpx.Response(200, json=trial_json(state="failed")),
        httpx.Response(200, json={"lease_expires_at": "2026-01-01T00:01:00Z"}),
    )
    c = client(handler)
    assert c.pause(100, checkpoint="/ck/100", attempt=2).state == "paused"
    assert c.complete(100, 0.2, {"acc": 0.9}, attempt=2).state == "completed"
    assert c.fail(100, "Traceback ...", attempt=2).state == "failed"
    assert c.heartbeat(100, attempt=2) == datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    paths = [r.url.path.rsplit("/", 1)[-1] for r in seen]
    assert paths == ["pause", "complete", "fail", "heartbeat"]
    assert json.loads(seen[0].content) == {"attempt": 2, "checkpoint": "/ck/100"}
    assert json.loads(seen[1].content) == {
        "attempt": 2,
        "value": 0.2,
        "metrics": {"acc": 0.9},
        "checkpoint": None,
    }
    assert json.loads(seen[2].content) == {"attempt": 2, "error": "Traceback ...", "output": None}
    assert json.loads(seen[3].content) == {"attempt": 2}


def test_a_stale_attempt_answer_is_its_own_error() -> None:
    """A 409 of type stale-attempt tells the worker to stop its job; another 409 does not."""
    stale = httpx.Response(
        409,
        json={
            "type": "urn:tuneyard:problem:stale-attempt",
            "title": "Stale attempt",
            "status": 409,
            "detail": "attempt 1 of trial 7 is no longer the trial's live attempt",
        },
    )
    handler, _ = answers(stale, problem(409, "trial 7 is paused"))
    c = client(handler)
    with pytest.raises(StaleAttempt) as exc:
        c.report(7, 1, 0.5, attempt=1)
    assert "no longer" in exc.value.detail
    with pytest.raises(Conflict) as other:
        c.report(7, 1, 0.5, attempt=1)
    assert not isinstance(other.value, StaleAttempt)


# -- studies and trials --------------------------------------------------------------------------
def test_create_study_sends_the_spec_and_the_token() -> None:
    handler, seen = answers(
        httpx.Response(201, json=study_json()), httpx.Response(201, json=study_json())
    )
    c = client(handler, token="s3cret")
    out = c.create_study(StudySpec.model_validate(SPEC))
    assert out.id == 1 and out.spec.name == "demo" and out.best is not None
    sent = json.loads(seen[0].content)
    assert StudySpec.model_validate(sent) == StudySpec.model_validate(SPEC)
    assert seen[0].headers["authorization"] == "Bearer s3cret"
    c.create_study({"name": "raw", "space": {}})  # a mapping goes as is: the server judges it
    assert json.loads(seen[1].content) == {"name": "raw", "space": {}}


def test_study_state_changes_and_delete() -> None:
    handler, seen = answers(
        httpx.Response(200, json=study_json(state="paused")),
        httpx.Response(200, json=study_json()),
        httpx.Response(200, json=study_json(state="stopped")),
        httpx.Response(204),
    )
    with client(handler) as c:
        assert c.pause_study(1).state == "paused"
        assert c.resume_study(1).state == "running"
        assert c.stop_study(1).state == "stopped"
        assert c.delete_study(1) is None
    assert [json.loads(r.content)["state"] for r in seen[:3]] == ["paused", "running", "stopped"]
    assert [r.method for r in seen] == ["PATCH"] * 3 + ["DELETE"]
    assert c.http.is_closed


def test_iterators_follow_the_cursor() -> None:
    handler, seen = answers(
        httpx.Response(200, json={"items": [trial_json(0), trial_json(1)], "next_cursor": "c1"}),
        httpx.Response(200, json={"items": [trial_json(2)], "next_cursor": None}),
        httpx.Response(200, json={"items": [study_json(2)], "next_cursor": "s1"}),
        httpx.Response(200, json={"items": [study_json(1)], "next_cursor": None}),
    )
    c = client(handler)
    trials = list(c.iter_trials(1, state="completed", order="-value", page_size=2))
    assert [t.number for t in trials] == [0, 1, 2]
    assert dict(seen[0].url.params) == {"order": "-value", "limit": "2", "state": "completed"}
    assert seen[1].url.params["cursor"] == "c1"
    assert [s.id for s in c.iter_studies(page_size=1)] == [2, 1]
    assert seen[3].url.params["cursor"] == "s1" and seen[3].url.path == "/api/v1/studies"


def test_get_trial_parses_the_full_record() -> None:
    full = {
        **trial_json(state="paused"),
        "resource_from": 0,
        "resource_to": 3,
        "checkpoint": "/ck",
        "error": None,
        "reports": [report_json(decision="pause")],
        "decisions": [
            {"kind": "pause", "reason": "rung 0", "rung": 0, "resource": 1, "created_at": NOW}
        ],
        "attempt_log": [],
    }
    t = client(lambda req: httpx.Response(200, json=full)).get_trial(100)
    assert t.checkpoint == "/ck" and t.decisions[0].reason == "rung 0"


def test_base_url_defaults_to_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEYARD_API_URL", "http://elsewhere:9000/")
    c = Client()
    assert c.base_url == "http://elsewhere:9000"
    c.close()
