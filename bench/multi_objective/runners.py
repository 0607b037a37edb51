"""One (method, problem, seed) run under an epoch budget, for tuneyard and for Optuna.

Both drivers train the same :class:`~bench.multi_objective.problems.Run` objects, one per
trial, so that a resumed trial continues its state, and a :class:`Trainer` counts every epoch
trained. The run ends when ``budget`` epochs have been trained, on the same kind of event loop
(``workers`` trials in flight, one time unit per epoch), as in the single-objective quality
benchmark (``bench/quality/runners.py``, whose seeding and Optuna parameter mapping this
reuses).

What a run records is its *final evaluations*: each time a trial trains its last epoch, the
epochs used so far and the trial's two objectives there. The report's hypervolume at a budget
is that of the final evaluations made within it; low-fidelity results never count, because
their values are not what the configuration reaches.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Any

from bench.multi_objective.methods import Method
from bench.multi_objective.problems import Params, Point, Problem, Run
from bench.quality.runners import _suggest_optuna, model_seed
from tuneyard.scheduler.board import Vector
from tuneyard.scheduler.samplers.base import ModelSampler, make_sampler
from tuneyard.scheduler.schedulers import make_scheduler
from tuneyard.scheduler.simulator import SimTrial, Simulator
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec, SchedulerSpec, StudySpec

OBJECTIVES = 2


@dataclass
class Trainer:
    """Per-trial training state (trial number -> its run, resumed in place), the epochs
    trained so far and the final evaluations as ``(epochs used, f1, f2)``."""

    problem: Problem
    seed: int
    budget: int
    used: int = 0
    trials: int = 0
    finals: list[tuple[int, float, float]] = field(default_factory=list)
    runs: dict[int, Run] = field(default_factory=dict)

    def epoch(self, number: int, params: Params, epoch: int) -> Point:
        run = self.runs.get(number)
        if run is None:
            run = self.problem.start(params, model_seed(self.seed, number))
            self.runs[number] = run
            self.trials += 1
        if run.epoch != epoch - 1:
            # A driver asking for anything but the next epoch would retrain or skip work.
            raise RuntimeError(f"trial {number} is at epoch {run.epoch}, asked for {epoch}")
        point = run.step()
        self.used += 1
        if epoch == self.problem.max_epochs:
            self.finals.append((self.used, *point))
        return point

    def drop(self, number: int) -> None:
        """Free a trial that will not train again."""
        self.runs.pop(number, None)

    @property
    def spent(self) -> bool:
        return self.used >= self.budget


@dataclass
class Result:
    method: str
    problem: str
    seed: int
    budget: int
    used: int
    trials: int
    finals: list[tuple[int, float, float]]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "problem": self.problem,
            "seed": self.seed,
            "budget": self.budget,
            "used": self.used,
            "trials": self.trials,
            "finals": [[u, f1, f2] for u, f1, f2 in self.finals],
            "seconds": round(self.seconds, 3),
        }


def _result(method: Method, trainer: Trainer, started: float) -> Result:
    return Result(
        method.name,
        trainer.problem.name,
        trainer.seed,
        trainer.budget,
        trainer.used,
        trainer.trials,
        trainer.finals,
        time.perf_counter() - started,
    )


# -- tuneyard ----------------------------------------------------------------------------------


def run_tuneyard(method: Method, problem: Problem, seed: int, budget: int, workers: int) -> Result:
    started = time.perf_counter()
    trainer = Trainer(problem, seed, budget)
    study = StudySpec.model_validate({"name": problem.name, "space": problem.space})
    sampler = make_sampler(
        SamplerSpec(type=method.sampler),  # type: ignore[arg-type]
        SearchSpace(study.space),
        seed,
        objectives=OBJECTIVES,
    )
    spec = SchedulerSpec(
        type=method.scheduler,  # type: ignore[arg-type]
        min_resource=1,
        max_resource=problem.max_epochs,
        reduction_factor=3,
        ranking=method.ranking,  # type: ignore[arg-type]
    )

    def curve(t: SimTrial, step: float) -> Vector:
        return Vector(trainer.epoch(t.number, t.params, round(step)))

    Simulator(
        make_scheduler(spec, fronts=True),
        suggest=sampler.suggest,
        curve=None,
        trial_curve=curve,
        on_end=lambda t: trainer.drop(t.number),
        # The simulator ends the run on the step that spends the budget and cuts the steps in
        # flight, which are never trained here.
        budget=budget,
        max_trials=budget,  # every trial trains at least one epoch: the budget ends first
        workers=workers,
        sampler=sampler if isinstance(sampler, ModelSampler) else None,
    ).run()
    return _result(method, trainer, started)


# -- Optuna ------------------------------------------------------------------------------------


def _optuna_study(method: Method, problem: Problem, seed: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    samplers = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "nsga2-p20": lambda: optuna.samplers.NSGAIISampler(population_size=20, seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    return optuna.create_study(
        study_name=f"{method.name}-{problem.name}-{seed}",
        directions=["minimize"] * OBJECTIVES,
        sampler=samplers[method.sampler](),
    )


def run_optuna(method: Method, problem: Problem, seed: int, budget: int, workers: int) -> Result:
    """``ask`` / ``tell`` with ``workers`` trials in flight, each trained to the last epoch
    (Optuna's pruners refuse a study with several objectives)."""
    started = time.perf_counter()
    trainer = Trainer(problem, seed, budget)
    study = _optuna_study(method, problem, seed)
    # (time its next epoch finishes, sequence, trial) for the trials in flight
    heap: list[tuple[float, int, Any]] = []
    params: dict[int, Params] = {}
    epochs: dict[int, int] = {}
    seq = 0
    now = 0.0

    def start() -> None:
        nonlocal seq
        trial = study.ask()
        params[trial.number] = _suggest_optuna(trial, problem.space)
        epochs[trial.number] = 0
        seq += 1
        heapq.heappush(heap, (now + 1.0, seq, trial))

    for _ in range(workers):
        start()
    while heap:
        now, _, trial = heapq.heappop(heap)
        n = trial.number
        epochs[n] += 1
        point = trainer.epoch(n, params[n], epochs[n])
        if trainer.spent:  # the trials in flight are cut, as in the simulator
            break
        if epochs[n] < problem.max_epochs:
            seq += 1
            heapq.heappush(heap, (now + 1.0, seq, trial))
            continue
        study.tell(trial, list(point))
        trainer.drop(n)
        start()
    return _result(method, trainer, started)


def run(method: Method, problem: Problem, seed: int, budget: int, workers: int) -> Result:
    if method.framework == "tuneyard":
        return run_tuneyard(method, problem, seed, budget, workers)
    return run_optuna(method, problem, seed, budget, workers)
