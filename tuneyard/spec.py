"""The study definition: what to tune, how to search, when to stop.

The same document arrives as JSON over HTTP and as YAML through the CLI. Every model forbids
unknown keys, and every cross-field rule raises a ``ValueError`` whose text names the field, so
the API can answer a 422 that tells the user exactly what to fix.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

Scalar = str | int | float | bool | None
_T = TypeVar("_T")
# A categorical value as conditions match it: by type and value, since ``True == 1``.
_Key = tuple[type, Scalar]

# A grid larger than this is refused: enumerating it would never finish in practice.
MAX_GRID_POINTS = 1_000_000
MAX_PARAMS = 64
MAX_CHOICES = 1_000
# Work units (items looked at) that counting or indexing a conditional grid may spend. A grid
# whose conditions cross so often that its count needs more is refused: its cost would not be
# bounded by anything a user sees. Trees of conditions, however large, cost far less.
MAX_GRID_WORK = 50_000
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
        """Each condition parent with the values it admits (the lists themselves: read only)."""
        if not self.when:
            return {}
        return {k: (v if isinstance(v, list) else [v]) for k, v in self.when.items()}


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
        if any(isinstance(c, float) and not math.isfinite(c) for c in v):
            raise ValueError("choices must be finite")
        if any(isinstance(c, str) and len(c) > 200 for c in v):
            raise ValueError("a choice string must be at most 200 characters")
        # ``True == 1`` in Python, so the key is type and value; one set, not a scan per choice.
        if len({(type(c), c) for c in v}) != len(v):
            seen: set[_Key] = set()
            for c in v:
                if (type(c), c) in seen:
                    raise ValueError(f"choices must be unique, {c!r} appears twice")
                seen.add((type(c), c))
        return v

    def choice_index(self) -> dict[_Key, int]:
        """Each choice's position, keyed by (type, value): a set lookup, not a scan."""
        return {(type(c), c): k for k, c in enumerate(self.choices)}

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

    @model_validator(mode="wrap")
    @classmethod
    def _check_once(
        cls, data: Any, handler: ModelWrapValidatorHandler[StudySpec], info: ValidationInfo
    ) -> StudySpec:
        # A definition is checked once, when it is first built. Pydantic would run an "after"
        # validator again on every instance placed in another model (a response) or read
        # back; so the cross-field checks are skipped for an instance (frozen: it cannot have
        # changed) and for a stored definition (checked when its study was created).
        if isinstance(data, StudySpec):
            return data
        spec = handler(data)
        if info.context is not _STORED:
            spec._check_space()
        return spec

    def _check_space(self) -> None:
        """The rules across fields: conditions name categorical parents and their choices,
        form no cycle, and a grid is finite and small enough."""
        choices = {
            n: p.choice_index() for n, p in self.space.items() if isinstance(p, CategoricalParam)
        }
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
                    if (type(val), val) not in choices[parent]:
                        raise ValueError(
                            f"{where}: {val!r} is not one of {parent!r}'s choices "
                            f"{_shorten(pp.choices)}"
                        )
        _topological_order(self.space)  # raises on a cycle
        if self.sampler.type == "grid":
            for name, p in self.space.items():
                if p.grid_size() is None:
                    raise ValueError(
                        f"space.{name}: grid search needs a step or grid_points "
                        "for a continuous float parameter"
                    )
            try:
                size = grid_size(self.space)
            except GridTooComplex as exc:
                raise ValueError(f"sampler: {exc}") from None
            if size > MAX_GRID_POINTS:
                raise ValueError(
                    f"sampler: the grid has {float(size):.3g} points, more than the "
                    f"{MAX_GRID_POINTS:,} that can be enumerated; add steps or narrow the space"
                )

    @classmethod
    def from_stored(cls, data: Any) -> StudySpec:
        """A definition this service stored, validated when its study was created.

        Only the shape is parsed (linear in its size, in pydantic's core): the cross-field
        checks and the count of a grid are not run again, so reading a study costs the same
        whatever its space.
        """
        return cls.model_validate(data, context=_STORED)


# The validation context of a stored definition (compared by identity: a client cannot send it).
_STORED: dict[str, bool] = {"stored": True}


def _shorten(values: list[Scalar], n: int = 10) -> str:
    if len(values) <= n:
        return repr(values)
    return f"[{', '.join(repr(v) for v in values[:n])}, ... ({len(values)} in all)]"


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
        for parent in space[n].when or ():
            visit(parent, (*path, n))
        state[n] = 2
        order.append(n)

    for n in space:
        visit(n, ())
    return order


