"""Warm-started TPE against cold TPE: trials to a quality threshold, over seeds.

    python bench/warm_start.py [--seeds 10] [--trials 50] [--procs 2] [--out DIR]
                               [--report-only]

Every study runs through tuneyard's real API, in process, on a SQLite file of its seed: the
source studies first, then the target study twice with the same TPE seed, once cold and once
with ``warm_start: {studies: [source]}``. So the priors are read, mapped into the new space
and fed to the sampler by the service's own code (``service/warm_start.py`` at the first
suggestion), exactly as for a user. One worker asks for a trial, evaluates it and reports it;
trials are numbered by the service, and a warm study's priors are not among them (checked on
every run: its trial count is the budget).

Objectives (minimised):

- ``hartmann6`` (the main one): the Hartmann-6 function in [0, 1]^6, optimum -3.32237.
  Sources: the same function (``same``); the function with every centre moved by 0.1 in each
  coordinate (``near``: its optimum is 0.245 away, inside the box); and the function with its
  centres mirrored, ``1 - P`` (``far``: its optimum lies where the target's is poor).
- ``digits-mlp`` (held out: no choice here was made by looking at it): the tabulated MLP on
  scikit-learn's bundled digits from ``bench/multi_objective`` (576 grid points trained once;
  a configuration snaps to its nearest one), validation error after 27 epochs. Sources: the
  same objective (``same``), and an earlier study that trained every configuration for only 3
  epochs (``short``), whose observations the service feeds at resource 3.

The threshold of an objective is fixed before any run: the 1 % quantile of its value over
uniformly random configurations of its space (drawn by tuneyard's ``SearchSpace.sample`` with a
fixed seed), i.e. "as good as the best of a hundred random tries"; a stricter 0.2 % quantile is
reported too. A run that does not reach a threshold within its budget is censored: the table
gives the fewest trials by which half the seeds got there (``> trials`` when fewer than half
did) and how many seeds got there at all.

Writes ``results.json`` (every run's values in trial order, the thresholds, versions) and
``table.md`` into ``--out`` (default ``bench/results/warm_start``).
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.multi_objective.problems import DIGITS_EPOCHS, DIGITS_SIZE, digits_table, grid_key
from bench.quality.objectives import H6_A, H6_ALPHA, H6_P, HARTMANN6_ARGMIN, HARTMANN6_MIN
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import StudySpec

ROOT = Path(__file__).resolve().parents[1]
API = "/api/v1"
Params = dict[str, Any]

# -- objectives ----------------------------------------------------------------------------------

# Hartmann-6 (Dixon & Szegö 1978): -sum_i alpha_i exp(-sum_j A_ij (x_j - P_ij)^2) on [0, 1]^6,
# its constants as bench/quality has them.
H6_OPTIMUM = HARTMANN6_MIN
H6_ARGMIN = HARTMANN6_ARGMIN
H6_NAMES = tuple(f"x{j}" for j in range(6))
# The nearby source: every centre moved by this much in each coordinate.
NEAR_SHIFT = 0.1


def hartmann6(x: Sequence[float], centres: np.ndarray = H6_P) -> float:
    d = np.asarray(x, dtype=float) - centres
    return float(-np.sum(H6_ALPHA * np.exp(-np.sum(H6_A * d * d, axis=1))))


def _h6(centres: np.ndarray) -> Callable[[Params], float]:
    def value(params: Params) -> float:
        return hartmann6([params[n] for n in H6_NAMES], centres)

    return value


def digits_error(epochs: int) -> Callable[[Params], float]:
    """The tabulated MLP's validation error after ``epochs`` epochs."""

    def value(params: Params) -> float:
        return digits_table()[grid_key(params)][epochs - 1]

    return value


@dataclass(frozen=True)
class Source:
    """An earlier study a target is warm-started from: what it optimised and how long its
    trials trained (the resource its observations carry)."""

    name: str
    title: str
    value: Callable[[Params], float]
    resource: int


@dataclass(frozen=True)
class Objective:
    name: str
    title: str
    metric: str
    space: dict[str, dict[str, Any]]
    value: Callable[[Params], float]
    resource: int
    sources: tuple[Source, ...]
    held_out: bool
    optimum: float | None = None


