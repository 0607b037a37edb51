"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by
Playwright) against a real API server process holding a finished ASHA study.

Each page is opened as a user would, with a read-scope token in the browser's local storage
(the server requires tokens; a write-scope one for the study's controls, notes and tags), its
plots and tables are checked for data, and a screenshot of it is saved under pytest's tmp dir
and under artifacts/dashboard/. Every request the browser
makes must go to the server under test: nothing from a CDN, no web font.
Without Chromium or Playwright the tests are skipped, except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import create_engine

from tests.conftest import IN_CI
from tests.e2e.servers import api_servers
from tests.helpers import API, curve, drive, study_spec
from tuneyard.service.context import Toolkit
from tuneyard.service.tokens import Scope, TokenService
from tuneyard.settings import Settings
from tuneyard.store.db import make_engine, make_sessionmaker
from tuneyard.store.models import Base

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "artifacts" / "dashboard"
MAX_TRIALS = 40
PAGE_ROWS = 25
PLOTS = ["plot-history", "plot-curves", "plot-parcoords", "plot-importance"]
LOG_TEXT = "".join(f"epoch {i}: loss={0.5 / i:.4f}\n" for i in range(1, 28))
GPU = "NVIDIA H100 80GB HBM3"
TOKEN_KEY = "tuneyard.token"


def _browser_problem() -> str | None:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    return None


@dataclass
class Site:
    url: str
    host: str
    http: httpx.Client
    read_token: str
    write_token: str
    study_id: int
    best_trial: dict[str, Any]
    counts: dict[str, int]
    shots: Path
    worker_ids: list[int] = field(default_factory=list)


def _admin_token(db: str, tmp: Path) -> str:
    """The first token, written straight to the database (nothing else can create it)."""
    engine = make_engine(db)
    try:
        kit = Toolkit(make_sessionmaker(engine), Settings(database_url=db, data_dir=tmp))
        return TokenService(kit).create("dashboard test admin", Scope.ADMIN).secret
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """An API server (tokens required) on its own SQLite database, holding a finished
    40-trial ASHA study run through the HTTP API, a log for its best trial and two
    registered workers."""
    tmp = tmp_path_factory.mktemp("dashboard")
    db = f"sqlite:///{tmp / 'tuneyard.db'}"
    engine = create_engine(db)
    Base.metadata.create_all(engine)
    engine.dispose()
    admin = _admin_token(db, tmp)
    shots = tmp / "screenshots"
    shots.mkdir()
    env = {"TUNEYARD_DATA_DIR": str(tmp / "data"), "TUNEYARD_AUTH": "true"}
    with api_servers(db, 1, tmp, **env) as urls:
        http = httpx.Client(
            base_url=urls[0], timeout=30, headers={"Authorization": f"Bearer {admin}"}
        )
        r = http.post(f"{API}/tokens", json={"name": "dashboard viewer", "scope": "read"})
        assert r.status_code == 201, r.text
        read_token = r.json()["token"]
        r = http.post(f"{API}/tokens", json={"name": "dashboard editor", "scope": "write"})
        assert r.status_code == 201, r.text
        write_token = r.json()["token"]
        spec = study_spec(
            name="mlp-digits-asha",
            limits={"max_trials": MAX_TRIALS, "max_concurrent": 4},
            sampler={"seed": 11},
        )
        r = http.post(f"{API}/studies", json=spec)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        # Registered first, so that the attempts of the study name a worker with a GPU.
        workers = [
            http.post(
                f"{API}/workers",
                json={
                    "name": "w0",
                    "host": "gpu-node-1",
                    "pid": 4242,
                    "queue": "default",
                    "gpus": [{"index": "0", "name": GPU, "memory_mib": 81559}],
                },
            ).json()["id"],
            http.post(
                f"{API}/workers", json={"name": "cpu-node/slot-0", "host": "cpu-node", "pid": 7}
            ).json()["id"],
        ]
        drive(http, sid)  # as worker w0
        study = http.get(f"{API}/studies/{sid}").json()
        assert study["state"] == "completed", study
        best = http.get(f"{API}/trials/{study['best']['id']}").json()
        r = http.post(
            f"{API}/trials/{best['id']}/log", json={"attempt": 1, "offset": 0, "text": LOG_TEXT}
        )
        assert r.status_code == 200, r.text
        yield Site(
            url=urls[0],
            host=urlsplit(urls[0]).netloc,
            http=http,
            read_token=read_token,
            write_token=write_token,
            study_id=sid,
            best_trial=best,
            counts=study["counts"],
            shots=shots,
            worker_ids=workers,
        )
        http.close()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    """Headless Chromium; closed before the server stops (its event streams would hold up the
    server's shutdown)."""
    problem = _browser_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"the dashboard browser test needs Chromium under CI=true: {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


class Tab:
    """A browser page that records every request and every script error. Its local storage
    holds ``token`` (the dashboard sends it with each request) unless the page stored
    another."""

    def __init__(self, browser: Any, site: Site, token: str | None) -> None:
        self.site = site
        self.context = browser.new_context(viewport={"width": 1440, "height": 900})
        if token:
            self.context.add_init_script(
                f"if (!localStorage.getItem('{TOKEN_KEY}'))"
                f" localStorage.setItem('{TOKEN_KEY}', '{token}')"
            )
        self.page = self.context.new_page()
        self.page.set_default_timeout(30_000)
        self.requests: list[str] = []
        self.failed: dict[str, str] = {}
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("requestfailed", lambda r: self.failed.setdefault(r.url, r.failure or ""))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on(
            "console",
            lambda m: self.errors.append(m.text) if m.type == "error" else None,
        )

    def goto(self, path: str) -> Any:
        self.page.goto(f"{self.site.url}{path}")
        return self.page

    def shot(self, name: str, full_page: bool = True) -> None:
        self.page.evaluate("() => window.scrollTo(0, 0)")  # the top bar sticks to the top
        path = self.site.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, ARTIFACTS / f"{name}.png")

    def off_server(self, blocked_ok: bool = False) -> list[str]:
        """Requests to anywhere but the server (blob: and data: URLs stay in the browser; with
        ``blocked_ok``, so does one the page's content security policy refused)."""
        out = []
        for url in self.requests:
            parts = urlsplit(url)
            if parts.scheme in ("blob", "data"):
                continue
            if parts.scheme in ("http", "https") and parts.netloc == self.site.host:
                continue
            if blocked_ok and self.failed.get(url) == "csp":
                continue
            out.append(url)
        return out

    def check(self, blocked_ok: bool = False) -> None:
        assert not self.off_server(blocked_ok), self.off_server(blocked_ok)
        errors = [
            e
            for e in self.errors
            # A stream cut by leaving the page is not an error of the page.
            if not ("ERR_" in e and "events" in e)
            # Nor the browser's note of a request the policy refused (allowed above).
            and not (blocked_ok and "Content Security Policy" in e)
        ]
        assert not errors, errors

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any, site: Site) -> Iterator[Tab]:
    t = Tab(browser, site, site.read_token)
    try:
        yield t
    finally:
        t.close()