def topological_order(space: dict[str, Any]) -> list[str]:
    return _topological_order(space)


def grid_size(space: Mapping[str, Any]) -> int:
    """Number of distinct configurations a grid over ``space`` enumerates (exact).

    A conditional parameter multiplies the count only in the branches where it is active, so
    the count sums over the assignments of the categorical parents named in conditions;
    :class:`GridIndex` computes that sum without walking the branches. Raises
    :class:`GridTooComplex` when the conditions cross too often to count within
    ``MAX_GRID_WORK``, and ``ValueError`` for a continuous float parameter.
    """
    return GridIndex(space).size


class GridTooComplex(ValueError):
    """The conditions of a space cross too often for its grid to be counted cheaply."""


def _bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class GridIndex:
    """Counts the points of a grid over a conditional space, and finds the ``i``-th one,
    without enumerating the grid or its branches.

    The grid is ordered as a walk would visit it: by the assignments of the condition parents
    (in topological order, each parent's choices in order, an inactive parent skipped), then,
    inside a branch, as a mixed-radix number over the active parameters whose last one varies
    fastest.

    How it counts. The parameters are bits of a mask, in topological order. A set ``S`` of
    parameters whose conditions on parents outside ``S`` all hold has a count that depends on
    ``S`` alone, so counts are memoised by mask. ``S`` splits into parts that share no
    condition: a parameter without parents in ``S`` and without children is a factor of its
    own size, and every other part is summed over the choices of its first parameter (which is
    a categorical parent). Choices that admit the same children form one class and are counted
    once, times their number. Fixing a parent's class removes it and the children it does not
    admit, with everything below those. A tree of conditions thus costs about its number of
    classes, however many branches it has; conditions that cross (a parameter gated by
    several parents) cost more, and the work is capped at ``budget`` units per call
    (:class:`GridTooComplex` beyond).
    """

    def __init__(self, space: Mapping[str, Any], budget: int = MAX_GRID_WORK) -> None:
        self.names = _topological_order(dict(space))
        self.budget = budget
        at = {name: i for i, name in enumerate(self.names)}
        n = len(self.names)
        self.sizes: list[int] = []
        for name in self.names:
            size = space[name].grid_size()
            if size is None:
                raise ValueError(
                    f"{name}: a grid needs a step or grid_points for a continuous float parameter"
                )
            self.sizes.append(size)
        gates: dict[int, list[tuple[int, set[int]]]] = {}  # per parameter: (parent, admitted)
        indexes: dict[int, dict[_Key, int]] = {}
        for c, name in enumerate(self.names):
            for parent, values in space[name].when_values().items():
                q = at[parent]
                if q not in indexes:
                    indexes[q] = space[parent].choice_index()
                index = indexes[q]
                ks = {index.get((type(v), v), -1) for v in values}
                ks.discard(-1)
                gates.setdefault(c, []).append((q, ks))
        # The condition parents, in the order the grid branches on them.
        self.parents = sorted(indexes)
        # A parameter with one value and no children is a factor 1 wherever it is active:
        # it changes neither the count nor the order, so it is left out of both, and only its
        # activity is decided when a point is decoded. (Grids that are small for all their
        # branches are mostly made of these.)
        self._unit = {c: g for c, g in gates.items() if self.sizes[c] == 1 and c not in indexes}
        self._parents = [0] * n
        self._children = [0] * n
        admits: dict[int, list[tuple[int, set[int]]]] = {q: [] for q in self.parents}
        for c, g in gates.items():
            if c in self._unit:
                continue
            for q, ks in g:
                self._parents[c] |= 1 << q
                self._children[q] |= 1 << c
                admits[q].append((c, ks))
        self._adjacent = [self._parents[i] | self._children[i] for i in range(n)]
        # Everything below a parameter: dropped with it when it is inactive.
        self._below = [0] * n
        for i in reversed(range(n)):
            for c in _bits(self._children[i]):
                self._below[i] |= (1 << c) | self._below[c]
        # Per parent: its classes (the children a choice admits, as a mask; how many choices
        # admit exactly those) and the class of each choice.
        self._classes: dict[int, list[tuple[int, int]]] = {}
        self._class_of: dict[int, list[int]] = {}
        for q, edges in admits.items():
            signature = [0] * self.sizes[q]
            for c, ks in edges:
                for k in ks:
                    signature[k] |= 1 << c
            ids: dict[int, int] = {}
            classes: list[tuple[int, int]] = []
            of: list[int] = []
            for sig in signature:
                if sig not in ids:
                    ids[sig] = len(classes)
                    classes.append((sig, 0))
                k = ids[sig]
                classes[k] = (sig, classes[k][1] + 1)
                of.append(k)
            self._classes[q] = classes
            self._class_of[q] = of
        self._all = (1 << n) - 1
        for c in self._unit:
            self._all &= ~(1 << c)
        self._memo: dict[int, int] = {}
        self._tables: dict[int, tuple[list[int], list[int]]] = {}
        self._cells = 0  # numbers held in _tables
        self._left = 0
        self.size = self._run(lambda: self._count(self._all))

    # -- counting ------------------------------------------------------------------------------
    def _run(self, work: Callable[[], _T]) -> _T:
        # What is memoised is bounded like the work: past it, start afresh.
        if len(self._memo) + self._cells > 8 * self.budget:
            self._memo.clear()
            self._tables.clear()
            self._cells = 0
        self._left = self.budget
        return work()

    def _spend(self, units: int) -> None:
        self._left -= units
        if self._left < 0:
            raise GridTooComplex(
                "the conditions of this grid cross too often to count its points within "
                f"{self.budget:,} steps; gate each parameter by fewer parents, or use another "
                "sampler"
            )

    def _count(self, s: int) -> int:
        """Points of the grid over the parameters ``s`` (their outside conditions hold)."""
        if s == 0:
            return 1
        memo = self._memo.get(s)
        if memo is not None:
            return memo
        self._spend(s.bit_count())
        total, rest = 1, s
        while rest:
            first = (rest & -rest).bit_length() - 1
            part = self._part(first, rest)
            rest &= ~part
            if part == 1 << first:
                total *= self.sizes[first]
                continue
            known = self._memo.get(part)
            if known is None:
                classes = self._classes[first]
                self._spend(len(classes) * (1 + (self._children[first] & part).bit_count()))
                known = sum(m * self._count(self._fix(part, first, sig)) for sig, m in classes)
                self._memo[part] = known
            total *= known
        self._memo[s] = total
        return total

    def _part(self, i: int, s: int) -> int:
        """The parameters of ``s`` linked to ``i`` by conditions."""
        part = frontier = 1 << i
        while frontier:
            near = 0
            for j in _bits(frontier):
                near |= self._adjacent[j]
            frontier = near & s & ~part
            part |= frontier
        return part

    def _fix(self, s: int, q: int, sig: int) -> int:
        """``s`` once parent ``q`` takes a choice admitting the children in ``sig``."""
        rest = s & ~(1 << q)
        for c in _bits(self._children[q] & ~sig & rest):
            rest &= ~((1 << c) | self._below[c])
        return rest

    # -- indexing ------------------------------------------------------------------------------
    def point(self, index: int) -> tuple[dict[int, int], list[tuple[int, int]]]:
        """The ``index``-th point: the choice of each active condition parent, and the grid
        position of each other active parameter (both by topological position)."""
        if not 0 <= index < self.size:
            raise ValueError(f"grid index {index} is outside [0, {self.size})")
        return self._run(lambda: self._point(index))

    def _point(self, index: int) -> tuple[dict[int, int], list[tuple[int, int]]]:
        s = self._all
        chosen: dict[int, int] = {}
        for q in self.parents:
            if not s >> q & 1:
                continue  # inactive in this branch
            starts, masks = self._table(s, q)
            k = bisect.bisect_right(starts, index) - 1
            index -= starts[k]
            chosen[q] = k
            s = masks[self._class_of[q][k]]
        digits: list[tuple[int, int]] = []
        for i in reversed(list(_bits(s))):
            index, d = divmod(index, self.sizes[i])
            digits.append((i, d))
        digits.reverse()
        for c, g in self._unit.items():
            if all(q in chosen and chosen[q] in ks for q, ks in g):
                digits.append((c, 0))
        return chosen, digits

    def _table(self, s: int, q: int) -> tuple[list[int], list[int]]:
        """Where each choice of ``q`` starts among the points of ``s``, and ``s`` after each
        class of choices."""
        table = self._tables.get(s)
        if table is None:
            classes = self._classes[q]
            self._spend(self.sizes[q] + len(classes) * (1 + (self._children[q] & s).bit_count()))
            masks = [self._fix(s, q, sig) for sig, _ in classes]
            counts = [self._count(m) for m in masks]
            starts, at = [], 0
            for k in self._class_of[q]:
                starts.append(at)
                at += counts[k]
            table = self._tables[s] = (starts, masks)
            self._cells += len(starts) + len(masks)
        return table