H6_SPACE = {n: {"type": "float", "low": 0.0, "high": 1.0} for n in H6_NAMES}
HARTMANN = Objective(
    name="hartmann6",
    title="Hartmann-6 in [0, 1]^6 (optimum -3.32237)",
    metric="loss",
    space=H6_SPACE,
    value=_h6(H6_P),
    resource=1,
    sources=(
        Source("same", "the same function", _h6(H6_P), 1),
        Source("near", f"centres moved by {NEAR_SHIFT} per coordinate", _h6(H6_P + NEAR_SHIFT), 1),
        Source("far", "centres mirrored (1 - P)", _h6(1.0 - H6_P), 1),
    ),
    held_out=False,
    optimum=H6_OPTIMUM,
)
DIGITS = Objective(
    name="digits-mlp",
    title=f"MLP on digits (tabulated), validation error after {DIGITS_EPOCHS} epochs",
    metric="val_error",
    space=DIGITS_SIZE.space,
    value=digits_error(DIGITS_EPOCHS),
    resource=DIGITS_EPOCHS,
    sources=(
        Source("same", f"the same model, {DIGITS_EPOCHS} epochs", digits_error(DIGITS_EPOCHS), 27),
        Source("short", "the same model trained 3 epochs", digits_error(3), 3),
    ),
    held_out=True,
)
OBJECTIVES: dict[str, Objective] = {o.name: o for o in (HARTMANN, DIGITS)}

# The quantiles of random configurations that define the thresholds, and how many draws
# estimate them (fixed seed: the thresholds are the same on every run).
QUANTILES = (0.01, 0.002)
THRESHOLD_DRAWS = 50_000
THRESHOLD_SEED = 20_261_203


@cache
def thresholds(name: str) -> tuple[float, ...]:
    """The objective's value at each of :data:`QUANTILES` over uniformly random configurations."""
    obj = OBJECTIVES[name]
    space = SearchSpace(StudySpec.model_validate({"name": name, "space": obj.space}).space)
    rng = np.random.default_rng(THRESHOLD_SEED)
    values = np.array([obj.value(space.sample(rng)) for _ in range(THRESHOLD_DRAWS)])
    return tuple(float(np.quantile(values, q, method="lower")) for q in QUANTILES)


# -- pure accounting -----------------------------------------------------------------------------


def trials_to(values: Sequence[float], threshold: float) -> int | None:
    """The 1-based number of the first trial at or below ``threshold``; None if none is."""
    for i, v in enumerate(values):
        if v <= threshold:
            return i + 1
    return None


def best_so_far(values: Sequence[float]) -> list[float]:
    out: list[float] = []
    for v in values:
        out.append(v if not out else min(out[-1], v))
    return out


def median_trials(hits: Sequence[int | None], budget: int) -> float:
    """The fewest trials by which half the seeds had reached the threshold (the lower median
    of trials-to-threshold): ``inf`` when fewer than half got there within ``budget``. Never an
    average with a censored run, whose count is unknown."""
    counted = sorted(budget + 1 if h is None else h for h in hits)
    m = counted[math.ceil(len(counted) / 2) - 1]
    return math.inf if m > budget else float(m)


def seed_of(seed: int, *path: int) -> int:
    """A study's sampler seed: independent across seeds and roles, fixed for each."""
    return int(np.random.SeedSequence([THRESHOLD_SEED, seed, *path]).generate_state(1)[0] >> 1)


# -- one seed through the API --------------------------------------------------------------------


def _definition(
    obj: Objective, name: str, metric_source: Source | None, trials: int, seed: int, **extra: Any
) -> dict[str, Any]:
    resource = obj.resource if metric_source is None else metric_source.resource
    return {
        "name": name,
        "metric": obj.metric,
        "direction": "minimize",
        "space": obj.space,
        "sampler": {"type": "tpe", "seed": seed},
        "scheduler": {"type": "fifo", "max_resource": resource},
        "limits": {"max_trials": trials, "max_concurrent": 1},
        **extra,
    }


