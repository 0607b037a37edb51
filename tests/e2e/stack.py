"""A whole deployment in real processes for end-to-end tests: an API server that can be
restarted on its port, the dispatcher and worker pools, on PostgreSQL and Redis."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.servers import free_port
from tests.helpers import API
from tuneyard.service.context import Toolkit
from tuneyard.service.tokens import Scope, TokenService
from tuneyard.settings import Settings
from tuneyard.store.db import make_engine, make_sessionmaker

ROOT = Path(__file__).resolve().parents[2]
PY = [sys.executable, "-m", "tuneyard.cli"]
# What the test pools run: the tests' objectives and the examples, and this Python.
ALLOW = ("tests.e2e.*", "examples.*")
ALLOW_COMMAND = (sys.executable,)


def wait_for(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


def make_tokens(database_url: str) -> dict[str, str]:
    """An admin token and a worker token, straight in the database (as `tuneyard token create
    --db` makes them)."""
    engine = make_engine(database_url)
    try:
        service = TokenService(Toolkit(make_sessionmaker(engine), Settings()))
        return {s: service.create(f"e2e {s}", s).secret for s in (Scope.ADMIN, Scope.WORKER)}
    finally:
        engine.dispose()


class Deployment:
    """With auth on, as in production: the test talks to the API with an admin token
    (``http``), the worker pools hold a worker token (TUNEYARD_TOKEN)."""

    def __init__(self, database_url: str, redis_url: str, tmp: Path, lease: float = 5.0) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tokens = make_tokens(database_url)
        self.env = {
            **os.environ,
            "TUNEYARD_DATABASE_URL": database_url,
            "TUNEYARD_REDIS_URL": redis_url,
            "TUNEYARD_API_URL": self.url,
            "TUNEYARD_DATA_DIR": str(tmp / "server-data"),
            "TUNEYARD_LEASE_SECONDS": str(lease),
            "TUNEYARD_AUTH": "true",
            "TUNEYARD_TOKEN": self.tokens[Scope.WORKER],
        }
        self.lease = lease
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.http = self._client()

    def _client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[Scope.ADMIN]}"}
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)

    def _start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115
        p = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs[name] = p
        return p

    def start_api(self) -> None:
        # uvicorn itself, not `tuneyard server`: the test database is already at the schema.
        uvicorn = [sys.executable, "-m", "uvicorn", "--factory", "tuneyard.api.app:create_app"]
        self._start("api", [*uvicorn, "--port", str(self.port), "--log-level", "warning"])

        def ready() -> bool:
            try:
                return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 30, "API ready")

    def stop_api(self) -> None:
        self.http.close()
        self.http = self._client()
        p = self.procs.pop("api")
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=20)

    def start_dispatcher(self) -> None:
        self._start("dispatcher", [*PY, "dispatcher", "--interval", "0.3"])

    def start_pool(
        self,
        name: str,
        queue: str,
        slots: int,
        *extra: str,
        allow: tuple[str, ...] = ALLOW,
        allow_command: tuple[str, ...] = ALLOW_COMMAND,
    ) -> subprocess.Popen[bytes]:
        data = self.tmp / name
        allowed = [a for p in allow for a in ("--allow", p)]
        allowed += [a for p in allow_command for a in ("--allow-command", p)]
        return self._start(
            name,
            [
                *PY,
                "worker",
                "--queue",
                queue,
                "--slots",
                str(slots),
                "--data-dir",
                str(data),
                "--path",
                str(ROOT),
                *allowed,
                *extra,
            ],
        )

    def create(self, spec: dict[str, Any]) -> int:
        r = self.http.post(f"{API}/studies", json=spec)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def study(self, sid: int) -> dict[str, Any]:
        return self.http.get(f"{API}/studies/{sid}").json()  # type: ignore[no-any-return]

    def trial(self, tid: int) -> dict[str, Any]:
        return self.http.get(f"{API}/trials/{tid}").json()  # type: ignore[no-any-return]

    def trials(self, sid: int) -> list[dict[str, Any]]:
        items = self.http.get(f"{API}/studies/{sid}/trials?limit=1000").json()["items"]
        return [self.trial(t["id"]) for t in items]

    def wait_finished(self, sid: int, timeout: float = 180) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            st = self.study(sid)
            return st if st["state"] != "running" else None

        try:
            return wait_for(done, timeout, f"study {sid} finished")  # type: ignore[no-any-return]
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def logs(self, tail: int = 3000) -> str:
        out = []
        for f in sorted(self.tmp.glob("*.log")):
            out.append(f"== {f.name} ==\n{f.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    def close(self) -> None:
        """Workers first (they say goodbye to the API), then the dispatcher, then the API."""
        self.http.close()  # an open keep-alive connection would hold up the server's shutdown
        order = sorted(self.procs, key=lambda n: {"api": 2, "dispatcher": 1}.get(n, 0))
        for name in order:
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@contextmanager
def running(
    database_url: str,
    redis_url: str,
    tmp: Path,
    lease: float = 5.0,
    env: dict[str, str] | None = None,
) -> Iterator[Deployment]:
    """A deployment with its API and dispatcher started (``env``: settings of its own), closed
    on the way out whatever happened."""
    d = Deployment(database_url, redis_url, tmp, lease=lease)
    d.env.update(env or {})
    try:
        d.start_api()
        d.start_dispatcher()
        yield d
    finally:
        d.close()


def assert_no_report_lost(trial: dict[str, Any]) -> None:
    """Reports at 1, 2, … up to the last one, none missing: a learning curve without holes."""
    steps = [r["step"] for r in trial["reports"]]
    assert steps == [float(i) for i in range(1, len(steps) + 1)], (trial["number"], steps)


def paused_and_resumed(trials: list[dict[str, Any]]) -> list[tuple[int, int, int]]:
    """Every resume of a paused trial, as (trial number, the paused attempt's last reported
    step, the resumed attempt's first), after checking that each resumed attempt started at
    the resource its predecessor paused at and reported ``restored_epoch`` (the epoch of the
    framework checkpoint it was loaded from) equal to it, at each of its reports."""
    resumes = []
    for t in trials:
        by_attempt: dict[int, list[dict[str, Any]]] = {}
        for r in sorted(t["reports"], key=lambda r: r["step"]):
            by_attempt.setdefault(r["attempt"], []).append(r)
        attempts = {a["number"]: a for a in t["attempt_log"]}
        numbers = sorted(by_attempt)
        assert all(r["metrics"]["restored_epoch"] == 0 for r in by_attempt[numbers[0]])
        for before, after in itertools.pairwise(numbers):
            last = int(by_attempt[before][-1]["step"])
            first = int(by_attempt[after][0]["step"])
            assert attempts[after]["resource_from"] == last, (t["number"], attempts[after])
            restored = {r["metrics"]["restored_epoch"] for r in by_attempt[after]}
            assert restored == {float(last)}, (t["number"], last, restored)
            resumes.append((t["number"], last, first))
    return resumes
