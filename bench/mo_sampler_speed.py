"""How long a multi-objective suggestion takes as a study grows.

    python bench/mo_sampler_speed.py [--sizes 100,500] [--objectives 2,3]
                                     [--samplers nsga2,motpe,gp] [--calls 20] [--running 0,8]
                                     [--flat]

Each sampler observes N trials of a synthetic study (rung results at 1, 3 and 9 as ASHA
leaves them; validation error, model size and, with 3 objectives, a latency; a memory
constraint that some trials break; ``--flat``: every trial at one resource, as without early
stopping, the most the non-dominated sorting has to sort), then suggests ``--calls`` times
with each count of ``--running`` configurations running, BLAS limited to one thread as the
service calls it.
``gp`` with several objectives is ParEGO.

Target (issue 16): a suggestion within 200 ms at 500 observations with 2-3 objectives, on the
2-core machines the tests run on.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuneyard.scheduler.samplers.base import ModelSampler, Observation, make_sampler  # noqa: E402
from tuneyard.scheduler.space import SearchSpace  # noqa: E402
from tuneyard.spec import SamplerSpec, StudySpec  # noqa: E402

SPACE = {
    "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99},
    "layers": {"type": "int", "low": 1, "high": 4},
    "units": {"type": "int", "low": 16, "high": 1024, "log": True},
    "batch": {"type": "categorical", "choices": [16, 32, 64, 128, 256]},
    "solver": {"type": "categorical", "choices": ["sgd", "adam"]},
}


def objectives(p: dict[str, Any], r: float, m: int) -> tuple[tuple[float, ...], float]:
    """(error, size[, latency]) at resource r, and the memory constraint's violation."""
    size = p["layers"] * math.log2(p["units"])
    error = (math.log10(p["lr"]) + 2) ** 2 + (p["momentum"] - 0.9) ** 2 + 1.0 / r + 3.0 / size
    latency = size * 64 / p["batch"]
    memory = p["layers"] * p["units"] * p["batch"] / 65536
    ys = (error, size, latency)[:m]
    return ys, max(0.0, memory - 8.0)


def observations(space: SearchSpace, n: int, m: int, flat: bool) -> list[Observation]:
    out = []
    for i in range(n):
        p = space.sample(np.random.default_rng([0, i]))
        rungs = (9.0,) if flat else (1.0, 3.0, 9.0)[: 1 + (i % 3 == 0) + (i % 9 == 0)]
        for r in rungs:
            ys, v = objectives(p, r, m)
            out.append(Observation(i, p, r, ys[0], scores=ys, violation=v))
    return out


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(0.95 * len(xs)))]
    return f"p50 {statistics.median(xs) * 1e3:7.1f} ms  p95 {p95 * 1e3:7.1f} ms"


def bench(
    kind: str, n: int, m: int, calls: int, running_counts: list[int], flat: bool
) -> list[list[float]]:
    spec = StudySpec.model_validate({"name": "b", "space": SPACE})
    space = SearchSpace(spec.space)
    s = make_sampler(SamplerSpec(type=kind), space, 1, m)  # type: ignore[arg-type]
    assert isinstance(s, ModelSampler)
    s.observe(observations(space, n, m, flat))
    blas = ThreadpoolController()
    out = []
    for count in running_counts:
        running = [space.sample(np.random.default_rng([9, i])) for i in range(count)]
        times = []
        for c in range(calls):
            t = time.perf_counter()
            with blas.limit(limits=1):
                s.suggest(n + c, running)
            times.append(time.perf_counter() - t)
        out.append(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="100,500")
    ap.add_argument("--objectives", default="2,3")
    ap.add_argument("--samplers", default="nsga2,motpe,gp")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--running", default="0,8")
    ap.add_argument("--flat", action="store_true")
    args = ap.parse_args()
    running = [int(c) for c in args.running.split(",")]
    for m in (int(x) for x in args.objectives.split(",")):
        for kind in args.samplers.split(","):
            for n in (int(x) for x in args.sizes.split(",")):
                times_per_count = bench(kind, n, m, args.calls, running, args.flat)
                for count, times in zip(running, times_per_count, strict=True):
                    name = "parego" if kind == "gp" and m > 1 else kind
                    print(
                        f"{name:7s} {m} objectives  {n:5d} trials  {count:3d} running  {ms(times)}"
                    )


if __name__ == "__main__":
    main()