def _play(http: Any, sid: int, value: Callable[[Params], float], resource: int) -> list[float]:
    """One worker: every trial in turn, reported once at its last step; values in trial order."""
    out: list[float] = []
    while True:
        r = http.post(f"{API}/studies/{sid}/next", json={"worker": "bench"})
        if r.status_code == 409:
            return out
        r.raise_for_status()
        job = r.json()
        out.append(value(job["params"]))
        rep = http.post(
            f"{API}/trials/{job['trial_id']}/reports",
            json={"attempt": job["attempt"], "step": resource, "value": out[-1]},
        )
        rep.raise_for_status()


def _counted(http: Any, sid: int) -> int:
    r = http.get(f"{API}/studies/{sid}")
    r.raise_for_status()
    return sum(r.json()["counts"].values())


def _priors_fed(url: str, obj: Objective, source_id: int) -> int:
    """How many observations the service's mapping gives the target from ``source_id``."""
    from sqlalchemy.orm import Session

    from tuneyard.service.warm_start import priors
    from tuneyard.store.db import make_engine

    space = SearchSpace(StudySpec.model_validate({"name": "t", "space": obj.space}).space)
    engine = make_engine(url)
    try:
        with Session(engine) as s:
            return len(priors(s, space, [source_id]))
    finally:
        engine.dispose()


def run_seed(task: tuple[str, int, int]) -> list[dict[str, Any]]:
    """Every source and target study of one objective and seed, on a fresh SQLite file."""
    from fastapi.testclient import TestClient

    from tuneyard.api.app import create_app
    from tuneyard.settings import Settings
    from tuneyard.store.db import make_engine
    from tuneyard.store.models import Base

    name, seed, trials = task
    obj = OBJECTIVES[name]
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="warm-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine = make_engine(url)
        Base.metadata.create_all(engine)
        engine.dispose()
        settings = Settings(database_url=url, data_dir=Path(tmp), lease_seconds=600, auth=False)
        with TestClient(create_app(settings)) as http:
            sources: dict[str, int] = {}
            for k, src in enumerate(obj.sources):
                body = _definition(obj, f"source-{src.name}", src, trials, seed_of(seed, 1, k))
                r = http.post(f"{API}/studies", json=body)
                r.raise_for_status()
                sources[src.name] = r.json()["id"]
                _play(http, sources[src.name], src.value, src.resource)
            target_seed = seed_of(seed, 0)
            for start in ("cold", *sources):
                extra = {} if start == "cold" else {"warm_start": {"studies": [sources[start]]}}
                body = _definition(obj, f"target-{start}", None, trials, target_seed, **extra)
                t0 = time.perf_counter()
                r = http.post(f"{API}/studies", json=body)
                r.raise_for_status()
                sid = r.json()["id"]
                values = _play(http, sid, obj.value, obj.resource)
                seconds = time.perf_counter() - t0
                counted = _counted(http, sid)
                if counted != trials or len(values) != trials:
                    raise RuntimeError(
                        f"{name} seed {seed} {start}: {len(values)} trials run, {counted} "
                        f"counted, budget {trials}: priors must not count"
                    )
                fed = 0 if start == "cold" else _priors_fed(url, obj, sources[start])
                out.append(
                    {
                        "objective": name,
                        "seed": seed,
                        "start": start,
                        "priors": fed,
                        "values": values,
                        "seconds": round(seconds, 3),
                    }
                )
    return out


# -- report --------------------------------------------------------------------------------------


def summarise(runs: Sequence[dict[str, Any]], name: str, trials: int) -> list[dict[str, Any]]:
    """Per start (cold, then each source): trials-to-threshold medians, hits, and the mean
    best-so-far at a few trial counts."""
    obj = OBJECTIVES[name]
    levels = thresholds(name)
    rows = []
    for start in ("cold", *(s.name for s in obj.sources)):
        mine = [r for r in runs if r["objective"] == name and r["start"] == start]
        if not mine:
            continue
        row: dict[str, Any] = {"start": start, "seeds": len(mine)}
        row["priors"] = statistics.mean(r["priors"] for r in mine)
        for q, level in zip(QUANTILES, levels, strict=True):
            hits = [trials_to(r["values"], level) for r in mine]
            row[f"hits@{q}"] = sum(h is not None for h in hits)
            row[f"median@{q}"] = median_trials(hits, trials)
            row[f"to@{q}"] = hits
        for k in checkpoints(trials):
            row[f"best@{k}"] = statistics.mean(best_so_far(r["values"])[k - 1] for r in mine)
        rows.append(row)
    return rows


