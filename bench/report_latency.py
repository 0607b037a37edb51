"""One client's round trips against the API, to see the report path's latency on its own.

    python bench/report_latency.py [--reports 2000] [--server-workers 2] [--postgres URL]

Starts ``tuneyard server`` (as the README's production setup runs it, tokens required) on a
database of its own on the machine's PostgreSQL, and times, from one httpx client:

- ``healthz``: GET /healthz, the floor of an HTTP round trip through the same stack;
- ``report``: plain reports of one trial of a FIFO study (no rung, no decision other than
  ``continue``), the report path's common case;
- ``next+complete``: a new trial (random sampler) and its completion.

bench/overhead.py measures the same path among everything else a worker does; this one
isolates it. The server runs the checkout the script is in, so two versions of the code are
compared by running each one's copy in turn. The API only touches Redis for /readyz; it is
given db 12, which no other benchmark uses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import benchlib  # noqa: E402

DB = "tuneyard_bench_latency"
SPEC = {
    "name": "latency",
    "metric": "loss",
    "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
    "sampler": {"type": "random", "seed": 1},
    "scheduler": {"type": "fifo", "max_resource": 1_000_000},
    "limits": {"max_trials": 1_000_000, "max_concurrent": 1_000},
}


def timed(fn: Callable[[int], None], n: int) -> list[float]:
    out = []
    for i in range(n):
        a = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - a)
    return out


def row(name: str, xs: list[float]) -> list[str]:
    return [
        name,
        str(len(xs)),
        f"{statistics.median(xs) * 1e3:.2f}",
        f"{benchlib.pct(xs, 0.95):.2f}",
        f"{benchlib.pct(xs, 0.99):.2f}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reports", type=int, default=2000, help="plain reports timed")
    ap.add_argument("--server-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--postgres", default=benchlib.DEFAULT_POSTGRES, help="server URL, no db")
    ap.add_argument("--redis", default=benchlib.DEFAULT_REDIS, help="server URL, no db number")
    args = ap.parse_args()

    admin = benchlib.PgAdmin(args.postgres)
    print(f"machine: {benchlib.machine(admin)}", flush=True)
    url = admin.recreate(DB)
    from tuneyard.store.migrate import upgrade

    upgrade(url)
    token = benchlib.create_token(url, "admin")
    data_dir = Path(tempfile.mkdtemp(prefix="tuneyard-bench-latency-"))
    log = open(data_dir / "server.log", "ab")  # noqa: SIM115
    server = benchlib.ApiServer(
        url,
        f"{args.redis.rstrip('/')}/12",
        data_dir,
        log,
        ["--workers", str(args.server_workers)],
        # Thousands of reports a second from one trial: the per-trial rate limit would refuse
        # most of them.
        env={"TUNEYARD_REPORT_RATE": "0"},
    )
    try:
        server.wait_ready()
        http = httpx.Client(base_url=server.url, headers=benchlib.auth_headers(token), timeout=60)
        created = http.post("/api/v1/studies", json=SPEC)
        created.raise_for_status()
        sid = created.json()["id"]
        timed(lambda i: http.get("/healthz").raise_for_status(), 200)  # warm-up
        health = timed(lambda i: http.get("/healthz").raise_for_status(), 1000)
        job = http.post(f"/api/v1/studies/{sid}/next", json={"worker": "w"}).json()
        tid, attempt = job["trial_id"], job["attempt"]

        def report(i: int) -> None:
            r = http.post(
                f"/api/v1/trials/{tid}/reports",
                json={"attempt": attempt, "step": i + 1, "value": 1.0 / (i + 2)},
            )
            r.raise_for_status()
            if r.json()["decision"] != "continue":
                raise RuntimeError(f"unexpected answer: {r.text}")

        reports = timed(report, args.reports)

        def next_and_complete(i: int) -> None:
            r = http.post(f"/api/v1/studies/{sid}/next", json={"worker": "w"})
            r.raise_for_status()
            job = r.json()
            body = {"attempt": job["attempt"], "value": 0.5}
            done = http.post(f"/api/v1/trials/{job['trial_id']}/complete", json=body)
            done.raise_for_status()

        jobs = timed(next_and_complete, 200)
        http.close()
    finally:
        server.stop()
        log.close()
        admin.drop(DB)
        admin.close()
    print()
    benchlib.print_table(
        ["call", "n", "p50 ms", "p95 ms", "p99 ms"],
        [row("healthz", health), row("report", reports), row("next+complete", jobs)],
    )


if __name__ == "__main__":
    main()
