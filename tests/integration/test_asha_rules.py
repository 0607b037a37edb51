"""An ASHA study driven only through HTTP follows the paper's rules (Li et al. 2020).

The driver is a single worker, so its own record of every rung equals the server's at each
moment, and it checks every promotion against that record when it happens.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import API, checkpoint, curve, drive, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings

ETA = 3
RUNGS = [1.0, 3.0, 9.0, 27.0]


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


class Referee:
    """The driver's record of each rung, and the checks ASHA must pass."""

    def __init__(self) -> None:
        self.rungs: dict[int, dict[int, float]] = {k: {} for k in range(len(RUNGS))}
        self.promoted: set[tuple[int, int]] = set()
        self.waiting: set[tuple[int, int]] = set()  # (trial, rung) paused there
        self.promotions = 0
        self.max_step = 0.0

    def top(self, k: int) -> list[int]:
        entries = sorted(self.rungs[k].items(), key=lambda kv: (kv[1], kv[0]))
        return [tid for tid, _ in entries[: len(entries) // ETA]]

    def promotable(self) -> list[tuple[int, int]]:
        return [
            (tid, k)
            for k in range(len(RUNGS) - 1)
            for tid in self.top(k)
            if (tid, k) in self.waiting and (tid, k) not in self.promoted
        ]

    def check_promotion(self, tid: int, k: int, *, on_the_spot: bool) -> None:
        assert tid in self.top(k), f"trial {tid} promoted out of rung {k} but not in its top"
        assert (tid, k) not in self.promoted, f"trial {tid} promoted twice out of rung {k}"
        if not on_the_spot:
            # Highest rung first: nothing promotable may remain in a higher rung.
            higher = [p for p in self.promotable() if p[1] > k]
            assert not higher, f"promoted from rung {k} while {higher} waited higher up"
        self.promoted.add((tid, k))
        self.waiting.discard((tid, k))
        self.promotions += 1


def test_asha_promotes_only_the_top_and_prefers_promotions(http: TestClient) -> None:
    spec = study_spec(limits={"max_trials": 60, "max_concurrent": 1}, sampler={"seed": 11})
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    ref = Referee()
    saved: dict[tuple[int, int], str] = {}  # checkpoint locations by (trial, rung)
    new_trials = 0
    while True:
        r = http.post(f"{API}/studies/{sid}/next")
        if r.status_code == 409:
            break
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        tid = job["trial_id"]
        if job["kind"] == "new":
            assert not ref.promotable(), "a new trial started while a promotion was possible"
            new_trials += 1
            assert job["resource_from"] == 0 and job["resource_to"] == RUNGS[0]
        else:
            k = RUNGS.index(job["resource_from"])
            assert job["resource_to"] == RUNGS[k + 1]
            assert job["checkpoint"] == saved[(tid, k)]
            ref.check_promotion(tid, k, on_the_spot=False)
        step = int(job["resource_from"])
        to = job["resource_to"]
        while step < to:
            step += 1
            ref.max_step = max(ref.max_step, step)
            value = curve(job["params"], step)
            if float(step) in RUNGS:
                ref.rungs[RUNGS.index(step)][tid] = value
            ans = http.post(
                f"{API}/trials/{tid}/reports",
                json={"attempt": job["attempt"], "step": step, "value": value},
            ).json()
            if ans["decision"] == "continue" and ans["resource_to"] > to:
                ref.check_promotion(tid, RUNGS.index(step), on_the_spot=True)
                assert "promoted" in ans["reason"]
                to = ans["resource_to"]
            elif ans["decision"] == "pause":
                k = RUNGS.index(step)
                assert tid not in ref.top(k) or ref.promotable(), ans["reason"]
                ref.waiting.add((tid, k))
                saved[(tid, k)] = checkpoint(http, tid, job["attempt"], f"step {step}")
                http.post(
                    f"{API}/trials/{tid}/pause",
                    json={"attempt": job["attempt"], "checkpoint": saved[(tid, k)]},
                )
                break
            elif ans["decision"] == "complete":
                assert step == RUNGS[-1]
                break
            else:
                assert ans["decision"] == "continue", ans
    assert new_trials == 60
    assert ref.max_step <= RUNGS[-1]
    assert ref.promotions > 20
    assert len(ref.rungs[3]) >= 1
    # Every trial ends in a final state; promotable ones were all promoted before the end.
    study = http.get(f"{API}/studies/{sid}").json()
    assert study["state"] == "completed"
    assert study["counts"]["running"] == study["counts"]["paused"] == 0
    assert not ref.promotable()
    # Stored decisions agree with what the driver saw.
    trials = http.get(f"{API}/studies/{sid}/trials", params={"limit": 100}).json()["items"]
    promotes = 0
    for t in trials:
        d = http.get(f"{API}/trials/{t['id']}").json()
        promotes += sum(1 for x in d["decisions"] if x["kind"] == "promote")
        assert t["state"] in ("completed", "stopped")
    assert promotes == ref.promotions


def test_a_small_budget_ends_with_a_trial_at_max_resource(http: TestClient) -> None:
    """12 trials for rungs 1/3/9/27: rung 9 holds too few trials to promote by its quota, so
    once no trial can start and nothing runs, the best paused trial of the highest rung is
    promoted, and again, until one trial reaches 27."""
    spec = study_spec(limits={"max_trials": 12, "max_concurrent": 1}, sampler={"seed": 5})
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    jobs = drive(http, sid)
    assert sum(1 for j in jobs if j["kind"] == "new") == 12
    study = http.get(f"{API}/studies/{sid}").json()
    assert study["state"] == "completed"
    trials = http.get(f"{API}/studies/{sid}/trials", params={"limit": 100}).json()["items"]
    done = [t for t in trials if t["state"] == "completed"]
    assert len(done) == 1 and done[0]["resource"] == 27
    # The final promotions say why, and came only after the twelfth trial had started.
    detail = http.get(f"{API}/trials/{done[0]['id']}").json()
    finals = [d for d in detail["decisions"] if "as the study ends" in d["reason"]]
    assert finals, detail["decisions"]
    last_new = max(i for i, j in enumerate(jobs) if j["kind"] == "new")
    first_final = min(i for i, j in enumerate(jobs) if "as the study ends" in j["reason"])
    assert first_final > last_new
    # Every other trial ends stopped, none left paused.
    assert {t["state"] for t in trials} == {"completed", "stopped"}