def checkpoints(trials: int) -> list[int]:
    return sorted({k for k in (1, 5, 10, 20, trials) if k <= trials})


def _trials_cell(median: float, hits: int, seeds: int, trials: int) -> str:
    m = f"> {trials}" if math.isinf(median) else f"{median:g}"
    return f"{m} ({hits}/{seeds})"


def table(runs: Sequence[dict[str, Any]], trials: int) -> str:
    lines: list[str] = []
    for name, obj in OBJECTIVES.items():
        rows = summarise(runs, name, trials)
        if not rows:
            continue
        levels = thresholds(name)
        kind = "held out" if obj.held_out else "main"
        lines.append(f"### {obj.title} ({kind})")
        lines.append("")
        lines.append(
            f"TPE, {trials} trials per study, {rows[0]['seeds']} seeds. Thresholds: "
            + ", ".join(
                f"{level:.4g} (best {q:.1%} of random configurations)"
                for q, level in zip(QUANTILES, levels, strict=True)
            )
            + ". Trials to threshold: the fewest trials by which half the seeds had reached it "
            "(lower median), and how many seeds reached it at all; best so far: mean over seeds "
            "after k trials."
        )
        lines.append("")
        sources = {s.name: s.title for s in obj.sources}
        head = ["start", "priors fed"]
        head += [f"trials to {level:.4g}" for level in levels]
        head += [f"best after {k}" for k in checkpoints(trials)]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for row in rows:
            label = "cold" if row["start"] == "cold" else f"warm: {sources[row['start']]}"
            cells = [label, f"{row['priors']:.0f}"]
            cells += [
                _trials_cell(row[f"median@{q}"], row[f"hits@{q}"], row["seeds"], trials)
                for q in QUANTILES
            ]
            cells += [f"{row[f'best@{k}']:.4g}" for k in checkpoints(trials)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    p.add_argument("--trials", type=int, default=50, help="trials per study (source and target)")
    p.add_argument("--procs", type=int, default=2, help="processes running (objective, seed)")
    p.add_argument("--objectives", help=f"comma-separated subset of: {', '.join(OBJECTIVES)}")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "warm_start")
    p.add_argument("--report-only", action="store_true", help="redo table.md from results.json")
    args = p.parse_args(argv)
    for field in ("seeds", "trials", "procs"):
        if getattr(args, field) < 1:
            p.error(f"--{field}: must be at least 1, got {getattr(args, field)}")
    names = args.objectives.split(",") if args.objectives else list(OBJECTIVES)
    unknown = [n for n in names if n not in OBJECTIVES]
    if unknown:
        p.error(f"--objectives: unknown {', '.join(unknown)}; known: {', '.join(OBJECTIVES)}")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    if args.report_only:
        data = json.loads(path.read_text())
    else:
        # One BLAS thread per process (the pool's processes inherit it): one process per core.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")
        started = time.perf_counter()
        tasks = [(n, seed, args.trials) for n in args.names for seed in range(args.seeds)]
        with multiprocessing.get_context("spawn").Pool(args.procs) as pool:
            runs = [r for chunk in pool.imap_unordered(run_seed, tasks) for r in chunk]
        runs.sort(key=lambda r: (r["objective"], r["seed"], r["start"]))
        data = {
            "command": " ".join(["python bench/warm_start.py", *(argv or sys.argv[1:])]),
            "seeds": args.seeds,
            "trials": args.trials,
            "procs": args.procs,
            "minutes": round((time.perf_counter() - started) / 60, 2),
            "thresholds": {
                n: dict(zip(map(str, QUANTILES), thresholds(n), strict=True)) for n in args.names
            },
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "versions": {
                pkg: version(pkg) for pkg in ("tuneyard", "numpy", "scikit-learn", "fastapi")
            },
            "runs": runs,
        }
        path.write_text(json.dumps(data, indent=1) + "\n")
    text = table(data["runs"], data["trials"])
    (args.out / "table.md").write_text(text + "\n")
    print(text)
    if not args.report_only:
        print(f"{len(data['runs'])} runs in {data['minutes']} min; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
