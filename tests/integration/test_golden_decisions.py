"""The decisions of a fixed set of studies, recorded from the service and kept as test data.

Each study of ``STUDIES`` is driven through the HTTP API as workers drive it (``next``, one
report per step, ``pause`` with an uploaded checkpoint, ``complete``, ``fail``, ``release``),
on a fresh database and a fake clock, by one to three simulated workers that take turns in a
fixed order: one call per turn, all in this thread, so promotions and pauses fall between the
jobs of different workers the same way on every run. Some studies also fail a trial (and get
its retry), hand one back, or lose a worker so that its lease expires.

What is recorded, in ``tests/data/golden/<name>.json``: every answer to ``next`` (trial
number, kind, resource range, attempt, parameters, reason; a 204 or the 409 that ends a
worker), every report's answer (decision, reason, resource_to), the state and reason that
``pause``, ``complete``, ``fail`` and ``release`` return, and the final trials (number, state,
reason, value). The test compares a fresh run with the file and shows the first event that
differs. The point is that a redesign of the scheduling engine keeps every decision.

To record the files again (only when a change of decisions is intended, and said so in the
commit), set ``TUNEYARD_RECORD_GOLDEN=1``::

    TUNEYARD_RECORD_GOLDEN=1 python -m pytest -q tests/integration/test_golden_decisions.py

Recording writes from the SQLite run and skips the PostgreSQL one; run the test once more
without the variable to check PostgreSQL against the new files.

What is left out of a recording so that it is the same on every run and backend: timestamps
(the clock is fake anyway), database ids (trials are named by their number, which is what
reasons use too), checkpoint locations (they hold the data directory's path), and the digits of
a float beyond 10 significant ones (a parameter or a value: BLAS may sum in another order on
another machine). Dicts are written with sorted keys. Nothing else varies: each study runs on
its own fresh database, so ids and trial numbers start from the beginning. When the files were
made, every study was run twice more in one process and once in another one, under other
``PYTHONHASHSEED`` values and with one and two BLAS threads, and all recordings were the same;
every sampler (random, grid, Sobol, TPE, CMA-ES, genetic, BOHB, GP) is deterministic under its
seed. A normal run checks it again: the SQLite and the PostgreSQL runs, in one process, are both
compared with files written by another.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.helpers import API, checkpoint, study_spec
from tuneyard.api.app import create_app
from tuneyard.settings import Settings

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
RECORD = os.environ.get("TUNEYARD_RECORD_GOLDEN", "") == "1"
LEASE = 60.0
# Seconds of the fake clock per call, and more after a 204 (a worker that waits sleeps).
TICK = 1.0
IDLE = 10.0
MAX_TURNS = 3_000


class Clock:
    """A clock that only moves when told to."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def objective(params: dict[str, Any], step: float) -> float:
    """A learning curve whose final value and speed depend on the params, so curves cross."""
    x = float(params.get("x", 0.5))
    y = float(params.get("y", 0.1))
    final = (x - 0.3) ** 2 + 0.1 * abs(math.log10(y) + 1.5)
    final += 0.05 * ["a", "b", "c"].index(params.get("kind", "a"))
    final += 0.01 * int(params.get("n", 0))
    return final + (0.2 + x) / math.sqrt(step)


def rounded(v: Any) -> Any:
    """Floats to 10 significant digits, recursively; everything else as it is."""
    if isinstance(v, float):
        return float(f"{v:.10g}") if math.isfinite(v) else repr(v)
    if isinstance(v, dict):
        return {k: rounded(x) for k, x in v.items()}
    if isinstance(v, list):
        return [rounded(x) for x in v]
    return v


# A scripted event, keyed by (trial number, attempt, step about to be reported):
# "fail" reports a crash instead of the step; "release" hands the trial back with a checkpoint
# saved at the step before; "vanish" drops the job without a word, so its lease expires.
Script = dict[tuple[int, int, int], str]


@dataclass(frozen=True)
class Study:
    spec: dict[str, Any]
    workers: int = 1
    script: Script = field(default_factory=dict)


