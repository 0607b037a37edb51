"""A typed client of the tuneyard HTTP API, used by workers, the CLI and notebooks.

Every call of the API is idempotent by design (reports on (trial, step), transitions
compare-and-set), so the client retries connection errors and 502/503/504 answers with
exponential backoff and jitter, honouring ``Retry-After``; a 4xx is never retried.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

import httpx
from pydantic import BaseModel

from tuneyard.api.schemas import (
    Assignment,
    ReportOut,
    StudyOut,
    StudyPage,
    TrialOut,
    TrialPage,
    TrialSummary,
)
from tuneyard.settings import Settings
from tuneyard.spec import StudySpec

API = "/api/v1"
RETRY_STATUS = frozenset({502, 503, 504})


class ApiError(Exception):
    def __init__(
        self, status: int, title: str, detail: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


class StudyFinished(Conflict):
    pass


class InvalidRequest(ApiError):
    pass


class Unreachable(ApiError):
    """The server could not be reached after every retry."""


def _error(resp: httpx.Response) -> ApiError:
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    title = str(body.get("title") or resp.reason_phrase)
    detail = str(body.get("detail") or resp.text[:500])
    errors = body.get("errors")
    cls: type[ApiError] = ApiError
    if resp.status_code == 404:
        cls = NotFound
    elif resp.status_code == 409:
        cls = Conflict
    elif resp.status_code in (400, 422):
        cls = InvalidRequest
    return cls(resp.status_code, title, detail, errors if isinstance(errors, list) else None)


class Client:
    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 5,
        transport: httpx.BaseTransport | None = None,
        backoff: float = 0.2,
    ) -> None:
        self.base_url = (base_url or Settings().api_url).rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retries = retries
        self.backoff = backoff
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

    # -- transport -------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                resp = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if last:
                    raise Unreachable(0, "Unreachable", f"{self.base_url}: {exc}") from exc
                self._sleep(delay, None)
                delay *= 2
                continue
            if resp.status_code in RETRY_STATUS and not last:
                self._sleep(delay, resp.headers.get("Retry-After"))
                delay *= 2
                continue
            if resp.status_code >= 400:
                raise _error(resp)
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _sleep(delay: float, retry_after: str | None) -> None:
        if retry_after is not None and retry_after.replace(".", "", 1).isdigit():
            delay = max(delay, float(retry_after))
        time.sleep(delay * (0.5 + random.random()))

    def _json(self, method: str, path: str, model: type[BaseModel], **kw: Any) -> Any:
        return model.model_validate(self.request(method, path, **kw).json())

    # -- studies ---------------------------------------------------------------------------
    def create_study(self, spec: StudySpec | Mapping[str, Any]) -> StudyOut:
        body = spec.model_dump(mode="json") if isinstance(spec, StudySpec) else dict(spec)
        out: StudyOut = self._json("POST", f"{API}/studies", StudyOut, json=body)
        return out

    def list_studies(self, limit: int = 50, cursor: str | None = None) -> StudyPage:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        page: StudyPage = self._json("GET", f"{API}/studies", StudyPage, params=params)
        return page

    def iter_studies(self, page_size: int = 100) -> Iterator[StudyOut]:
        cursor = None
        while True:
            page = self.list_studies(page_size, cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get_study(self, study_id: int) -> StudyOut:
        out: StudyOut = self._json("GET", f"{API}/studies/{study_id}", StudyOut)
        return out

    def set_study_state(self, study_id: int, state: str) -> StudyOut:
        out: StudyOut = self._json(
            "PATCH", f"{API}/studies/{study_id}", StudyOut, json={"state": state}
        )
        return out

    def pause_study(self, study_id: int) -> StudyOut:
        return self.set_study_state(study_id, "paused")

    def resume_study(self, study_id: int) -> StudyOut:
        return self.set_study_state(study_id, "running")

    def stop_study(self, study_id: int) -> StudyOut:
        return self.set_study_state(study_id, "stopped")

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
        params: dict[str, Any] = {"order": order, "limit": limit}
        if state:
            params["state"] = state
        if cursor:
            params["cursor"] = cursor
        page: TrialPage = self._json(
            "GET", f"{API}/studies/{study_id}/trials", TrialPage, params=params
        )
        return page

    def iter_trials(
        self, study_id: int, state: str | None = None, order: str = "number"
    ) -> Iterator[TrialSummary]:
        cursor = None
        while True:
            page = self.list_trials(study_id, state, order, 500, cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def get_trial(self, trial_id: int) -> TrialOut:
        out: TrialOut = self._json("GET", f"{API}/trials/{trial_id}", TrialOut)
        return out

    # -- ask / tell ------------------------------------------------------------------------
    def next(self, study_id: int, worker: str | None = None) -> Assignment | None:
        """The next piece of work; None when nothing can run right now.

        Raises :class:`StudyFinished` when the study is over."""
        try:
            resp = self.request("POST", f"{API}/studies/{study_id}/next", json={"worker": worker})
        except Conflict as exc:
            raise StudyFinished(exc.status, exc.title, exc.detail, exc.errors) from exc
        if resp.status_code == 204:
            return None
        return Assignment.model_validate(resp.json())

    def report(
        self, trial_id: int, step: float, value: float | None = None, **metrics: float | None
    ) -> ReportOut:
        body = {"step": step, "value": value, "metrics": metrics}
        out: ReportOut = self._json(
            "POST", f"{API}/trials/{trial_id}/reports", ReportOut, json=body
        )
        return out

    def pause(self, trial_id: int, checkpoint: str | None = None) -> TrialSummary:
        out: TrialSummary = self._json(
            "POST", f"{API}/trials/{trial_id}/pause", TrialSummary, json={"checkpoint": checkpoint}
        )
        return out

    def complete(
        self,
        trial_id: int,
        value: float | None = None,
        metrics: Mapping[str, float | None] | None = None,
        checkpoint: str | None = None,
    ) -> TrialSummary:
        body = {"value": value, "metrics": dict(metrics or {}), "checkpoint": checkpoint}
        out: TrialSummary = self._json(
            "POST", f"{API}/trials/{trial_id}/complete", TrialSummary, json=body
        )
        return out

    def fail(self, trial_id: int, error: str) -> TrialSummary:
        out: TrialSummary = self._json(
            "POST", f"{API}/trials/{trial_id}/fail", TrialSummary, json={"error": error}
        )
        return out

    def heartbeat(self, trial_id: int) -> None:
        self.request("POST", f"{API}/trials/{trial_id}/heartbeat")

    def health(self) -> dict[str, Any]:
        data: dict[str, Any] = self.request("GET", "/readyz").json()
        return data
