"""Parameter importance: how much of the spread of the values each parameter explains alone.

The method is a first-order variance decomposition in the spirit of fANOVA (Hutter, Hoos and
Leyton-Brown, "An Efficient Approach for Assessing Hyperparameter Importance", ICML 2014,
https://proceedings.mlr.press/v32/hutter14.html), without its random forest: a one-way
analysis of variance of the *ranks* of the values, per parameter.

- The values are replaced by their ranks (ties get their average rank), so an outlier (a
  diverged run) cannot decide the answer, and a log-scale or any monotone reshaping of the
  metric changes nothing.
- For each parameter the trials are grouped: quantile bins of a number (at most
  ``sqrt(n) / 2`` of them, between 2 and 10; one group per distinct value when there are no
  more values than bins), one group per choice of a categorical, and the trials where the
  parameter is inactive (absent from the configuration) as a group of their own. Quantiles
  make a log-scale parameter binned the same as its logarithm would be.
- The share explained is omega squared, ``(SSB - (k - 1) MSW) / (SST + MSW)`` with SSB the
  between-group and SST the total sum of squares of the ranks, k the groups used and MSW the
  mean square within groups. Unlike the plain ratio SSB / SST, which grows like k / n for a
  parameter unrelated to the value, it is about 0 there however many groups it has. Negative
  estimates are reported as 0.
- Interactions are not counted: a parameter that matters only together with another shows
  little.

Pure: plain numbers, configurations and the study's space in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tuneyard.spec import CategoricalParam, FloatParam, IntParam

Space = Mapping[str, FloatParam | IntParam | CategoricalParam]

# Fewer trials than this give every parameter an importance of 0.
MIN_TRIALS = 8
# Importance reads the values at the highest rung at least this many trials reached: fewer
# make the omega squared of a parameter too noisy to rank (with 50 trials and 3 bins its
# standard error is about 0.04), more would keep it on the lowest rung, whose values say least
# about the trained models, for most of a study.
RUNG_TRIALS = 50


def pick_rung(
    rungs: Sequence[tuple[int, int, float]], enough: int = RUNG_TRIALS, least: int = MIN_TRIALS
) -> tuple[int, int, float] | None:
    """Which rung's values importance is fitted on, from ``(rung, trials, resource)`` per
    rung: the highest rung at least ``enough`` trials reached; failing that the rung the most
    trials reached (the lower on a tie) if at least ``least`` did; else None (use the
    completed trials' final values)."""
    ready = [r for r in rungs if r[1] >= enough]
    if ready:
        return max(ready, key=lambda r: r[0])
    most = min(rungs, key=lambda r: (-r[1], r[0]), default=None)
    if most is not None and most[1] >= least:
        return most
    return None


def first_order_importance(
    space: Space, configs: Sequence[Mapping[str, Any]], y: Sequence[float]
) -> dict[str, float]:
    """Share of the variance of the ranked values ``y`` explained by each parameter of
    ``space`` on its own (omega squared, see the module's docstring), in ``[0, 1]``.

    ``configs[i]`` is the configuration that gave ``y[i]``; a parameter it lacks was inactive.
    All zero with fewer than :data:`MIN_TRIALS` trials or when every value is the same. Only
    the order of the values counts, so an infinite one is simply the largest or smallest."""
    n = len(configs)
    if len(y) != n:
        raise ValueError(f"{n} configurations but {len(y)} values")
    names = list(space)
    if n < MIN_TRIALS:
        return dict.fromkeys(names, 0.0)
    r = _centred_ranks(np.asarray(y, dtype=float))
    sst = float(np.dot(r, r))
    if sst <= 0:
        return dict.fromkeys(names, 0.0)
    n_bins = max(2, min(10, int(math.sqrt(n) / 2)))
    out = {}
    for name, p in space.items():
        labels = _bins([c.get(name) for c in configs], p, n_bins)
        cnt = np.bincount(labels)
        tot = np.bincount(labels, weights=r)
        used = cnt > 0
        k = int(used.sum())
        if k < 2:
            out[name] = 0.0
            continue
        means = tot[used] / cnt[used]
        ssb = float(np.dot(cnt[used], means**2))
        msw = max(0.0, sst - ssb) / max(1, n - k)
        out[name] = max(0.0, (ssb - (k - 1) * msw) / (sst + msw))
    return out


def ranked(scores: Mapping[str, float]) -> list[tuple[str, float, float]]:
    """(name, importance, share explained) by decreasing share, then name: the importance is
    the share normalised so that they sum to 1 (all 0 when nothing is explained)."""
    total = sum(scores.values())
    return [
        (name, (v / total) if total > 0 else 0.0, v)
        for name, v in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


def _centred_ranks(y: np.ndarray) -> np.ndarray:
    """Ranks of ``y`` from 0, ties given their average rank, minus their mean."""
    order = np.argsort(np.argsort(y, kind="stable"), kind="stable").astype(float)
    _, inverse = np.unique(y, return_inverse=True)
    sums = np.bincount(inverse, weights=order)
    counts = np.bincount(inverse)
    r = (sums / counts)[inverse]
    return np.asarray(r - r.mean(), dtype=float)


def _bins(
    values: list[Any], param: FloatParam | IntParam | CategoricalParam, n_bins: int
) -> np.ndarray:
    """A bin label per trial: quantile bins of a number, one per choice of a categorical; a
    trial where the parameter is inactive (absent) gets a bin of its own."""
    labels = np.zeros(len(values), dtype=np.int64)
    present = np.array([v is not None for v in values], dtype=bool)
    if isinstance(param, CategoricalParam):
        index: dict[str, int] = {}
        for i, v in enumerate(values):
            if v is not None:
                labels[i] = index.setdefault(repr(v), len(index))
        labels[~present] = len(index)
        return labels
    nums = np.array([float(v) if v is not None else np.nan for v in values])
    active = nums[present]
    if active.size:
        distinct = np.unique(active)
        if distinct.size <= n_bins:
            labels[present] = np.searchsorted(distinct, active)
        else:
            edges = np.unique(np.quantile(active, np.linspace(0, 1, n_bins + 1))[1:-1])
            labels[present] = np.searchsorted(edges, active, side="right")
    labels[~present] = labels.max(initial=0) + 1
    return labels
