"""How a study searches and when it stops early: its sampler and its scheduler, with the
options each one takes. See :mod:`tuneyard.spec`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from tuneyard.spec.objectives import RankingMethod, ScalarizationSpec
from tuneyard.spec.params import StrictModel
from tuneyard.spec.pbt import MAX_POPULATION, ExploreSpec, PBTSpec

# The schedulers that train a population (parameters change over a trial's life).
POPULATION_TYPES = ("pbt", "pb2")

SamplerType = Literal[
    "random", "grid", "sobol", "tpe", "gp", "mfgp", "cmaes", "genetic", "bohb", "nsga2", "motpe"
]
# The samplers a study with several objectives may name: tpe runs as MOTPE, gp as ParEGO. nsga2
# and motpe also run a single-objective study (a genetic algorithm and TPE, constraints
# included); see tuneyard.scheduler.samplers.registry.
MULTI_OBJECTIVE_SAMPLERS: frozenset[str] = frozenset(
    {"random", "grid", "sobol", "tpe", "gp", "nsga2", "motpe"}
)

# What a study that names no sampler type searches with (see default_sampler_type): TPE, chosen
# on the held-in half of bench/quality's broad suite (bench/quality/README.md, "Defaults from
# the held-in half"): with ASHA promotion, the default scheduler, it has the best mean rank there
# over 1, 4 and 16 workers (tied with TPE + Hyperband, ahead of it at 16).
DEFAULT_SAMPLER: SamplerType = "tpe"


def default_sampler_type(
    scheduler_type: str | None, objectives: int = 1, constraints: int = 0
) -> SamplerType:
    """The sampler type of a study that names none: TPE, except where it does not fit.

    - A pbt or pb2 study: ``random``, as the PBT paper starts its population. The members
      are drawn as the study starts, and their parameters change as they train, so no result
      belongs to the one configuration a model would learn it for.
    - A study with several objectives or with constraints: ``motpe``, TPE whose good trials
      are chosen by non-dominated sorting with infeasible trials after feasible ones (with
      several objectives ``tpe`` runs as MOTPE anyway; with one objective and constraints
      plain TPE would ignore the constraints).
    """
    if scheduler_type in POPULATION_TYPES:
        return "random"
    if objectives > 1 or constraints > 0:
        return "motpe"
    return DEFAULT_SAMPLER


# Which options each sampler reads; any other option given is an error that says so.
SAMPLER_OPTIONS: dict[str, frozenset[str]] = {
    "random": frozenset(),
    "grid": frozenset(),
    "sobol": frozenset(),
    "tpe": frozenset({"n_startup", "gamma", "n_candidates", "constant_liar", "max_history"}),
    "gp": frozenset({"n_startup", "n_candidates", "max_history"}),
    "mfgp": frozenset({"n_startup", "n_candidates", "max_history"}),
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
    "nsga2": frozenset(
        {"population_size", "tournament_size", "crossover_rate", "mutation_rate", "mutation_scale"}
    ),
    "motpe": frozenset({"n_startup", "gamma", "n_candidates", "constant_liar", "max_history"}),
}


class SamplerSpec(StrictModel):
    """How new configurations are chosen. Options left out take the sampler's default; a
    study that leaves out the type gets :func:`default_sampler_type`'s."""

    type: SamplerType = DEFAULT_SAMPLER
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    # Model-based samplers: random configurations before the model is used.
    n_startup: int | None = Field(default=None, ge=1, le=10_000)
    # tpe, motpe, bohb: the fraction of observations modelled as "good".
    gamma: float | None = Field(default=None, gt=0, le=0.5)
    # tpe, motpe, gp, mfgp, bohb: candidates scored by the acquisition function per suggestion.
    n_candidates: int | None = Field(default=None, ge=1, le=100_000)
    # tpe, motpe: running trials count as bad results, so parallel workers spread out.
    constant_liar: bool | None = None
    # gp, mfgp: the most recent trials the Gaussian process is fitted on; tpe: the most
    # recent trials outside the good set that its density of bad results is fitted on.
    max_history: int | None = Field(default=None, ge=10, le=5_000)
    # cmaes: initial step size in the unit cube; population size; restart with a doubled
    # population when the search has converged (IPOP).
    sigma0: float | None = Field(default=None, gt=0, le=1)
    popsize: int | None = Field(default=None, ge=2, le=10_000)
    restarts: bool | None = None
    # genetic, nsga2: see tuneyard.scheduler.samplers.genetic and .nsga2 (no elitism option:
    # NSGA-II's survival keeps the best).
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


