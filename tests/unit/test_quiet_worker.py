"""Once running, a worker and the dispatcher say a lost dependency once, retry with a backoff,
and say once that it is back; a worker leaves a study its allowlist refuses to other workers,
without taking (or failing) a trial, and says so once."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.fake_api import SPEC, FakeApi, study_json
from tuneyard.client import Client
from tuneyard.outage import Outage
from tuneyard.worker import jobs
from tuneyard.worker.allow import ENV_VAR, Allowlist


def test_an_outage_backs_off_to_its_cap_and_is_said_twice(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.outage")
    outage = Outage("the thing", log, base=1.0, cap=5.0)
    with caplog.at_level(logging.INFO, logger="test.outage"):
        waits = [outage.failed("refused") for _ in range(5)]
        outage.ok()
        outage.ok()
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2
    assert said[0].startswith("lost the thing (refused); retrying with backoff")
    assert said[1].startswith("the thing answers again")


def flaky(fails: int, answer: dict[str, Any]) -> httpx.MockTransport:
    left = [fails]

    def handle(req: httpx.Request) -> httpx.Response:
        if left[0] > 0:
            left[0] -= 1
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, json=answer)

    return httpx.MockTransport(handle)


def test_a_lost_api_is_one_warning_not_one_per_try(caplog: pytest.LogCaptureFixture) -> None:
    jobs._OUTAGES.clear()
    transport = flaky(6, study_json())
    with (
        caplog.at_level(logging.INFO, logger="tuneyard"),
        jobs.QuietClient(
            "http://api.test:1", token="ty_x", retries=10, transport=transport, backoff=0.001
        ) as client,
    ):
        assert client.get_study(1).id == 1
        assert client.get_study(1).id == 1
    said = [r for r in caplog.records if r.name.startswith("tuneyard")]
    assert [r.levelno for r in said] == [logging.WARNING, logging.WARNING]
    assert said[0].getMessage().startswith("lost the API at http://api.test:1 (connection refused)")
    assert "answers again" in said[1].getMessage()
    assert all(r.exc_info is None for r in said), "no traceback"


@pytest.mark.parametrize("lost", ["redis", "database"])
def test_the_dispatcher_says_a_lost_redis_or_database_once(
    lost: str, caplog: pytest.LogCaptureFixture
) -> None:
    from redis import Redis
    from sqlalchemy.exc import OperationalError

    from tuneyard.service.dispatch import Dispatcher

    passes = {"n": 0}
    stop = threading.Event()
    error: Exception = (
        RedisConnectionError("Error 111 connecting to 127.0.0.1:6379.")
        if lost == "redis"
        else OperationalError("SELECT 1", {}, Exception("connection refused\nIs the server up?"))
    )

    class Failing(Dispatcher):
        def tick(self) -> list[Any]:
            passes["n"] += 1
            if passes["n"] >= 12:
                stop.set()
            if passes["n"] <= 8:
                raise error
            return []

    d = Failing(None, Redis(host="127.0.0.1"), "http://api")  # type: ignore[arg-type]
    for outage in (d.redis_outage, d.database_outage):
        outage.base = outage.cap = 0.001
    with caplog.at_level(logging.INFO, logger="tuneyard"):
        d.run(interval=0.001, stop=stop)
    said = [r for r in caplog.records if r.name == "tuneyard.dispatcher"]
    assert len(said) == 2, [r.getMessage() for r in said]
    what = "Redis at 127.0.0.1:6379" if lost == "redis" else "the database"
    why = "Error 111" if lost == "redis" else "connection refused)"
    assert said[0].getMessage().startswith(f"lost {what} ({why}")
    assert said[1].getMessage().startswith(f"{what} answers again")
    assert all(r.exc_info is None for r in said)


# -- a study the allowlist refuses ------------------------------------------------------------
@pytest.fixture
def refusing(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    monkeypatch.setenv(ENV_VAR, Allowlist.of(["examples.*"]).to_env())
    monkeypatch.delenv("TUNEYARD_POOL_ID", raising=False)
    jobs.REFUSED.clear()
    api = FakeApi()
    spec = {**SPEC, "execution": {"entrypoint": "forbidden.mod:run", "queue": "default"}}
    api.on("GET", "/studies/7", httpx.Response(200, json=study_json(7, spec=spec)))
    return api


def test_a_refused_study_is_left_alone_and_said_once(
    refusing: FakeApi, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport = httpx.MockTransport(refusing.handle)
    with (
        caplog.at_level(logging.INFO, logger="tuneyard"),
        Client("http://api.test", token="ty_x", transport=transport) as client,
    ):
        outcome = jobs._run_slot(client, None, 7, "http://api.test", "ty_x", tmp_path)
        assert outcome == "refused"
        # The next jobs of the study end at once, asking the API nothing.
        asked = len(refusing.requests)
        for _ in range(3):
            assert jobs.run_slot(7, "http://api.test") == "refused"
        assert len(refusing.requests) == asked
    paths = [(r.method, r.url.path) for r in refusing.requests]
    assert paths == [("GET", "/api/v1/studies/7")], "no trial taken, none failed"
    said = [r.getMessage() for r in caplog.records if r.name == "tuneyard.worker"]
    assert len(said) == 1
    assert said[0].startswith("study 7 (demo): not taking its jobs, they are left to other")
    assert "'forbidden.mod:run'" in said[0] and "'examples.*'" in said[0]


@pytest.mark.redis
def test_the_slots_of_one_pool_say_a_refusal_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from redis import Redis

    from tuneyard.protocol import StudyOut

    class Job:
        connection = Redis.from_url(redis_url)

    monkeypatch.setenv("TUNEYARD_POOL_ID", "box:123:1")
    study = StudyOut.model_validate(study_json(9))
    with caplog.at_level(logging.INFO, logger="tuneyard"):
        for _slot in range(3):  # each slot process has its own memory: only Redis is shared
            jobs.REFUSED.clear()
            jobs.refuse(Job(), study, "this worker does not run it")  # type: ignore[arg-type]
    said = [r for r in caplog.records if r.name == "tuneyard.worker"]
    assert len(said) == 1
    monkeypatch.setenv("TUNEYARD_POOL_ID", "box:456:2")  # another pool says it for itself
    jobs.refuse(Job(), study, "this worker does not run it")  # type: ignore[arg-type]
    assert len([r for r in caplog.records if r.name == "tuneyard.worker"]) == 2


# -- a slot's view of Redis, and what it shares with its pool --------------------------------
def test_a_slot_says_a_lost_redis_once_and_silences_rq_s_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tuneyard.worker.slots import watch_redis

    answers = [RedisConnectionError("Error 111 connecting")] * 3 + [True] * 1000

    class Connection:
        class connection_pool:
            connection_kwargs = {"host": "redis.test", "port": 6379}

        def ping(self) -> bool:
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
            if isinstance(answer, Exception):
                raise answer
            return True

    stop = threading.Event()
    with caplog.at_level(logging.INFO):
        up = watch_redis(Connection(), stop, every=0.001, cap=0.001)
        try:
            assert up.wait(10), "Redis seen again"
            # RQ's own line at each retry is dropped: the watch said it once.
            logging.getLogger("rq.worker").error(
                "Worker %s: could not connect to Redis instance: %s retrying in %d seconds...",
                "w",
                "Error 111",
                2,
            )
        finally:
            stop.set()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2, said
    assert said[0].startswith("lost Redis at redis.test:6379 (Error 111 connecting)")
    assert said[1].startswith("Redis at redis.test:6379 answers again")


def test_slot_state_holds_one_job_and_one_worker_id() -> None:
    from tuneyard.worker.slots import SlotState

    class Handle:
        trial_id, attempt = 2**40 + 5, 3

    state = SlotState()
    assert state.trial() is None and state.worker() is None
    state.set_trial(Handle())
    state.set_worker(17)
    assert state.trial() == (2**40 + 5, 3) and state.worker() == 17
    state.set_trial(None)
    state.set_worker(None)
    assert state.trial() is None and state.worker() is None


def test_a_revoked_token_is_said_once_not_once_per_job(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.fake_api import problem

    api = FakeApi()
    api.on("GET", "/studies/7", problem(401, "the token is unknown, revoked or expired"))
    real = jobs.QuietClient

    def client(url: str, token: str | None, retries: int) -> jobs.QuietClient:
        return real(url, token=token, retries=0, transport=httpx.MockTransport(api.handle))

    monkeypatch.setattr(jobs, "QuietClient", client)
    monkeypatch.setenv("TUNEYARD_API_URL", "http://api.test")
    jobs._OUTAGES.clear()
    jobs.REFUSED.clear()
    quick = Outage("the API at http://api.test for this worker's token", jobs.log, base=0.001)
    jobs._OUTAGES["token http://api.test"] = quick
    with caplog.at_level(logging.INFO, logger="tuneyard"):
        outcomes = [jobs.run_slot(7, "http://api.test") for _ in range(4)]
    assert outcomes == ["unauthorized"] * 4
    said = [r for r in caplog.records if r.name == "tuneyard.worker"]
    assert len(said) == 1 and said[0].exc_info is None
    assert (
        said[0]
        .getMessage()
        .startswith(
            "lost the API at http://api.test for this worker's token (401: the token is unknown"
        )
    )
