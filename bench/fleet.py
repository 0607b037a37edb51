"""A fleet of simulated GPU workers that train between their reports, raised until the
service no longer keeps up.

    python bench/fleet.py [--sizes 100,300,1000,3000] [--epoch 2.0] [--jitter 0.2]
                          [--warmup 15] [--window 30] [--systems tuneyard,optuna-rdb,...]
                          [--quick] [--out bench/results/fleet]

bench/overhead.py measures a closed loop of workers that train for no time at all, where a
worker's latency is queueing arithmetic. A fleet of GPUs is an open loop: each worker spends an
epoch (2 s here, ±20 %) training and then reports, so W workers offer W / epoch reports per
second whatever the service does, and what matters is whether the service answers each call
fast enough that the GPUs do not wait. For each fleet size, against, in turn:

- ``tuneyard``: ``tuneyard server --workers N`` on PostgreSQL (a database of its own, created
  and dropped here), a worker token, a study with TPE and ASHA in promotion mode (a trial
  pauses at its rung and is resumed later, as checkpointed GPU training runs). A few client
  processes each hold hundreds of workers as asyncio tasks on one ``httpx.AsyncClient``; each
  worker makes the calls the worker runtime makes: it registers, beats every 5 s with the trial
  it runs, asks ``next`` (backing off from 0.1 s to 1 s while there is nothing to run), beats
  its trial's lease, reports each epoch and follows the decision (``pause``, ``stop``,
  ``complete``; ``complete`` once the last epoch was a ``continue``), and signs off at the end.
- ``optuna-rdb`` / ``optuna-journal``: Optuna's RDBStorage on the same PostgreSQL and its
  JournalStorage on Redis, TPESampler and HyperbandPruner(1, 27, 3). Optuna's storage calls
  block, so its workers are threads, many to a process, each process with its own storage
  (and connection pool): ``ask`` and ``suggest_*``, an epoch, ``report`` + ``should_prune``,
  ..., ``tell``. They run up the sizes until a size falls apart (less than half the offered
  reports served); their failures are counted by kind.

Per size: reports/s offered and served; report, next and dispatch-gap p50/p99 (the gap is the
time from the end of a worker's job to the start of its next one, empty ``next`` answers and
back-off included); CPU time per report of the clients, the API processes and the database
(PostgreSQL backends of the benchmark's database, or the Redis server); errors by kind; and
whether the size *holds*: report p99 <= 50 ms, next p99 <= 100 ms, gap p99 <= 200 ms, no
errors, and at least 90 % of the offered reports served. Workers start spread over one epoch,
run a warm-up, then a window in which a call counts when it ends (its latency when it starts
and ends there).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import os
import random
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import benchlib  # noqa: E402
import httpx  # noqa: E402
import overhead  # noqa: E402

TY_DB = "tuneyard_bench_fleet"
OPTUNA_DB = "optuna_bench_fleet"
REDIS_DB = 12
REDIS_PREFIX = "tuneyard-bench-fleet"
SYSTEMS = ("tuneyard", "optuna-rdb", "optuna-journal")
API = "/api/v1"
# What the worker runtime does: the pool's registration beats every 5 s; a job beats its
# trial's lease every min(10 s, lease / 3); an empty ``next`` is retried after 0.1 s,
# doubling to 1 s.
WORKER_BEAT_S = 5.0
TRIAL_BEAT_S = 10.0
IDLE_FIRST_S, IDLE_MAX_S = 0.1, 1.0
GRACE_S = 30.0
warnings.filterwarnings("ignore", message=".*is experimental.*")

SPEC: dict[str, Any] = {
    **overhead.SPEC,
    "name": "fleet",
    "scheduler": {**overhead.SPEC["scheduler"], "mode": "promotion"},
}


# -- the pure parts -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """What a fleet size must meet to hold (milliseconds), and the share of the offered
    reports it must serve."""

    report_p99_ms: float = 50.0
    next_p99_ms: float = 100.0
    gap_p99_ms: float = 200.0
    served_share: float = 0.9


def offered_per_s(workers: int, epoch_s: float) -> float:
    """Reports per second that ``workers`` training ``epoch_s`` per epoch send."""
    return workers / epoch_s


def p50_p99(xs: Sequence[float]) -> tuple[float, float]:
    """The median and the 99th percentile of latencies in seconds, in milliseconds."""
    return benchlib.pct(xs, 0.5), benchlib.pct(xs, 0.99)


def jittered(epoch_s: float, jitter: float, rng: random.Random) -> float:
    """One epoch's training time: ``epoch_s`` give or take ``jitter`` of it, uniformly."""
    return epoch_s * (1.0 + rng.uniform(-jitter, jitter))


