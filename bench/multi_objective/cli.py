"""The command: run every (method, problem, seed) in a process pool, then report.

    python bench/multi_objective.py [--quick] [--out DIR] [--seeds N] [--budget-factor K]
                                    [--workers W] [--procs P] [--methods a,b]
                                    [--problems a,b] [--report-only]

Writes ``results.json`` (every run's final evaluations), ``table.md`` (tables and verdict) and
``hypervolume.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import multiprocessing
import platform
import sys
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench.multi_objective import report
from bench.multi_objective.methods import ALL, QUICK, Method
from bench.multi_objective.problems import (
    DIGITS_GRID,
    DIGITS_MODEL_SEED,
    DIGITS_TABLE,
    PROBLEMS,
    Params,
    grid_key,
    grid_points,
    train_curve,
)
from bench.multi_objective.runners import run

ROOT = Path(__file__).resolve().parents[2]
# Rough relative cost of one run, to start the long ones first and keep every process busy.
_PROBLEM_COST = {"digits-mlp": 10.0, "zdt1": 1.0}

Task = tuple[str, str, int, int, int]  # method, problem, seed, budget, workers


def _run_task(task: Task) -> dict[str, Any]:
    """One run's result, or a record of its error (a broken method fails its own runs only)."""
    method, problem, seed, budget, workers = task
    try:
        return run(ALL[method], PROBLEMS[problem], seed, budget, workers).to_json()
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {
            "method": method,
            "problem": problem,
            "seed": seed,
            "error": f"{type(exc).__name__}: {exc} ({where.filename}:{where.lineno})",
        }


def _cost(task: Task) -> float:
    method, problem, *_ = task
    return _PROBLEM_COST.get(problem, 1.0) * (2.0 if ALL[method].multi_fidelity else 1.0)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 6 methods, budget 12x")
    p.add_argument("--out", type=Path, help="output folder (default bench/multi_objective/...)")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 (default 10, quick 2)")
    p.add_argument(
        "--budget-factor",
        type=int,
        help="budget in full trials' epochs (default: the problem's, 100 or 40; quick 12)",
    )
    p.add_argument("--workers", type=int, default=4, help="simulated parallel workers")
    p.add_argument("--procs", type=int, default=2, help="processes running (method, seed) pairs")
    p.add_argument("--methods", help=f"comma-separated subset of: {', '.join(ALL)}")
    p.add_argument("--problems", help=f"comma-separated subset of: {', '.join(PROBLEMS)}")
    p.add_argument(
        "--report-only", action="store_true", help="redo table and plot from results.json"
    )
    p.add_argument(
        "--tabulate",
        action="store_true",
        help=f"train every grid point of the MLP and write {DIGITS_TABLE.name}",
    )
    args = p.parse_args(argv)
    if args.out is None:
        folder = "results-quick" if args.quick else "results"
        args.out = ROOT / "bench" / "multi_objective" / folder
    if args.seeds is None:
        args.seeds = 2 if args.quick else 10
    if args.budget_factor is None and args.quick:
        args.budget_factor = 12
    return args


def _optuna_installed() -> bool:
    return importlib.util.find_spec("optuna") is not None


def select(args: argparse.Namespace) -> tuple[list[Method], list[str]]:
    """The methods asked for that can run here, and those left out (Optuna not installed)."""
    names = args.methods.split(",") if args.methods else (list(QUICK) if args.quick else list(ALL))
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise SystemExit(f"unknown methods: {', '.join(unknown)}")
    methods = [ALL[n] for n in names]
    if _optuna_installed():
        return methods, []
    return [m for m in methods if m.framework != "optuna"], [
        m.name for m in methods if m.framework == "optuna"
    ]


def preload() -> dict[str, str]:
    """Import the scheduler and sampler modules before the pool forks, so that all runs use
    one version of the code even while it is being edited; returns each file's SHA-1."""
    modules = [
        "tuneyard.scheduler.simulator",
        "tuneyard.scheduler.schedulers.fronts",
        "tuneyard.scheduler.schedulers.halving",
        "tuneyard.scheduler.multi.ranking",
        "tuneyard.scheduler.samplers.nsga2",
        "tuneyard.scheduler.samplers.motpe",
        "tuneyard.scheduler.samplers.objectives",
    ]
    digests = {}
    for name in modules:
        module = importlib.import_module(name)
        digests[name] = hashlib.sha1(Path(str(module.__file__)).read_bytes()).hexdigest()[:12]
    if _optuna_installed():
        importlib.import_module("optuna")
    return digests


