"""Suggestions recorded before the running configurations were converted once per suggestion
(without validating them again) and before the history kept its ranking up to date: with the
same seed, observations and running trials, every model-based sampler must still suggest
exactly these configurations. The observations reach higher resources out of order, so
trials move in the ranking, and the running trials arrive as the database returns them
(through JSON), one of them the configuration of an observed trial."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tuneyard.scheduler.samplers.base import Observation, make_sampler
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec, StudySpec

SPACES: dict[str, dict[str, Any]] = {
    "mixed": {
        "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
        "momentum": {"type": "float", "low": 0.0, "high": 0.99},
        "layers": {"type": "int", "low": 1, "high": 4},
        "units": {"type": "int", "low": 16, "high": 1024, "log": True},
        "batch": {"type": "categorical", "choices": [16, 32, 64, 128, 256]},
        "solver": {"type": "categorical", "choices": ["sgd", "adam"]},
    },
    "cond": {
        "solver": {"type": "categorical", "choices": ["sgd", "adam"]},
        "beta2": {"type": "float", "low": 0.0, "high": 1.0, "when": {"solver": "adam"}},
        "x": {"type": "float", "low": 0.0, "high": 1.0},
        "w": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.1},
    },
    "discrete": {
        "a": {"type": "int", "low": 1, "high": 4},
        "b": {"type": "categorical", "choices": ["x", "y", "z"]},
        "c": {"type": "categorical", "choices": [True, False]},
    },
}


def score(p: dict[str, Any], r: float, i: int) -> float:
    v = 0.0
    for k, x in sorted(p.items()):
        if isinstance(x, bool):
            v += 0.3 * x
        elif isinstance(x, int | float):
            v += ((sum(map(ord, k)) % 7) / 7 - (float(x) % 1.7)) ** 2
        else:
            v += len(x) * 0.1 + (ord(x[0]) % 5) * 0.2
    return v + 1.0 / r + (i % 5) * 1e-3


def history(space: SearchSpace, n: int, seed: int) -> list[Observation]:
    """n trials at resource 1, every third also at 3 and every ninth at 9, the later rungs
    reported after all first rungs, in a shuffled order."""
    obs = []
    for i in range(n):
        p = space.sample(np.random.default_rng([seed, 100, i]))
        for r in (1.0, 3.0, 9.0)[: 1 + (i % 3 == 0) + (i % 9 == 0)]:
            obs.append(Observation(i, p, r, score(p, r, i)))
    later = [o for o in obs if o.resource > 1.0]
    order = list(range(len(later)))
    np.random.default_rng([seed, 5]).shuffle(order)
    return [o for o in obs if o.resource == 1.0] + [later[j] for j in order]


RECORDED: list[tuple[str, dict[str, Any], str, int, int, int, list[dict[str, Any]]]] = [
    (
        "tpe",
        {},
        "mixed",
        40,
        0,
        64,
        [
            {
                "lr": 0.00029792455584872336,
                "momentum": 0.9722519822392921,
                "layers": 3,
                "units": 44,
                "batch": 16,
                "solver": "adam",
            },
            {
                "lr": 0.0012954506563219814,
                "momentum": 0.8372599109047659,
                "layers": 3,
                "units": 44,
                "batch": 16,
                "solver": "adam",
            },
            {
                "lr": 0.0003056987478839838,
                "momentum": 0.6865787731787025,
                "layers": 4,
                "units": 37,
                "batch": 16,
                "solver": "adam",
            },
        ],
    ),
    (
        "tpe",
        {},
        "discrete",
        15,
        7,
        4,
        [
            {"a": 4, "b": "y", "c": True},
            {"a": 4, "b": "y", "c": True},
            {"a": 4, "b": "y", "c": True},
        ],
    ),
    (
        "tpe",
        {},
        "cond",
        120,
        0,
        4,
        [
            {"solver": "adam", "beta2": 0.2095310136819581, "x": 0.7024706632672101, "w": 0.0},
            {"solver": "adam", "beta2": 0.09333019835554919, "x": 0.7907808557057068, "w": 0.0},
            {"solver": "adam", "beta2": 0.033476517630893994, "x": 0.7744497114350948, "w": 0.0},
        ],
    ),
    (
        "tpe",
        {"gamma": 0.25},
        "cond",
        40,
        7,
        64,
        [
            {"solver": "adam", "beta2": 0.9626622195208312, "x": 0.1247409188517416, "w": 0.5},
            {"solver": "adam", "beta2": 0.02435074108721716, "x": 0.480990724268526, "w": 0.5},
            {"solver": "sgd", "x": 0.9611197524791636, "w": 0.0},
        ],
    ),
    (
        "tpe",
        {"constant_liar": False},
        "mixed",
        40,
        7,
        4,
        [
            {
                "lr": 0.00016377142849065352,
                "momentum": 0.33587992653604587,
                "layers": 4,
                "units": 29,
                "batch": 64,
                "solver": "adam",
            },
            {
                "lr": 6.887832497475845e-05,
                "momentum": 0.2758740663674861,
                "layers": 4,
                "units": 70,
                "batch": 64,
                "solver": "adam",
            },
            {
                "lr": 1.2457038055795605e-05,
                "momentum": 0.2798305997717149,
                "layers": 4,
                "units": 179,
                "batch": 64,
                "solver": "adam",
            },
        ],
    ),
    (
        "bohb",
        {"random_fraction": 0.0},
        "mixed",
        60,
        0,
        64,
        [
            {
                "lr": 0.18665290778381213,
                "momentum": 0.24258987143424748,
                "layers": 4,
                "units": 248,
                "batch": 128,
                "solver": "adam",
            },
            {
                "lr": 0.0005239695855309407,
                "momentum": 0.1309804254594681,
                "layers": 2,
                "units": 36,
                "batch": 16,
                "solver": "sgd",
            },
            {
                "lr": 0.01491056899376086,
                "momentum": 0.10900549571064153,
                "layers": 3,
                "units": 25,
                "batch": 128,
                "solver": "sgd",
            },
        ],
    ),
    (
        "bohb",
        {"random_fraction": 0.0},
        "cond",
        15,
        7,
        4,
        [
            {"solver": "sgd", "x": 0.27624215210892866, "w": 0.1},
            {"solver": "sgd", "x": 0.8778823424826794, "w": 0.4},
            {"solver": "sgd", "x": 0.3106265714275175, "w": 0.0},
        ],
    ),
    (
        "cmaes",
        {},
        "mixed",
        60,
        7,
        4,
        [
            {
                "lr": 5.6957819252061193e-05,
                "momentum": 0.31226282989732596,
                "layers": 1,
                "units": 357,
                "batch": 32,
                "solver": "sgd",
            },
            {
                "lr": 0.0032415008131973684,
                "momentum": 0.07853436576065828,
                "layers": 2,
                "units": 92,
                "batch": 16,
                "solver": "sgd",
            },
            {
                "lr": 9.389568942975887e-05,
                "momentum": 0.5556747373585674,
                "layers": 1,
                "units": 108,
                "batch": 128,
                "solver": "sgd",
            },
        ],
    ),
    (
        "cmaes",
        {},
        "discrete",
        15,
        0,
        64,
        [
            {"a": 4, "b": "y", "c": False},
            {"a": 4, "b": "y", "c": False},
            {"a": 4, "b": "y", "c": False},
        ],
    ),
    (
        "gp",
        {"n_candidates": 256},
        "mixed",
        40,
        7,
        4,
        [
            {
                "lr": 0.9661657653683253,
                "momentum": 0.2642425161318891,
                "layers": 1,
                "units": 17,
                "batch": 256,
                "solver": "sgd",
            },
            {
                "lr": 0.9304495937517782,
                "momentum": 0.21885200252096842,
                "layers": 1,
                "units": 16,
                "batch": 256,
                "solver": "sgd",
            },
            {
                "lr": 0.9970620182421154,
                "momentum": 0.20826841785396638,
                "layers": 3,
                "units": 16,
                "batch": 256,
                "solver": "sgd",
            },
        ],
    ),
    (
        "genetic",
        {},
        "cond",
        60,
        0,
        64,
        [
            {"solver": "sgd", "x": 0.6923456180743421, "w": 0.8},
            {"solver": "sgd", "x": 0.9271902431807282, "w": 0.5},
            {"solver": "adam", "beta2": 0.33236921374237605, "x": 0.9085816213385296, "w": 0.8},
        ],
    ),
]


@pytest.mark.parametrize(("kind", "options", "space", "n", "seed", "running", "expected"), RECORDED)
def test_suggestions_are_those_recorded_before(
    kind: str,
    options: dict[str, Any],
    space: str,
    n: int,
    seed: int,
    running: int,
    expected: list[dict[str, Any]],
) -> None:
    s = SearchSpace(StudySpec.model_validate({"name": "t", "space": SPACES[space]}).space)
    sampler = make_sampler(SamplerSpec(type=kind, **options), s, seed)  # type: ignore[arg-type]
    obs = history(s, n, seed)
    sampler.observe(obs[: len(obs) // 2])
    sampler.observe(obs[len(obs) // 2 :])
    busy = [s.sample(np.random.default_rng([seed, 200, i])) for i in range(running)]
    busy[0] = dict(obs[-1].params)
    busy = json.loads(json.dumps(busy))
    assert [sampler.suggest(n + k, busy) for k in range(3)] == expected
