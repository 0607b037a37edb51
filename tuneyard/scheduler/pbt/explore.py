"""PBT's explore step: resample or perturb a donor's mutable parameters, inside the space.

Jaderberg et al., "Population Based Training of Neural Networks", 2017,
https://arxiv.org/abs/1711.09846, section 3 ("explore": perturb by a factor of 0.8 or 1.2, or
resample from the prior). For each mutable parameter active in the donor's configuration:

- with probability ``resample_probability`` it is drawn afresh from the space (as a new trial's
  value would be, log scale and steps included);
- else it is perturbed: a float or int is multiplied by one of the two ``perturb`` factors
  (drawn with equal odds), clipped into ``[low, high]`` and snapped to its step. An int always
  moves by at least one step in the factor's direction, since 2 x 1.2 would round back to 2
  and a small int could never move. A value of 0 cannot be scaled: it moves by
  ``(factor - 1)`` times the range's width instead. A categorical moves to the neighbouring
  choice (down for the smaller factor, up for the larger; at either end, to the only
  neighbour), in the order the choices were written, which for choices like
  ``[32, 64, 128]`` is the order that matters.

Parameters that a changed categorical parent activates are drawn from the space; those it
deactivates are dropped. Fixed (non-mutable) parameters keep their value: the rule only
clones donors that share them, and :func:`check_mutable` refuses a fixed parameter gated by a
mutable parent, whose presence could otherwise change.

Randomness only from the generator passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import CategoricalParam, IntParam
from tuneyard.spec.pbt import ExploreSpec

How = Literal["perturbed", "resampled", "chosen", "activated"]


@dataclass(frozen=True)
class Change:
    """One parameter that explore changed: ``old`` is None for a newly activated parameter,
    ``new`` None for one a changed parent deactivated."""

    name: str
    old: Any
    new: Any
    how: How


def check_mutable(space: SearchSpace, mutable: Collection[str] | None) -> frozenset[str]:
    """The mutable names (all of the space's when None), checked against the space."""
    if mutable is None:
        return frozenset(space.names)
    names = frozenset(mutable)
    unknown = sorted(n for n in names if n not in space.params)
    if unknown:
        raise ValueError(f"mutable: {', '.join(map(repr, unknown))} not a parameter of the space")
    for name, p in space.params.items():
        if name in names:
            continue
        for parent in p.when_values():
            if parent in names:
                raise ValueError(
                    f"mutable: {name!r} is fixed but its condition parent {parent!r} is mutable; "
                    f"changing {parent!r} could switch {name!r} on or off"
                )
    return names


class ParamMover:
    """Per-parameter draws and moves within the space, through its public interface only."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        # A one-parameter space per parameter, condition removed: it samples and validates
        # that parameter alone, with the space's own rules for log scales and steps.
        self._single = {
            n: SearchSpace({n: p.model_copy(update={"when": None})})
            for n, p in space.params.items()
        }

    def sample(self, name: str, rng: np.random.Generator) -> Any:
        return self._single[name].sample(rng)[name]

    def encode(self, name: str, value: Any) -> float:
        """The value's position in [0, 1], as the space's unit cube encodes it."""
        return float(self._single[name].to_unit({name: value}, check=False)[0])

    def decode(self, name: str, u: float) -> Any:
        return self._single[name].from_unit(np.array([u]))[name]

    def snap(self, name: str, x: float) -> Any:
        """A number clipped into the parameter's range and put on its step (ints rounded)."""
        p = self.space.params[name]
        if isinstance(p, CategoricalParam):
            raise ValueError(f"{name}: a categorical has no numeric snap")
        x = min(float(p.high), max(float(p.low), x))
        if isinstance(p, IntParam):
            k = round((x - p.low) / p.step)
            k = min((p.high - p.low) // p.step, max(0, k))
            return self._single[name].validate({name: p.low + k * p.step})[name]
        count = p.grid_size() if p.step is not None else None
        if p.step is not None and count is not None:
            k = min(count - 1, max(0, round((x - p.low) / p.step)))
            return self._single[name].validate({name: p.low + k * p.step})[name]
        return self._single[name].validate({name: x})[name]

    def perturb(self, name: str, value: Any, factor: float, up: bool) -> Any:
        """``value`` scaled by ``factor`` (``up``: the larger one), kept in the space."""
        p = self.space.params[name]
        if isinstance(p, CategoricalParam):
            k = p.choice_index()[(type(value), value)]
            n = len(p.choices)
            if n == 1:
                return value
            step = 1 if up else -1
            if not 0 <= k + step < n:
                step = -step
            return p.choices[k + step]
        x = float(value)
        scaled = x * factor if x != 0 else (factor - 1.0) * (float(p.high) - float(p.low))
        if not math.isfinite(scaled):
            scaled = float(p.high) if up else float(p.low)
        new = self.snap(name, scaled)
        if isinstance(p, IntParam) and new == value:
            # Rounding undid the move: go one step in the factor's direction (if there is room).
            new = self.snap(name, x + (p.step if up else -p.step))
        return new


Move = Callable[[str, Any], "tuple[Any, How] | None"]


def explore_pass(
    space: SearchSpace,
    mover: ParamMover,
    params: Mapping[str, Any],
    mutable: frozenset[str],
    move: Move,
    rng: np.random.Generator,
) -> tuple[dict[str, Any], list[Change]]:
    """``params`` with each mutable active parameter passed through ``move`` (None: kept), in
    ``names`` order so parents are decided before their children; parameters a changed parent
    activates are drawn from the space, those it deactivates dropped. Returns the validated
    configuration and what changed."""
    out: dict[str, Any] = {}
    changes: list[Change] = []
    for name in space.names:
        if not space.is_active(name, out):
            continue
        if name not in params:
            out[name] = mover.sample(name, rng)
            changes.append(Change(name, None, out[name], "activated"))
            continue
        old = out[name] = params[name]
        if name not in mutable:
            continue
        moved = move(name, old)
        if moved is not None and not _same(moved[0], old):
            out[name] = moved[0]
            changes.append(Change(name, old, moved[0], moved[1]))
    for name in params:
        if name not in out:
            changes.append(Change(name, params[name], None, "activated"))
    return space.validate(out), changes


def perturb_explore(
    space: SearchSpace,
    mover: ParamMover,
    params: Mapping[str, Any],
    mutable: frozenset[str],
    explore: ExploreSpec,
    rng: np.random.Generator,
) -> tuple[dict[str, Any], list[Change]]:
    """PBT's explore of ``params``: the new configuration and what changed, in order."""
    low, high = explore.perturb

    def move(name: str, old: Any) -> tuple[Any, How]:
        if rng.random() < explore.resample_probability:
            return mover.sample(name, rng), "resampled"
        up = bool(rng.random() < 0.5)
        return mover.perturb(name, old, high if up else low, up), "perturbed"

    return explore_pass(space, mover, params, mutable, move, rng)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b
