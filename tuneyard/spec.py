"""The study definition: what to tune, how to search, when to stop.

The same document arrives as JSON over HTTP and as YAML through the CLI. Every model forbids
unknown keys, and every cross-field rule raises a ``ValueError`` whose text names the field, so
the API can answer a 422 that tells the user exactly what to fix.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

Scalar = str | int | float | bool | None

# A grid larger than this is refused: enumerating it would never finish in practice.
MAX_GRID_POINTS = 1_000_000
MAX_PARAMS = 64
MAX_CHOICES = 1_000
MAX_PARENT_ASSIGNMENTS = 100_000
# A word of an execution.command, and the number of words.
MAX_ARG_LENGTH = 4_096
MAX_ARGS = 256

_NAME = r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$"
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _Strict(BaseModel):
    # Every number of a definition is finite (Python's JSON parser would accept Infinity).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _ParamBase(_Strict):
    # Activate this parameter only when every named categorical parent takes one of the given
    # values, e.g. ``nesterov`` only ``when: {solver: sgd}``.
    when: dict[str, Scalar | Annotated[list[Scalar], Field(max_length=MAX_CHOICES)]] | None = Field(
        default=None, max_length=MAX_PARAMS
    )

    def when_values(self) -> dict[str, list[Scalar]]:
        if not self.when:
            return {}
        return {k: (list(v) if isinstance(v, list) else [v]) for k, v in self.when.items()}


class FloatParam(_ParamBase):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    # Number of evenly spaced points a grid search uses when the parameter has no step.
    grid_points: int | None = Field(default=None, ge=1, le=MAX_GRID_POINTS)

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not be greater than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low={self.low}")
        if self.log and self.step is not None:
            raise ValueError("step and log cannot be combined")
        width = self.high - self.low
        if not math.isfinite(width):
            raise ValueError("high - low must be a finite number")
        if self.step is not None and width > 0:
            # A relative tolerance: -1.0..-0.9 with step 0.1 is one step, despite float noise.
            if self.step > width * (1 + 1e-9):
                raise ValueError(f"step ({self.step}) is larger than the range high - low")
            if width / self.step > 1e15:
                raise ValueError(f"step ({self.step}) is too small for the range high - low")
        return self

    def grid_size(self) -> int | None:
        if self.step is not None:
            q = (self.high - self.low) / self.step
            return math.floor(q + max(1e-9, q * 1e-12)) + 1
        if self.low == self.high:
            return 1
        return self.grid_points


class IntParam(_ParamBase):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not be greater than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got low={self.low}")
        if self.log and self.step != 1:
            raise ValueError("step and log cannot be combined")
        return self

    def grid_size(self) -> int:
        return (self.high - self.low) // self.step + 1


class CategoricalParam(_ParamBase):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(max_length=MAX_CHOICES)

    @field_validator("choices")
    @classmethod
    def _check_choices(cls, v: list[Scalar]) -> list[Scalar]:
        if not v:
            raise ValueError("choices must not be empty")
        seen: list[Scalar] = []
        for c in v:
            # ``True == 1`` in Python, so compare type and value.
            if any(type(c) is type(s) and c == s for s in seen):
                raise ValueError(f"choices must be unique, {c!r} appears twice")
            if isinstance(c, float) and not math.isfinite(c):
                raise ValueError("choices must be finite")
            if isinstance(c, str) and len(c) > 200:
                raise ValueError("a choice string must be at most 200 characters")
            seen.append(c)
        return v

    def grid_size(self) -> int:
        return len(self.choices)


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


SamplerType = Literal["random", "grid", "sobol", "tpe", "gp", "cmaes", "genetic", "bohb"]

# Which options each sampler reads; any other option given is an error that says so.
SAMPLER_OPTIONS: dict[str, frozenset[str]] = {
    "random": frozenset(),
    "grid": frozenset(),
    "sobol": frozenset(),
    "tpe": frozenset({"n_startup", "gamma", "n_candidates", "constant_liar", "max_history"}),
    "gp": frozenset({"n_startup", "n_candidates", "max_history"}),
    "cmaes": frozenset({"n_startup", "sigma0", "popsize", "restarts"}),
    "genetic": frozenset(
        {
            "population_size",
            "tournament_size",
            "crossover_rate",
            "mutation_rate",
            "mutation_scale",
            "elitism",
        }
    ),
    "bohb": frozenset(
        {
            "n_startup",
            "gamma",
            "n_candidates",
            "random_fraction",
            "bandwidth_factor",
            "min_bandwidth",
        }
    ),
}


class SamplerSpec(_Strict):
    """How new configurations are chosen. Options left out take the sampler's default."""

    type: SamplerType = "random"
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    # Model-based samplers: random configurations before the model is used.
    n_startup: int | None = Field(default=None, ge=1, le=10_000)
    # tpe, bohb: the fraction of observations modelled as "good".
    gamma: float | None = Field(default=None, gt=0, le=0.5)
    # tpe, gp, bohb: candidates scored by the acquisition function per suggestion.
    n_candidates: int | None = Field(default=None, ge=1, le=100_000)
    # tpe: running trials count as bad results, so parallel workers spread out.
    constant_liar: bool | None = None
    # gp: the most recent observations the Gaussian process is fitted on; tpe: the most
    # recent trials outside the good set that its density of bad results is fitted on.
    max_history: int | None = Field(default=None, ge=10, le=5_000)
    # cmaes: initial step size in the unit cube; population size; restart with a doubled
    # population when the search has converged (IPOP).
    sigma0: float | None = Field(default=None, gt=0, le=1)
    popsize: int | None = Field(default=None, ge=2, le=10_000)
    restarts: bool | None = None
    # genetic: see tuneyard.scheduler.samplers.genetic.
    population_size: int | None = Field(default=None, ge=2, le=10_000)
    tournament_size: int | None = Field(default=None, ge=1, le=100)
    crossover_rate: float | None = Field(default=None, ge=0, le=1)
    mutation_rate: float | None = Field(default=None, ge=0, le=1)
    mutation_scale: float | None = Field(default=None, gt=0, le=1)
    elitism: int | None = Field(default=None, ge=0, le=1_000)
    # bohb: share of suggestions drawn at random; KDE bandwidth multiplier and floor.
    random_fraction: float | None = Field(default=None, ge=0, le=1)
    bandwidth_factor: float | None = Field(default=None, gt=0, le=100)
    min_bandwidth: float | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _check_options(self) -> SamplerSpec:
        allowed = SAMPLER_OPTIONS[self.type]
        given = [
            k
            for k in type(self).model_fields
            if k not in ("type", "seed") and getattr(self, k) is not None
        ]
        extra = [k for k in given if k not in allowed]
        if extra:
            takes = ", ".join(sorted(allowed)) or "no options"
            raise ValueError(
                f"{', '.join(extra)}: not an option of the {self.type} sampler (it takes {takes})"
            )
        if (
            self.type == "genetic"
            and self.elitism is not None
            and self.population_size is not None
            and self.elitism >= self.population_size
        ):
            raise ValueError(
                f"elitism ({self.elitism}) must be smaller than population_size "
                f"({self.population_size})"
            )
        return self

    @model_serializer(mode="wrap")
    def _drop_unset_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Only the options a study gave: a stored or returned definition reads as written.
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None or k == "seed"}

    def option(self, name: str, default: Any) -> Any:
        """An option's value, or ``default`` when the study left it out."""
        value = getattr(self, name)
        return default if value is None else value