def rows(page: Any) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(  # type: ignore[no-any-return]
        "[data-testid=trial-row]",
        "els => els.map(e => ({number: Number(e.dataset.number), state: e.dataset.state,"
        " id: Number(e.dataset.trialId),"
        " value: e.querySelector('[data-testid=trial-value]').textContent.trim()}))",
    )


def wait_rows(page: Any, condition: str, arg: Any = None) -> list[dict[str, Any]]:
    """Wait until the trials table's rows satisfy ``condition`` (a JS expression over
    ``rows``, an array of {number, state}), then return them."""
    page.wait_for_function(
        "([cond, arg]) => { const rows = [...document.querySelectorAll("
        "'[data-testid=trial-row]')].map(e => ({number: Number(e.dataset.number),"
        " state: e.dataset.state})); return rows.length > 0 && new Function('rows', 'arg',"
        " 'return ' + cond)(rows, arg); }",
        arg=[condition, arg],
    )
    return rows(page)


# -- the pages ---------------------------------------------------------------------------------
def test_studies_list_shows_the_study(tab: Tab, site: Site) -> None:
    page = tab.goto("/")
    row = page.locator(f"[data-testid=study-row][data-study-id='{site.study_id}']")
    row.wait_for()
    text = row.inner_text()
    assert "mlp-digits-asha" in text
    assert "completed" in text
    assert f"{MAX_TRIALS} / {MAX_TRIALS} trials" in text
    assert f"trial #{site.best_trial['number']}" in text
    # The progress bar has a segment per state of its trials.
    segments = row.locator("[data-testid=study-progress] > span").count()
    assert segments == len([s for s, n in site.counts.items() if n])
    page.wait_for_selector("#live[data-mode=auto]")
    tab.shot("studies")
    tab.check()


