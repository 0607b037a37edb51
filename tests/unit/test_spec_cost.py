"""Checking a study definition costs a bounded amount of CPU, whatever is sent within the limits.

A 4 KB definition (17 binary categoricals gating 47 ints, grid sampler) once took seconds of
CPU to refuse, because the grid was counted by walking every assignment of the condition
parents. The grid is now counted by :class:`tuneyard.spec.GridIndex` without that walk, its
work capped at ``MAX_GRID_WORK``, and everything else a definition costs is linear in its size,
which the API caps at ``MAX_STUDY_BYTES``. These tests build the worst definitions we know
within those limits and measure the CPU time (``time.process_time``, not wall time) that
checking each costs, with a wide margin: the bound is 0.1 s, the cost a few tens of ms.

They also check the count and the order of the grid against a brute-force walk, since the
count and the decoding no longer walk.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.spaces import gated_ints
from tuneyard.api.limits import MAX_STUDY_BYTES
from tuneyard.scheduler.samplers.grid import GridSampler
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import (
    MAX_CHOICES,
    MAX_GRID_POINTS,
    MAX_PARAMS,
    CategoricalParam,
    GridIndex,
    GridTooComplex,
    IntParam,
    Param,
    Scalar,
    StudySpec,
    grid_size,
    topological_order,
)

CPU_BOUND = 0.1  # seconds of CPU for checking one definition


def cpu(work: Callable[[], object]) -> float:
    """The least CPU time of three runs of ``work`` (the least is the one least disturbed by
    whatever else the machine does); ``work`` may raise."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        with contextlib.suppress(ValueError, ValidationError):
            work()
        best = min(best, time.process_time() - start)
    return best


def body(spec: dict[str, Any]) -> str:
    text = json.dumps(spec, separators=(",", ":"))
    assert len(text.encode()) <= MAX_STUDY_BYTES, len(text)
    return text


def reported(text: str) -> str:
    with pytest.raises(ValidationError) as exc:
        StudySpec.model_validate_json(text)
    return str(exc.value)


# -- the definitions ---------------------------------------------------------------------------


def crossing(seed: int, parents: int, choices: int, share: float) -> dict:
    """As much condition text as fits the size limit, on crossing conditions: every child is
    gated by three parents of many choices, each admitting a share of them."""
    rng = random.Random(seed)
    space: dict[str, Any] = {
        f"p{i}": {"type": "categorical", "choices": list(range(choices))} for i in range(parents)
    }
    spec = {"name": "crossing", "space": space, "sampler": {"type": "grid"}}
    for j in range(MAX_PARAMS - parents):
        space[f"c{j}"] = {
            "type": "int",
            "low": 0,
            "high": 1,
            "when": {
                f"p{q}": rng.sample(range(choices), int(choices * share))
                for q in rng.sample(range(parents), 3)
            },
        }
        if len(json.dumps(spec, separators=(",", ":"))) > MAX_STUDY_BYTES:
            del space[f"c{j}"]
            break
    return spec


def many_choices() -> dict:
    """Categoricals of MAX_CHOICES choices, as many as fit the size limit."""
    space: dict[str, Any] = {}
    spec = {"name": "choices", "space": space}
    for i in range(MAX_PARAMS):
        space[f"p{i}"] = {"type": "categorical", "choices": list(range(MAX_CHOICES))}
        if len(json.dumps(spec, separators=(",", ":"))) > MAX_STUDY_BYTES:
            del space[f"p{i}"]
            break
    return spec


def wide_tree() -> dict:
    """Conditions that form a tree with far more branches than a walk could visit: 21
    binaries, each gating two ints of two values (2**21 branches, 5**21 points). The grid is
    counted exactly, and refused for its size."""
    space: dict[str, Any] = {}
    for i in range(21):
        space[f"b{i}"] = {"type": "categorical", "choices": ["on", "off"]}
        for j in range(2):
            space[f"x{i}_{j}"] = {"type": "int", "low": 0, "high": 1, "when": {f"b{i}": "on"}}
    return {"name": "tree", "space": space, "sampler": {"type": "grid"}}


