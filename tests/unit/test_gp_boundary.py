"""The GP sampler does not pile its suggestions on the faces of the search space when the
optimum is inside, and still reaches an optimum that lies on a face.

The bounds on the share of suggestions on a boundary (a coordinate within 1 % of the range of
a bound), over the 30 suggestions after the 10 random ones, seeds 0-4, as measured when they
were set: 6-D quadratic 42 % (79 % with the GP's earlier fit and prior mean: four seeds of five
at 80-100 %), Hartmann-6 31 % (60 %), 2-D quadratic 7 % (7 %; in two dimensions the pile-up
did not happen)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from bench.quality.objectives import H6_A, H6_ALPHA, H6_P
from tuneyard.scheduler.samplers.base import Observation
from tuneyard.scheduler.samplers.gp import GPSampler
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec, StudySpec

# Within this distance of a bound (in the unit cube) a coordinate counts as on the boundary.
EDGE = 1e-3
# The same, as 1 % of the range, for the shares measured over several seeds.
NEAR = 0.01
SEEDS = range(5)


# Hartmann-6 (Dixon & Szego 1978), shifted so that its minimum is 0, at
# (0.202, 0.150, 0.477, 0.275, 0.312, 0.657), inside the cube; its other local minima are too.
def hartmann6(u: np.ndarray) -> float:
    return 3.32237 - float((H6_ALPHA * np.exp(-(H6_A * (u - H6_P) ** 2).sum(1))).sum())


def quadratic(d: int, seed: int) -> Callable[[np.ndarray], float]:
    """A quadratic bowl whose minimum (0) is drawn from [0.2, 0.8]^d."""
    optimum = np.random.default_rng([seed, 9]).uniform(0.2, 0.8, d)
    return lambda u: float(((u - optimum) ** 2).sum())


def cube(d: int) -> SearchSpace:
    params = {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(d)}
    return SearchSpace(StudySpec.model_validate({"name": "edge", "space": params}).space)


def on_boundary(u: np.ndarray) -> np.ndarray:
    return np.any((u < EDGE) | (u > 1.0 - EDGE), axis=-1)


def optimise(
    d: int, f: Callable[[np.ndarray], float], n: int, seed: int = 0
) -> tuple[GPSampler, np.ndarray, np.ndarray]:
    """n trials one after the other, each observed before the next is suggested, as the
    service feeds a sampler with one worker: the sampler, the points and their values."""
    space = cube(d)
    s = GPSampler(space, seed, SamplerSpec(type="gp"))
    points, values = [], []
    # One BLAS thread, as the service suggests (more only fight over the cores here).
    with threadpool_limits(limits=1):
        for k in range(n):
            p = s.suggest(k)
            u = space.to_unit(p)
            y = f(u)
            s.observe([Observation(k, p, 1.0, y)])
            points.append(u)
            values.append(y)
    return s, np.array(points), np.array(values)


def test_candidates_perturbed_from_a_point_on_a_face_do_not_stick_to_that_face() -> None:
    # Clipping put every step that crossed the face exactly on it: half the candidates around
    # a point on a face, for any step size. Reflection leaves the face no more likely than
    # any other spot that close.
    s = GPSampler(cube(3), 0, SamplerSpec(type="gp"))
    rng = np.random.default_rng(1)
    centres = np.tile([0.0, 0.5, 1.0], (4000, 1))
    for step in (0.3, 0.1, 0.01):
        out = s._perturb(centres, np.full(len(centres), step), rng)
        assert np.all((out >= 0.0) & (out <= 1.0))
        share = float(np.mean((out[:, 0] < EDGE) | (out[:, 2] > 1.0 - EDGE)))
        # Expected about 2 * 2 * EDGE / (sqrt(2 pi) step): 0.3 % at 0.1, 30 % at 0.01.
        assert share < 4.0 * EDGE / (np.sqrt(2 * np.pi) * step) + 0.02, (step, share)


def test_suggestions_for_an_interior_optimum_are_not_piled_on_the_boundary() -> None:
    optimum = np.array([0.3, 0.65, 0.45, 0.7])
    s, points, values = optimise(4, lambda u: float(((u - optimum) ** 2).sum()), 50)
    modelled = points[s.n_startup :]
    share = float(on_boundary(modelled).mean())
    assert share <= 0.2, share
    assert values.min() < 1e-3


def test_an_optimum_on_a_face_is_still_reached() -> None:
    # The optimum has x0 = 0: the sampler must be free to go there.
    optimum = np.array([0.0, 0.6])
    _, points, values = optimise(2, lambda u: float(((u - optimum) ** 2).sum()), 30)
    best = points[int(np.argmin(values))]
    assert best[0] < 0.01, best
    assert values.min() < 1e-3


def boundary_share(d: int, f: Callable[[np.ndarray], float], seed: int) -> tuple[float, float]:
    """Share of the 30 modelled suggestions (after 10 random) within NEAR of a bound, and the
    best value found in 40 trials."""
    s, points, values = optimise(d, f, 40, seed)
    modelled = points[s.n_startup :]
    near = np.any((modelled < NEAR) | (modelled > 1.0 - NEAR), axis=1)
    return float(near.mean()), float(values.min())


def test_a_6d_quadratic_with_an_interior_minimum_is_not_searched_on_the_boundary() -> None:
    # With its earlier fit the GP explained the curvature of the less explored dimensions as
    # noise, with lengthscales of 10-20: nearly linear there, EI peaked on a face, and three
    # seeds of five stalled at 0.08-0.15, two of them with every suggestion on the boundary.
    shares, best = zip(*(boundary_share(6, quadratic(6, k), k) for k in SEEDS), strict=True)
    assert float(np.mean(shares)) <= 0.5, shares
    assert max(shares) <= 0.75, shares
    assert max(best) < 1e-3, best


def test_hartmann6_is_not_searched_on_the_boundary() -> None:
    shares, _ = zip(*(boundary_share(6, hartmann6, k) for k in SEEDS), strict=True)
    assert float(np.mean(shares)) <= 0.45, shares


def test_a_2d_quadratic_with_an_interior_minimum_is_not_searched_on_the_boundary() -> None:
    shares, best = zip(*(boundary_share(2, quadratic(2, k), k) for k in SEEDS), strict=True)
    assert float(np.mean(shares)) <= 0.15, shares
    assert max(best) < 1e-5, best