def test_study_page_plots_render_with_data(tab: Tab, site: Site) -> None:
    page = tab.goto(f"/studies/{site.study_id}")
    page.wait_for_function(
        "ids => ids.every(id => { const el = document.getElementById(id);"
        " return el && el.data && Number(el.dataset.points) > 0; })",
        arg=PLOTS,
    )
    figures = page.evaluate(
        """ids => Object.fromEntries(ids.map(id => {
            const el = document.getElementById(id);
            return [id, {
              traces: el.data.length,
              points: Number(el.dataset.points),
              svgPoints: el.querySelectorAll('.plot-container .scatterlayer .point').length,
              lines: el.querySelectorAll('.plot-container .scatterlayer path.js-line').length,
              bars: el.querySelectorAll('.plot-container .barlayer .point').length,
              canvases: el.querySelectorAll('.plot-container canvas').length,
              dims: el.data[0].dimensions ? el.data[0].dimensions.length : 0,
              shapes: (el.layout.shapes || []).length,
            }];
        }))""",
        PLOTS,
    )
    finished = sum(site.counts.get(s, 0) for s in ("completed", "stopped", "failed"))
    history = figures["plot-history"]
    assert history["points"] >= finished  # every finished trial, and the best-so-far line
    assert history["svgPoints"] >= finished
    assert history["lines"] >= 1
    curves = figures["plot-curves"]
    assert curves["points"] > MAX_TRIALS
    assert curves["lines"] >= 5  # the trials that went past rung 0
    assert curves["shapes"] >= 3  # the rung levels, as vertical lines
    marks = page.evaluate(
        "() => document.getElementById('plot-curves').data"
        ".filter(t => t.legendgroup && t.legendgroup.startsWith('mark-')).map(t => t.name)"
    )
    assert {"promote", "pause"} <= set(marks), marks
    parcoords = figures["plot-parcoords"]
    assert parcoords["dims"] == 4  # x, y, kind and the value
    assert parcoords["points"] == finished
    assert parcoords["canvases"] >= 1
    assert figures["plot-importance"]["bars"] == 3
    slices = page.evaluate(
        "() => [...document.querySelectorAll('[data-testid=plot-slice]')]"
        ".map(e => [e.dataset.param, Number(e.dataset.points),"
        " e.querySelectorAll('.plot-container .point').length])"
    )
    assert sorted(s[0] for s in slices) == ["kind", "x", "y"]
    assert all(points > 0 and drawn > 0 for _, points, drawn in slices), slices
    page.wait_for_selector("#live[data-mode=live]")  # the event stream is open
    tab.shot("study")
    tab.check()


def test_trials_table_pages_sorts_and_filters(tab: Tab, site: Site) -> None:
    page = tab.goto(f"/studies/{site.study_id}")
    first = wait_rows(page, "rows.length === arg", PAGE_ROWS)
    assert [r["number"] for r in first] == list(range(PAGE_ROWS))
    assert page.inner_text("[data-testid=trials-page]").startswith("Page 1")
    assert page.is_disabled("[data-testid=trials-prev]")

    page.click("[data-testid=trials-next]")
    second = wait_rows(page, "rows[0].number === arg", PAGE_ROWS)
    assert [r["number"] for r in second] == list(range(PAGE_ROWS, MAX_TRIALS))
    assert page.inner_text("[data-testid=trials-page]").startswith("Page 2")
    assert page.is_disabled("[data-testid=trials-next]")

    page.click("[data-testid=trials-prev]")
    back = wait_rows(page, "rows[0].number === 0")
    assert [r["number"] for r in back] == [r["number"] for r in first]

    # Newest first, by the column header.
    page.click("[data-testid=trials-table] th[data-sort=number]")
    newest = wait_rows(page, "rows[0].number === arg", MAX_TRIALS - 1)
    assert [r["number"] for r in newest] == list(
        range(MAX_TRIALS - 1, MAX_TRIALS - 1 - PAGE_ROWS, -1)
    )

    # By value, best first: the server's order.
    page.select_option("[data-testid=trials-order]", "value")
    page.wait_for_selector("[data-testid=trials-table][data-order=value]")
    by_value = wait_rows(page, "rows[0].number === arg", site.best_trial["number"])
    expected = site.http.get(
        f"{API}/studies/{site.study_id}/trials", params={"order": "value", "limit": PAGE_ROWS}
    ).json()["items"]
    assert [r["number"] for r in by_value] == [t["number"] for t in expected]

    # Only the rows of one state.
    page.select_option("[data-testid=trials-order]", "number")
    for state in ("completed", "stopped"):
        page.select_option("[data-testid=trials-state]", state)
        page.wait_for_selector(f"[data-testid=trials-table][data-filter={state}]")
        shown = wait_rows(page, "rows.every(r => r.state === arg)", state)
        assert {r["state"] for r in shown} == {state}
        assert len(shown) == min(PAGE_ROWS, site.counts[state])
    tab.shot("study-trials-filtered")
    tab.check()


