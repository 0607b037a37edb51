"""What the CLI prints of a study with several objectives: ``study pareto`` (the front as a
table, its size and hypervolume) and the front's line in ``study show``."""

from __future__ import annotations

from typing import Any

import httpx

from tests.fake_api import SPEC, FakeApi, problem, run, study_json, trial_json

OBJECTIVES = [
    {"metric": "err", "direction": "minimize"},
    {"metric": "latency_ms", "direction": "maximize"},
]
MO_SPEC = {
    **SPEC,
    "metric": "err",
    "objectives": OBJECTIVES,
    "constraints": [{"metric": "gpu_mem_gb", "max": 16}],
    "sampler": {"type": "nsga2"},
}


def front_json(**over: Any) -> dict[str, Any]:
    return {
        "objectives": OBJECTIVES,
        "size": 2,
        "hypervolume": 1.25,
        "reference_point": [1.0, 0.0],
        "reference_derived": True,
        "resource": None,
        "trials": [
            trial_json(3, values={"err": 0.125, "latency_ms": 40.0}, feasible=True),
            trial_json(8, values={"err": 0.25, "latency_ms": 55.5}, feasible=True),
        ],
        **over,
    }


def flat(text: str) -> str:
    return " ".join(text.split())


def test_pareto_prints_the_front_with_each_objectives_direction(api: FakeApi) -> None:
    api.on("GET", "/studies/4/pareto", httpx.Response(200, json=front_json()))
    r = run("study", "pareto", "4")
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert "err ↓" in out and "latency_ms ↑" in out
    assert "3 │ 0.125 │ 40 │ lr=0.01 opt=adam" in out
    assert "8 │ 0.25 │ 55.5 │" in out
    assert (
        "front: 2 trials, hypervolume 1.25 (reference point err=1, latency_ms=0; derived "
        "from the trials)" in out
    )
    assert "resource" not in api.requests[0].url.params


def test_pareto_at_a_rung_asks_for_its_resource_and_says_so(api: FakeApi) -> None:
    given = front_json(resource=9.0, reference_derived=False, size=1, trials=[])
    api.on("GET", "/studies/4/pareto", httpx.Response(200, json=given))
    r = run("study", "pareto", "4", "--resource", "9")
    assert r.exit_code == 0, r.output
    assert api.requests[0].url.params["resource"] == "9.0"
    out = flat(r.output)
    assert "Pareto front at resource 9" in out
    assert "rung: 1 trial, hypervolume 1.25 (reference point err=1, latency_ms=0)" in out


def test_pareto_of_an_unknown_rung_prints_the_servers_reason(api: FakeApi) -> None:
    detail = "resource: the study has no rung at 5; its rungs' resources: 1, 3, 9"
    api.on("GET", "/studies/4/pareto", problem(422, detail))
    r = run("study", "pareto", "4", "--resource", "5")
    assert r.exit_code == 1
    assert "its rungs' resources: 1, 3, 9" in flat(r.output)


def test_show_of_a_multi_objective_study_prints_its_front_not_a_best_trial(
    api: FakeApi,
) -> None:
    summary = {k: v for k, v in front_json().items() if k not in ("resource", "trials")}
    body = study_json(4, spec=MO_SPEC, pareto=summary)
    api.on("GET", "/studies/4", httpx.Response(200, json=body))
    r = run("study", "show", "4")
    assert r.exit_code == 0, r.output
    out = flat(r.output)
    assert "objectives: minimize err, maximize latency_ms" in out
    assert "constraints: gpu_mem_gb <= 16" in out
    assert "front: 2 trials, hypervolume 1.25 (reference point err=1, latency_ms=0; derived" in out
    assert "tuneyard study pareto 4" in out
    assert "best:" not in out


def test_show_of_a_single_objective_study_is_unchanged(api: FakeApi) -> None:
    api.on("GET", "/studies/1", httpx.Response(200, json=study_json()))
    out = flat(run("study", "show", "1").output)
    assert "objective: minimize loss" in out
    assert "best: trial 0 (id 100) loss=0.25 at resource 27, the best completed trial" in out
    assert "front:" not in out and "objectives:" not in out


def test_watch_of_a_multi_objective_study_ends_with_its_front(api: FakeApi) -> None:
    summary = {k: v for k, v in front_json().items() if k not in ("resource", "trials")}
    body = study_json(4, spec=MO_SPEC, pareto=summary, state="completed")
    api.on("GET", "/studies/4", httpx.Response(200, json=body))
    out = flat(run("study", "watch", "4", "--interval", "0").output)
    summary_line = out[out.index("study 4 completed") :]
    assert "front 2 trials, hypervolume 1.25" in summary_line
    assert "best err" not in summary_line
