"""A typed, synchronous client of the tuneyard HTTP API, used by workers, the CLI and notebooks.

Every call of the API is idempotent by design (reports on (trial, step), transitions
compare-and-set), so the client retries connection errors, timeouts and 429/502/503/504
answers with exponential backoff and jitter, honouring ``Retry-After``; another 4xx is never
retried.
Error answers (RFC 9457 problem+json) become :class:`ApiError` subclasses.

    with Client("http://127.0.0.1:8765") as c:
        study = c.create_study(spec)
        job = c.next(study.id)
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from tuneyard import errors
from tuneyard.errors import ApiError, Unreachable
from tuneyard.protocol import (
    Assignment,
    CallerOut,
    CheckpointOut,
    CodeOut,
    ImportOut,
    LineageOut,
    LogChunkOut,
    NewTokenOut,
    ParetoHistory,
    ParetoOut,
    PopulationOut,
    ReportOut,
    StudyOut,
    StudyPage,
    TokenOut,
    TrialOut,
    TrialPage,
    TrialSummary,
    WorkerOut,
)
from tuneyard.redact import redact_url
from tuneyard.settings import Settings
from tuneyard.spec import StudySpec
from tuneyard.states import StudyState

API = "/api/v1"
# 429 too: the server's rate limit for a trial's reports says when to come back.
RETRY_STATUS = frozenset({429, 502, 503, 504})
M = TypeVar("M", bound=BaseModel)


class NotFound(ApiError, errors.NotFound):
    """404: no such study or trial."""


class Conflict(ApiError, errors.Conflict):
    """409: the request conflicts with the current state (e.g. a transition not allowed)."""


class StudyFinished(Conflict, errors.StudyFinished):
    """409 from ``next``: the study is finished or stopped, there is no more work."""


class StaleAttempt(Conflict, errors.StaleAttempt):
    """409: the call's attempt is no longer the trial's live one (its lease ran out and the
    trial was queued again or runs elsewhere). Nothing was changed: stop the job."""


STALE_ATTEMPT = "urn:tuneyard:problem:stale-attempt"


class InvalidRequest(ApiError, errors.InvalidRequest):
    """400 or 422: invalid input; ``errors`` names the fields."""


class Unauthorized(ApiError, errors.Unauthorized):
    """401: no token, or one the server does not know (revoked, mistyped)."""


class Forbidden(ApiError, errors.Forbidden):
    """403: the token's scope does not cover the request."""


