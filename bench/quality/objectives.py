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


# -- shared pieces of the synthetic objectives -----------------------------------------------


def transient(epoch: int, speed: float, max_epochs: int = 27) -> float:
    """A learning curve's excess over its final error, from 1 at epoch 0 to 0 at
    ``max_epochs``: ``((1+t)^-r - (1+T)^-r) / (1 - (1+T)^-r)``. Curves of equal speed never
    cross; a faster one leads early."""
    end = (1.0 + max_epochs) ** -speed
    return ((1.0 + epoch) ** -speed - end) / (1.0 - end)


class CurveRun:
    """A synthetic trial: ``curve(params, epoch)`` plus, when ``noise`` > 0, Gaussian
    observation noise drawn per epoch from the trial's model seed (so a resumed trial sees
    the same draws as one trained straight through)."""

    def __init__(
        self, curve: Callable[[Params, int], float], noise: float, params: Params, seed: int
    ) -> None:
        self.curve = curve
        self.noise = noise
        self.params = params
        self.rng = np.random.default_rng(seed)
        self.epoch = 0

    def step(self) -> float:
        self.epoch += 1
        error = self.curve(self.params, self.epoch)
        if self.noise:
            error += float(self.rng.normal(0.0, self.noise))
        return error


def _curve_objective(
    curve: Callable[[Params, int], float], noise: float = 0.0
) -> Callable[[Params, int], Run]:
    return lambda params, seed: CurveRun(curve, noise, params, seed)


# -- synthetic: Branin, 2 dimensions, curves that never cross --------------------------------

BRANIN_MIN = 0.397887


def branin_error(params: Params, epoch: int) -> float:
    """``0.1 * log(1 + branin - min)`` (0 at the three minimisers), approached at one speed
    for every configuration: the ranking at any epoch is the final ranking."""
    x1, x2 = float(params["x1"]), float(params["x2"])
    b = (x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2
    b += 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10
    return 0.1 * math.log1p(max(0.0, b - BRANIN_MIN)) + 0.5 * transient(epoch, 0.6)


BRANIN = Objective(
    name="branin-2d",
    title="Synthetic: Branin, 2-d, non-crossing curves (optimum 0)",
    space={
        "x1": {"type": "float", "low": -5.0, "high": 10.0},
        "x2": {"type": "float", "low": 0.0, "high": 15.0},
    },
    max_epochs=27,
    start=_curve_objective(branin_error),
    worst=1.1,
    optimum=0.0,
)


# -- synthetic: a 20-dimensional ill-conditioned ellipsoid, noisy ----------------------------

ELLIPSOID_DIM = 20
# The minimiser and the axis weights (10^-2 .. 1), fixed once.
ELLIPSOID_CENTER = np.random.default_rng(20).uniform(0.15, 0.85, ELLIPSOID_DIM)
ELLIPSOID_WEIGHTS = 10.0 ** np.linspace(-2.0, 0.0, ELLIPSOID_DIM)
ELLIPSOID_NOISE = 0.01


def ellipsoid_error(params: Params, epoch: int) -> float:
    """Weighted squared distance to a fixed interior point, scaled so that a random point
    averages about 0.3; curves of one speed (non-crossing). Noise is added by the run."""
    x = np.array([float(params[f"x{i}"]) for i in range(ELLIPSOID_DIM)])
    d = float(np.sum(ELLIPSOID_WEIGHTS * (x - ELLIPSOID_CENTER) ** 2) / np.sum(ELLIPSOID_WEIGHTS))
    return 3.0 * d + 0.5 * transient(epoch, 0.8)


ELLIPSOID = Objective(
    name="ellipsoid-20d",
    title="Synthetic: 20-d ellipsoid, non-crossing curves, noise sd 0.01 per epoch (optimum 0)",
    space={f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(ELLIPSOID_DIM)},
    max_epochs=27,
    start=_curve_objective(ellipsoid_error, ELLIPSOID_NOISE),
    worst=3.5,
    optimum=0.0,
)


# -- synthetic: Hartmann-3 on crossing curves, noisy -----------------------------------------

H3_A = np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]])
H3_P = 1e-4 * np.array(
    [[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]]
)
HARTMANN3_MIN = -3.86278
HARTMANN3_NOISE = 0.02


def hartmann3_error(params: Params, epoch: int) -> float:
    """As ``crossing`` in 3 dimensions (x0 the position of log10(lr) in [-4, 0], whose
    curves are faster the larger it is); noise is added by the run."""
    u_lr = (math.log10(float(params["lr"])) + 4.0) / 4.0
    x = np.array([u_lr, float(params["x1"]), float(params["x2"])])
    h = float(-np.sum(H6_ALPHA * np.exp(-np.sum(H3_A * (x - H3_P) ** 2, axis=1))))
    final = 0.3 * (h - HARTMANN3_MIN) / -HARTMANN3_MIN
    return max(0.0, final) + CROSSING_TRANSIENT * transient(epoch, 0.15 + 3.0 * u_lr)


HARTMANN3 = Objective(
    name="hartmann3-noisy",
    title="Synthetic: Hartmann-3 on crossing curves, noise sd 0.02 per epoch (optimum 0)",
    space={
        "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
        "x1": {"type": "float", "low": 0.0, "high": 1.0},
        "x2": {"type": "float", "low": 0.0, "high": 1.0},
    },
    max_epochs=27,
    start=_curve_objective(hartmann3_error, HARTMANN3_NOISE),
    worst=1.1,
    optimum=0.0,
)