def test_study_page_updates_live_when_a_report_arrives(tab: Tab, site: Site) -> None:
    http = site.http
    spec = study_spec(name="live-study", limits={"max_trials": 6, "max_concurrent": 2})
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    first = http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"}).json()
    r = http.post(
        f"{API}/trials/{first['trial_id']}/reports",
        json={"attempt": 1, "step": 1, "value": curve(first["params"], 1)},
    )
    assert r.status_code == 200, r.text
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"}).json()
    tid = job["trial_id"]

    page = tab.goto(f"/studies/{sid}")
    page.wait_for_selector("#live[data-mode=live]")
    wait_rows(page, "rows.length === 2")
    page.evaluate("() => { window.__sameDocument = true; }")
    value_cell = f"[data-testid=trial-row][data-trial-id='{tid}'] [data-testid=trial-value]"
    assert page.inner_text(value_cell).strip() == "—"

    # The points of the trial's learning curve (decision marks are traces of their own).
    curve_points = (
        "tid => (document.getElementById('plot-curves').data || [])"
        ".filter(t => t.customdata && t.customdata[0] === tid"
        " && !(t.legendgroup || '').startsWith('mark-'))"
        ".reduce((n, t) => n + t.x.length, 0)"
    )
    assert page.evaluate(curve_points, tid) == 0
    value = curve(job["params"], 1)
    r = http.post(f"{API}/trials/{tid}/reports", json={"attempt": 1, "step": 1, "value": value})
    assert r.status_code == 200, r.text
    shown = str(float(f"{value:.4e}"))  # the page's five significant digits
    page.wait_for_function(
        "([sel, want]) => document.querySelector(sel)?.textContent.trim() === want",
        arg=[value_cell, shown],
    )
    page.wait_for_function(f"tid => ({curve_points})(tid) === 1", arg=tid)

    # A second change: the trial is paused (its decision) and the table says so.
    if r.json()["decision"] == "pause":
        http.post(f"{API}/trials/{tid}/pause", json={"attempt": 1, "checkpoint": None})
        expected_state = "paused"
    else:
        http.post(f"{API}/trials/{tid}/complete", json={"attempt": 1})
        expected_state = "completed"
    page.wait_for_selector(
        f"[data-testid=trial-row][data-trial-id='{tid}'][data-state={expected_state}]"
    )
    assert page.evaluate("() => window.__sameDocument") is True, "the page was reloaded"
    tab.shot("study-live")
    tab.check()


def test_trial_page_shows_decisions_and_log_tail(tab: Tab, site: Site) -> None:
    best = site.best_trial
    page = tab.goto(f"/trials/{best['id']}")
    page.wait_for_selector("[data-testid=decision-row]")
    page.wait_for_function(
        "n => Number(document.getElementById('plot-trial-curve').dataset.points) >= n",
        arg=len(best["reports"]),
    )
    decisions = page.eval_on_selector_all(
        "[data-testid=decision-row]",
        "els => els.map(e => [e.dataset.kind,"
        " e.querySelector('[data-testid=decision-reason]').textContent])",
    )
    assert [d[0] for d in decisions] == [d["kind"] for d in best["decisions"]]
    assert [d[1] for d in decisions] == [d["reason"] for d in best["decisions"]]
    assert any(kind == "promote" and "promoted from rung" in why for kind, why in decisions)
    assert page.inner_text("[data-testid=log-tail]").strip() == LOG_TEXT.strip()
    params = page.inner_text("[data-testid=trial-params]")
    assert all(name in params for name in best["params"])
    assert page.locator("[data-testid=attempt-row]").count() == best["attempts"]
    assert "Wall time" in page.inner_text("[data-testid=trial-resources]")
    attempts = page.inner_text("[data-testid=trial-attempts]")
    assert "gpu-node-1" in attempts and GPU in attempts
    tab.shot("trial")
    tab.check()


