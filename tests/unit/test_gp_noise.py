"""The GP treats a trial's value that is a mean over folds or seeds as noisy by its squared
standard error (heteroscedastic noise): such a point is believed less than an exact one, and
the model of a study without such estimates computes exactly as it did."""

from __future__ import annotations

import numpy as np

from tests.unit.test_sampler_gp import sampler
from tuneyard.scheduler.samplers.base import Observation

LINE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def observations(noise: dict[int, float]) -> list[Observation]:
    xs = np.linspace(0.0, 1.0, 12)
    return [
        Observation(i, {"x": float(x)}, 1.0, float(np.sin(6 * x)), noise=noise.get(i, 0.0))
        for i, x in enumerate(xs)
    ]


def test_a_point_with_a_large_standard_error_is_believed_less() -> None:
    exact, noisy = sampler(LINE), sampler(LINE)
    exact.observe(observations({}))
    # Trial 5's value is a mean over folds with a standard error as large as the signal.
    noisy.observe(observations({5: 1.0}))
    x5 = np.array([[5 / 11]])
    m_exact, sd_exact = exact.fit().predict_scores(x5)  # type: ignore[union-attr]
    m_noisy, sd_noisy = noisy.fit().predict_scores(x5)  # type: ignore[union-attr]
    assert sd_noisy[0] > 2 * sd_exact[0]
    # The exact model interpolates it; the noisy one leans on its neighbours instead.
    truth = float(np.sin(6 * 5 / 11))
    assert abs(m_exact[0] - truth) < 0.02
    assert abs(m_noisy[0] - truth) > abs(m_exact[0] - truth)


def test_scores_without_noise_give_the_model_they_gave_before() -> None:
    a, b = sampler(LINE), sampler(LINE)
    a.observe(observations({}))
    b.observe(observations({3: 0.0}))  # a zero variance is an exact score
    assert b.history.noise == {}
    xs = np.linspace(0, 1, 7)[:, None]
    ma, sa = a.fit().predict_scores(xs)  # type: ignore[union-attr]
    mb, sb = b.fit().predict_scores(xs)  # type: ignore[union-attr]
    assert np.array_equal(ma, mb) and np.array_equal(sa, sb)


def test_the_noise_survives_the_stored_state() -> None:
    s = sampler(LINE)
    s.observe(observations({2: 0.25, 7: 0.01}))
    state = s.history.to_json()
    again = sampler(LINE)
    again.history.load_json(state)
    assert again.history.noise == {(2, 1.0): 0.25, (7, 1.0): 0.01}
    # A state stored before noise existed reads as exact scores.
    del state["noise"]
    again.history.load_json(state)
    assert again.history.noise == {}
