"""Checks of the benchmark's own accounting: ``python -m pytest bench/quality`` (seconds)."""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.quality.cli import parse, worker_counts
from bench.quality.methods import ALL, REFERENCE, available, default_method
from bench.quality.objectives import (
    CROSSING,
    DIGITS,
    HARTMANN3,
    HARTMANN6_ARGMIN,
    HELD_IN,
    HELD_OUT,
    MIXED,
    OBJECTIVES,
    crossing_error,
)
from bench.quality.report import best_at, choose_default, held_out
from bench.quality.runners import Ledger, Trainer, run, run_tuneyard
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import StudySpec


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


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_every_objective_refuses_to_skip_or_repeat_an_epoch(name: str) -> None:
    objective = OBJECTIVES[name]
    space = SearchSpace(StudySpec.model_validate({"name": name, "space": objective.space}).space)
    params = space.sample(np.random.default_rng(0))
    trainer = Trainer(objective, 0, Ledger(10))
    assert math.isfinite(trainer.epoch(0, params, 1))
    with pytest.raises(RuntimeError, match="asked for 3"):
        trainer.epoch(0, params, 3)
    with pytest.raises(RuntimeError, match="asked for 1"):
        trainer.epoch(0, params, 1)
    assert trainer.ledger.used == 1


def test_a_noisy_objective_draws_the_same_noise_when_resumed() -> None:
    params = {"lr": 0.01, "x1": 0.3, "x2": 0.6}
    straight = Trainer(HARTMANN3, 5, Ledger(100))
    errors = [straight.epoch(2, params, e) for e in range(1, 7)]
    paused = Trainer(HARTMANN3, 5, Ledger(100))
    first = [paused.epoch(2, params, e) for e in range(1, 4)]
    paused.epoch(3, params, 1)
    assert first + [paused.epoch(2, params, e) for e in range(4, 7)] == errors
    # Noise is there: two model seeds see different values for one configuration.
    assert Trainer(HARTMANN3, 6, Ledger(10)).epoch(2, params, 1) != errors[0]


def test_the_held_out_split_is_fixed_disjoint_and_covers_every_objective() -> None:
    assert HELD_IN == ("digits-mlp", "diabetes-rff", "crossing", "branin-2d")
    assert HELD_OUT == ("ellipsoid-20d", "hartmann3-noisy", "mixed-cond", "cancer-sgd")
    assert not set(HELD_IN) & set(HELD_OUT)
    assert set(HELD_IN) | set(HELD_OUT) == set(OBJECTIVES)


def test_worker_counts_parse_as_a_list() -> None:
    assert worker_counts("1,4,16,64") == [1, 4, 16, 64]
    assert worker_counts("8") == [8]
    for bad in ("0,4", "4,4", "a,2", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            worker_counts(bad)
    assert parse(["--workers", "1,16"]).workers == [1, 16]
    assert parse([]).workers == [4]
    broad = parse(["--suite", "broad"])
    assert broad.workers == [1, 4, 16, 64]
    assert "ty-random-asha" in broad.methods.split(",")


def test_conditional_parameters_run_on_both_libraries() -> None:
    for name in ("op-tpe-hb", "ty-tpe-hb"):
        assert run(ALL[name], MIXED, seed=0, budget=150, workers=4).used == 150


def _fake(objective: str, method: str, workers: int, final: float) -> list[dict[str, object]]:
    return [
        {
            "method": method,
            "objective": objective,
            "seed": seed,
            "budget": 100,
            "workers": workers,
            "trials": 10,
            "seconds": 0.0,
            "trace": [[1, 1.0], [40, final + 0.01 * seed], [90, final]],
        }
        for seed in range(3)
    ]


def test_the_held_out_report_reads_held_out_objectives_only() -> None:
    default = default_method()
    results = []
    for o in OBJECTIVES:
        results += _fake(o, default, 1, 0.2) + _fake(o, default, 16, 0.3)
        results += _fake(o, REFERENCE, 1, 0.25) + _fake(o, REFERENCE, 16, 0.35)
    report = held_out(results)
    assert report is not None
    assert [r["objective"] for r in report.rows] == list(HELD_OUT)
    row = report.rows[0]
    assert row["ratio"] == pytest.approx(1.5)
    assert row["beats_ref_many"]
    assert row["reach_one"] == pytest.approx(0.40)  # its curve reaches 0.25 at epoch 40 of 100
    # Wild held-in results change nothing.
    changed = [{**r, "trace": [[1, -5.0]]} if r["objective"] in HELD_IN else r for r in results]
    assert held_out(changed).rows == report.rows  # type: ignore[union-attr]


def test_the_default_is_chosen_on_the_held_in_half_by_mean_rank_then_16_workers() -> None:
    results = []
    for o in OBJECTIVES:
        held_in = o in HELD_IN
        for w in (1, 4, 16, 64):
            # Held in: TPE + ASHA and TPE + Hyperband tie over 1, 4 and 16 workers (first at
            # two counts each), and TPE + ASHA is first at 16; GP + ASHA is best at 64 only,
            # which the rule leaves out. Held out: random + ASHA is best everywhere.
            finals = {
                "ty-tpe-asha": 0.1 if (w in (1, 16)) == held_in else 0.3,
                "ty-tpe-hb": 0.1 if (w in (1, 4)) == held_in else 0.3,
                "ty-gp-asha": 0.05 if w == 64 else 0.5,
                "ty-random-asha": 0.4 if held_in else 0.01,
                REFERENCE: 0.0,  # Optuna's method is no candidate
            }
            for method, final in finals.items():
                results += _fake(o, method, w, final)
    choice = choose_default(results)
    assert choice is not None
    assert choice.cells == 12
    assert choice.score["ty-tpe-asha"] == choice.score["ty-tpe-hb"]
    assert choice.by_workers["ty-tpe-asha"][16] < choice.by_workers["ty-tpe-hb"][16]
    assert choice.method == "ty-tpe-asha"
    assert REFERENCE not in choice.score
    # Wild held-out results change nothing.
    changed = [{**r, "trace": [[1, -5.0]]} if r["objective"] in HELD_OUT else r for r in results]
    assert choose_default(changed).method == "ty-tpe-asha"  # type: ignore[union-attr]


def test_the_specs_default_is_the_method_its_decision_run_chooses() -> None:
    # The run the default was chosen on (5 seeds, the suite's 8 methods of then); the latest
    # broad run, in results-broad, chooses otherwise, and bench/quality/README.md says why the
    # default stays.
    stored = Path(__file__).parent / "results-defaults" / "results.json"
    choice = choose_default(json.loads(stored.read_text())["results"])
    assert choice is not None
    assert choice.method == default_method() == "ty-tpe-asha"