def test_workers_page_renders(tab: Tab, site: Site) -> None:
    http = site.http
    gpu_worker, cpu_worker = site.worker_ids
    sid = http.post(f"{API}/studies", json=study_spec(name="busy-study")).json()["id"]
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"}).json()
    r = http.post(f"{API}/workers/{gpu_worker}/heartbeat", json={"trial_id": job["trial_id"]})
    assert r.status_code == 200, r.text
    assert http.delete(f"{API}/workers/{cpu_worker}").status_code == 200

    page = tab.goto("/workers")
    page.wait_for_selector("[data-testid=worker-row]")
    table = page.inner_text("[data-testid=workers-table]")
    assert page.locator("[data-testid=worker-row]").count() == 2
    assert "w0" in table and "cpu-node/slot-0" in table and "gpu-node-1" in table
    assert GPU in table
    online = page.locator("[data-testid=worker-row][data-online=true]")
    assert online.count() == 1
    assert online.get_attribute("data-worker") == "w0"
    link = online.locator("[data-testid=worker-trial]")
    assert link.get_attribute("href") == f"/trials/{job['trial_id']}"
    assert link.inner_text().startswith(f"trial #{job['number']}")
    busy = online.locator(".bar-label").inner_text()
    assert busy.endswith("%") and int(busy.rstrip("%")) > 0  # it ran the whole first study
    offline = page.locator("[data-testid=worker-row][data-online=false]")
    assert "stopped" in offline.inner_text()
    summary = page.inner_text("[data-testid=workers-summary]")
    assert "1 online" in summary and "1 offline" in summary
    tab.shot("workers")
    tab.check()


def test_api_docs_render_offline(tab: Tab, site: Site) -> None:
    page = tab.goto("/docs")
    page.wait_for_selector(".swagger-ui .opblock")
    paths = page.eval_on_selector_all(
        ".opblock-summary-path", "els => els.map(e => e.textContent.replace(/\\u200b/g, ''))"
    )
    assert "/api/v1/studies" in paths
    assert "/api/v1/dashboard/studies/{study_id}/history" in paths
    assert page.locator(".swagger-ui .version-stamp, .swagger-ui .version").count() >= 1
    tab.shot("docs", full_page=False)  # the first screen: the whole API is very long
    tab.check()


def test_token_goes_with_every_request_and_a_401_asks_for_one(browser: Any, site: Site) -> None:
    tab = Tab(browser, site, None)
    try:
        page = tab.page
        sent: list[tuple[str, str | None]] = []
        page.on(
            "request",
            lambda r: (
                sent.append((r.url, r.headers.get("authorization")))
                if "/api/v1/" in r.url
                else None
            ),
        )
        # No token: the server answers 401 and the page asks for one.
        tab.goto("/")
        page.wait_for_selector("[data-testid=auth-form]:not([hidden])")
        assert page.is_hidden("#auth-error")
        # A wrong one: asked again, saying so.
        page.fill("#auth-token", "not-a-token")
        page.click("#auth-form button[type=submit]")
        page.wait_for_selector("#auth-error:not([hidden])")
        assert "not accepted" in page.inner_text("[data-testid=auth-form]")
        tab.shot("token-form")
        # The right one: the page loads, and keeps the token.
        page.fill("#auth-token", site.read_token)
        page.click("#auth-form button[type=submit]")
        page.wait_for_selector(f"[data-testid=study-row][data-study-id='{site.study_id}']")
        assert page.evaluate(f"() => localStorage.getItem('{TOKEN_KEY}')") == site.read_token

        sent.clear()
        tab.goto(f"/studies/{site.study_id}")
        page.wait_for_selector("[data-testid=trial-row]")
        page.wait_for_selector("#live[data-mode=live]")
        fetched = [(u, a) for u, a in sent if "/events" not in u]
        assert fetched and all(a == f"Bearer {site.read_token}" for _, a in fetched), fetched
        # The event stream is opened with a ticket the token bought; no URL holds the token.
        assert any(u.endswith("/stream-ticket") for u, _ in fetched), fetched
        streams = [u for u, _ in sent if "/events" in u]
        assert streams and all("/events?ticket=tyt_" in u for u in streams), streams
        assert not any(site.read_token in u or "access_token" in u for u, _ in sent), sent
        # The browser logs each 401 answer as a failed resource; those are the point here.
        tab.errors[:] = [e for e in tab.errors if "401" not in e]
        tab.check()
    finally:
        tab.close()


