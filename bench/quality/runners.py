"""One (method, objective, seed) run under an epoch budget, for tuneyard and for Optuna.

Both drivers train the same :class:`~bench.quality.objectives.Run` objects, keep one per
trial so that a resumed trial continues its state, and charge every epoch trained to a
:class:`Ledger`. The run ends when the ledger has paid for ``budget`` epochs.

- tuneyard: the real scheduler and sampler code, driven by tuneyard's fake-clock
  :class:`~tuneyard.scheduler.simulator.Simulator` with ``workers`` parallel workers, one
  time unit per epoch and the epoch budget as its ``budget``; a model-based sampler is fed
  observations as the service feeds it.
- Optuna: ``ask``/``tell`` with ``trial.report``/``should_prune``, on the same kind of event
  loop (``workers`` trials in flight, one time unit per epoch), so both libraries decide
  with the same amount of missing information. Optuna cannot pause: a pruned trial stops.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.quality.methods import Method
from bench.quality.objectives import Objective, Params, Run
from tuneyard.scheduler.samplers.base import ModelSampler, make_sampler
from tuneyard.scheduler.schedulers import make_scheduler
from tuneyard.scheduler.simulator import SimTrial, Simulator
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec, SchedulerSpec, StudySpec


@dataclass
class Ledger:
    """Epochs trained so far, and the best validation error after each improvement."""

    budget: int
    used: int = 0
    best: float = math.inf
    # (epochs used, best error so far), one entry per improvement.
    trace: list[tuple[int, float]] = field(default_factory=list)
    trials: int = 0

    def charge(self, error: float) -> None:
        self.used += 1
        if error < self.best:
            self.best = error
            self.trace.append((self.used, error))

    @property
    def spent(self) -> bool:
        return self.used >= self.budget


@dataclass
class Result:
    method: str
    objective: str
    seed: int
    budget: int
    used: int
    trials: int
    trace: list[tuple[int, float]]
    seconds: float
    workers: int

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "objective": self.objective,
            "seed": self.seed,
            "budget": self.budget,
            "used": self.used,
            "trials": self.trials,
            "trace": [[u, e] for u, e in self.trace],
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
        }


def model_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s model (weights, shuffling, random features)."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


class Trainer:
    """Per-trial training state: trial number -> its :class:`Run`, resumed in place."""

    def __init__(self, objective: Objective, seed: int, ledger: Ledger) -> None:
        self.objective = objective
        self.seed = seed
        self.ledger = ledger
        self.runs: dict[int, Run] = {}

    def epoch(self, number: int, params: Params, epoch: int) -> float:
        run = self.runs.get(number)
        if run is None:
            run = self.objective.start(params, model_seed(self.seed, number))
            self.runs[number] = run
            self.ledger.trials += 1
        if run.epoch != epoch - 1:
            # A driver asking for anything but the next epoch would retrain or skip work.
            raise RuntimeError(f"trial {number} is at epoch {run.epoch}, asked for {epoch}")
        error = run.step()
        self.ledger.charge(error)
        return error

    def drop(self, number: int) -> None:
        """Free a trial that will not train again."""
        self.runs.pop(number, None)


# -- tuneyard ----------------------------------------------------------------------------------


def tuneyard_parts(method: Method, objective: Objective, seed: int) -> tuple[Any, SchedulerSpec]:
    """A tuneyard method's sampler on the objective's space, and its scheduler's spec."""
    study = StudySpec.model_validate({"name": objective.name, "space": objective.space})
    sampler = make_sampler(SamplerSpec(type=method.sampler), SearchSpace(study.space), seed)  # type: ignore[arg-type]
    sched_spec = SchedulerSpec(
        type=method.scheduler,  # type: ignore[arg-type]
        min_resource=1,
        max_resource=objective.max_epochs,
        reduction_factor=method.eta,
        mode=method.mode,  # type: ignore[arg-type]
        brackets=method.brackets,
        **({"bracket_choice": method.bracket_choice} if method.scheduler == "asha" else {}),
    )
    return sampler, sched_spec


