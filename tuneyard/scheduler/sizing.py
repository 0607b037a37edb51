"""Whether a study's budget can fill its rungs: the warnings given when a study is created.

Successive halving promotes the best ``floor(n / eta)`` of the ``n`` trials that reached a
rung, rung after rung (synchronously in SHA and Hyperband, asynchronously in ASHA's promotion
mode, where a trial is promoted once it ranks in the top ``floor(n / eta)`` of its rung). A
bracket that admits ``a`` trials at its first rung therefore sends ``floor(a / eta^k)`` of them
``k`` rungs up: for one to reach ``max_resource`` by promotion from the first of ``K`` rungs,
the bracket needs ``eta^(K - 1)`` trials. A ``max_trials`` below that leaves the upper rungs
empty in SHA and Hyperband: the study ends with its trials stopped below ``max_resource``. In
ASHA's promotion mode the engine's end-of-study promotions then train one trial to
``max_resource`` after the rest of the study (:meth:`HalvingScheduler.final_promotion`): the
upper rungs see that one trial only.

ASHA's stopping mode lets a trial run on unless it falls out of the top ``ceil(n / eta)``, so
its first trial at each rung goes on: it needs no such budget. FIFO and median stopping have no
promotions. Pure: a function of the definition alone.
"""

from __future__ import annotations

import math

from tuneyard.scheduler.decisions import fmt
from tuneyard.scheduler.rungs import geometric_rungs
from tuneyard.spec import StudySpec


def rung_warnings(spec: StudySpec) -> list[str]:
    """Plain sentences, naming the fields and the numbers, for a definition whose
    ``limits.max_trials`` cannot bring one trial to ``max_resource`` by promotion; empty when
    it can (or when the scheduler does not promote)."""
    sch = spec.scheduler
    if sch.type not in ("asha", "sha", "hyperband") or (
        sch.type == "asha" and sch.mode == "stopping"
    ):
        return []
    eta = sch.reduction_factor
    rungs = geometric_rungs(sch.min_resource, sch.max_resource, eta)
    top = len(rungs) - 1
    if top == 0:
        return []
    trials = spec.limits.max_trials
    need = _trials_needed(spec, eta, top)
    out: list[str] = []
    ladder = ", ".join(fmt(r) for r in rungs)
    if need is not None and trials < need:
        ending = (
            "the upper rungs see only the one trial that the end-of-study promotions train "
            f"to {fmt(sch.max_resource)} after the rest of the study"
            if sch.type == "asha"
            else "the upper rungs stay empty"
        )
        out.append(
            f"limits.max_trials ({trials}) is too small for scheduler {sch.type} with "
            f"reduction_factor {eta} and {len(rungs)} rungs ({ladder}): a trial reaches "
            f"max_resource ({fmt(sch.max_resource)}) by promotion only when at least {need} "
            f"trials are started; with {trials} {ending}. Raise "
            f"limits.max_trials to {need} or more, or use fewer rungs (a larger "
            "scheduler.min_resource or a smaller scheduler.max_resource)."
        )
    if sch.type == "sha" and sch.bracket_size is not None and sch.bracket_size < eta**top:
        out.append(
            f"scheduler.bracket_size ({sch.bracket_size}) is smaller than reduction_factor^"
            f"(rungs - 1) = {eta**top} (reduction_factor {eta}, {len(rungs)} rungs: "
            f"{ladder}): no trial of a bracket is promoted to max_resource "
            f"({fmt(sch.max_resource)})."
        )
    return out


def _trials_needed(spec: StudySpec, eta: int, top: int) -> int | None:
    """The fewest trials with which one trial reaches the top rung by promotion; None when no
    number of trials does (an SHA bracket too small)."""
    sch = spec.scheduler
    if sch.type == "asha":
        brackets = min(sch.brackets, top + 1)
        if sch.bracket_choice == "round_robin" or sch.mode == "stopping" or brackets == 1:
            # Trials are dealt to the brackets round-robin; bracket b starts at rung b and
            # needs eta^(top - b) of them: trial number b + (need - 1) * B is the last one.
            return min(b + (eta ** (top - b) - 1) * brackets + 1 for b in range(brackets))
        return _trials_needed_by_budget(sch.min_resource, sch.max_resource, eta, brackets)
    if sch.type == "sha":
        size = sch.bracket_size or eta**top
        return eta**top if size >= eta**top else None
    # Hyperband: brackets s = top .. 0 in turn, bracket s admitting
    # ceil((top + 1) / (s + 1) * eta^s) trials at rung top - s, filled one after the other.
    before = 0
    best: int | None = None
    for s in range(top, -1, -1):
        n = math.ceil((top + 1) / (s + 1) * eta**s)
        enough = before + eta**s
        best = enough if best is None else min(best, enough)
        before += n
    return best


def _trials_needed_by_budget(min_r: float, max_r: float, eta: int, brackets: int) -> int:
    """The same for asynchronous Hyperband that places each trial in the bracket that has
    committed the least resource: with promotions as planned, a trial of bracket b costs
    ``c_b``, its first rung plus each later step times the share ``eta^-(k - b)`` promoted
    that far; trials go, one by one, where ``admitted * c_b`` is least (ties to the lowest
    bracket), until a bracket holds the ``eta^(top - b)`` it needs."""
    res = geometric_rungs(min_r, max_r, eta)
    top = len(res) - 1
    cost = [
        res[b] + sum((res[k] - res[k - 1]) / eta ** (k - b) for k in range(b + 1, top + 1))
        for b in range(brackets)
    ]
    admitted = [0] * brackets
    n = 0
    while True:
        b = min(range(brackets), key=lambda i: (admitted[i] * cost[i], i))
        admitted[b] += 1
        n += 1
        if admitted[b] >= eta ** (top - b):
            return n
