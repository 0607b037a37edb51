"""The two-objective problems: a fidelity (epochs) and state that resumes.

Each problem builds a :class:`Run` for a configuration and a model seed; ``Run.step()``
trains one more epoch from where the last call stopped and returns both objectives, minimised.
A paused trial keeps its ``Run`` and continues it, as with a checkpoint.

- ``zdt1``: simulated. ZDT1 (Zitzler, Deb & Thiele, "Comparison of Multiobjective
  Evolutionary Algorithms: Empirical Results", Evolutionary Computation 8(2), 2000) in four
  unit parameters is what a trial reaches at its last epoch; before that each objective is
  worse by a configuration-dependent amount that shrinks with the epochs, plus noise that
  shrinks with it. At the last epoch the values are exact, so the front there is known:
  ``f2 = 1 - sqrt(f1)``, ``f1`` in [0, 1], and its hypervolume against the reference point
  ``(1.1, 1.1)`` is ``1.1 * 1.1 - 1/3``.
- ``digits-mlp``: real, tabulated. The MLP of ``examples/mlp_digits.py`` (the quality
  benchmark's ``DigitsRun``: SGD with momentum 0.9, one ``partial_fit`` pass per epoch),
  trading the validation error against the model's size, ``log10`` of its parameter count
  (exact at every epoch). Every point of a grid of 576 configurations (learning rate, L2,
  units, layers, batch size) was trained for its 27 epochs once (``--tabulate``, about 10
  minutes on 2 cores) and the curves are stored in ``digits_curves.json``; a trial's
  configuration is snapped to its nearest grid point (in log scale) and replays that curve.
  Training live made a full run of 10 seeds take over an hour on the 2-core machines, most of
  it retraining configurations that other methods and seeds had already trained. Since the
  table holds every configuration, its front is known too: the non-dominated set of the 576
  final results.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bench.quality.objectives import DigitsRun
from tuneyard.scheduler.multi import hypervolume

Params = dict[str, Any]
Point = tuple[float, float]


class Run(Protocol):
    epoch: int

    def step(self) -> Point:
        """Train one more epoch; both objectives after it (lower is better)."""
        ...


@dataclass(frozen=True)
class Problem:
    name: str
    title: str
    # The study's ``space`` in tuneyard's spec format (no conditions).
    space: dict[str, dict[str, Any]]
    objectives: tuple[str, str]
    max_epochs: int
    start: Callable[[Params, int], Run]
    # One fixed reference point for every method and seed.
    reference: Point
    # The hypervolume of the true front against ``reference``, where it is known.
    true_hypervolume: Callable[[], float] | None = None
    # The budget: this many full trials' worth of epochs (``--budget-factor`` overrides it).
    budget_factor: int = 40


# -- zdt1 with a fidelity --------------------------------------------------------------------

ZDT_EPOCHS = 27
ZDT_REFERENCE = (1.1, 1.1)
# Area under the front f2 = 1 - sqrt(f1) on [0, 1] is 1/3; the rest of the reference box,
# including the strip f1 in [1, 1.1] that the point (1, 0) dominates, is covered.
ZDT_TRUE_HYPERVOLUME = ZDT_REFERENCE[0] * ZDT_REFERENCE[1] - 1.0 / 3.0
# Noise of a report at epoch 1 (standard deviation); it shrinks to 0 at the last epoch.
ZDT_NOISE = 0.05


def zdt1(x: tuple[float, ...]) -> Point:
    """ZDT1 in ``len(x)`` unit parameters: ``f1 = x0``, ``g = 1 + 9 mean(x1..)``,
    ``f2 = g (1 - sqrt(f1 / g))``; the front is ``g = 1``."""
    g = 1.0 + 9.0 * sum(x[1:]) / (len(x) - 1)
    return x[0], g * (1.0 - math.sqrt(x[0] / g))


def zdt_gap(epoch: int, max_epochs: int = ZDT_EPOCHS) -> float:
    """How far from converged a trial is after ``epoch`` epochs: 1 after the first, 0 after the
    last, ``(T/t - 1) / (T - 1)`` between (0.31 at 3 of 27 epochs, 0.08 at 9)."""
    return (max_epochs / epoch - 1.0) / (max_epochs - 1.0)


def zdt_slowness(x: tuple[float, ...]) -> Point:
    """How much worse each objective starts, per configuration: configurations far from the
    front (large x1, x2) also converge slowly, so an early rung ranks them roughly right,
    while x3 slows the second objective without changing where it ends, which misleads it."""
    return 0.2 + 0.4 * x[1], 0.3 + 0.5 * x[2] + 0.8 * x[3]


class ZDTRun:
    def __init__(self, params: Params, seed: int) -> None:
        self.x = tuple(float(params[f"x{i}"]) for i in range(4))
        self.final = zdt1(self.x)
        self.slow = zdt_slowness(self.x)
        self.rng = np.random.default_rng(seed)
        self.epoch = 0

    def step(self) -> Point:
        self.epoch += 1
        gap = zdt_gap(self.epoch)
        noise = self.rng.normal(0.0, ZDT_NOISE * math.sqrt(gap), size=2)
        return (
            self.final[0] + gap * self.slow[0] + float(noise[0]),
            self.final[1] + gap * self.slow[1] + float(noise[1]),
        )


ZDT1 = Problem(
    name="zdt1",
    title="Simulated: ZDT1 in 4 parameters, reached along noisy learning curves (front known)",
    space={f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(4)},
    objectives=("f1", "f2"),
    max_epochs=ZDT_EPOCHS,
    start=ZDTRun,
    reference=ZDT_REFERENCE,
    true_hypervolume=lambda: ZDT_TRUE_HYPERVOLUME,
    budget_factor=100,
)


# -- digits MLP: validation error against size, tabulated -----------------------------------

DIGITS_INPUTS, DIGITS_CLASSES = 64, 10
DIGITS_EPOCHS = 27
# The grid the curves are tabulated on: the space is continuous (log scale) where the grid is
# evenly spaced in log, and a configuration is snapped to its nearest grid point.
DIGITS_GRID: dict[str, tuple[Any, ...]] = {
    "lr": tuple(10 ** (-3 + k / 2) for k in range(6)),  # 0.001 to 0.32, half-decades
    "l2": (1e-5, 1e-4, 1e-3, 1e-2),
    "units": (8, 16, 32, 64),
    "layers": (1, 2, 3),
    "batch_size": (64, 256),
}
DIGITS_TABLE = Path(__file__).resolve().parent / "digits_curves.json"
# Every grid point is trained once, with this model seed.
DIGITS_MODEL_SEED = 0


def parameter_count(params: Params) -> int:
    """Weights and biases of the MLP ``params`` describe (64 inputs, 10 classes)."""
    sizes = [DIGITS_INPUTS] + [int(params["units"])] * int(params["layers"]) + [DIGITS_CLASSES]
    return sum(a * b + b for a, b in itertools.pairwise(sizes))


def _nearest_in_log(value: float, grid: tuple[Any, ...]) -> Any:
    return min(grid, key=lambda g: abs(math.log(float(value)) - math.log(float(g))))


def snap(params: Params) -> Params:
    """The grid point a configuration trains as."""
    return {
        "lr": _nearest_in_log(params["lr"], DIGITS_GRID["lr"]),
        "l2": _nearest_in_log(params["l2"], DIGITS_GRID["l2"]),
        "units": _nearest_in_log(params["units"], DIGITS_GRID["units"]),
        "layers": int(params["layers"]),
        "batch_size": int(params["batch_size"]),
    }


def grid_key(params: Params) -> str:
    """The table's key of a grid point."""
    p = snap(params)
    return (
        f"lr={p['lr']:.4g},l2={p['l2']:g},units={p['units']},layers={p['layers']},"
        f"batch={p['batch_size']}"
    )


