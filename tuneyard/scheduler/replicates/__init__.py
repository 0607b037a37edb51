"""Replicates of a trial: its cross-validation folds or seeds, evaluated one after another or
in parallel, aggregated into the value rungs and samplers see, and raced.

Pure functions on plain numbers (numpy and scipy only), like the rest of
:mod:`tuneyard.scheduler`; scores are "lower is better".

* :mod:`.aggregate`: a trial's value at a resource level (mean or median) with its standard
  deviation and standard error.
* :mod:`.racing`: the racing rule, a one-sided paired t-test on the replicates a trial shares
  with the incumbent, in the manner of F-Race and irace.
* :mod:`.level`: a trial's replicates at one level: aggregate, complete, or raced.
"""

from tuneyard.scheduler.replicates.aggregate import HOWS, Aggregate, How, aggregate
from tuneyard.scheduler.replicates.level import LevelVerdict, judge_level
from tuneyard.scheduler.replicates.racing import (
    TEST_NAME,
    RaceDecision,
    ReplicateScores,
    look_level,
    looks,
    paired_p_value,
    race,
)

__all__ = [
    "HOWS",
    "TEST_NAME",
    "Aggregate",
    "How",
    "LevelVerdict",
    "RaceDecision",
    "ReplicateScores",
    "aggregate",
    "judge_level",
    "look_level",
    "looks",
    "paired_p_value",
    "race",
]
