"""`tuneyard study watch` and `tuneyard study export` against a fake API."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.fake_api import FakeApi, problem, run, study_json, trial_json
from tuneyard.cli import common
from tuneyard.client import Client

CSV = "number,id,state,param_lr\r\n0,100,completed,0.01\r\n1,101,stopped,0.02\r\n"


def polls(*studies: dict[str, object]) -> object:
    """A GET /studies/1 route giving the studies in turn, the last one from then on."""
    answers = list(studies)

    def route(req: httpx.Request) -> httpx.Response:
        body = answers.pop(0) if len(answers) > 1 else answers[0]
        return httpx.Response(200, json=body)

    return route


# -- watch ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("end", ["completed", "stopped"])
def test_watch_polls_until_the_study_ends_then_prints_a_summary(api: FakeApi, end: str) -> None:
    spec = {**study_json()["spec"], "limits": {"max_trials": 6}}
    api.on(
        "GET",
        "/studies/1",
        polls(
            study_json(spec=spec, counts={"queued": 1, "running": 2}, best=None),
            study_json(spec=spec, counts={"running": 2, "completed": 3}),
            study_json(spec=spec, state=end, counts={"completed": 4, "stopped": 1, "failed": 1}),
        ),
    )
    r = run("study", "watch", "1", "--interval", "0")
    assert r.exit_code == 0, r.output
    assert len(api.requests) == 3, "one poll per interval until the study is over"
    summary = [line for line in r.output.splitlines() if line.startswith("study 1 ")]
    assert summary == [
        f"study 1 {end}: 6/6 trials done (4 completed, 1 stopped, 1 failed); "
        "best loss 0.25 (trial #0)"
    ]


def test_watch_not_on_a_terminal_prints_a_plain_line_per_change(api: FakeApi) -> None:
    """Piped (as under CliRunner), no live display: a line when the progress changes, none
    while it stays the same."""
    spec = {**study_json()["spec"], "limits": {"max_trials": 4}}
    same = study_json(spec=spec, counts={"running": 2}, best=None)
    api.on(
        "GET",
        "/studies/1",
        polls(
            same,
            same,
            study_json(spec=spec, counts={"running": 1, "completed": 1}),
            study_json(spec=spec, state="completed", counts={"completed": 4}),
        ),
    )
    r = run("study", "watch", "1", "--interval", "0")
    assert r.exit_code == 0, r.output
    assert len(api.requests) == 4
    lines = [ln[9:] for ln in r.output.splitlines() if re.match(r"\d\d:\d\d:\d\d trials ", ln)]
    assert lines == [
        "trials 0/4  running 2  paused 0  queued 0  failed 0  best loss -  [running]",
        "trials 1/4  running 1  paused 0  queued 0  failed 0  best loss 0.2500  [running]",
        "trials 4/4  running 0  paused 0  queued 0  failed 0  best loss 0.2500  [completed]",
    ]
    assert "\x1b" not in r.output and "━" not in r.output, "no live bar"


def test_watch_keeps_going_while_the_study_is_paused(api: FakeApi) -> None:
    api.on(
        "GET",
        "/studies/1",
        polls(
            study_json(state="paused"),
            study_json(state="paused"),
            study_json(state="completed", best=None),
        ),
    )
    r = run("study", "watch", "1", "--interval", "0")
    assert r.exit_code == 0, r.output
    assert len(api.requests) == 3
    assert "study 1 completed: 3/" in r.output and "no completed trial" in r.output


def test_watch_ctrl_c_exits_130_quietly(api: FakeApi) -> None:
    seen: list[int] = []

    def route(req: httpx.Request) -> httpx.Response:
        seen.append(1)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return httpx.Response(200, json=study_json())

    api.on("GET", "/studies/1", route)
    r = run("study", "watch", "1", "--interval", "0")
    assert r.exit_code == 130
    assert "Traceback" not in r.output and "study 1 " not in r.output


def test_watch_of_an_unknown_study_exits_1_with_the_detail(api: FakeApi) -> None:
    api.on("GET", "/studies/9", problem(404, "study 9 does not exist"))
    r = run("study", "watch", "9", "--interval", "0")
    assert r.exit_code == 1
    assert "study 9 does not exist" in r.output


def test_watch_with_the_api_down_exits_1_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=req)

    monkeypatch.setattr(
        common,
        "make_client",
        lambda url: Client(url, transport=httpx.MockTransport(refused), retries=0),
    )
    r = run("--api", "http://127.0.0.1:9", "study", "watch", "1", "--interval", "0")
    assert r.exit_code == 1
    assert "cannot reach the API" in r.output and "tuneyard server" in r.output


# -- export --------------------------------------------------------------------------------------
def csv_route(api: FakeApi) -> None:
    api.on(
        "GET",
        "/studies/1/trials.csv",
        httpx.Response(200, text=CSV, headers={"content-type": "text/csv; charset=utf-8"}),
    )


def test_export_csv_to_stdout(api: FakeApi) -> None:
    csv_route(api)
    r = run("study", "export", "1", "--format", "csv")
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes == CSV.encode(), "the bytes as the API sent them"


def test_export_csv_to_a_file(api: FakeApi, tmp_path: Path) -> None:
    csv_route(api)
    out = tmp_path / "trials.csv"
    r = run("study", "export", "1", "--format", "csv", "--output", str(out))
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == CSV.encode()
    assert r.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == ["trials.csv"]


def test_export_failure_leaves_no_file(api: FakeApi, tmp_path: Path) -> None:
    api.on("GET", "/studies/9/trials.csv", problem(404, "study 9 does not exist"))
    out = tmp_path / "trials.csv"
    r = run("study", "export", "9", "--output", str(out))
    assert r.exit_code == 1
    assert "study 9 does not exist" in r.output
    assert list(tmp_path.iterdir()) == []


def trial_pages(req: httpx.Request) -> httpx.Response:
    """Two pages of trials: 0 and 1, then 2."""
    if req.url.params.get("cursor") == "c1":
        return httpx.Response(200, json={"items": [trial_json(2)], "next_cursor": None})
    return httpx.Response(200, json={"items": [trial_json(0), trial_json(1)], "next_cursor": "c1"})


def test_export_json_fetches_every_page(api: FakeApi) -> None:
    api.on("GET", "/studies/1/trials", trial_pages)
    r = run("study", "export", "1", "--format", "json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [t["number"] for t in data] == [0, 1, 2]
    assert data[0]["params"] == {"lr": 0.01, "opt": "adam"} and data[0]["state"] == "completed"
    assert len(api.requests) == 2


def test_export_json_to_a_file_and_of_no_trials(api: FakeApi, tmp_path: Path) -> None:
    api.on("GET", "/studies/1/trials", trial_pages)
    api.on("GET", "/studies/2/trials", httpx.Response(200, json={"items": [], "next_cursor": None}))
    out = tmp_path / "t.json"
    assert run("study", "export", "1", "--format", "json", "-o", str(out)).exit_code == 0
    assert [t["id"] for t in json.loads(out.read_text())] == [100, 101, 102]
    r = run("study", "export", "2", "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout) == []