# -- synthetic: a mixed, conditional network-training surrogate ------------------------------

# optimizer -> (best log10 lr, final error floor, curve speed)
_OPTIMIZERS = {"sgd": (-1.0, 0.0, 0.3), "adam": (-3.0, 0.03, 1.6), "rmsprop": (-2.5, 0.045, 1.2)}


def mixed_error(params: Params, epoch: int) -> float:
    """A surrogate of training a network: the optimizer (sgd, adam, rmsprop) sets the best
    learning rate, a floor and the curve's speed; ``momentum`` exists for sgd only and speeds
    it up; ``n_layers`` (1-3) gates ``units_2``/``units_3``; the total log-width and dropout
    have an optimum. sgd with momentum 0.9 ends best (0) but starts slowest, so the curves
    cross: adam leads over the first epochs."""
    opt = str(params["optimizer"])
    best_lr, floor, speed = _OPTIMIZERS[opt]
    error = floor + 0.04 * (math.log10(float(params["lr"])) - best_lr) ** 2
    if opt == "sgd":
        momentum = float(params["momentum"])
        error += 0.25 * (momentum - 0.9) ** 2
        speed += 0.6 * momentum
    layers = int(params["n_layers"])
    width = sum(math.log2(float(params[f"units_{i}"])) for i in range(1, layers + 1))
    error += 0.002 * (width - 14.0) ** 2
    error += 0.3 * (float(params["dropout"]) - (0.3 if layers > 1 else 0.1)) ** 2
    return error + 0.8 * transient(epoch, speed)


MIXED = Objective(
    name="mixed-cond",
    title="Synthetic: mixed conditional space (optimizer, momentum for sgd, per-layer units)",
    space={
        "optimizer": {"type": "categorical", "choices": ["sgd", "adam", "rmsprop"]},
        "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
        "momentum": {"type": "float", "low": 0.0, "high": 0.99, "when": {"optimizer": "sgd"}},
        "n_layers": {"type": "categorical", "choices": [1, 2, 3]},
        "units_1": {"type": "int", "low": 16, "high": 512, "log": True},
        "units_2": {
            "type": "int",
            "low": 16,
            "high": 512,
            "log": True,
            "when": {"n_layers": [2, 3]},
        },
        "units_3": {"type": "int", "low": 16, "high": 512, "log": True, "when": {"n_layers": 3}},
        "dropout": {"type": "float", "low": 0.0, "high": 0.6},
    },
    max_epochs=27,
    start=_curve_objective(mixed_error),
    worst=1.5,
    optimum=0.0,
)


# -- breast cancer, SGDClassifier with a conditional l1_ratio --------------------------------


@lru_cache(maxsize=1)
def breast_cancer() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardized breast-cancer features, split 75/25 stratified (random_state=0)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=0, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    return scaler.transform(x_train), scaler.transform(x_val), y_train, y_val


CANCER_WORST = 1.0
_CANCER_CLASSES = np.array([0, 1])


class CancerRun:
    def __init__(self, params: Params, seed: int) -> None:
        from sklearn.linear_model import SGDClassifier

        self.model = SGDClassifier(
            loss=str(params["loss"]),
            penalty=str(params["penalty"]),
            alpha=float(params["alpha"]),
            l1_ratio=float(params.get("l1_ratio", 0.15)),
            learning_rate=str(params["schedule"]),
            eta0=float(params["eta0"]),
            random_state=seed,
        )
        self.epoch = 0
        self.diverged = False

    def step(self) -> float:
        x_train, x_val, y_train, y_val = breast_cancer()
        self.epoch += 1
        if self.diverged:
            return CANCER_WORST
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            self.model.partial_fit(x_train, y_train, classes=_CANCER_CLASSES)
        if not np.all(np.isfinite(self.model.coef_)):
            self.diverged = True
            return CANCER_WORST
        return float(np.mean(self.model.predict(x_val) != y_val))


CANCER = Objective(
    name="cancer-sgd",
    title="SGDClassifier on breast cancer, elastic-net l1_ratio conditional (1 - accuracy)",
    space={
        "loss": {"type": "categorical", "choices": ["hinge", "log_loss", "modified_huber"]},
        "penalty": {"type": "categorical", "choices": ["l2", "l1", "elasticnet"]},
        "l1_ratio": {"type": "float", "low": 0.0, "high": 1.0, "when": {"penalty": "elasticnet"}},
        "alpha": {"type": "float", "low": 1e-6, "high": 1.0, "log": True},
        "schedule": {"type": "categorical", "choices": ["constant", "invscaling", "adaptive"]},
        "eta0": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
    },
    max_epochs=27,
    start=CancerRun,
    worst=CANCER_WORST,
)


OBJECTIVES: dict[str, Objective] = {
    o.name: o for o in (DIGITS, DIABETES, CROSSING, BRANIN, ELLIPSOID, HARTMANN3, MIXED, CANCER)
}
# Defaults are chosen on the held-in objectives only; the held-out ones report what
# generalises. The three objectives the samplers were developed against are held in.
HELD_IN = ("digits-mlp", "diabetes-rff", "crossing", "branin-2d")
HELD_OUT = ("ellipsoid-20d", "hartmann3-noisy", "mixed-cond", "cancer-sgd")
