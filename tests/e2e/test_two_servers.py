"""Two API processes on one PostgreSQL database, 32 concurrent ask/tell clients, one study."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from tests.e2e.servers import api_servers
from tests.helpers import API, curve, study_spec
from tuneyard.store.models import DecisionLog, Report, Trial

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

CLIENTS = 32
MAX_TRIALS = 120


def client_loop(
    urls: list[str], sid: int, seed: int, sent: list[tuple[int, float]], errors: list[str]
) -> None:
    rng = random.Random(seed)
    clients = [httpx.Client(base_url=u, timeout=60) for u in urls]

    def pick() -> httpx.Client:
        return rng.choice(clients)

    try:
        while True:
            r = pick().post(f"{API}/studies/{sid}/next", json={"worker": f"c{seed}"})
            if r.status_code == 409:
                return
            if r.status_code == 204:
                time.sleep(0.02 + rng.random() * 0.05)
                continue
            if r.status_code != 200:
                errors.append(f"next {r.status_code} {r.text}")
                return
            job: dict[str, Any] = r.json()
            tid, step, to = job["trial_id"], int(job["resource_from"]), job["resource_to"]
            while step < to:
                step += 1
                body = {
                    "attempt": job["attempt"],
                    "step": step,
                    "value": curve(job["params"], step),
                }
                ans = pick().post(f"{API}/trials/{tid}/reports", json=body)
                if ans.status_code != 200:
                    errors.append(f"report {ans.status_code} {ans.text}")
                    return
                sent.append((tid, float(step)))
                if rng.random() < 0.1:  # a retried report must change nothing
                    again = pick().post(f"{API}/trials/{tid}/reports", json=body)
                    if again.json() != ans.json():
                        errors.append(f"retry of {tid}/{step} answered differently")
                d = ans.json()
                if d["decision"] == "pause":
                    p = pick().post(
                        f"{API}/trials/{tid}/pause",
                        json={"attempt": job["attempt"], "checkpoint": None},
                    )
                    if p.status_code != 200:
                        errors.append(f"pause {p.status_code} {p.text}")
                    break
                if d["decision"] in ("stop", "complete"):
                    break
                to = d["resource_to"]
    finally:
        for c in clients:
            c.close()


def test_two_servers_32_clients_one_asha_study(postgres_url: str, tmp_path: Path) -> None:
    with api_servers(postgres_url, 2, tmp_path) as urls:
        spec = study_spec(
            limits={"max_trials": MAX_TRIALS, "max_concurrent": CLIENTS}, sampler={"seed": 5}
        )
        sid = httpx.post(f"{urls[0]}{API}/studies", json=spec).json()["id"]
        sent: list[tuple[int, float]] = []
        errors: list[str] = []
        threads = [
            threading.Thread(target=client_loop, args=(urls, sid, i, sent, errors))
            for i in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        assert not errors, errors[:5]
        study = httpx.get(f"{urls[1]}{API}/studies/{sid}").json()

    assert study["state"] == "completed"
    engine = create_engine(postgres_url)
    with Session(engine) as s:
        numbers = s.scalars(select(Trial.number).where(Trial.study_id == sid)).all()
        assert sorted(numbers) == list(range(MAX_TRIALS)), "duplicate or missing trial numbers"
        states = Counter(s.scalars(select(Trial.state).where(Trial.study_id == sid)).all())
        assert set(states) <= {"completed", "stopped"}, states
        promos = Counter(
            (d.trial_id, d.rung)
            for d in s.scalars(
                select(DecisionLog).where(
                    DecisionLog.study_id == sid, DecisionLog.kind == "promote"
                )
            )
        )
        assert promos and max(promos.values()) == 1, "a trial was promoted twice out of a rung"
        stored = s.execute(
            select(Report.trial_id, Report.step).join(Trial).where(Trial.study_id == sid)
        ).all()
        assert sorted(stored) == sorted(set(sent)), "reports lost or stored twice"
        assert len(stored) == len(set(sent))
        n_reports = s.scalar(select(func.count()).select_from(Report))
        assert n_reports == len(set(sent))
        # Each trial's steps are 1..n without gaps or repeats: no trial ran twice at once.
        by_trial: dict[int, list[float]] = {}
        for tid, step in stored:
            by_trial.setdefault(tid, []).append(step)
        for tid, steps in by_trial.items():
            assert sorted(steps) == [float(i) for i in range(1, len(steps) + 1)], tid
            assert max(steps) <= 27
    engine.dispose()
