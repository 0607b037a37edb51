"""Racing a trial's replicates: the compute it saves at equal final quality, against Optuna.

    python bench/racing.py --sweep --out bench/results/racing   # the full run (README)
    python bench/racing.py                       # both problems, 10 seeds, no sweep, no files
    python bench/racing.py --problems simulated --replicates 10 --trials 40
    python bench/racing.py --tabulate            # retrain the digits table (about 4 min)

Issue 17's benchmark, on tuneyard's pure core (the samplers, the aggregate and the racing rule
of ``tuneyard.scheduler``) in a self-contained loop: no service. Two problems where the
replicates matter, both counted in fold-epochs (each replicate costs ``EPOCHS`` epochs):

* ``simulated``: a smooth true loss of three hyperparameters (learning rate, momentum, width)
  plus, per replicate k, a difficulty ``b_k ~ N(0, difficulty)`` that every configuration
  shares (a hard fold, an unlucky seed: what the paired test cancels) and the configuration's
  own noise ``N(0, noise)`` on that replicate, drawn anew for every trial. Its quality is the
  true loss, without noise.
* ``digits``: 5-fold cross-validation of a one-hidden-layer MLP (``examples/mlp_digits.py``,
  SGD with momentum 0.9, batch 64, one ``partial_fit`` pass per epoch, 10 epochs per fold) on
  scikit-learn's bundled digits. The folds split the example's training part (1,347 images,
  stratified, shuffled with seed 0); its 450 validation images are a test set no method sees.
  Hyperparameters: learning rate, L2 and hidden units. Every point of a 9 x 6 x 6 grid was
  trained once per fold (``--tabulate``) and stored in ``results/racing/digits_folds.json``;
  a trial is snapped to the nearest grid point (log scale) and replays its fold errors. Its
  quality is the test error of the configuration, the mean over its five fold models.

Methods, all with the same budget B in fold-epochs:

* **tuneyard, no racing**: random search or TPE, every trial on every replicate. B is what
  ``--trials`` such trials cost (trials x replicates x epochs).
* **tuneyard, racing**: the same samplers, trials raced against the incumbent (the best mean
  among trials that ran every replicate) after each replicate, at ``--confidence`` with
  ``min_replicates`` 2 (the defaults of ``RacingSpec``).
* **Optuna TPE** (a bench extra: left out, with a message, where it is not installed) without
  a pruner, with ``MedianPruner`` and ``SuccessiveHalvingPruner`` (defaults) fed the running
  mean of the folds after each fold (step = fold index), and with ``WilcoxonPruner``
  (default p 0.1) fed each fold's own score, as its documentation asks, a stopped trial told
  the mean of the folds it ran.

A run's quality at any point is that of the configuration it would return then: tuneyard's,
the best mean among trials that ran every replicate; Optuna's, its ``best_trial``. Reported,
as medians over seeds: the final quality at the budget B, and the fold-epochs a run needed to
reach the target quality: the upper quartile of the final qualities of the tuneyard runs
without racing with the same sampler (TPE's for Optuna), a quality three in four of them
reach within B.

**Held out.** The racing defaults (confidence 0.95, ``min_replicates`` 2) were set before this
benchmark existed. Seeds 0-4 (the first half) are the tuning half: Optuna's best pruner is
chosen there per problem (the lowest median final quality, in Optuna's favour), and the sweep
of other racing settings (``--sweep``) runs there only. Seeds 5-9 chose nothing; their table
is reported apart.

Samplers learn from aggregates: a complete trial is observed with its mean at resource
``replicates``, a raced-out one with its mean so far at the number of replicates it ran, so
TPE ranks it below the complete trials (the racing rule's verdict), as it does early-stopped
trials.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import itertools
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tuneyard.scheduler.replicates import ReplicateScores, aggregate, judge_level  # noqa: E402
from tuneyard.scheduler.samplers.base import ModelSampler, Observation, make_sampler  # noqa: E402
from tuneyard.scheduler.space import SearchSpace  # noqa: E402
from tuneyard.spec import SamplerSpec, StudySpec  # noqa: E402
from tuneyard.spec.evaluation import RacingSpec  # noqa: E402

Params = dict[str, Any]
EPOCHS = 10  # per replicate
RESULTS = ROOT / "bench" / "results" / "racing"
DIGITS_TABLE = RESULTS / "digits_folds.json"


class Problem(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def space(self) -> dict[str, dict[str, Any]]: ...

    @property
    def replicates(self) -> int: ...

    def scores(self, params: Params, seed: int, number: int) -> list[float]:
        """The configuration's score on every replicate, in the order they run (lower is
        better); ``seed`` is the study's, ``number`` the trial's."""
        ...

    def quality(self, params: Params) -> float:
        """What the configuration is worth, measured apart from the scores a search sees."""
        ...


# -- the simulated problem -------------------------------------------------------------------

SIMULATED_SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99},
    "width": {"type": "int", "low": 16, "high": 1024, "log": True},
}


def true_loss(p: Params) -> float:
    """The loss a configuration would have on average over infinitely many replicates."""
    return (
        0.1
        + (math.log10(p["lr"]) + 2.0) ** 2 / 4.0
        + (p["momentum"] - 0.9) ** 2
        + (math.log2(p["width"]) - 8.0) ** 2 / 16.0
    )


@dataclass
class Simulated:
    replicates: int = 5
    noise: float = 0.15
    difficulty: float = 0.3
    name: ClassVar[str] = "simulated"
    space: ClassVar[dict[str, dict[str, Any]]] = SIMULATED_SPACE

    @property
    def title(self) -> str:
        return (
            f"simulated: {self.replicates} noisy replicates (difficulty sd {self.difficulty}, "
            f"noise sd {self.noise}), true loss"
        )

    def scores(self, params: Params, seed: int, number: int) -> list[float]:
        # The replicates' difficulties are the problem's, fixed per study seed; each
        # evaluation draws its own noise.
        b = np.random.default_rng([seed, 10**6]).normal(0.0, self.difficulty, self.replicates)
        own = np.random.default_rng([seed, number]).normal(0.0, self.noise, self.replicates)
        return (true_loss(params) + b + own).tolist()

    def quality(self, params: Params) -> float:
        return true_loss(params)


# -- 5-fold cross-validation of an MLP on digits (tabulated) ---------------------------------

DIGITS_FOLDS = 5
DIGITS_MODEL_SEED = 0
DIGITS_WORST = 1.0  # the error of a diverged configuration
DIGITS_SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
    "l2": {"type": "float", "low": 1e-6, "high": 1e-1, "log": True},
    "units": {"type": "int", "low": 4, "high": 128, "log": True},
}
DIGITS_GRID: dict[str, tuple[float, ...]] = {
    "lr": tuple(float(f"{v:.4g}") for v in np.geomspace(1e-3, 1.0, 9)),
    "l2": tuple(float(f"{v:.4g}") for v in np.geomspace(1e-6, 1e-1, 6)),
    "units": (4, 8, 16, 32, 64, 128),
}


def _nearest_in_log(value: float, grid: Sequence[float]) -> float:
    return min(grid, key=lambda g: abs(math.log(float(value)) - math.log(float(g))))


def snap(params: Params) -> Params:
    """The grid point a configuration trains as."""
    return {
        "lr": _nearest_in_log(params["lr"], DIGITS_GRID["lr"]),
        "l2": _nearest_in_log(params["l2"], DIGITS_GRID["l2"]),
        "units": int(_nearest_in_log(params["units"], DIGITS_GRID["units"])),
    }


def grid_key(params: Params) -> str:
    p = snap(params)
    return f"lr={p['lr']:g},l2={p['l2']:g},units={p['units']}"


def grid_points() -> list[Params]:
    return [
        dict(zip(DIGITS_GRID, values, strict=True))
        for values in itertools.product(*DIGITS_GRID.values())
    ]


@lru_cache(maxsize=1)
def digits_folds() -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The (train, validation) indices of the 5 folds of the example's training part."""
    from sklearn.model_selection import StratifiedKFold

    from examples import mlp_digits

    _, _, y, _ = mlp_digits.dataset()
    splitter = StratifiedKFold(DIGITS_FOLDS, shuffle=True, random_state=0)
    return tuple(splitter.split(np.zeros(len(y)), y))


