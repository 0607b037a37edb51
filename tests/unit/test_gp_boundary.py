"""The GP sampler does not pile its suggestions on the faces of the search space when the
optimum is inside, and still reaches an optimum that lies on a face."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tuneyard.scheduler.samplers.base import Observation
from tuneyard.scheduler.samplers.gp import GPSampler
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec, StudySpec

# Within this distance of a bound (in the unit cube) a coordinate counts as on the boundary.
EDGE = 1e-3


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
