"""What the API, the CSV export and the CLI show of a study whose trials are evaluated on
folds, on SQLite and PostgreSQL: each trial's value with its spread and its per-fold table
(whose aggregate is the stored value), its replicates as jobs with their curves, the trials
racing stopped and after how many folds, and a column per fold in the CSV."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from bench.hot_paths import QueryCounter
from tests.helpers import API, checkpoint, serve, study_spec
from tuneyard import cli
from tuneyard.api.app import create_app
from tuneyard.api.routes import FoldColumns, _csv_chunks
from tuneyard.service.context import Toolkit
from tuneyard.service.replicate_results import replicate_column
from tuneyard.service.studies import StudyService
from tuneyard.settings import Settings
from tuneyard.spec.evaluation import EvaluationSpec
from tuneyard.store.db import make_engine, make_sessionmaker

FOLD_DIFFICULTY = [0.0, 0.08, -0.05, 0.12, 0.03]
RACED = re.compile(r"stopped after fold (\d) of 5: ")


def cv_loss(params: dict[str, Any], step: float, replicate: dict[str, Any]) -> float:
    """A learning curve whose final quality the params set, shifted by the fold's difficulty."""
    final = (params["x"] - 0.3) ** 2 + 0.1 * abs(math.log10(params["y"]) + 1.5)
    return final + FOLD_DIFFICULTY[replicate["fold"]] + 0.5 / math.sqrt(step)


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def run(http: TestClient, job: dict[str, Any]) -> None:
    """One replicate's job: report each integer step with the fold the job names."""
    tid, attempt = job["trial_id"], job["attempt"]
    step, to = int(job["resource_from"]), job["resource_to"]
    while step < to:
        step += 1
        value = cv_loss(job["params"], step, job["replicate"])
        r = http.post(
            f"{API}/trials/{tid}/reports",
            content=json.dumps({"attempt": attempt, "step": step, "value": value}),
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 200, r.text
        ans = r.json()
        if ans["decision"] == "pause":
            p = http.post(
                f"{API}/trials/{tid}/pause",
                json={"attempt": attempt, "checkpoint": checkpoint(http, tid, attempt, str(step))},
            )
            assert p.status_code == 200, p.text
            return
        if ans["decision"] in ("stop", "complete"):
            return
        to = ans["resource_to"] or to
    r = http.post(f"{API}/trials/{tid}/complete", json={"attempt": attempt})
    assert r.status_code == 200, r.text


def drive(http: TestClient, sid: int) -> None:
    """One worker asking for jobs and running them until the study is over."""
    for _ in range(5_000):
        r = http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"})
        if r.status_code == 409:
            return
        if r.status_code == 204:
            continue
        assert r.status_code == 200, r.text
        run(http, r.json())
    raise AssertionError("the study did not finish")


@pytest.fixture
def raced_study(http: TestClient) -> int:
    """Five folds, one at a time, with racing: some trials complete, some are raced out."""
    spec = study_spec(
        evaluation={"folds": 5, "racing": {"confidence": 0.95}},
        scheduler={"type": "fifo", "max_resource": 3},
        limits={"max_trials": 16, "max_concurrent": 2},
    )
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 201, r.text
    sid = int(r.json()["id"])
    drive(http, sid)
    return sid


def _trials(http: TestClient, sid: int) -> list[dict[str, Any]]:
    r = http.get(f"{API}/studies/{sid}/trials", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def test_a_trials_detail_shows_its_folds_and_its_aggregate_is_their_mean(
    http: TestClient, raced_study: int
) -> None:
    trials = _trials(http, raced_study)
    completed = [t for t in trials if t["state"] == "completed"]
    assert completed
    for row in completed:
        t = http.get(f"{API}/trials/{row['id']}").json()
        assert [r["index"] for r in t["replicates"]] == [0, 1, 2, 3, 4]
        assert [r["label"] for r in t["replicates"]] == [f"fold {i}/5" for i in range(1, 6)]
        assert [r["fold"] for r in t["replicates"]] == [0, 1, 2, 3, 4]
        finals = [r["value"] for r in t["replicates"]]
        assert t["value"] == pytest.approx(statistics.mean(finals))
        assert t["value_std"] == pytest.approx(statistics.stdev(finals))
        assert t["value_stderr"] == pytest.approx(statistics.stdev(finals) / math.sqrt(5))
        assert (t["replicates_run"], t["replicates_total"], t["raced"]) == (5, 5, False)
        # The per-fold table: at each level the aggregate is the mean of the folds there, and
        # at the last level it is the trial's value.
        assert t["levels"]
        for lv in t["levels"]:
            assert lv["complete"] and lv["n"] == 5 and None not in lv["values"]
            assert lv["value"] == pytest.approx(statistics.mean(lv["values"]))
            assert lv["std"] == pytest.approx(statistics.stdev(lv["values"]))
        assert t["levels"][-1]["value"] == pytest.approx(t["value"])
        assert t["levels"][-1]["values"] == pytest.approx(finals)
        # Each fold's curve is its reports; the last point is its final value.
        for rep in t["replicates"]:
            assert [p["step"] for p in rep["curve"]] == [1, 2, 3]
            assert rep["curve"][-1]["value"] == pytest.approx(rep["value"])
            assert rep["state"] == "completed" and rep["attempts"] == 1
    # The list shows the same spread and marks.
    for row in completed:
        assert row["value_stderr"] is not None and row["replicates_run"] == 5
        assert row["raced"] is False


def test_raced_out_trials_are_marked_with_the_folds_they_ran(
    http: TestClient, raced_study: int
) -> None:
    trials = _trials(http, raced_study)
    raced = [t for t in trials if t["raced"]]
    assert raced, [t["reason"] for t in trials]
    for row in trials:
        m = RACED.match(row["reason"] or "")
        assert row["raced"] == (m is not None and row["state"] == "stopped")
    for row in raced:
        ran = int(RACED.match(row["reason"]).group(1))  # type: ignore[union-attr]
        assert row["replicates_run"] == ran and row["replicates_total"] == 5
        t = http.get(f"{API}/trials/{row['id']}").json()
        assert t["raced"] and t["replicates_run"] == ran
        # The folds after the test never ran: none of them is in the table.
        last = t["levels"][-1]
        assert not last["complete"] and last["n"] == ran
        assert [v is not None for v in last["values"]] == [i < ran for i in range(5)]
        assert last["value"] == pytest.approx(statistics.mean(last["values"][:ran]))
        assert len([r for r in t["replicates"] if r["state"] == "completed"]) == ran


def test_a_replicates_own_detail_names_its_trial_fold_and_seed(
    http: TestClient, raced_study: int
) -> None:
    row = next(t for t in _trials(http, raced_study) if t["state"] == "completed")
    parent = http.get(f"{API}/trials/{row['id']}").json()
    assert parent["parent_id"] is None and parent["fold"] is None
    rep = parent["replicates"][2]
    child = http.get(f"{API}/trials/{rep['id']}")
    assert child.status_code == 200, child.text
    c = child.json()
    assert (c["parent_id"], c["replicate"], c["fold"], c["seed"]) == (row["id"], 2, 2, None)
    assert c["number"] == row["number"] and c["replicates"] is None and c["levels"] is None
    assert [r["step"] for r in c["reports"]] == [p["step"] for p in rep["curve"]]
    assert len(c["attempt_log"]) == 1 and c["attempt_log"][0]["worker"] == "w0"


def test_the_csv_has_a_column_per_fold_whose_mean_is_the_value(
    http: TestClient, raced_study: int
) -> None:
    r = http.get(f"{API}/studies/{raced_study}/trials.csv")
    assert r.status_code == 200, r.text
    rows = list(csv.DictReader(io.StringIO(r.text)))
    header = next(csv.reader(io.StringIO(r.text)))
    folds = [f"fold_{i}_value" for i in range(1, 6)]
    at = header.index("value_std")
    assert header[at : at + 7] == ["value_std", "value_stderr", *folds]
    assert header[at + 7].startswith("param_")
    by_id = {t["id"]: t for t in _trials(http, raced_study)}
    assert len(rows) == len(by_id)
    for row in rows:
        t = by_id[int(row["id"])]
        cells = [row[f] for f in folds]
        if t["state"] == "completed":
            values = [float(c) for c in cells]
            assert float(row["value"]) == pytest.approx(statistics.mean(values))
            assert float(row["value_stderr"]) == pytest.approx(t["value_stderr"])
        elif t["raced"]:
            ran = t["replicates_run"]
            assert [c != "" for c in cells] == [i < ran for i in range(5)]


def test_replicate_columns_are_named_by_the_studys_unit() -> None:
    assert replicate_column(EvaluationSpec(seeds=3), 1) == "seed_2_value"
    both = EvaluationSpec(folds=2, seeds=2)
    assert [replicate_column(both, i) for i in range(4)] == [
        "fold_1_seed_1_value",
        "fold_2_seed_1_value",
        "fold_1_seed_2_value",
        "fold_2_seed_2_value",
    ]


def test_a_study_without_evaluation_has_no_replicate_fields(http: TestClient) -> None:
    r = http.post(f"{API}/studies", json=study_spec())
    sid = r.json()["id"]
    job = http.post(f"{API}/studies/{sid}/next", json={"worker": "w0"}).json()
    http.post(
        f"{API}/trials/{job['trial_id']}/reports",
        json={"attempt": job["attempt"], "step": 1, "value": 0.5},
    )
    row = _trials(http, sid)[0]
    assert (row["value_std"], row["replicates_run"], row["replicates_total"]) == (None,) * 3
    assert row["raced"] is False
    t = http.get(f"{API}/trials/{row['id']}").json()
    assert t["replicates"] is None and t["levels"] is None and t["fold"] is None
    header = http.get(f"{API}/studies/{sid}/trials.csv").text.splitlines()[0]
    assert "value_std" not in header and "fold_1_value" not in header


def test_the_cli_shows_the_per_fold_table_and_the_raced_out_trials(
    http: TestClient, raced_study: int, settings: Settings
) -> None:
    trials = _trials(http, raced_study)
    done = next(t for t in trials if t["state"] == "completed")
    raced = next(t for t in trials if t["raced"])
    detail = http.get(f"{API}/trials/{done['id']}").json()
    runner = CliRunner()
    env = {"COLUMNS": "400", "NO_COLOR": "1"}
    with serve(create_app(settings)) as url:
        ls = runner.invoke(cli.app, ["trials", "ls", str(raced_study), "--api", url], env=env)
        show = runner.invoke(cli.app, ["trial", "show", str(done["id"]), "--api", url], env=env)
        child = detail["replicates"][1]["id"]
        one = runner.invoke(cli.app, ["trial", "show", str(child), "--api", url], env=env)
    assert ls.exit_code == 0, ls.output
    assert f"raced out after {raced['replicates_run']}/5" in ls.output
    assert f"{done['value']:.4g} ± {done['value_stderr']:.4g}" in ls.output
    assert show.exit_code == 0, show.output
    assert "per-fold values" in show.output
    for label in ("fold 1/5", "fold 5/5"):
        assert label in show.output
    last = detail["levels"][-1]
    table = show.output[show.output.index("per-fold values") :].splitlines()
    line = next(x for x in table if f"{last['value']:.4g} ± {last['stderr']:.4g}" in x)
    for v in last["values"]:
        assert f"{v:.4g}" in line
    assert "5/5" in line
    assert one.exit_code == 0, one.output
    assert f"replicate 2 of trial {done['number']} (id {done['id']}), fold 2" in one.output


def test_a_page_reads_its_replicates_in_one_statement_whatever_its_size(
    http: TestClient, raced_study: int, settings: Settings
) -> None:
    engine = make_engine(settings.database_url)
    try:
        kit = Toolkit(make_sessionmaker(engine), settings)
        studies = StudyService(kit)
        spec = studies.definition(raced_study)
        counter = QueryCounter(engine, kit)

        def marks(limit: int) -> int:
            rows, _ = studies.trials(raced_study, None, "number", limit, None)
            before = counter.n
            assert len(studies.race_marks(spec, rows)) == len(rows)
            return counter.n - before

        assert marks(2) == marks(16)

        def export(page_size: int) -> tuple[int, str]:
            before = counter.n
            ev = spec.evaluation
            assert ev is not None
            folds = FoldColumns(
                [replicate_column(ev, i) for i in range(ev.replicates)], studies.final_values
            )
            pages = studies.iter_trial_pages(raced_study, page_size)
            text = "".join(_csv_chunks(pages, list(spec.space), None, folds))
            return counter.n - before, text

        # Sixteen trials: four pages cost twice what two pages do, and read the same rows.
        (four, text4), (two, text2) = export(4), export(8)
        assert text4 == text2 and len(text4.splitlines()) == 17
        assert four == 2 * two
    finally:
        engine.dispose()
