"""The command: run every (method, objective, seed) in a process pool, then report.

    python bench/quality.py [--quick] [--out DIR] [--seeds N] [--budget-factor K]
                            [--suite broad] [--workers 1,4,16,64] [--procs P]
                            [--methods a,b] [--objectives a,b] [--report-only]

Writes ``results.json`` (every run's anytime trace), ``table.md`` (tables and verdict) and
``anytime.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import sys
import time
import traceback
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.quality import report
from bench.quality.methods import (
    ALL,
    BROAD,
    BROAD_WORKERS,
    QUICK,
    SAMPLER_MODULES,
    Method,
    available,
)
from bench.quality.objectives import HELD_IN, OBJECTIVES
from bench.quality.runners import run

ROOT = Path(__file__).resolve().parents[2]
# The plain and quick runs keep the three objectives of the 28-method comparison (20 min on 2
# cores); ``--suite broad`` or ``--objectives`` reach the others.
ORIGINAL = ("digits-mlp", "diabetes-rff", "crossing")
# Rough relative cost of one run, to start the long ones first and keep both processes busy.
_OBJECTIVE_COST = {"digits-mlp": 10.0, "diabetes-rff": 2.0, "cancer-sgd": 2.0, "crossing": 0.5}
_SAMPLER_COST = {"gp": 3.0, "tpe": 1.5, "bohb": 1.2}

Task = tuple[str, str, int, int, int]  # method, objective, seed, budget, workers


def _run_task(task: Task) -> dict[str, Any]:
    """One run's result, or a record of its error (a broken sampler fails its own runs only)."""
    method, objective, seed, budget, workers = task
    try:
        return run(ALL[method], OBJECTIVES[objective], seed, budget, workers).to_json()
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {
            "method": method,
            "objective": objective,
            "seed": seed,
            "error": f"{type(exc).__name__}: {exc} ({where.filename}:{where.lineno})",
        }


def _cost(task: Task) -> float:
    method, objective, *_ = task
    return _OBJECTIVE_COST.get(objective, 1.0) * _SAMPLER_COST.get(ALL[method].sampler, 1.0)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 2 seeds, 9 methods, 10x")
    p.add_argument("--out", type=Path, help="output folder (default bench/quality/results[-quick])")
    p.add_argument("--seeds", type=int, help="seeds 0..N-1 (default 10, quick 2)")
    p.add_argument(
        "--budget-factor",
        type=int,
        help="budget in full trials' epochs (default: the objective's, 30 or 20; quick 10)",
    )
    p.add_argument(
        "--suite",
        choices=["broad"],
        help=f"broad: {len(BROAD)} methods, every objective, workers "
        f"{','.join(map(str, BROAD_WORKERS))} (default out: results-broad)",
    )
    p.add_argument(
        "--workers",
        type=worker_counts,
        help="simulated parallel workers, one count or a list (1,4,16,64); default 4",
    )
    p.add_argument("--procs", type=int, default=2, help="processes running (method, seed) pairs")
    p.add_argument("--methods", help=f"comma-separated subset of: {', '.join(ALL)}")
    p.add_argument("--objectives", help=f"comma-separated subset of: {', '.join(OBJECTIVES)}")
    p.add_argument(
        "--report-only", action="store_true", help="redo table and plot from results.json"
    )
    args = p.parse_args(argv)
    if args.workers is None:
        args.workers = list(BROAD_WORKERS) if args.suite == "broad" else [4]
    if args.suite == "broad" and args.methods is None:
        args.methods = ",".join(BROAD)
    if args.out is None:
        folder = "results-broad" if args.suite else "results-quick" if args.quick else "results"
        args.out = ROOT / "bench" / "quality" / folder
    if args.seeds is None:
        args.seeds = 2 if args.quick else 10
    if args.budget_factor is None and (args.quick or args.suite == "broad"):
        # broad: 10 full trials' epochs per run, not 20-30, to fit 30 min on 2 cores.
        args.budget_factor = 10
    return args


def worker_counts(text: str) -> list[int]:
    """``"1,4,16,64"`` -> ``[1, 4, 16, 64]``: distinct positive counts, in the order given."""
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not counts or min(counts) < 1 or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"distinct counts of at least 1, not {text!r}")
    return counts


def _select(args: argparse.Namespace) -> tuple[list[Method], list[str]]:
    names = args.methods.split(",") if args.methods else (list(QUICK) if args.quick else list(ALL))
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise SystemExit(f"unknown methods: {', '.join(unknown)}")
    methods = [ALL[n] for n in names]
    missing = [m.name for m in methods if not available(m)]
    return [m for m in methods if m.name not in missing], missing