# -- (a) the worst definitions are checked in bounded CPU ----------------------------------------
def test_the_reported_definition_is_refused_quickly_and_says_why() -> None:
    text = body(gated_ints(0, high=3))
    assert len(text) < 6_000  # the 4 KB of the report, give or take
    message = reported(text)
    assert "sampler: the conditions of this grid cross too often" in message
    assert cpu(lambda: StudySpec.model_validate_json(text)) < CPU_BOUND


def test_a_valid_definition_of_the_reported_shape_is_accepted_quickly() -> None:
    text = body(gated_ints(0, high=0))
    spec = StudySpec.model_validate_json(text)
    assert grid_size(spec.space) == 2**17
    assert cpu(lambda: StudySpec.model_validate_json(text)) < CPU_BOUND
    # What the service builds from it when the study is created: the grid sampler, lazily.
    assert cpu(lambda: GridSampler(SearchSpace(spec.space), seed=1).suggest(0)) < CPU_BOUND


@pytest.mark.parametrize(
    ("make", "outcome"),
    [
        pytest.param(lambda: gated_ints(1, high=3, k=2), "cross too often", id="gated-pairs"),
        pytest.param(lambda: gated_ints(2, high=1, k=4), "cross too often", id="gated-fours"),
        pytest.param(
            lambda: gated_ints(3, high=2, binaries=12, ints=52, k=2), "points", id="gated-12"
        ),
        pytest.param(lambda: crossing(4, 24, 40, 0.5), "", id="crossing-wide"),
        pytest.param(lambda: crossing(5, 12, 300, 0.5), "", id="crossing-long"),
        pytest.param(lambda: crossing(6, 30, 10, 0.3), "", id="crossing-many"),
        pytest.param(many_choices, "valid", id="many-choices"),
        pytest.param(wide_tree, "the grid has 4.77e+14 points", id="wide-tree"),
    ],
)
def test_the_worst_definitions_within_the_limits_cost_little_cpu(
    make: Callable[[], dict], outcome: str
) -> None:
    text = body(make())
    if outcome == "valid":
        StudySpec.model_validate_json(text)
    else:
        assert outcome in reported(text)
    assert cpu(lambda: StudySpec.model_validate_json(text)) < CPU_BOUND


def test_grid_counting_is_capped_however_the_conditions_cross() -> None:
    space = StudySpec.model_validate(dict(gated_ints(0, high=3), sampler={"type": "random"}))
    with pytest.raises(GridTooComplex, match="within 50,000 steps"):
        GridIndex(space.space)
    # A sampler other than grid never counts the grid to accept the definition, and its
    # fallback that does (a space exhausted of new points) is capped the same way.
    search = SearchSpace(space.space)
    with pytest.raises(ValueError, match="cross too often"):
        search.grid_size()


def test_choice_lists_and_conditions_are_checked_by_lookup_not_scan() -> None:
    # Every value of every condition checked against a parent of MAX_CHOICES choices: with a
    # scan per value this was choices x values comparisons.
    values = list(range(MAX_CHOICES))
    space: dict[str, Any] = {"p": {"type": "categorical", "choices": values}}
    for j in range(20):
        space[f"c{j}"] = {"type": "int", "low": 0, "high": 0, "when": {"p": values}}
    text = body({"name": "lookup", "space": space})
    StudySpec.model_validate_json(text)
    # A scan would make 20 x MAX_CHOICES^2 comparisons, seconds of CPU; parsing the body's
    # 20 x MAX_CHOICES values alone takes about 10 ms, so the bound is the common one.
    assert cpu(lambda: StudySpec.model_validate_json(text)) < CPU_BOUND
    twice = {"name": "d", "space": {"p": {"type": "categorical", "choices": [*values[1:], 5]}}}
    assert "5 appears twice" in reported(json.dumps(twice))
    # True is not 1: both may be choices, and a condition on one does not match the other.
    both = {"p": {"type": "categorical", "choices": [1, True]}}
    StudySpec.model_validate({"name": "b", "space": both})


