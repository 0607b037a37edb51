"""Behaviour of the Sobol, CMA-ES and genetic samplers beyond the shared contract: Sobol's
balance and statelessness, CMA-ES's convergence, asynchronous generations, state replay and
IPOP restarts, and the genetic algorithm's operators."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from scipy.stats import qmc

from tuneyard.scheduler.samplers.base import Observation, StateError
from tuneyard.scheduler.samplers.cma import CMASampler
from tuneyard.scheduler.samplers.genetic import GeneticSampler, Member
from tuneyard.scheduler.samplers.random import RandomSampler
from tuneyard.scheduler.samplers.sobol import SobolSampler
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec, StudySpec

SQUARE = {
    "x": {"type": "float", "low": 0.0, "high": 1.0},
    "y": {"type": "float", "low": 0.0, "high": 1.0},
}
CUBE4 = {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(4)}
MIXED = {
    "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
    "units": {"type": "int", "low": 16, "high": 1024, "log": True},
    "solver": {"type": "categorical", "choices": ["sgd", "adam"]},
    "nesterov": {"type": "categorical", "choices": [True, False], "when": {"solver": "sgd"}},
    "beta2": {"type": "float", "low": 0.9, "high": 0.9999, "when": {"solver": "adam"}},
}


def space_of(params: dict[str, Any]) -> SearchSpace:
    return SearchSpace(StudySpec.model_validate({"name": "t", "space": params}).space)


def cma(params: dict[str, Any], seed: int = 0, **options: Any) -> CMASampler:
    return CMASampler(space_of(params), seed, SamplerSpec(type="cmaes", **options))


def genetic(params: dict[str, Any], seed: int = 0, **options: Any) -> GeneticSampler:
    return GeneticSampler(space_of(params), seed, SamplerSpec(type="genetic", **options))


def events(s: CMASampler) -> list[list[Any]]:
    return list(s.get_state()["extra"]["events"])


def popsizes(s: CMASampler) -> list[int]:
    """The population size of each (re)start, from the documented state."""
    return [int(e[2]) for e in events(s) if e[0] == "restart"]


def tells(s: CMASampler) -> int:
    return sum(1 for e in events(s) if e[0] == "tell")


# -- Sobol -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sobol_points_are_spread_more_evenly_than_random_ones(seed: int) -> None:
    space = space_of(SQUARE)
    sobol, rand = SobolSampler(space, seed), RandomSampler(space, seed)
    s = np.array([space.to_unit(sobol.suggest(n)) for n in range(64)])
    r = np.array([space.to_unit(rand.suggest(n)) for n in range(64)])
    assert qmc.discrepancy(s) < qmc.discrepancy(r) / 2


@pytest.mark.parametrize("seed", [0, 5, 11])
def test_every_aligned_block_of_four_sobol_points_hits_each_quadrant(seed: int) -> None:
    space = space_of(SQUARE)
    s = SobolSampler(space, seed)
    for start in (0, 4, 8, 1020):
        quadrants = {
            (p["x"] >= 0.5, p["y"] >= 0.5) for p in map(s.suggest, range(start, start + 4))
        }
        assert len(quadrants) == 4, (start, quadrants)


def test_sobol_balances_a_discrete_parameter_over_powers_of_two() -> None:
    space = space_of({"k": {"type": "int", "low": 1, "high": 4}, **SQUARE})
    s = SobolSampler(space, 9)
    for start in (0, 8, 16):
        ks = sorted(s.suggest(n)["k"] for n in range(start, start + 8))
        assert ks == [1, 1, 2, 2, 3, 3, 4, 4]


def test_sobol_is_stateless_for_large_trial_numbers() -> None:
    space = space_of(MIXED)
    fresh = SobolSampler(space, 3).suggest(1000)
    busy = SobolSampler(space, 3)
    for n in [5, 999_999, 1001, 3, 70_000, 1000, 12]:
        busy.suggest(n)
    assert busy.suggest(1000) == fresh
    far = SobolSampler(space, 3).suggest(5_000_000)
    assert busy.suggest(5_000_000) == far
    assert SobolSampler(space, 4).suggest(1000) != fresh
    assert space.validate(far) == far


def test_sobol_refuses_a_negative_trial_number() -> None:
    with pytest.raises(ValueError):
        SobolSampler(space_of(SQUARE), 0).suggest(-1)


# -- CMA-ES ------------------------------------------------------------------------------------

CENTRE = np.array([0.3, 0.7, 0.6, 0.2])


def sphere(p: dict[str, Any]) -> float:
    return float(sum((p[f"x{i}"] - CENTRE[i]) ** 2 for i in range(4)))


@pytest.mark.parametrize("seed", [0, 1])
def test_cmaes_converges_on_a_sphere_in_the_unit_cube(seed: int) -> None:
    s = cma(CUBE4, seed)
    values = []
    for n in range(320):
        p = s.suggest(n, [])
        values.append(sphere(p))
        s.observe([Observation(n, p, 1.0, values[-1])])
    assert min(values[:40]) > 1e-3  # the start is no accident...
    assert min(values) < 1e-5  # ...the end is convergence
    assert tells(s) >= 320 // 8 - 1  # popsize 8 for 4 dimensions, one generation per 8 trials


def test_cmaes_is_deterministic_given_the_same_observations() -> None:
    def trace(seed: int) -> list[dict[str, Any]]:
        s = cma(CUBE4, seed)
        out = []
        for n in range(50):
            p = s.suggest(n, [])
            s.observe([Observation(n, p, 1.0, sphere(p))])
            out.append(p)
        return out

    assert trace(4) == trace(4)
    assert trace(4) != trace(5)


def run_async(s: CMASampler, trials: int, workers: int = 5) -> None:
    """Workers finish in a scrambled order; every 7th trial fails and never reports."""
    running: dict[int, dict[str, Any]] = {}
    order = np.random.default_rng(0)
    for n in range(trials):
        running[n] = s.suggest(n, list(running.values()))
        if len(running) >= workers:
            done = int(order.choice(sorted(running)))
            p = running.pop(done)
            if done % 7 != 3:
                s.observe([Observation(done, p, r, sphere(p) + 1 / r) for r in (1.0, 3.0)])


def test_a_failed_trial_never_blocks_a_generation() -> None:
    s = cma(CUBE4, 1, popsize=4)
    for n in range(6):  # six members of generation 0
        s.suggest(n, [])
    for n in (0, 2, 3, 5):  # trial 1 failed, trial 4 is late
        s.observe([Observation(n, s.space.from_unit(np.full(4, 0.5)), 1.0, float(n))])
    assert tells(s) == 0
    s.suggest(6, [])
    assert tells(s) == 1


def test_cmaes_state_replay_reproduces_the_next_suggestions() -> None:
    a = cma(CUBE4, 2)
    run_async(a, 60)
    assert tells(a) >= 3
    state = json.loads(json.dumps(a.get_state(), allow_nan=False))
    b = cma(CUBE4, 2)
    b.set_state(state)
    running = [a.space.from_unit(np.full(4, 0.25))]
    for n in range(60, 70):
        pa, pb = a.suggest(n, running), b.suggest(n, running)
        assert pa == pb
        a.observe([Observation(n, pa, 1.0, sphere(pa))])
        b.observe([Observation(n, pb, 1.0, sphere(pb))])
    assert a.get_state() == b.get_state()


def test_an_instance_catches_up_with_a_state_another_process_moved_on() -> None:
    a, b = cma(MIXED, 6), cma(MIXED, 6)

    def loss(p: dict[str, Any]) -> float:
        return (math.log10(p["lr"]) + 2) ** 2 + (p["solver"] == "sgd")

    reused = 0
    for n in range(90):  # a serves most requests; b reloads the stored state now and then
        if n % 13 == 5:
            live = b._cma
            b.set_state(json.loads(json.dumps(a.get_state())))
            assert b.suggest(n, []) == (p := a.suggest(n, []))
            assert b.get_state() == a.get_state()
            # b replayed only the events it lacked, on the optimizer it already had.
            reused += live is not None and b._cma is live
        else:
            p = a.suggest(n, [])
        a.observe([Observation(n, p, 1.0, loss(p))])
    assert tells(a) >= 5 and reused >= 3


def test_a_tampered_event_log_is_refused() -> None:
    a = cma(CUBE4, 2)
    run_async(a, 40)
    state = json.loads(json.dumps(a.get_state()))
    tell = next(e for e in state["extra"]["events"] if e[0] == "tell")
    tell[1][0][1] += 0.01
    b = cma(CUBE4, 2)
    b.set_state(state)
    with pytest.raises(StateError):
        b.suggest(40, [])


def test_ipop_doubles_the_population_when_the_search_has_converged() -> None:
    s = cma(SQUARE, 1)
    for n in range(300):  # a flat objective: nothing to learn, so CMA-ES stops
        p = s.suggest(n, [])
        s.observe([Observation(n, p, 1.0, 1.0)])
    sizes = popsizes(s)
    assert len(sizes) >= 2
    assert sizes[:2] == [6, 12]

    fixed = cma(SQUARE, 1, restarts=False)
    for n in range(300):
        p = fixed.suggest(n, [])
        fixed.observe([Observation(n, p, 1.0, 1.0)])
    assert popsizes(fixed) == [6]


def test_a_discrete_space_that_is_used_up_restarts_instead_of_stalling() -> None:
    space = {"a": {"type": "int", "low": 1, "high": 3}, "b": {"type": "int", "low": 1, "high": 3}}
    s = cma(space, 1)
    seen = []
    for n in range(30):
        p = s.suggest(n, [])
        seen.append((p["a"], p["b"]))
        s.observe([Observation(n, p, 1.0, (p["a"] - 2) ** 2 + (p["b"] - 1) ** 2)])
    assert len(set(seen[:9])) == 9  # all nine configurations, none twice
    # Proposals that repeat an evaluated configuration are told with its result, so the
    # generations keep coming (far more than 30 trials could fill) and IPOP restarts.
    assert tells(s) > 30 // 6
    assert len(popsizes(s)) >= 2


def test_cmaes_leans_towards_the_categorical_choice_that_wins() -> None:
    s = cma(MIXED, 3)
    picks = []
    for n in range(120):
        p = s.suggest(n, [])
        picks.append(p["solver"])
        loss = (math.log10(p["lr"]) + 2) ** 2 + (0.0 if p["solver"] == "adam" else 5.0)
        s.observe([Observation(n, p, 1.0, loss)])
    assert picks[60:].count("adam") > 45


def test_cmaes_starts_from_the_best_startup_trial() -> None:
    s = cma(CUBE4, 0, n_startup=10)
    for n in range(10):
        p = s.suggest(n, [])
        s.observe([Observation(n, p, 1.0, sphere(p))])
    best = min(s.history.trials.values(), key=lambda t: t[1][1.0])[0]
    s.suggest(10, [])
    start = events(s)[0]
    assert start[0] == "restart" and start[3] == pytest.approx(best)


# -- genetic algorithm -------------------------------------------------------------------------


def observe_points(
    s: GeneticSampler, points: list[np.ndarray], scores: list[float], resource: float = 1.0
) -> None:
    for n, (x, v) in enumerate(zip(points, scores, strict=True)):
        s.observe([Observation(n, s.space.from_unit(x), resource, v)])


def test_without_crossover_or_mutation_a_child_is_a_copy_of_a_parent() -> None:
    s = genetic(CUBE4, 0, crossover_rate=0.0, mutation_rate=0.0)
    rng = np.random.default_rng(0)
    observe_points(s, [rng.random(4) for _ in range(30)], list(rng.random(30)))
    members = {tuple(m.point) for m in s.population()}
    for n in range(20):
        child = s.offspring(np.random.default_rng(n))
        assert tuple(child.tolist()) in members


def test_a_tournament_of_the_whole_population_picks_the_fittest() -> None:
    s = genetic(CUBE4, 0, tournament_size=5, population_size=5, elitism=1)
    rng = np.random.default_rng(1)
    observe_points(s, [rng.random(4) for _ in range(5)], [3.0, 1.0, 4.0, 0.5, 2.0])
    pop = s.population()
    assert [m.number for m in pop] == [3, 1, 4, 0, 2]
    assert {s.tournament(pop, np.random.default_rng(n)).number for n in range(20)} == {3}


def test_fitness_puts_further_trained_trials_first() -> None:
    s = genetic(SQUARE, 0)
    s.observe([Observation(0, {"x": 0.1, "y": 0.1}, 1.0, 0.1)])
    s.observe([Observation(1, {"x": 0.2, "y": 0.2}, 9.0, 0.9)])
    s.observe([Observation(2, {"x": 0.3, "y": 0.3}, 3.0, 0.5)])
    assert [m.number for m in s.population()] == [1, 2, 0]


def test_elitism_keeps_the_best_trial_after_it_ages_out() -> None:
    rng = np.random.default_rng(2)
    points = [rng.random(4) for _ in range(60)]
    scores = [0.0] + [1.0 + float(v) for v in rng.random(59)]  # trial 0 is the best
    kept = genetic(CUBE4, 0, population_size=10, elitism=2)
    observe_points(kept, points, scores)
    pop = kept.population()
    numbers = {m.number for m in pop}
    assert len(pop) == 10 and pop[0].number == 0
    assert set(range(52, 60)) <= numbers  # the others are the newest

    aged = genetic(CUBE4, 0, population_size=10, elitism=0)
    observe_points(aged, points, scores)
    assert {m.number for m in aged.population()} == set(range(50, 60))


def test_uniform_crossover_takes_each_gene_from_a_parent() -> None:
    s = genetic(CUBE4, 0)
    a, b = np.full(4, 0.1), np.full(4, 0.9)
    children = [s.crossover(a, b, np.random.default_rng(n)) for n in range(200)]
    genes = np.concatenate(children)
    assert set(np.round(genes, 9)) == {0.1, 0.9}
    assert 0.4 < float(np.mean(genes == 0.1)) < 0.6


def test_crossover_never_hands_a_child_an_inactive_placeholder() -> None:
    s = genetic(MIXED, 0)
    adam = s.space.to_unit({"lr": 0.01, "units": 64, "solver": "adam", "beta2": 0.95})
    sgd = s.space.to_unit({"lr": 0.1, "units": 256, "solver": "sgd", "nesterov": True})
    for n in range(100):
        child = s.space.from_unit(s.crossover(adam, sgd, np.random.default_rng(n)))
        if child["solver"] == "adam":
            assert child["beta2"] == pytest.approx(0.95)
        else:
            assert child["nesterov"] is True


def test_mutation_moves_numeric_genes_a_little_and_changes_categoricals() -> None:
    s = genetic(MIXED, 0, mutation_rate=1.0, mutation_scale=0.01)
    x = s.space.to_unit({"lr": 0.01, "units": 64, "solver": "adam", "beta2": 0.95})
    numeric = [i for i, n in enumerate(s.space.names) if s.space.params[n].type != "categorical"]
    for n in range(50):
        y = s.mutate(x, np.random.default_rng(n))
        assert np.all((y >= 0) & (y <= 1))
        assert s.space.from_unit(y)["solver"] == "sgd"  # the only other choice
        assert np.all(np.abs(y[numeric] - x[numeric]) < 0.06)
        assert np.any(y[numeric] != x[numeric])
    edge = s.mutate(np.zeros(len(x)), np.random.default_rng(0))
    assert np.all(edge >= 0)  # reflected at the boundary


def test_the_first_generation_is_random_and_later_ones_are_bred() -> None:
    s = genetic(SQUARE, 0, population_size=8, crossover_rate=0.0, mutation_rate=0.0)
    for n in range(8):
        p = s.suggest(n, [])
        assert p == space_of(SQUARE).sample(np.random.default_rng([0, n]))
        s.observe([Observation(n, p, 1.0, (p["x"] - 0.5) ** 2)])
    assert isinstance(s.population()[0], Member)
    # With no variation every child copies a parent, so ensure_new must step in.
    parents = {tuple(np.round(m.point, 9)) for m in s.population()}
    child = s.suggest(8, [])
    assert tuple(np.round(s.space.to_unit(child), 9)) not in parents


def test_genetic_options_are_checked() -> None:
    with pytest.raises(ValueError):
        GeneticSampler(space_of(SQUARE), 0, SamplerSpec(type="genetic", elitism=25))
