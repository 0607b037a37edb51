"""The racing benchmark's own pieces (bench/racing.py): the digits problem's grid, folds and
table, the fold-epoch accounting of tuneyard's loop with and without racing, Optuna's loop
where Optuna is installed (a bench extra), and the choice of Optuna's pruner on the seeds
given.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.racing import (
    DIGITS_GRID,
    EPOCHS,
    DigitsFolds,
    Run,
    Simulated,
    best_optuna,
    digits_folds,
    grid_key,
    grid_points,
    have_optuna,
    methods,
    of_seeds,
    run_tuneyard,
    snap,
    targets,
    train_folds,
)
from examples import mlp_digits
from tuneyard.spec.evaluation import RacingSpec


def test_a_configuration_snaps_to_the_nearest_grid_point_on_a_log_scale() -> None:
    # 0.03 lies between 0.01334 and 0.03162, far nearer the second in log terms.
    assert snap({"lr": 0.03, "l2": 2e-6, "units": 5}) == {"lr": 0.03162, "l2": 1e-6, "units": 4}
    # The space's bounds are the grid's ends, and every grid point is its own key.
    assert snap({"lr": 1.0, "l2": 0.1, "units": 128}) == {"lr": 1.0, "l2": 0.1, "units": 128}
    keys = {grid_key(p) for p in grid_points()}
    assert len(keys) == math.prod(len(v) for v in DIGITS_GRID.values())


def test_the_folds_partition_the_training_part_and_each_holds_every_digit() -> None:
    _, _, y, _ = mlp_digits.dataset()
    folds = digits_folds()
    assert len(folds) == 5
    held = np.concatenate([v for _, v in folds])
    assert sorted(held.tolist()) == list(range(len(y)))
    for train, val in folds:
        assert not set(train.tolist()) & set(val.tolist())
        assert set(y[val].tolist()) == set(range(10))


def test_training_a_grid_point_gives_a_validation_and_a_test_error_per_fold() -> None:
    errors = train_folds({"lr": 0.03, "l2": 1e-4, "units": 16}, epochs=1)
    assert len(errors["val"]) == len(errors["test"]) == 5
    # One epoch of a reasonable configuration is far better than chance (0.9).
    assert all(0.0 <= e < 0.5 for e in errors["val"] + errors["test"])


def test_the_digits_problem_replays_its_table_and_says_how_to_make_one(tmp_path: Path) -> None:
    p = {"lr": 0.03162, "l2": 1e-4, "units": 16}
    path = tmp_path / "table.json"
    path.write_text(
        json.dumps({"points": {grid_key(p): {"val": [0.1, 0.2, 0.3, 0.4, 0.5], "test": [0.2] * 5}}})
    )
    problem = DigitsFolds.load(path)
    # A nearby configuration trains as the grid point.
    assert problem.scores({**p, "lr": 0.03}, seed=3, number=7) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert problem.quality(p) == pytest.approx(0.2)
    with pytest.raises(FileNotFoundError, match="--tabulate"):
        DigitsFolds.load(tmp_path / "missing.json")


@dataclass
class Bowl:
    """A deterministic problem: every replicate is the quality plus a difficulty that all
    configurations share, so a paired test sees a worse trial's constant margin."""

    replicates: int = 5
    name: str = "bowl"
    title: str = "bowl"
    space: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"x": {"type": "float", "low": -1.0, "high": 1.0}}
    )

    def scores(self, params: dict[str, Any], seed: int, number: int) -> list[float]:
        return [self.quality(params) + d for d in (0.0, 1.0, -0.5, 0.3, 2.0)]

    def quality(self, params: dict[str, Any]) -> float:
        return float(params["x"]) ** 2


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_tuneyard_spends_the_budget_in_fold_epochs_and_racing_stops_worse_trials(
    sampler: str,
) -> None:
    budget = 20 * 5 * EPOCHS
    plain = run_tuneyard(Bowl(), sampler, 0, budget, None)
    assert plain.trials == 20 and plain.stopped == 0
    assert plain.compute == [5.0 * EPOCHS * (i + 1) for i in range(20)]
    raced = run_tuneyard(Bowl(), sampler, 0, budget, RacingSpec(confidence=0.95))
    # Every trial worse than the incumbent by a constant margin stops at the first look
    # (min_replicates 2), and the budget buys more trials.
    assert raced.stopped > 0
    assert set(raced.replicates_of_stopped) == {2}
    assert raced.trials > plain.trials
    spent = [b - a for a, b in zip([0.0, *raced.compute], raced.compute, strict=False)]
    assert set(spent) <= {2.0 * EPOCHS, 5.0 * EPOCHS}
    assert budget <= raced.compute[-1] < budget + 5 * EPOCHS
    # The returned configuration only gets better, and only complete trials count.
    assert raced.quality == sorted(raced.quality, reverse=True)
    assert raced.quality_at(budget) <= raced.quality[0]


def test_the_simulated_problem_shares_its_difficulties_across_trials_not_its_noise() -> None:
    problem = Simulated(replicates=5, noise=0.0, difficulty=0.3)
    p = {"lr": 0.01, "momentum": 0.9, "width": 256}
    a, b = problem.scores(p, 0, 1), problem.scores(p, 0, 2)
    assert a == pytest.approx(b)  # no noise: only the seed's difficulties
    assert np.mean(a) != pytest.approx(problem.quality(p))
    noisy = Simulated(replicates=5, noise=0.15, difficulty=0.3)
    assert noisy.scores(p, 0, 1) != noisy.scores(p, 0, 2)


def test_a_small_run_of_every_method_spends_the_same_budget() -> None:
    # Optuna's methods are in the list where Optuna is installed (a bench extra).
    catalogue = methods(0.95, sweep=True, optuna=have_optuna())
    assert any(m.framework == "optuna" for m in catalogue) == have_optuna()
    budget = 20 * 5 * EPOCHS
    for method in catalogue:
        run = method.run(Bowl(), 0, budget)
        assert run.method == method.name
        assert budget <= run.compute[-1] < budget + 5 * EPOCHS, method.name
        assert all(k < 5 for k in run.replicates_of_stopped), method.name
        assert math.isfinite(run.quality_at(budget)), method.name


def _run(method: str, seed: int, final: float) -> Run:
    run = Run(method, seed)
    run.record(10.0, 1.0, None)
    run.record(20.0, final, None)
    return run


def test_optunas_pruner_is_chosen_on_the_seeds_given_only() -> None:
    runs = {
        "tuneyard tpe": [_run("tuneyard tpe", s, 0.5) for s in range(4)],
        "Optuna TPE, median pruner": [_run("m", s, 0.2 if s < 2 else 0.9) for s in range(4)],
        "Optuna TPE, sha pruner": [_run("s", s, 0.3) for s in range(4)],
    }
    assert best_optuna(of_seeds(runs, [0, 1]), 20.0) == "Optuna TPE, median pruner"
    assert best_optuna(of_seeds(runs, [2, 3]), 20.0) == "Optuna TPE, sha pruner"
    # The target is the upper quartile of the reference's final qualities; racing and
    # Optuna set none.
    assert targets(runs, 20.0) == {"tuneyard tpe": pytest.approx(0.5)}


def test_a_run_read_back_from_its_json_reports_the_same() -> None:
    run = run_tuneyard(Bowl(), "random", 0, 20 * 5 * EPOCHS, RacingSpec(confidence=0.95))
    back = Run.from_json(run.method, json.loads(json.dumps(run.to_json())))
    assert back == run
