"""Racing: stop a trial before all its replicates ran once it is clearly worse than the incumbent.

**The method.** F-Race (Birattari, Stützle, Paquete and Varrentrapp, "A Racing Algorithm for
Configuring Metaheuristics", GECCO 2002) evaluates candidate configurations on the same
instances one after another and drops a candidate as soon as a paired test on the instances
seen so far shows it worse; irace (López-Ibáñez et al. 2016,
https://doi.org/10.1016/j.orp.2016.09.002) races the same way, with Friedman's test or, as an
option, paired t-tests against the best candidate. Here the folds and seeds are the instances:
a candidate trial is compared with the study's incumbent at one resource level on the
replicates both have, so a fold that is hard for every configuration cancels out in the
difference.

**The test: one-sided paired t-test** (``scipy.stats.ttest_rel``, ``alternative="greater"``:
the candidate's scores are higher, i.e. worse, than the incumbent's on the same replicates).
Why not a rank test: with two candidates Friedman's test is the sign test, and it and
Wilcoxon's signed-rank test cannot reach a p-value below ``2**-n`` on n pairs, so at 5 folds
a 0.95 test could stop a trial only after its fifth fold, when nothing is left to save. A
Hoeffding or Bernstein bound needs a known range of the scores, which a loss does not have,
and is much more conservative at five samples. The t-test assumes roughly normal
differences, the trade irace's t-test mode makes too.

**Repeated looks.** The test is repeated after every replicate. Testing each look at
``1 - confidence`` would give a trial as good as the incumbent several chances of a false
alarm. A race through ``total`` replicates looks at most ``total - min_replicates`` times
(after ``min_replicates`` … ``total - 1`` replicates; after the last one there is nothing to
save), and each look tests at ``(1 - confidence) / looks`` (Bonferroni). Over a whole race at
one resource level, a trial whose scores are distributed like the incumbent's is thus stopped
with probability at most ``1 - confidence``. F-Race and irace test every look at the nominal
level; we keep the stated confidence honest at the price of some power. A trial raced at
several resource levels has this budget at each level.

**The incumbent** is the best trial by aggregate at the level, chosen after its scores were
seen, so its scores are optimistic (the winner's curse): a candidate that is truly as good is
stopped somewhat more often than the bound says. The confidence is the knob.

**Zero variance.** When every shared difference is the same number d (up to the rounding of
the scores), the t statistic is d / 0 and scipy answers NaN or infinity. The rule takes the
limit instead: p = 0 when d > 0 (worse on every shared replicate by the same margin: stopped)
and p = 1 when d <= 0 (no evidence that it is worse). Deterministic objectives, where the
seed changes nothing, land here.

Scores are "lower is better": callers negate maximised metrics, as everywhere in
:mod:`tuneyard.scheduler`; ``sign`` turns them back into the user's units in the reason.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from tuneyard.scheduler.decisions import fmt
from tuneyard.scheduler.replicates.aggregate import Aggregate, aggregate, finite_values
from tuneyard.spec.evaluation import RacingSpec

# Differences closer than this, relative to the scores' magnitude, are one number: floating
# rounding of ``a - b`` is about 1e-16 of the larger operand.
_SAME = 1e-12

TEST_NAME = "paired t-test"


@dataclass(frozen=True)
class ReplicateScores:
    """A trial's scores (lower is better) at one resource level, by replicate index."""

    trial: int
    scores: Mapping[int, float]


@dataclass(frozen=True)
class RaceDecision:
    """Whether to stop a trial before its remaining replicates run, and why.

    ``p_value`` and ``level`` are None when no test was made (no incumbent, too few shared
    replicates, the incumbent itself, or nothing left to run); ``level`` is the per-look level
    the p-value was compared with. ``candidate`` and ``incumbent`` aggregate (by mean) the
    scores of the ``shared`` replicates both have.
    """

    stop: bool
    reason: str
    p_value: float | None = None
    level: float | None = None
    shared: int = 0
    candidate: Aggregate | None = None
    incumbent: Aggregate | None = None


def looks(total: int, min_replicates: int) -> int:
    """How many times a race through ``total`` replicates may test: after ``min_replicates``
    up to ``total - 1`` replicates (at least once, so a level is always defined)."""
    return max(1, total - min_replicates)


