"""Population-based training driven through HTTP on SQLite and PostgreSQL: members pause at
every interval boundary and resume at once; a member in the bottom quantile resumes from a
copy of a top member's checkpoint with explored parameters, and its first report continues
the donor's curve; the lineage and the replayable schedule say what happened."""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from tests.helpers import API, archive
from tuneyard.api.app import create_app
from tuneyard.settings import Settings
from tuneyard.store.models import DecisionLog, PopulationStep, Trial

LR = 0.2


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def pbt_spec(kind: str = "pbt", **scheduler: Any) -> dict[str, Any]:
    """The PBT paper's toy: theta descends the surrogate weighted by h; the loss is the true
    quadratic. ``arch`` is fixed over a member's life and must never change."""
    return {
        "name": "toy population",
        "metric": "loss",
        "space": {
            "h0": {"type": "float", "low": 0.0, "high": 1.0},
            "h1": {"type": "float", "low": 0.0, "high": 1.0},
            "arch": {"type": "categorical", "choices": ["a"], "mutable": False},
        },
        "sampler": {"type": "random", "seed": 5},
        "scheduler": {
            "type": kind,
            "population": 6,
            "interval": 2,
            "max_resource": 16,
            "quantile": 0.34,
            **scheduler,
        },
        "limits": {"max_concurrent": 3},
    }


def _state(http: TestClient, tid: int, location: str) -> dict[str, Any]:
    """What a worker restores: the archive the location names, downloaded and read."""
    owner, digest = location.removeprefix("api:").split("/")
    assert int(owner) == tid  # a clone is the member's own archive
    r = http.get(f"{API}/trials/{tid}/checkpoint/{digest}")
    assert r.status_code == 200, r.text
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
        f = tar.extractfile("state.json")
        assert f is not None
        state: dict[str, Any] = json.loads(f.read())
    return state


def run(
    http: TestClient, job: dict[str, Any], saved: dict[tuple[int, float], dict[str, Any]]
) -> str:
    """One job of a member: restore the checkpoint, train, report every step, save at a pause.
    ``saved`` keeps what each member saved at each boundary, to check the clones against."""
    tid, attempt, params = job["trial_id"], job["attempt"], job["params"]
    if job["checkpoint"]:
        state = _state(http, tid, job["checkpoint"])
        # The checkpoint is at the resource the job starts from: its own, or its donor's.
        assert state["step"] == job["resource_from"]
        assert state == saved[(state["owner"], state["step"])]
    else:
        assert job["resource_from"] == 0
        state = {"owner": tid, "step": 0, "theta": [0.9, 0.9]}
    theta = list(state["theta"])
    step = int(job["resource_from"])
    while True:
        step += 1
        theta = [
            t - LR * 2 * h * t for t, h in zip(theta, (params["h0"], params["h1"]), strict=True)
        ]
        loss = theta[0] ** 2 + theta[1] ** 2
        r = http.post(
            f"{API}/trials/{tid}/reports", json={"attempt": attempt, "step": step, "value": loss}
        )
        assert r.status_code == 200, r.text
        decision = r.json()["decision"]
        if decision == "pause":
            mine = {"owner": tid, "step": step, "theta": theta}
            saved[(tid, float(step))] = mine
            put = http.put(
                f"{API}/trials/{tid}/checkpoint",
                params={"attempt": attempt},
                content=archive(json.dumps(mine).encode(), name="state.json"),
            )
            assert put.status_code == 201, put.text
            p = http.post(
                f"{API}/trials/{tid}/pause",
                json={"attempt": attempt, "checkpoint": put.json()["location"]},
            )
            assert p.status_code == 200, p.text
            return "pause"
        if decision in ("complete", "stop"):
            return str(decision)


def drive(http: TestClient, sid: int, workers: int = 3) -> list[dict[str, Any]]:
    saved: dict[tuple[int, float], dict[str, Any]] = {}
    jobs: list[dict[str, Any]] = []
    for turn in range(2_000):
        r = http.post(f"{API}/studies/{sid}/next", json={"worker": f"w{turn % workers}"})
        if r.status_code == 409:
            return jobs
        if r.status_code == 204:
            continue
        assert r.status_code == 200, r.text
        jobs.append(r.json())
        run(http, jobs[-1], saved)
    raise AssertionError("the study did not finish")