class Window:
    """The measurement window shared by every client process: ``measure`` to ``end`` on the
    machine's monotonic clock."""

    def __init__(self, measure: float, end: float) -> None:
        self.measure, self.end = measure, end

    def inside(self, t: float) -> bool:
        return self.measure <= t <= self.end

    def latency(self, a: float, b: float) -> bool:
        """Whether a call from a to b counts toward the latencies (it lies in the window)."""
        return a >= self.measure and b <= self.end


class GapClock:
    """A worker's dispatch gap: from the end of one job to the start of the next. Every
    ``next`` in between, empty ones and their back-off included, lies inside the gap; a
    worker's first job has no gap (it had no job before)."""

    def __init__(self) -> None:
        self.free_since: float | None = None

    def job_ended(self, t: float) -> None:
        self.free_since = t

    def job_started(self, t: float) -> float | None:
        """The gap that ends at ``t`` (None for the first job)."""
        free, self.free_since = self.free_since, None
        return None if free is None else t - free


@dataclass
class Record:
    """What one client process measured in the window."""

    report_s: list[float] = field(default_factory=list)
    next_s: list[float] = field(default_factory=list)
    gap_s: list[float] = field(default_factory=list)
    reports: int = 0
    jobs: int = 0
    empty_next: int = 0
    beats: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, call: str, exc: BaseException) -> None:
        self.errors[error_kind(call, exc)] = self.errors.get(error_kind(call, exc), 0) + 1

    def merge(self, other: Record) -> None:
        self.report_s += other.report_s
        self.next_s += other.next_s
        self.gap_s += other.gap_s
        self.reports += other.reports
        self.jobs += other.jobs
        self.empty_next += other.empty_next
        self.beats += other.beats
        for k, n in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + n


def error_kind(call: str, exc: BaseException) -> str:
    """A short, countable name for a failure: the call, then the HTTP status or the
    exception's type and the first words of its message."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"{call}: HTTP {exc.response.status_code}"
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{call}: {type(exc).__name__}" + (f" ({first[:70]})" if first else "")


@dataclass
class Result:
    system: str
    workers: int
    epoch_s: float
    window_s: float
    offered_per_s: float
    served_per_s: float = 0.0
    jobs_per_s: float = 0.0
    report_ms: tuple[float, float] = (math.nan, math.nan)
    next_ms: tuple[float, float] = (math.nan, math.nan)
    gap_ms: tuple[float, float] = (math.nan, math.nan)
    empty_next: int = 0
    beats: int = 0
    cpu_client_ms: float = math.nan
    cpu_server_ms: float = math.nan
    cpu_db_ms: float = math.nan
    client_cores: float = math.nan
    server_cores: float = math.nan
    db_cores: float = math.nan
    db_active: float = math.nan
    db_lock_waits: float = math.nan
    errors: dict[str, int] = field(default_factory=dict)
    holds: bool = False
    short_of: list[str] = field(default_factory=list)


def short_of(res: Result, limits: Limits) -> list[str]:
    """Why a fleet size does not hold the limits (empty: it holds). A latency with no
    measured call does not hold."""
    out: list[str] = []
    for name, value, limit in (
        ("report p99", res.report_ms[1], limits.report_p99_ms),
        ("next p99", res.next_ms[1], limits.next_p99_ms),
        ("gap p99", res.gap_ms[1], limits.gap_p99_ms),
    ):
        if math.isnan(value):
            out.append(f"{name}: not measured")
        elif value > limit:
            out.append(f"{name} {benchlib.fmt_ms(value)} > {limit:g} ms")
    if res.served_per_s < limits.served_share * res.offered_per_s:
        out.append(f"served {res.served_per_s:.0f} < {limits.served_share:.0%} of offered")
    n = sum(res.errors.values())
    if n:
        out.append(f"{n} errors")
    return out


def settle(res: Result, records: Sequence[Record], limits: Limits) -> Result:
    """Fill ``res`` in from the client processes' records."""
    rec = Record()
    for r in records:
        rec.merge(r)
    res.served_per_s = rec.reports / res.window_s
    res.jobs_per_s = rec.jobs / res.window_s
    res.report_ms, res.next_ms = p50_p99(rec.report_s), p50_p99(rec.next_s)
    res.gap_ms = p50_p99(rec.gap_s)
    res.empty_next, res.beats = rec.empty_next, rec.beats
    res.errors = dict(Counter(rec.errors).most_common())
    res.short_of = short_of(res, limits)
    res.holds = not res.short_of
    return res


