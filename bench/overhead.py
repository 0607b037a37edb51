"""The service's overhead against Optuna, and how it holds up as a study grows.

    python bench/overhead.py [--workers 1,4,16,64] [--sizes 100,1000,10000,100000]
                             [--optuna-sizes 100,1000] [--duration 15] [--quick]
                             [--server-workers N] [--json results.json] [--profile DIR]

W simulated workers, each a process of its own, run trials with up to 27 intermediate reports
and no training time, against, in turn for each W:

- ``tuneyard``: the API as the README's production setup serves it (``tuneyard server
  --workers N``, a process per core by default) on PostgreSQL, with a worker token; a study
  with TPE and ASHA (stopping mode, rungs 1, 3, 9, 27, 4 brackets like Optuna's Hyperband). A
  worker is a plain httpx client doing what the worker runtime does: ``next``, then a report
  per epoch until the decision is not ``continue`` (``complete`` only if the last one was).
- ``optuna-rdb``: Optuna 5 with RDBStorage on the same PostgreSQL server, TPESampler and
  HyperbandPruner(1, 27, 3): ``study.ask()`` and the parameters' ``suggest_*`` calls, then
  ``trial.report`` + ``trial.should_prune()`` per epoch, then ``study.tell``.
- ``optuna-journal``: the same on Optuna's JournalStorage over the same Redis.

Every configuration gets a warm-up, then a fixed measurement window; calls are counted when
they end in the window, latencies of calls that start and end in it. CPU time is read from
/proc over the window: ``client`` is the worker processes, ``server`` the API server's
processes, ``db`` the PostgreSQL backends connected to the benchmark's database (or the Redis
server, for the journal). Then the growth section: the same measurements with the study
prefilled, in bulk SQL, with N finished trials of 27 reports each (rung records, observations
and the TPE sampler's stored state included, as a real run leaves them); Optuna's RDB study is
prefilled the same way and its journal through ``study.add_trials``, for the sizes in
``--optuna-sizes``.

The benchmark creates and drops its own databases (``tuneyard_bench_overhead``,
``optuna_bench_overhead``) and uses its own Redis db number and key prefix.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import benchlib  # noqa: E402
import httpx  # noqa: E402

TY_DB = "tuneyard_bench_overhead"
OPTUNA_DB = "optuna_bench_overhead"
REDIS_DB = 13
REDIS_PREFIX = "tuneyard-bench-overhead"
STEPS = 27
SYSTEMS = ("tuneyard", "optuna-rdb", "optuna-journal")
warnings.filterwarnings("ignore", message=".*is experimental.*")

SPACE: dict[str, Any] = {
    "lr": {"type": "float", "low": 1.0e-4, "high": 1.0, "log": True},
    "batch_size": {"type": "categorical", "choices": [16, 32, 64, 128, 256]},
    "layers": {"type": "int", "low": 1, "high": 3},
    "units": {"type": "int", "low": 16, "high": 512, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99, "step": 0.01},
    "solver": {"type": "categorical", "choices": ["sgd", "adam"]},
    "nesterov": {"type": "categorical", "choices": [True, False], "when": {"solver": "sgd"}},
}
SPEC: dict[str, Any] = {
    "name": "overhead",
    "metric": "loss",
    "direction": "minimize",
    "space": SPACE,
    "sampler": {"type": "tpe", "seed": 7},
    "scheduler": {
        "type": "asha",
        "min_resource": 1,
        "max_resource": STEPS,
        "reduction_factor": 3,
        "mode": "stopping",
        # Asynchronous Hyperband: 4 brackets starting at rungs 0..3, as Optuna's
        # HyperbandPruner(1, 27, 3) has 4 brackets of successive halving.
        "brackets": 4,
    },
    "limits": {"max_trials": 10_000_000, "max_concurrent": 10_000},
}


def curve(params: dict[str, Any], step: int) -> float:
    """A learning curve of the configuration: falls with the step towards its floor."""
    floor = (
        (math.log10(params["lr"]) + 2.0) ** 2 / 8
        + abs(params["momentum"] - 0.9)
        + 0.02 * params["layers"]
        + abs(math.log2(params["units"]) - 7) / 20
        + params["batch_size"] / 2560
        + (0.05 if params["solver"] == "sgd" and not params.get("nesterov") else 0.0)
    )
    return floor + 1.0 / step


# -- worker processes ---------------------------------------------------------------------------
@dataclass
class Record:
    """What one worker process measured in the window."""

    next_s: list[float] = field(default_factory=list)
    report_s: list[float] = field(default_factory=list)
    reports: int = 0
    trials: int = 0
    errors: int = 0
    first_error: str = ""

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = f"{type(exc).__name__}: {exc}"[:300]


class Window:
    """The shared schedule: warm-up until ``measure``, measurement until ``end``."""

    def __init__(self, times: Any) -> None:
        self.measure, self.end = times[0], times[1]

    def call(self, rec: Record, a: float, b: float, into: list[float]) -> bool:
        """Record one call from a to b; whether it counts (ended in the window)."""
        if a >= self.measure and b <= self.end:
            into.append(b - a)
        return self.measure <= b <= self.end


def _ty_worker(
    idx: int, api: str, token: str, study_id: int, go: Any, times: Any, out: Any
) -> None:
    try:
        client = httpx.Client(base_url=api, timeout=300, headers=benchlib.auth_headers(token))
        client.get("/healthz").raise_for_status()
    except Exception as exc:
        out.put(("failed", idx, f"{type(exc).__name__}: {exc}"))
        return
    out.put(("ready", idx, ""))
    go.wait()
    win, rec, now = Window(times), Record(), time.monotonic
    name = f"bench/{idx}"
    while now() < win.end:
        try:
            a = now()
            r = client.post(f"/api/v1/studies/{study_id}/next", json={"worker": name})
            b = now()
            if r.status_code == 204:
                time.sleep(0.05)
                continue
            r.raise_for_status()
            win.call(rec, a, b, rec.next_s)
            job = r.json()
            tid, params, decision = job["trial_id"], job["params"], "continue"
            for step in range(int(job["resource_from"]) + 1, int(job["resource_to"]) + 1):
                body = {"attempt": job["attempt"], "step": step, "value": curve(params, step)}
                a = now()
                r = client.post(f"/api/v1/trials/{tid}/reports", json=body)
                b = now()
                r.raise_for_status()
                if win.call(rec, a, b, rec.report_s):
                    rec.reports += 1
                decision = r.json()["decision"]
                if decision != "continue":
                    break
            if decision == "continue":
                done = {"attempt": job["attempt"]}
                client.post(f"/api/v1/trials/{tid}/complete", json=done).raise_for_status()
            if win.measure <= now() <= win.end:
                rec.trials += 1
        except Exception as exc:
            rec.error(exc)
            time.sleep(0.1)
    out.put(("done", idx, asdict(rec)))


def _optuna_storage(kind: str, url: str) -> Any:
    import optuna

    if kind == "optuna-rdb":
        return optuna.storages.RDBStorage(url)
    from optuna.storages.journal import JournalRedisBackend, JournalStorage

    return JournalStorage(JournalRedisBackend(url, prefix=REDIS_PREFIX))


def _optuna_suggest(trial: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "lr": trial.suggest_float("lr", 1e-4, 1.0, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64, 128, 256]),
        "layers": trial.suggest_int("layers", 1, 3),
        "units": trial.suggest_int("units", 16, 512, log=True),
        "momentum": trial.suggest_float("momentum", 0.0, 0.99, step=0.01),
        "solver": trial.suggest_categorical("solver", ["sgd", "adam"]),
    }
    if p["solver"] == "sgd":
        p["nesterov"] = trial.suggest_categorical("nesterov", [True, False])
    return p


def _optuna_study(kind: str, url: str, name: str, seed: int) -> Any:
    import optuna

    return optuna.load_study(
        study_name=name,
        storage=_optuna_storage(kind, url),
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=STEPS, reduction_factor=3
        ),
    )


def _optuna_worker(idx: int, kind: str, url: str, name: str, go: Any, times: Any, out: Any) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = _optuna_study(kind, url, name, seed=1000 + idx)
    except Exception as exc:
        out.put(("failed", idx, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
        return
    out.put(("ready", idx, ""))
    go.wait()
    win, rec, now = Window(times), Record(), time.monotonic
    pruned = optuna.trial.TrialState.PRUNED
    while now() < win.end:
        try:
            a = now()
            trial = study.ask()
            params = _optuna_suggest(trial)
            b = now()
            win.call(rec, a, b, rec.next_s)
            value, prune = 0.0, False
            for step in range(1, STEPS + 1):
                value = curve(params, step)
                a = now()
                trial.report(value, step)
                prune = trial.should_prune()
                b = now()
                if win.call(rec, a, b, rec.report_s):
                    rec.reports += 1
                if prune:
                    break
            if prune:
                study.tell(trial, state=pruned)
            else:
                study.tell(trial, value)
            if win.measure <= now() <= win.end:
                rec.trials += 1
        except Exception as exc:
            rec.error(exc)
            time.sleep(0.1)
    out.put(("done", idx, asdict(rec)))


# -- one configuration ----------------------------------------------------------------------------
@dataclass
class Result:
    system: str
    workers: int
    size: int
    duration: float
    reports_per_s: float = 0.0
    trials_per_s: float = 0.0
    report_ms: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    next_ms: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    cpu_client_ms: float = math.nan
    cpu_server_ms: float = math.nan
    cpu_db_ms: float = math.nan
    failed_to_start: int = 0
    errors: int = 0
    first_error: str = ""


@dataclass
class Run:
    """What one configuration needs: how to start its worker processes, which other
    processes' CPU time to count, and where to write the server's profile (if anywhere)."""

    target: Callable[..., None]
    args: Callable[[int], tuple[Any, ...]]
    server_pids: Callable[[], list[int]] | None = None
    db_pids: Callable[[], list[int]] = list
    profile: Path | None = None


def measure(
    system: str, workers: int, size: int, run: Run, warmup: float, duration: float
) -> Result:
    ctx = mp.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    times = ctx.Array("d", [math.inf, math.inf], lock=False)
    procs = [
        ctx.Process(target=run.target, args=(i, *run.args(i), go, times, out), daemon=True)
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    failed, first_error, ready = 0, "", 0
    deadline = time.monotonic() + 180
    while ready + failed < workers and time.monotonic() < deadline:
        try:
            kind, _, msg = out.get(timeout=1)
        except Exception:
            continue
        if kind == "ready":
            ready += 1
        else:
            failed += 1
            first_error = first_error or msg
    start = time.monotonic() + 0.2
    times[0], times[1] = start + warmup, start + warmup + duration
    res = Result(system, workers, size, duration, failed_to_start=failed)
    if failed:
        res.first_error = first_error
    go.set()
    client_cpu, server_cpu, db_cpu = benchlib.CpuMeter(), benchlib.CpuMeter(), benchlib.CpuMeter()
    pids = [p.pid for p in procs if p.pid is not None]
    time.sleep(max(0.0, times[0] - time.monotonic()))
    spy = _profile(run, duration)
    client_cpu.start(pids)
    server_cpu.start(run.server_pids() if run.server_pids else [])
    db_cpu.start(run.db_pids())
    time.sleep(max(0.0, times[1] - time.monotonic()))
    c_used = client_cpu.stop(pids)
    s_used = server_cpu.stop(run.server_pids() if run.server_pids else [])
    d_used = db_cpu.stop(run.db_pids())
    if spy is not None:
        spy.wait()
    records: list[Record] = []
    deadline = time.monotonic() + 120
    while len(records) < ready and time.monotonic() < deadline:
        try:
            kind, _, data = out.get(timeout=1)
        except Exception:
            continue
        if kind == "done":
            records.append(Record(**data))
    for p in procs:
        p.join(timeout=max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
    reports = sum(r.reports for r in records)
    res.reports_per_s = reports / duration
    res.trials_per_s = sum(r.trials for r in records) / duration
    nxt = [x for r in records for x in r.next_s]
    rep = [x for r in records for x in r.report_s]
    res.next_ms = tuple(benchlib.pct(nxt, q) for q in (0.5, 0.95, 0.99))  # type: ignore[assignment]
    res.report_ms = tuple(benchlib.pct(rep, q) for q in (0.5, 0.95, 0.99))  # type: ignore[assignment]
    if reports:
        res.cpu_client_ms = 1000 * c_used / reports
        res.cpu_server_ms = 1000 * s_used / reports if run.server_pids else math.nan
        res.cpu_db_ms = 1000 * d_used / reports
    res.errors = sum(r.errors for r in records) + (workers - ready - failed)
    errs = [r.first_error for r in records if r.first_error]
    if errs and not res.first_error:
        res.first_error = errs[0]
    return res


_PY_SPY = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"


def _profile(run: Run, duration: float) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the server's processes (only while they hold the GIL, i.e. CPU time
    spent in Python) over the window, as collapsed stacks."""
    if run.profile is None or run.server_pids is None:
        return None
    pid = run.server_pids()[0]
    return subprocess.Popen(
        [
            *(_PY_SPY, "record", "--format", "raw", "--gil", "--subprocesses"),
            *("--rate", "200", "--duration", str(max(1, int(duration)))),
            *("--pid", str(pid), "--output", str(run.profile)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# -- prefilling a study ---------------------------------------------------------------------------
def prefill_tuneyard(url: str, study_id: int, n: int) -> None:
    """N finished trials of 27 reports each, with what a real run leaves: trial i in bracket
    i mod 4 (as ASHA deals them), its rung entries from the bracket's first rung up, the rung
    rows with their cut-offs at the right rank, observations, decisions, attempts, and the TPE
    sampler's stored state and watermark. Written in bulk (COPY, INSERT ... SELECT)."""
    import numpy as np
    import psycopg

    from tuneyard.scheduler.samplers.base import Observation as Obs
    from tuneyard.scheduler.samplers.tpe import TPESampler
    from tuneyard.scheduler.schedulers import make_scheduler
    from tuneyard.scheduler.space import SearchSpace
    from tuneyard.spec import StudySpec

    spec = StudySpec.model_validate(SPEC)
    space = SearchSpace(spec.space)
    brackets = int(SPEC["scheduler"]["brackets"])
    rng = np.random.default_rng(n)
    params = [space.sample(rng) for _ in range(n)]
    finals = [curve(p, STEPS) for p in params]
    rungs = (1, 3, 9, 27)
    with psycopg.connect(benchlib.libpq_url(url)) as conn:
        cur = conn.cursor()
        cols = (
            "study_id, number, state, params, bracket, base_rung, rung, resource_from, "
            "resource_to, value, resource, best_score, score_sum, score_count, attempts, "
            "log_bytes, reason, created_at, updated_at, ended_at"
        )
        with cur.copy(f"COPY trials ({cols}) FROM STDIN") as copy:
            for i, (p, v) in enumerate(zip(params, finals, strict=True)):
                b = i % brackets
                copy.write_row(
                    (
                        *(study_id, i, "completed", json.dumps(p), b, b, 3, 0.0, 27.0, v, 27.0),
                        *(v, v * STEPS, STEPS, 1, 0, "reached max_resource", _NOW, _NOW, _NOW),
                    )
                )
        # The curve's value at step s (or resource r), from the final value kept on the trial.
        value_at = "t.value + 1.0 / s - 1.0 / 27"
        score_at = "t.value + 1.0 / r - 1.0 / 27"
        cur.execute(
            "INSERT INTO reports (trial_id, step, value, metrics, decision, reason, "
            "resource_to, created_at) "
            f"SELECT t.id, s, {value_at}, '{{}}', CASE WHEN s = 27 THEN 'complete' ELSE "
            "'continue' END, '', 27, now() FROM trials t, generate_series(1, 27) s "
            "WHERE t.study_id = %s ORDER BY t.number, s",
            (study_id,),
        )
        cur.execute(
            "INSERT INTO rung_entries (study_id, bracket, rung, trial_id, score, promoted, "
            "waiting, created_at) "
            f"SELECT %s, t.bracket, k, t.id, {score_at}, false, false, now() "
            "FROM trials t, unnest(ARRAY[0, 1, 2, 3], ARRAY[1, 3, 9, 27]) AS u(k, r) "
            "WHERE t.study_id = %s AND k >= t.base_rung ORDER BY t.number, k",
            (study_id, study_id),
        )
        cur.execute(
            "INSERT INTO observations (study_id, trial_id, number, resource, score, created_at) "
            f"SELECT %s, t.id, t.number, r, {score_at}, now() "
            "FROM trials t, unnest(ARRAY[0, 1, 2, 3], ARRAY[1, 3, 9, 27]) AS u(k, r) "
            "WHERE t.study_id = %s AND k >= t.base_rung ORDER BY t.number, r",
            (study_id, study_id),
        )
        cur.execute(
            "INSERT INTO decisions (study_id, trial_id, kind, reason, rung, resource, created_at) "
            "SELECT %s, t.id, d.kind, d.kind, NULL, 27, now() FROM trials t, "
            "unnest(ARRAY['start', 'complete']) AS d(kind) WHERE t.study_id = %s "
            "ORDER BY t.number",
            (study_id, study_id),
        )
        cur.execute(
            "INSERT INTO attempts (trial_id, number, resource_from, resource_to, state, worker, "
            "started_at, ended_at) SELECT t.id, 1, 0, 27, 'completed', 'prefill', now(), now() "
            "FROM trials t WHERE t.study_id = %s",
            (study_id,),
        )
        sched = make_scheduler(spec.scheduler, spec.direction)
        for b in range(brackets):
            count = len(range(b, n, brackets))
            for k in range(b, len(rungs)):
                offset = sched.cutoff_rank(count)
                cut = None
                if offset >= 0:
                    cut = cur.execute(
                        "SELECT score, id FROM rung_entries WHERE study_id = %s AND bracket = %s "
                        "AND rung = %s ORDER BY score, id OFFSET %s LIMIT 1",
                        (study_id, b, k, offset),
                    ).fetchone()
                cur.execute(
                    "INSERT INTO rungs (study_id, bracket, rung, resource, entries, dropped, "
                    "promoted, cut_score, cut_entry) VALUES (%s, %s, %s, %s, %s, 0, 0, %s, %s) "
                    "ON CONFLICT (study_id, bracket, rung) DO UPDATE SET "
                    "entries = EXCLUDED.entries, cut_score = EXCLUDED.cut_score, "
                    "cut_entry = EXCLUDED.cut_entry",
                    (study_id, b, k, float(rungs[k]), count, *(cut or (None, None))),
                )
            cur.execute(
                "UPDATE brackets SET admitted = %s WHERE study_id = %s AND index = %s",
                (count, study_id, b),
            )
        cur.execute("UPDATE studies SET trials_started = %s WHERE id = %s", (n, study_id))
        row = cur.execute(
            "SELECT max(id) FROM observations WHERE study_id = %s", (study_id,)
        ).fetchone()
        watermark = int(row[0]) if row and row[0] is not None else 0
        seed = cur.execute("SELECT seed FROM studies WHERE id = %s", (study_id,)).fetchone()
        sampler = TPESampler(space, int(seed[0]) if seed else 0, spec.sampler)
        sampler.observe(
            [
                Obs(i, p, float(r), v + 1.0 / r - 1.0 / STEPS)
                for i, (p, v) in enumerate(zip(params, finals, strict=True))
                for k, r in enumerate(rungs)
                if k >= i % brackets
            ]
        )
        cur.execute(
            "INSERT INTO sampler_states (study_id, kind, version, watermark, revision, state, "
            "updated_at) VALUES (%s, 'tpe', %s, %s, 1, %s, now())",
            (study_id, sampler.version, watermark, json.dumps(sampler.get_state())),
        )
        conn.commit()
    with psycopg.connect(benchlib.libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def prime(api: str, token: str, study_id: int) -> None:
    """One job, run to its end, through a fresh API server: the sampler's stored state is
    read once, before the measurement, as a long-running server would have it."""
    with httpx.Client(base_url=api, timeout=600, headers=benchlib.auth_headers(token)) as c:
        job = c.post(f"/api/v1/studies/{study_id}/next", json={"worker": "prime"}).json()
        for step in range(int(job["resource_from"]) + 1, int(job["resource_to"]) + 1):
            body = {"attempt": job["attempt"], "step": step, "value": curve(job["params"], step)}
            r = c.post(f"/api/v1/trials/{job['trial_id']}/reports", json=body)
            if r.json()["decision"] != "continue":
                break


_NOW = "2024-01-01T00:00:00+00:00"


def _optuna_trials(n: int) -> list[dict[str, Any]]:
    """N configurations of the space, drawn as Optuna's distributions hold them."""
    rng = random.Random(n)
    out = []
    for _ in range(n):
        p: dict[str, Any] = {
            "lr": 10 ** rng.uniform(-4, 0),
            "batch_size": rng.choice([16, 32, 64, 128, 256]),
            "layers": rng.randint(1, 3),
            "units": round(2 ** rng.uniform(4, 9)),
            "momentum": round(rng.randint(0, 99) * 0.01, 2),
            "solver": rng.choice(["sgd", "adam"]),
        }
        if p["solver"] == "sgd":
            p["nesterov"] = rng.choice([True, False])
        out.append(p)
    return out


def _optuna_distributions() -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    return {
        "lr": FloatDistribution(1e-4, 1.0, log=True),
        "batch_size": CategoricalDistribution([16, 32, 64, 128, 256]),
        "layers": IntDistribution(1, 3),
        "units": IntDistribution(16, 512, log=True),
        "momentum": FloatDistribution(0.0, 0.99, step=0.01),
        "solver": CategoricalDistribution(["sgd", "adam"]),
        "nesterov": CategoricalDistribution([True, False]),
    }


def prefill_optuna(study: Any, n: int) -> None:
    """N finished trials with 27 intermediate values each, and the system attributes the
    Hyperband pruner writes at the rungs a trial passes, through ``add_trials`` (the journal's
    way in)."""
    import optuna

    dists = _optuna_distributions()
    trials = []
    for p in _optuna_trials(n):
        inter = {s: curve(p, s) for s in range(1, STEPS + 1)}
        trials.append(
            optuna.trial.create_trial(
                params=p,
                distributions={k: dists[k] for k in p},
                value=inter[STEPS],
                intermediate_values=inter,
                system_attrs={f"completed_rung_{k}": inter[3**k] for k in range(4)},
            )
        )
    for chunk in range(0, n, 500):
        study.add_trials(trials[chunk : chunk + 500])


def prefill_optuna_rdb(url: str, study_name: str, n: int) -> None:
    """The same trials as :func:`prefill_optuna`, written into RDBStorage's tables in bulk:
    through ``add_trials`` that takes minutes per thousand trials."""
    import psycopg
    from optuna.distributions import distribution_to_json

    dists = _optuna_distributions()
    as_json = {k: distribution_to_json(d) for k, d in dists.items()}
    configs = _optuna_trials(n)
    with psycopg.connect(benchlib.libpq_url(url)) as conn:
        cur = conn.cursor()
        row = cur.execute(
            "SELECT study_id FROM studies WHERE study_name = %s", (study_name,)
        ).fetchone()
        assert row is not None
        sid = int(row[0])
        with cur.copy(
            "COPY trials (number, study_id, state, datetime_start, datetime_complete) FROM STDIN"
        ) as copy:
            for i in range(n):
                copy.write_row((i, sid, "COMPLETE", _NOW, _NOW))
        ids = [
            int(r[0])
            for r in cur.execute(
                "SELECT trial_id FROM trials WHERE study_id = %s ORDER BY number", (sid,)
            )
        ]
        with cur.copy(
            "COPY trial_params (trial_id, param_name, param_value, distribution_json) FROM STDIN"
        ) as copy:
            for tid, p in zip(ids, configs, strict=True):
                for k, v in p.items():
                    copy.write_row((tid, k, dists[k].to_internal_repr(v), as_json[k]))
        with cur.copy(
            "COPY trial_values (trial_id, objective, value, value_type) FROM STDIN"
        ) as copy:
            for tid, p in zip(ids, configs, strict=True):
                copy.write_row((tid, 0, curve(p, STEPS), "FINITE"))
        # The curve's value at step s, from the final value.
        cur.execute(
            "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, "
            "intermediate_value_type) SELECT v.trial_id, s, v.value + 1.0 / s - 1.0 / 27, "
            "'FINITE' FROM trial_values v JOIN trials t ON t.trial_id = v.trial_id, "
            "generate_series(1, 27) s WHERE t.study_id = %s ORDER BY v.trial_id, s",
            (sid,),
        )
        cur.execute(
            "INSERT INTO trial_system_attributes (trial_id, key, value_json) "
            "SELECT v.trial_id, 'completed_rung_' || k, (v.value + 1.0 / r - 1.0 / 27)::text "
            "FROM trial_values v JOIN trials t ON t.trial_id = v.trial_id, "
            "unnest(ARRAY[0, 1, 2, 3], ARRAY[1, 3, 9, 27]) AS u(k, r) WHERE t.study_id = %s",
            (sid,),
        )
        conn.commit()
    with psycopg.connect(benchlib.libpq_url(url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


# -- the run --------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.admin = benchlib.PgAdmin(args.postgres)
        self.redis_url = f"{args.redis.rstrip('/')}/{REDIS_DB}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="tuneyard-bench-overhead-"))
        self.log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115
        self.results: list[Result] = []
        self.seq = 0

    def close(self) -> None:
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

    def tuneyard(self, workers: int, size: int) -> Result:
        from tuneyard.store.migrate import upgrade

        url = self.admin.recreate(TY_DB)
        upgrade(url)
        admin_token = benchlib.create_token(url, "admin")
        worker_token = benchlib.create_token(url, "worker")
        server = benchlib.ApiServer(
            url, self.redis_url, self.data_dir, self.log, self.args.server_arg
        )
        try:
            server.wait_ready()
            created = httpx.post(
                f"{server.url}/api/v1/studies",
                json=SPEC,
                headers=benchlib.auth_headers(admin_token),
            )
            created.raise_for_status()
            study_id = created.json()["id"]
            if size:
                t = time.monotonic()
                prefill_tuneyard(url, study_id, size)
                print(f"  prefilled {size} trials in {time.monotonic() - t:.0f} s", flush=True)
                # A fresh server process: nothing of the prefill's study cached in memory.
                server.stop()
                server = benchlib.ApiServer(
                    url, self.redis_url, self.data_dir, self.log, self.args.server_arg
                )
                server.wait_ready()
                for _ in range(self.args.server_workers):  # roughly once per API process
                    prime(server.url, worker_token, study_id)
            srv = server
            run = Run(
                _ty_worker,
                lambda i: (srv.url, worker_token, study_id),
                server_pids=srv.pids,
                db_pids=lambda: self.admin.backends(TY_DB),
                profile=self.args.profile / f"tuneyard-w{workers}-n{size}.txt"
                if self.args.profile
                else None,
            )
            return measure("tuneyard", workers, size, run, self.args.warmup, self.args.duration)
        finally:
            server.stop()

    def optuna(self, kind: str, workers: int, size: int) -> Result:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.seq += 1
        name = f"overhead-{self.seq}-{os.getpid()}"
        if kind == "optuna-rdb":
            url = self.admin.recreate(OPTUNA_DB)
            db_pids: Callable[[], list[int]] = lambda: self.admin.backends(OPTUNA_DB)  # noqa: E731
        else:
            self._clean_redis()
            url = self.redis_url
            pid = benchlib.redis_pid(url)
            db_pids = lambda: [pid] if pid else []  # noqa: E731
        storage = _optuna_storage(kind, url)
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
        if size:
            t = time.monotonic()
            if kind == "optuna-rdb":
                prefill_optuna_rdb(url, name, size)
            else:
                prefill_optuna(study, size)
            print(f"  prefilled {size} trials in {time.monotonic() - t:.0f} s", flush=True)
        if kind == "optuna-rdb":
            storage.engine.dispose()
        del study, storage
        run = Run(_optuna_worker, lambda i: (kind, url, name), db_pids=db_pids)
        return measure(kind, workers, size, run, self.args.warmup, self.args.duration)

    def one(self, system: str, workers: int, size: int) -> Result:
        t = time.monotonic()
        print(f"{system}, {workers} workers, {size} trials prefilled ...", flush=True)
        if system == "tuneyard":
            res = self.tuneyard(workers, size)
        else:
            res = self.optuna(system, workers, size)
        print(
            f"  {res.reports_per_s:.1f} reports/s, report p50 {benchlib.fmt_ms(res.report_ms[0])}"
            f" ms, next p50 {benchlib.fmt_ms(res.next_ms[0])} ms"
            + (f", {res.failed_to_start} failed to start" if res.failed_to_start else "")
            + (f", {res.errors} errors ({res.first_error})" if res.errors else "")
            + f" [{time.monotonic() - t:.0f} s]",
            flush=True,
        )
        self.results.append(res)
        return res


def _row(r: Result) -> list[str]:
    f = benchlib.fmt_ms
    return [
        r.system,
        str(r.workers) if r.size == 0 else f"{r.size:,}",
        f"{r.reports_per_s:.1f}",
        f"{r.trials_per_s:.2f}",
        "/".join(f(x) for x in r.report_ms),
        "/".join(f(x) for x in r.next_ms),
        f"{f(r.cpu_client_ms)}/{f(r.cpu_server_ms)}/{f(r.cpu_db_ms)}",
        f"{r.failed_to_start}/{r.errors}",
    ]


HEAD = [
    "system",
    "W",
    "reports/s",
    "trials/s",
    "report p50/p95/p99 ms",
    "next p50/p95/p99 ms",
    "CPU ms/report client/server/db",
    "failed/errors",
]


def _ratio(a: float, b: float) -> str:
    if not (a > 0 and b > 0) or math.isnan(a) or math.isnan(b):
        return "-"
    x = a / b
    return f"{x:.1f}x" if x >= 10 else f"{x:.2f}x"


def tables(results: Sequence[Result], sizes_w: int) -> str:
    out = io.StringIO()

    def emit(s: str) -> None:
        print(s, flush=True)
        out.write(s + "\n")

    sweep = [r for r in results if r.size == 0]
    if sweep:
        emit("\nConcurrent workers, empty study at the start:\n")
        out.write(benchlib.print_table(HEAD, [_row(r) for r in sweep]) + "\n")
        rows = []
        by = {(r.system, r.workers): r for r in sweep}
        for w in sorted({r.workers for r in sweep}):
            t = by.get(("tuneyard", w))
            for other in ("optuna-rdb", "optuna-journal"):
                o = by.get((other, w))
                if t is None or o is None:
                    continue
                rows.append(
                    [
                        str(w),
                        other,
                        _ratio(t.reports_per_s, o.reports_per_s),
                        _ratio(t.trials_per_s, o.trials_per_s),
                        _ratio(t.report_ms[0], o.report_ms[0]),
                        _ratio(t.report_ms[2], o.report_ms[2]),
                        _ratio(t.next_ms[0], o.next_ms[0]),
                        _ratio(t.next_ms[2], o.next_ms[2]),
                        _ratio(
                            t.cpu_client_ms + t.cpu_server_ms + t.cpu_db_ms,
                            o.cpu_client_ms + o.cpu_db_ms,
                        ),
                    ]
                )
        if rows:
            emit("\nRatios tuneyard / Optuna (reports/s: higher is better; latencies: lower)\n")
        out.write(
            benchlib.print_table(
                [
                    "W",
                    "against",
                    "reports/s",
                    "trials/s",
                    "report p50",
                    "report p99",
                    "next p50",
                    "next p99",
                    "CPU/report",
                ],
                rows,
            )
            + "\n"
            if rows
            else ""
        )
    grown = [r for r in results if r.size > 0]
    if grown:
        emit(f"\nGrowth: {sizes_w} workers, study prefilled with N finished trials:\n")
        head = ["system", "N", *HEAD[2:]]
        out.write(benchlib.print_table(head, [_row(r) for r in grown]) + "\n")
        ty = sorted((r for r in grown if r.system == "tuneyard"), key=lambda r: r.size)
        if len(ty) >= 2:
            lo, hi = ty[0], ty[-1]
            emit(
                f"\ntuneyard, {hi.size:,} against {lo.size:,} trials: report p50 "
                f"{_ratio(hi.report_ms[0], lo.report_ms[0])}, next p50 "
                f"{_ratio(hi.next_ms[0], lo.next_ms[0])}, reports/s "
                f"{_ratio(hi.reports_per_s, lo.reports_per_s)}"
            )
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workers", default="1,4,16,64", help="W values of the sweep")
    ap.add_argument("--sizes", default="100,1000,10000,100000", help="prefilled study sizes")
    ap.add_argument(
        "--optuna-sizes", default="100,1000", help="sizes at which Optuna is measured too"
    )
    ap.add_argument("--growth-workers", type=int, default=4, help="W of the growth section")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds measured per run")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--postgres", default=benchlib.DEFAULT_POSTGRES, help="server URL, no db")
    ap.add_argument("--redis", default=benchlib.DEFAULT_REDIS, help="server URL, no db number")
    ap.add_argument(
        "--server-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="API processes (`tuneyard server --workers`), one per core as the README says",
    )
    ap.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra option for `tuneyard server` (repeatable)",
    )
    ap.add_argument("--quick", action="store_true", help="W 1,16; sizes 100,10000; 5 s each")
    ap.add_argument("--json", type=Path, help="also write every result here")
    ap.add_argument(
        "--profile",
        type=Path,
        help="record the API server's profile (py-spy, collapsed stacks) for each tuneyard "
        "run into this directory",
    )
    args = ap.parse_args()
    if args.quick:
        args.workers, args.sizes, args.optuna_sizes = "1,16", "100,10000", "100"
        args.duration, args.warmup = 5.0, 2.0
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        ap.error(f"unknown systems: {', '.join(sorted(unknown))}")
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    if args.server_workers > 1:
        args.server_arg = ["--workers", str(args.server_workers), *args.server_arg]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    bench = Bench(args)
    print(f"machine: {benchlib.machine(bench.admin)}", flush=True)
    try:
        for w in ints(args.workers):
            for system in systems:
                bench.one(system, w, 0)
        optuna_sizes = set(ints(args.optuna_sizes))
        for n in ints(args.sizes):
            for system in systems:
                if system == "tuneyard" or n in optuna_sizes:
                    bench.one(system, args.growth_workers, n)
    finally:
        bench.close()
    text = tables(bench.results, args.growth_workers)
    wall = time.monotonic() - started
    print(f"\nwall time: {wall / 60:.1f} min", flush=True)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": benchlib.machine(), "wall_s": wall, "tables": text}
                | {"results": [asdict(r) for r in bench.results]},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