def train_folds(params: Params, epochs: int = EPOCHS) -> dict[str, list[float]]:
    """Train the grid point on every fold: each fold model's validation error and its error
    on the test set (the example's validation part, which no fold sees)."""
    from sklearn.exceptions import ConvergenceWarning

    from examples import mlp_digits

    x, x_test, y, y_test = mlp_digits.dataset()
    classes = np.unique(y)
    p = {**snap(params), "solver": "sgd", "momentum": 0.9, "batch_size": 64, "layers": 1}
    val: list[float] = []
    test: list[float] = []
    for train, held in digits_folds():
        model = mlp_digits.build(p, seed=DIGITS_MODEL_SEED)
        with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            try:
                for _ in range(epochs):
                    model.partial_fit(x[train], y[train], classes=classes)
            except ValueError as exc:
                if "non-finite" not in str(exc):
                    raise
                val.append(DIGITS_WORST)
                test.append(DIGITS_WORST)
                continue
        val.append(float(np.mean(model.predict(x[held]) != y[held])))
        test.append(float(np.mean(model.predict(x_test) != y_test)))
    return {"val": val, "test": test}


def tabulate(path: Path, log: Callable[[str], None]) -> None:
    """Train every grid point on every fold once and store the errors (``--tabulate``)."""
    import sklearn

    start = time.perf_counter()
    points = grid_points()
    table: dict[str, dict[str, list[float]]] = {}
    for i, p in enumerate(points):
        table[grid_key(p)] = train_folds(p)
        if (i + 1) % 50 == 0:
            log(f"  {i + 1}/{len(points)} grid points, {time.perf_counter() - start:.0f} s")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "what": "5-fold CV of examples/mlp_digits.py (sgd, momentum 0.9, batch 64, one "
                "layer), validation error per fold and the fold model's test error",
                "epochs": EPOCHS,
                "folds": DIGITS_FOLDS,
                "model_seed": DIGITS_MODEL_SEED,
                "grid": DIGITS_GRID,
                "versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__},
                "seconds": round(time.perf_counter() - start, 1),
                "points": table,
            },
            indent=0,
        )
        + "\n"
    )
    log(f"wrote {path} ({len(points)} grid points, {time.perf_counter() - start:.0f} s)")