def grid_points() -> list[Params]:
    names = list(DIGITS_GRID)
    return [
        dict(zip(names, values, strict=True)) for values in itertools.product(*DIGITS_GRID.values())
    ]


def train_curve(params: Params) -> list[float]:
    """Validation error after each of the epochs of one grid point, trained for real."""
    run = DigitsRun(snap(params), DIGITS_MODEL_SEED)
    return [run.step() for _ in range(DIGITS_EPOCHS)]


@lru_cache(maxsize=1)
def digits_table() -> dict[str, list[float]]:
    """Grid point key -> its validation errors, epoch 1 to 27 (``--tabulate`` writes it)."""
    if not DIGITS_TABLE.exists():
        raise FileNotFoundError(
            f"{DIGITS_TABLE} is missing: run python bench/multi_objective.py --tabulate"
        )
    table: dict[str, list[float]] = json.loads(DIGITS_TABLE.read_text())["curves"]
    return table


def digits_point(params: Params, epoch: int) -> Point:
    return digits_table()[grid_key(params)][epoch - 1], math.log10(parameter_count(snap(params)))


def digits_front_hypervolume() -> float:
    """The hypervolume of the best front the grid holds: the table's final errors and sizes."""
    points = [digits_point(p, DIGITS_EPOCHS) for p in grid_points()]
    return hypervolume(np.array(points), DIGITS_SIZE.reference)


class DigitsTableRun:
    """A trial of the MLP, replayed from the table: a configuration is snapped to the grid,
    and its epochs give what training that grid point gave (the model seed is the table's)."""

    def __init__(self, params: Params, seed: int) -> None:
        self.params = params
        self.epoch = 0

    def step(self) -> Point:
        self.epoch += 1
        return digits_point(self.params, self.epoch)


DIGITS_SIZE = Problem(
    name="digits-mlp",
    title="MLP on digits (tabulated): validation error against log10(parameters)",
    space={
        "lr": {"type": "float", "low": 1e-3, "high": 10**-0.5, "log": True},
        "batch_size": {"type": "categorical", "choices": [64, 256]},
        "layers": {"type": "int", "low": 1, "high": 3},
        "units": {"type": "int", "low": 8, "high": 64, "log": True},
        "l2": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    },
    objectives=("val_error", "log10_params"),
    max_epochs=DIGITS_EPOCHS,
    start=DigitsTableRun,
    # An error of 0.15 (one digit in seven wrong) is what the smallest models beat when they
    # train well; 1 x 8 units has 610 parameters (2.79) and 3 x 64 has 13,130 (4.12): every
    # size counts on that axis.
    reference=(0.15, 4.2),
    true_hypervolume=lambda: digits_front_hypervolume(),
    budget_factor=40,
)

PROBLEMS: dict[str, Problem] = {p.name: p for p in (ZDT1, DIGITS_SIZE)}
