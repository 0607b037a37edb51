"""What `tuneyard worker` and `tuneyard dispatcher` check before they start, and the one line
each failure prints: it names the setting to fix (flag and environment variable) and why."""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.fake_api import FakeApi, problem
from tuneyard import cli
from tuneyard.cli import startup
from tuneyard.cli.startup import StartupError
from tuneyard.client import Client


def caller(scope: str = "worker", queues: list[str] | None = None) -> dict[str, Any]:
    return {"name": "gpu box", "scope": scope, "queues": queues, "auth": True}


def check(api: FakeApi, token: str = "ty_x", **kw: Any) -> Any:
    def client(url: str, tok: str) -> Client:
        return Client(url, token=tok, retries=0, transport=httpx.MockTransport(api.handle))

    return startup.check_api("http://api:8765", token, client=client, sleep=lambda s: None, **kw)


def refused(api: FakeApi, **kw: Any) -> str:
    with pytest.raises(StartupError) as info:
        check(api, **kw)
    line = str(info.value)
    assert "\n" not in line
    return line


def test_a_worker_token_of_the_queue_passes() -> None:
    api = FakeApi()
    api.on("GET", "/whoami", httpx.Response(200, json=caller(queues=["gpu"])))
    got = check(api, scopes=startup.WORKER_SCOPES, queue="gpu")
    assert got.name == "gpu box" and got.scope == "worker"
    assert api.requests[0].headers["authorization"] == "Bearer ty_x"


def test_a_bad_token_names_the_token_setting() -> None:
    api = FakeApi()
    api.on("GET", "/whoami", problem(401, "the token is unknown, revoked or expired"))
    line = refused(api)
    assert line.startswith("--token / TUNEYARD_TOKEN: the API at http://api:8765 refused")
    assert "401" in line and "revoked" in line


def test_no_token_for_an_api_that_wants_one() -> None:
    api = FakeApi()
    api.on("GET", "/whoami", problem(401, "this operation needs an API token"))
    assert "none was given" in refused(api, token="")


@pytest.mark.parametrize("scope", ["read", "write"])
def test_a_token_without_the_worker_scope(scope: str) -> None:
    api = FakeApi()
    api.on("GET", "/whoami", httpx.Response(200, json=caller(scope)))
    line = refused(api, scopes=startup.WORKER_SCOPES)
    assert line.startswith("--token / TUNEYARD_TOKEN: the token 'gpu box' has scope " + scope)
    assert "--scope worker" in line


def test_a_token_of_other_queues_names_the_queue() -> None:
    api = FakeApi()
    api.on("GET", "/whoami", httpx.Response(200, json=caller(queues=["gpu"])))
    line = refused(api, scopes=startup.WORKER_SCOPES, queue="default")
    assert line.startswith("--queue: the token 'gpu box' serves the queues gpu, not 'default'")


def test_something_else_at_the_url_names_the_api_setting() -> None:
    line = refused(FakeApi())  # answers 404 to everything
    assert line.startswith("--api / TUNEYARD_API_URL: http://api:8765 answers, but not as")


def test_an_api_that_is_down_names_the_api_setting() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StartupError) as info:
        startup.check_api(f"http://127.0.0.1:{port}", "ty_x", patience=0)
    assert str(info.value).startswith(
        f"--api / TUNEYARD_API_URL: no API answers at http://127.0.0.1:{port} ("
    )


def test_an_api_that_keeps_answering_503_is_not_ready() -> None:
    api = FakeApi()
    api.on("GET", "/whoami", problem(503, "database unreachable"))
    line = refused(api, patience=0)
    assert line.startswith("--api / TUNEYARD_API_URL: the API at http://api:8765 is not ready")


def test_redis_missing_down_or_refusing_the_password() -> None:
    with pytest.raises(StartupError) as info:
        startup.check_redis(None)
    assert str(info.value).startswith("--redis / TUNEYARD_REDIS_URL: no Redis URL given")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StartupError) as info:
        startup.check_redis(f"redis://:s3cret@127.0.0.1:{port}/0", patience=0)
    line = str(info.value)
    assert line.startswith("--redis / TUNEYARD_REDIS_URL: no Redis answers at redis://:***@")
    assert "s3cret" not in line
    with pytest.raises(StartupError) as info:
        startup.check_redis("http://127.0.0.1:6379/0")
    assert "is not a Redis URL" in str(info.value)


@pytest.mark.redis
def test_redis_up_passes(redis_url: str) -> None:
    assert startup.check_redis(redis_url) == redis_url


def test_a_wrong_redis_password_is_said_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from redis import Redis
    from redis.exceptions import AuthenticationError

    def ping(self: Redis) -> bool:
        raise AuthenticationError("invalid username-password pair or user is disabled.")

    monkeypatch.setattr(Redis, "ping", ping)
    with pytest.raises(StartupError) as info:
        startup.check_redis("redis://:wrong@127.0.0.1:6379/0", patience=60)
    line = str(info.value)
    assert line.startswith("--redis / TUNEYARD_REDIS_URL: Redis at redis://:***@127.0.0.1")
    assert "refused the password" in line and "wrong" not in line


def test_an_unreachable_database_names_its_setting(tmp_path: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql+psycopg://u:pw@127.0.0.1:{port}/db?connect_timeout=2"
    with pytest.raises(StartupError) as info:
        startup.check_database(url)
    line = str(info.value)
    assert line.startswith("TUNEYARD_DATABASE_URL: cannot reach the database at")
    assert ":pw@" not in line
    startup.check_database(f"sqlite:///{tmp_path / 'ok.db'}")


# -- the commands ------------------------------------------------------------------------------
def run(*args: str, env: dict[str, str] | None = None) -> Any:
    result = CliRunner().invoke(cli.app, list(args), env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture
def no_pool(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    import tuneyard.worker.pool

    started: list[Any] = []
    monkeypatch.setattr(tuneyard.worker.pool, "run_pool", lambda *a, **kw: started.append(a) or 0)
    for name in ("TUNEYARD_REDIS_URL", "TUNEYARD_TOKEN", "TUNEYARD_ALLOW"):
        monkeypatch.delenv(name, raising=False)
    return started


def only_line(output: str) -> str:
    (line,) = output.strip().splitlines()
    assert "Traceback" not in output
    return line


def test_a_worker_without_a_redis_url_does_not_fall_back_to_db_0(no_pool: list[Any]) -> None:
    r = run("worker", "--api", "http://api:1", "--token", "ty_x", "--allow", "examples.*")
    assert r.exit_code == 2 and no_pool == []
    assert only_line(r.output).startswith(
        "tuneyard worker: --redis / TUNEYARD_REDIS_URL: no Redis URL given"
    )


def test_a_worker_with_an_api_that_is_down_says_so_in_one_line(no_pool: list[Any]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run(
        "worker",
        "--api",
        f"http://127.0.0.1:{port}",
        "--redis",
        "redis://127.0.0.1:1/3",
        "--allow",
        "examples.*",
        "--startup-wait",
        "0",
        env={"TUNEYARD_TOKEN": "ty_x"},
    )
    assert r.exit_code == 2 and no_pool == []
    assert only_line(r.output).startswith(
        f"tuneyard worker: --api / TUNEYARD_API_URL: no API answers at http://127.0.0.1:{port}"
    )


def test_the_dispatcher_without_redis_says_which_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TUNEYARD_REDIS_URL", raising=False)
    r = run("dispatcher", "--api", "http://api:1")
    assert r.exit_code == 2
    assert only_line(r.output).startswith("tuneyard dispatcher: --redis / TUNEYARD_REDIS_URL")
