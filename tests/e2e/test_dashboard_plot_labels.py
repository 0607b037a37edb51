"""Plotly reads the strings it draws as HTML-like markup (``<a href>`` becomes a link, ``<b>``
bold). The dashboard hands it a study's data (categorical choices, error reasons) as text:
in a real headless Chromium (/usr/bin/chromium, driven by Playwright) against a real API
server, markup in a choice or a reason is drawn literally, and no plot holds a link.
Without Chromium or Playwright the test is skipped, except under CI=true, where it fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine

from tests.conftest import IN_CI
from tests.e2e.servers import api_servers
from tests.helpers import API, study_spec
from tuneyard.api.schemas import FailIn
from tuneyard.store.models import Base

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
LINK = '<a href="https://evil.example/">click</a>'
SCRIPT = '<a href="javascript:alert(1)">x</a>'
BOLD = "<b>bold</b>"
ENTITY = "fish &amp; chips"
CHOICES = [LINK, SCRIPT, BOLD, ENTITY]
ERROR = f"RuntimeError: {LINK} and <b>loud</b>"
PLOTS = ["plot-history", "plot-curves", "plot-parcoords", "plot-importance"]


def _worker_body(job: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A worker call's body; with the attempt it was given where the API asks for it."""
    if "attempt" in FailIn.model_fields:
        fields["attempt"] = job["attempt"]
    return fields


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """An API server (auth off, loopback) holding a finished study whose choices are markup,
    one of its trials failed with markup in its error."""
    tmp = tmp_path_factory.mktemp("plot-labels")
    db = f"sqlite:///{tmp / 'tuneyard.db'}"
    engine = create_engine(db)
    Base.metadata.create_all(engine)
    engine.dispose()
    with (
        api_servers(db, 1, tmp, TUNEYARD_DATA_DIR=str(tmp / "data")) as urls,
        httpx.Client(base_url=urls[0], timeout=30) as http,
    ):
        spec = study_spec(
            name=f"{BOLD} study",
            space={
                "x": {"type": "float", "low": 0.0, "high": 1.0, "grid_points": 3},
                "choice": {"type": "categorical", "choices": CHOICES},
            },
            sampler={"type": "grid"},
            scheduler={"type": "fifo", "min_resource": 1, "max_resource": 2},
            limits={"max_trials": 12, "max_concurrent": 1},
        )
        r = http.post(f"{API}/studies", json=spec)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        failed = False
        while (
            r := http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"})
        ).status_code == 200:
            job = r.json()
            tid = job["trial_id"]
            for step in (1, 2):
                if step == 2 and not failed and job["params"]["choice"] == LINK:
                    body = _worker_body(job, error=ERROR)
                    assert http.post(f"{API}/trials/{tid}/fail", json=body).status_code == 200
                    failed = True
                    break
                value = job["params"]["x"] + CHOICES.index(job["params"]["choice"]) / step
                body = _worker_body(job, step=step, value=value)
                r = http.post(f"{API}/trials/{tid}/reports", json=body)
                assert r.status_code == 200, r.text
                if r.json()["decision"] in ("stop", "complete"):
                    break
            else:
                body = _worker_body(job)
                assert http.post(f"{API}/trials/{tid}/complete", json=body).status_code == 200
        assert r.status_code == 409, r.text
        assert failed
        assert http.get(f"{API}/studies/{sid}").json()["state"] == "completed"
        yield urls[0], sid


@pytest.fixture(scope="module")
def page(study: tuple[str, int]) -> Iterator[Any]:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            from playwright.sync_api import sync_playwright

            problem = ""
        except ImportError:
            problem = "the playwright Python package is not installed (pip install playwright)"
    if problem:
        if IN_CI:
            pytest.fail(f"the dashboard browser test needs Chromium under CI=true: {problem}")
        pytest.skip(problem)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"], headless=True
        )
        try:
            pg = browser.new_page(viewport={"width": 1440, "height": 900})
            pg.set_default_timeout(30_000)
            errors: list[str] = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            url, sid = study
            pg.goto(f"{url}/studies/{sid}")
            pg.wait_for_function(
                "ids => ids.every(id => { const el = document.getElementById(id);"
                " return el && el.data && Number(el.dataset.points) > 0; })"
                " && [...document.querySelectorAll('[data-testid=plot-slice]')]"
                ".every(e => Number(e.dataset.points) > 0)",
                arg=PLOTS,
            )
            yield pg
            assert not errors, errors
        finally:
            browser.close()


def _links(page: Any) -> list[str]:
    """Every link element inside a plot (an SVG <a> is what plotly makes of markup)."""
    return page.evaluate(  # type: ignore[no-any-return]
        "() => [...document.querySelectorAll('.plot a, .js-plotly-plot a')]"
        ".filter(a => a.closest('.modebar') === null)"
        ".map(a => a.outerHTML)"
    )


def test_choices_are_drawn_as_written_in_the_slice_and_parcoords_ticks(page: Any) -> None:
    assert _links(page) == []
    ticks = page.evaluate(
        "() => [...document.querySelectorAll("
        "'[data-testid=plot-slice][data-param=choice] .xtick text')].map(t => t.textContent)"
    )
    assert sorted(ticks) == sorted(CHOICES), ticks
    bold = page.evaluate(
        "() => document.querySelectorAll('[data-testid=plot-slice] tspan[style*=bold]').length"
    )
    assert bold == 0
    parcoords = page.evaluate(
        "() => [...document.querySelectorAll('#plot-parcoords .tick text')].map(t => t.textContent)"
    )
    assert set(CHOICES) <= set(parcoords), parcoords


def test_a_reason_in_the_hover_text_is_drawn_as_written(page: Any) -> None:
    shown = page.evaluate(
        """() => {
            const el = document.getElementById('plot-curves');
            const i = el.data.findIndex(t => t.legendgroup === 'mark-fail');
            if (i < 0) return null;
            Plotly.Fx.hover(el, [{ curveNumber: i, pointNumber: 0 }]);
            const layer = el.querySelector('.hoverlayer');
            return { text: layer.textContent, links: layer.querySelectorAll('a').length };
        }"""
    )
    assert shown is not None, "the failed trial has a mark on the learning curves"
    assert shown["links"] == 0
    assert LINK in shown["text"] and "<b>loud</b>" in shown["text"], shown
    assert _links(page) == []


def test_plot_text_escapes_markup_and_only_markup(page: Any) -> None:
    # plotText lives in the dashboard's plots module (a module's names are not globals).
    out = page.evaluate(
        "async xs => { const { plotText } = await import('/static/js/plots.js');"
        " return xs.map(plotText); }",
        [SCRIPT, ENTITY, "lr=0.1 -> 1e-3", "plain", 1.5],
    )
    assert out == [
        '&lt;a href="javascript:alert(1)"&gt;x&lt;/a&gt;',
        "fish &amp;amp; chips",
        "lr=0.1 -&gt; 1e-3",
        "plain",
        "1.5",
    ]
