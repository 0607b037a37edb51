"""The history a model-based sampler keeps: its ranking, kept up to date as observations come
in (one at a time, in batches, or from a stored state), is the full sort it replaces; the
capped rest is the most recent trials; the per-resource tables are what a pass over the
trials finds; and stored configurations encode to the unit cube the same without being
validated again."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from tuneyard.scheduler.samplers.base import History, Observation, Running, point_key
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import StudySpec

SPACE = {
    "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
    "units": {"type": "int", "low": 16, "high": 1024, "log": True},
    "layers": {"type": "int", "low": 1, "high": 9, "step": 2},
    "w": {"type": "float", "low": -1.0, "high": 2.0, "step": 0.1},
    "solver": {"type": "categorical", "choices": ["sgd", "adam", 1.0, True]},
    "beta2": {"type": "float", "low": 0.9, "high": 0.999, "when": {"solver": "adam"}},
    "nesterov": {"type": "categorical", "choices": [True, False], "when": {"solver": "sgd"}},
}


def space_of(params: dict[str, Any]) -> SearchSpace:
    return SearchSpace(StudySpec.model_validate({"name": "t", "space": params}).space)


def full_sort(h: History) -> list[tuple[int, float]]:
    """(number, score) best first, by sorting every trial: further trained first, then the
    score at the highest resource (NaN last), then the number."""
    rows = []
    for n, (_, scores) in h.trials.items():
        r = max(scores)
        s = scores[r]
        rows.append(((-r, math.inf if math.isnan(s) else s, n), n, s))
    rows.sort()
    return [(n, s) for _, n, s in rows]


def same(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and (x[1] == y[1] or (math.isnan(x[1]) and math.isnan(y[1])))
        for x, y in zip(a, b, strict=True)
    )


def random_observations(space: SearchSpace, count: int, seed: int) -> list[Observation]:
    """Trials in a shuffled order of numbers, at resources 1, 3 and 9 in any order, some
    observed again at a resource with a new score, scores with ties and a few NaNs."""
    rng = np.random.default_rng(seed)
    numbers = rng.permutation(count * 2)[:count]
    configs = {int(n): space.sample(np.random.default_rng([seed, int(n)])) for n in numbers}
    out = []
    for _ in range(4 * count):
        n = int(rng.choice(numbers))
        r = float(rng.choice([1.0, 3.0, 9.0]))
        s = float(rng.integers(0, 20)) / 4  # ties
        if rng.random() < 0.03:
            s = math.nan
        out.append(Observation(n, configs[n], r, s))
    return out


def check(h: History) -> None:
    ranked = h.ranked()
    assert same([(n, s) for n, _, s in ranked], full_sort(h))
    for n, x, _ in ranked:
        assert np.array_equal(x, np.asarray(h.trials[n][0]))
    assert h.ranked_numbers() == [n for n, _, _ in ranked]
    assert h.numbers() == sorted(h.trials)
    numbers = list(h.trials)
    assert np.array_equal(h.points(numbers), np.array([h.trials[n][0] for n in numbers]))
    assert h.keys == {point_key(x) for x, _ in h.trials.values()}
    counts: dict[float, int] = {}
    for r in {r for _, scores in h.trials.values() for r in scores}:
        naive = [(n, s[r]) for n, (_, s) in h.trials.items() if r in s]
        assert same([(n, s) for n, _, s in h.at_resource(r)], naive)
        numbers_at, x_at, scores_at = h.resource_table(r)
        table = sorted(zip(numbers_at.tolist(), scores_at.tolist(), strict=True))
        assert same(table, sorted(naive))
        assert np.array_equal(x_at, h.points(numbers_at.tolist()))
        counts[r] = len(naive)
    assert h.resources() == counts


@pytest.mark.parametrize("seed", range(4))
def test_the_ranking_kept_up_to_date_equals_a_full_sort(seed: int) -> None:
    space = space_of(SPACE)
    obs = random_observations(space, 120, seed)
    one_by_one = History(space)
    for i, o in enumerate(obs):
        one_by_one.add(o)
        if i % 37 == 0:
            check(one_by_one)
    check(one_by_one)
    # Batches large against the history are ordered by one sort, small ones one by one.
    batched = History(space)
    for start, size in ((0, 200), (200, 3), (203, 100), (303, 1)):
        batched.extend(obs[start : start + size])
        check(batched)
    batched.extend(obs[304:])
    check(batched)
    assert batched.ranked_numbers() == one_by_one.ranked_numbers()
    restored = History(space)
    restored.load_json(json.loads(json.dumps(batched.to_json())))
    check(restored)
    assert restored.ranked_numbers() == one_by_one.ranked_numbers()
    restored.extend(random_observations(space, 40, seed + 10))
    check(restored)


def test_a_trial_moves_up_when_observed_at_a_higher_resource() -> None:
    space = space_of({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    h = History(space)
    for n, s in enumerate([0.5, 0.1, 0.9]):
        h.add(Observation(n, {"x": n / 4}, 1.0, s))
    assert h.ranked_numbers() == [1, 0, 2]
    h.add(Observation(2, {"x": 0.5}, 3.0, 5.0))  # worst score, but trained further
    assert h.ranked_numbers() == [2, 1, 0]
    h.add(Observation(1, {"x": 0.25}, 1.0, 0.7))  # observed again where it stands
    assert h.ranked_numbers() == [2, 0, 1]
    h.add(Observation(0, {"x": 0.0}, 3.0, 1.0))
    assert h.ranked_numbers() == [0, 2, 1]
    assert [s for _, _, s in h.ranked()] == [1.0, 5.0, 0.7]


def test_the_rest_past_the_limit_is_the_most_recent_trials() -> None:
    space = space_of({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    h = History(space)
    scores = [5.0, 1.0, 7.0, 0.5, 3.0, 9.0, 2.0, 8.0]
    for n in [6, 3, 0, 7, 1, 5, 2, 4]:  # out of order
        h.add(Observation(n, {"x": n / 10}, 1.0, scores[n]))
    ranked = h.ranked_numbers()
    assert ranked == [3, 1, 6, 4, 0, 2, 7, 5]
    # Within the limit: every other trial, in ranked order.
    assert h.best_and_rest(2, 6) == ([3, 1], ranked[2:])
    assert h.best_and_rest(0, 8) == ([], ranked)
    # Past it: the most recent (highest numbers) that are not among the best, in order.
    assert h.best_and_rest(2, 5) == ([3, 1], [2, 4, 5, 6, 7])
    assert h.best_and_rest(2, 3) == ([3, 1], [5, 6, 7])
    assert h.best_and_rest(3, 2) == ([3, 1, 6], [5, 7])
    assert h.best_and_rest(1, 0) == ([3], [])


def test_points_grow_past_the_first_allocation() -> None:
    space = space_of({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    h = History(space)
    for n in range(100):
        h.add(Observation(n, {"x": n / 99}, 1.0, -n))
    assert np.array_equal(h.points([0, 50, 99]), [[0.0], [50 / 99], [1.0]])
    assert h.points([]).shape == (0, 1)
    assert h.ranked_numbers(0, 3) == [99, 98, 97]


@pytest.mark.parametrize("seed", range(3))
def test_to_unit_without_the_check_equals_to_unit_with_it_on_valid_configurations(
    seed: int,
) -> None:
    space = space_of(SPACE)
    configs = [space.sample(np.random.default_rng([seed, i])) for i in range(300)]
    # As the database returns them (through JSON), and as other valid spellings.
    stored = json.loads(json.dumps(configs))
    respelled = [
        {k: float(v) if isinstance(v, int) and not isinstance(v, bool) else v for k, v in c.items()}
        for c in configs
    ]
    for group in (configs, stored, respelled):
        checked = np.array([space.to_unit(c) for c in group])
        assert np.array_equal(np.array([space.to_unit(c, check=False) for c in group]), checked)
        assert np.array_equal(space.unit_points(group), checked)
    assert space.unit_points([]).shape == (0, len(space.names))


def test_running_configurations_are_converted_once_to_points_and_keys() -> None:
    space = space_of(SPACE)
    configs = [space.sample(np.random.default_rng([3, i])) for i in range(64)]
    busy = Running(space, configs)
    assert len(busy) == 64
    assert np.array_equal(busy.points, [space.to_unit(c) for c in configs])
    assert busy.keys == {point_key(space.to_unit(c)) for c in configs}
