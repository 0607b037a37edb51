"""A warm-started study's priors on its dashboard page, in a real headless Chromium
(/usr/bin/chromium, driven by Playwright) against a real API server: the earlier study's
observations are drawn as hollow markers of their own ("prior, study N") left of trial 0 on
the history and on every slice, a line says where they come from and that they are not
counted, and the study's counts are its own trials only. Without Chromium or Playwright the
test is skipped, except under CI=true, where it fails.
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
from tests.helpers import API
from tuneyard.store.models import Base

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
SOURCE_TRIALS = 12
TRIALS = 5


def _spec(name: str, sampler: dict[str, Any], trials: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "metric": "loss",
        "space": {
            "x": {"type": "float", "low": 0.0, "high": 1.0},
            "kind": {"type": "categorical", "choices": ["a", "b"]},
        },
        "sampler": sampler,
        "scheduler": {"type": "fifo", "max_resource": 1},
        "limits": {"max_trials": trials, "max_concurrent": 1},
        **extra,
    }


def _run(http: httpx.Client, sid: int) -> None:
    while (r := http.post(f"{API}/studies/{sid}/next", json={"worker": "w"})).status_code == 200:
        job = r.json()
        value = (job["params"]["x"] - 0.3) ** 2 + (0.5 if job["params"]["kind"] == "b" else 0.0)
        body = {"attempt": job["attempt"], "step": 1, "value": value}
        assert http.post(f"{API}/trials/{job['trial_id']}/reports", json=body).status_code == 200
    assert r.status_code == 409, r.text


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, int]]:
    """An API server (auth off, loopback) with a finished source study and a finished study
    warm-started from it."""
    tmp = tmp_path_factory.mktemp("warm-start")
    db = f"sqlite:///{tmp / 'tuneyard.db'}"
    engine = create_engine(db)
    Base.metadata.create_all(engine)
    engine.dispose()
    with (
        api_servers(db, 1, tmp, TUNEYARD_DATA_DIR=str(tmp / "data")) as urls,
        httpx.Client(base_url=urls[0], timeout=30) as http,
    ):
        r = http.post(f"{API}/studies", json=_spec("source", {"type": "random"}, SOURCE_TRIALS))
        assert r.status_code == 201, r.text
        source = r.json()["id"]
        _run(http, source)
        warm = _spec("warm", {"type": "tpe", "seed": 1}, TRIALS, warm_start={"studies": [source]})
        r = http.post(f"{API}/studies", json=warm)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        _run(http, sid)
        yield urls[0], source, sid


@pytest.fixture(scope="module")
def page(studies: tuple[str, int, int]) -> Iterator[Any]:
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
            url, _, sid = studies
            pg.goto(f"{url}/studies/{sid}")
            pg.wait_for_function(
                "() => { const el = document.getElementById('plot-history');"
                " return el && el.data && el.data.some(t => t.name.startsWith('prior'))"
                " && [...document.querySelectorAll('[data-testid=plot-slice]')]"
                ".every(e => e.data && e.data.length > 1); }"
            )
            yield pg
            assert not errors, errors
        finally:
            browser.close()


def _prior_traces(page: Any, plot: str) -> list[dict[str, Any]]:
    return page.evaluate(  # type: ignore[no-any-return]
        """sel => [...document.querySelectorAll(sel)].flatMap(el => el.data
            .filter(t => (t.name || '').startsWith('prior'))
            .map(t => ({ name: t.name, x: t.x, y: t.y, symbol: t.marker.symbol,
                         param: el.dataset.param || null })))""",
        plot,
    )


def test_priors_are_hollow_markers_of_their_source_left_of_the_study_trials(
    page: Any, studies: tuple[str, int, int]
) -> None:
    _, source, _ = studies
    (prior,) = _prior_traces(page, "#plot-history")
    assert prior["name"] == f"prior, study {source}"
    assert prior["symbol"] == "circle-open"
    assert sorted(prior["x"]) == list(range(-SOURCE_TRIALS, 0))
    own = page.evaluate(
        "() => document.getElementById('plot-history').data"
        ".filter(t => !(t.name || '').startsWith('prior') && t.mode === 'markers')"
        ".flatMap(t => t.x)"
    )
    assert sorted(own) == list(range(TRIALS)), "the study's own trials, numbered from 0"
    # The legend shows the source.
    legend = page.evaluate(
        "() => [...document.querySelectorAll('#plot-history .legendtext')].map(t => t.textContent)"
    )
    assert f"prior, study {source}" in legend


def test_every_slice_shows_the_priors_at_their_values(page: Any) -> None:
    traces = _prior_traces(page, "[data-testid=plot-slice]")
    assert {t["param"] for t in traces} == {"x", "kind"}
    for t in traces:
        assert len(t["x"]) == SOURCE_TRIALS and t["symbol"] == "circle-open"
    kinds = next(t for t in traces if t["param"] == "kind")
    assert set(kinds["x"]) <= {"a", "b"}


def test_a_line_names_the_source_and_says_the_priors_are_not_counted(
    page: Any, studies: tuple[str, int, int]
) -> None:
    _, source, _ = studies
    line = page.get_by_test_id("warm-start")
    assert line.is_visible()
    assert line.inner_text() == (
        f"warm-started from study {source} ({SOURCE_TRIALS} observations, "
        "not counted in the budget)"
    )
    assert line.get_by_test_id("prior-source").get_attribute("href") == f"/studies/{source}"
    # The head counts the study's own trials only.
    assert page.get_by_test_id("count-completed").inner_text() == f"{TRIALS} completed"


def test_a_study_without_warm_start_has_no_line_and_no_priors(
    page: Any, studies: tuple[str, int, int]
) -> None:
    url, source, _ = studies
    page.goto(f"{url}/studies/{source}")
    page.wait_for_function(
        "() => { const el = document.getElementById('plot-history');"
        " return el && el.data && el.data.length > 0; }"
    )
    assert _prior_traces(page, "#plot-history") == []
    assert page.get_by_test_id("warm-start").is_hidden()
