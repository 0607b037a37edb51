"""One ``suggest_*`` call as a parameter of a study definition's space, and the checks that
compare it with the space a study actually has.

Optuna's trial asks for each parameter inside the objective (``trial.suggest_float("lr", 1e-5,
1e-1, log=True)``); tuneyard's definition names them up front (``lr: {type: float, low: 1e-5,
high: 0.1, log: true}``). Both say the same thing, so one call maps to one spec parameter and
back, and a disagreement between the two can be put in words naming both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tuneyard.spec import CategoricalParam, FloatParam, IntParam, Param, Scalar

AnyParam = FloatParam | IntParam | CategoricalParam
_PARAM: TypeAdapter[AnyParam] = TypeAdapter(Param)
# How far outside its range a float the study gave may lie before it is a disagreement: the
# values travel through JSON and a log transform, so the last bits may differ.
_REL_TOL = 1e-9


class SpaceMismatch(ValueError):
    """A ``suggest_*`` call and the study's space disagree about one parameter."""


def float_param(name: str, low: float, high: float, step: float | None, log: bool) -> FloatParam:
    spec: dict[str, Any] = {"type": "float", "low": float(low), "high": float(high)}
    if log:
        spec["log"] = True
    if step is not None:
        spec["step"] = float(step)
    return _checked(name, spec, f"suggest_float({name!r}, {low!r}, {high!r})")  # type: ignore[return-value]


def int_param(name: str, low: int, high: int, step: int, log: bool) -> IntParam:
    for what, v in (("low", low), ("high", high), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpaceMismatch(f"{name}: suggest_int's {what} must be an int, got {v!r}")
    spec: dict[str, Any] = {"type": "int", "low": low, "high": high}
    if log:
        spec["log"] = True
    if step != 1:
        spec["step"] = step
    return _checked(name, spec, f"suggest_int({name!r}, {low!r}, {high!r})")  # type: ignore[return-value]


def categorical_param(name: str, choices: Sequence[Any]) -> CategoricalParam:
    if isinstance(choices, str | bytes) or not isinstance(choices, Sequence):
        raise SpaceMismatch(f"{name}: suggest_categorical needs a list of choices, got {choices!r}")
    odd = [c for c in choices if c is not None and not isinstance(c, str | int | float | bool)]
    if odd:
        raise SpaceMismatch(
            f"{name}: a choice must be None, a bool, an int, a float or a str (as in Optuna), "
            f"got {odd[0]!r}"
        )
    spec = {"type": "categorical", "choices": list(choices)}
    return _checked(name, spec, f"suggest_categorical({name!r}, ...)")  # type: ignore[return-value]


def _checked(name: str, spec: dict[str, Any], call: str) -> AnyParam:
    try:
        return _PARAM.validate_python(spec)
    except ValidationError as exc:
        reasons = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise SpaceMismatch(f"{name}: {call} is not a valid parameter: {reasons}") from None


def as_param(name: str, spec: Any) -> AnyParam:
    """A parameter of a definition's space, given as a model or as its dict."""
    if isinstance(spec, FloatParam | IntParam | CategoricalParam):
        return spec
    if not isinstance(spec, Mapping):
        raise TypeError(f"space.{name}: expected a parameter mapping, got {type(spec).__name__}")
    return _checked(name, dict(spec), f"space.{name}")


def describe(p: AnyParam) -> str:
    """A parameter in a few words: ``float 1e-05..0.1 (log)``, ``categorical ['a', 'b']``."""
    if isinstance(p, CategoricalParam):
        return f"categorical {p.choices!r}"
    extras = []
    if p.log:
        extras.append("log")
    if isinstance(p, FloatParam) and p.step is not None:
        extras.append(f"step {p.step:g}")
    if isinstance(p, IntParam) and p.step != 1:
        extras.append(f"step {p.step}")
    tail = f" ({', '.join(extras)})" if extras else ""
    return f"{p.type} {p.low:g}..{p.high:g}{tail}"


def _choice_keys(choices: Sequence[Scalar]) -> list[tuple[type, Scalar]]:
    # ``True == 1`` in Python: a choice is its type and its value.
    return [(type(c), c) for c in choices]


def same_param(a: AnyParam, b: AnyParam) -> bool:
    """Whether two parameters describe the same values (conditions and grid hints aside)."""
    if a.type != b.type:
        return False
    if isinstance(a, CategoricalParam) and isinstance(b, CategoricalParam):
        return _choice_keys(a.choices) == _choice_keys(b.choices)
    assert isinstance(a, FloatParam | IntParam) and isinstance(b, FloatParam | IntParam)
    return (a.low, a.high, a.log, a.step) == (b.low, b.high, b.log, b.step)


def check_against_space(name: str, suggested: AnyParam, space: Mapping[str, AnyParam]) -> None:
    """Raise :class:`SpaceMismatch` when the study's space lacks ``name`` or gives it other
    values than the objective's suggest call."""
    if name not in space:
        known = ", ".join(space) or "none"
        raise SpaceMismatch(
            f"{name}: the objective suggests {describe(suggested)}, but the study's space has "
            f"no parameter {name!r} (it has {known})"
        )
    declared = space[name]
    if not same_param(declared, suggested):
        raise SpaceMismatch(
            f"{name}: the study's space has {describe(declared)}, but the objective suggests "
            f"{describe(suggested)}; make them agree (space_from(objective) derives the space "
            "from the objective's suggest calls)"
        )


def value_for(name: str, suggested: AnyParam, params: Mapping[str, Any]) -> Any:
    """The value the study gave ``name``, as the suggest call would return it; a
    :class:`SpaceMismatch` when the study gave none or one the call could not return."""
    if name not in params:
        given = ", ".join(sorted(params)) or "none"
        raise SpaceMismatch(
            f"{name}: the objective suggests {describe(suggested)}, but the study gave this "
            f"trial no {name!r} (it gave {given}): the parameter is missing from the study's "
            "space, or a `when` condition leaves it inactive where the objective asks for it"
        )
    value = params[name]
    if isinstance(suggested, CategoricalParam):
        if (type(value), value) not in set(_choice_keys(suggested.choices)):
            raise SpaceMismatch(
                f"{name}: the study gave {value!r}, which is not one of the objective's "
                f"choices {suggested.choices!r}"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpaceMismatch(
            f"{name}: the study gave {value!r}, not a number for the objective's "
            f"{describe(suggested)}"
        )
    tol = _REL_TOL * max(1.0, abs(suggested.low), abs(suggested.high))
    if not suggested.low - tol <= value <= suggested.high + tol:
        raise SpaceMismatch(
            f"{name}: the study gave {value!r}, outside the objective's "
            f"{describe(suggested)}; the study's space and the objective disagree"
        )
    if isinstance(suggested, IntParam):
        if float(value) != int(value):
            raise SpaceMismatch(
                f"{name}: the study gave {value!r}, not an integer for the objective's "
                f"{describe(suggested)}"
            )
        return int(value)
    return min(max(float(value), suggested.low), suggested.high)
