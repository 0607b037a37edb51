"""Sampler type name → constructor ``(space, seed, spec)``, for one objective and for several.

Model-based samplers are imported when first used, so a study of random search never loads
scipy's optimisers or the cmaes package.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from tuneyard.scheduler.samplers.grid import GridSampler
from tuneyard.scheduler.samplers.random import RandomSampler
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import SamplerSpec

Factory = Callable[[SearchSpace, int, SamplerSpec], Any]


def _lazy(module: str, cls: str) -> Factory:
    def make(space: SearchSpace, seed: int, spec: SamplerSpec) -> Any:
        return getattr(importlib.import_module(module), cls)(space, seed, spec)

    return make


_PKG = "tuneyard.scheduler.samplers"
SAMPLERS: dict[str, Factory] = {
    "random": lambda space, seed, spec: RandomSampler(space, seed),
    "grid": lambda space, seed, spec: GridSampler(space, seed),
    "sobol": _lazy(f"{_PKG}.sobol", "SobolSampler"),
    "tpe": _lazy(f"{_PKG}.tpe", "TPESampler"),
    "gp": _lazy(f"{_PKG}.gp", "GPSampler"),
    "mfgp": _lazy(f"{_PKG}.mfgp", "MultiFidelityGPSampler"),
    "cmaes": _lazy(f"{_PKG}.cma", "CMASampler"),
    "genetic": _lazy(f"{_PKG}.genetic", "GeneticSampler"),
    "bohb": _lazy(f"{_PKG}.bohb", "BOHBSampler"),
    # Multi-objective samplers; with one objective they reduce to a genetic algorithm and to
    # TPE, constraints included (see their modules).
    "nsga2": _lazy(f"{_PKG}.nsga2", "NSGA2Sampler"),
    "motpe": _lazy(f"{_PKG}.motpe", "MOTPESampler"),
}

# With two or more objectives: the sampler each type names. ``tpe`` becomes MOTPE and ``gp``
# ParEGO (random scalarizations); random, grid and sobol ignore scores anyway. The others
# optimise one number and have no entry.
MULTI_OBJECTIVE: dict[str, Factory] = {
    "random": SAMPLERS["random"],
    "grid": SAMPLERS["grid"],
    "sobol": SAMPLERS["sobol"],
    "nsga2": SAMPLERS["nsga2"],
    "motpe": SAMPLERS["motpe"],
    "tpe": SAMPLERS["motpe"],
    "gp": _lazy(f"{_PKG}.parego", "ParEGOSampler"),
}