# -- acting from the dashboard ----------------------------------------------------------------
def _running_study(site: Site, name: str) -> int:
    r = site.http.post(f"{API}/studies", json=study_spec(name=name))
    assert r.status_code == 201, r.text
    sid = int(r.json()["id"])
    assert site.http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"}).status_code == 200
    return sid


def _study_state(site: Site, sid: int) -> str:
    return str(site.http.get(f"{API}/studies/{sid}").json()["state"])


def test_study_controls_pause_resume_stop_and_delete_with_a_write_token(
    browser: Any, site: Site
) -> None:
    sid = _running_study(site, "controlled")
    tab = Tab(browser, site, site.write_token)
    try:
        page = tab.goto(f"/studies/{sid}")
        page.wait_for_selector(
            "[data-testid=study-controls][data-writable=true][data-state=running]"
        )
        assert page.is_hidden("[data-testid=study-resume]")
        page.click("[data-testid=study-pause]")
        page.wait_for_selector("[data-testid=study-controls][data-state=paused]")
        assert _study_state(site, sid) == "paused"
        assert page.is_hidden("[data-testid=study-pause]")
        page.click("[data-testid=study-resume]")
        page.wait_for_selector("[data-testid=study-controls][data-state=running]")
        assert _study_state(site, sid) == "running"

        # Stop asks first: declined, nothing happens.
        asked: list[str] = []

        def decline(d: Any) -> None:
            asked.append(d.message)
            d.dismiss()

        page.once("dialog", decline)
        page.click("[data-testid=study-stop]")
        assert asked and "Stop study" in asked[0]
        assert _study_state(site, sid) == "running"

        # An error from the API is shown: the study is stopped elsewhere while this page
        # still shows it running (its reads of the study are held at what it saw).
        seen = site.http.get(f"{API}/dashboard/studies/{sid}").json()
        page.route(
            f"**/api/v1/dashboard/studies/{sid}",
            lambda route: route.fulfill(
                status=200, content_type="application/json", body=json.dumps(seen, default=str)
            ),
        )
        r = site.http.patch(f"{API}/studies/{sid}", json={"state": "stopped"})
        assert r.status_code == 200, r.text
        page.click("[data-testid=study-pause]")
        page.wait_for_selector("[data-testid=controls-error]:not([hidden])")
        error = page.inner_text("[data-testid=controls-error]")
        assert error.startswith("Couldn't pause the study: ") and "stopped" in error, error
        assert _study_state(site, sid) == "stopped"
        # The browser logs the 409 answer as a failed resource; it is the point here.
        tab.errors[:] = [e for e in tab.errors if "409" not in e]
        tab.shot("study-controls-error")

        # Delete asks, then deletes and goes back to the list.
        page.once("dialog", lambda d: d.accept())
        page.wait_for_selector("[data-testid=study-delete]:not([disabled])")
        page.click("[data-testid=study-delete]")
        page.wait_for_url(f"{site.url}/")
        assert site.http.get(f"{API}/studies/{sid}").status_code == 404
        tab.check()
    finally:
        tab.close()


def test_study_controls_are_disabled_with_a_read_token(tab: Tab, site: Site) -> None:
    sid = _running_study(site, "read-only view")
    page = tab.goto(f"/studies/{sid}")
    page.wait_for_selector("[data-testid=study-controls][data-writable=false][data-state=running]")
    page.wait_for_selector("[data-testid=controls-readonly]:not([hidden])")
    for button in ("pause", "stop", "delete"):
        assert page.is_disabled(f"[data-testid=study-{button}]"), button
    assert page.is_disabled("[data-testid=note-input]")
    assert page.is_disabled("[data-testid=notes-save]")
    assert _study_state(site, sid) == "running"
    tab.shot("study-read-only")
    tab.check()


