"""A pbt study's pages, in a real headless Chromium against a real API server: the study page
draws every member's curve with each exploit as a jump onto its donor's value, and the best
member's schedule a step line per parameter, saved as the same JSON the CLI writes; a member
that exploited lists its lineage with the donor. The figures are read back from plotly's data
on the page. Without Chromium or Playwright the test is skipped, except under CI=true, where
it fails."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine

from tests.conftest import IN_CI
from tests.e2e.servers import api_servers
from tests.helpers import API
from tests.integration.test_population import drive, pbt_spec
from tuneyard.store.models import Base

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def _problem() -> str | None:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    return None


def _traces(page: Any, selector: str) -> list[dict[str, Any]]:
    return list(
        page.eval_on_selector(
            selector,
            "e => e.data.map(t => ({name: t.name, meta: t.meta || {}, x: t.x, y: t.y, "
            "text: t.text || null, shape: t.line && t.line.shape, dash: t.line && t.line.dash, "
            "yaxis: t.yaxis || 'y'}))",
        )
    )


def _role(traces: list[dict[str, Any]], role: str) -> list[dict[str, Any]]:
    return [t for t in traces if t["meta"].get("role") == role]


def test_a_pbt_studys_pages_draw_its_population_schedule_and_lineage(tmp_path: Path) -> None:
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
    servers = api_servers(db, 1, tmp_path, TUNEYARD_DATA_DIR=str(tmp_path / "data"))
    with servers as (url,), httpx.Client(base_url=url, timeout=30) as http:
        r = http.post(f"{API}/studies", json=pbt_spec("pbt"))
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        drive(http, sid)  # type: ignore[arg-type]  # httpx.Client answers as TestClient does
        assert http.get(f"{API}/studies/{sid}").json()["state"] == "completed"
        pop = http.get(f"{API}/studies/{sid}/population").json()
        exploits = pop["exploits"]
        assert pop["members"] == 6
        assert exploits, "the toy's bottom members clone the top ones"
        best = pop["best"]
        schedule = http.get(f"{API}/studies/{sid}/schedule").json()["schedule"]
        assert schedule == best["schedule"]
        ids = sorted(t["id"] for t in http.get(f"{API}/studies/{sid}/trials").json()["items"])
        member = exploits[0]
        lineage = http.get(f"{API}/trials/{member['trial_id']}/lineage").json()
        cloned = [s for s in lineage["steps"] if s["decision"] == "exploit"]
        assert (cloned[0]["resource"], cloned[0]["donor_number"]) == (
            member["resource"],
            member["donor_number"],
        )

        errors: list[str] = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                page.set_default_timeout(30_000)
                page.on("pageerror", lambda e: errors.append(str(e)))

                page.goto(f"{url}/studies/{sid}")
                page.wait_for_function(
                    "document.querySelector('#plot-population')?.data?.some("
                    "t => t.meta && t.meta.role === 'exploits')"
                )
                page.wait_for_function("document.querySelector('#plot-schedule')?.data?.length > 0")
                assert page.is_visible("[data-testid=card-population]")

                # A curve per member, the best one named, and each exploit a marker where the
                # member cloned with a dashed jump to the donor's value there.
                traces = _traces(page, "#plot-population")
                members = _role(traces, "member")
                assert len(members) == pop["members"]
                assert sorted(t["meta"]["trial"] for t in members) == ids
                assert [t["name"] for t in members if "(best)" in t["name"]] == [
                    f"trial #{best['number']} (best)"
                ]
                (marks,) = _role(traces, "exploits")
                assert len(marks["x"]) == len(exploits)
                assert marks["x"] == [e["resource"] for e in exploits]
                assert marks["y"] == pytest.approx([e["value"] for e in exploits])
                for text, e in zip(marks["text"], exploits, strict=True):
                    assert text.startswith(
                        f"trial #{e['number']} cloned #{e['donor_number']} at {e['resource']:g}"
                    )
                (jumps,) = _role(traces, "jumps")
                assert jumps["dash"] == "dash"
                segments = [
                    (jumps["x"][i], jumps["y"][i], jumps["y"][i + 1])
                    for i in range(0, len(jumps["x"]), 3)
                ]
                assert segments == [
                    (e["resource"], pytest.approx(e["value"]), pytest.approx(e["donor_value"]))
                    for e in exploits
                ]

                # The schedule: a step line per numeric parameter, the fixed categorical one
                # as the index of its choice, each holding to the end of training.
                params = _role(_traces(page, "#plot-schedule"), "param")
                numeric = [t for t in params if t["meta"]["kind"] == "numeric"]
                assert sorted(t["meta"]["param"] for t in numeric) == ["h0", "h1"]
                assert [t["meta"]["param"] for t in params if t not in numeric] == ["arch"]
                assert all(t["shape"] == "hv" for t in params)
                assert len({t["yaxis"] for t in params}) == len(params)
                ends = [s["resource"] for s in schedule] + [pop["max_resource"]]
                for t in numeric:
                    name = t["meta"]["param"]
                    assert t["x"] == ends
                    wanted = [s["params"][name] for s in schedule]
                    assert t["y"] == pytest.approx([*wanted, wanted[-1]])

                # Download schedule: the same JSON as `tuneyard study schedule -o` writes.
                with page.expect_download() as got:
                    page.click("[data-testid=download-schedule]")
                saved = tmp_path / "schedule.json"
                got.value.save_as(saved)
                assert got.value.suggested_filename == f"study-{sid}-schedule.json"
                assert json.loads(saved.read_text()) == schedule
                page.screenshot(path=str(tmp_path / "population.png"), full_page=True)

                # A member that cloned: its lineage, a row per boundary, the exploit
                # naming its donor and the donor's value, linked to the donor's page.
                page.goto(f"{url}/trials/{member['trial_id']}")
                page.wait_for_selector("[data-testid=lineage-row]")
                rows = page.locator("[data-testid=lineage-row]")
                assert rows.count() == len(lineage["steps"])
                exploit_rows = page.locator("[data-testid=lineage-row][data-decision=exploit]")
                assert exploit_rows.count() == len(cloned)
                first = exploit_rows.first
                step = first.locator("[data-testid=lineage-step]").inner_text()
                assert f"← #{member['donor_number']} (" in step
                donor = first.locator("[data-testid=lineage-donor]")
                assert donor.get_attribute("href") == f"/trials/{member['donor_trial_id']}"
                assert first.locator("td").first.inner_text() == f"{member['resource']:g}"
                assert (
                    first.locator("[data-testid=lineage-reason]").inner_text()
                    == (cloned[0]["reason"])
                )
                shown = first.locator("[data-testid=lineage-params]").inner_text()
                assert shown.startswith("h0=")
                keep = page.locator("[data-testid=lineage-row][data-decision=keep]")
                assert keep.count() == len(lineage["steps"]) - len(cloned)
                assert page.locator("[data-testid=card-folds]").is_hidden()
                page.screenshot(path=str(tmp_path / "lineage.png"), full_page=True)
            finally:
                browser.close()
        assert not errors, errors