def cpu(res: Result, client_s: float, server_s: float | None, db_s: float) -> None:
    """CPU seconds used in the window, as ms per served report and as cores busy."""
    reports = res.served_per_s * res.window_s
    w = res.window_s
    res.client_cores, res.db_cores = client_s / w, db_s / w
    if server_s is not None:
        res.server_cores = server_s / w
    if reports:
        res.cpu_client_ms, res.cpu_db_ms = 1000 * client_s / reports, 1000 * db_s / reports
        if server_s is not None:
            res.cpu_server_ms = 1000 * server_s / reports


# -- tuneyard's simulated workers -----------------------------------------------------------------
@dataclass
class Plan:
    """What every client process needs to know."""

    api: str
    token: str
    study_id: int
    epoch_s: float
    jitter: float


class Checked:
    """An ``httpx.AsyncClient`` whose calls raise on an error status."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        r = await self.client.post(path, json=body)
        if r.status_code >= 400:
            r.raise_for_status()
        return r


async def _beat_worker(http: Checked, wid: int, now_trial: list[int | None], rec: Record) -> None:
    while True:
        await asyncio.sleep(WORKER_BEAT_S)
        try:
            await http.post(f"{API}/workers/{wid}/heartbeat", {"trial_id": now_trial[0]})
            rec.beats += 1
        except Exception as exc:
            rec.error("worker heartbeat", exc)


async def _beat_trial(http: Checked, tid: int, attempt: int, every: float, rec: Record) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await http.post(f"{API}/trials/{tid}/heartbeat", {"attempt": attempt})
            rec.beats += 1
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (404, 409):
                return  # the trial ended (a beat racing its pause): the runtime stops beating
            rec.error("trial heartbeat", exc)
        except Exception as exc:
            rec.error("trial heartbeat", exc)


async def _sim_worker(
    name: str, http: Checked, plan: Plan, win: Window, rec: Record, rng: random.Random
) -> None:
    now = time.monotonic
    # Spread the fleet's start over one epoch, as workers that come up one by one do.
    await asyncio.sleep(rng.uniform(0, plan.epoch_s))
    body = {"name": name, "host": socket.gethostname(), "pid": os.getpid(), "queue": "fleet"}
    body |= {"slots": 1, "gpus": [{"index": "0", "name": "simulated"}]}
    try:
        wid = int((await http.post(f"{API}/workers", body)).json()["id"])
    except Exception as exc:
        rec.error("register", exc)
        return
    current: list[int | None] = [None]
    beater = asyncio.create_task(_beat_worker(http, wid, current, rec))
    gap, idle = GapClock(), IDLE_FIRST_S
    try:
        while now() < win.end:
            a = now()
            try:
                r = await http.post(f"{API}/studies/{plan.study_id}/next", {"worker": name})
            except Exception as exc:
                rec.error("next", exc)
                await asyncio.sleep(idle)
                continue
            b = now()
            if win.latency(a, b):
                rec.next_s.append(b - a)
            if r.status_code == 204:
                if win.inside(b):
                    rec.empty_next += 1
                await asyncio.sleep(idle)
                idle = min(2 * idle, IDLE_MAX_S)
                continue
            idle = IDLE_FIRST_S
            waited = gap.job_started(b)
            if waited is not None and win.inside(b):
                rec.gap_s.append(waited)
            await _run_job(http, r.json(), plan, win, rec, rng, current)
            gap.job_ended(now())
    finally:
        beater.cancel()
        try:
            await http.client.delete(f"{API}/workers/{wid}")
        except Exception as exc:
            rec.error("sign off", exc)


async def _run_job(
    http: Checked,
    job: dict[str, Any],
    plan: Plan,
    win: Window,
    rec: Record,
    rng: random.Random,
    current: list[int | None],
) -> None:
    now = time.monotonic
    tid, attempt, params = int(job["trial_id"]), int(job["attempt"]), job["params"]
    every = TRIAL_BEAT_S
    if job.get("lease_seconds"):
        every = min(every, float(job["lease_seconds"]) / 3)
    current[0] = tid
    beater = asyncio.create_task(_beat_trial(http, tid, attempt, every, rec))
    try:
        decision = "continue"
        step = int(job["resource_from"])
        while step < int(job["resource_to"]):
            await asyncio.sleep(jittered(plan.epoch_s, plan.jitter, rng))
            if now() > win.end:
                # The fleet stops: hand the trial back, as a worker told to stop does.
                body = {"attempt": attempt, "reason": "the benchmark's window ended"}
                with contextlib.suppress(Exception):
                    await http.post(f"{API}/trials/{tid}/release", body)
                return
            step += 1
            body = {"attempt": attempt, "step": step, "value": overhead.curve(params, step)}
            a = now()
            try:
                r = await http.post(f"{API}/trials/{tid}/reports", body)
            except Exception as exc:
                rec.error("report", exc)
                return
            b = now()
            if win.latency(a, b):
                rec.report_s.append(b - a)
            if win.inside(b):
                rec.reports += 1
            answer = r.json()
            decision = answer["decision"]
            if decision != "continue":
                break
            if answer.get("resource_to") is not None:
                job["resource_to"] = answer["resource_to"]  # promoted on the spot
        try:
            if decision == "pause":
                await http.post(f"{API}/trials/{tid}/pause", {"attempt": attempt})
            elif decision == "continue":
                await http.post(f"{API}/trials/{tid}/complete", {"attempt": attempt})
        except Exception as exc:
            rec.error(decision if decision == "pause" else "complete", exc)
        if win.inside(now()):
            rec.jobs += 1
    finally:
        beater.cancel()
        current[0] = None


def _ty_client(idx: int, count: int, plan: Plan, times: Any, out: Any) -> None:
    """A client process: ``count`` simulated workers on one event loop."""

    async def main() -> Record:
        win, rec = Window(times[0], times[1]), Record()
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        headers = benchlib.auth_headers(plan.token)
        async with httpx.AsyncClient(
            base_url=plan.api, headers=headers, limits=limits, timeout=60
        ) as client:
            http = Checked(client)
            rng = random.Random(idx)
            tasks = [
                asyncio.create_task(
                    _sim_worker(
                        f"fleet/{idx}-{i}", http, plan, win, rec, random.Random(rng.random())
                    )
                )
                for i in range(count)
            ]
            # A worker whose call is still unanswered well after the window is cut off, so
            # that what the others measured comes back.
            _, pending = await asyncio.wait(tasks, timeout=win.end + GRACE_S - time.monotonic())
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if pending:
                rec.errors[f"cut off: a call unanswered {GRACE_S:g} s after the window"] = len(
                    pending
                )
        return rec

    out.put((idx, asdict(asyncio.run(main()))))


# -- Optuna's workers -----------------------------------------------------------------------------
def _optuna_storage(kind: str, url: str) -> Any:
    import optuna

    if kind == "optuna-rdb":
        return optuna.storages.RDBStorage(url)
    from optuna.storages.journal import JournalRedisBackend, JournalStorage

    return JournalStorage(JournalRedisBackend(url, prefix=REDIS_PREFIX))


def _optuna_thread(
    study: Any, plan: Plan, win: Window, rec: Record, lock: threading.Lock, seed: int
) -> None:
    import optuna

    rng, now = random.Random(seed), time.monotonic
    pruned = optuna.trial.TrialState.PRUNED
    time.sleep(rng.uniform(0, plan.epoch_s))
    gap = GapClock()
    while now() < win.end:
        mine = Record()
        try:
            a = now()
            trial = study.ask()
            params = overhead._optuna_suggest(trial)
            b = now()
            if win.latency(a, b):
                mine.next_s.append(b - a)
            waited = gap.job_started(b)
            if waited is not None and win.inside(b):
                mine.gap_s.append(waited)
            prune = False
            for step in range(1, overhead.STEPS + 1):
                time.sleep(jittered(plan.epoch_s, plan.jitter, rng))
                if now() > win.end:
                    # The fleet stops: the unfinished trial ends as a stopped worker's does.
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    with lock:
                        rec.merge(mine)
                    return
                a = now()
                trial.report(overhead.curve(params, step), step)
                prune = trial.should_prune()
                b = now()
                if win.latency(a, b):
                    mine.report_s.append(b - a)
                if win.inside(b):
                    mine.reports += 1
                if prune:
                    break
            if prune:
                study.tell(trial, state=pruned)
            else:
                study.tell(trial, overhead.curve(params, step))
            if win.inside(now()):
                mine.jobs += 1
            gap.job_ended(now())
        except Exception as exc:
            mine.error("optuna", exc)
            gap.job_ended(now())
            time.sleep(1.0)
        with lock:
            rec.merge(mine)


def _optuna_client(
    idx: int, count: int, kind: str, url: str, name: str, plan: Plan, times: Any, out: Any
) -> None:
    """A client process: ``count`` Optuna workers as threads sharing one storage."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rec, lock = Record(), threading.Lock()
    try:
        study = optuna.load_study(
            study_name=name,
            storage=_optuna_storage(kind, url),
            sampler=optuna.samplers.TPESampler(seed=idx),
            pruner=optuna.pruners.HyperbandPruner(
                min_resource=1, max_resource=overhead.STEPS, reduction_factor=3
            ),
        )
    except Exception as exc:
        rec.errors[error_kind("load_study", exc)] = count
        out.put((idx, asdict(rec)))
        return
    win = Window(times[0], times[1])
    threads = [
        threading.Thread(
            target=_optuna_thread,
            args=(study, plan, win, rec, lock, idx * 100_000 + i),
            daemon=True,
        )
        for i in range(count)
    ]
    for t in threads:
        t.start()
    deadline = win.end + 60
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    stuck = sum(t.is_alive() for t in threads)
    with lock:
        if stuck:
            rec.errors["optuna: still blocked 60 s after the window"] = stuck
        out.put((idx, asdict(rec)))
    out.close()
    out.join_thread()
    os._exit(0)  # threads still blocked in a storage call must not hold the process


