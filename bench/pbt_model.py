"""PBT and PB2 on a real model: a learning-rate schedule for an MLP on digits, against ASHA.

    python bench/pbt.py --model --out bench/results/pbt    # 10 seeds, table, plot (README)
    python bench/pbt.py --model --seeds 2                  # a quick look, no files

A one-hidden-layer MLP (64 units, ReLU) on scikit-learn's bundled digits, trained by
PyTorch's SGD with momentum (batch 32, one CPU thread). The digits are split once,
stratified, 60/20/20 into training, validation and test: every method ranks, promotes and
selects on the validation error only, and the test error of what it returns is read
afterwards, so the optimism of picking the best of many validation errors shows. The space
is ``lr`` (log, 1e-4 to 1) and ``momentum`` (0 to 0.99), both mutable. Every method trains
``POPULATION * EPOCHS`` = 240 epochs in all, 8 at a time:

* **pbt**: :class:`tuneyard.scheduler.pbt.PopulationRule`, type ``pbt`` (quantile 0.25,
  explore at the definition's defaults), 8 members, a boundary every 2 epochs, 30 epochs.
* **pb2**: the same with type ``pb2`` (GP-UCB on the improvement per interval).
* **asha+tpe**: tuneyard's TPE with ASHA in promotion mode (rungs at 2, 6, 18 and 30 epochs,
  eta 3, one bracket) in :class:`tuneyard.scheduler.simulator.Simulator`, which drives the
  service's engine; each trial's model stays in memory, resumes on promotion and is freed
  when the trial ends; the run ends when 240 epochs are spent.
* **random**: the population's 8 initial configurations, each kept for 30 epochs (PBT
  without exploit and explore: the floor).

**Asynchronous population.** 8 simulated workers; an epoch takes 1 +- 0.2 time units
(uniform), so members reach their boundaries in varying order. At a member's boundary b the
rule sees each other member's latest validation error at or before b, and draws a donor
only from the top-quantile members already at b: the clone resumes from the donor's
checkpoint at b (model and optimizer state, kept for every member at every boundary), so a
member's resource never moves. A population returns its member with the lowest validation
error at 30 epochs; ASHA the trial trained furthest, then the lowest validation error there.
"""

from __future__ import annotations

import copy
import heapq
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tuneyard.scheduler.pbt import (  # noqa: E402
    Interval,
    Lineage,
    MemberScore,
    PopulationDecision,
    PopulationRule,
)
from tuneyard.scheduler.samplers.base import ModelSampler, make_sampler  # noqa: E402
from tuneyard.scheduler.schedulers import make_scheduler  # noqa: E402
from tuneyard.scheduler.simulator import SimTrial, Simulator  # noqa: E402
from tuneyard.scheduler.space import SearchSpace  # noqa: E402
from tuneyard.spec import SamplerSpec, SchedulerSpec, StudySpec  # noqa: E402
from tuneyard.spec.pbt import PBTSpec  # noqa: E402

METHODS = ("pbt", "pb2", "asha+tpe", "random")
SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99},
}
HIDDEN = 64
BATCH = 32
JITTER = 0.2


@dataclass(frozen=True)
class Size:
    population: int = 8
    interval: int = 2
    epochs: int = 30
    # ASHA's first rung; eta 3 and max_resource ``epochs`` give rungs 2, 6, 18, 30.
    min_resource: int = 2

    @property
    def budget(self) -> int:
        return self.population * self.epochs


@dataclass
class Run:
    method: str
    seed: int
    val: float  # validation error of the returned member or trial, at its last epoch
    test: float  # its held-out test error there
    params: dict[str, float]  # its parameters at the end
    epochs: int  # epochs trained in all
    reached: int  # epochs the returned member or trial was trained for
    wall: float
    # (epochs spent, lowest validation error reported so far), after each epoch trained.
    curve: list[tuple[int, float]]
    schedule: list[tuple[float, float]] = field(default_factory=list)  # (epoch, lr) of it
    exploits: list[PopulationDecision] = field(default_factory=list)
    # Each exploit's donor score at the clone and the clone's validation error just after.
    clones: list[tuple[float, float]] = field(default_factory=list)
    lineages: list[Lineage] = field(default_factory=list)
    # Decisions of a member in the bottom quantile: each one an exploit, or a keep because no
    # top-quantile member had reached the boundary yet.
    bottom: int = 0
    trials: int = 0