@pytest.mark.parametrize("kind", ["pbt", "pb2"])
def test_members_exploit_a_better_members_checkpoint_and_continue_its_curve(
    http: TestClient, settings: Settings, kind: str
) -> None:
    r = http.post(f"{API}/studies", json=pbt_spec(kind))
    assert r.status_code == 201, r.text
    study = r.json()
    sid = study["id"]
    assert study["spec"]["limits"]["max_trials"] == 6  # the population's members
    jobs = drive(http, sid)
    assert http.get(f"{API}/studies/{sid}").json()["state"] == "completed"
    assert len({j["trial_id"] for j in jobs}) == 6
    # Every member trained 8 intervals: one job each, none repeated.
    assert len(jobs) == 6 * 8

    engine = create_engine(settings.database_url)
    with Session(engine) as s:
        trials = {t.id: t for t in s.scalars(select(Trial).where(Trial.study_id == sid))}
        steps = s.scalars(select(PopulationStep).where(PopulationStep.study_id == sid)).all()
        logged = s.scalars(select(DecisionLog).where(DecisionLog.study_id == sid)).all()
    assert all(t.state == "completed" for t in trials.values())
    # One step per member and boundary below the top.
    assert len(steps) == 6 * 7
    exploits = [x for x in steps if x.decision == "exploit"]
    assert exploits, "no member ever exploited"
    for x in exploits:
        donor = next(d for d in steps if d.trial_id == x.donor_id and d.resource == x.resource)
        # Cloned from a member at least as good at the same boundary (one that had exploited
        # there holds its own donor's checkpoint and score); the fixed parameter kept.
        held = donor.donor_score if donor.decision == "exploit" else donor.score
        assert held is not None and x.score is not None and held <= x.score
        assert x.donor_score == held
        assert x.new_params["arch"] == "a" == x.params["arch"]
        assert 0.0 <= x.new_params["h0"] <= 1.0 and 0.0 <= x.new_params["h1"] <= 1.0
        assert x.reason.startswith(f"exploit at {x.resource:g}:")
        # The member's next job ran with the explored parameters.
        later = [
            j for j in jobs if j["trial_id"] == x.trial_id and j["resource_from"] == x.resource
        ]
        assert len(later) == 1 and later[0]["params"] == x.new_params
    kinds = {e.kind for e in logged}
    assert {"exploit", "keep"} <= kinds

    # The lineage of an exploiting member, and the best member's replayable schedule.
    # (its last exploit: before it, the schedule is the donor's)
    x = max((e for e in exploits if e.trial_id == exploits[0].trial_id), key=lambda e: e.resource)
    lineage = http.get(f"{API}/trials/{x.trial_id}/lineage").json()
    assert [s["resource"] for s in lineage["steps"]] == [2.0 * k for k in range(1, 8)]
    step = next(s for s in lineage["steps"] if s["resource"] == x.resource)
    assert step["decision"] == "exploit" and step["donor_trial_id"] == x.donor_id
    sched = lineage["schedule"]
    assert sched[0]["resource"] == 0.0
    assert any(p["resource"] == x.resource and p["params"] == x.new_params for p in sched)
    best = http.get(f"{API}/studies/{sid}/schedule").json()
    values = [t.value for t in trials.values() if t.value is not None]
    assert math.isclose(best["value"], min(values))
    pop = http.get(f"{API}/studies/{sid}/population").json()
    assert pop["members"] == 6 and pop["steps"] == 6 * 7
    assert len(pop["exploits"]) == len(exploits)
    assert pop["best"]["trial_id"] == best["trial_id"]


def test_a_population_that_names_no_sampler_is_drawn_at_random(http: TestClient) -> None:
    body = pbt_spec()
    del body["sampler"]
    r = http.post(f"{API}/studies", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["sampler"]["type"] == "random"
    members = drive(http, r.json()["id"])
    assert len({m["trial_id"] for m in members}) == 6


def test_a_study_without_a_population_has_no_lineage(http: TestClient) -> None:
    from tests.helpers import study_spec

    sid = http.post(f"{API}/studies", json=study_spec()).json()["id"]
    r = http.get(f"{API}/studies/{sid}/population")
    assert r.status_code == 409 and "pbt or pb2" in r.json()["detail"]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"limits": {"max_trials": 9}}, "limits.max_trials", "population (6 members)"),
        (
            {"scheduler": {"type": "pbt", "interval": 2, "max_resource": 16}},
            "population",
            "needs it",
        ),
        (
            {"scheduler": {"type": "pbt", "population": 6, "interval": 16, "max_resource": 16}},
            "interval",
            "smaller than max_resource",
        ),
        ({"scheduler": {"type": "asha"}}, "space.arch.mutable", "pbt or pb2 scheduler only"),
        (
            {
                "scheduler": {
                    "type": "pbt",
                    "population": 6,
                    "interval": 2,
                    "max_resource": 16,
                    "explore": {"perturb": [1.1, 1.2]},
                }
            },
            "perturb",
            "straddle 1",
        ),
    ],
)
def test_a_bad_population_definition_is_refused_naming_the_field(
    http: TestClient, change: dict[str, Any], field: str, words: str
) -> None:
    spec = {**pbt_spec(), **change}
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 422, r.text
    text = json.dumps(r.json())
    assert field in text and words in text


def test_the_cli_prints_a_lineage_and_writes_the_best_schedule(
    http: TestClient, settings: Settings, tmp_path: Any
) -> None:
    from typer.testing import CliRunner

    from tests.helpers import serve
    from tuneyard import cli

    sid = http.post(f"{API}/studies", json=pbt_spec()).json()["id"]
    drive(http, sid)
    pop = http.get(f"{API}/studies/{sid}/population").json()
    member = pop["exploits"][0]
    runner = CliRunner()
    env = {"COLUMNS": "400", "NO_COLOR": "1"}
    out = tmp_path / "schedule.json"
    with serve(create_app(settings)) as url:
        show = runner.invoke(
            cli.app, ["trial", "show", str(member["trial_id"]), "--api", url], env=env
        )
        sched = runner.invoke(
            cli.app, ["study", "schedule", str(sid), "--api", url, "-o", str(out)], env=env
        )
    assert show.exit_code == 0, show.output
    assert "lineage" in show.output
    assert f"exploit ← #{member['donor_number']}" in show.output
    assert sched.exit_code == 0, sched.output
    written = json.loads(out.read_text())
    assert written == [
        {"resource": s["resource"], "params": s["params"]} for s in pop["best"]["schedule"]
    ]
    assert written[0]["resource"] == 0.0