@dataclass
class DigitsFolds:
    """The tabulated problem: a grid point's fold errors are what training it gave."""

    table: dict[str, dict[str, list[float]]]
    replicates: int = DIGITS_FOLDS
    name: ClassVar[str] = "digits"
    title: ClassVar[str] = "digits MLP, 5-fold CV: test error of the returned configuration"
    space: ClassVar[dict[str, dict[str, Any]]] = DIGITS_SPACE

    @classmethod
    def load(cls, path: Path = DIGITS_TABLE) -> DigitsFolds:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run python bench/racing.py --tabulate")
        table: dict[str, dict[str, list[float]]] = json.loads(path.read_text())["points"]
        return cls(table)

    def scores(self, params: Params, seed: int, number: int) -> list[float]:
        return list(self.table[grid_key(params)]["val"])

    def quality(self, params: Params) -> float:
        return float(np.mean(self.table[grid_key(params)]["test"]))


# -- searches ---------------------------------------------------------------------------------


@dataclass
class Run:
    """A study's trajectory: after each trial, the compute spent and the quality of the
    configuration it would return."""

    method: str
    seed: int
    compute: list[float] = field(default_factory=list)
    quality: list[float] = field(default_factory=list)
    trials: int = 0
    stopped: int = 0
    replicates_of_stopped: list[int] = field(default_factory=list)
    stopped_at: list[int] = field(default_factory=list)  # the stopped trials' positions

    def record(self, spent: float, quality: float, ran: int | None) -> None:
        """One finished trial; ``ran`` is the replicates it ran when it was stopped early."""
        if ran is not None:
            self.stopped_at.append(self.trials)
            self.stopped += 1
            self.replicates_of_stopped.append(ran)
        self.trials += 1
        self.compute.append(spent)
        self.quality.append(quality)

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "compute": self.compute,
            "quality": self.quality,
            "replicates_of_stopped": self.replicates_of_stopped,
            "stopped_at": self.stopped_at,
        }

    @classmethod
    def from_json(cls, method: str, data: dict[str, Any]) -> Run:
        run = cls(method, int(data["seed"]))
        stopped = dict(zip(data["stopped_at"], data["replicates_of_stopped"], strict=True))
        for i, (c, q) in enumerate(zip(data["compute"], data["quality"], strict=True)):
            run.record(float(c), float(q), stopped.get(i))
        return run

    def quality_at(self, budget: float) -> float:
        best = math.inf
        for c, q in zip(self.compute, self.quality, strict=True):
            if c > budget:
                break
            best = q
        return best

    def compute_to_reach(self, target: float) -> float:
        for c, q in zip(self.compute, self.quality, strict=True):
            if q <= target:
                return c
        return math.inf


