"""Every sampler runs a whole study through the HTTP API with 4 parallel clients, on a real
server and PostgreSQL; model-based ones learn from the rung results recorded meanwhile."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from tests.e2e.servers import api_servers
from tests.helpers import API, curve, run_job, study_spec
from tuneyard.scheduler.samplers.registry import SAMPLERS
from tuneyard.store.models import Observation, SamplerState, Trial

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]
MODEL = {"tpe", "gp", "cmaes", "genetic", "bohb", "nsga2", "motpe"}


def client_loop(url: str, sid: int, errors: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=60) as http:
        while True:
            r = http.post(
                f"{API}/studies/{sid}/next", json={"worker": threading.current_thread().name}
            )
            if r.status_code == 409:
                return
            if r.status_code == 204:
                threading.Event().wait(0.05)
                continue
            if r.status_code != 200:
                errors.append(r.text)
                return
            run_job(http, r.json(), curve)


@pytest.mark.parametrize("kind", sorted(SAMPLERS))
def test_a_study_runs_with_four_parallel_clients(
    kind: str, postgres_url: str, tmp_path: Path
) -> None:
    space: dict[str, Any] | None = None
    if kind == "grid":
        space = {
            "x": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.25},
            "y": {"type": "float", "low": 1e-3, "high": 1.0, "log": True, "grid_points": 4},
            "kind": {"type": "categorical", "choices": ["a", "b"]},
        }
    spec = study_spec(
        sampler={"type": kind, "seed": 11},
        limits={"max_trials": 40, "max_concurrent": 4},
        **({"space": space} if space else {}),
    )
    with api_servers(postgres_url, 1, tmp_path) as (url,):
        r = httpx.post(f"{url}{API}/studies", json=spec)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        errors: list[str] = []
        threads = [
            threading.Thread(target=client_loop, args=(url, sid, errors), name=f"c{i}")
            for i in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert not errors, errors
        study = httpx.get(f"{url}{API}/studies/{sid}").json()
    assert study["state"] == "completed"
    assert sum(study["counts"].values()) == 40
    engine = create_engine(postgres_url)
    with Session(engine) as s:
        configs = [tuple(sorted(p.items())) for p in s.scalars(select(Trial.params))]
        assert len(set(configs)) == len(configs), "a configuration was handed out twice"
        if kind in MODEL:
            row = s.get(SamplerState, sid)
            assert row is not None and row.kind == kind
            last = s.scalar(select(func.max(Observation.id)).where(Observation.study_id == sid))
            assert last is not None and 0 < row.watermark <= last
            # The state is saved lazily (every few dozen observations), so it may lag the
            # study; what it holds is exactly the trials observed up to its watermark.
            observed = s.scalar(
                select(func.count(func.distinct(Observation.trial_id))).where(
                    Observation.study_id == sid, Observation.id <= row.watermark
                )
            )
            assert observed is not None and observed >= 8
            assert len(row.state["history"]["trials"]) == observed
    engine.dispose()
