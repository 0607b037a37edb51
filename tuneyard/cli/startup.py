"""What `tuneyard worker` and `tuneyard dispatcher` check before they start: that the API
answers at the URL given, that the token is valid with the scope the process needs, that
Redis (and for the dispatcher, the database) answers.

A check that fails raises :class:`StartupError` with one line that names the setting to fix,
flag and environment variable, and why: "--token / TUNEYARD_TOKEN: the API at http://…
refused the token (401: …)". The command prints that line and exits 2, within a few seconds:
an address that does not answer is tried again for ``patience`` seconds (a server starting
alongside), a refusal is final at once.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

from tuneyard.client import ApiError, Client, Unreachable
from tuneyard.protocol import CallerOut
from tuneyard.redact import redact_text, redact_url

API = "--api / TUNEYARD_API_URL"
TOKEN = "--token / TUNEYARD_TOKEN"
TOKEN_FILE = "--token-file / TUNEYARD_TOKEN_FILE"
REDIS = "--redis / TUNEYARD_REDIS_URL"
ALLOW = "--allow / TUNEYARD_ALLOW (or --allow-command / TUNEYARD_ALLOW_COMMAND)"
QUEUE = "--queue"
DATABASE = "TUNEYARD_DATABASE_URL"
# How long an address that does not answer (yet) is tried again, by default.
PATIENCE = 5.0
# The scopes whose tokens may run a worker.
WORKER_SCOPES = frozenset({"worker", "admin"})


class StartupError(Exception):
    """A setting to fix: ``str()`` is the one line to print."""

    def __init__(self, setting: str, why: str) -> None:
        super().__init__(f"{setting}: {why}")
        self.setting = setting


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return redact_text(lines[0] if lines else text)[:300]


def _patiently(
    attempt: Callable[[], object],
    retry: tuple[type[BaseException], ...],
    patience: float,
    sleep: Callable[[float], None],
) -> BaseException | None:
    """Run ``attempt`` until it returns (None) or ``patience`` seconds have passed, trying
    again after an exception of ``retry``; returns the last such exception."""
    deadline = time.monotonic() + patience
    delay = 0.2
    while True:
        try:
            attempt()
            return None
        except retry as exc:
            if time.monotonic() + delay > deadline:
                return exc
            sleep(delay)
            delay = min(delay * 2, 2.0)


def read_token_file(path: Path | str) -> str:
    """The API token kept in the file at ``path``, for processes that must not carry it on a
    command line or in a script (a Slurm job's script is kept by the cluster, and readable
    by its operators). StartupError, naming the file and why, unless this user owns the file,
    nobody else may read or write it (mode 0600 or 0400), and it holds one token."""
    where = Path(path)
    try:
        with open(where, "rb") as f:
            info = os.fstat(f.fileno())
            data = f.read(4096)
    except OSError as exc:
        raise StartupError(
            TOKEN_FILE, f"cannot read the token file {where} ({exc.strerror or exc})"
        ) from exc
    if not stat.S_ISREG(info.st_mode):
        raise StartupError(TOKEN_FILE, f"{where} is not a regular file")
    if info.st_mode & 0o077:
        raise StartupError(
            TOKEN_FILE,
            f"{where} has mode {stat.S_IMODE(info.st_mode):04o}: other users may read or "
            f"change the token; `chmod 600 {where}`",
        )
    if info.st_uid != os.geteuid():
        raise StartupError(
            TOKEN_FILE, f"{where} belongs to user id {info.st_uid}, not to this user"
        )
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        text = ""
    if not text or len(text.split()) != 1:
        raise StartupError(
            TOKEN_FILE,
            f"{where} does not hold one token (`tuneyard token create --scope worker > FILE`)",
        )
    return text


def check_api(
    url: str,
    token: str,
    *,
    scopes: frozenset[str] | None = None,
    queue: str | None = None,
    patience: float = PATIENCE,
    client: Callable[[str, str], Client] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> CallerOut:
    """The caller the API sees behind ``token`` (``""``: none); StartupError unless the API
    answers at ``url``, takes the token, and the token's scope is one of ``scopes`` (when
    given) and serves ``queue`` (when given)."""
    shown = redact_url(url)
    make = client or (lambda u, t: Client(u, token=t, retries=0, timeout=5.0))
    found: list[CallerOut] = []

    def ask() -> None:
        with make(url, token) as c:
            found.append(c.whoami())

    class _NotYet(Exception):
        pass

    def attempt() -> None:
        try:
            ask()
        except Unreachable as exc:
            if exc.title == "Bad request":  # not an http(s) URL: no point in trying again
                raise StartupError(API, f"{shown} is not an API address ({exc.detail})") from exc
            raise
        except ApiError as exc:
            if exc.status in (502, 503, 504):
                raise _NotYet(f"{exc.status} {exc.title}: {exc.detail}") from exc
            raise

    try:
        last = _patiently(attempt, (Unreachable, _NotYet), patience, sleep)
    except ApiError as exc:
        raise _api_refusal(exc, shown, token) from exc
    if isinstance(last, Unreachable):
        raise StartupError(API, f"no API answers at {shown} ({_first_line(last.detail)})")
    if last is not None:
        raise StartupError(API, f"the API at {shown} is not ready ({_first_line(str(last))})")
    caller = found[-1]
    if scopes is not None and caller.scope not in scopes:
        needed = " or ".join(sorted(scopes))
        raise StartupError(
            TOKEN,
            f"the token {caller.name!r} has scope {caller.scope}; this process needs {needed} "
            "(`tuneyard token create --scope worker`)",
        )
    if queue is not None and caller.queues is not None and queue not in caller.queues:
        raise StartupError(
            QUEUE,
            f"the token {caller.name!r} serves the queues {', '.join(caller.queues) or 'none'}, "
            f"not {queue!r}: pick one of those, or use a token for {queue!r} ({TOKEN})",
        )
    return caller


def _api_refusal(exc: ApiError, shown: str, token: str) -> StartupError:
    if exc.status == 401:
        if not token:
            return StartupError(TOKEN, f"the API at {shown} needs a token and none was given (401)")
        return StartupError(
            TOKEN,
            f"the API at {shown} refused the token (401: {_first_line(exc.detail)})",
        )
    if exc.status == 403:
        return StartupError(TOKEN, f"the API at {shown} refused the token (403: {exc.detail})")
    if exc.status == 404:
        return StartupError(
            API,
            f"{shown} answers, but not as a tuneyard API of this version "
            f"(GET /api/v1/whoami: 404); is it the API's base URL?",
        )
    return StartupError(API, f"the API at {shown} answered {exc.status} {exc.title}: {exc.detail}")


def check_api_answers(
    url: str, *, patience: float = PATIENCE, sleep: Callable[[float], None] = time.sleep
) -> None:
    """StartupError unless a tuneyard API answers ``/healthz`` at ``url`` (no token needed)."""
    shown = redact_url(url)

    def attempt() -> None:
        with Client(url, token="", retries=0, timeout=5.0) as c:
            c.request("GET", "/healthz")

    try:
        last = _patiently(attempt, (Unreachable,), patience, sleep)
    except ApiError as exc:
        if exc.title == "Bad request":
            raise StartupError(API, f"{shown} is not an API address ({exc.detail})") from exc
        raise StartupError(
            API, f"{shown} answers, but not as a tuneyard API (GET /healthz: {exc.status})"
        ) from exc
    if last is not None:
        detail = last.detail if isinstance(last, ApiError) else str(last)
        raise StartupError(API, f"no API answers at {shown} ({_first_line(detail)})")


def check_redis(
    url: str | None, *, patience: float = PATIENCE, sleep: Callable[[float], None] = time.sleep
) -> str:
    """``url``; StartupError unless it is given and a Redis answers there (with its
    password)."""
    from redis import Redis
    from redis.exceptions import AuthenticationError, ConnectionError, RedisError, TimeoutError

    if not url:
        raise StartupError(
            REDIS,
            "no Redis URL given: set it to the Redis that the dispatcher and every worker "
            "share, e.g. redis://:PASSWORD@host:6379/0",
        )
    shown = redact_url(url)
    try:
        conn = Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    except ValueError as exc:
        raise StartupError(REDIS, f"{shown} is not a Redis URL ({redact_text(str(exc))})") from exc

    def ping() -> None:
        try:
            conn.ping()
        except AuthenticationError as exc:  # a ConnectionError, but trying again won't help
            raise StartupError(
                REDIS, f"Redis at {shown} refused the password ({_first_line(str(exc))})"
            ) from exc

    try:
        last = _patiently(ping, (ConnectionError, TimeoutError), patience, sleep)
    except RedisError as exc:
        # Redis answers, and refuses what the URL asks of it (a database it does not have).
        raise StartupError(REDIS, f"Redis at {shown} refused: {_first_line(str(exc))}") from exc
    finally:
        conn.close()
    if last is not None:
        raise StartupError(REDIS, f"no Redis answers at {shown} ({_first_line(str(last))})")
    return url


def check_database(url: str) -> None:
    """StartupError unless the database at ``url`` answers a query."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    from tuneyard.store.db import make_engine

    shown = redact_url(url)
    try:
        engine = make_engine(url, pool_size=1, max_overflow=0)
    except (SQLAlchemyError, ValueError, ImportError) as exc:
        raise StartupError(DATABASE, f"{shown} is not a database URL ({exc})") from exc
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        why = _first_line(str(getattr(exc, "orig", None) or exc))
        raise StartupError(DATABASE, f"cannot reach the database at {shown} ({why})") from exc
    finally:
        engine.dispose()