def run_tuneyard(
    method: Method, objective: Objective, seed: int, budget: int, workers: int
) -> Result:
    started = time.perf_counter()
    ledger = Ledger(budget)
    trainer = Trainer(objective, seed, ledger)
    sampler, sched_spec = tuneyard_parts(method, objective, seed)

    def curve(t: SimTrial, step: float) -> float:
        return trainer.epoch(t.number, t.params, round(step))

    model = sampler if isinstance(sampler, ModelSampler) else None
    Simulator(
        make_scheduler(sched_spec, "minimize"),
        suggest=sampler.suggest,
        curve=None,
        trial_curve=curve,
        on_end=lambda t: trainer.drop(t.number),
        # The simulator charges one epoch per step, as the ledger does; it ends the run on the
        # step that spends the budget and cuts the steps in flight, which are never charged.
        budget=budget,
        max_trials=budget,  # every trial trains at least one epoch: the budget ends first
        workers=workers,
        sampler=model,
    ).run()
    return Result(
        method.name,
        objective.name,
        seed,
        budget,
        ledger.used,
        ledger.trials,
        ledger.trace,
        time.perf_counter() - started,
        workers,
    )


# -- Optuna ------------------------------------------------------------------------------------


def _suggest_optuna(trial: Any, space: dict[str, dict[str, Any]]) -> Params:
    """Suggest the active parameters only: a parameter with ``when`` is asked for when every
    parent it names (listed before it) took one of the given values, as in tuneyard's
    spaces, so Optuna's TPE models it on the trials where it exists."""
    params: Params = {}
    for name, p in space.items():
        if not _active(p.get("when"), params):
            continue
        if p["type"] == "float":
            params[name] = trial.suggest_float(
                name, p["low"], p["high"], log=p.get("log", False), step=p.get("step")
            )
        elif p["type"] == "int":
            params[name] = trial.suggest_int(
                name, p["low"], p["high"], log=p.get("log", False), step=p.get("step", 1)
            )
        else:
            params[name] = trial.suggest_categorical(name, p["choices"])
    return params


def _active(when: dict[str, Any] | None, params: Params) -> bool:
    for parent, allowed in (when or {}).items():
        values = allowed if isinstance(allowed, list) else [allowed]
        if parent not in params or params[parent] not in values:
            return False
    return True


def _optuna_study(method: Method, objective: Objective, seed: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    samplers = {
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
    }
    pruners = {
        "none": lambda: optuna.pruners.NopPruner(),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=objective.max_epochs, reduction_factor=method.eta
        ),
        "sha": lambda: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=1, reduction_factor=method.eta
        ),
    }
    return optuna.create_study(
        # HyperbandPruner assigns brackets by a hash of the study name: a fixed name makes a
        # seed's run repeatable (a generated one differs on every run).
        study_name=f"{method.name}-{objective.name}-{seed}",
        direction="minimize",
        sampler=samplers[method.sampler](),
        pruner=pruners[method.scheduler](),
    )


def run_optuna(
    method: Method, objective: Objective, seed: int, budget: int, workers: int
) -> Result:
    from optuna.trial import TrialState

    started = time.perf_counter()
    ledger = Ledger(budget)
    trainer = Trainer(objective, seed, ledger)
    study = _optuna_study(method, objective, seed)
    # (time its next epoch finishes, sequence, trial) for the trials in flight
    heap: list[tuple[float, int, Any]] = []
    params: dict[int, Params] = {}
    epochs: dict[int, int] = {}
    seq = 0
    now = 0.0

    def start() -> None:
        nonlocal seq
        trial = study.ask()
        params[trial.number] = _suggest_optuna(trial, objective.space)
        epochs[trial.number] = 0
        seq += 1
        heapq.heappush(heap, (now + 1.0, seq, trial))

    for _ in range(workers):
        start()
    while heap:
        now, _, trial = heapq.heappop(heap)
        n = trial.number
        epochs[n] += 1
        error = trainer.epoch(n, params[n], epochs[n])
        if ledger.spent:  # the trials in flight are cut, as in the simulator
            break
        trial.report(error, epochs[n])
        if epochs[n] >= objective.max_epochs:
            study.tell(trial, error)
        elif trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
        else:
            seq += 1
            heapq.heappush(heap, (now + 1.0, seq, trial))
            continue
        trainer.drop(n)
        start()
    return Result(
        method.name,
        objective.name,
        seed,
        budget,
        ledger.used,
        ledger.trials,
        ledger.trace,
        time.perf_counter() - started,
        workers,
    )


def run(method: Method, objective: Objective, seed: int, budget: int, workers: int) -> Result:
    if method.framework == "tuneyard":
        return run_tuneyard(method, objective, seed, budget, workers)
    return run_optuna(method, objective, seed, budget, workers)