class SchedulerSpec(_Strict):
    type: Literal["fifo", "median", "sha", "hyperband", "asha"] = "asha"
    min_resource: float = Field(default=1, gt=0)
    max_resource: float = Field(default=27, gt=0)
    reduction_factor: int = Field(default=3, ge=2, le=100)
    # asha: promotion pauses at each rung and resumes promoted trials from a checkpoint;
    # stopping lets a trial run on unless it falls out of the top 1/eta of a rung.
    mode: Literal["promotion", "stopping"] = "promotion"
    # asha: number of asynchronous Hyperband brackets (1 is plain ASHA).
    brackets: int = Field(default=1, ge=1, le=32)
    # sha: configurations started per bracket (default: eta ** (number of rungs - 1)).
    bracket_size: int | None = Field(default=None, ge=1, le=1_000_000)
    # median: trials that must have reached a step before the rule stops anyone there.
    min_trials: int = Field(default=3, ge=1)
    # median: evaluate every `interval` resource units from min_resource on (default min_resource).
    interval: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> SchedulerSpec:
        if self.min_resource > self.max_resource:
            raise ValueError(
                f"min_resource ({self.min_resource}) must not be greater than "
                f"max_resource ({self.max_resource})"
            )
        if self.max_resource / self.min_resource > 1e6:
            raise ValueError("max_resource / min_resource must be at most 1e6")
        if self.mode == "stopping" and self.type not in ("asha",):
            raise ValueError(f"mode 'stopping' applies to asha only, not to {self.type}")
        if self.brackets != 1 and self.type != "asha":
            raise ValueError("brackets applies to asha only (hyperband chooses its own)")
        if self.interval is not None and self.type != "median":
            raise ValueError("interval applies to median only")
        if self.bracket_size is not None and self.type != "sha":
            raise ValueError("bracket_size applies to sha only")
        return self


class LimitsSpec(_Strict):
    max_trials: int = Field(default=100, ge=1, le=10_000_000)
    max_concurrent: int = Field(default=4, ge=1, le=10_000)


