"""The study definition: what to tune, how to search, when to stop.

The same document arrives as JSON over HTTP and as YAML through the CLI. Every model forbids
unknown keys, and every cross-field rule raises a ``ValueError`` whose text names the field, so
the API can answer a 422 that tells the user exactly what to fix.

The parts: the search space's parameters and their conditions (:mod:`.params`), the sampler
and the scheduler (:mod:`.algorithms`), the grid's size and points (:mod:`.grid`), and the
definition itself (:mod:`.study`). Import the names from here.
"""

from tuneyard.spec.algorithms import (
    DEFAULT_SAMPLER,
    MULTI_OBJECTIVE_SAMPLERS,
    SAMPLER_OPTIONS,
    SamplerSpec,
    SamplerType,
    SchedulerSpec,
    default_sampler_type,
)
from tuneyard.spec.grid import MAX_GRID_WORK, GridIndex, GridTooComplex, grid_size
from tuneyard.spec.params import (
    MAX_CHOICES,
    MAX_GRID_POINTS,
    MAX_PARAMS,
    CategoricalParam,
    ChoiceKey,
    FloatParam,
    IntParam,
    Param,
    Scalar,
    topological_order,
)
from tuneyard.spec.study import MAX_ARG_LENGTH, MAX_ARGS, ExecutionSpec, LimitsSpec, StudySpec

__all__ = [
    "DEFAULT_SAMPLER",
    "MAX_ARGS",
    "MAX_ARG_LENGTH",
    "MAX_CHOICES",
    "MAX_GRID_POINTS",
    "MAX_GRID_WORK",
    "MAX_PARAMS",
    "MULTI_OBJECTIVE_SAMPLERS",
    "SAMPLER_OPTIONS",
    "CategoricalParam",
    "ChoiceKey",
    "ExecutionSpec",
    "FloatParam",
    "GridIndex",
    "GridTooComplex",
    "IntParam",
    "LimitsSpec",
    "Param",
    "SamplerSpec",
    "SamplerType",
    "Scalar",
    "SchedulerSpec",
    "StudySpec",
    "default_sampler_type",
    "grid_size",
    "topological_order",
]
