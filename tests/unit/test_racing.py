"""Replicates of a trial: the evaluation definition, the aggregate, and the racing rule.

The racing rule is checked on its contract (never the incumbent, never with too few shared
replicates, no NaN, refused bad input) and by seeded simulations of whole races: a candidate
distributed like the incumbent is stopped no more often than the confidence allows, and a
clearly worse one is stopped in most races after a few folds.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy import stats

from tuneyard.scheduler.decisions import fmt
from tuneyard.scheduler.replicates import (
    RaceDecision,
    ReplicateScores,
    aggregate,
    look_level,
    paired_p_value,
    race,
)
from tuneyard.spec.evaluation import EvaluationSpec, RacingSpec, Replicate

FAST = settings(max_examples=80, deadline=None)
RULE = RacingSpec()  # confidence 0.95, min_replicates 2

score = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
scores = st.lists(score, min_size=1, max_size=30)


def replicates(values: list[float] | np.ndarray, trial: int = 1) -> ReplicateScores:
    return ReplicateScores(trial, dict(enumerate(float(v) for v in values)))


# -- the definition ------------------------------------------------------------------------
def test_folds_seeds_and_their_grid_enumerate_in_a_fixed_order() -> None:
    assert EvaluationSpec(folds=3).replicate_list() == [
        Replicate(0, 0, None),
        Replicate(1, 1, None),
        Replicate(2, 2, None),
    ]
    assert EvaluationSpec(seeds=2).replicate_list() == [
        Replicate(0, None, 0),
        Replicate(1, None, 1),
    ]
    grid = EvaluationSpec(folds=3, seeds=2)
    # Seed-major, as repeated cross-validation: a whole CV under seed 0 first.
    assert [(r.fold, r.seed) for r in grid.replicate_list()] == [
        (0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)
    ]  # fmt: skip
    assert [r.index for r in grid.replicate_list()] == list(range(6))
    assert (grid.replicates, grid.unit) == (6, "replicate")
    assert (EvaluationSpec(folds=5).unit, EvaluationSpec(seeds=3).plural) == ("fold", "seeds")


def test_defaults_are_mean_sequential_and_no_racing() -> None:
    spec = EvaluationSpec.model_validate({"folds": 5})
    assert (spec.aggregate, spec.parallel, spec.racing) == ("mean", False, None)
    racing = EvaluationSpec.model_validate({"folds": 5, "racing": {}}).racing
    assert racing is not None
    assert (racing.confidence, racing.min_replicates) == (0.95, 2)
    assert racing.alpha == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("definition", "field", "words"),
    [
        ({}, "", "give 'folds', 'seeds' or both"),
        ({"folds": 1}, "folds", "greater than or equal to 2"),
        ({"folds": 101}, "folds", "less than or equal to 100"),
        ({"seeds": 0}, "seeds", "greater than or equal to 1"),
        ({"folds": 50, "seeds": 21}, "", "1050 replicates, at most 1000"),
        ({"folds": 5, "aggregate": "max"}, "aggregate", "'mean' or 'median'"),
        ({"folds": 5, "racing": {"confidence": 0.5}}, "racing.confidence", "greater than 0.5"),
        ({"folds": 5, "racing": {"confidence": 1}}, "racing.confidence", "less than 1"),
        ({"folds": 5, "racing": {"min_replicates": 1}}, "racing.min_replicates", "2"),
        ({"folds": 5, "racing": {"min_replicates": 5}}, "", "must be fewer than the 5 folds"),
        ({"seeds": 1, "racing": {}}, "", "fewer than the 1 seeds"),
        ({"folds": 5, "repeats": 2}, "repeats", "Extra inputs are not permitted"),
        ({"folds": float("nan")}, "folds", ""),
    ],
)
def test_bad_definitions_are_refused_naming_the_field(
    definition: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        EvaluationSpec.model_validate(definition)
    error = exc.value.errors()[0]
    assert ".".join(str(part) for part in error["loc"]) == field
    assert words in error["msg"]


# -- the aggregate -------------------------------------------------------------------------
@FAST
@given(scores)
def test_aggregates_are_numpys_mean_median_and_sample_std(values: list[float]) -> None:
    mean, median = aggregate(values, "mean"), aggregate(values, "median")
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    assert mean.value == float(np.mean(values))
    assert median.value == float(np.median(values))
    for agg in (mean, median):
        assert agg.n == len(values)
        assert agg.std == std
        assert agg.stderr == pytest.approx(std / np.sqrt(len(values)))


def test_one_replicate_has_no_spread_rather_than_nan() -> None:
    assert aggregate([0.25]) == aggregate([0.25], "median")
    assert (aggregate([0.25]).std, aggregate([0.25]).stderr) == (0.0, 0.0)


@pytest.mark.parametrize(
    ("values", "how", "words"),
    [
        ([0.1, float("nan")], "mean", "nan at position 1 is not finite"),
        ([float("inf")], "median", "inf at position 0 is not finite"),
        ([], "mean", "no replicate values"),
        ([0.1], "max", "'max' is not one of mean, median"),
    ],
)
def test_aggregate_refuses_what_it_cannot_summarise(
    values: list[float], how: str, words: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        aggregate(values, how)  # type: ignore[arg-type]


# -- the racing rule: its contract ---------------------------------------------------------
@FAST
@given(
    mine=st.dictionaries(st.integers(0, 9), score, max_size=10),
    theirs=st.dictionaries(st.integers(0, 9), score, max_size=10),
    confidence=st.floats(0.51, 0.99),
)
def test_never_stops_the_incumbent(
    mine: dict[int, float], theirs: dict[int, float], confidence: float
) -> None:
    rule = RacingSpec(confidence=confidence)
    decision = race(ReplicateScores(7, mine), ReplicateScores(7, theirs), rule, total=10)
    assert not decision.stop
    assert decision.reason == "continue: the incumbent is not raced"


@FAST
@given(
    mine=st.dictionaries(st.integers(0, 9), score, max_size=9),
    theirs=st.dictionaries(st.integers(0, 9), score, max_size=10),
    min_replicates=st.integers(2, 9),
)
def test_never_stops_with_fewer_shared_replicates_than_the_minimum(
    mine: dict[int, float], theirs: dict[int, float], min_replicates: int
) -> None:
    rule = RacingSpec(min_replicates=min_replicates)
    decision = race(ReplicateScores(1, mine), ReplicateScores(2, theirs), rule, total=10)
    shared = len(mine.keys() & theirs.keys())
    if shared < min_replicates:
        assert not decision.stop
        assert decision.p_value is None
    else:
        assert decision.shared == shared
        assert decision.p_value is not None and 0.0 <= decision.p_value <= 1.0
        assert decision.stop == (decision.p_value < look_level(rule, 10))


def test_a_trial_whose_replicates_all_ran_or_without_incumbent_goes_on() -> None:
    worse, better = replicates([9, 9.5, 9.2]), replicates([0, 0.5, 0.1], trial=2)
    assert race(worse, better, RULE, total=3) == RaceDecision(False, "continue: all 3 folds ran")
    assert race(worse, None, RULE, total=5) == RaceDecision(
        False, "continue: no incumbent at this level yet"
    )
    one = race(replicates([9.0]), better, RULE, total=5, unit="seed")
    assert one == RaceDecision(
        False, "continue: 1 seed shared with the incumbent, racing needs 2", shared=1
    )


def test_tests_only_the_replicates_both_trials_have() -> None:
    # The candidate ran folds 0, 1 and 3; the incumbent 0, 1 and 2: they share 0 and 1.
    candidate = ReplicateScores(1, {0: 0.30, 1: 0.31, 3: -5.0})
    incumbent = ReplicateScores(2, {0: 0.20, 1: 0.20, 2: 9.0})
    decision = race(candidate, incumbent, RULE, total=5)
    assert decision.shared == 2
    assert decision.p_value == paired_p_value(np.array([0.30, 0.31]), np.array([0.20, 0.20]))
    assert decision.candidate is not None and decision.candidate.value == pytest.approx(0.305)
    assert "after fold 3 of 5" in decision.reason
    assert "the incumbent's 0.2 on the 2 folds both ran" in decision.reason


@FAST
@given(
    st.lists(st.tuples(score, score), min_size=2, max_size=12).filter(
        lambda pairs: np.ptp([a - b for a, b in pairs]) > 1e-6 * max(1.0, *map(abs, sum(pairs, ())))
    )
)
def test_the_p_value_is_scipys_one_sided_paired_t_test(pairs: list[tuple[float, float]]) -> None:
    a, b = np.array(pairs).T
    expected = stats.ttest_rel(a, b, alternative="greater").pvalue
    assert paired_p_value(a, b) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("difference", "stop", "p"),
    [(0.033, True, 0.0), (0.0, False, 1.0), (-0.033, False, 1.0)],
)
def test_identical_differences_take_the_tests_limit_not_nan(
    difference: float, stop: bool, p: float
) -> None:
    incumbent = np.array([0.198, 0.21, 0.187])
    decision = race(
        replicates(incumbent + difference), replicates(incumbent, trial=2), RULE, total=5
    )
    assert (decision.stop, decision.p_value) == (stop, p)
    assert "nan" not in decision.reason


def test_a_deterministic_objective_equal_to_the_incumbent_is_not_stopped() -> None:
    # 0.1 + 0.2 and 0.3 differ in the last bit: rounding is not evidence.
    decision = race(replicates([0.1 + 0.2] * 3), replicates([0.3] * 3, trial=2), RULE, total=5)
    assert (decision.stop, decision.p_value) == (False, 1.0)


@pytest.mark.parametrize(
    ("candidate", "incumbent", "words"),
    [
        ({0: 0.2, 1: float("nan")}, {0: 0.1, 1: 0.1}, "candidate trial 1's scores: nan"),
        ({0: 0.2, 1: 0.2}, {0: 0.1, 1: float("-inf")}, "incumbent trial 2's scores: -inf"),
        ({0: 0.2, 5: 0.2}, {0: 0.1, 1: 0.1}, "candidate trial 1: replicate 5 is outside 0 .. 4"),
        ({0: 0.2, 1: 0.2}, {-1: 0.1, 1: 0.1}, "incumbent trial 2: replicate -1 is outside"),
    ],
)
def test_refuses_non_finite_scores_and_unknown_replicates(
    candidate: dict[int, float], incumbent: dict[int, float], words: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        race(ReplicateScores(1, candidate), ReplicateScores(2, incumbent), RULE, total=5)


def test_the_reason_names_the_folds_the_test_and_the_p_value() -> None:
    decision = race(
        replicates([0.230, 0.232]),
        replicates([0.198, 0.199, 0.2, 0.21, 0.2], trial=2),
        RULE,
        total=5,
    )
    assert decision.stop and decision.p_value is not None
    assert decision.reason == (
        "stopped after fold 2 of 5: mean 0.231 ± 0.001 is worse than the incumbent's 0.1985 "
        f"on the same folds (paired t-test, p = {fmt(decision.p_value)} < 0.01667)"
    )


def test_the_reason_is_in_the_users_units_for_a_maximised_metric() -> None:
    # Accuracies 0.80, 0.81, 0.79 against 0.90, 0.91, 0.92, negated by the caller.
    decision = race(
        replicates([-0.80, -0.81, -0.79]),
        replicates([-0.90, -0.91, -0.92], trial=2),
        RULE,
        total=5,
        unit="seed",
        sign=-1.0,
    )
    assert decision.stop
    assert decision.reason.startswith(
        "stopped after seed 3 of 5: mean 0.8 ± 0.005774 is worse than the incumbent's 0.91 "
        "on the same seeds"
    )


# -- the racing rule: whole races, simulated -----------------------------------------------
Noise = Callable[[np.random.Generator, int], np.ndarray]
NOISES: dict[str, Noise] = {
    "normal": lambda rng, n: rng.normal(0.0, 0.25, n),
    "laplace": lambda rng, n: rng.laplace(0.0, 0.25, n),
    "skewed": lambda rng, n: rng.exponential(0.25, n),
}


def run_races(
    shift: float, noise: Noise, races: int, total: int, rule: RacingSpec, seed: int
) -> list[int | None]:
    """Race a candidate ``shift`` worse than the incumbent through ``total`` folds, ``races``
    times; the fold after which each race stopped it, or None.

    Each fold has its own difficulty, shared by both trials (what the pairing cancels), plus
    each trial's own noise on it.
    """
    rng = np.random.default_rng(seed)
    stopped_after: list[int | None] = []
    for _ in range(races):
        difficulty = rng.normal(0.0, 1.0, total)
        incumbent = replicates(difficulty + noise(rng, total), trial=0)
        candidate = difficulty + shift + noise(rng, total)
        after = None
        for k in range(1, total):
            if race(replicates(candidate[:k]), incumbent, rule, total=total).stop:
                after = k
                break
        stopped_after.append(after)
    return stopped_after


@pytest.mark.parametrize(
    ("noise", "total", "confidence", "races"),
    [
        ("normal", 5, 0.95, 600),
        ("laplace", 5, 0.95, 600),
        ("skewed", 5, 0.95, 600),
        ("normal", 10, 0.9, 300),
    ],
)
def test_a_candidate_like_the_incumbent_is_stopped_no_more_often_than_the_confidence_allows(
    noise: str, total: int, confidence: float, races: int
) -> None:
    rule = RacingSpec(confidence=confidence)
    stops = sum(after is not None for after in run_races(0.0, NOISES[noise], races, total, rule, 1))
    # Tolerance: were the true rate exactly 1 - confidence, this many stops or more would
    # happen with probability above 0.001 (binomial upper tail).
    assert stats.binom.sf(stops - 1, races, rule.alpha) > 1e-3, (stops, races)
    assert stops > 0  # a rule that never stops would pass the bound vacuously


def test_a_clearly_worse_candidate_is_stopped_in_most_races_after_few_folds() -> None:
    # Worse by 4 times the noise of one trial on one fold (about 2.8 of the differences').
    stopped_after = run_races(1.0, NOISES["normal"], 200, 5, RULE, 2)
    stops = [after for after in stopped_after if after is not None]
    assert len(stops) >= 0.85 * len(stopped_after)
    assert np.median(stops) <= 3


@pytest.mark.parametrize(
    ("total", "min_replicates", "level"), [(5, 2, 0.05 / 3), (10, 2, 0.05 / 8), (10, 9, 0.05)]
)
def test_each_look_gets_its_share_of_one_minus_the_confidence(
    total: int, min_replicates: int, level: float
) -> None:
    # A race looks after min_replicates .. total - 1 replicates (Bonferroni over the looks).
    assert look_level(RacingSpec(min_replicates=min_replicates), total) == pytest.approx(level)


def test_an_evaluation_study_refuses_a_parameter_named_like_the_replicate() -> None:
    from tuneyard.spec import StudySpec

    spec = {
        "name": "cv",
        "space": {"seed": {"type": "int", "low": 0, "high": 9}},
        "evaluation": {"folds": 5},
    }
    with pytest.raises(ValueError, match=r"space\.seed: with evaluation, 'seed' names the"):
        StudySpec.model_validate(spec)
    # Without evaluation the name is the user's.
    del spec["evaluation"]
    assert StudySpec.model_validate(spec).space["seed"].type == "int"


def test_an_evaluation_study_has_one_objective_and_no_constraint() -> None:
    from tuneyard.spec import StudySpec

    spec = {
        "name": "cv",
        "space": {"x": {"type": "float", "low": 0, "high": 1}},
        "evaluation": {"folds": 5},
        "constraints": [{"metric": "mem", "max": 8}],
    }
    with pytest.raises(ValueError, match="evaluation: folds and seeds apply to a study with one"):
        StudySpec.model_validate(spec)


def test_a_level_is_complete_raced_or_waiting() -> None:
    from tuneyard.scheduler.replicates import ReplicateScores, judge_level
    from tuneyard.spec.evaluation import RacingSpec

    rule = RacingSpec(confidence=0.9)
    best = ReplicateScores(1, {0: 0.1, 1: 0.2, 2: 0.15, 3: 0.3, 4: 0.2})
    asked: list[int] = []

    def incumbent() -> ReplicateScores:
        asked.append(1)
        return best

    done = judge_level(2, {i: 0.5 for i in range(5)}, 5, rule=rule, incumbent=incumbent)
    assert done.complete and done.race is None and not done.stop and asked == []
    worse = judge_level(2, {0: 0.5, 1: 0.61, 2: 0.55}, 5, rule=rule, incumbent=incumbent)
    assert not worse.complete and worse.stop and asked == [1]
    assert worse.aggregate.value == pytest.approx(0.5533333)
    # Without racing, or against itself, a level waits for its other replicates.
    assert judge_level(2, {0: 0.5}, 5).race is None
    assert judge_level(1, {0: 0.1, 1: 0.2}, 5, rule=rule, incumbent=incumbent).race is None
