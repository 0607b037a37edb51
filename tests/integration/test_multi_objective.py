"""A study with two objectives and a constraint, driven through HTTP on SQLite and PostgreSQL.

Reports carry every objective's metric and the constrained one; rungs rank by fronts under
constraint-dominance (MO-ASHA), the trials keep every objective's value and whether they are
feasible, and model-based samplers learn from the vectors. A report that lacks a metric the
study needs is a 422 naming it, and changes nothing; a NaN in any objective fails the trial.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from tests.helpers import API, drive, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings
from tuneyard.store.models import DecisionLog, Observation, RungEntry, SamplerState, Trial

OBJECTIVES = [
    {"metric": "val_error", "direction": "minimize"},
    {"metric": "accuracy_proxy", "direction": "maximize"},
]
CONSTRAINTS = [{"metric": "gpu_mem_gb", "max": 16}]


def two_objectives(params: dict[str, Any], step: float) -> dict[str, float]:
    """A trade-off: x lowers the error and the proxy alike; y costs memory."""
    x, y = params["x"], params["y"]
    late = 0.5 / math.sqrt(step)
    return {
        "val_error": x + late,
        "accuracy_proxy": math.sqrt(x) - late,
        "gpu_mem_gb": 8 + 12 * y,
    }


def mo_spec(**overrides: Any) -> dict[str, Any]:
    spec = study_spec(
        **{
            "objectives": OBJECTIVES,
            "constraints": CONSTRAINTS,
            "sampler": {"type": "nsga2", "seed": 5},
            "limits": {"max_trials": 27, "max_concurrent": 4},
            **overrides,
        }
    )
    del spec["metric"], spec["direction"]
    return spec


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _start(http: TestClient, spec: dict[str, Any]) -> dict[str, Any]:
    """A new study's first job."""
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 201, r.text
    job = http.post(f"{API}/studies/{r.json()['id']}/next", json={"worker": "w0"})
    assert job.status_code == 200, job.text
    return dict(job.json())


def test_a_two_objective_study_with_a_constraint_runs_by_fronts(
    http: TestClient, settings: Settings
) -> None:
    r = http.post(f"{API}/studies", json=mo_spec())
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    drive(http, sid, objective=two_objectives)
    study = http.get(f"{API}/studies/{sid}").json()
    assert study["state"] == "completed"
    # Listed and read alone, a trial names each objective's value and says if it is feasible.
    listed = http.get(f"{API}/studies/{sid}/trials?limit=100").json()["items"]
    assert len(listed) == 27
    for item in listed:
        assert set(item["values"]) == {"val_error", "accuracy_proxy"}
        assert item["feasible"] == (8 + 12 * item["params"]["y"] <= 16)
        one = http.get(f"{API}/trials/{item['id']}").json()
        assert one["values"] == item["values"] and one["feasible"] == item["feasible"]
        assert one["infeasible"] == item["infeasible"]
    engine = create_engine(settings.database_url)
    with Session(engine) as s:
        trials = s.scalars(select(Trial).where(Trial.study_id == sid)).all()
        ended = [t for t in trials if t.values is not None]
        assert len(ended) == 27
        for t in ended:
            assert t.value == t.values[0]
            mem = 8 + 12 * t.params["y"]
            assert (t.violation == 0) == (mem <= 16)
            assert (t.infeasible is None) == (mem <= 16)
            if t.infeasible:
                assert t.infeasible.startswith("gpu_mem_gb ") and t.infeasible.endswith("> 16")
        entries = s.scalars(select(RungEntry).where(RungEntry.study_id == sid)).all()
        for e in entries:
            # Minimised: the maximised objective is negated.
            assert e.scores is not None and len(e.scores) == 2 and e.scores[0] == e.score
        assert any(e.violation > 0 for e in entries)
        reasons = s.scalars(select(DecisionLog.reason).where(DecisionLog.study_id == sid)).all()
        assert any("front " in why for why in reasons)
        assert any("(infeasible: gpu_mem_gb " in why for why in reasons)
        observed = s.scalars(select(Observation).where(Observation.study_id == sid)).all()
        assert observed and all(o.scores is not None and len(o.scores) == 2 for o in observed)
        assert any(o.violation > 0 for o in observed)
    engine.dispose()


def test_a_study_with_two_objectives_that_names_no_sampler_runs_motpe(
    http: TestClient, settings: Settings
) -> None:
    body = mo_spec(limits={"max_trials": 16, "max_concurrent": 2})
    del body["sampler"]
    r = http.post(f"{API}/studies", json=body)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["spec"]["sampler"]["type"] == "motpe"
    drive(http, sid, objective=two_objectives)
    assert http.get(f"{API}/studies/{sid}").json()["state"] == "completed"
    engine = create_engine(settings.database_url)
    with Session(engine) as s:
        assert s.get(SamplerState, sid) is not None  # the model was fed and kept
    engine.dispose()


