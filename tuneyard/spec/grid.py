"""The grid over a conditional search space: its size and its ``i``-th point, found without
enumerating the grid or its branches (:class:`GridIndex`). See :mod:`tuneyard.spec`.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from tuneyard.spec.params import ChoiceKey, topological_order

_T = TypeVar("_T")

# Work units (items looked at) that counting or indexing a conditional grid may spend. A grid
# whose conditions cross so often that its count needs more is refused: its cost would not be
# bounded by anything a user sees. Trees of conditions, however large, cost far less.
MAX_GRID_WORK = 50_000


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
        self.names = topological_order(dict(space))
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
        indexes: dict[int, dict[ChoiceKey, int]] = {}
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