# -- the count and the order are those of a walk ----------------------------------------------
def walk(space: dict[str, Param]) -> Iterator[dict[str, Any]]:
    """Every grid point the slow way: each assignment of the condition parents in order, then
    the other active parameters as a mixed-radix number (last fastest). Ints and categoricals
    only."""
    names = topological_order(space)
    named = {q for p in space.values() for q in p.when_values()}
    parents = [n for n in names if n in named]

    def values(p: Param) -> list[Any]:
        if isinstance(p, CategoricalParam):
            return list(p.choices)
        assert isinstance(p, IntParam)
        return list(range(p.low, p.high + 1, p.step))

    def active(name: str, assign: dict[str, Any]) -> bool:
        return all(
            q in assign and any(type(assign[q]) is type(v) and assign[q] == v for v in vs)
            for q, vs in space[name].when_values().items()
        )

    def branches(i: int, assign: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if i == len(parents):
            yield assign
            return
        q = parents[i]
        if not active(q, assign):
            yield from branches(i + 1, assign)
            return
        for v in values(space[q]):
            yield from branches(i + 1, {**assign, q: v})

    for assign in branches(0, {}):
        free = [n for n in names if n not in named and active(n, assign)]
        for combo in itertools.product(*(values(space[n]) for n in free)):
            point = {**assign, **dict(zip(free, combo, strict=True))}
            yield {n: point[n] for n in names if n in point}


CHOICE_VALUES: list[Scalar] = [0, 1, 2, True, False, "a", "b", 1.5, None]


@st.composite
def conditional_spaces(draw: st.DrawFn) -> dict[str, Param]:
    """Small spaces whose conditions nest and cross: parents gated by earlier parents, and
    parameters gated by several parents at once (value lists may be empty or overlap)."""
    space: dict[str, Param] = {}
    cats: list[str] = []
    for i in range(draw(st.integers(1, 5))):
        choices = draw(
            st.lists(
                st.sampled_from(CHOICE_VALUES),
                min_size=1,
                max_size=4,
                unique_by=lambda v: (type(v), v),
            )
        )
        when = draw(gates(cats, space))
        space[f"c{i}"] = CategoricalParam(type="categorical", choices=choices, when=when)
        cats.append(f"c{i}")
    for j in range(draw(st.integers(0, 5))):
        high = draw(st.integers(0, 2))
        when = draw(gates(cats, space))
        space[f"i{j}"] = IntParam(type="int", low=0, high=high, when=when)
    # Declared in any order: the topological order is the grid's, whatever the dict's.
    names = draw(st.permutations(list(space)))
    return {n: space[n] for n in names}


def gates(cats: list[str], space: dict[str, Param]) -> st.SearchStrategy[dict | None]:
    if not cats:
        return st.none()

    @st.composite
    def draw_gates(draw: st.DrawFn) -> dict | None:
        parents = draw(st.lists(st.sampled_from(cats), max_size=3, unique=True))
        out = {}
        for q in parents:
            p = space[q]
            assert isinstance(p, CategoricalParam)
            out[q] = draw(st.lists(st.sampled_from(p.choices), max_size=len(p.choices)))
        return out or None

    return draw_gates()


@settings(max_examples=300, deadline=None)
@given(space=conditional_spaces())
def test_the_grid_is_counted_and_decoded_as_a_walk_would_visit_it(
    space: dict[str, Param],
) -> None:
    expected = list(walk(space))
    search = SearchSpace(space)
    assert search.grid_size() == len(expected) == grid_size(space)
    assert [search.grid_point(i) for i in range(len(expected))] == expected


def test_a_tree_with_more_branches_than_a_walk_visits_is_counted_exactly() -> None:
    # 12 independent binaries, each gating an int of 2 values: 4,096 branches, 3**12 points.
    space: dict[str, Any] = {f"b{i}": {"type": "categorical", "choices": [0, 1]} for i in range(12)}
    for i in range(12):
        space[f"x{i}"] = {"type": "int", "low": 0, "high": 1, "when": {f"b{i}": 1}}
    spec = StudySpec.model_validate({"name": "t", "space": space, "sampler": {"type": "grid"}})
    assert grid_size(spec.space) == 3**12 <= MAX_GRID_POINTS
    search = SearchSpace(spec.space)
    last = search.grid_point(3**12 - 1)
    assert last == {f"b{i}": 1 for i in range(12)} | {f"x{i}": 1 for i in range(12)}
    assert search.grid_point(0) == {f"b{i}": 0 for i in range(12)}
    # 21 of them: counted exactly, although a walk would visit 2**21 branches.
    tree = StudySpec.model_validate(dict(wide_tree(), sampler={"type": "random"}))
    assert grid_size(tree.space) == 5**21