def test_a_report_without_an_objective_is_refused_and_changes_nothing(http: TestClient) -> None:
    job = _start(http, mo_spec())
    tid = job["trial_id"]
    r = http.post(
        f"{API}/trials/{tid}/reports",
        json={"attempt": job["attempt"], "step": 1, "metrics": {"val_error": 0.3, "gpu_mem_gb": 9}},
    )
    assert r.status_code == 422, r.text
    assert "metrics.accuracy_proxy" in r.text and "missing" in r.text
    trial = http.get(f"{API}/trials/{tid}").json()
    assert trial["state"] == "running" and trial["value"] is None
    # The constrained metric is needed too.
    r = http.post(
        f"{API}/trials/{tid}/reports",
        json={
            "attempt": job["attempt"],
            "step": 1,
            "metrics": {"val_error": 0.3, "accuracy_proxy": 0.5},
        },
    )
    assert r.status_code == 422 and "metrics.gpu_mem_gb" in r.text
    ok = http.post(
        f"{API}/trials/{tid}/reports",
        json={
            "attempt": job["attempt"],
            "step": 1,
            "metrics": {"val_error": 0.3, "accuracy_proxy": 0.5, "gpu_mem_gb": 9},
        },
    )
    assert ok.status_code == 200, ok.text


def test_a_nan_in_any_objective_fails_the_trial(http: TestClient) -> None:
    job = _start(http, mo_spec())
    tid = job["trial_id"]
    r = http.post(
        f"{API}/trials/{tid}/reports",
        json={
            "attempt": job["attempt"],
            "step": 1,
            "metrics": {"val_error": 0.3, "accuracy_proxy": None, "gpu_mem_gb": 9},
        },
    )
    # null is a missing metric: refused
    assert r.status_code == 422
    r = http.post(
        f"{API}/trials/{tid}/reports",
        content=(
            f'{{"attempt": {job["attempt"]}, "step": 1, "metrics": {{"val_error": 0.3, '
            '"accuracy_proxy": NaN, "gpu_mem_gb": 9}}'
        ),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "stop"
    trial = http.get(f"{API}/trials/{tid}").json()
    assert trial["state"] == "failed"
    assert "accuracy_proxy" in trial["reason"] and "NaN" in trial["reason"]


def test_the_completion_of_a_trial_keeps_its_last_values(
    http: TestClient, settings: Settings
) -> None:
    job = _start(http, mo_spec(scheduler={"type": "fifo", "max_resource": 3}))
    tid, attempt = job["trial_id"], job["attempt"]
    for step in (1, 2):
        r = http.post(
            f"{API}/trials/{tid}/reports",
            json={
                "attempt": attempt,
                "step": step,
                "metrics": {"val_error": 0.5 / step, "accuracy_proxy": 0.1, "gpu_mem_gb": 20},
            },
        )
        assert r.status_code == 200, r.text
    r = http.post(f"{API}/trials/{tid}/complete", json={"attempt": attempt})
    assert r.status_code == 200, r.text
    trial = http.get(f"{API}/trials/{tid}").json()
    assert trial["state"] == "completed" and trial["value"] == 0.25
    engine = create_engine(settings.database_url)
    with Session(engine) as s:
        row = s.get(Trial, tid)
        assert row is not None
        assert row.values == [0.25, 0.1]
        assert row.violation == 4 and row.infeasible == "gpu_mem_gb 20 > 16"
    engine.dispose()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"scheduler": {"type": "median"}}, "scalarization"),
        ({"sampler": {"type": "cmaes"}}, "sampler.type"),
        ({"reference_point": [1.0]}, "reference_point"),
        ({"objectives": [OBJECTIVES[0], OBJECTIVES[0]]}, "objectives[1]"),
        ({"constraints": [{"metric": "val_error", "max": 1}]}, "constraints[0]"),
        ({"metric": "loss"}, "metric"),
    ],
)
def test_a_bad_multi_objective_definition_is_a_422_naming_the_field(
    http: TestClient, change: dict[str, Any], field: str
) -> None:
    spec = {**mo_spec(), **change}
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 422, r.text
    assert field in r.text


def test_the_median_rule_compares_the_weighted_sum_it_is_given(
    http: TestClient, settings: Settings
) -> None:
    spec = mo_spec(
        scheduler={
            "type": "median",
            "min_resource": 1,
            "max_resource": 9,
            "min_trials": 2,
            "scalarization": {"weights": [1.0, 0.5]},
        },
        constraints=[],
        limits={"max_trials": 12, "max_concurrent": 4},
    )
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    drive(http, sid, objective=two_objectives)
    engine = create_engine(settings.database_url)
    with Session(engine) as s:
        trials = s.scalars(select(Trial).where(Trial.study_id == sid)).all()
        for t in trials:
            assert t.values is not None
            error, proxy = t.values
            # The rule's running statistics hold the weighted sum of the minimised objectives
            # (the maximised proxy negated), so the best is at most the last one's sum.
            assert t.best_score is not None
            assert t.best_score <= error - 0.5 * proxy + 1e-9
        reasons = s.scalars(select(DecisionLog.reason).where(DecisionLog.study_id == sid)).all()
        assert any("median" in why for why in reasons), reasons
    engine.dispose()
