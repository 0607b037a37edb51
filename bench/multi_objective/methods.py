"""The methods compared, all on the same ladder (epochs 1, 3, 9, 27; reduction factor 3).

tuneyard's are the real samplers and schedulers: MO-ASHA (ASHA in promotion mode whose rungs
rank by non-dominated sorting, ``fronts=True``) with the random, NSGA-II and MOTPE samplers and
each of the two tie-breaks inside a front (crowding distance, ``ranking: nsga2``, the default;
an epsilon-net, ``ranking: epsnet``), and two references without early stopping (FIFO: every
trial trains to the last epoch): random search, and MOTPE, tuneyard's counterpart of Optuna's.
Optuna's multi-objective samplers run without pruning, because its pruners refuse a study with
several objectives: every trial trains to the last epoch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    framework: str  # "tuneyard" or "optuna"
    sampler: str
    # tuneyard: a SchedulerSpec type ("asha" or "fifo"); optuna: "none" (no pruning)
    scheduler: str
    ranking: str = "nsga2"

    @property
    def multi_fidelity(self) -> bool:
        return self.scheduler not in ("fifo", "none")


SAMPLER_LABELS = {"random": "random", "nsga2": "NSGA-II", "motpe": "MOTPE"}


def tuneyard_methods() -> list[Method]:
    out = []
    for sampler in ("random", "nsga2", "motpe"):
        for ranking in ("nsga2", "epsnet"):
            if sampler == "random" and ranking == "epsnet":
                continue  # the tie-break's effect shows with the model-based samplers
            tie = "crowding" if ranking == "nsga2" else "epsilon-net"
            out.append(
                Method(
                    name=f"ty-{sampler}-asha" + ("-eps" if ranking == "epsnet" else ""),
                    label=f"tuneyard {SAMPLER_LABELS[sampler]} + MO-ASHA ({tie})",
                    framework="tuneyard",
                    sampler=sampler,
                    scheduler="asha",
                    ranking=ranking,
                )
            )
    for sampler in ("random", "motpe"):
        out.append(
            Method(
                name=f"ty-{sampler}-fifo",
                label=f"tuneyard {SAMPLER_LABELS[sampler]}, no early stopping",
                framework="tuneyard",
                sampler=sampler,
                scheduler="fifo",
            )
        )
    return out


def optuna_methods() -> list[Method]:
    return [
        Method("op-nsga2", "Optuna NSGAIISampler, no pruning", "optuna", "nsga2", "none"),
        # Optuna's default population is 50, so with a budget of 30 to 100 full trials its
        # NSGA-II breeds at most one generation; 20 is tuneyard's default.
        Method(
            "op-nsga2-p20",
            "Optuna NSGAIISampler (population 20), no pruning",
            "optuna",
            "nsga2-p20",
            "none",
        ),
        Method("op-tpe", "Optuna TPESampler (MOTPE), no pruning", "optuna", "tpe", "none"),
    ]


ALL: dict[str, Method] = {m.name: m for m in tuneyard_methods() + optuna_methods()}
QUICK = ("ty-random-asha", "ty-motpe-asha", "ty-nsga2-asha", "ty-random-fifo", "op-nsga2", "op-tpe")
