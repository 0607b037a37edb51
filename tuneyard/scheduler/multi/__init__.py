"""The multi-objective core: dominance, fronts, ranking a rung, hypervolume, scalarizations.

Pure functions on arrays of minimised objective vectors, shape (points, objectives); callers
negate maximised objectives, as the single-objective code signs scores. Constraints enter as
violations ``>= 0`` per point (:mod:`.constraints` computes them from a report's metrics).

* :mod:`.dominance`: Pareto and constraint-dominance, non-dominated sorting into fronts.
* :mod:`.ranking`: a total order of a rung (front, crowding or epsilon-net, sequence), as
  MO-ASHA ranks rungs, and the quota test of the halving schedulers.
* :mod:`.hypervolume`: exact hypervolume, per-point contributions, a derived reference point.
* :mod:`.scalarize`: weighted sum and ParEGO's augmented Chebyshev function.
"""

from tuneyard.scheduler.multi.constraints import (
    Constraint,
    Feasibility,
    check_constraints,
    parse_constraints,
)
from tuneyard.scheduler.multi.dominance import (
    constraint_dominates,
    dominates,
    front_numbers,
    non_dominated_fronts,
    pareto_mask,
    total_violations,
)
from tuneyard.scheduler.multi.hypervolume import (
    REFERENCE_MARGIN,
    hypervolume,
    hypervolume_contributions,
    reference_point,
)
from tuneyard.scheduler.multi.ranking import (
    METHODS,
    Method,
    Ranking,
    crowding_distance,
    epsnet_order,
    rank,
    rank_points,
    rank_scale,
    within_top,
)
from tuneyard.scheduler.multi.scalarize import (
    CHEBYSHEV_RHO,
    augmented_chebyshev,
    normalise,
    parego,
    random_weights,
    weighted_sum,
)

__all__ = [
    "CHEBYSHEV_RHO",
    "METHODS",
    "REFERENCE_MARGIN",
    "Constraint",
    "Feasibility",
    "Method",
    "Ranking",
    "augmented_chebyshev",
    "check_constraints",
    "constraint_dominates",
    "crowding_distance",
    "dominates",
    "epsnet_order",
    "front_numbers",
    "hypervolume",
    "hypervolume_contributions",
    "non_dominated_fronts",
    "normalise",
    "parego",
    "pareto_mask",
    "parse_constraints",
    "random_weights",
    "rank",
    "rank_points",
    "rank_scale",
    "reference_point",
    "total_violations",
    "weighted_sum",
    "within_top",
]
