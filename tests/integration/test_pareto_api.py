"""The Pareto front of a study over HTTP, on SQLite and PostgreSQL: the completed trials' front,
a rung's front, the hypervolume and its history, against brute-force references over stored
rows written directly (ties, duplicates, infeasible and unfinished trials)."""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from tests.helpers import API, drive, study_spec
from tuneyard.api.app import create_app
from tuneyard.api.routes import CSV_COLUMNS
from tuneyard.settings import Settings
from tuneyard.store.db import make_engine, make_sessionmaker
from tuneyard.store.models import Rung, RungEntry, Trial

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# err is minimised, acc maximised; a trial is feasible while mem <= 16.
OBJECTIVES = [{"metric": "err"}, {"metric": "acc", "direction": "maximize"}]
SIGNS = (1, -1)
STATES = ["completed"] * 6 + ["running", "stopped", "failed", "paused"]


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def db(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings.resolved_database_url())
    with make_sessionmaker(engine)() as s:
        yield s
    engine.dispose()


def mo_study(http: TestClient, **over: Any) -> int:
    over = {"objectives": OBJECTIVES, "constraints": [{"metric": "mem", "max": 16}], **over}
    spec = study_spec(**over)
    del spec["metric"], spec["direction"]
    r = http.post(f"{API}/studies", json=spec)
    assert r.status_code == 201, r.text
    sid: int = r.json()["id"]
    return sid


# -- references ----------------------------------------------------------------------------
def minimised(values: list[float]) -> tuple[float, ...]:
    """Maximised objectives negated; objectives past the first two are minimised."""
    signs = SIGNS + (1,) * (len(values) - len(SIGNS))
    return tuple(s * v for s, v in zip(signs, values, strict=True))


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def brute_front(points: dict[int, tuple[float, ...]]) -> set[int]:
    """The keys of the points no other point dominates (twins both stay)."""
    return {i for i, p in points.items() if not any(dominates(q, p) for q in points.values())}


