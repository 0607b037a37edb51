"""What a sampler offers: a configuration for trial number n, deterministic under its seed."""

from __future__ import annotations

from typing import Any, Protocol


class Sampler(Protocol):
    def suggest(self, number: int) -> dict[str, Any]:
        """The configuration of the trial with this (0-based) number."""
        ...

    def capacity(self) -> int | None:
        """How many distinct configurations it produces; None when unbounded."""
        ...
