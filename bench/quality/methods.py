"""The methods compared: tuneyard's samplers x schedulers, and Optuna's samplers x pruners.

Every multi-fidelity method uses the same ladder: epochs 1, 3, 9, 27 (``min_resource`` 1,
``max_resource`` the objective's max epochs, reduction factor 3).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from tuneyard.spec import SamplerSpec, SchedulerSpec


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    framework: str  # "tuneyard" or "optuna"
    sampler: str
    # tuneyard: a SchedulerSpec type; optuna: a pruner ("none", "hyperband", "sha")
    scheduler: str
    mode: str = "promotion"
    brackets: int = 1
    eta: int = 3
    # tuneyard asha with several brackets: where a new trial goes ("budget" or "round_robin").
    bracket_choice: str = "budget"

    @property
    def multi_fidelity(self) -> bool:
        return self.scheduler not in ("fifo", "none")


SAMPLER_LABELS = {
    "random": "random",
    "tpe": "TPE",
    "gp": "GP",
    "mfgp": "multi-fidelity GP",
    "cmaes": "CMA-ES",
    "genetic": "genetic",
    "bohb": "BOHB",
}
# tuneyard sampler type -> the module that implements it (samplers land one by one).
SAMPLER_MODULES = {
    "random": "random",
    "tpe": "tpe",
    "gp": "gp",
    "mfgp": "mfgp",
    "cmaes": "cma",
    "genetic": "genetic",
    "bohb": "bohb",
}
# name suffix -> (scheduler type, mode, brackets, label)
SCHEDULERS = {
    "fifo": ("fifo", "promotion", 1, "FIFO"),
    "asha-stop": ("asha", "stopping", 1, "ASHA stopping"),
    "asha": ("asha", "promotion", 1, "ASHA promotion"),
    "hb": ("hyperband", "promotion", 1, "Hyperband"),
}


def tuneyard_methods() -> list[Method]:
    out = []
    for sampler in ("random", "tpe", "gp", "mfgp", "cmaes", "genetic"):
        for suffix, (sched, mode, brackets, label) in SCHEDULERS.items():
            out.append(
                Method(
                    name=f"ty-{sampler}-{suffix}",
                    label=f"tuneyard {SAMPLER_LABELS[sampler]} + {label}",
                    framework="tuneyard",
                    sampler=sampler,
                    scheduler=sched,
                    mode=mode,
                    brackets=brackets,
                )
            )
    out.append(Method("ty-bohb-hb", "tuneyard BOHB + Hyperband", "tuneyard", "bohb", "hyperband"))
    out.append(
        Method(
            "ty-bohb-asha4",
            "tuneyard BOHB + ASHA 4 brackets",
            "tuneyard",
            "bohb",
            "asha",
            brackets=4,
        )
    )
    # Asynchronous Hyperband (ASHA, 4 brackets) with the two bracket choices.
    for sampler in ("tpe", "bohb"):
        label = SAMPLER_LABELS[sampler]
        if sampler == "tpe":
            out.append(
                Method(
                    "ty-tpe-asha4",
                    f"tuneyard {label} + ASHA 4 brackets",
                    "tuneyard",
                    sampler,
                    "asha",
                    brackets=4,
                )
            )
        out.append(
            Method(
                f"ty-{sampler}-asha4-rr",
                f"tuneyard {label} + ASHA 4 brackets, round-robin",
                "tuneyard",
                sampler,
                "asha",
                brackets=4,
                bracket_choice="round_robin",
            )
        )
    return out


def optuna_methods() -> list[Method]:
    out = []
    for sampler, slabel in (("random", "Random"), ("tpe", "TPE")):
        for pruner, plabel, suffix in (
            ("none", "no pruning", ""),
            ("hyperband", "HyperbandPruner", "-hb"),
            ("sha", "SuccessiveHalvingPruner", "-sha"),
        ):
            out.append(
                Method(
                    name=f"op-{sampler}{suffix}",
                    label=f"Optuna {slabel}Sampler, {plabel}",
                    framework="optuna",
                    sampler=sampler,
                    scheduler=pruner,
                )
            )
    return out


ALL: dict[str, Method] = {m.name: m for m in tuneyard_methods() + optuna_methods()}
# The reference of the goal: Optuna's TPE with its HyperbandPruner.
REFERENCE = "op-tpe-hb"
QUICK = (
    "ty-random-fifo",
    "ty-random-asha",
    "ty-tpe-fifo",
    "ty-tpe-asha",
    "ty-tpe-hb",
    "ty-bohb-hb",
    "op-random",
    "op-tpe",
    "op-tpe-hb",
)

# The broad suite: a few methods over every objective and worker count.
BROAD = (
    "ty-random-asha",
    "ty-tpe-hb",
    "ty-tpe-asha",
    "ty-gp-asha",
    "ty-mfgp-asha",
    "ty-mfgp-hb",
    "ty-bohb-hb",
    "op-tpe-hb",
    "op-tpe",
    "op-random",
)
BROAD_WORKERS = (1, 4, 16, 64)


def default_method() -> str:
    """The method tuneyard runs when a study names no sampler and no scheduler: the spec's
    default sampler type with its default scheduler (type, mode, brackets, eta)."""
    sampler, sched = SamplerSpec(), SchedulerSpec()
    for m in ALL.values():
        if (m.framework, m.sampler, m.scheduler, m.mode, m.brackets, m.eta) == (
            "tuneyard",
            sampler.type,
            sched.type,
            sched.mode,
            sched.brackets,
            sched.reduction_factor,
        ):
            return m.name
    raise LookupError("the spec's default sampler and scheduler are not among the methods")


def available(method: Method) -> bool:
    """Whether the sampler a tuneyard method needs exists in this checkout yet."""
    if method.framework != "tuneyard":
        return True
    module = f"tuneyard.scheduler.samplers.{SAMPLER_MODULES[method.sampler]}"
    return importlib.util.find_spec(module) is not None
