"""Population-based training's pure core: the exploit rule, PBT's and PB2's explore, the lineage.

Properties over generated spaces (every value explore produces lies in the space; fixed
parameters never change) and plain-number checks of the rule (who exploits, who donates, the
seed, the reasons)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.spaces import REFERENCE_SPACE, check_config, space_of, spaces
from tuneyard.scheduler.pbt import (
    Interval,
    Lineage,
    MemberScore,
    ParamMover,
    PopulationRule,
    pb2_explore,
    perturb_explore,
)
from tuneyard.scheduler.space import SearchSpace
from tuneyard.spec import Param
from tuneyard.spec.pbt import ExploreSpec, PBTSpec

SPEC = PBTSpec(type="pbt", population=16, interval=4, max_resource=100)
PB2 = PBTSpec(type="pb2", population=16, interval=4, max_resource=100)


def reference() -> SearchSpace:
    return SearchSpace(space_of(REFERENCE_SPACE))


def population(space: SearchSpace, n: int, seed: int, resource: float = 40.0) -> list[MemberScore]:
    rng = np.random.default_rng(seed)
    return [MemberScore(i, resource, float(rng.random()), space.sample(rng)) for i in range(n)]


def intervals(pop: list[MemberScore], seed: int) -> list[Interval]:
    rng = np.random.default_rng(seed)
    return [
        Interval(m.member, r, m.params, float(rng.normal())) for m in pop for r in (4.0, 8.0, 12.0)
    ]


# -- the definition ---------------------------------------------------------------------------


def test_the_spec_takes_the_issue_definition_with_its_defaults() -> None:
    spec = PBTSpec.model_validate(
        {"type": "pbt", "population": 16, "interval": 4, "max_resource": 100}
    )
    assert spec.quantile == 0.25
    assert spec.explore == ExploreSpec(resample_probability=0.25, perturb=(0.8, 1.2))
    assert PBTSpec.model_validate({**spec.model_dump(), "type": "pb2"}).type == "pb2"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"population": 1}, "population"),
        ({"interval": 0}, "interval"),
        ({"quantile": 0.6}, "quantile"),
        ({"quantile": 0}, "quantile"),
        ({"type": "asha"}, "type"),
        ({"explore": {"resample_probability": 1.5}}, "resample_probability"),
        ({"explore": {"perturb": [1.1, 1.3]}}, "perturb"),
        ({"explore": {"perturb": [0, 1.3]}}, "perturb"),
        ({"interval": 100}, "interval"),
        ({"mutable": ["lr"]}, "mutable"),
    ],
)
def test_the_spec_refuses_bad_values_naming_the_field(change: dict[str, Any], field: str) -> None:
    base = {"type": "pbt", "population": 16, "interval": 4, "max_resource": 100}
    with pytest.raises(ValidationError) as err:
        PBTSpec.model_validate({**base, **change})
    assert field in str(err.value)


# -- the exploit rule -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_the_bottom_quantile_exploits_a_top_quantile_donor_and_the_rest_keep(seed: int) -> None:
    space = reference()
    pop = population(space, 16, seed)
    ranked = sorted(pop, key=lambda m: m.score)
    top = {m.member for m in ranked[:4]}
    bottom = {m.member for m in ranked[-4:]}
    rule = PopulationRule(space, SPEC, seed=seed)
    for m in pop:
        d = rule.decide(m, pop)
        if m.member in bottom:
            assert d.kind == "exploit"
            assert d.donor in top
            donor = pop[d.donor]  # type: ignore[index]
            assert d.donor_score == donor.score
            assert d.resource_from == donor.resource
            assert d.old_params == m.params
        else:
            assert d.kind == "keep"
            assert d.params == m.params
            assert d.donor is None


def test_members_not_yet_reported_are_left_out_and_a_lone_member_keeps() -> None:
    space = reference()
    pop = population(space, 16, 0)
    rule = PopulationRule(space, SPEC, seed=0)
    assert rule.decide(pop[0], []).kind == "keep"
    assert "too few" in rule.decide(pop[0], []).reason
    # With 3 known, the bottom and top are one member each.
    a, b, c = (MemberScore(i, 8.0, s, pop[i].params) for i, s in enumerate((0.1, 0.5, 0.9)))
    assert rule.decide(b, [a, c]).kind == "keep"
    d = rule.decide(c, [a, b])
    assert (d.kind, d.donor) == ("exploit", 0)
    assert "bottom 1 of 3" in d.reason


def test_a_member_ranks_and_exploits_within_the_group_sharing_its_fixed_parameters() -> None:
    space = reference()
    pop = population(space, 4, 2)
    mine = {**pop[3].params, "solver": "adam"}
    mine.pop("nesterov", None)
    others = [
        MemberScore(m.member, 40.0, 0.1 * i, {**m.params, "solver": "sgd", "nesterov": True})
        for i, m in enumerate(pop[:3])
    ]
    mutable = {"lr", "layers", "units", "momentum", "batch_size"}
    rule = PopulationRule(space, SPEC, seed=0, mutable=mutable)
    d = rule.decide(MemberScore(3, 40.0, 0.9, mine), others)
    assert d.kind == "keep"
    # Alone in its group: nobody it could clone, whatever the others score.
    assert "only 1 member(s) with solver='adam' known, too few to compare" in d.reason
    # Ranked in its group: the worst member with solver='sgd' clones the best of them.
    sgd = [MemberScore(m.member, 40.0, m.score, m.params) for m in others]
    worst = MemberScore(4, 40.0, 0.95, {**sgd[0].params})
    d = rule.decide(worst, [*sgd, MemberScore(3, 40.0, 0.01, mine)])
    assert (d.kind, d.donor) == ("exploit", 0)
    assert "in the bottom 1 of 4 with solver='sgd', nesterov=True" in d.reason


def test_a_diverged_member_exploits_and_never_donates() -> None:
    space = reference()
    pop = population(space, 4, 1)
    nan = MemberScore(0, 40.0, math.nan, pop[0].params)
    rule = PopulationRule(space, SPEC, seed=0)
    d = rule.decide(nan, pop[1:])
    assert d.kind == "exploit"
    for m in pop[1:]:
        assert rule.decide(m, [nan, *pop[1:]]).donor != 0


def test_a_donor_is_at_the_boundary_and_its_checkpoint_still_stored() -> None:
    space = reference()
    pop = population(space, 4, 0)
    rule = PopulationRule(space, SPEC, seed=0)
    # The only top member is behind (its latest score is from the previous boundary): it
    # ranks, but it has no checkpoint at 40 to clone, so the bottom member keeps.
    behind = MemberScore(0, 36.0, 0.01, pop[0].params)
    others = [MemberScore(i, 40.0, 0.5, pop[i].params) for i in (1, 2)]
    me = MemberScore(3, 40.0, 0.9, pop[3].params)
    d = rule.decide(me, [behind, *others])
    assert d.kind == "keep"
    assert "no member of the top 1 has reached 40 yet" in d.reason
    # At the boundary, but its archive is gone: kept, and the reason says why.
    level = MemberScore(0, 40.0, 0.01, pop[0].params)
    d = rule.decide(me, [level, *others], can_donate=lambda m: m.member != 0)
    assert d.kind == "keep"
    assert "no longer stored" in d.reason
    d = rule.decide(me, [level, *others], can_donate=lambda m: True)
    assert (d.kind, d.donor, d.resource_from) == ("exploit", 0, 40.0)


def test_a_score_past_the_boundary_is_refused_naming_the_member() -> None:
    space = reference()
    pop = population(space, 4, 0)
    ahead = MemberScore(3, 48.0, 0.1, pop[3].params)
    with pytest.raises(ValueError, match="trial 3's score at 48 is past the boundary 40"):
        PopulationRule(space, SPEC, seed=0).decide(pop[0], [*pop[1:3], ahead])


@pytest.mark.parametrize("spec", [SPEC, PB2])
def test_the_same_seed_gives_the_same_decisions_and_another_seed_differs(spec: PBTSpec) -> None:
    space = reference()
    pop = population(space, 16, 3)
    ivs = intervals(pop, 1)
    worst = max(pop, key=lambda m: m.score)

    def run(seed: int) -> list[Any]:
        rule = PopulationRule(space, spec, seed=seed)
        return [
            (d.donor, d.params, d.reason) for d in (rule.decide(worst, pop, ivs) for _ in range(2))
        ]

    first = run(7)
    assert first == run(7)
    assert first[0] == first[1]  # the same boundary decides alike whenever it is asked
    assert any(run(7) != run(s) for s in range(8, 14))


def test_the_reason_reads_like_the_issue() -> None:
    space = SearchSpace(space_of({"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}))
    scores = [0.188, 0.2, 0.25, 0.3]
    pop = [MemberScore(7 + i, 40.0, s, {"lr": 3.1e-3}) for i, s in enumerate(scores)]
    worst = MemberScore(99, 40.0, 0.312, {"lr": 0.05})
    spec = PBTSpec(
        type="pbt",
        population=5,
        interval=4,
        max_resource=100,
        quantile=0.2,
        explore=ExploreSpec(resample_probability=0.0),
    )
    d = PopulationRule(space, spec, seed=0).decide(worst, pop)
    assert d.reason.startswith("exploit at 40: 0.312 in the bottom 1 of 5; cloned trial 7 (0.188)")
    new = d.params["lr"]
    assert new in (pytest.approx(3.1e-3 * 0.8), pytest.approx(3.1e-3 * 1.2))
    assert d.reason.endswith(f"perturbed lr 3.1e-3 → {new:.2e}".replace("e-03", "e-3"))
    keep = PopulationRule(space, spec, seed=0).decide(pop[1], [worst, *pop])
    assert keep.reason == "keep at 40: 0.2, rank 2 of 5, not in the bottom 1"


# -- explore ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    space=spaces(discrete=False),
    seed=st.integers(0, 2**32),
    resample=st.sampled_from([0.0, 0.25, 1.0]),
    data=st.data(),
)
def test_explore_stays_in_any_space_and_never_moves_a_fixed_parameter(
    space: dict[str, Param], seed: int, resample: float, data: st.DataObject
) -> None:
    s = SearchSpace(space)
    # Fixed: any set of parameters closed under condition parents (a fixed parameter's
    # parents are fixed too, as the rule requires).
    fixed = set(data.draw(st.sets(st.sampled_from(s.names))))
    for name in list(fixed):
        stack = [name]
        while stack:
            for parent in space[stack.pop()].when_values():
                if parent not in fixed:
                    fixed.add(parent)
                    stack.append(parent)
    mutable = frozenset(s.names) - fixed
    explore = ExploreSpec(resample_probability=resample)
    rng = np.random.default_rng(seed)
    mover = ParamMover(s)
    params = s.sample(rng)
    for _ in range(5):
        new, changes = perturb_explore(s, mover, params, mutable, explore, rng)
        check_config(space, new)
        for name in fixed & params.keys():
            assert type(new[name]) is type(params[name]) and new[name] == params[name]
        assert {c.name for c in changes} <= set(params) | set(new)
        params = new


def test_perturbing_ints_and_categoricals_moves_them_one_step_within_bounds() -> None:
    space = SearchSpace(
        space_of(
            {
                "layers": {"type": "int", "low": 1, "high": 3},
                "batch": {"type": "categorical", "choices": [16, 32, 64]},
            }
        )
    )
    mover = ParamMover(space)
    assert mover.perturb("layers", 2, 1.2, up=True) == 3  # 2.4 rounds back to 2: one step up
    assert mover.perturb("layers", 1, 0.8, up=False) == 1  # no room below low
    assert mover.perturb("layers", 3, 1.2, up=True) == 3  # clipped at high
    assert mover.perturb("batch", 32, 1.2, up=True) == 64
    assert mover.perturb("batch", 16, 0.8, up=False) == 32  # at the end: the only neighbour


def test_the_rule_refuses_a_fixed_parameter_under_a_mutable_parent() -> None:
    space = reference()
    with pytest.raises(ValueError, match="'nesterov' is fixed but its condition parent 'solver'"):
        PopulationRule(space, SPEC, seed=0, mutable={"lr", "solver"})
    with pytest.raises(ValueError, match="mutable: 'depth' not a parameter"):
        PopulationRule(space, SPEC, seed=0, mutable={"lr", "depth"})


@pytest.mark.parametrize("spec", [SPEC, PB2])
def test_a_member_only_clones_donors_that_share_its_fixed_parameters(spec: PBTSpec) -> None:
    space = reference()
    pop = population(space, 16, 4)
    rule = PopulationRule(
        space, spec, seed=0, mutable={"lr", "layers", "units", "momentum", "batch_size"}
    )
    ivs = intervals(pop, 0)
    exploited = 0
    for m in pop:
        d = rule.decide(m, pop, ivs)
        check_config(space_of(REFERENCE_SPACE), d.params)
        for name in ("solver", "nesterov"):
            assert d.params.get(name) == m.params.get(name)
        if d.kind == "exploit":
            exploited += 1
            donor = pop[d.donor]  # type: ignore[index]
            assert donor.params["solver"] == m.params["solver"]
        else:
            assert d.params == m.params
    assert exploited > 0


# -- PB2 --------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(space=spaces(discrete=False), seed=st.integers(0, 2**32))
def test_pb2_suggestions_stay_in_any_space(space: dict[str, Param], seed: int) -> None:
    s = SearchSpace(space)
    rng = np.random.default_rng(seed)
    mover = ParamMover(s)
    history = [
        Interval(i % 4, 4.0 * (1 + i // 4), s.sample(rng), float(rng.normal())) for i in range(12)
    ]
    pending = [s.sample(rng) for _ in range(3)]
    params = s.sample(rng)
    new, _ = pb2_explore(
        s, mover, params, frozenset(s.names), ExploreSpec(), history, pending, 16.0, 4.0, rng
    )
    check_config(space, new)


def test_pb2_moves_towards_the_parameters_that_improved() -> None:
    """Improvements peak at x = 0.8 whatever the time: the GP's choice lands near it."""
    space = SearchSpace(space_of({"x": {"type": "float", "low": 0.0, "high": 1.0}}))
    rng = np.random.default_rng(0)
    history = []
    for step in range(1, 6):
        for member in range(8):
            x = float(rng.random())
            history.append(Interval(member, 4.0 * step, {"x": x}, -((x - 0.8) ** 2)))
    chosen = []
    for seed in range(5):
        new, changes = pb2_explore(
            space,
            ParamMover(space),
            {"x": 0.1},
            frozenset({"x"}),
            ExploreSpec(),
            history,
            [],
            20.0,
            4.0,
            np.random.default_rng(seed),
        )
        assert changes[0].how == "chosen"
        chosen.append(new["x"])
    assert abs(float(np.median(chosen)) - 0.8) < 0.15


