"""How long a suggestion takes as a study grows, for each model-based sampler.

    python bench/sampler_speed.py [--sizes 100,500,2000] [--samplers tpe,gp,...] [--calls 20]
                                  [--running 4,64] [--suggest-only] [--database-url URL]

Two measurements per (sampler, size):

- ``suggest``: the sampler alone, in this process, after it has observed N trials (rung
  results at 1, 3, 9 as ASHA leaves them), with each count of ``--running`` configurations
  running (64 running trials are normal for a busy study);
- ``next``: the service's whole next-job path with a study holding N trials and their
  observations, the sampler warm in this process (what a busy API server sees), and
  ``next cold``: the first call after another process moved the state on (the state is
  loaded from the database).

Targets (issue 4): a TPE suggestion with 2,000 trials under 50 ms, GP under 200 ms at 500
observations, on the 2-core machines the tests run on.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import insert
from threadpoolctl import ThreadpoolController

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuneyard.scheduler.samplers.base import ModelSampler, Observation, make_sampler  # noqa: E402
from tuneyard.scheduler.space import SearchSpace  # noqa: E402
from tuneyard.service.context import Toolkit  # noqa: E402
from tuneyard.service.studies import StudyService  # noqa: E402
from tuneyard.service.trials import TrialService  # noqa: E402
from tuneyard.settings import Settings  # noqa: E402
from tuneyard.spec import SamplerSpec, StudySpec  # noqa: E402
from tuneyard.store.db import make_engine, make_sessionmaker  # noqa: E402
from tuneyard.store.models import Base, SamplerState, Study, Trial  # noqa: E402
from tuneyard.store.models import Observation as ObservationRow  # noqa: E402

SPACE = {
    "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99},
    "layers": {"type": "int", "low": 1, "high": 4},
    "units": {"type": "int", "low": 16, "high": 1024, "log": True},
    "batch": {"type": "categorical", "choices": [16, 32, 64, 128, 256]},
    "solver": {"type": "categorical", "choices": ["sgd", "adam"]},
}


def loss(p: dict[str, Any], r: float) -> float:
    return (math.log10(p["lr"]) + 2) ** 2 + (p["momentum"] - 0.9) ** 2 + 1.0 / r


def observations(space: SearchSpace, n: int) -> list[Observation]:
    out = []
    for i in range(n):
        p = space.sample(np.random.default_rng([0, i]))
        for r in (1.0, 3.0, 9.0)[: 1 + (i % 3 == 0) + (i % 9 == 0)]:
            out.append(Observation(i, p, r, loss(p, r)))
    return out


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(0.95 * len(xs)))]
    return f"p50 {statistics.median(xs) * 1e3:7.1f} ms  p95 {p95 * 1e3:7.1f} ms"


def bench_suggest(kind: str, n: int, calls: int, running_counts: list[int]) -> list[list[float]]:
    spec = StudySpec.model_validate({"name": "b", "space": SPACE})
    space = SearchSpace(spec.space)
    s = make_sampler(SamplerSpec(type=kind), space, 1)  # type: ignore[arg-type]
    assert isinstance(s, ModelSampler)
    s.observe(observations(space, n))
    blas = ThreadpoolController()
    out = []
    for count in running_counts:
        running = [space.sample(np.random.default_rng([9, i])) for i in range(count)]
        times = []
        for c in range(calls):
            t = time.perf_counter()
            with blas.limit(limits=1):  # as the service calls it
                s.suggest(n + c, running)
            times.append(time.perf_counter() - t)
        out.append(times)
    return out


def bench_next(url: str, kind: str, n: int, calls: int) -> tuple[list[float], list[float]]:
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    kit = Toolkit(make_sessionmaker(engine), Settings(database_url=url))
    spec = StudySpec.model_validate(
        {
            "name": "b",
            "space": SPACE,
            "sampler": {"type": kind, "seed": 1},
            "scheduler": {"type": "fifo", "max_resource": 9},
            "limits": {"max_trials": 10_000_000, "max_concurrent": 10_000},
        }
    )
    sid = StudyService(kit).create(spec).study.id
    space = SearchSpace(spec.space)
    obs = observations(space, n)
    params = {o.number: dict(o.params) for o in obs}
    now = kit.clock()
    with kit.transaction() as s:
        s.execute(
            insert(Trial),
            [
                dict(
                    study_id=sid,
                    number=i,
                    state="completed",
                    params=params[i],
                    resource_to=9.0,
                    created_at=now,
                    updated_at=now,
                )
                for i in range(n)
            ],
        )
        ids = dict(s.query(Trial.number, Trial.id).filter(Trial.study_id == sid).all())
        s.execute(
            insert(ObservationRow),
            [
                dict(
                    study_id=sid,
                    trial_id=ids[o.number],
                    number=o.number,
                    resource=o.resource,
                    score=o.score,
                    created_at=now,
                )
                for o in obs
            ],
        )
        study = s.get(Study, sid)
        assert study is not None
        study.trials_started = n
    svc = TrialService(kit)
    warm, cold = [], []
    svc.next_job(sid)  # first call: the sampler catches up on every observation once
    for c in range(calls):
        if c % 5 == 4:
            with kit.transaction() as s:  # another API process saved the state meanwhile
                row = s.get(SamplerState, sid)
                assert row is not None
                row.revision += 1
            bucket = cold
        else:
            bucket = warm
        t = time.perf_counter()
        svc.next_job(sid)
        bucket.append(time.perf_counter() - t)
    engine.dispose()
    return warm, cold


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="100,500,2000")
    ap.add_argument("--samplers", default="tpe,gp,cmaes,genetic,bohb")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument(
        "--running", default="4", help="running configurations per suggest, comma-separated"
    )
    ap.add_argument(
        "--suggest-only", action="store_true", help="the sampler alone, not the next-job path"
    )
    ap.add_argument("--database-url", default="")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    counts = [int(x) for x in args.running.split(",")]
    for kind in args.samplers.split(","):
        for n in sizes:
            for count, times in zip(
                counts, bench_suggest(kind, n, args.calls, counts), strict=True
            ):
                print(f"{kind:8s} n={n:6d}  suggest   running {count:3d}  {ms(times)}", flush=True)
            if args.suggest_only:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                url = args.database_url or f"sqlite:///{tmp}/bench.db"
                warm, cold = bench_next(url, kind, n, args.calls)
            print(f"{kind:8s} n={n:6d}  next      {ms(warm)}", flush=True)
            print(f"{kind:8s} n={n:6d}  next cold {ms(cold)}", flush=True)


if __name__ == "__main__":
    main()