# A study that retries a failed attempt needs an execution section (else max_retries is 0).
RETRIES = {"entrypoint": "examples.mlp_digits:train", "max_retries": 2}


def _spec(sampler: dict[str, Any], scheduler: dict[str, Any], trials: int, **kw: Any) -> Any:
    return study_spec(
        sampler=sampler,
        scheduler=scheduler,
        limits={"max_trials": trials, "max_concurrent": kw.pop("concurrent", 3)},
        **kw,
    )


GRID_SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0, "grid_points": 3},
    "kind": {"type": "categorical", "choices": ["a", "b", "c"]},
}
INT_SPACE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "y": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
    "n": {"type": "int", "low": 0, "high": 4},
}

STUDIES: dict[str, Study] = {
    # FIFO with random search, one worker: a crash retried, then the study goes on.
    "fifo_random_retry": Study(
        _spec(
            {"type": "random", "seed": 11},
            {"type": "fifo", "max_resource": 4},
            5,
            execution=RETRIES,
        ),
        script={(1, 1, 3): "fail"},
    ),
    # FIFO with a crash and no retries left: the trial ends failed.
    "fifo_sobol_no_retry": Study(
        _spec(
            {"type": "sobol", "seed": 5},
            {"type": "fifo", "max_resource": 3},
            4,
            execution={"entrypoint": "examples.mlp_digits:train", "max_retries": 0},
        ),
        workers=2,
        script={(2, 1, 2): "fail"},
    ),
    # Median stopping, three workers interleaved.
    "median_random_3w": Study(
        _spec(
            {"type": "random", "seed": 7},
            {"type": "median", "max_resource": 8, "min_trials": 3},
            9,
        ),
        workers=3,
    ),
    # Successive halving over a grid, one worker.
    "sha_grid": Study(
        _spec(
            {"type": "grid", "seed": 1},
            {"type": "sha", "max_resource": 9},
            9,
            space=GRID_SPACE,
        ),
    ),
    # Successive halving, three workers: the synchronous rung waits for its slowest trial.
    "sha_sobol_3w": Study(
        _spec({"type": "sobol", "seed": 2}, {"type": "sha", "max_resource": 9}, 9),
        workers=3,
    ),
    # Hyperband with TPE, three workers.
    "hyperband_tpe_3w": Study(
        _spec(
            {"type": "tpe", "seed": 3, "n_startup": 4, "n_candidates": 16},
            {"type": "hyperband", "max_resource": 9},
            14,
            space=INT_SPACE,
        ),
        workers=3,
    ),
    # ASHA promotion, one worker, TPE with the constant liar.
    "asha_promotion_tpe": Study(
        _spec(
            {"type": "tpe", "seed": 4, "n_startup": 3, "constant_liar": True},
            {"type": "asha", "max_resource": 9},
            10,
        ),
    ),
    # ASHA promotion, three workers: a trial handed back and a worker lost (lease expiry).
    "asha_promotion_random_3w_release_expiry": Study(
        _spec(
            {"type": "random", "seed": 8},
            {"type": "asha", "max_resource": 9},
            12,
            execution=RETRIES,
        ),
        workers=3,
        script={(1, 2, 3): "release", (5, 1, 1): "vanish"},
    ),
    # ASHA stopping with CMA-ES, three workers.
    "asha_stopping_cmaes_3w": Study(
        _spec(
            {"type": "cmaes", "seed": 9, "n_startup": 3, "popsize": 4},
            {"type": "asha", "mode": "stopping", "max_resource": 9},
            12,
            space=INT_SPACE,
        ),
        workers=3,
    ),
    # ASHA with two brackets and a genetic search, three workers; a crash retried.
    "asha_brackets_genetic_3w": Study(
        _spec(
            {"type": "genetic", "seed": 10, "population_size": 4},
            {"type": "asha", "brackets": 2, "max_resource": 9},
            12,
            execution=RETRIES,
        ),
        workers=3,
        script={(4, 1, 1): "fail"},
    ),
    # BOHB on Hyperband, two workers.
    "hyperband_bohb_2w": Study(
        _spec(
            {"type": "bohb", "seed": 12, "n_startup": 4, "n_candidates": 16},
            {"type": "hyperband", "max_resource": 9},
            12,
        ),
        workers=2,
    ),
    # A Gaussian process under median stopping, one worker.
    "median_gp": Study(
        _spec(
            {"type": "gp", "seed": 13, "n_startup": 3, "n_candidates": 64},
            {"type": "median", "max_resource": 4, "min_trials": 2},
            6,
            space=INT_SPACE,
        ),
    ),
}


