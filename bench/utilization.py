"""How busy the worker pool keeps its workers.

    python bench/utilization.py [--slots 16] [--epoch 0.2] [--duration 60] [--quick]

Starts the production stack on this machine, on its PostgreSQL and Redis: the API
(``tuneyard server``), the dispatcher (``tuneyard dispatcher``) and one worker pool of
``--slots`` processes (``tuneyard worker --slots N``), then runs a study whose objective
(``bench/utilization_objective.py``) sleeps ``--epoch`` seconds per epoch and reports after
each: TPE with ASHA (stopping mode, 4 brackets, rungs 1, 3, 9, 27 epochs), as in
bench/overhead.py, so jobs last from one epoch to 27.

The objective records when each call starts and ends. Over the measurement window (after a
warm-up) the benchmark reports the busy fraction, the share of the slots' time spent inside
the objective, and the dispatch gap, the time from one objective call ending on a slot to the
next one starting on that slot (p50/p99), which covers telling the service how the job ended,
finishing the RQ job, taking the next one and asking for its trial.

It uses its own database (``tuneyard_bench_utilization``), Redis db number and queue.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import benchlib  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
from overhead import SPACE  # noqa: E402

DB = "tuneyard_bench_utilization"
REDIS_DB = 14
ENTRYPOINT = "utilization_objective:train"


def study(slots: int, queue: str) -> dict[str, Any]:
    return {
        "name": "utilization",
        "metric": "loss",
        "direction": "minimize",
        "space": SPACE,
        "sampler": {"type": "tpe", "seed": 11},
        "scheduler": {
            "type": "asha",
            "min_resource": 1,
            "max_resource": 27,
            "reduction_factor": 3,
            "mode": "stopping",
            "brackets": 4,
        },
        "limits": {"max_trials": 1_000_000, "max_concurrent": slots},
        "execution": {"entrypoint": ENTRYPOINT, "queue": queue},
    }


def read_traces(trace_dir: Path) -> dict[str, list[tuple[float, float]]]:
    """Objective calls (start, end) per slot, in order."""
    calls: dict[str, list[tuple[float, float]]] = {}
    for f in trace_dir.glob("*.trace"):
        slot = f.name.split(".")[0]
        for line in f.read_text().splitlines():
            a, b = line.split()
            calls.setdefault(slot, []).append((float(a), float(b)))
    for v in calls.values():
        v.sort()
    return calls


def measure(
    calls: dict[str, list[tuple[float, float]]], slots: int, lo: float, hi: float
) -> dict[str, Any]:
    busy = 0.0
    gaps: list[float] = []
    jobs = 0
    for runs in calls.values():
        for i, (a, b) in enumerate(runs):
            busy += max(0.0, min(b, hi) - max(a, lo))
            if lo <= a <= hi:
                jobs += 1
            if i + 1 < len(runs) and lo <= b and runs[i + 1][0] <= hi:
                gaps.append(runs[i + 1][0] - b)
    return {
        "busy_fraction": busy / (slots * (hi - lo)),
        "gap_p50_ms": benchlib.pct(gaps, 0.5),
        "gap_p99_ms": benchlib.pct(gaps, 0.99),
        "gap_mean_ms": 1000 * float(np.mean(gaps)) if gaps else float("nan"),
        "jobs": jobs,
        "jobs_per_s": jobs / (hi - lo),
        "slots_seen": len(calls),
    }


def _empty_redis(url: str) -> None:
    """Empty the benchmark's own Redis database (REDIS_DB: queues, RQ's jobs and workers)."""
    import redis

    r = redis.Redis.from_url(url)
    r.flushdb()
    r.close()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--epoch", type=float, default=0.2, help="seconds an epoch sleeps")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds measured")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring")
    ap.add_argument("--postgres", default=benchlib.DEFAULT_POSTGRES, help="server URL, no db")
    ap.add_argument("--redis", default=benchlib.DEFAULT_REDIS, help="server URL, no db number")
    ap.add_argument(
        "--server-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="API processes (`tuneyard server --workers`), one per core as the README says",
    )
    ap.add_argument("--quick", action="store_true", help="20 s measured after 5 s")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    if args.quick:
        args.duration, args.warmup = 20.0, 5.0
    started = time.monotonic()
    admin = benchlib.PgAdmin(args.postgres)
    machine = benchlib.machine(admin)
    print(f"machine: {machine}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="tuneyard-bench-utilization-"))
    trace_dir = work / "trace"
    trace_dir.mkdir()
    redis_url = f"{args.redis.rstrip('/')}/{REDIS_DB}"
    queue = f"bench-utilization-{uuid.uuid4().hex[:8]}"
    url = admin.recreate(DB)
    _empty_redis(redis_url)
    lo = hi = 0.0
    procs: list[subprocess.Popen[bytes]] = []
    server: benchlib.ApiServer | None = None
    logs = {n: open(work / f"{n}.log", "ab") for n in ("server", "scheduler", "worker")}  # noqa: SIM115
    try:
        from tuneyard.store.migrate import upgrade

        upgrade(url)
        admin_token = benchlib.create_token(url, "admin")
        worker_token = benchlib.create_token(url, "worker")
        server = benchlib.ApiServer(
            url,
            redis_url,
            work,
            logs["server"],
            ["--workers", str(args.server_workers)] if args.server_workers > 1 else [],
        )
        server.wait_ready()
        env = {
            **os.environ,
            "TUNEYARD_DATABASE_URL": url,
            "TUNEYARD_REDIS_URL": redis_url,
            "TUNEYARD_API_URL": server.url,
            "TUNEYARD_TOKEN": worker_token,
            "TUNEYARD_ALLOW": ENTRYPOINT,
            "TUNEYARD_BENCH_TRACE": str(trace_dir),
            "TUNEYARD_BENCH_EPOCH": str(args.epoch),
        }
        cli = [sys.executable, "-m", "tuneyard.cli"]
        procs.append(
            subprocess.Popen(
                [
                    *cli,
                    "worker",
                    *("--queue", queue, "--slots", str(args.slots)),
                    *("--data-dir", str(work / "worker"), "--path", str(BENCH)),
                ],
                env=env,
                stdout=logs["worker"],
                stderr=subprocess.STDOUT,
                cwd=benchlib.ROOT,
            )
        )
        procs.append(
            subprocess.Popen(
                [*cli, "dispatcher"],
                env=env,
                stdout=logs["scheduler"],
                stderr=subprocess.STDOUT,
                cwd=benchlib.ROOT,
            )
        )
        headers = benchlib.auth_headers(admin_token)
        created = httpx.post(
            f"{server.url}/api/v1/studies", json=study(args.slots, queue), headers=headers
        )
        created.raise_for_status()
        sid = created.json()["id"]
        # The window opens once every slot has started its first trial, plus the warm-up.
        deadline = time.monotonic() + 180
        while len(read_traces(trace_dir)) < args.slots and time.monotonic() < deadline:
            time.sleep(0.5)
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[3]} exited with {p.returncode}; see {work}")
        lo = time.time() + args.warmup
        hi = lo + args.duration
        time.sleep(max(0.0, hi - time.time()) + 1.0)
        httpx.patch(
            f"{server.url}/api/v1/studies/{sid}", json={"state": "stopped"}, headers=headers
        )
    finally:
        # Each call records itself when it returns: stop the workers (their trials end at
        # the next report) before reading what they recorded.
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=90)
            except subprocess.TimeoutExpired:
                p.kill()
        if server is not None:
            server.stop()
        _empty_redis(redis_url)
        admin.drop(DB)
        admin.close()
        for f in logs.values():
            f.close()
    result = measure(read_traces(trace_dir), args.slots, lo, hi)
    wall = time.monotonic() - started
    print(
        f"\n{args.slots} worker processes, epochs of {args.epoch:g} s, "
        f"{args.duration:g} s measured after {args.warmup:g} s:\n",
        flush=True,
    )
    benchlib.print_table(
        ["busy fraction", "dispatch gap p50 ms", "p99 ms", "mean ms", "jobs/s", "slots"],
        [
            [
                f"{100 * result['busy_fraction']:.1f} %",
                benchlib.fmt_ms(result["gap_p50_ms"]),
                benchlib.fmt_ms(result["gap_p99_ms"]),
                benchlib.fmt_ms(result["gap_mean_ms"]),
                f"{result['jobs_per_s']:.1f}",
                f"{result['slots_seen']}/{args.slots}",
            ]
        ],
    )
    print(f"\nwall time: {wall / 60:.1f} min", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "wall_s": wall, **result}, indent=1))


if __name__ == "__main__":
    main()
