"""The pure rules behind what a study says of itself: the warnings of a max_trials that cannot
fill the rungs (checked against the simulator, which runs the service's engine), and the error
summary and exception class that fail fast compares and shows."""

from __future__ import annotations

from typing import Any

import pytest

from tuneyard.scheduler.rungs import geometric_rungs
from tuneyard.scheduler.schedulers import make_scheduler
from tuneyard.scheduler.simulator import Simulator
from tuneyard.scheduler.sizing import rung_warnings
from tuneyard.service.trials.lifecycle import error_class, error_summary
from tuneyard.spec import StudySpec
from tuneyard.states import TrialState


def spec(max_trials: int, **scheduler: Any) -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": "s",
            "space": {"x": {"type": "float", "low": 0, "high": 1}},
            "scheduler": {"min_resource": 1, "max_resource": 27, **scheduler},
            "limits": {"max_trials": max_trials},
        }
    )


def needed(s: StudySpec) -> int:
    """The smallest max_trials with no warning, found by asking the rule."""
    n = 1
    while rung_warnings(
        s.model_copy(update={"limits": s.limits.model_copy(update={"max_trials": n})})
    ):
        n += 1
    return n


@pytest.mark.parametrize(
    ("scheduler", "need"),
    [
        ({"type": "asha"}, 27),  # eta 3, rungs 1/3/9/27: 3^3
        ({"type": "asha", "reduction_factor": 2, "max_resource": 8}, 8),  # 1/2/4/8: 2^3
        ({"type": "asha", "max_resource": 9}, 9),
        # Two brackets dealt round-robin: bracket 1 starts at rung 1 and needs 9 of its own,
        # trials 1, 3, ..., 17.
        ({"type": "asha", "brackets": 2, "bracket_choice": "round_robin"}, 18),
        # Placed by committed resource: a trial of bracket 0 costs 3 epochs with its planned
        # promotions (1 + 2/3 + 6/9 + 18/27), one of bracket 1 costs 7 (3 + 6/3 + 18/9), so
        # bracket 1's ninth trial comes after bracket 0's nineteenth: 28 trials.
        ({"type": "asha", "brackets": 2}, 28),
        # As many brackets as rungs: bracket 3 starts at the top, trial 3 trains to 27.
        ({"type": "asha", "brackets": 4}, 4),
        ({"type": "sha"}, 27),
        # Hyperband's first bracket admits 27 trials at rung 0 and needs all of them.
        ({"type": "hyperband"}, 27),
    ],
)
def test_the_trials_needed_to_reach_max_resource_by_promotion(
    scheduler: dict[str, Any], need: int
) -> None:
    assert needed(spec(1, **scheduler)) == need


def test_the_warning_names_the_fields_and_the_numbers() -> None:
    (w,) = rung_warnings(spec(24))
    assert w.startswith("limits.max_trials (24) is too small for scheduler asha")
    assert "reduction_factor 3 and 4 rungs (1, 3, 9, 27)" in w
    assert "max_resource (27)" in w and "at least 27 trials" in w
    assert "Raise limits.max_trials to 27 or more" in w
    assert rung_warnings(spec(27)) == []


def test_the_warning_says_what_the_end_of_study_promotions_leave() -> None:
    """ASHA's promotion mode still trains one trial to the top, after the rest of the study;
    SHA's upper rungs stay empty."""
    (asha,) = rung_warnings(spec(20))
    assert "only the one trial that the end-of-study promotions train to 27" in asha
    (sha,) = rung_warnings(spec(20, type="sha"))
    assert "the upper rungs stay empty" in sha


@pytest.mark.parametrize(
    "scheduler",
    [
        {"type": "asha", "mode": "stopping"},  # the first trial at a rung always goes on
        {"type": "fifo"},
        {"type": "median"},
        {"type": "asha", "min_resource": 27},  # one rung: every trial trains to the end
    ],
)
def test_schedulers_that_need_no_such_budget_are_not_warned_of(scheduler: dict[str, Any]) -> None:
    assert rung_warnings(spec(1, **scheduler)) == []


def test_an_sha_bracket_smaller_than_the_rungs_need_is_warned_of() -> None:
    # No max_trials helps here: the warning is about the bracket alone.
    (w,) = rung_warnings(spec(100, type="sha", bracket_size=20))
    assert w.startswith("scheduler.bracket_size (20) is smaller than reduction_factor^")
    assert "= 27" in w


@pytest.mark.parametrize(
    "scheduler",
    [
        {"type": "asha"},
        {"type": "asha", "brackets": 2},
        {"type": "asha", "brackets": 2, "bracket_choice": "round_robin"},
        {"type": "hyperband"},
    ],
)
def test_with_the_trials_the_rule_asks_for_a_trial_reaches_max_resource(
    scheduler: dict[str, Any],
) -> None:
    s = spec(1, **scheduler)
    need = needed(s)
    res = Simulator(
        make_scheduler(s.scheduler),
        lambda n: {"n": n},
        lambda p, step: (p["n"] % 7) * 0.1 + 1.0 / step,
        max_trials=need,
        workers=1,
    ).run()
    top = geometric_rungs(1, 27, 3)[-1]
    done = [t for t in res.trials if t.state == TrialState.COMPLETED]
    assert done and max(t.trained for t in done) >= top


# -- errors -------------------------------------------------------------------------------------
TRACE = (
    "Traceback (most recent call last):\n"
    '  File "/x/train.py", line 9, in train\n'
    "    model.fit()\n"
    "pkg.errors.DataError: shard 3 is empty\n"
)


def test_the_summary_and_class_of_a_traceback() -> None:
    assert error_summary(TRACE) == "pkg.errors.DataError: shard 3 is empty"
    assert error_class(TRACE) == "pkg.errors.DataError"
    bare = "Traceback (most recent call last):\n  File 'x', line 1\nKeyboardInterrupt\n"
    assert error_class(bare) == "KeyboardInterrupt"


def test_a_message_that_is_no_traceback_has_no_class() -> None:
    assert error_summary("lease expired: no report for 60 s") == "lease expired: no report for 60 s"
    assert error_class("lease expired: no report for 60 s") is None
    assert error_class("RuntimeError: said in plain words") is None