class Run:
    """A study driven by simulated workers taking turns; ``events`` is what it recorded."""

    def __init__(self, http: TestClient, clock: Clock, study: Study) -> None:
        self.http = http
        self.clock = clock
        self.study = study
        self.events: list[dict[str, Any]] = []
        self.jobs: list[dict[str, Any] | None] = [None] * study.workers
        self.steps: list[int] = [0] * study.workers
        self.done = [False] * study.workers

    def post(self, path: str, body: dict[str, Any]) -> Any:
        self.clock.advance(TICK)
        return self.http.post(f"{API}{path}", json=body)

    def drive(self) -> dict[str, Any]:
        r = self.http.post(f"{API}/studies", json=self.study.spec)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        for _ in range(MAX_TURNS):
            if all(self.done):
                break
            for w in range(self.study.workers):
                if not self.done[w]:
                    self.turn(sid, w)
        else:
            raise AssertionError(f"the study did not finish in {MAX_TURNS} turns")
        page = self.http.get(f"{API}/studies/{sid}/trials", params={"limit": 1000}).json()
        trials = sorted(page["items"], key=lambda t: t["number"])
        final = [{k: rounded(t[k]) for k in ("number", "state", "reason", "value")} for t in trials]
        return {"events": self.events, "trials": final}

    def turn(self, sid: int, w: int) -> None:
        job = self.jobs[w]
        if job is None:
            self.ask(sid, w)
        else:
            self.step(w, job)

    def ask(self, sid: int, w: int) -> None:
        r = self.post(f"/studies/{sid}/next", {"worker": f"w{w}"})
        if r.status_code == 204:
            self.events.append({"ev": "next", "w": w, "answer": 204})
            self.clock.advance(IDLE)
            return
        if r.status_code == 409:
            self.events.append({"ev": "next", "w": w, "answer": 409})
            self.done[w] = True
            return
        assert r.status_code == 200, r.text
        job = r.json()
        self.events.append(
            {
                "ev": "next",
                "w": w,
                "trial": job["number"],
                "kind": job["kind"],
                "from": job["resource_from"],
                "to": job["resource_to"],
                "attempt": job["attempt"],
                "params": rounded(job["params"]),
                "reason": job["reason"],
            }
        )
        self.jobs[w] = job
        self.steps[w] = int(job["resource_from"])

    def step(self, w: int, job: dict[str, Any]) -> None:
        tid, number, attempt = job["trial_id"], job["number"], job["attempt"]
        step = self.steps[w] + 1
        action = self.study.script.get((number, attempt, step))
        if action is not None:
            self.scripted(w, job, action, step)
            return
        value = objective(job["params"], step)
        body = {"attempt": attempt, "step": step, "value": value}
        r = self.post(f"/trials/{tid}/reports", body)
        assert r.status_code == 200, r.text
        ans = r.json()
        self.events.append(
            {
                "ev": "report",
                "w": w,
                "trial": number,
                "attempt": attempt,
                "step": step,
                "value": rounded(value),
                "decision": ans["decision"],
                "reason": ans["reason"],
                "to": ans["resource_to"],
            }
        )
        self.steps[w] = step
        if ans["resource_to"] is not None:
            job["resource_to"] = ans["resource_to"]
        decision = ans["decision"]
        if decision == "pause":
            saved = {
                "attempt": attempt,
                "checkpoint": checkpoint(self.http, tid, attempt, str(step)),
            }
            self.end(w, "pause", self.post(f"/trials/{tid}/pause", saved))
        elif decision in ("stop", "complete"):
            self.jobs[w] = None
        elif step >= job["resource_to"]:
            self.end(w, "complete", self.post(f"/trials/{tid}/complete", {"attempt": attempt}))

    def scripted(self, w: int, job: dict[str, Any], action: str, step: int) -> None:
        tid, attempt = job["trial_id"], job["attempt"]
        if action == "fail":
            body = {"attempt": attempt, "error": f"RuntimeError: crashed before step {step}"}
            self.end(w, "fail", self.post(f"/trials/{tid}/fail", body))
        elif action == "release":
            saved = self.steps[w]
            location = checkpoint(self.http, tid, attempt, f"step {saved}")
            body = {
                "attempt": attempt,
                "reason": "worker stopping",
                "checkpoint": location,
                "step": saved,
            }
            self.end(w, "release", self.post(f"/trials/{tid}/release", body))
        elif action == "vanish":
            self.events.append({"ev": "vanish", "w": w, "trial": job["number"]})
            self.jobs[w] = None
        else:
            raise ValueError(f"unknown scripted action {action!r}")

    def end(self, w: int, what: str, r: Any) -> None:
        assert r.status_code == 200, r.text
        t = r.json()
        self.events.append(
            {"ev": what, "w": w, "trial": t["number"], "state": t["state"], "reason": t["reason"]}
        )
        self.jobs[w] = None


