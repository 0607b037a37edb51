"""Population-based training: PBT's exploit-and-explore rule and PB2's GP bandit.

Pure functions and values on plain numbers (numpy and scipy only), like the rest of
:mod:`tuneyard.scheduler`; scores are "lower is better". The definition is
:class:`tuneyard.spec.pbt.PBTSpec`.

* :mod:`.population`: at a member's interval boundary, keep or exploit (clone a top-quantile
  donor), ranked against the population's latest scores, asynchronously.
* :mod:`.explore`: PBT's explore: resample or perturb the mutable parameters within the space.
* :mod:`.pb2`: PB2's explore: GP-UCB over (parameters, time) against the improvement per
  interval.
* :mod:`.lineage`: each member's parameter history with its donors, and its replayable
  schedule.
"""

from tuneyard.scheduler.pbt.explore import Change, ParamMover, check_mutable, perturb_explore
from tuneyard.scheduler.pbt.lineage import Lineage, LineageEntry, Schedule
from tuneyard.scheduler.pbt.pb2 import Interval, pb2_explore
from tuneyard.scheduler.pbt.population import (
    MemberScore,
    PopulationDecision,
    PopulationRule,
    describe,
)

__all__ = [
    "Change",
    "Interval",
    "Lineage",
    "LineageEntry",
    "MemberScore",
    "ParamMover",
    "PopulationDecision",
    "PopulationRule",
    "Schedule",
    "check_mutable",
    "describe",
    "pb2_explore",
    "perturb_explore",
]
