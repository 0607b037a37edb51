"""The objectives of the quality benchmark: a fidelity (epochs) and state that resumes.

Each objective builds a :class:`Run` for a configuration and a model seed; ``Run.step()``
trains one more epoch *from where the last call stopped* and returns the validation error
(lower is better). A paused trial keeps its ``Run`` and continues it, so a resumed trial
costs only its new epochs, as with a checkpoint. Datasets are loaded and split once per
process (``lru_cache``).

- ``digits-mlp``: the MLP of ``examples/mlp_digits.py`` (its dataset split and ``build``),
  trained with SGD + momentum, one ``partial_fit`` pass per epoch. The space is the example's
  with smaller layers (at most 3 x 64 units, batch >= 64) so that an epoch costs 3-12 ms
  (scikit-learn's input checks are a floor of about 3 ms).
- ``diabetes-rff``: kernel regression on scikit-learn's bundled diabetes data: random Fourier
  features (``RBFSampler``) and an ``SGDRegressor``, one ``partial_fit`` pass per epoch.
  The error is the validation MSE over the validation variance (1 - R^2).
- ``crossing``: a synthetic function with a known optimum (0 at max epochs): the Hartmann-6
  function, rescaled, as the final error, approached along learning curves whose speed grows
  with the learning rate. Fast learners lead early and lose late, so the ranking at a low rung
  misleads early stopping (the optimum ranks at the 31st percentile after 1 epoch).

A configuration that diverges reports the objective's worst error from then on without
training further (the service would fail such a trial on its NaN; here every method sees the
same curve, and a scheduler that stops it early saves those epochs).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import numpy as np

from examples import mlp_digits

Params = dict[str, Any]


class Run(Protocol):
    epoch: int

    def step(self) -> float:
        """Train one more epoch; the validation error after it."""
        ...


@dataclass(frozen=True)
class Objective:
    name: str
    title: str
    # The study's ``space`` in tuneyard's spec format (no conditions).
    space: dict[str, dict[str, Any]]
    max_epochs: int
    start: Callable[[Params, int], Run]
    # Error of a diverged configuration, and the known optimum where there is one.
    worst: float
    optimum: float | None = None
    # The budget: this many full trials' worth of epochs (``--budget-factor`` overrides it).
    budget_factor: int = 30


# -- digits MLP ------------------------------------------------------------------------------


class DigitsRun:
    def __init__(self, params: Params, seed: int) -> None:
        self.model = mlp_digits.build({**params, "solver": "sgd"}, seed=seed)
        self.epoch = 0
        self.diverged = False

    def step(self) -> float:
        from sklearn.exceptions import ConvergenceWarning

        x_train, x_val, y_train, y_val = mlp_digits.dataset()
        self.epoch += 1
        if self.diverged:
            return DIGITS_WORST
        with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                self.model.partial_fit(x_train, y_train, classes=_digit_classes())
            except ValueError as exc:
                if "non-finite" not in str(exc):
                    raise
                self.diverged = True
                return DIGITS_WORST
            # 1 - accuracy, without ``score``'s target checks (a quarter of a cheap epoch)
            return float(np.mean(self.model.predict(x_val) != y_val))


@lru_cache(maxsize=1)
def _digit_classes() -> np.ndarray:
    return np.unique(mlp_digits.dataset()[2])


DIGITS_WORST = 1.0
DIGITS = Objective(
    name="digits-mlp",
    title="MLP on digits (examples/mlp_digits.py, SGD)",
    space={
        "lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
        "batch_size": {"type": "categorical", "choices": [64, 128, 256]},
        "layers": {"type": "int", "low": 1, "high": 3},
        "units": {"type": "int", "low": 16, "high": 64, "log": True},
        "momentum": {"type": "float", "low": 0.0, "high": 0.99, "step": 0.01},
        "l2": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
    },
    max_epochs=27,
    start=DigitsRun,
    worst=DIGITS_WORST,
    # Its epochs cost 10x those of the others: 20 x 27 epochs keeps the full run in 30 min.
    budget_factor=20,
)


# -- diabetes, random Fourier features + SGD -------------------------------------------------


@lru_cache(maxsize=1)
def diabetes() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardized diabetes features and target, split 75/25 (random_state=0)."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_diabetes(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.25, random_state=0)
    scaler = StandardScaler().fit(x_train)
    mean, std = float(y_train.mean()), float(y_train.std())
    return (
        scaler.transform(x_train),
        scaler.transform(x_val),
        (y_train - mean) / std,
        (y_val - mean) / std,
    )


DIABETES_WORST = 2.0


class DiabetesRun:
    def __init__(self, params: Params, seed: int) -> None:
        from sklearn.kernel_approximation import RBFSampler
        from sklearn.linear_model import SGDRegressor

        x_train, x_val, _, _ = diabetes()
        features = RBFSampler(
            gamma=float(params["gamma"]),
            n_components=int(params["n_components"]),
            random_state=seed,
        ).fit(x_train)
        self.f_train = features.transform(x_train)
        self.f_val = features.transform(x_val)
        self.model = SGDRegressor(
            alpha=float(params["alpha"]),
            eta0=float(params["eta0"]),
            learning_rate=str(params["schedule"]),
            power_t=float(params["power_t"]),
            average=bool(params["average"]),
            random_state=seed,
        )
        self.epoch = 0
        self.diverged = False

    def step(self) -> float:
        _, _, y_train, y_val = diabetes()
        self.epoch += 1
        if self.diverged:
            return DIABETES_WORST
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                self.model.partial_fit(self.f_train, y_train)
                pred = self.model.predict(self.f_val)
            except ValueError:  # sklearn refuses non-finite weights
                pred = np.array([math.nan])
            error = float(np.mean((pred - y_val) ** 2) / np.var(y_val))
        if not math.isfinite(error):
            self.diverged = True
            return DIABETES_WORST
        return min(error, DIABETES_WORST)


DIABETES = Objective(
    name="diabetes-rff",
    title="Random Fourier features + SGD regression on diabetes (1 - R^2)",
    space={
        "gamma": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
        "n_components": {"type": "int", "low": 32, "high": 512, "log": True},
        "eta0": {"type": "float", "low": 1e-4, "high": 0.5, "log": True},
        "alpha": {"type": "float", "low": 1e-7, "high": 1e-1, "log": True},
        "schedule": {"type": "categorical", "choices": ["constant", "invscaling"]},
        "power_t": {"type": "float", "low": 0.05, "high": 0.5},
        "average": {"type": "categorical", "choices": [False, True]},
    },
    max_epochs=27,
    start=DiabetesRun,
    worst=DIABETES_WORST,
)


# -- synthetic: Hartmann-6 along crossing learning curves ------------------------------------

# Hartmann-6's constants (Dixon & Szegö 1978), shared with bench/warm_start.py and the GP tests.
H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
H6_A = np.array(
    [
        [10, 3, 17, 3.5, 1.7, 8],
        [0.05, 10, 17, 0.1, 8, 14],
        [3, 3.5, 1.7, 10, 17, 8],
        [17, 8, 0.05, 10, 0.1, 14],
    ]
)
H6_P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
HARTMANN6_MIN = -3.32237
# The minimiser, with x0 the position of log10(lr) in [-4, 0].
HARTMANN6_ARGMIN = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)
CROSSING_TRANSIENT = 0.8
CROSSING_EPOCHS = 27


def hartmann6(x: np.ndarray) -> float:
    return float(-np.sum(H6_ALPHA * np.exp(-np.sum(H6_A * (x - H6_P) ** 2, axis=1))))


def crossing_error(params: Params, epoch: int, max_epochs: int = CROSSING_EPOCHS) -> float:
    """Final error ``0.3 * (h(x) - h*) / |h*|`` (0 at the optimum) plus a transient that starts
    of 0.8 that reaches 0 at ``max_epochs`` with the speed ``r = 0.15 + 3 * u_lr``:
    ``0.8 * ((1+t)^-r - (1+T)^-r) / (1 - (1+T)^-r)``. Over random configurations the
    Spearman correlation with the final error is -0.17 at epoch 1, 0.0 at 3 and 0.35 at 9;
    the optimum ranks at the 31st percentile at epoch 1, the 1st at epoch 3."""
    u_lr = (math.log10(float(params["lr"])) + 4.0) / 4.0
    x = np.array([u_lr, *(float(params[f"x{i}"]) for i in range(1, 6))])
    final = 0.3 * (hartmann6(x) - HARTMANN6_MIN) / -HARTMANN6_MIN
    r = 0.15 + 3.0 * u_lr
    end = (1.0 + max_epochs) ** -r
    transient = ((1.0 + epoch) ** -r - end) / (1.0 - end)
    return max(0.0, final) + CROSSING_TRANSIENT * transient


class CrossingRun:
    def __init__(self, params: Params, seed: int) -> None:
        self.params = params
        self.epoch = 0

    def step(self) -> float:
        self.epoch += 1
        return crossing_error(self.params, self.epoch)


CROSSING = Objective(
    name="crossing",
    title="Synthetic: Hartmann-6 on crossing learning curves (optimum 0)",
    space={
        "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        **{f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(1, 6)},
    },
    max_epochs=CROSSING_EPOCHS,
    start=CrossingRun,
    worst=0.3 + CROSSING_TRANSIENT,
    optimum=0.0,
)

OBJECTIVES: dict[str, Objective] = {o.name: o for o in (DIGITS, DIABETES, CROSSING)}
