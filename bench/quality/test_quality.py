"""Checks of the benchmark's own accounting: ``python -m pytest bench/quality`` (seconds)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from bench.quality.methods import ALL, available
from bench.quality.objectives import (
    CROSSING,
    DIGITS,
    HARTMANN6_ARGMIN,
    crossing_error,
)
from bench.quality.report import best_at
from bench.quality.runners import Ledger, Trainer, run, run_tuneyard


def test_crossing_has_its_optimum_at_the_hartmann_minimiser() -> None:
    best = {"lr": 10 ** (-4 + 4 * HARTMANN6_ARGMIN[0])}
    best.update({f"x{i}": HARTMANN6_ARGMIN[i] for i in range(1, 6)})
    assert crossing_error(best, 27) == pytest.approx(0.0, abs=1e-5)
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = {"lr": 10 ** rng.uniform(-4, 0), **{f"x{i}": rng.uniform() for i in range(1, 6)}}
        assert crossing_error(p, 27) >= 0.0
        # Curves only go down, and end at the final error.
        errors = [crossing_error(p, t) for t in range(1, 28)]
        assert all(a >= b for a, b in itertools.pairwise(errors))


def test_a_resumed_trial_continues_its_model() -> None:
    params = {"lr": 0.05, "batch_size": 128, "layers": 1, "units": 16, "momentum": 0.9, "l2": 1e-4}
    straight = Trainer(DIGITS, 0, Ledger(100))
    errors = [straight.epoch(7, params, e) for e in range(1, 6)]
    paused = Trainer(DIGITS, 0, Ledger(100))
    first = [paused.epoch(7, params, e) for e in range(1, 3)]
    paused.epoch(8, params, 1)  # another trial trains in between
    rest = [paused.epoch(7, params, e) for e in range(3, 6)]
    assert first + rest == errors
    with pytest.raises(RuntimeError, match="asked for 2"):
        paused.epoch(7, params, 2)


@pytest.mark.parametrize(
    "name", ["ty-random-asha", "ty-random-hb", "ty-tpe-asha-stop", "op-tpe-hb"]
)
def test_every_method_spends_exactly_its_budget(name: str) -> None:
    method = ALL[name]
    if not available(method):
        pytest.skip(f"{method.sampler} sampler not in this checkout")
    result = run(method, CROSSING, seed=3, budget=200, workers=4)
    assert result.used == 200
    assert result.trace[0][0] == 1
    errors = [e for _, e in result.trace]
    assert errors == sorted(errors, reverse=True)


def test_promotions_resume_where_the_trial_paused() -> None:
    # The trainer raises on any epoch but the next one, so a clean run of ASHA promotion and
    # Hyperband proves that every promoted trial continued its own state.
    for name in ("ty-random-asha", "ty-random-hb", "ty-bohb-asha4"):
        if available(ALL[name]):
            result = run_tuneyard(ALL[name], CROSSING, seed=1, budget=400, workers=3)
            assert result.used == 400


def test_best_at_reads_the_trace_as_a_step_function() -> None:
    trace = [(1, 0.5), (10, 0.3), (40, 0.2)]
    assert best_at(trace, 0) == math.inf
    assert best_at(trace, 9) == 0.5
    assert best_at(trace, 10) == 0.3
    assert best_at(trace, 1000) == 0.2
