"""A study's webhook events, driven through HTTP on SQLite and PostgreSQL and posted by the
dispatcher's delivery pass to a real HTTP receiver on the loopback interface: a new best and
the end, signed with the study's secret; a failing study; a receiver that fails and is tried
again with backoff on a fake clock, or given up; and webhooks the server refuses to post to."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient
from redis import Redis
from sqlalchemy import select

from tests.helpers import API, drive, study_spec
from tuneyard.api.app import create_app
from tuneyard.service.context import Toolkit
from tuneyard.service.dispatch import Dispatcher
from tuneyard.service.notifications import Notifier
from tuneyard.settings import Settings
from tuneyard.store.db import make_engine, make_sessionmaker
from tuneyard.store.models import Notification, Trial


@dataclass
class Post:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.body)
        return result


@dataclass
class Receiver:
    """A webhook endpoint: records every post, answers the statuses queued in ``answers``
    (200 once they run out)."""

    url: str
    posts: list[Post] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rec.posts.append(Post(dict(self.headers.items()), body))
            status = rec.answers.pop(0) if rec.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def allowed(settings: Settings) -> Settings:
    """The test server may post to the loopback receiver (refused by default)."""
    return settings.model_copy(update={"webhook_allow": "127.0.0.1"})


@pytest.fixture
def http(allowed: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(allowed, clock=clock)) as c:
        yield c


@pytest.fixture
def notifier(allowed: Settings, clock: FakeClock) -> Iterator[Notifier]:
    engine = make_engine(allowed.resolved_database_url())
    sender = Notifier(Toolkit(make_sessionmaker(engine), allowed, clock))
    try:
        yield sender
    finally:
        sender.close()
        engine.dispose()


def create(http: TestClient, notifications: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    r = http.post(f"{API}/studies", json=study_spec(notifications=notifications, **overrides))
    assert r.status_code == 201, r.text
    study: dict[str, Any] = r.json()
    return study


def signed(post: Post, secret: str) -> bool:
    """The receiver's check, as the README shows it."""
    expected = "sha256=" + hmac.new(secret.encode(), post.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, post.headers["X-Tuneyard-Signature"])


def rows(notifier: Notifier, study_id: int) -> list[Notification]:
    with notifier.kit.reading() as s:
        return list(
            s.scalars(
                select(Notification)
                .where(Notification.study_id == study_id)
                .order_by(Notification.id)
            )
        )


def test_a_new_best_and_the_end_are_posted_signed(
    http: TestClient, receiver: Receiver, notifier: Notifier
) -> None:
    study = create(
        http,
        {"webhook": receiver.url},
        limits={"max_trials": 6, "max_concurrent": 2},
    )
    sid, secret = study["id"], study["webhook_secret"]
    assert secret and study["webhook_signed"]
    # The secret is shown once: a later read says only that there is one.
    again = http.get(f"{API}/studies/{sid}").json()
    assert again["webhook_secret"] is None and again["webhook_signed"] is True

    drive(http, sid)
    # Nothing is posted by the API itself: the events wait in the outbox.
    assert receiver.posts == []
    delivered = notifier.deliver_due(limit=100)
    assert delivered and all(d.delivered for d in delivered)
    assert notifier.deliver_due() == []  # each event once

    events = [p.event for p in receiver.posts]
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "finished" and set(kinds[:-1]) == {"best"}
    for post in receiver.posts:
        assert signed(post, secret)
        assert post.headers["X-Tuneyard-Event"] == post.event["event"]
        assert post.headers["X-Tuneyard-Delivery"] == post.event["id"]
    assert not signed(receiver.posts[0], "another secret")

    # Each best beats the one before, and the last is the study's best trial.
    bests = [e["trial"] for e in events[:-1]]
    values = [b["value"] for b in bests]
    assert values == sorted(values, reverse=True) and len(set(values)) == len(values)
    assert bests[0]["previous_best"] is None
    assert [b["previous_best"] for b in bests[1:]] == values[:-1]
    final = http.get(f"{API}/studies/{sid}").json()
    assert bests[-1]["id"] == final["best"]["id"]
    assert bests[-1]["value"] == final["best"]["value"]
    assert set(bests[-1]["params"]) == {"x", "y", "kind"}
    end = events[-1]
    assert end["study"] == {
        "id": sid,
        "name": "synthetic",
        "state": "completed",
        "reason": final["reason"],
        "metric": "loss",
        "direction": "minimize",
    }
    assert "trial" not in end
    stored = rows(notifier, sid)
    assert [r.event for r in stored] == kinds
    assert all(r.attempts == 1 and r.delivered_at is not None for r in stored)
    assert all(r.next_attempt_at is None and r.last_error is None for r in stored)


