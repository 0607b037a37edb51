"""Durations in a study definition: seconds as a number, or a string such as ``"90m"``,
``"1h30m"``, ``"2d"`` or ``"45s"`` (units d, h, m, s, each at most once and in that order)."""

from __future__ import annotations

import math
import re

_UNITS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}
_PART = r"(?:(\d+(?:\.\d+)?){unit})?"
_DURATION = re.compile(
    r"^\s*" + "".join(_PART.format(unit=u) for u in _UNITS) + r"\s*$", re.IGNORECASE
)


def parse_duration(value: object) -> float:
    """Seconds of ``value``: a number of seconds, or a string of numbers each with a unit
    (``"1h30m"``). Raises ``ValueError`` saying what is accepted."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as '8h' or '1h30m'")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)  # "3600": seconds, as a number would be
        except ValueError:
            m = _DURATION.match(text)
            if m is None or not any(m.groups()):
                raise ValueError(
                    f"{value!r} is not a duration: give seconds, or numbers with units "
                    "d, h, m, s in that order, e.g. '8h', '1h30m', '2d', '45s'"
                ) from None
            pairs = zip(m.groups(), _UNITS.values(), strict=True)
            seconds = sum(float(n) * size for n, size in pairs if n)
    else:
        raise ValueError("a duration is a number of seconds or a string such as '8h' or '1h30m'")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be more than 0 seconds, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``5400`` -> ``"1h30m"``; under a minute, seconds with one decimal at most."""
    if seconds < 60:
        return f"{seconds:.1f}".rstrip("0").rstrip(".") + "s"
    whole = round(seconds)
    parts = []
    for unit, size in _UNITS.items():
        n, whole = divmod(whole, int(size))
        if n:
            parts.append(f"{n}{unit}")
    return "".join(parts)