def run_tuneyard(
    problem: Problem, sampler_type: str, seed: int, budget: float, rule: RacingSpec | None
) -> Run:
    spec = StudySpec.model_validate({"name": "racing", "space": problem.space})
    space = SearchSpace(spec.space)
    sampler = make_sampler(SamplerSpec(type=sampler_type), space, seed)  # type: ignore[arg-type]
    run = Run("", seed)
    spent = 0.0
    incumbent: ReplicateScores | None = None
    incumbent_mean = math.inf
    best = math.inf
    number = 0
    total = problem.replicates
    while spent < budget:
        params = sampler.suggest(number)
        scores: dict[int, float] = {}
        raced = False
        # The incumbent as it stands before this trial (its replicates are all in).
        best_so_far = functools.partial(lambda held: held, incumbent)
        for k, value in enumerate(problem.scores(params, seed, number)):
            scores[k] = value
            spent += EPOCHS
            # The service's rule after each replicate (tuneyard.scheduler.replicates.level).
            verdict = judge_level(number, scores, total, rule=rule, incumbent=best_so_far)
            if verdict.stop:
                raced = True
                break
        mean = aggregate(scores.values()).value
        if isinstance(sampler, ModelSampler):
            sampler.observe([Observation(number, params, float(len(scores)), mean)])
        if not raced and mean < incumbent_mean:
            incumbent, incumbent_mean = ReplicateScores(number, dict(scores)), mean
            best = problem.quality(params)
        run.record(spent, best, len(scores) if raced else None)
        number += 1
    return run


OPTUNA_PRUNERS = ("none", "median", "sha", "wilcoxon")
OPTUNA_COLOURS = {
    "none": "tab:brown",
    "median": "tab:orange",
    "sha": "tab:red",
    "wilcoxon": "tab:purple",
}


def have_optuna() -> bool:
    return importlib.util.find_spec("optuna") is not None


def _optuna_params(trial: Any, space: dict[str, dict[str, Any]]) -> Params:
    params: Params = {}
    for name, p in space.items():
        if p["type"] == "float":
            params[name] = trial.suggest_float(name, p["low"], p["high"], log=p.get("log", False))
        else:
            params[name] = trial.suggest_int(name, p["low"], p["high"], log=p.get("log", False))
    return params