def test_only_the_events_named_are_posted(
    http: TestClient, receiver: Receiver, notifier: Notifier
) -> None:
    study = create(http, {"webhook": receiver.url, "on": ["finished"]}, limits={"max_trials": 3})
    drive(http, study["id"])
    notifier.deliver_due(limit=100)
    assert [p.event["event"] for p in receiver.posts] == ["finished"]


def test_a_failing_study_is_posted_with_its_reason(
    http: TestClient, receiver: Receiver, notifier: Notifier
) -> None:
    study = create(
        http,
        {"webhook": receiver.url},
        limits={"max_trials": 10, "fail_fast": 2},
        execution={"max_retries": 0},
    )
    sid = study["id"]
    for _ in range(2):
        job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"}).json()
        r = http.post(
            f"{API}/trials/{job['trial_id']}/fail",
            json={"attempt": job["attempt"], "error": "Traceback\nImportError: no module x"},
        )
        assert r.status_code == 200, r.text
    assert http.get(f"{API}/studies/{sid}").json()["state"] == "failing"
    notifier.deliver_due()
    [post] = receiver.posts
    assert post.event["event"] == "failing"
    assert post.event["study"]["state"] == "failing"
    assert "ImportError: no module x" in post.event["study"]["reason"]


def test_a_failing_receiver_is_tried_again_with_backoff(
    http: TestClient, receiver: Receiver, notifier: Notifier, clock: FakeClock
) -> None:
    study = create(http, {"webhook": receiver.url, "on": ["finished"]})
    sid = study["id"]
    r = http.patch(f"{API}/studies/{sid}", json={"state": "stopped"})
    assert r.status_code == 200, r.text
    receiver.answers = [500, 503]

    [first] = notifier.deliver_due()
    assert not first.delivered and first.attempt == 1 and first.error.startswith("HTTP 500")
    assert notifier.deliver_due() == []  # not due again yet
    clock.advance(9)
    assert notifier.deliver_due() == []
    clock.advance(1)  # 10 s after the first failure
    [second] = notifier.deliver_due()
    assert not second.delivered and second.attempt == 2
    clock.advance(19)
    assert notifier.deliver_due() == []
    clock.advance(1)  # the wait doubles: 20 s
    [third] = notifier.deliver_due()
    assert third.delivered and third.attempt == 3

    [row] = rows(notifier, sid)
    assert row.attempts == 3 and row.delivered_at == clock.now and row.last_error is None
    # One event, the same body and delivery id on each attempt.
    assert len(receiver.posts) == 3
    assert len({p.body for p in receiver.posts}) == 1
    assert len({p.headers["X-Tuneyard-Delivery"] for p in receiver.posts}) == 1
    assert receiver.posts[0].event["study"]["state"] == "stopped"
    clock.advance(3600)
    assert notifier.deliver_due() == []


def test_an_event_is_given_up_after_its_last_attempt(
    http: TestClient, receiver: Receiver, notifier: Notifier, clock: FakeClock
) -> None:
    study = create(http, {"webhook": receiver.url, "on": ["finished"], "max_attempts": 2})
    http.patch(f"{API}/studies/{study['id']}", json={"state": "stopped"})
    receiver.answers = [500, 500, 500]
    assert not notifier.deliver_due()[0].delivered
    clock.advance(10)
    [last] = notifier.deliver_due()
    assert last.given_up and not last.delivered
    clock.advance(86_400)
    assert notifier.deliver_due() == []
    [row] = rows(notifier, study["id"])
    assert row.attempts == 2 and row.delivered_at is None and row.next_attempt_at is None
    assert row.last_error is not None and row.last_error.startswith("HTTP 500")
    assert len(receiver.posts) == 2


