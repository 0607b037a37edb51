"""The Pareto view of the study page in a real headless Chromium against a real API server: a
two-objective study with a constraint shows its front, its dominated trials faded and its
infeasible ones as crosses, and the hypervolume over completions; a single-objective study's
page has no Pareto view. The figures are read back from plotly's data on the page. Without
Chromium or Playwright the test is skipped, except under CI=true, where it fails."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine

from tests.conftest import IN_CI
from tests.e2e.servers import api_servers
from tests.helpers import API, study_spec
from tuneyard.store.db import make_engine, make_sessionmaker
from tuneyard.store.models import Base, Trial

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
# (state, err (minimised), acc (maximised), violation of mem <= 16)
TRIALS = [
    ("completed", 0.10, 0.70, 0.0),  # 0 front
    ("completed", 0.20, 0.90, 0.0),  # 1 front
    ("completed", 0.30, 0.80, 0.0),  # 2 dominated by 1
    ("completed", 0.05, 0.95, 2.0),  # 3 infeasible, better than all
    ("completed", 0.40, 0.95, 0.0),  # 4 front
    ("completed", 0.15, 0.60, 0.0),  # 5 dominated by 0
    ("running", 0.01, 0.99, 0.0),  # 6 not completed: not drawn
    ("completed", 0.10, 0.70, 0.0),  # 7 a twin of 0: front too
]
FRONT, DOMINATED, INFEASIBLE = {0, 1, 4, 7}, {2, 5}, {3}
# (state, err, acc, latency_ms, violation): two on the front, one dominated, one infeasible.
THREE = [
    ("completed", 0.1, 0.9, 30.0, 0.0),
    ("completed", 0.2, 0.95, 10.0, 0.0),
    ("completed", 0.3, 0.8, 40.0, 0.0),
    ("completed", 0.05, 0.99, 5.0, 1.0),
]


def _problem() -> str | None:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    return None


def _fill(db: str, sid: int, trials: list[tuple[Any, ...]]) -> dict[int, int]:
    """The trials, (state, *values, violation), written as the report path stores them;
    their ids by number."""
    engine = make_engine(db)
    try:
        with make_sessionmaker(engine)() as s:
            rows = [
                Trial(
                    study_id=sid,
                    number=i,
                    state=state,
                    params={"x": i / 10, "y": 0.1, "kind": "a"},
                    resource_to=27.0,
                    resource=27.0,
                    value=values[0],
                    values=list(values),
                    violation=violation,
                    infeasible=f"mem {16 + violation:g} > 16" if violation else None,
                    ended_at=T0 + timedelta(minutes=i) if state == "completed" else None,
                )
                for i, (state, *values, violation) in enumerate(trials)
            ]
            s.add_all(rows)
            s.commit()
            return {t.number: t.id for t in rows}
    finally:
        engine.dispose()


def _three_objectives(http: httpx.Client) -> int:
    spec = study_spec(
        name="three",
        objectives=[
            {"metric": "err"},
            {"metric": "acc", "direction": "maximize"},
            {"metric": "latency_ms"},
        ],
        constraints=[{"metric": "mem", "max": 16}],
    )
    del spec["metric"], spec["direction"]
    sid: int = http.post(f"{API}/studies", json=spec).json()["id"]
    return sid


def _traces(page: Any, selector: str) -> dict[str, dict[str, Any]]:
    data = page.eval_on_selector(
        selector,
        "e => e.data.map(t => ({name: t.name, ids: t.customdata, x: t.x, y: t.y, "
        "mode: t.mode, marker: t.marker}))",
    )
    return {t["name"]: t for t in data}


def test_the_pareto_view_draws_the_front_the_dominated_and_the_infeasible_trials(
    tmp_path: Path,
) -> None:
    problem = _problem()
    if problem:
        if IN_CI:
            pytest.fail(f"this browser test needs Chromium under CI=true: {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    db = f"sqlite:///{tmp_path / 'tuneyard.db'}"
    engine = create_engine(db)
    Base.metadata.create_all(engine)
    engine.dispose()
    with api_servers(db, 1, tmp_path) as (url,), httpx.Client(base_url=url) as http:
        spec = study_spec(
            name="err-vs-acc",
            objectives=[{"metric": "err"}, {"metric": "acc", "direction": "maximize"}],
            constraints=[{"metric": "mem", "max": 16}],
            reference_point=[0.5, 0.5],
        )
        del spec["metric"], spec["direction"]
        r = http.post(f"{API}/studies", json=spec)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        ids = _fill(db, sid, TRIALS)
        three = _three_objectives(http)
        ids3 = _fill(db, three, THREE)
        single = http.post(f"{API}/studies", json=study_spec(name="one-objective")).json()["id"]
        front = http.get(f"{API}/studies/{sid}/pareto").json()
        assert {t["number"] for t in front["trials"]} == FRONT
        history = http.get(f"{API}/studies/{sid}/pareto/history").json()

        errors: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                page.set_default_timeout(30_000)
                page.on("pageerror", lambda e: errors.append(str(e)))

                page.goto(f"{url}/studies/{sid}")
                page.wait_for_selector("#plot-pareto[data-points]")
                page.wait_for_selector("#plot-hypervolume[data-points]")
                traces = _traces(page, "#plot-pareto")
                assert set(traces) == {"Pareto front", "dominated", "infeasible"}
                on_front = traces["Pareto front"]
                assert sorted(on_front["ids"]) == sorted(ids[n] for n in FRONT)
                assert on_front["mode"] == "lines+markers"
                # The staircase runs from the best err on.
                assert on_front["x"] == sorted(on_front["x"])
                faded = traces["dominated"]
                assert sorted(faded["ids"]) == sorted(ids[n] for n in DOMINATED)
                assert faded["marker"]["opacity"] < on_front["marker"].get("opacity", 1)
                crosses = traces["infeasible"]
                assert crosses["ids"] == [ids[n] for n in INFEASIBLE]
                assert crosses["marker"]["symbol"] == "x"
                assert (crosses["x"], crosses["y"]) == ([0.05], [0.95])
                drawn = {i for t in traces.values() for i in t["ids"]}
                assert ids[6] not in drawn, "a running trial is not drawn"
                legend = page.eval_on_selector("#plot-pareto .legend", "e => e.textContent")
                assert "infeasible" in legend and "Pareto front" in legend
                meta = page.inner_text("#meta-pareto")
                assert meta.startswith("4 on the front of 7 completed trials")
                assert "reference (0.5, 0.5)" in meta

                hv = _traces(page, "#plot-hypervolume")["hypervolume"]
                steps = [(x["completed"], x["hypervolume"]) for x in history["points"]]
                assert list(zip(hv["x"], hv["y"], strict=False))[: len(steps)] == steps
                assert hv["y"][-1] == pytest.approx(front["hypervolume"])
                assert hv["x"][-1] == 7
                # The head shows the front, not a best trial (the infeasible #3 has the best err).
                page.wait_for_function(
                    "document.querySelector('[data-testid=stat-front]').textContent !== '—'"
                )
                assert page.inner_text("[data-testid=stat-front]").startswith("4")
                objectives = page.inner_text("[data-testid=study-objectives]")
                assert objectives == "err ↓ minimize · acc ↑ maximize"
                page.screenshot(path=str(tmp_path / "pareto.png"), full_page=True)

                # A point opens its trial, as the other plots do.
                target = ids[1]
                page.eval_on_selector(
                    "#plot-pareto",
                    "(e, id) => e.emit('plotly_click', {points: [{customdata: id}]})",
                    target,
                )
                page.wait_for_url(f"{url}/trials/{target}")

                # Three objectives: an axis each, the front's lines in the strongest colour.
                page.goto(f"{url}/studies/{three}")
                page.wait_for_selector("#plot-pareto[data-points]")
                coords = page.eval_on_selector(
                    "#plot-pareto",
                    "e => ({type: e.data[0].type, axes: e.data[0].dimensions.map(d => d.label),"
                    " colour: e.data[0].line.color, ids: e.data[0].customdata})",
                )
                assert coords["type"] == "parcoords"
                assert coords["axes"] == ["err ↓", "acc ↑", "latency_ms ↓"]
                level = dict(zip(coords["ids"], coords["colour"], strict=True))
                assert level == {ids3[0]: 1, ids3[1]: 1, ids3[2]: 0.5, ids3[3]: 0}

                page.goto(f"{url}/studies/{single}")
                page.wait_for_selector("#plot-history[data-points]")
                assert page.is_hidden("[data-testid=card-pareto]")
                assert page.is_hidden("[data-testid=card-hypervolume]")
            finally:
                browser.close()
        assert not errors, errors