class SchedulerSpec(StrictModel):
    type: Literal["fifo", "median", "sha", "hyperband", "asha", "pbt", "pb2"] = "asha"
    min_resource: float = Field(default=1, gt=0)
    max_resource: float = Field(default=27, gt=0)
    reduction_factor: int = Field(default=3, ge=2, le=100)
    # asha: promotion pauses at each rung and resumes promoted trials from a checkpoint;
    # stopping lets a trial run on unless it falls out of the top 1/eta of a rung.
    mode: Literal["promotion", "stopping"] = "promotion"
    # asha: number of asynchronous Hyperband brackets (1 is plain ASHA).
    brackets: int = Field(default=1, ge=1, le=32)
    # asha with several brackets, promotion mode: where a new trial goes. budget: to the
    # bracket that has committed the least resource, counting what its running jobs will
    # still train (Hyperband's equal budget per bracket, kept with busy workers in mind);
    # round_robin: by trial number.
    bracket_choice: Literal["budget", "round_robin"] = "budget"
    # sha: configurations started per bracket (default: eta ** (number of rungs - 1)).
    bracket_size: int | None = Field(default=None, ge=1, le=1_000_000)
    # median: trials that must have reached a step before the rule stops anyone there.
    min_trials: int = Field(default=3, ge=1)
    # median: evaluate every `interval` resource units from min_resource on (default min_resource).
    # pbt, pb2: every `interval` resource units a member pauses for the exploit-or-keep step.
    interval: float | None = Field(default=None, gt=0)
    # pbt, pb2: the members trained side by side (the study's trials), the fraction of them that
    # exploits (the bottom) and donates (the top), and how an exploiting member explores.
    population: int | None = Field(default=None, ge=2, le=MAX_POPULATION)
    quantile: float | None = Field(default=None, gt=0.0, le=0.5)
    explore: ExploreSpec | None = None
    # Several objectives or constraints: how a front is ordered inside (sha, hyperband, asha).
    ranking: RankingMethod = "nsga2"
    # median with several objectives: the weighted sum it compares.
    scalarization: ScalarizationSpec | None = None

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
        if self.bracket_choice != "budget" and self.type != "asha":
            raise ValueError("bracket_choice applies to asha only (hyperband opens its own)")
        population = self.type in POPULATION_TYPES
        if self.interval is not None and self.type != "median" and not population:
            raise ValueError("interval applies to median, pbt and pb2 only")
        for name in ("population", "quantile", "explore"):
            if getattr(self, name) is not None and not population:
                raise ValueError(f"{name} applies to pbt and pb2 only")
        if population:
            for name in ("population", "interval"):
                if getattr(self, name) is None:
                    raise ValueError(f"{name}: a {self.type} scheduler needs it")
            self.population_spec()  # its own checks (interval below max_resource)
        if self.bracket_size is not None and self.type != "sha":
            raise ValueError("bracket_size applies to sha only")
        return self

    def population_spec(self) -> PBTSpec:
        """A pbt or pb2 scheduler's population definition (the exploit-and-explore rule's)."""
        if self.type not in POPULATION_TYPES or self.population is None or self.interval is None:
            raise ValueError(f"a {self.type} scheduler trains no population")
        try:
            return PBTSpec(
                type="pb2" if self.type == "pb2" else "pbt",
                population=self.population,
                interval=self.interval,
                max_resource=self.max_resource,
                quantile=0.25 if self.quantile is None else self.quantile,
                explore=ExploreSpec() if self.explore is None else self.explore,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(str(first["msg"]).removeprefix("Value error, ")) from None