@pytest.mark.parametrize(
    ("webhook", "says"),
    [
        ("ftp://hooks.example.com/x", "http or https"),
        ("hooks.example.com/x", "http or https"),
        ("http:///x", "no host"),
        ("http://hooks.example.com:99999/x", "not a URL"),
        ("https://user:pw@hooks.example.com/x", "no user or password"),
    ],
)
def test_a_webhook_that_is_no_http_url_is_refused(
    http: TestClient, webhook: str, says: str
) -> None:
    r = http.post(f"{API}/studies", json=study_spec(notifications={"webhook": webhook}))
    assert r.status_code == 422, r.text
    [error] = r.json()["errors"]
    assert error["field"] == "notifications.webhook"
    assert says in error["message"]


@pytest.mark.parametrize(
    "webhook",
    ["http://127.0.0.1:9/x", "http://localhost/x", "http://[::1]/x", "http://10.1.2.3/x"],
)
def test_the_server_posts_only_to_public_hosts_by_default(settings: Settings, webhook: str) -> None:
    with TestClient(create_app(settings)) as c:
        r = c.post(f"{API}/studies", json=study_spec(notifications={"webhook": webhook}))
    assert r.status_code == 422, r.text
    [error] = r.json()["errors"]
    assert error["field"] == "notifications.webhook"
    assert "public" in error["message"]


def test_an_allow_list_admits_only_its_hosts(allowed: Settings) -> None:
    with TestClient(create_app(allowed)) as c:
        r = c.post(
            f"{API}/studies",
            json=study_spec(notifications={"webhook": "https://hooks.example.com/x"}),
        )
    assert r.status_code == 422, r.text
    assert "TUNEYARD_WEBHOOK_ALLOW" in r.json()["errors"][0]["message"]


def test_a_trial_of_replicates_is_the_best_not_its_replicates(
    http: TestClient, receiver: Receiver, notifier: Notifier
) -> None:
    study = create(
        http,
        {"webhook": receiver.url, "on": ["best"]},
        evaluation={"seeds": 2},
        limits={"max_trials": 4, "max_concurrent": 2},
    )
    drive(http, study["id"])
    notifier.deliver_due(limit=100)
    bests = [p.event["trial"] for p in receiver.posts]
    assert bests
    with notifier.kit.reading() as s:
        parents = {t.id: t.parent_id for t in s.scalars(select(Trial))}
    assert all(parents[b["id"]] is None for b in bests)
    final = http.get(f"{API}/studies/{study['id']}").json()
    assert bests[-1]["id"] == final["best"]["id"]


def test_a_host_that_resolves_to_an_inside_address_is_not_posted_to(
    settings: Settings, clock: FakeClock
) -> None:
    """Allowed as written (a public name), refused at the post: it resolves inside."""
    with TestClient(create_app(settings, clock=clock)) as c:
        study = create(c, {"webhook": "http://hooks.example.com/x", "on": ["finished"]})
        c.patch(f"{API}/studies/{study['id']}", json={"state": "stopped"})
    engine = make_engine(settings.resolved_database_url())
    kit = Toolkit(make_sessionmaker(engine), settings, clock)
    sender = Notifier(kit, resolve=lambda host, port: ["10.0.0.7"])
    try:
        [attempt] = sender.deliver_due()
    finally:
        sender.close()
        engine.dispose()
    assert not attempt.delivered
    assert attempt.error is not None and "10.0.0.7, not a public address" in attempt.error


def test_the_dispatchers_pass_posts_the_due_events(
    http: TestClient, receiver: Receiver, allowed: Settings, clock: FakeClock, redis_url: str
) -> None:
    study = create(http, {"webhook": receiver.url, "on": ["finished"]})
    http.patch(f"{API}/studies/{study['id']}", json={"state": "stopped"})
    engine = make_engine(allowed.resolved_database_url())
    dispatcher = Dispatcher(
        Toolkit(make_sessionmaker(engine), allowed, clock), Redis.from_url(redis_url), "http://api"
    )
    try:
        dispatcher.tick()
    finally:
        dispatcher.notifier.close()
        engine.dispose()
    assert [p.event["event"] for p in receiver.posts] == ["finished"]