class ExecutionSpec(_Strict):
    entrypoint: str | None = Field(default=None, max_length=300)
    command: list[Annotated[str, Field(max_length=MAX_ARG_LENGTH)]] | None = Field(
        default=None, min_length=1, max_length=MAX_ARGS
    )
    queue: str = Field(default="default", pattern=_NAME)
    max_retries: int = Field(default=2, ge=0, le=100)
    timeout: float | None = Field(default=None, gt=0, description="seconds per attempt")

    @field_validator("entrypoint")
    @classmethod
    def _check_entrypoint(cls, v: str | None) -> str | None:
        if v is not None and not _ENTRYPOINT.match(v):
            raise ValueError(f"entrypoint must look like 'package.module:function', got {v!r}")
        return v

    @model_validator(mode="after")
    def _check(self) -> ExecutionSpec:
        if self.entrypoint and self.command:
            raise ValueError("give either entrypoint or command, not both")
        return self


class StudySpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    metric: str = Field(default="value", pattern=_NAME)
    direction: Literal["minimize", "maximize"] = "minimize"
    space: dict[str, Param] = Field(min_length=1, max_length=MAX_PARAMS)
    sampler: SamplerSpec = SamplerSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    limits: LimitsSpec = LimitsSpec()
    execution: ExecutionSpec | None = None

    @field_validator("space")
    @classmethod
    def _check_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not re.match(_NAME, name):
                raise ValueError(
                    f"parameter name {name!r} must start with a letter or '_' and use only "
                    "letters, digits, '_', '.' or '-' (at most 64 characters)"
                )
        return v

    @model_validator(mode="after")
    def _check_space(self) -> StudySpec:
        for name, p in self.space.items():
            for parent, values in p.when_values().items():
                where = f"space.{name}.when.{parent}"
                if parent == name:
                    raise ValueError(f"{where}: a parameter cannot depend on itself")
                if parent not in self.space:
                    raise ValueError(f"{where}: names unknown parameter {parent!r}")
                pp = self.space[parent]
                if not isinstance(pp, CategoricalParam):
                    raise ValueError(
                        f"{where}: {parent!r} is a {pp.type} parameter; "
                        "conditions may only name categorical parameters"
                    )
                for val in values:
                    if not any(type(val) is type(c) and val == c for c in pp.choices):
                        raise ValueError(
                            f"{where}: {val!r} is not one of {parent!r}'s choices {pp.choices}"
                        )
        _topological_order(self.space)  # raises on a cycle
        if self.sampler.type == "grid":
            for name, p in self.space.items():
                if p.grid_size() is None:
                    raise ValueError(
                        f"space.{name}: grid search needs a step or grid_points "
                        "for a continuous float parameter"
                    )
            size = grid_size(self.space)
            if size > MAX_GRID_POINTS:
                raise ValueError(
                    f"sampler: the grid has {float(size):.3g} points, more than the "
                    f"{MAX_GRID_POINTS:,} that can be enumerated; add steps or narrow the space"
                )
        return self


def _topological_order(space: dict[str, Any]) -> list[str]:
    """Parameter names with every condition's parents before the parameters they gate."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, path: tuple[str, ...]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = " -> ".join((*path, n))
            raise ValueError(f"space: conditions form a cycle: {cycle}")
        state[n] = 1
        for parent in space[n].when_values():
            visit(parent, (*path, n))
        state[n] = 2
        order.append(n)

    for n in space:
        visit(n, ())
    return order


def topological_order(space: dict[str, Any]) -> list[str]:
    return _topological_order(space)


def grid_size(space: dict[str, Any]) -> int:
    """Number of distinct configurations a grid over ``space`` enumerates.

    A conditional parameter multiplies the count only in the branches where it is active, so
    the count sums over the assignments of the categorical parents named in conditions. Exact
    (Python integers), except that past ``MAX_PARENT_ASSIGNMENTS`` branches it stops walking and
    returns ``MAX_GRID_POINTS + 1``: such a grid is refused either way.
    """
    order = _topological_order(space)
    parents = [n for n in order if any(n in p.when_values() for p in space.values())]
    visited = 0

    def active(name: str, assign: dict[str, Scalar]) -> bool:
        for parent, values in space[name].when_values().items():
            if parent not in assign:
                return False
            if not any(type(assign[parent]) is type(v) and assign[parent] == v for v in values):
                return False
        return True

    def walk(i: int, assign: dict[str, Scalar]) -> int:
        nonlocal visited
        if i == len(parents):
            visited += 1
            if visited > MAX_PARENT_ASSIGNMENTS:
                raise OverflowError
            n = 1
            for name in order:
                if name not in parents and active(name, assign):
                    n *= space[name].grid_size()
            return n
        name = parents[i]
        if not active(name, assign):
            return walk(i + 1, assign)
        return sum(walk(i + 1, {**assign, name: c}) for c in space[name].choices)

    try:
        return walk(0, {})
    except OverflowError:
        return MAX_GRID_POINTS + 1