@dataclass(frozen=True)
class Data:
    x: Any
    y: Any
    x_val: Any
    y_val: Any
    x_test: Any
    y_test: Any


@lru_cache(maxsize=1)
def data() -> Data:
    """Standardized digits (scaled on the training part), split 60/20/20 once."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_digits(return_X_y=True)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, random_state=0, stratify=y)
    x_val, x_te, y_val, y_te = train_test_split(
        x_rest, y_rest, test_size=0.5, random_state=0, stratify=y_rest
    )
    scale = StandardScaler().fit(x_tr)

    def t(a: np.ndarray) -> Any:
        return torch.tensor(scale.transform(a), dtype=torch.float32)

    lab = torch.tensor
    return Data(t(x_tr), lab(y_tr), t(x_val), lab(y_val), t(x_te), lab(y_te))


class Net:
    """One model and its optimizer; the data order of an epoch comes from ``key`` and the
    epoch, so a clone that resumes elsewhere trains as its own member would."""

    def __init__(self, params: dict[str, float], key: Sequence[int]) -> None:
        import torch

        torch.set_num_threads(1)
        self.key = list(key)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.default_rng(self.key).integers(2**31)))
            self.model = torch.nn.Sequential(
                torch.nn.Linear(64, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, 10)
            )
        self.opt = torch.optim.SGD(self.model.parameters(), lr=params["lr"])
        self.set_params(params)
        self.epoch = 0

    def set_params(self, params: dict[str, float]) -> None:
        for g in self.opt.param_groups:
            g["lr"], g["momentum"] = float(params["lr"]), float(params["momentum"])

    def train_epoch(self) -> None:
        import torch

        d = data()
        self.epoch += 1
        order = np.random.default_rng([*self.key, self.epoch]).permutation(len(d.y))
        perm = torch.from_numpy(order)
        for i in range(0, len(perm), BATCH):
            idx = perm[i : i + BATCH]
            self.opt.zero_grad()
            torch.nn.functional.cross_entropy(self.model(d.x[idx]), d.y[idx]).backward()
            self.opt.step()

    def errors(self) -> tuple[float, float]:
        """(validation, test) error; a diverged model's NaN outputs count as wrong."""
        import torch

        d = data()
        with torch.no_grad():
            val = (self.model(d.x_val).argmax(1) != d.y_val).float().mean()
            test = (self.model(d.x_test).argmax(1) != d.y_test).float().mean()
        return float(val), float(test)

    def state(self) -> dict[str, Any]:
        return copy.deepcopy(
            {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "epoch": self.epoch}
        )

    def load(self, state: dict[str, Any]) -> None:
        state = copy.deepcopy(state)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.epoch = state["epoch"]


def space() -> SearchSpace:
    return SearchSpace(StudySpec.model_validate({"name": "digits", "space": SPACE}).space)