def brute_hypervolume(front: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Unit cells of the integer grid below ``ref`` covered by some front point (integer
    points only): the area they dominate, counted."""
    if not front:
        return 0.0
    lo = [int(min(p[k] for p in front)) for k in range(2)]
    area = 0
    for x, y in itertools.product(range(lo[0], int(ref[0])), range(lo[1], int(ref[1]))):
        area += any(p[0] <= x and p[1] <= y for p in front)
    return float(area)


# -- stored rows -----------------------------------------------------------------------------
def random_trials(
    db: Session, sid: int, rng: np.random.Generator, n: int, m: int = 2
) -> list[Trial]:
    """``n`` trials in random states on a small grid of ``m`` values (so ties and duplicates
    are common), a quarter of them infeasible, some completed ones without a vector yet."""
    trials = []
    for i in range(n):
        state = str(rng.choice(STATES))
        values = [float(rng.integers(0, 6)) for _ in range(m)]
        violation = float(rng.choice([0.0, 0.0, 0.0, 2.5]))
        t = Trial(
            study_id=sid,
            number=i,
            state=state,
            params={"x": float(rng.uniform())},
            resource_to=27.0,
            value=values[0],
            values=values,
            violation=violation,
            infeasible=f"mem {16 + violation:g} > 16" if violation else None,
            ended_at=T0 + timedelta(seconds=int(rng.integers(0, 10_000))),
        )
        if rng.uniform() < 0.05:  # reported nothing yet
            t.values = t.value = t.violation = None
        db.add(t)
        trials.append(t)
    db.commit()
    return trials


def expected_front(trials: list[Trial]) -> set[int]:
    candidates = {
        t.id: minimised(t.values)
        for t in trials
        if t.state == "completed" and t.values is not None and t.violation == 0
    }
    return brute_front(candidates)


# -- tests -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_front_is_the_brute_force_non_dominated_set_of_feasible_completed_trials(
    http: TestClient, db: Session, seed: int
) -> None:
    sid = mo_study(http, reference_point=[6, -1])  # minimised: (6, 1)
    trials = random_trials(db, sid, np.random.default_rng(seed), 60)
    want = expected_front(trials)
    assert want, "the generated study has a front"

    r = http.get(f"{API}/studies/{sid}/pareto")
    assert r.status_code == 200, r.text
    body = r.json()
    got = {t["id"] for t in body["trials"]}
    assert got == want
    assert [t["number"] for t in body["trials"]] == sorted(t["number"] for t in body["trials"])
    by_id = {t.id: t for t in trials}
    for item in body["trials"]:
        stored = by_id[item["id"]]
        assert item["values"] == {"err": stored.values[0], "acc": stored.values[1]}
        assert item["feasible"] is True and item["state"] == "completed"
    assert body["objectives"] == [
        {"metric": "err", "direction": "minimize"},
        {"metric": "acc", "direction": "maximize"},
    ]
    assert body["reference_point"] == [6.0, -1.0] and body["reference_derived"] is False
    front_points = [minimised(by_id[i].values) for i in want]
    assert body["hypervolume"] == brute_hypervolume(front_points, (6, 1))
    assert body["size"] == len(want) and body["resource"] is None

    # The study's summary says the same of its front.
    summary = http.get(f"{API}/studies/{sid}").json()["pareto"]
    assert summary == {k: body[k] for k in summary}
    assert summary["size"] == len(want)


@pytest.mark.parametrize("seed", [5, 6])
def test_a_three_objective_front_is_the_brute_force_one(
    http: TestClient, db: Session, seed: int
) -> None:
    sid = mo_study(http, objectives=[*OBJECTIVES, {"metric": "latency_ms"}])
    trials = random_trials(db, sid, np.random.default_rng(seed), 80, m=3)
    body = http.get(f"{API}/studies/{sid}/pareto").json()
    assert {t["id"] for t in body["trials"]} == expected_front(trials)
    assert body["reference_derived"] is True and len(body["reference_point"]) == 3
    assert body["hypervolume"] > 0


def test_a_derived_reference_point_is_reported_as_derived(http: TestClient, db: Session) -> None:
    sid = mo_study(http)
    rows = [([1.0, 4.0], 0.0), ([3.0, 5.0], 0.0), ([5.0, 1.0], 0.0), ([2.0, 9.0], 3.0)]
    for i, (values, violation) in enumerate(rows):
        db.add(
            Trial(
                study_id=sid,
                number=i,
                state="completed",
                params={},
                resource_to=1.0,
                value=values[0],
                values=values,
                violation=violation,
            )
        )
    db.commit()
    body = http.get(f"{API}/studies/{sid}/pareto").json()
    # err down, acc up: (5, 1) is worse than (1, 4) in both; (2, 9) is infeasible.
    assert {t["number"] for t in body["trials"]} == {0, 1}
    # From every completed trial, the infeasible one included: worst + 10% of the range,
    # err worst 5 (range 4), acc worst 1 (range 8; maximised, so it goes down).
    assert body["reference_derived"] is True
    assert body["reference_point"] == pytest.approx([5.4, 0.2])
    # Minimised front (1, -4), (3, -5) against (5.4, -0.2): two strips.
    assert body["hypervolume"] == pytest.approx(4.4 * 3.8 + 2.4 * 1.0)


def test_a_trials_values_and_feasibility_by_objective(http: TestClient, db: Session) -> None:
    sid = mo_study(http)
    ok = Trial(
        study_id=sid,
        number=0,
        state="running",
        params={},
        resource_to=1.0,
        value=0.2,
        values=[0.2, 0.9],
        violation=0.0,
    )
    bad = Trial(
        study_id=sid,
        number=1,
        state="completed",
        params={},
        resource_to=1.0,
        value=0.1,
        values=[0.1, 0.95],
        violation=2.2,
        infeasible="mem 18.2 > 16",
    )
    fresh = Trial(study_id=sid, number=2, state="running", params={}, resource_to=1.0)
    db.add_all([ok, bad, fresh])
    db.commit()
    a = http.get(f"{API}/trials/{ok.id}").json()
    assert (a["values"], a["feasible"], a["infeasible"]) == ({"err": 0.2, "acc": 0.9}, True, None)
    b = http.get(f"{API}/trials/{bad.id}").json()
    assert b["values"] == {"err": 0.1, "acc": 0.95}
    assert (b["feasible"], b["infeasible"]) == (False, "mem 18.2 > 16")
    c = http.get(f"{API}/trials/{fresh.id}").json()
    assert (c["values"], c["feasible"], c["infeasible"]) == (None, None, None)
    # The better-looking infeasible trial is not on the front.
    front = http.get(f"{API}/studies/{sid}/pareto").json()
    assert front["trials"] == [] and front["size"] == 0


@pytest.mark.parametrize("seed", [3, 4])
def test_a_rungs_front_is_the_brute_force_front_of_its_feasible_entries(
    http: TestClient, db: Session, seed: int
) -> None:
    sid = mo_study(http)
    rng = np.random.default_rng(seed)
    trials = random_trials(db, sid, rng, 40)
    # Rung 1 is at resource 3 in every bracket of this ASHA (1, 3, 9, 27); entries in two
    # brackets, and entries of rung 0 (resource 1) that must not count.
    for b in (0, 1):
        db.add(Rung(study_id=sid, bracket=b, rung=1, resource=3.0, entries=0))
        db.add(Rung(study_id=sid, bracket=b, rung=0, resource=1.0, entries=0))
    at_three: dict[int, tuple[tuple[float, ...], float]] = {}
    for t in trials:
        bracket = int(rng.integers(0, 2))
        for rung in (0, 1):
            scores = (float(rng.integers(0, 5)), float(-rng.integers(0, 5)))
            violation = float(rng.choice([0.0, 0.0, 1.5]))
            db.add(
                RungEntry(
                    study_id=sid,
                    bracket=bracket,
                    rung=rung,
                    trial_id=t.id,
                    score=scores[0],
                    scores=list(scores),
                    violation=violation,
                )
            )
            if rung == 1:
                at_three[t.id] = (scores, violation)
    db.commit()
    want = brute_front({i: p for i, (p, v) in at_three.items() if v == 0})

    r = http.get(f"{API}/studies/{sid}/pareto", params={"resource": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resource"] == 3.0
    assert {t["id"] for t in body["trials"]} == want
    for item in body["trials"]:
        scores, _ = at_three[item["id"]]
        # In the user's units: acc is maximised, so its minimised score is negated back.
        assert item["values"] == {"err": scores[0], "acc": -scores[1]}
        assert item["feasible"] is True


def test_an_unknown_rung_resource_is_a_422_listing_the_rungs(http: TestClient) -> None:
    sid = mo_study(http)
    r = http.get(f"{API}/studies/{sid}/pareto", params={"resource": 5})
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "resource"
    assert "1, 3, 9, 27" in r.json()["detail"]
    for bad in ("-1", "nan", "inf", "three"):
        r = http.get(f"{API}/studies/{sid}/pareto", params={"resource": bad})
        assert r.status_code == 422, bad
        assert r.json()["errors"][0]["field"] == "resource"
    assert http.get(f"{API}/studies/{sid + 1}/pareto").status_code == 404
    assert http.get(f"{API}/studies/{sid + 1}/pareto/history").status_code == 404


def test_a_single_objective_studys_front_is_its_best_trials(http: TestClient, db: Session) -> None:
    r = http.post(f"{API}/studies", json=study_spec(direction="maximize"))
    sid = r.json()["id"]
    rows = [("completed", 0.5), ("completed", 0.9), ("completed", 0.9), ("stopped", 2.0)]
    trials = [
        Trial(study_id=sid, number=i, state=state, params={}, resource_to=1, value=value)
        for i, (state, value) in enumerate(rows)
    ]
    db.add_all(trials)
    db.commit()
    tid = trials[0].id
    body = http.get(f"{API}/studies/{sid}/pareto").json()
    assert [t["number"] for t in body["trials"]] == [1, 2]
    assert [t["values"] for t in body["trials"]] == [{"loss": 0.9}] * 2
    assert body["trials"][0]["feasible"] is None
    study = http.get(f"{API}/studies/{sid}").json()
    assert study["pareto"] is None and study["best"]["number"] == 1
    r = http.get(f"{API}/trials/{tid}")
    assert r.status_code == 200, r.text
    trial = r.json()
    assert (trial["values"], trial["feasible"], trial["infeasible"]) == (None, None, None)


def test_hypervolume_history_follows_the_order_trials_completed_in(
    http: TestClient, db: Session
) -> None:
    sid = mo_study(http, reference_point=[6, -1])
    rng = np.random.default_rng(7)
    trials = random_trials(db, sid, rng, 50)
    done = sorted((t for t in trials if t.state == "completed"), key=lambda t: (t.ended_at, t.id))
    expected: list[tuple[int, float, int]] = []
    for k in range(1, len(done) + 1):
        seen = [t for t in done[:k] if t.values is not None and t.violation == 0]
        front = brute_front({t.id: minimised(t.values) for t in seen})
        hv = brute_hypervolume([minimised(t.values) for t in seen if t.id in front], (6, 1))
        if hv != (expected[-1][1] if expected else 0.0):
            expected.append((k, hv, done[k - 1].id))

    body = http.get(f"{API}/studies/{sid}/pareto/history").json()
    assert body["completed"] == len(done)
    assert body["reference_point"] == [6.0, -1.0] and body["reference_derived"] is False
    got = [(p["completed"], p["hypervolume"], p["trial_id"]) for p in body["points"]]
    # Only the completions that changed it.
    assert got == expected and len(got) >= 2
    final = http.get(f"{API}/studies/{sid}/pareto").json()["hypervolume"]
    assert got[-1][1] == final

    # A later completion that joins the front: the history (cached per process) follows.
    best = Trial(
        study_id=sid,
        number=len(trials),
        state="completed",
        params={},
        resource_to=27.0,
        value=0.0,
        values=[0.0, 5.0],
        violation=0.0,
        ended_at=T0 + timedelta(days=1),
    )
    db.add(best)
    db.commit()
    again = http.get(f"{API}/studies/{sid}/pareto/history").json()
    assert again["completed"] == len(done) + 1
    assert again["points"][-1]["trial_id"] == best.id
    assert again["points"][-1]["hypervolume"] == 6.0 * 6.0  # (0, -5) dominates the whole box


def test_the_csv_export_has_a_column_per_objective_and_the_feasibility(
    http: TestClient, db: Session
) -> None:
    sid = mo_study(http)
    db.add_all(
        [
            Trial(
                study_id=sid,
                number=0,
                state="completed",
                params={"x": 0.5, "y": 0.1, "kind": "a"},
                resource_to=27.0,
                value=0.25,
                values=[0.25, 0.75],
                violation=0.0,
            ),
            Trial(
                study_id=sid,
                number=1,
                state="stopped",
                params={"x": 0.1, "y": 0.2, "kind": "b"},
                resource_to=3.0,
                value=0.5,
                values=[0.5, -0.5],
                violation=2.2,
                infeasible="mem 18.2 > 16",
            ),
            Trial(study_id=sid, number=2, state="running", params={}, resource_to=1.0),
        ]
    )
    db.commit()
    r = http.get(f"{API}/studies/{sid}/trials.csv")
    assert r.status_code == 200, r.text
    reader = csv.DictReader(io.StringIO(r.text))
    found = list(reader)
    assert reader.fieldnames == [
        *CSV_COLUMNS,
        "err",
        "acc",
        "feasible",
        "infeasible",
        "param_x",
        "param_y",
        "param_kind",
    ]
    cells = [(row["err"], row["acc"], row["feasible"], row["infeasible"]) for row in found]
    assert cells == [
        ("0.25", "0.75", "true", ""),
        ("0.5", "-0.5", "false", "mem 18.2 > 16"),
        ("", "", "", ""),
    ]
    assert found[0]["param_kind"] == "a" and found[0]["value"] == "0.25"


def err_and_acc(params: dict[str, Any], step: float) -> dict[str, float]:
    """Two objectives at odds (x lowers the error and the accuracy alike) on a coarse grid,
    so that trials tie, and a memory bound that y breaks."""
    x, y = round(params["x"], 1), params["y"]
    late = 0.5 / step
    return {"err": x + late, "acc": round(x**0.5, 1) - late, "mem": 8 + 12 * y}


def test_a_driven_study_s_fronts_are_the_brute_force_fronts_of_what_it_stored(
    http: TestClient, db: Session
) -> None:
    # Trials report through the API; the fronts are checked against the rows they left.
    sid = mo_study(
        http,
        sampler={"type": "nsga2", "seed": 5},
        scheduler={"mode": "promotion", "max_resource": 9},
        limits={"max_trials": 30, "max_concurrent": 3},
    )
    drive(http, sid, objective=err_and_acc)
    assert http.get(f"{API}/studies/{sid}").json()["state"] == "completed"
    trials = list(db.scalars(select(Trial).where(Trial.study_id == sid)))
    rungs = {
        (r.bracket, r.rung): r.resource
        for r in db.scalars(select(Rung).where(Rung.study_id == sid))
    }
    entries = list(db.scalars(select(RungEntry).where(RungEntry.study_id == sid)))
    db.commit()  # no read left open: SQLite would hold the server's writes off
    assert any(t.violation for t in trials) and any(t.state != "completed" for t in trials)
    front = http.get(f"{API}/studies/{sid}/pareto").json()
    assert {t["id"] for t in front["trials"]} == expected_front(trials)
    assert front["size"] == len(front["trials"]) > 0

    for resource in sorted(set(rungs.values())):
        at = {
            e.trial_id: tuple(e.scores or ())
            for e in entries
            if rungs[(e.bracket, e.rung)] == resource and e.violation == 0
        }
        r = http.get(f"{API}/studies/{sid}/pareto", params={"resource": resource})
        assert r.status_code == 200, r.text
        assert {t["id"] for t in r.json()["trials"]} == brute_front(at), resource