def _versions() -> dict[str, str]:
    out = {}
    for package in ("optuna", "scikit-learn", "numpy", "scipy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def write_outputs(out: Path, payload: dict[str, Any], plot: bool = True) -> str:
    (out / "results.json").write_text(json.dumps(payload, indent=1) + "\n")
    results = payload["results"]
    text = report.table(results) + "\n" + report.verdict(results)
    (out / "table.md").write_text(text + "\n")
    if plot:
        report.plot(results, out / "hypervolume.png")
    return text


def _curve(params: Params) -> tuple[str, list[float]]:
    return grid_key(params), train_curve(params)


def tabulate(procs: int) -> None:
    """Train every grid point of the MLP for its 27 epochs and write the table."""
    points = grid_points()
    # The costliest first, so that both processes stay busy to the end.
    points.sort(key=lambda p: -p["layers"] * p["units"] * 256 / p["batch_size"])
    started = time.perf_counter()
    curves: dict[str, list[float]] = {}
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        for i, (key, curve) in enumerate(pool.imap_unordered(_curve, points, chunksize=4)):
            curves[key] = curve
            if (i + 1) % 48 == 0:
                print(
                    f"[{time.perf_counter() - started:6.1f}s] {i + 1}/{len(points)}",
                    file=sys.stderr,
                )
    payload = {
        "what": "validation error of examples/mlp_digits.py's MLP (SGD, momentum 0.9) after "
        "each epoch, per grid point",
        "model_seed": DIGITS_MODEL_SEED,
        "grid": DIGITS_GRID,
        "seconds": round(time.perf_counter() - started, 1),
        "versions": _versions(),
        "curves": {k: [round(e, 6) for e in curves[k]] for k in sorted(curves)},
    }
    DIGITS_TABLE.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    print(f"{len(curves)} curves in {payload['seconds']} s: {DIGITS_TABLE}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.tabulate:
        tabulate(args.procs)
        return 0
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        payload = json.loads((out / "results.json").read_text())
        print(write_outputs(out, payload))
        return 0
    methods, missing = select(args)
    problems = args.problems.split(",") if args.problems else list(PROBLEMS)
    for name in problems:
        if name not in PROBLEMS:
            raise SystemExit(f"unknown problem {name!r}; one of {', '.join(PROBLEMS)}")
    budgets = {
        name: (args.budget_factor or PROBLEMS[name].budget_factor) * PROBLEMS[name].max_epochs
        for name in problems
    }
    tasks: list[Task] = [
        (m.name, name, seed, budgets[name], args.workers)
        for name in problems
        for m in methods
        for seed in range(args.seeds)
    ]
    tasks.sort(key=_cost, reverse=True)
    if missing:
        print(f"skipping (optuna is not installed): {', '.join(missing)}", file=sys.stderr)
    print(
        f"{len(tasks)} runs: {len(methods)} methods x {len(problems)} problems x "
        f"{args.seeds} seeds, {args.procs} processes",
        file=sys.stderr,
    )
    code = preload()
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    with multiprocessing.get_context("fork").Pool(args.procs) as pool:
        for i, r in enumerate(pool.imap_unordered(_run_task, tasks, chunksize=1)):
            if "error" in r:
                failures.append(r)
                print(
                    f"error: {r['method']} on {r['problem']} seed {r['seed']}: {r['error']}",
                    file=sys.stderr,
                )
                continue
            results.append(r)
            print(
                f"[{time.perf_counter() - started:7.1f}s] {i + 1}/{len(tasks)} {r['method']} "
                f"{r['problem']} seed {r['seed']}: {len(r['finals'])} final evaluations "
                f"({r['trials']} trials, {r['seconds']:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
    wall = time.perf_counter() - started
    payload = {
        "command": " ".join(
            ["python bench/multi_objective.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "wall_seconds": round(wall, 1),
        "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} CPUs",
        "procs": args.procs,
        "workers": args.workers,
        "seeds": args.seeds,
        "budgets": budgets,
        "missing": missing,
        "failures": failures,
        "versions": _versions(),
        "code": code,
        "results": sorted(results, key=lambda r: (r["problem"], r["method"], r["seed"])),
    }
    print(write_outputs(out, payload))
    print(f"\nwall time {wall / 60:.1f} min; outputs in {out}", file=sys.stderr)
    return 1 if failures else 0