def look_level(rule: RacingSpec, total: int) -> float:
    """The level of each look: ``1 - confidence`` shared out over the race's looks."""
    return rule.alpha / looks(total, rule.min_replicates)


def race(
    candidate: ReplicateScores,
    incumbent: ReplicateScores | None,
    rule: RacingSpec,
    *,
    total: int,
    unit: str = "fold",
    sign: float = 1.0,
) -> RaceDecision:
    """Decide whether ``candidate`` stops now, given its scores at one resource level and the
    incumbent's there (the best trial by aggregate at that level; None while there is none).

    ``total`` is the number of replicates of a trial, ``unit`` what one is called ("fold",
    "seed", "replicate"), ``sign`` the factor that made the user's values minimised (+1 or
    -1), used only to write the numbers of the reason in the user's units.

    Raises ValueError on a score that is not finite or a replicate index outside
    ``0 .. total - 1``.
    """
    if total < 1:
        raise ValueError(f"total: a trial has at least one replicate, got {total}")
    mine = _checked(candidate, total, "candidate")
    theirs = _checked(incumbent, total, "incumbent") if incumbent is not None else {}
    ran = len(mine)
    if incumbent is None:
        return RaceDecision(False, "continue: no incumbent at this level yet")
    if incumbent.trial == candidate.trial:
        return RaceDecision(False, "continue: the incumbent is not raced")
    if ran >= total:
        return RaceDecision(False, f"continue: all {total} {unit}s ran")
    shared = sorted(mine.keys() & theirs.keys())
    if len(shared) < rule.min_replicates:
        return RaceDecision(
            False,
            f"continue: {len(shared)} {_plural(unit, len(shared))} shared with the incumbent, "
            f"racing needs {rule.min_replicates}",
            shared=len(shared),
        )
    a = np.array([mine[i] for i in shared])
    b = np.array([theirs[i] for i in shared])
    p = paired_p_value(a, b)
    level = look_level(rule, total)
    stop = p < level
    mine_agg, theirs_agg = aggregate(a), aggregate(b)
    on = f"the same {unit}s" if len(shared) == ran else f"the {len(shared)} {unit}s both ran"
    verdict = "is worse than" if stop else "is not shown worse than"
    reason = (
        f"{'stopped' if stop else 'continue'} after {unit} {ran} of {total}: "
        f"mean {fmt(sign * mine_agg.value)} ± {fmt(mine_agg.stderr)} {verdict} the "
        f"incumbent's {fmt(sign * theirs_agg.value)} on {on} "
        f"({TEST_NAME}, p = {fmt(p)} {'<' if stop else '≥'} {fmt(level)})"
    )
    return RaceDecision(stop, reason, p, level, len(shared), mine_agg, theirs_agg)


def paired_p_value(candidate: np.ndarray, incumbent: np.ndarray) -> float:
    """The one-sided p-value that ``candidate`` is worse (higher) than ``incumbent`` on the
    same replicates; identical differences take the test's limit (see the module docstring).
    """
    diff = candidate - incumbent
    scale = max(float(np.max(np.abs(candidate))), float(np.max(np.abs(incumbent))))
    tolerance = _SAME * scale
    if float(np.ptp(diff)) <= tolerance:
        return 0.0 if float(np.mean(diff)) > tolerance else 1.0
    with warnings.catch_warnings():
        # Nearly identical differences: scipy warns of precision loss, and its huge t is the
        # same limit taken above.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_rel(candidate, incumbent, alternative="greater")
    return float(result.pvalue)


def _checked(trial: ReplicateScores, total: int, who: str) -> dict[int, float]:
    indices = list(trial.scores)
    values = finite_values(trial.scores.values(), f"{who} trial {trial.trial}'s scores")
    for i in indices:
        if not 0 <= i < total:
            raise ValueError(
                f"{who} trial {trial.trial}: replicate {i} is outside 0 .. {total - 1}"
            )
    return dict(zip(indices, values.tolist(), strict=True))


def _plural(unit: str, n: int) -> str:
    return unit if n == 1 else unit + "s"