def test_notes_and_tags_are_typed_saved_and_seen_after_a_reload(browser: Any, site: Site) -> None:
    sid = _running_study(site, "annotated")
    trial_id = site.http.get(f"{API}/studies/{sid}/trials").json()["items"][0]["id"]
    note = "lr 0.1 diverges after warm-up;\ntry 0.03 next"
    tab = Tab(browser, site, site.write_token)
    try:
        page = tab.goto(f"/studies/{sid}")
        page.wait_for_selector("[data-testid=notes-form][data-writable=true]")
        page.fill("[data-testid=note-input]", note)
        page.fill("[data-testid=tags-input]", "baseline, warmup-sweep")
        page.click("[data-testid=notes-save]")
        page.wait_for_function(
            "() => document.querySelector('[data-testid=notes-status]').textContent === 'saved'"
        )
        stored = site.http.get(f"{API}/dashboard/studies/{sid}").json()
        assert stored["note"] == note and stored["tags"] == ["baseline", "warmup-sweep"]

        # A bad tag: the API's error is shown, nothing is lost.
        page.fill("[data-testid=tags-input]", "baseline, <b>")
        page.click("[data-testid=notes-save]")
        page.wait_for_selector("[data-testid=notes-error]:not([hidden])")
        assert "tags[1]" in page.inner_text("[data-testid=notes-error]")
        tab.errors[:] = [e for e in tab.errors if "422" not in e]

        page.reload()
        page.wait_for_function(
            "want => document.querySelector('[data-testid=note-input]').value === want", arg=note
        )
        chips = page.eval_on_selector_all(
            "[data-testid=study-tags] [data-tag]", "els => els.map(e => e.dataset.tag)"
        )
        assert chips == ["baseline", "warmup-sweep"]

        # The study list shows the tags and filters by one.
        page = tab.goto("/?tag=warmup-sweep")
        page.wait_for_selector("[data-testid=studies-table][data-tags=warmup-sweep]")
        shown = page.eval_on_selector_all(
            "[data-testid=study-row]", "els => els.map(e => Number(e.dataset.studyId))"
        )
        assert shown == [sid]
        row_tags = page.inner_text(f"[data-study-id='{sid}'] [data-testid=study-tags]")
        assert "baseline" in row_tags and "warmup-sweep" in row_tags
        page.fill("[data-testid=studies-tag-filter]", "")
        page.click("[data-testid=studies-filter] button")
        page.wait_for_selector("[data-testid=studies-table][data-tags='']")
        page.wait_for_selector(f"[data-testid=study-row][data-study-id='{site.study_id}']")
        tab.shot("studies-tags")

        # A trial's note and tags, the same way.
        page = tab.goto(f"/trials/{trial_id}")
        page.wait_for_selector("[data-testid=notes-form][data-writable=true]")
        page.fill("[data-testid=note-input]", "loss spikes at epoch 3")
        page.fill("[data-testid=tags-input]", "spiky")
        page.click("[data-testid=notes-save]")
        page.wait_for_function(
            "() => document.querySelector('[data-testid=notes-status]').textContent === 'saved'"
        )
        page.reload()
        page.wait_for_function(
            "() => document.querySelector('[data-testid=note-input]').value"
            " === 'loss spikes at epoch 3'"
        )
        assert page.input_value("[data-testid=tags-input]") == "spiky"
        assert site.http.get(f"{API}/dashboard/trials/{trial_id}").json()["tags"] == ["spiky"]
        tab.shot("trial-notes")
        tab.check()
    finally:
        tab.close()


def test_timeline_draws_the_study_workers_attempts(tab: Tab, site: Site) -> None:
    trials = site.http.get(
        f"{API}/studies/{site.study_id}/trials", params={"limit": MAX_TRIALS}
    ).json()["items"]
    attempts = sum(t["attempts"] for t in trials)
    page = tab.goto(f"/timeline?study={site.study_id}")
    page.wait_for_function(
        "n => Number(document.getElementById('plot-timeline')?.dataset.attempts) === n",
        arg=attempts,
    )
    figure = page.evaluate(
        """() => {
            const el = document.getElementById('plot-timeline');
            const bars = el.data.filter(t => t.name !== 'idle');
            return {
              lanes: el.dataset.lanes,
              bars: bars.reduce((n, t) => n + t.x.length, 0),
              trialIds: bars.flatMap(t => t.customdata),
              drawn: el.querySelectorAll('.barlayer .point').length,
              idle: el.data.filter(t => t.name === 'idle').length,
              yLabels: [...new Set(bars.flatMap(t => t.y))],
            };
        }"""
    )
    assert figure["lanes"] == "w0"  # every attempt of the study ran on w0
    assert figure["bars"] == attempts
    assert sorted(set(figure["trialIds"])) == sorted(t["id"] for t in trials)
    assert figure["drawn"] >= attempts  # the bars, and the idle track behind them
    assert figure["idle"] == 1
    label = figure["yLabels"][0]
    assert "w0" in label and "gpu-node-1" in label and "GPU 0" in label and "idle" in label
    tab.shot("timeline")
    # A click on a bar opens its trial.
    page.evaluate(
        """() => {
            const el = document.getElementById('plot-timeline');
            const t = el.data.findIndex(t => t.name !== 'idle');
            const id = el.data[t].customdata[0];
            el.emit('plotly_click', {points: [{curveNumber: t, customdata: id}]});
        }"""
    )
    page.wait_for_url(f"{site.url}/trials/*")
    tab.check()


