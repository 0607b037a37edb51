"""The study definition itself: what to tune (its space), how to search, when to stop, its
limits and what a worker runs. See :mod:`tuneyard.spec`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tuneyard.spec.algorithms import (
    MULTI_OBJECTIVE_SAMPLERS,
    POPULATION_TYPES,
    SamplerSpec,
    SchedulerSpec,
    default_sampler_type,
)
from tuneyard.spec.durations import parse_duration
from tuneyard.spec.evaluation import REPLICATE_NAMES, EvaluationSpec
from tuneyard.spec.grid import GridTooComplex, grid_size
from tuneyard.spec.notifications import NotificationsSpec
from tuneyard.spec.objectives import (
    MAX_CONSTRAINTS,
    MAX_OBJECTIVES,
    ConstraintSpec,
    ObjectiveSpec,
)
from tuneyard.spec.params import (
    MAX_GRID_POINTS,
    MAX_PARAMS,
    CategoricalParam,
    Param,
    Scalar,
    StrictModel,
    topological_order,
)
from tuneyard.spec.warm_start import WarmStartSpec

# A word of an execution.command, and the number of words.
MAX_ARG_LENGTH = 4_096
MAX_ARGS = 256
# The largest budgets a definition may set: a million GPU-hours, a year of wall time.
MAX_GPU_HOURS = 1_000_000.0
MAX_WALL_TIME = 366 * 86_400.0
# The most GPUs one trial may ask for: a trial runs on one host, and no host has more.
MAX_TRIAL_GPUS = 64

_NAME = r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$"
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class LimitsSpec(StrictModel):
    max_trials: int = Field(default=100, ge=1, le=10_000_000)
    max_concurrent: int = Field(default=4, ge=1, le=10_000)
    keep_models: int = Field(
        default=3,
        ge=0,
        le=10_000,
        description="completed trials whose final checkpoint (model) is kept: the best K",
    )
    # Fail fast: when this many trials in a row fail with the same error before any trial
    # has completed or reached a rung, the study stops starting trials (state "failing")
    # until it is resumed. 0 turns it off.
    fail_fast: int = Field(
        default=3,
        ge=0,
        le=10_000,
        description=(
            "trials in a row that fail with the same error, before any trial completed or "
            "reached a rung, after which the study starts no new trial until resumed (0: off)"
        ),
    )
    # No new trial starts once the study's attempts have used this much GPU time (wall time
    # times GPUs, summed over its ended attempts), or once this long has passed since the
    # study was created; running trials finish.
    max_gpu_hours: float | None = Field(default=None, gt=0, le=MAX_GPU_HOURS)
    max_wall_time: float | None = Field(
        default=None, description="seconds, or a duration such as '8h' or '1h30m'"
    )

    @field_validator("max_wall_time", mode="before")
    @classmethod
    def _parse_wall_time(cls, v: Any) -> Any:
        if v is None:
            return None
        seconds = parse_duration(v)
        if seconds > MAX_WALL_TIME:
            raise ValueError(f"at most {MAX_WALL_TIME:,.0f} seconds (a year), got {v!r}")
        return seconds


class ExecutionSpec(StrictModel):
    entrypoint: str | None = Field(default=None, max_length=300)
    command: list[Annotated[str, Field(max_length=MAX_ARG_LENGTH)]] | None = Field(
        default=None, min_length=1, max_length=MAX_ARGS
    )
    queue: str = Field(default="default", pattern=_NAME)
    max_retries: int = Field(default=2, ge=0, le=100)
    timeout: float | None = Field(default=None, gt=0, description="seconds per attempt")
    code: str | None = Field(
        default=None,
        pattern=r"^sha256:[0-9a-f]{64}$",
        description="the study's code: the digest of an archive uploaded with PUT /code/{sha256} "
        "(`tuneyard study create --code DIR`); workers started with --accept-code run the "
        "entrypoint or command from it",
    )
    checkpoint_every: float | None = Field(
        default=None,
        gt=0,
        le=1e9,
        description="upload the objective's latest trial.save() every N resource units, so a "
        "retry resumes from there",
    )
    gpus: int = Field(
        default=1,
        ge=1,
        le=MAX_TRIAL_GPUS,
        description="GPUs each trial gets, all on one host: only a worker slot with at least "
        "this many takes the study's jobs (`tuneyard worker --gpus-per-slot N`); 1 runs on any "
        "slot, a CPU slot included",
    )
    launcher: Literal["torchrun", "none"] | None = Field(
        default=None,
        description="how a command objective is started: 'torchrun' runs it once per GPU "
        "(`python -m torch.distributed.run --standalone --nproc-per-node GPUS --no-python "
        "COMMAND`), 'none' once; by default torchrun when gpus > 1",
    )

    @property
    def ranks(self) -> int | None:
        """How many processes torchrun starts for one trial (one per GPU), or None when the
        objective runs as a single process: an entrypoint, or a command with launcher none."""
        if not self.command or self.launcher == "none":
            return None
        if self.launcher == "torchrun" or self.gpus > 1:
            return self.gpus
        return None

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
        if self.code and not (self.entrypoint or self.command):
            raise ValueError("code: name the entrypoint or the command to run from it")
        if self.checkpoint_every is not None and self.command:
            raise ValueError(
                "checkpoint_every: works with an entrypoint objective (its trial.save() is "
                "uploaded as it trains); a command saves what it leaves in its checkpoint "
                "directory when it pauses or is handed back"
            )
        if self.launcher == "torchrun" and not self.command:
            raise ValueError(
                "launcher: torchrun starts execution.command once per GPU; an entrypoint runs "
                "in the worker's own process (give a command such as [python, train.py], or "
                "leave launcher out)"
            )
        if self.checkpoint_every is not None and self.code:
            raise ValueError(
                "checkpoint_every: not available with shipped code yet (its objective runs in "
                "a process of its own, which uploads its save at a pause, a hand-back or the "
                "end); leave it out, or install the entrypoint on the workers"
            )
        return self


class StudySpec(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    metric: str = Field(default="value", pattern=_NAME)
    direction: Literal["minimize", "maximize"] = "minimize"
    # Several objectives (the first one is also ``metric``/``direction``), and bounds on
    # reported metrics that a feasible trial keeps.
    objectives: list[ObjectiveSpec] | None = Field(
        default=None, min_length=1, max_length=MAX_OBJECTIVES
    )
    constraints: list[ConstraintSpec] = Field(default_factory=list, max_length=MAX_CONSTRAINTS)
    reference_point: list[float] | None = Field(
        default=None,
        max_length=MAX_OBJECTIVES,
        description="per objective, in its own units: the worst value that still counts for "
        "the hypervolume (default: derived from the trials and reported)",
    )
    space: dict[str, Param] = Field(min_length=1, max_length=MAX_PARAMS)
    sampler: SamplerSpec = Field(
        default=SamplerSpec(),
        description="how configurations are chosen; a definition that names no type gets tpe, "
        "or random with a pbt or pb2 scheduler, or motpe with several objectives or "
        "constraints",
    )
    scheduler: SchedulerSpec = SchedulerSpec()
    limits: LimitsSpec = LimitsSpec()
    execution: ExecutionSpec | None = None
    # Each trial evaluated on several folds and/or seeds, their aggregate its value.
    evaluation: EvaluationSpec | None = None
    # A webhook told of a new best trial, a failing study and the study's end.
    notifications: NotificationsSpec | None = None
    # Earlier studies whose observations the model-based sampler starts from.
    warm_start: WarmStartSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _first_objective(cls, data: Any) -> Any:
        # With ``objectives``, ``metric``/``direction`` name the first one: given as well,
        # they must agree with it.
        if not isinstance(data, dict) or not data.get("objectives"):
            return data
        objectives = data["objectives"]
        if not isinstance(objectives, list) or not isinstance(objectives[0], dict | ObjectiveSpec):
            return data  # the field's own validation says what is wrong
        first = objectives[0]
        metric: Any
        direction: Any
        if isinstance(first, ObjectiveSpec):
            metric, direction = first.metric, first.direction
        else:
            metric, direction = first.get("metric"), first.get("direction", "minimize")
        for key, value in (("metric", metric), ("direction", direction)):
            if key in data and data[key] != value:
                raise ValueError(
                    f"{key}: {data[key]!r} disagrees with objectives[0] ({value!r}); "
                    f"with objectives, leave {key} out"
                )
        return {**data, "metric": metric, "direction": direction}

    @model_validator(mode="before")
    @classmethod
    def _default_sampler(cls, data: Any) -> Any:
        # The sampler type a definition leaves out depends on the study (see
        # default_sampler_type), so it is filled in here rather than by the field's default.
        # A stored definition always names its type, so the studies created before a change of
        # the default keep the sampler they were created with.
        if not isinstance(data, dict):
            return data
        sampler = data.get("sampler", {})
        if not isinstance(sampler, dict) or "type" in sampler:
            return data  # named, or the field's own validation says what is wrong
        sched = data.get("scheduler")
        sched_type = sched.get("type") if isinstance(sched, dict) else getattr(sched, "type", None)
        objectives, constraints = data.get("objectives"), data.get("constraints")
        kind = default_sampler_type(
            sched_type if isinstance(sched_type, str) else None,
            objectives=len(objectives) if isinstance(objectives, list) else 1,
            constraints=len(constraints) if isinstance(constraints, list) else 0,
        )
        return {**data, "sampler": {**sampler, "type": kind}}

    @model_validator(mode="before")
    @classmethod
    def _population_trials(cls, data: Any) -> Any:
        # A pbt or pb2 study's trials are its population's members: max_trials follows.
        if not isinstance(data, dict) or not isinstance(data.get("scheduler"), dict):
            return data
        sched = data["scheduler"]
        population = sched.get("population")
        if sched.get("type") not in POPULATION_TYPES or not isinstance(population, int):
            return data
        limits = data.get("limits", {})
        if not isinstance(limits, dict) or "max_trials" in limits:
            return data  # checked against the population below, or the field says what is wrong
        return {**data, "limits": {**limits, "max_trials": population}}

    @property
    def objective_list(self) -> list[ObjectiveSpec]:
        """The objectives, one or several; a single-objective study's is its metric."""
        if self.objectives:
            return list(self.objectives)
        return [ObjectiveSpec(metric=self.metric, direction=self.direction)]

    @property
    def multi_objective(self) -> bool:
        return len(self.objective_list) > 1

    @property
    def ranked_by_fronts(self) -> bool:
        """Whether rungs rank trials by non-dominated sorting (several objectives, or any
        constraint) rather than by one score."""
        return self.multi_objective or bool(self.constraints)

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
        topological_order(self.space)  # raises on a cycle
        self._check_objectives()
        if self.evaluation is not None:
            for name in self.space:
                if name in REPLICATE_NAMES:
                    raise ValueError(
                        f"space.{name}: with evaluation, {name!r} names the replicate a job "
                        f"evaluates (trial.{name}, {{{name}}} in a command); rename the parameter"
                    )
        if self.evaluation is not None and self.ranked_by_fronts:
            # A replicate's vector would need an aggregate per objective and a paired test
            # of vectors; one scalar objective is raced and aggregated.
            raise ValueError(
                "evaluation: folds and seeds apply to a study with one objective and no constraints"
            )
        self._check_population()
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

    def _check_population(self) -> None:
        """Population-based training: one scalar objective, one member per trial, and fixed
        parameters that no mutable one switches on or off."""
        sched = self.scheduler
        fixed = [name for name, p in self.space.items() if not p.mutable]
        if sched.type not in POPULATION_TYPES:
            if fixed:
                raise ValueError(
                    f"space.{fixed[0]}.mutable: applies to a pbt or pb2 scheduler only, "
                    "where parameters change over a trial's life"
                )
            return
        if self.ranked_by_fronts:
            raise ValueError(
                f"scheduler.type: {sched.type} ranks the population by one objective; "
                "a study with several objectives or constraints needs another scheduler"
            )
        if self.evaluation is not None:
            raise ValueError(
                f"evaluation: folds and seeds do not apply to a {sched.type} study (a member "
                "clones one checkpoint, not one per fold)"
            )
        if "max_trials" in self.limits.model_fields_set and (
            self.limits.max_trials != sched.population
        ):
            raise ValueError(
                f"limits.max_trials: a {sched.type} study trains its population "
                f"({sched.population} members) and no other trial; leave max_trials out"
            )
        for name in fixed:
            for parent in self.space[name].when_values():
                if self.space[parent].mutable:
                    raise ValueError(
                        f"space.{name}.mutable: {name!r} is fixed but its condition parent "
                        f"{parent!r} is mutable, and changing {parent!r} could switch "
                        f"{name!r} on or off; make {parent!r} fixed too"
                    )
        if not any(p.mutable for p in self.space.values()):
            raise ValueError(
                "space: every parameter is fixed (mutable: false), so explore could change "
                f"nothing; a {sched.type} study needs at least one mutable parameter"
            )

    def _check_objectives(self) -> None:
        objectives = self.objective_list
        metrics = [o.metric for o in objectives]
        for i, m in enumerate(metrics):
            if m in metrics[:i]:
                raise ValueError(f"objectives[{i}]: {m!r} is already objective {metrics.index(m)}")
        for i, c in enumerate(self.constraints):
            if c.metric in metrics:
                raise ValueError(
                    f"constraints[{i}]: {c.metric!r} is an objective; bound another metric"
                )
        if self.reference_point is not None and len(self.reference_point) != len(objectives):
            raise ValueError(
                f"reference_point: {len(self.reference_point)} values for "
                f"{len(objectives)} objectives"
            )
        multi = len(objectives) > 1
        if multi and self.sampler.type not in MULTI_OBJECTIVE_SAMPLERS:
            raise ValueError(
                f"sampler.type: {self.sampler.type} optimises one objective; with several use "
                f"one of {', '.join(sorted(MULTI_OBJECTIVE_SAMPLERS))}"
            )
        sched = self.scheduler
        weights = sched.scalarization.weights if sched.scalarization else None
        if multi and sched.type == "median" and weights is None:
            raise ValueError(
                "scheduler.scalarization: the median rule compares one number per trial; give "
                "scalarization: {weights: [...]} (one weight per objective) or use asha, sha "
                "or hyperband, which rank rungs by non-dominated sorting"
            )
        if self.constraints and sched.type == "median":
            raise ValueError(
                "constraints: the median rule compares one number per trial and cannot weigh "
                "constraints; use asha, sha or hyperband, which rank rungs by constraint-"
                "dominance"
            )
        if weights is not None and sched.type != "median":
            raise ValueError("scheduler.scalarization applies to median only")
        if weights is not None and len(weights) != len(objectives):
            raise ValueError(
                f"scheduler.scalarization.weights: {len(weights)} weights for "
                f"{len(objectives)} objectives"
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