def record(database_url: str, data_dir: Path, study: Study) -> dict[str, Any]:
    """One run of a study on an empty database; its recording."""
    settings = Settings(
        database_url=database_url, data_dir=data_dir, lease_seconds=LEASE, auth=False
    )
    clock = Clock()
    with TestClient(create_app(settings, clock=clock)) as http:
        return Run(http, clock, study).drive()


def dumps(recording: dict[str, Any]) -> str:
    """The recording as JSON with one event or trial per line, for readable diffs."""
    lines = ["{", ' "events": [']
    for key in ("events", "trials"):
        items = recording[key]
        if key == "trials":
            lines.append(' "trials": [')
        for k, item in enumerate(items):
            comma = "," if k < len(items) - 1 else ""
            lines.append("  " + json.dumps(item, sort_keys=True) + comma)
        lines.append(" ]," if key == "events" else " ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def first_difference(want: dict[str, Any], got: dict[str, Any]) -> str | None:
    """Where two recordings part, said plainly (with the line of the file, as ``dumps``
    writes it); None when they are the same."""
    line = 3  # the first event's
    for key in ("events", "trials"):
        a, b = want[key], got[key]
        for k in range(max(len(a), len(b))):
            x = a[k] if k < len(a) else None
            y = b[k] if k < len(b) else None
            if x != y:
                before = a[k - 1] if 0 < k <= len(a) else None
                return (
                    f"{key}[{k}] (line {line + k}) differs, after "
                    f"{json.dumps(before, sort_keys=True)}:\n"
                    f"  recorded: {json.dumps(x, sort_keys=True)}\n"
                    f"  now:      {json.dumps(y, sort_keys=True)}"
                )
        line += len(a) + 2
    return None


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_decisions_are_the_recorded_ones(name: str, database_url: str, tmp_path: Path) -> None:
    got = record(database_url, tmp_path, STUDIES[name])
    path = GOLDEN / f"{name}.json"
    if RECORD:
        if not database_url.startswith("sqlite"):
            pytest.skip("recording writes from the SQLite run")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(got))
        return
    assert path.exists(), f"{path} is missing: record it with TUNEYARD_RECORD_GOLDEN=1"
    want = json.loads(path.read_text())
    diff = first_difference(want, got)
    if diff is not None:
        pytest.fail(f"{path.name}: the decisions changed.\n{diff}", pytrace=False)
