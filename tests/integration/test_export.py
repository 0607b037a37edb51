"""The CSV export of a study's trials, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import API, drive, study_spec
from tuneyard.api.app import create_app
from tuneyard.api.routes import CSV_COLUMNS
from tuneyard.service.studies import StudyService
from tuneyard.settings import Settings

FIELDS = list(CSV_COLUMNS)
SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "y": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
    "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"opt": "sgd"}},
}


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def rows(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    found = list(reader)
    return list(reader.fieldnames or []), found


def every_trial(http: TestClient, sid: int) -> list[dict[str, Any]]:
    r = http.get(f"{API}/studies/{sid}/trials", params={"limit": 1000})
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_export_has_a_row_per_trial_with_its_params_and_state(
    http: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small pages, so the export goes through several of them.
    pages = StudyService.iter_trials
    monkeypatch.setattr(
        StudyService, "iter_trials", lambda self, sid, page_size=0: pages(self, sid, 4)
    )
    spec = study_spec(
        space=SPACE,
        scheduler={"max_resource": 3},  # two rungs: some trials complete, the others stop
        limits={"max_trials": 14, "max_concurrent": 2},
    )
    sid = http.post(f"{API}/studies", json=spec).json()["id"]
    drive(http, sid)

    r = http.get(f"{API}/studies/{sid}/trials.csv")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    assert f'filename="study-{sid}-trials.csv"' in r.headers["content-disposition"]
    header, found = rows(r.text)
    assert header == [*FIELDS, "param_x", "param_y", "param_opt", "param_momentum"]

    trials = every_trial(http, sid)
    assert len(found) == len(trials) == 14
    assert [int(row["number"]) for row in found] == [t["number"] for t in trials]
    states = set()
    for row, t in zip(found, trials, strict=True):
        assert int(row["id"]) == t["id"]
        assert row["state"] == t["state"]
        states.add(row["state"])
        assert float(row["value"]) == t["value"]
        assert int(row["rung"]) == t["rung"] and int(row["attempts"]) == t["attempts"]
        assert row["reason"] == (t["reason"] or "")
        assert float(row["param_x"]) == t["params"]["x"]
        assert float(row["param_y"]) == t["params"]["y"]
        assert row["param_opt"] == t["params"]["opt"]
        if t["params"]["opt"] == "sgd":
            assert float(row["param_momentum"]) == t["params"]["momentum"]
        else:
            assert row["param_momentum"] == "", "an inactive parameter is an empty cell"
    assert {t["params"]["opt"] for t in trials} == {"sgd", "adam"}
    assert states == {"completed", "stopped"}, states


def test_a_study_without_trials_exports_only_the_header(http: TestClient) -> None:
    sid = http.post(f"{API}/studies", json=study_spec()).json()["id"]
    r = http.get(f"{API}/studies/{sid}/trials.csv")
    assert r.status_code == 200, r.text
    header, found = rows(r.text)
    assert header == [*FIELDS, "param_x", "param_y", "param_kind"] and found == []


def test_an_unknown_study_is_a_problem_404(http: TestClient) -> None:
    r = http.get(f"{API}/studies/999/trials.csv")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "999" in r.json()["detail"]