def test_parallel_coordinates_draw_every_trial_of_a_conditional_space(tab: Tab, site: Site) -> None:
    space = {
        "model": {"type": "categorical", "choices": ["svm", "tree"]},
        "c": {"type": "float", "low": 1e-3, "high": 10.0, "log": True, "when": {"model": "svm"}},
        "kernel": {"type": "categorical", "choices": ["rbf", "linear"], "when": {"model": "svm"}},
        "depth": {"type": "int", "low": 2, "high": 8, "when": {"model": "tree"}},
        "lr": {"type": "float", "low": 0.0, "high": 1.0},
    }

    def objective(params: dict[str, Any], step: float) -> float:
        c = params.get("c", 1.0)
        depth = params.get("depth", 4)
        return params["lr"] + abs(c - 1.0) / 10 + depth / 20 + 0.5 / step

    spec = study_spec(
        name="conditional", space=space, limits={"max_trials": 16, "max_concurrent": 2}
    )
    r = site.http.post(f"{API}/studies", json=spec)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    drive(site.http, sid, objective=objective)
    trials = site.http.get(f"{API}/studies/{sid}/trials", params={"limit": 100}).json()["items"]
    with_value = [t for t in trials if t["value"] is not None]
    svm = [t for t in with_value if t["params"]["model"] == "svm"]
    assert svm and len(svm) < len(with_value)  # both branches: every trial lacks a parameter

    page = tab.goto(f"/studies/{sid}")
    page.wait_for_function(
        "() => { const el = document.getElementById('plot-parcoords');"
        " return el && el.data && el.data[0] && el.data[0].dimensions; }"
    )
    dims = page.evaluate(
        """() => document.getElementById('plot-parcoords').data[0].dimensions.map(d => ({
            label: d.label, n: d.values.length,
            finite: d.values.every(v => Number.isFinite(v)),
            inRange: d.range ? d.values.every(v => v >= d.range[0] && v <= d.range[1]) : true,
            inactive: (d.ticktext || []).includes('inactive'),
            low: d.range ? d.values.filter(v => v === d.range[0]).length : 0,
        }))"""
    )
    by_label = {d["label"].split(" ")[0]: d for d in dims}
    # Every dimension holds a drawable position for every trial: plotly draws all the lines.
    assert all(d["n"] == len(with_value) and d["finite"] and d["inRange"] for d in dims), dims
    for name in ("c", "kernel", "depth"):
        assert by_label[name]["inactive"], by_label[name]
    assert not by_label["model"]["inactive"] and not by_label["lr"]["inactive"]
    # The trials without c (the trees) sit on its "inactive" position, below its range.
    assert by_label["c"]["low"] == len(with_value) - len(svm)
    assert by_label["depth"]["low"] >= len(svm)
    assert page.evaluate(
        "() => Number(document.getElementById('plot-parcoords').dataset.points)"
    ) == len(with_value)
    assert "inactive" in page.inner_text("#meta-parcoords")
    tab.shot("parcoords-conditional")
    tab.check()


def test_importance_says_which_rung_and_how_many_trials(tab: Tab, site: Site) -> None:
    page = tab.goto(f"/studies/{site.study_id}")
    page.wait_for_selector("#meta-importance[data-trials]:not([data-trials='0'])")
    got = site.http.get(f"{API}/dashboard/studies/{site.study_id}/importance").json()
    meta = page.inner_text("#meta-importance")
    assert f"{got['trials_used']} trials" in meta
    if got["rung"] is not None:
        assert f"rung {got['rung']}" in meta
    note = page.inner_text("[data-testid=importance-method]")
    assert got["basis"] in note
    tab.check()