def run_optuna(problem: Problem, pruner: str, seed: int, budget: float) -> Run:
    """Optuna's TPE, seeded, with one of its pruners, on the same budget and replicates."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    pruners = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "sha": optuna.pruners.SuccessiveHalvingPruner,
        "wilcoxon": optuna.pruners.WilcoxonPruner,
    }
    study = optuna.create_study(
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruners[pruner](),
    )
    run = Run("", seed)
    spent = 0.0
    best = math.inf
    total = problem.replicates
    while spent < budget:
        trial = study.ask()
        params = _optuna_params(trial, problem.space)
        scores: list[float] = []
        pruned = False
        for k, value in enumerate(problem.scores(params, seed, trial.number)):
            scores.append(value)
            spent += EPOCHS
            # The Wilcoxon pruner pairs each fold's own score across trials; the others
            # compare the running mean at a step with other trials' at the same step.
            trial.report(value if pruner == "wilcoxon" else float(np.mean(scores)), k)
            if len(scores) < total and trial.should_prune():
                pruned = True
                break
        if pruned and pruner != "wilcoxon":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            # A trial the Wilcoxon pruner stops is told the mean of the folds it ran, as that
            # pruner's documentation does (so TPE learns from it).
            study.tell(trial, float(np.mean(scores)))
        if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
            best = problem.quality(study.best_trial.params)
        run.record(spent, best, len(scores) if pruned else None)
    return run


@dataclass(frozen=True)
class Method:
    name: str
    framework: str  # "tuneyard" or "optuna"
    sampler: str  # "random" or "tpe"
    racing: RacingSpec | None = None  # tuneyard
    pruner: str = "none"  # optuna
    # The sweep of other racing settings runs on the tuning seeds only.
    sweep: bool = False

    @property
    def reference(self) -> str:
        """The method whose runs set this one's target: tuneyard's same sampler, no racing."""
        return f"tuneyard {self.sampler}"

    def run(self, problem: Problem, seed: int, budget: float) -> Run:
        if self.framework == "tuneyard":
            run = run_tuneyard(problem, self.sampler, seed, budget, self.racing)
        else:
            run = run_optuna(problem, self.pruner, seed, budget)
        run.method = self.name
        return run


def optuna_method(pruner: str) -> str:
    return f"Optuna TPE, {'no pruner' if pruner == 'none' else f'{pruner} pruner'}"


def methods(confidence: float, sweep: bool, optuna: bool) -> list[Method]:
    out: list[Method] = []
    for sampler in ("random", "tpe"):
        out.append(Method(f"tuneyard {sampler}", "tuneyard", sampler))
        out.append(
            Method(
                f"tuneyard {sampler} + racing {confidence:g}",
                "tuneyard",
                sampler,
                RacingSpec(confidence=confidence),
            )
        )
    if sweep:
        for c, m in ((0.8, 2), (0.9, 2), (0.99, 2), (confidence, 3)):
            rule = RacingSpec(confidence=c, min_replicates=m)
            out.append(
                Method(f"tuneyard tpe + racing {c:g}/{m}", "tuneyard", "tpe", rule, sweep=True)
            )
    if optuna:
        for pruner in OPTUNA_PRUNERS:
            out.append(Method(optuna_method(pruner), "optuna", "tpe", pruner=pruner))
    return out


# -- report -----------------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def iqr(xs: Sequence[float]) -> str:
    q1, q3 = np.percentile(xs, [25, 75])
    return f"{q1:.3f}-{q3:.3f}"


Runs = dict[str, list[Run]]  # method name -> its runs, seeds in order


def of_seeds(runs: Runs, seeds: Sequence[int]) -> Runs:
    keep = set(seeds)
    return {m: [r for r in rs if r.seed in keep] for m, rs in runs.items()}


def targets(runs: Runs, budget: float) -> dict[str, float]:
    """Reference method -> its target: the upper quartile of its runs' final qualities."""
    return {
        m: float(np.percentile([r.quality_at(budget) for r in rs], 75))
        for m, rs in runs.items()
        if rs and m.startswith("tuneyard ") and "racing" not in m
    }


def best_optuna(runs: Runs, budget: float) -> str | None:
    """Optuna's strongest pruner on these runs: the lowest median final quality, ties broken
    by the lower median compute to the TPE target."""
    ours = [m for m in runs if m.startswith("Optuna") and runs[m]]
    if not ours:
        return None
    target = targets(runs, budget)["tuneyard tpe"]

    def key(m: str) -> tuple[float, float, str]:
        rs = runs[m]
        return (
            median([r.quality_at(budget) for r in rs]),
            median([r.compute_to_reach(target) for r in rs]),
            m,
        )

    return min(ours, key=key)