def _error(resp: httpx.Response) -> ApiError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    errors = body.get("errors")
    detail = body.get("detail")
    if isinstance(detail, list) and errors is None:
        # FastAPI's own validation shape, from a server without our problem+json handler.
        errors, detail = detail, "; ".join(str(e.get("msg", e)) for e in detail if e)
    title = str(body.get("title") or resp.reason_phrase or "Error")
    detail = str(detail or resp.text[:500] or title)
    cls: type[ApiError] = ApiError
    if resp.status_code == 404:
        cls = NotFound
    elif resp.status_code == 409:
        cls = StaleAttempt if body.get("type") == STALE_ATTEMPT else Conflict
    elif resp.status_code in (400, 422):
        cls = InvalidRequest
    elif resp.status_code == 401:
        cls = Unauthorized
    elif resp.status_code == 403:
        cls = Forbidden
    return cls(resp.status_code, title, detail, errors if isinstance(errors, list) else None)


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Client:
    """The API at ``base_url`` (default: ``TUNEYARD_API_URL`` or the local server), as the
    holder of ``token`` (default: ``TUNEYARD_TOKEN``; pass ``""`` for none).

    ``retries`` is the number of retries after the first attempt; waits start at ``backoff``
    seconds, double each time and never exceed ``max_backoff`` (nor does an honoured
    ``Retry-After``). ``transport`` replaces the network, e.g. ``httpx.MockTransport``."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        transport: httpx.BaseTransport | None = None,
        *,
        backoff: float = 0.2,
        max_backoff: float = 30.0,
    ) -> None:
        if not base_url or token is None:
            settings = Settings()
            base_url = base_url or settings.api_url
            # The token: given, else TUNEYARD_TOKEN (a server with auth off needs none).
            token = settings.token if token is None else token
        self.base_url = base_url.rstrip("/")
        # For messages and logs: the address without any password it may carry.
        self.shown_url = redact_url(self.base_url)
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        headers = {"Accept": "application/json, application/problem+json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=headers, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def __repr__(self) -> str:
        return f"Client({self.shown_url!r})"

    # -- transport -------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Any = None,
        upload: Path | None = None,
    ) -> httpx.Response:
        """Send one call, retrying what is safe to retry; raise :class:`ApiError` on >= 400.

        ``upload`` streams a file as the body (opened again for each try)."""
        content: Any = None
        headers: dict[str, str] = {}
        if upload is not None:
            headers["Content-Type"] = "application/octet-stream"
        if json_body is not None:
            # Python's encoder, not httpx's: a NaN or infinite metric is data the server
            # records (the trial fails with the reason), so it must go out as NaN/Infinity.
            content = json.dumps(json_body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                if upload is not None:
                    with open(upload, "rb") as body:
                        resp = self.http.request(
                            method, path, content=_chunks(body), params=params, headers=headers
                        )
                else:
                    resp = self.http.request(
                        method, path, content=content, params=params, headers=headers
                    )
            except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
                raise Unreachable(0, "Bad request", f"{self.shown_url}: {exc}") from exc
            except httpx.TransportError as exc:
                if last:
                    raise Unreachable(0, "Unreachable", f"{self.shown_url}: {exc}") from exc
                self._wait(attempt, None, str(exc) or type(exc).__name__)
                continue
            if resp.status_code in RETRY_STATUS and not last:
                self._wait(
                    attempt,
                    retry_after_seconds(resp.headers.get("Retry-After")),
                    f"{resp.status_code} {resp.reason_phrase}",
                )
                continue
            if resp.status_code >= 400:
                raise _error(resp)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, attempt: int, retry_after: float | None, why: str = "") -> None:
        """Sleep before retry ``attempt`` + 1; ``why`` is what failed (an error, a status)."""
        delay = min(self.max_backoff, self.backoff * 2**attempt)
        delay *= 0.5 + random.random() / 2  # jitter: retrying workers don't arrive together
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        self._sleep(delay)

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def _call(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        json_body: Any = None,
        params: Any = None,
    ) -> M:
        resp = self.request(method, path, json_body=json_body, params=params)
        return _parse(resp, model, f"{method} {path}")

    # -- studies ---------------------------------------------------------------------------
    def create_study(self, spec: StudySpec | Mapping[str, Any]) -> StudyOut:
        """Create a study; a Mapping is sent as is and validated by the server."""
        body = spec.model_dump(mode="json") if isinstance(spec, StudySpec) else dict(spec)
        return self._call("POST", f"{API}/studies", StudyOut, json_body=body)

    def list_studies(self, limit: int = 50, cursor: str | None = None) -> StudyPage:
        """One page of studies, newest first; pass ``next_cursor`` back for the next."""
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return self._call("GET", f"{API}/studies", StudyPage, params=params)

    def iter_studies(self, page_size: int = 100) -> Iterator[StudyOut]:
        """Every study, fetching pages as needed."""
        cursor = None
        while True:
            page = self.list_studies(page_size, cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get_study(self, study_id: int) -> StudyOut:
        return self._call("GET", f"{API}/studies/{study_id}", StudyOut)

    def set_study_state(self, study_id: int, state: str) -> StudyOut:
        """``running``, ``paused`` or ``stopped``; :class:`Conflict` if not allowed now."""
        return self._call(
            "PATCH", f"{API}/studies/{study_id}", StudyOut, json_body={"state": state}
        )

    def pause_study(self, study_id: int) -> StudyOut:
        return self.set_study_state(study_id, StudyState.PAUSED)

    def resume_study(self, study_id: int) -> StudyOut:
        return self.set_study_state(study_id, StudyState.RUNNING)

    def stop_study(self, study_id: int) -> StudyOut:
        return self.set_study_state(study_id, StudyState.STOPPED)

    def delete_study(self, study_id: int) -> None:
        self.request("DELETE", f"{API}/studies/{study_id}")

    # -- trials ----------------------------------------------------------------------------
    def list_trials(
        self,
        study_id: int,
        state: str | None = None,
        order: str = "number",
        limit: int = 100,
        cursor: str | None = None,
    ) -> TrialPage:
        """One page of a study's trials; ``order``: number, -number, value or -value."""
        params: dict[str, Any] = {"order": order, "limit": limit}
        if state:
            params["state"] = state
        if cursor:
            params["cursor"] = cursor
        return self._call("GET", f"{API}/studies/{study_id}/trials", TrialPage, params=params)

    def iter_trials(
        self,
        study_id: int,
        state: str | None = None,
        order: str = "number",
        page_size: int = 500,
    ) -> Iterator[TrialSummary]:
        """Every trial of a study (optionally in one state), fetching pages as needed."""
        cursor = None
        while True:
            page = self.list_trials(study_id, state, order, page_size, cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get_trial(self, trial_id: int) -> TrialOut:
        """A trial with its reports, decisions and attempts."""
        return self._call("GET", f"{API}/trials/{trial_id}", TrialOut)

    def import_trials(self, study_id: int, trials: list[dict[str, Any]]) -> ImportOut:
        """Store trials that ran elsewhere as the study's next trials."""
        return self._call(
            "POST",
            f"{API}/studies/{study_id}/trials/import",
            ImportOut,
            json_body={"trials": trials},
        )

    def get_lineage(self, trial_id: int) -> LineageOut:
        """A pbt or pb2 member's steps at every boundary and its replayable schedule."""
        return self._call("GET", f"{API}/trials/{trial_id}/lineage", LineageOut)

    def get_schedule(self, study_id: int) -> LineageOut:
        """A pbt or pb2 study's best member's lineage, with its replayable schedule."""
        return self._call("GET", f"{API}/studies/{study_id}/schedule", LineageOut)

    def get_population(self, study_id: int) -> PopulationOut:
        """A pbt or pb2 study's exploits and its best member's lineage."""
        return self._call("GET", f"{API}/studies/{study_id}/population", PopulationOut)

    def get_pareto(self, study_id: int, resource: float | None = None) -> ParetoOut:
        """The feasible non-dominated completed trials, or a rung's front at ``resource``."""
        params = {"resource": resource} if resource is not None else None
        return self._call("GET", f"{API}/studies/{study_id}/pareto", ParetoOut, params=params)

    def pareto_history(self, study_id: int) -> ParetoHistory:
        """The front's hypervolume after each completion that changed it."""
        return self._call("GET", f"{API}/studies/{study_id}/pareto/history", ParetoHistory)

    # -- ask / tell ------------------------------------------------------------------------
    def next(
        self,
        study_id: int,
        worker: str | None = None,
        gpus: Sequence[Mapping[str, Any]] | None = None,
    ) -> Assignment | None:
        """The next piece of work: a new trial or a promoted one to resume. ``gpus``: the
        GPUs the job will run on (``{"index": "0", "name": ...}``), none on a CPU slot.

        None when nothing can run right now (all slots busy, or waiting on a rung);
        raises :class:`StudyFinished` when the study is finished or stopped."""
        body: dict[str, Any] = {"worker": worker}
        if gpus:
            body["gpus"] = [dict(g) for g in gpus]
        try:
            resp = self.request("POST", f"{API}/studies/{study_id}/next", json_body=body)
        except Conflict as exc:
            raise StudyFinished(exc.status, exc.title, exc.detail, exc.errors) from exc
        if resp.status_code == 204:
            return None
        return _parse(resp, Assignment, f"POST {API}/studies/{study_id}/next")

    # Every call about a running trial names the attempt ``next`` handed out (``attempt``);
    # one of an attempt that is no longer the trial's live one raises :class:`StaleAttempt`.
    def report(
        self,
        trial_id: int,
        step: float,
        value: float | None = None,
        *,
        attempt: int,
        **metrics: float | None,
    ) -> ReportOut:
        """An intermediate result; the answer's ``decision`` says what to do next.

        NaN and infinite values are sent as such (the server fails the trial, with the
        reason). Repeating a step returns the decision stored the first time."""
        body = {"attempt": attempt, "step": step, "value": value, "metrics": metrics}
        return self._call("POST", f"{API}/trials/{trial_id}/reports", ReportOut, json_body=body)

    def pause(self, trial_id: int, checkpoint: str | None = None, *, attempt: int) -> TrialSummary:
        """Acknowledge a ``pause`` decision once the checkpoint is saved."""
        return self._call(
            "POST",
            f"{API}/trials/{trial_id}/pause",
            TrialSummary,
            json_body={"attempt": attempt, "checkpoint": checkpoint},
        )

    def complete(
        self,
        trial_id: int,
        value: float | None = None,
        metrics: Mapping[str, float | None] | None = None,
        checkpoint: str | None = None,
        *,
        attempt: int,
    ) -> TrialSummary:
        """The objective finished; ``value`` (or the latest report's) is the result."""
        body = {
            "attempt": attempt,
            "value": value,
            "metrics": dict(metrics or {}),
            "checkpoint": checkpoint,
        }
        return self._call("POST", f"{API}/trials/{trial_id}/complete", TrialSummary, json_body=body)

    def checkpoint(
        self, trial_id: int, checkpoint: str, step: float, *, attempt: int
    ) -> TrialSummary:
        """Tell the service the running trial's latest checkpoint, saved at the reported
        ``step``: should this attempt end unfinished, the trial resumes from there."""
        body = {"attempt": attempt, "checkpoint": checkpoint, "step": step}
        return self._call(
            "POST", f"{API}/trials/{trial_id}/checkpoint", TrialSummary, json_body=body
        )

    def download_model(self, trial_id: int, dest: Path) -> None:
        """Write a completed trial's model (its final checkpoint, a tar.gz) to ``dest``."""
        self._download(f"{API}/trials/{trial_id}/model", dest)

    def fail(
        self, trial_id: int, error: str, output: str | None = None, *, attempt: int
    ) -> TrialSummary:
        """The objective crashed: ``error`` says what went wrong (a message or a traceback;
        its summary becomes the trial's reason), ``output`` is the end of what it printed."""
        body = {"attempt": attempt, "error": error, "output": output or None}
        return self._call("POST", f"{API}/trials/{trial_id}/fail", TrialSummary, json_body=body)

    def heartbeat(self, trial_id: int, *, attempt: int) -> datetime | None:
        """Extend a running trial's lease; returns the new expiry."""
        data = self.request(
            "POST", f"{API}/trials/{trial_id}/heartbeat", json_body={"attempt": attempt}
        ).json()
        when = data.get("lease_expires_at") if isinstance(data, dict) else None
        return datetime.fromisoformat(when) if isinstance(when, str) else None

    def release(
        self,
        trial_id: int,
        reason: str,
        checkpoint: str | None = None,
        step: float | None = None,
        *,
        attempt: int,
    ) -> TrialSummary:
        """Hand a running trial back unfinished (this worker is stopping); it runs again
        elsewhere, from ``checkpoint`` saved at ``step`` when given."""
        body = {"attempt": attempt, "reason": reason, "checkpoint": checkpoint, "step": step}
        return self._call("POST", f"{API}/trials/{trial_id}/release", TrialSummary, json_body=body)

    def append_log(self, trial_id: int, attempt: int, offset: int, text: str) -> int:
        """Ship a chunk of an attempt's output; returns the bytes the trial's log holds."""
        body = {"attempt": attempt, "offset": offset, "text": text}
        return self._call(
            "POST", f"{API}/trials/{trial_id}/log", LogChunkOut, json_body=body
        ).log_bytes

    def read_log(self, trial_id: int, attempt: int | None = None) -> str:
        """The objective's whole output, every attempt (or one)."""
        params = {"attempt": attempt} if attempt is not None else None
        return self.request("GET", f"{API}/trials/{trial_id}/log", params=params).text

    def upload_checkpoint(self, trial_id: int, archive: Path, *, attempt: int) -> str:
        """Upload a checkpoint archive of a running trial's live attempt; returns its
        location."""
        resp = self.request(
            "PUT",
            f"{API}/trials/{trial_id}/checkpoint",
            params={"attempt": attempt},
            upload=archive,
        )
        return _parse(resp, CheckpointOut, "PUT checkpoint").location

    def download_checkpoint(self, trial_id: int, digest: str, dest: Path) -> None:
        """Write a checkpoint archive to ``dest`` (retried like any call)."""
        self._download(f"{API}/trials/{trial_id}/checkpoint/{digest}", dest)

    def upload_code(self, archive: Path, digest: str) -> CodeOut:
        """Upload a study's code archive under its SHA-256 (a no-op when already held);
        the answer's ``code`` goes into ``execution.code``."""
        resp = self.request("PUT", f"{API}/code/{digest}", upload=archive)
        return _parse(resp, CodeOut, "PUT code")

    def download_code(self, digest: str, dest: Path) -> None:
        """Write a code archive to ``dest`` (retried like any call)."""
        self._download(f"{API}/code/{digest}", dest)

    def export_trials_csv(self, study_id: int, dest: Path) -> None:
        """Write every trial of a study to ``dest`` as CSV, streamed (retried like any call):
        a column per trial field, then ``param_<name>`` per parameter."""
        self._download(f"{API}/studies/{study_id}/trials.csv", dest)

    def _download(self, path: str, dest: Path) -> None:
        """Stream a GET's body into ``dest``; a retry starts the file again."""
        for attempt in range(self.retries + 1):
            try:
                with self.http.stream("GET", path) as resp:
                    if resp.status_code in RETRY_STATUS and attempt < self.retries:
                        self._wait(attempt, retry_after_seconds(resp.headers.get("Retry-After")))
                        continue
                    if resp.status_code >= 400:
                        resp.read()
                        raise _error(resp)
                    with open(dest, "wb") as f:
                        for chunk in resp.iter_bytes(1 << 20):
                            f.write(chunk)
                    return
            except httpx.TransportError as exc:
                if attempt == self.retries:
                    raise Unreachable(0, "Unreachable", f"{self.shown_url}: {exc}") from exc
                self._wait(attempt, None)

    # -- workers ---------------------------------------------------------------------------
    def register_worker(self, worker: Mapping[str, Any]) -> WorkerOut:
        """Announce a worker process (name, host, pid, queue, slots, gpus)."""
        return self._call("POST", f"{API}/workers", WorkerOut, json_body=dict(worker))

    def worker_heartbeat(self, worker_id: int, trial_id: int | None = None) -> WorkerOut:
        return self._call(
            "POST",
            f"{API}/workers/{worker_id}/heartbeat",
            WorkerOut,
            json_body={"trial_id": trial_id},
        )

    def stop_worker(self, worker_id: int) -> WorkerOut:
        return self._call("DELETE", f"{API}/workers/{worker_id}", WorkerOut)

    def list_workers(self, include_stopped: bool = False) -> list[WorkerOut]:
        resp = self.request(
            "GET", f"{API}/workers", params={"include_stopped": str(include_stopped).lower()}
        )
        return [WorkerOut.model_validate(w) for w in resp.json()]

    # -- tokens (admin) --------------------------------------------------------------------
    def create_token(
        self,
        name: str,
        scope: str,
        queues: list[str] | None = None,
        expires_in_days: float | None = None,
    ) -> NewTokenOut:
        """A new API token; its secret (``token``) is in this answer only."""
        body = {"name": name, "scope": scope, "queues": queues, "expires_in_days": expires_in_days}
        return self._call("POST", f"{API}/tokens", NewTokenOut, json_body=body)

    def list_tokens(self, include_revoked: bool = False) -> list[TokenOut]:
        resp = self.request(
            "GET", f"{API}/tokens", params={"include_revoked": str(include_revoked).lower()}
        )
        return [TokenOut.model_validate(t) for t in resp.json()]

    def revoke_token(self, token_id: int) -> TokenOut:
        return self._call("DELETE", f"{API}/tokens/{token_id}", TokenOut)

    def whoami(self) -> CallerOut:
        """The token this client presents: name, scope, queues (any valid token may ask)."""
        return self._call("GET", f"{API}/whoami", CallerOut)

    def health(self) -> dict[str, Any]:
        """``/readyz``: the server is up and its database reachable (503 otherwise)."""
        data: dict[str, Any] = self.request("GET", "/readyz").json()
        return data


def _chunks(f: Any, size: int = 1 << 20) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk


def _parse(resp: httpx.Response, model: type[M], what: str) -> M:
    try:
        return model.model_validate(resp.json())
    except ValueError as exc:  # not JSON, or not the expected shape (ValidationError)
        why = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise ApiError(
            resp.status_code,
            "Unexpected response",
            f"{what}: the answer is not a {model.__name__} ({why}); is this a tuneyard server?",
        ) from exc
