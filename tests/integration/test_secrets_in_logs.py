"""Passwords never reach the logs: a metrics scrape and a dispatcher pass that can't reach a
password-protected Redis say so, and where, without the password. On SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import threading

import pytest
from fastapi.testclient import TestClient
from redis import Redis

from tests.helpers import API, study_spec
from tuneyard.api.app import create_app
from tuneyard.service.context import Toolkit
from tuneyard.service.dispatch import Dispatcher
from tuneyard.settings import Settings
from tuneyard.store.db import make_engine, make_sessionmaker

SECRET = "s3cret"
# Nothing listens on port 1: every connection is refused.
UNREACHABLE = f"redis://:{SECRET}@127.0.0.1:1/0"


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Everything logged, as a handler would write it (message, arguments and traceback)."""
    handler = logging.Handler()
    handler.setFormatter(logging.Formatter())
    return "\n".join(handler.format(r) for r in caplog.records)


def test_a_scrape_that_cannot_reach_redis_logs_where_but_not_the_password(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with TestClient(create_app(settings.model_copy(update={"redis_url": UNREACHABLE}))) as http:
        r = http.get("/metrics")
    assert r.status_code == 200
    assert 'tuneyard_scrape_source_up{source="redis"} 0.0' in r.text
    text = _logged(caplog)
    assert "Redis at redis://:***@127.0.0.1:1/0 unreadable" in text
    assert SECRET not in text


class _OnePass(threading.Event):
    """A stop event that ends the dispatcher's loop after its first pass."""

    def wait(self, timeout: float | None = None) -> bool:
        self.set()
        return True


def test_a_dispatcher_pass_that_cannot_reach_redis_does_not_log_the_password(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(settings)) as http:
        spec = study_spec(execution={"entrypoint": "x.y:z"})
        assert http.post(f"{API}/studies", json=spec).status_code == 201
    engine = make_engine(settings.resolved_database_url(), pool_size=1, max_overflow=0)
    redis = Redis.from_url(UNREACHABLE, socket_connect_timeout=0.25, socket_timeout=0.25)
    caplog.set_level(logging.DEBUG)
    try:
        kit = Toolkit(make_sessionmaker(engine), settings)
        Dispatcher(kit, redis, "http://127.0.0.1:8765").run(stop=_OnePass())
    finally:
        redis.close()
        engine.dispose()
    text = _logged(caplog)
    assert "lost Redis at 127.0.0.1:1" in text
    assert SECRET not in text