def table(runs: Runs, catalogue: dict[str, Method], budget: float, chosen: str | None) -> list[str]:
    """One row per method over the given runs (all of one problem and one set of seeds)."""
    goal = targets(runs, budget)
    rows = [
        "| method | trials | stopped early | replicates when stopped | quality at the budget "
        "(IQR) | fold-epochs to the target (runs that reached it) | saved |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rs in runs.items():
        if not rs:
            continue
        method = catalogue[name]
        target = goal[method.reference]
        final = [r.quality_at(budget) for r in rs]
        reach = [r.compute_to_reach(target) for r in rs]
        reached = sum(math.isfinite(c) for c in reach)
        per_stopped = [float(k) for r in rs for k in r.replicates_of_stopped]
        plain = median([r.compute_to_reach(target) for r in runs[method.reference]])
        saved = "-" if name == method.reference else f"{1 - median(reach) / plain:.0%}"
        label = f"**{name}**" if name == chosen else name
        rows.append(
            f"| {label} | {median([float(r.trials) for r in rs]):.0f} "
            f"| {median([r.stopped / r.trials for r in rs]):.0%} "
            f"| {f'{median(per_stopped):.0f}' if per_stopped else '-'} "
            f"| {median(final):.4f} ({iqr(final)}) "
            f"| {median(reach):,.0f} ({reached}/{len(reach)}) | {saved} |"
        )
    return rows


def summary(
    problem: str, half: str, runs: Runs, budget: float, confidence: float, optuna: str | None
) -> str:
    """The issue's comparison row: tuneyard TPE with and without racing, Optuna's best."""
    target = targets(runs, budget)["tuneyard tpe"]
    cells = [problem, half, f"{target:.4f}"]
    for name in ("tuneyard tpe", f"tuneyard tpe + racing {confidence:g}", optuna):
        if name is None:
            cells += ["-", "-"]
            continue
        rs = runs[name]
        reach = [r.compute_to_reach(target) for r in rs]
        cells.append(f"{median(reach):,.0f} ({sum(math.isfinite(c) for c in reach)}/{len(reach)})")
        cells.append(f"{median([r.quality_at(budget) for r in rs]):.4f}")
    cells.append(optuna.removeprefix("Optuna TPE, ") if optuna else "not installed")
    return "| " + " | ".join(cells) + " |"


def plot(
    all_runs: dict[str, Runs],
    budgets: dict[str, float],
    titles: dict[str, str],
    chosen: dict[str, str | None],
    confidence: float,
    path: Path,
) -> bool:
    """Median quality against fold-epochs, one panel per problem, all seeds."""
    if importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_runs), figsize=(6.5 * len(all_runs), 5.5), squeeze=False)
    handles: dict[str, tuple[str, str]] = {}
    pruner_of = {optuna_method(p): p for p in OPTUNA_PRUNERS}
    for ax, (problem, runs) in zip(axes[0], all_runs.items(), strict=True):
        budget = budgets[problem]
        grid = np.linspace(budget / 60, budget, 120)
        for name, rs in runs.items():
            if not rs or "/" in name:  # the sweep ran on half of the seeds only
                continue
            curve = [median([r.quality_at(c) for r in rs]) for c in grid]
            if name.startswith("Optuna"):
                # One colour per pruner; the one chosen on the tuning seeds drawn thick.
                color = OPTUNA_COLOURS[pruner_of[name]]
                lw, style = (2.6, "-") if name == chosen[problem] else (1.0, "-")
            else:
                tpe = " tpe" in name
                color = "tab:blue" if tpe else "tab:grey"
                lw = 2.6 if tpe else 1.2
                style = "-" if "racing" in name else "--"
            ax.plot(grid, curve, color=color, ls=style, lw=lw)
            handles[name.replace(f" {confidence:g}", "")] = (color, style)
        target = targets(runs, budget)["tuneyard tpe"]
        ax.axhline(target, color="black", lw=0.8, ls=":")
        best = chosen[problem]
        note = f"thick: Optuna's {best.removeprefix('Optuna TPE, ')}" if best else "no Optuna"
        ax.set_title(f"{titles[problem]}\n({note}, chosen on the tuning seeds)", fontsize=9)
        ax.set_xlabel("fold-epochs spent")
        ax.set_ylabel("quality of the returned configuration (median over seeds)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    from matplotlib.lines import Line2D

    proxies = [Line2D([], [], color=c, ls=ls, lw=1.8) for c, ls in handles.values()]
    fig.legend(proxies, list(handles), loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def report(
    all_runs: dict[str, Runs],
    budgets: dict[str, float],
    titles: dict[str, str],
    seeds: list[int],
    confidence: float,
    catalogue: dict[str, Method],
    trials: int,
    say: Callable[[str], None],
) -> dict[str, str | None]:
    """The tables (tuning seeds, held-out seeds, all seeds, then the summary); returns
    Optuna's pruner chosen per problem on the tuning seeds."""
    half = max(1, len(seeds) // 2)
    tuning, held = seeds[:half], seeds[half:]
    chosen = {p: best_optuna(of_seeds(runs, tuning), budgets[p]) for p, runs in all_runs.items()}
    for name, runs in all_runs.items():
        budget = budgets[name]
        replicates = round(budget / (trials * EPOCHS))
        say(f"### {titles[name]}")
        say("")
        say(
            f"{replicates} replicates x {EPOCHS} epochs, budget {budget:,.0f} fold-epochs "
            f"({trials} trials without racing), {len(seeds)} seeds. Bold: Optuna's pruner "
            f"chosen on seeds {tuning[0]}-{tuning[-1]}."
        )
        for label, part in (
            (f"Tuning seeds {tuning[0]}-{tuning[-1]}", tuning),
            (f"Held-out seeds {held[0]}-{held[-1]}" if held else "", held),
            ("All seeds", seeds),
        ):
            if not part:
                continue
            say("")
            say(f"{label}:")
            say("")
            # The sweep ran on the tuning seeds only: it has no row of its own elsewhere.
            shown = {
                m: rs
                for m, rs in of_seeds(runs, part).items()
                if part == tuning or not catalogue[m].sweep
            }
            for row in table(shown, catalogue, budget, chosen[name]):
                say(row)
        say("")
    say("### Summary")
    say("")
    say(
        "| problem | seeds | target | tuneyard TPE: fold-epochs to the target | quality at the "
        "budget | tuneyard TPE + racing: fold-epochs | quality | Optuna TPE + best pruner: "
        "fold-epochs | quality | Optuna's best pruner |"
    )
    say("|---|---|---|---|---|---|---|---|---|---|")
    for name, runs in all_runs.items():
        for label, part in (("tuning", tuning), ("held-out", held)):
            if part:
                part_runs = of_seeds(runs, part)
                say(summary(name, label, part_runs, budgets[name], confidence, chosen[name]))
    return chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--problems", default="simulated,digits")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--trials", type=int, default=60, help="trials of the run without racing")
    ap.add_argument("--replicates", type=int, default=5, help="of the simulated problem")
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--noise", type=float, default=0.15)
    ap.add_argument("--difficulty", type=float, default=0.3)
    ap.add_argument("--no-optuna", action="store_true", help="tuneyard's methods only")
    ap.add_argument("--sweep", action="store_true", help="other racing settings, tuning seeds")
    ap.add_argument("--tabulate", action="store_true", help="retrain the digits table and stop")
    ap.add_argument(
        "--out", type=Path, default=None, help="write results.json, table.md, racing.png there"
    )
    ap.add_argument(
        "--report-only", action="store_true", help="the tables and plot from OUT/results.json"
    )
    args = ap.parse_args()
    if args.tabulate:
        tabulate(DIGITS_TABLE, print)
        return
    if args.report_only and args.out is None:
        raise SystemExit("--report-only: give --out, the folder of results.json")
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    start = time.perf_counter()
    if args.report_only:
        saved = json.loads((args.out / "results.json").read_text())
        confidence, seeds, trials = saved["confidence"], saved["seeds"], saved["trials"]
        budgets, titles = saved["budgets"], saved["titles"]
        all_runs = {
            p: {m: [Run.from_json(m, r) for r in rs] for m, rs in runs.items()}
            for p, runs in saved["runs"].items()
        }
        catalogue = {m.name: m for m in methods(confidence, sweep=True, optuna=True)}
    else:
        confidence, seeds, trials = args.confidence, list(range(args.seeds)), args.trials
        optuna = have_optuna() and not args.no_optuna
        if not optuna and not args.no_optuna:
            say(
                "Optuna is not installed (a bench extra: pip install -e '.[bench]'): its rows "
                "are left out.\n"
            )
        catalogue = {m.name: m for m in methods(confidence, args.sweep, optuna)}
        tuning = seeds[: max(1, len(seeds) // 2)]
        all_runs, budgets, titles = {}, {}, {}
        for name in args.problems.split(","):
            problem: Problem
            if name == "simulated":
                problem = Simulated(args.replicates, args.noise, args.difficulty)
            elif name == "digits":
                problem = DigitsFolds.load()
            else:
                raise SystemExit(f"--problems: unknown problem {name!r} (simulated, digits)")
            budget = float(trials * problem.replicates * EPOCHS)
            runs: Runs = {}
            for m in catalogue.values():
                t = time.perf_counter()
                runs[m.name] = [m.run(problem, s, budget) for s in (tuning if m.sweep else seeds)]
                print(f"  {name}: {m.name}: {time.perf_counter() - t:.1f} s", file=sys.stderr)
            all_runs[name], budgets[name], titles[name] = runs, budget, problem.title
    chosen = report(all_runs, budgets, titles, seeds, confidence, catalogue, trials, say)
    say(f"\n{time.perf_counter() - start:.0f} s")
    if args.out is None:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    if not args.report_only:
        results = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "confidence": confidence,
            "seeds": seeds,
            "trials": trials,
            "budgets": budgets,
            "titles": titles,
            "runs": {
                p: {m: [r.to_json() for r in rs] for m, rs in runs.items()}
                for p, runs in all_runs.items()
            },
        }
        (args.out / "results.json").write_text(json.dumps(results) + "\n")
    if not plot(all_runs, budgets, titles, chosen, confidence, args.out / "racing.png"):
        print("matplotlib is not installed (a bench extra): no plot")


if __name__ == "__main__":
    main()
