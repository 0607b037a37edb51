"""The trial page's Download model button, in a real headless Chromium against a real API
server process: it downloads a completed trial's model with the browser's read token, and a
trial without a model has no button."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine

from tests.conftest import IN_CI
from tests.e2e.servers import api_servers
from tests.helpers import API, archive, study_spec
from tuneyard.service.context import Toolkit
from tuneyard.service.tokens import Scope, TokenService
from tuneyard.settings import Settings
from tuneyard.store.db import make_engine, make_sessionmaker
from tuneyard.store.models import Base

pytestmark = pytest.mark.e2e
CHROMIUM = Path("/usr/bin/chromium")


def _problem() -> str | None:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install playwright)"
    return None


def test_the_trial_page_downloads_a_completed_trial_s_model(tmp_path: Path) -> None:
    problem = _problem()
    if problem:
        if IN_CI:
            pytest.fail(f"the browser test needs Chromium under CI=true: {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    db = f"sqlite:///{tmp_path / 'tuneyard.db'}"
    engine = create_engine(db)
    Base.metadata.create_all(engine)
    engine.dispose()
    engine = make_engine(db)
    kit = Toolkit(make_sessionmaker(engine), Settings(database_url=db, data_dir=tmp_path))
    admin = TokenService(kit).create("admin", Scope.ADMIN).secret
    read = TokenService(kit).create("viewer", Scope.READ).secret
    engine.dispose()
    env = {"TUNEYARD_DATA_DIR": str(tmp_path / "data"), "TUNEYARD_AUTH": "true"}
    model = archive(b"the best weights", "model.pt")
    with api_servers(db, 1, tmp_path, **env) as (url,):
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"})
        fifo = {"type": "fifo", "min_resource": 1, "max_resource": 2, "reduction_factor": 3}
        spec = study_spec(scheduler=fifo, limits={"max_trials": 2, "max_concurrent": 2})
        sid = http.post(f"{API}/studies", json=spec).json()["id"]
        with_model = http.post(f"{API}/studies/{sid}/next", json={}).json()["trial_id"]
        without = http.post(f"{API}/studies/{sid}/next", json={}).json()["trial_id"]
        loc = http.put(
            f"{API}/trials/{with_model}/checkpoint", params={"attempt": 1}, content=model
        ).json()["location"]
        done = http.post(
            f"{API}/trials/{with_model}/complete",
            json={"attempt": 1, "value": 0.1, "checkpoint": loc},
        )
        assert done.status_code == 200, done.text
        http.post(f"{API}/trials/{without}/complete", json={"attempt": 1, "value": 0.2})
        http.close()

        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox"], headless=True
            )
            try:
                context = browser.new_context(accept_downloads=True)
                context.add_init_script(f"localStorage.setItem('tuneyard.token', '{read}')")
                page = context.new_page()
                page.set_default_timeout(30_000)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(f"{url}/trials/{with_model}")
                button = page.get_by_test_id("download-model")
                button.wait_for()
                with page.expect_download() as info:
                    button.click()
                download = info.value
                assert download.suggested_filename == f"trial-{with_model}-model.tar.gz"
                saved = tmp_path / "downloaded.tar.gz"
                download.save_as(saved)
                assert saved.read_bytes() == model

                page.goto(f"{url}/trials/{without}")
                page.get_by_text("Trial #1").first.wait_for()
                page.wait_for_load_state("networkidle")
                assert page.get_by_test_id("download-model").count() == 0
                assert not errors, errors
            finally:
                browser.close()
