"""What the CLI says of a study's outcome: the warnings of ``study create``, and the state, the
reason, the error and the best per rung of ``study show``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.fake_api import SPEC, FakeApi, run, study_json

WARNING = "limits.max_trials (24) is too small for scheduler asha with reduction_factor 3"
FAILING = study_json(
    3,
    state="failing",
    reason="failing: the first 3 trials failed with the same error",
    best=None,
    error={
        "summary": "AttributeError: module 'train' has no attribute 'train_slow'",
        "type": "AttributeError",
        "trial_id": 41,
        "count": 3,
    },
    best_by_rung=[],
)


def test_create_prints_the_servers_warnings(api: FakeApi, tmp_path: Path) -> None:
    f = tmp_path / "study.json"
    f.write_text(json.dumps(SPEC))
    api.on("POST", "/studies", httpx.Response(201, json=study_json(7, warnings=[WARNING])))
    r = run("study", "create", "-f", str(f))
    assert r.exit_code == 0, r.output
    assert "created study 7" in r.output
    assert f"warning: {WARNING}" in " ".join(r.output.split())


def test_show_of_a_failing_study_names_the_error_its_class_and_trial(api: FakeApi) -> None:
    api.on("GET", "/studies/3", httpx.Response(200, json=FAILING))
    r = run("study", "show", "3")
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "study 3: demo failing" in out
    assert "error: AttributeError: module 'train' has no attribute 'train_slow'" in out
    assert "AttributeError, last from trial id 41, 3 trial(s) in a row" in out
    assert "tuneyard study resume 3" in out and "tuneyard trial show 41" in out
    assert "best: - (no completed trial yet)" in out


def test_show_of_a_study_that_failed_says_no_trial_completed(api: FakeApi) -> None:
    body = FAILING | {"state": "failed", "reason": "no trial completed: all 4 trials failed"}
    api.on("GET", "/studies/3", httpx.Response(200, json=body))
    out = " ".join(run("study", "show", "3").output.split())
    assert "demo failed" in out and "reason: no trial completed: all 4 trials failed" in out
    assert "best: - (no completed trial)" in out and "resume" not in out


def test_show_lists_the_best_value_at_each_rung(api: FakeApi) -> None:
    rungs = [
        {"rung": 0, "resource": 1, "entries": 9, "value": 0.61, "trial_id": 12, "number": 4},
        {"rung": 1, "resource": 3, "entries": 3, "value": 0.42, "trial_id": 10, "number": 2},
    ]
    api.on("GET", "/studies/1", httpx.Response(200, json=study_json(best_by_rung=rungs)))
    out = " ".join(run("study", "show", "1").output.split())
    assert "rung 0: best loss=0.61 at resource 1 (trial 4, id 12; 9 reached it)" in out
    assert "rung 1: best loss=0.42 at resource 3 (trial 2, id 10; 3 reached it)" in out
    assert "the best completed trial" in out


def test_watch_ends_when_the_study_starts_failing(api: FakeApi) -> None:
    # It would wait forever otherwise: a failing study starts nothing until resumed.
    api.on("GET", "/studies/3", httpx.Response(200, json=FAILING))
    r = run("study", "watch", "3", "--interval", "0")
    assert len(api.requests) == 1, r.output
    assert "study 3 failing" in r.output