def preload(methods: list[Method]) -> dict[str, str]:
    """Import every sampler module used before the pool forks, so that all runs use one
    version of the code even while it is being edited; returns each file's SHA-1."""
    import hashlib
    import importlib

    import optuna

    modules = {
        "tuneyard.scheduler.simulator",
        "tuneyard.scheduler.schedulers",
        "tuneyard.scheduler.samplers.base",
        "tuneyard.scheduler.space",
    }
    modules |= {
        f"tuneyard.scheduler.samplers.{SAMPLER_MODULES[m.sampler]}"
        for m in methods
        if m.framework == "tuneyard"
    }
    digests = {}
    for name in sorted(modules):
        module = importlib.import_module(name)
        path = Path(module.__file__ or "")
        digests[str(path.relative_to(ROOT))] = hashlib.sha1(path.read_bytes()).hexdigest()[:12]
    digests["optuna"] = optuna.__version__
    return digests


def write_outputs(out: Path, payload: dict[str, Any]) -> str:
    results = payload["results"]
    split = report.by_workers(results)
    # The per-budget tables, the goal and the plot are of one worker count (4 if run).
    main_w = 4 if 4 in split else next(iter(split))
    text = report.table(split[main_w]) if len(split) == 1 else report.broad(results)
    # The best method is chosen on the held-in objectives only.
    v = report.verdict([r for r in split[main_w] if r["objective"] in HELD_IN])
    header = [
        "# tuneyard quality benchmark",
        "",
        f"Command: `{payload['command']}`",
        "",
        f"Wall time {payload['wall_seconds'] / 60:.1f} min on {payload['machine']}, "
        f"{payload['procs']} processes; simulated workers per run: {payload['workers']}.",
    ]
    if payload.get("missing"):
        header.append(f"Not run (sampler missing): {', '.join(payload['missing'])}.")
    failed = sorted({(f["method"], f["error"]) for f in payload.get("failures", [])})
    for method, error in failed:
        header.append(f"Failed: {method}: {error}")
    md = "\n".join([*header, "", text])
    if v is not None:
        md += f"\n## Goal (held-in objectives, {main_w} workers)\n\n" + v.text + "\n"
        payload["verdict"] = {"method": v.method, "objectives": v.per_objective}
    (out / "table.md").write_text(md)
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    try:
        report.plot(split[main_w], out / "anytime.png")
    except ImportError:  # matplotlib is optional: the tables are the results
        print("matplotlib not installed: no anytime.png", file=sys.stderr)
    return md


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        payload = json.loads((out / "results.json").read_text())
        print(write_outputs(out, payload))
        return 0
    methods, missing = _select(args)
    objectives = (
        args.objectives.split(",")
        if args.objectives
        else list(OBJECTIVES)
        if args.suite
        else list(ORIGINAL)
    )
    for o in objectives:
        if o not in OBJECTIVES:
            raise SystemExit(f"unknown objective {o!r}; one of {', '.join(OBJECTIVES)}")
    tasks: list[Task] = [
        (
            m.name,
            o,
            seed,
            (args.budget_factor or OBJECTIVES[o].budget_factor) * OBJECTIVES[o].max_epochs,
            workers,
        )
        for o in objectives
        for m in methods
        for seed in range(args.seeds)
        for workers in args.workers
    ]
    tasks.sort(key=_cost, reverse=True)
    if missing:
        print(f"skipping (sampler not in this checkout): {', '.join(missing)}", file=sys.stderr)
    print(
        f"{len(tasks)} runs: {len(methods)} methods x {len(objectives)} objectives x "
        f"{args.seeds} seeds x workers {args.workers}, {args.procs} processes",
        file=sys.stderr,
    )
    code = preload(methods)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    with multiprocessing.get_context("fork").Pool(args.procs) as pool:
        for i, r in enumerate(pool.imap_unordered(_run_task, tasks, chunksize=1)):
            if "error" in r:
                failures.append(r)
                print(
                    f"error: {r['method']} on {r['objective']} seed {r['seed']}: {r['error']}",
                    file=sys.stderr,
                )
                continue
            results.append(r)
            if r["used"] < r["budget"]:
                print(f"warning: {r['method']} on {r['objective']} ended early", file=sys.stderr)
            print(
                f"[{time.perf_counter() - started:7.1f}s] {i + 1}/{len(tasks)} {r['method']} "
                f"{r['objective']} seed {r['seed']} {r['workers']}w: {r['trace'][-1][1]:.4f} "
                f"({r['trials']} trials, {r['seconds']:.1f}s)",
                file=sys.stderr,
                flush=True,
            )
    wall = time.perf_counter() - started
    payload = {
        "command": " ".join(
            ["python bench/quality.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "wall_seconds": round(wall, 1),
        "machine": f"{platform.machine()}, {multiprocessing.cpu_count()} CPUs",
        "procs": args.procs,
        "workers": args.workers,
        "seeds": args.seeds,
        "budgets": {
            o: OBJECTIVES[o].max_epochs * (args.budget_factor or OBJECTIVES[o].budget_factor)
            for o in objectives
        },
        "missing": missing,
        "failures": failures,
        "versions": {p: version(p) for p in ("optuna", "scikit-learn", "numpy", "scipy")},
        "code": code,
        "results": sorted(results, key=lambda r: (r["objective"], r["method"], r["seed"])),
    }
    print(write_outputs(out, payload))
    print(f"\nwall time {wall / 60:.1f} min; outputs in {out}", file=sys.stderr)
    return 0