def _in_bottom(me: MemberScore, others: Sequence[MemberScore], quantile: float) -> bool:
    """Whether ``me`` ranks in the bottom quantile of the members known, as the rule counts
    it (all scores here are finite errors): for the table's exploits-per-bottom ratio."""
    n = len(others) + 1
    k = min(math.ceil(quantile * n), n // 2)
    worse = sum((m.score, m.member) > (me.score, me.member) for m in others)
    return k > 0 and worse < k


def run_population(method: str, seed: int, size: Size = Size()) -> Run:
    """PBT, PB2 or random search (no decisions) on 8 asynchronous simulated workers."""
    started = time.perf_counter()
    s = space()
    spec = PBTSpec(
        type="pb2" if method == "pb2" else "pbt",
        population=size.population,
        interval=size.interval,
        max_resource=size.epochs,
    )
    rule = PopulationRule(s, spec, seed=seed)
    n = size.population
    params = [
        {k: float(v) for k, v in s.sample(np.random.default_rng([seed, i])).items()}
        for i in range(n)
    ]
    nets = [Net(params[i], [seed, i]) for i in range(n)]
    lineages = [Lineage.start(i, params[i]) for i in range(n)]
    clocks = [np.random.default_rng([seed, i, 1]) for i in range(n)]
    scores: list[list[MemberScore]] = [[] for _ in range(n)]
    tests: list[float] = [math.nan] * n
    states: dict[tuple[int, int], tuple[dict[str, Any], Lineage]] = {}
    start = [nets[i].errors()[0] for i in range(n)]  # each interval's starting score
    intervals: list[Interval] = []
    run = Run(method, seed, math.nan, math.nan, {}, 0, 0, 0.0, [])
    best = math.inf

    def tick(i: int) -> float:
        return 1.0 + float(clocks[i].uniform(-JITTER, JITTER))

    heap = [(tick(i), i) for i in range(n)]
    heapq.heapify(heap)
    while heap:
        now, i = heapq.heappop(heap)
        net = nets[i]
        net.train_epoch()
        e = net.epoch
        val, tests[i] = net.errors()
        run.epochs += 1
        best = min(best, val)
        run.curve.append((run.epochs, best))
        me = MemberScore(i, float(e), val, dict(params[i]))
        scores[i].append(me)
        if e >= size.epochs:
            continue
        if method != "random" and e % size.interval == 0:
            # The state before the decision: what a member at b clones from this one.
            states[(i, e)] = (net.state(), lineages[i])
            intervals.append(Interval(i, float(e), dict(params[i]), start[i] - val))
            others = []
            for j in range(n):
                seen = [m for m in scores[j] if m.resource <= e] if j != i else []
                if seen:
                    others.append(seen[-1])
            d = rule.decide(me, others, intervals)
            run.bottom += _in_bottom(me, others, spec.quantile)
            if d.kind == "exploit" and (d.resource_from, d.resource) != (e, e):
                raise RuntimeError(
                    f"trial {i} at {e}: the rule cloned trial {d.donor} at "
                    f"{d.resource_from:g}; a clone must resume at its own boundary"
                )
            if d.kind == "exploit" and d.donor is not None:
                state, donor_lineage = states[(d.donor, e)]
                net.load(state)
                params[i] = {k: float(v) for k, v in d.params.items()}
                net.set_params(params[i])
                run.exploits.append(d)
                run.clones.append((float(d.donor_score or math.nan), net.errors()[0]))
                lineages[i] = lineages[i].record(d, donor=donor_lineage)
                start[i] = float(d.donor_score or math.nan)
            else:
                start[i] = val
        heapq.heappush(heap, (now + tick(i), i))
    top = min(range(n), key=lambda i: (scores[i][-1].score, i))
    run.val, run.test, run.params = scores[top][-1].score, tests[top], dict(params[top])
    run.reached = nets[top].epoch
    run.schedule = [(r, float(p["lr"])) for r, p in lineages[top].schedule()]
    run.lineages = lineages
    run.trials = n
    run.wall = time.perf_counter() - started
    return run


def run_asha(seed: int, size: Size = Size()) -> Run:
    """TPE with ASHA (promotion) in tuneyard's simulator, on the population's budget."""
    started = time.perf_counter()
    s = space()
    sampler = make_sampler(SamplerSpec(type="tpe"), s, seed)
    sched = make_scheduler(
        SchedulerSpec(
            type="asha",
            min_resource=size.min_resource,
            max_resource=size.epochs,
            reduction_factor=3,
        ),
        "minimize",
    )
    nets: dict[int, Net] = {}
    last: dict[int, tuple[int, float, float, dict[str, float]]] = {}
    run = Run("asha+tpe", seed, math.nan, math.nan, {}, 0, 0, 0.0, [])
    best = math.inf

    def curve(t: SimTrial, step: float) -> float:
        nonlocal best
        p = {k: float(v) for k, v in t.params.items()}
        if t.number not in nets:
            nets[t.number] = Net(p, [seed, 1000 + t.number])
        net = nets[t.number]
        if net.epoch != round(step) - 1:
            raise RuntimeError(f"trial {t.number} is at epoch {net.epoch}, asked for {step:g}")
        net.train_epoch()
        val, test = net.errors()
        last[t.number] = (net.epoch, val, test, p)
        run.epochs += 1
        best = min(best, val)
        run.curve.append((run.epochs, best))
        return val

    def drop(t: SimTrial) -> None:
        nets.pop(t.number, None)

    result = Simulator(
        sched,
        suggest=sampler.suggest,
        curve=None,
        trial_curve=curve,
        on_end=drop,
        budget=size.budget,
        max_trials=size.budget,
        workers=size.population,
        sampler=sampler if isinstance(sampler, ModelSampler) else None,
    ).run()
    # The deepest trial wins, then the lowest validation error there.
    number = min(last, key=lambda k: (-last[k][0], last[k][1], k))
    run.reached, run.val, run.test, run.params = last[number]
    run.schedule = [(0.0, run.params["lr"])]
    run.trials = len(result.trials)
    run.wall = time.perf_counter() - started
    return run


def run_method(method: str, seed: int, size: Size = Size()) -> Run:
    return run_asha(seed, size) if method == "asha+tpe" else run_population(method, seed, size)


def _mid(xs: Sequence[float]) -> str:
    q1, q2, q3 = np.percentile(xs, [25, 50, 75])
    return f"{100 * q2:.2f} [{100 * q1:.2f}, {100 * q3:.2f}]"


def table(runs: Sequence[Run]) -> str:
    lines = [
        "| method | validation error % (median [IQR]) | its test error % | epochs: spent, "
        "returned model's | trials or members | exploits / bottom-quantile decisions "
        "(all seeds) | seconds per run |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in METHODS:
        rs = [r for r in runs if r.method == method]
        if not rs:
            continue
        exploits = "-"
        if method in ("pbt", "pb2"):
            exploits = f"{sum(len(r.exploits) for r in rs)} / {sum(r.bottom for r in rs)}"
        lines.append(
            f"| {method} | {_mid([r.val for r in rs])} | {_mid([r.test for r in rs])} | "
            f"{statistics.median(r.epochs for r in rs):g}, "
            f"{statistics.median(r.reached for r in rs):g} | "
            f"{statistics.median(r.trials for r in rs):g} | {exploits} | "
            f"{statistics.median(r.wall for r in rs):.1f} |"
        )
    return "\n".join(lines)


def main(seeds: int, methods: Sequence[str], out: Path | None, size: Size = Size()) -> list[Run]:
    """Run, print the table and, with ``out``, write it and the per-run results there."""
    started = time.perf_counter()
    runs = [run_method(m, seed, size) for m in methods for seed in range(seeds)]
    text = table(runs)
    print(text)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    for r in runs:
        if r.seed == 0 and r.exploits:
            print(f"first exploits of {r.method}, seed 0:")
            for d in r.exploits[:3]:
                print("  " + d.reason)
            sched = ", ".join(f"{e:g}: {lr:.3g}" for e, lr in r.schedule)
            print(f"  best member's lr schedule: {sched}")
    if out is None:
        return runs
    out.mkdir(parents=True, exist_ok=True)
    (out / "model_table.md").write_text(text + "\n")
    summary = [
        {
            "method": r.method,
            "seed": r.seed,
            "val_error": r.val,
            "test_error": r.test,
            "params": r.params,
            "epochs": r.epochs,
            "reached": r.reached,
            "trials": r.trials,
            "exploits": len(r.exploits),
            "bottom": r.bottom,
            "schedule": r.schedule,
            "seconds": round(r.wall, 2),
        }
        for r in runs
    ]
    (out / "model_results.json").write_text(json.dumps(summary, indent=1) + "\n")
    return runs