def test_pb2_spreads_members_exploiting_at_once() -> None:
    """A member already training at the model's best spot lowers the variance there."""
    space = SearchSpace(space_of({"x": {"type": "float", "low": 0.0, "high": 1.0}}))
    history = [Interval(0, 4.0, {"x": x}, 0.0) for x in (0.1, 0.2, 0.3)]

    def choose(pending: list[dict[str, Any]]) -> float:
        new, _ = pb2_explore(
            space,
            ParamMover(space),
            {"x": 0.2},
            frozenset({"x"}),
            ExploreSpec(),
            history,
            pending,
            4.0,
            4.0,
            np.random.default_rng(0),
        )
        return float(new["x"])

    alone = choose([])
    assert alone > 0.6  # the flat, known-poor corner is left for the unexplored side
    assert abs(choose([{"x": alone}]) - alone) > 0.1


# -- lineage ----------------------------------------------------------------------------------


def test_a_clones_schedule_continues_its_donors() -> None:
    space = SearchSpace(space_of({"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}}))
    spec = PBTSpec(type="pbt", population=2, interval=4, max_resource=100, quantile=0.5)
    rule = PopulationRule(space, spec, seed=0)
    a = Lineage.start(0, {"lr": 0.1})
    b = Lineage.start(1, {"lr": 0.01})
    # At 4, a is better: b clones it.
    d = rule.decide(MemberScore(1, 4.0, 0.9, b.params), [MemberScore(0, 4.0, 0.5, a.params)])
    assert d.kind == "exploit" and d.donor == 0
    b = b.record(d, donor=a)
    assert b.entries[-1].donor == 0 and b.entries[-1].reason == d.reason
    # At 8, b is better: a clones b, whose curve is a's until 4.
    d2 = rule.decide(MemberScore(0, 8.0, 0.7, a.params), [MemberScore(1, 8.0, 0.3, b.params)])
    a = a.record(d2, donor=b)
    assert a.schedule() == ((0.0, {"lr": 0.1}), (4.0, d.params), (8.0, d2.params))
    assert a.params_at(5.0) == d.params
    keep = rule.decide(MemberScore(0, 12.0, 0.1, a.params), [MemberScore(1, 12.0, 0.3, b.params)])
    assert a.record(keep) is a
    with pytest.raises(ValueError, match="needs that trial's lineage"):
        a.record(d2)


def test_a_member_tied_with_a_better_ranked_one_still_clones_it() -> None:
    # The PBT paper's toy: two mirrored workers score alike at every boundary.
    space = reference()
    pop = population(space, 2, 3)
    spec = PBTSpec(type="pbt", population=2, interval=4, max_resource=100, quantile=0.5)
    rule = PopulationRule(space, spec, seed=0)
    tied = [MemberScore(m.member, 40.0, 0.5, m.params) for m in pop]
    d = rule.decide(tied[1], tied[:1])
    assert (d.kind, d.donor) == ("exploit", 0)
    assert rule.decide(tied[0], tied[1:]).kind == "keep"


def test_reasons_show_a_maximised_metric_in_its_own_units() -> None:
    space = reference()
    pop = population(space, 2, 3)
    spec = PBTSpec(type="pbt", population=2, interval=4, max_resource=100, quantile=0.5)
    # Accuracy 0.9 and 0.6, scored (lower is better) as -0.9 and -0.6.
    rule = PopulationRule(space, spec, seed=0, sign=-1.0)
    good = MemberScore(0, 40.0, -0.9, pop[0].params)
    d = rule.decide(MemberScore(1, 40.0, -0.6, pop[1].params), [good])
    assert d.reason.startswith("exploit at 40: 0.6 in the bottom 1 of 2; cloned trial 0 (0.9)")