# -- one fleet size ------------------------------------------------------------------------------
def split(total: int, parts: int) -> list[int]:
    """``total`` workers over ``parts`` processes, as evenly as they go."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class LockSampler:
    """Samples the benchmark database's backends ten times a second over the window: how
    many run a statement, and how many of those wait for a lock (a row or a relation: the
    study's row, a rung's). Many waiting with the CPUs not busy means the locks bound it."""

    SQL = (
        "SELECT count(*) FILTER (WHERE state = 'active'), "
        "count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock') "
        "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    )

    def __init__(self, base: str, database: str | None, every: float = 0.1) -> None:
        self.base, self.database, self.every = base, database, every
        self.samples: list[tuple[int, int]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        url = benchlib.libpq_url(benchlib.with_database(self.base, "postgres"))
        with psycopg.connect(url, autocommit=True) as conn:
            while not self.done.wait(self.every):
                row = conn.execute(self.SQL, (self.database,)).fetchone()
                if row is not None:
                    self.samples.append((int(row[0]), int(row[1])))

    def start(self) -> None:
        if self.database:
            self.thread.start()

    def stop(self) -> tuple[float, float]:
        """Mean backends active, and mean of them waiting for a lock."""
        if not self.database:
            return math.nan, math.nan
        self.done.set()
        self.thread.join(timeout=10)
        n = len(self.samples) or 1
        return sum(a for a, _ in self.samples) / n, sum(w for _, w in self.samples) / n


def run_size(
    system: str,
    workers: int,
    clients: int,
    target: Any,
    args: Any,
    server_pids: Any,
    db_pids: Any,
    opts: argparse.Namespace,
    limits: Limits,
    database: str | None = None,
) -> Result:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start = time.monotonic() + 1.0
    times = ctx.Array("d", [start + opts.warmup, start + opts.warmup + opts.window], lock=False)
    procs = [
        ctx.Process(target=target, args=(i, n, *args, times, out), daemon=True)
        for i, n in enumerate(split(workers, clients))
    ]
    for p in procs:
        p.start()
    res = Result(system, workers, opts.epoch, opts.window, offered_per_s(workers, opts.epoch))
    time.sleep(max(0.0, times[0] - time.monotonic()))
    meters = [benchlib.CpuMeter() for _ in range(3)]
    pids = [p.pid for p in procs if p.pid is not None]
    meters[0].start(pids)
    meters[1].start(server_pids() if server_pids else [])
    meters[2].start(db_pids())
    locks = LockSampler(opts.postgres, database)
    locks.start()
    time.sleep(max(0.0, times[1] - time.monotonic()))
    res.db_active, res.db_lock_waits = locks.stop()
    client_s = meters[0].stop(pids)
    server_s = meters[1].stop(server_pids()) if server_pids else None
    db_s = meters[2].stop(db_pids())
    records: list[Record] = []
    deadline = time.monotonic() + 120
    while len(records) < len(procs) and time.monotonic() < deadline:
        try:
            _, data = out.get(timeout=1)
        except Exception:
            continue
        records.append(Record(**data))
    for p in procs:
        p.join(timeout=max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
    missing = len(procs) - len(records)
    if missing:
        records.append(Record(errors={"client process gave no result": missing}))
    settle(res, records, limits)
    cpu(res, client_s, server_s, db_s)
    return res


class Bench:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.admin = benchlib.PgAdmin(opts.postgres)
        self.redis_url = f"{opts.redis.rstrip('/')}/{REDIS_DB}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="tuneyard-bench-fleet-"))
        self.log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115
        self.limits = Limits()
        self.results: list[Result] = []
        self.seq = 0
        self.server: benchlib.ApiServer | None = None
        self.tokens = ("", "")

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        self._clean_redis()
        self.admin.drop(TY_DB)
        self.admin.drop(OPTUNA_DB)
        self.admin.close()
        self.log.close()

    def _clean_redis(self) -> None:
        import redis

        r = redis.Redis.from_url(self.redis_url)
        keys = list(r.scan_iter(match=f"{REDIS_PREFIX}:*", count=10_000))
        for chunk in range(0, len(keys), 10_000):
            r.delete(*keys[chunk : chunk + 10_000])
        r.close()

    def clients(self, workers: int) -> int:
        return self.opts.clients or max(1, min(4, math.ceil(workers / 250)))

    def _server(self) -> tuple[benchlib.ApiServer, str, str]:
        """The API server on the benchmark's database, with an admin and a worker token;
        started once and shared by the fleet sizes (each runs a study of its own)."""
        from tuneyard.store.migrate import upgrade

        if self.server is None:
            url = self.admin.recreate(TY_DB)
            upgrade(url)
            tokens = benchlib.create_token(url, "admin"), benchlib.create_token(url, "worker")
            self.server = benchlib.ApiServer(
                url, self.redis_url, self.data_dir, self.log, self.opts.server_arg
            )
            self.server.wait_ready()
            self.tokens = tokens
        return self.server, *self.tokens

    def tuneyard(self, workers: int) -> Result:
        server, admin_token, worker_token = self._server()
        admin = benchlib.auth_headers(admin_token)
        created = httpx.post(f"{server.url}{API}/studies", json=SPEC, headers=admin)
        created.raise_for_status()
        study_id = created.json()["id"]
        plan = Plan(server.url, worker_token, study_id, self.opts.epoch, self.opts.jitter)
        try:
            return run_size(
                "tuneyard",
                workers,
                self.clients(workers),
                _ty_client,
                (plan,),
                server.pids,
                lambda: self.admin.backends(TY_DB),
                self.opts,
                self.limits,
                TY_DB,
            )
        finally:
            # The trials left running must not be dealt to the next size's fleet.
            stop = {"state": "stopped"}
            try:
                httpx.patch(
                    f"{server.url}{API}/studies/{study_id}", json=stop, headers=admin, timeout=120
                ).raise_for_status()
            except httpx.HTTPError as exc:
                print(f"  could not stop study {study_id}: {exc}", flush=True)

    def optuna(self, kind: str, workers: int) -> Result:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        self.seq += 1
        name = f"fleet-{self.seq}-{os.getpid()}"
        if kind == "optuna-rdb":
            url = self.admin.recreate(OPTUNA_DB)
            db_pids: Any = lambda: self.admin.backends(OPTUNA_DB)  # noqa: E731
        else:
            self._clean_redis()
            url = self.redis_url
            pid = benchlib.redis_pid(url)
            db_pids = lambda: [pid] if pid else []  # noqa: E731
        storage = _optuna_storage(kind, url)
        optuna.create_study(study_name=name, storage=storage, direction="minimize")
        if kind == "optuna-rdb":
            storage.engine.dispose()
        del storage
        plan = Plan("", "", 0, self.opts.epoch, self.opts.jitter)
        procs = self.opts.optuna_procs or max(2, min(8, math.ceil(workers / 100)))
        return run_size(
            kind,
            workers,
            procs,
            _optuna_client,
            (kind, url, name, plan),
            None,
            db_pids,
            self.opts,
            self.limits,
            OPTUNA_DB if kind == "optuna-rdb" else None,
        )

    def one(self, system: str, workers: int) -> Result:
        t = time.monotonic()
        print(f"{system}, {workers} workers ...", flush=True)
        res = self.tuneyard(workers) if system == "tuneyard" else self.optuna(system, workers)
        f = benchlib.fmt_ms
        print(
            f"  {res.served_per_s:.0f}/{res.offered_per_s:.0f} reports/s, report p50/p99 "
            f"{f(res.report_ms[0])}/{f(res.report_ms[1])} ms, next {f(res.next_ms[0])}/"
            f"{f(res.next_ms[1])} ms, gap {f(res.gap_ms[0])}/{f(res.gap_ms[1])} ms, cores "
            f"client/server/db {res.client_cores:.2f}/{res.server_cores:.2f}/"
            f"{res.db_cores:.2f}, db active/lock-waiting {res.db_active:.1f}/"
            f"{res.db_lock_waits:.1f}, "
            f"{'holds' if res.holds else 'short: ' + '; '.join(res.short_of)}"
            f" [{time.monotonic() - t:.0f} s]",
            flush=True,
        )
        if res.errors:
            print(f"  errors: {res.errors}", flush=True)
        self.results.append(res)
        return res


# -- the report ---------------------------------------------------------------------------------
HEAD = [
    "system",
    "W",
    "offered/served reports/s",
    "report p50/p99 ms",
    "next p50/p99 ms",
    "gap p50/p99 ms",
    "CPU ms/report client/API/db",
    "cores client/API/db",
    "db active/lock-waiting",
    "errors",
    "holds",
]


def _row(r: Result) -> list[str]:
    f = benchlib.fmt_ms
    errors = sum(r.errors.values())
    return [
        r.system,
        f"{r.workers:,}",
        f"{r.offered_per_s:.0f}/{r.served_per_s:.0f}",
        f"{f(r.report_ms[0])}/{f(r.report_ms[1])}",
        f"{f(r.next_ms[0])}/{f(r.next_ms[1])}",
        f"{f(r.gap_ms[0])}/{f(r.gap_ms[1])}",
        f"{f(r.cpu_client_ms)}/{f(r.cpu_server_ms)}/{f(r.cpu_db_ms)}",
        "/".join(
            "-" if math.isnan(x) else f"{x:.2f}"
            for x in (r.client_cores, r.server_cores, r.db_cores)
        ),
        "-" if math.isnan(r.db_active) else f"{r.db_active:.1f}/{r.db_lock_waits:.1f}",
        str(errors),
        "yes" if r.holds else "no",
    ]


def largest_held(results: Sequence[Result], system: str) -> int | None:
    """The largest fleet of ``system`` that held the limits."""
    held = [r.workers for r in results if r.system == system and r.holds]
    return max(held) if held else None


def table(results: Sequence[Result]) -> str:
    text = benchlib.print_table(HEAD, [_row(r) for r in results])
    lines = [text, ""]
    for system in dict.fromkeys(r.system for r in results):
        n = largest_held(results, system)
        lines.append(
            f"- {system}: largest fleet that holds: " + (f"{n:,}" if n else "none measured")
        )
    errs = [(r, k, n) for r in results for k, n in r.errors.items()]
    if errs:
        lines += ["", "Errors by kind:", ""]
        lines += [f"- {r.system} W={r.workers:,}: {n} x {k}" for r, k, n in errs]
    return "\n".join(lines) + "\n"


def plot(results: Sequence[Result], path: Path) -> None:
    """Served reports/s and the p99s against the fleet size, as an HTML page (plotly)."""
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1,
        cols=4,
        subplot_titles=("reports/s served", "report p99 (ms)", "next p99 (ms)", "gap p99 (ms)"),
    )
    for system in dict.fromkeys(r.system for r in results):
        rs = sorted((r for r in results if r.system == system), key=lambda r: r.workers)
        xs = [r.workers for r in rs]
        for col, ys in enumerate(
            (
                [r.served_per_s for r in rs],
                [r.report_ms[1] for r in rs],
                [r.next_ms[1] for r in rs],
                [r.gap_ms[1] for r in rs],
            ),
            start=1,
        ):
            fig.add_scatter(
                x=xs, y=ys, name=system, legendgroup=system, showlegend=col == 1, row=1, col=col
            )
    offered = sorted({(r.workers, r.offered_per_s) for r in results})
    fig.add_scatter(
        x=[w for w, _ in offered],
        y=[o for _, o in offered],
        name="offered",
        line={"dash": "dot"},
        row=1,
        col=1,
    )
    limits = Limits()
    for col, limit in ((2, limits.report_p99_ms), (3, limits.next_p99_ms), (4, limits.gap_p99_ms)):
        fig.add_hline(y=limit, line_dash="dash", row=1, col=col)  # type: ignore[arg-type]
    fig.update_xaxes(type="log", title_text="simulated workers")
    fig.update_yaxes(type="log")
    fig.update_layout(title="Fleet of simulated GPU workers, 2 s epochs", width=1600, height=450)
    fig.write_html(path, include_plotlyjs="cdn")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="100,300,1000,3000", help="fleet sizes, in workers")
    ap.add_argument("--epoch", type=float, default=2.0, help="seconds of training per epoch")
    ap.add_argument("--jitter", type=float, default=0.2, help="epoch time ± this share of it")
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds before the window")
    ap.add_argument("--window", type=float, default=30.0, help="seconds measured per size")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument(
        "--clients",
        type=int,
        default=0,
        help="tuneyard client processes (0: 1 per 250 workers, at most 4)",
    )
    ap.add_argument(
        "--optuna-procs",
        type=int,
        default=0,
        help="Optuna worker processes (0: 1 per 100 workers, 2 to 8)",
    )
    ap.add_argument("--postgres", default=benchlib.DEFAULT_POSTGRES, help="server URL, no db")
    ap.add_argument("--redis", default=benchlib.DEFAULT_REDIS, help="server URL, no db number")
    ap.add_argument("--server-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--server-arg", action="append", default=[])
    ap.add_argument("--quick", action="store_true", help="sizes 50,100; 5 s warm-up, 10 s windows")
    ap.add_argument("--out", type=Path, default=BENCH / "results" / "fleet")
    opts = ap.parse_args()
    if opts.quick:
        opts.sizes, opts.warmup, opts.window = "50,100", 5.0, 10.0
    for name in ("epoch", "window"):
        if getattr(opts, name) <= 0:
            ap.error(f"--{name} must be positive")
    if not 0 <= opts.jitter < 1:
        ap.error("--jitter must be in [0, 1): an epoch takes (1 ± jitter) times --epoch")
    systems = [s for s in opts.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        ap.error(f"--systems: unknown {', '.join(sorted(unknown))}")
    try:
        sizes = [int(x) for x in opts.sizes.split(",") if x]
    except ValueError:
        ap.error(f"--sizes must be whole numbers separated by commas, not {opts.sizes!r}")
    if not sizes or min(sizes) < 1:
        ap.error("--sizes needs at least one fleet size, each at least 1")
    if opts.server_workers > 1:
        opts.server_arg = ["--workers", str(opts.server_workers), *opts.server_arg]
    started = time.monotonic()
    bench = Bench(opts)
    print(f"machine: {benchlib.machine(bench.admin)}; load {os.getloadavg()}", flush=True)
    given_up: dict[str, str] = {}
    try:
        for w in sizes:
            for system in systems:
                if system in given_up:
                    continue
                res = bench.one(system, w)
                if system != "tuneyard" and (res.served_per_s < 0.5 * res.offered_per_s):
                    given_up[system] = f"stopped after W={w:,}: it served " + (
                        f"{res.served_per_s:.0f} of {res.offered_per_s:.0f} reports/s"
                    )
    finally:
        bench.close()
    wall = time.monotonic() - started
    text = table(bench.results)
    for system, why in given_up.items():
        text += f"- {system}: {why}\n"
    print(f"\nwall time: {wall / 60:.1f} min", flush=True)
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "results.md").write_text(text + f"\nwall time: {wall / 60:.1f} min\n")
    (opts.out / "results.json").write_text(
        json.dumps(
            {
                "machine": benchlib.machine(),
                "wall_s": wall,
                "options": vars(opts) | {"out": str(opts.out)},
            }
            | {"results": [asdict(r) for r in bench.results], "given_up": given_up},
            indent=1,
        )
    )
    plot(bench.results, opts.out / "fleet.html")


if __name__ == "__main__":
    main()
