"""The fleet benchmark's own pieces (bench/fleet.py): percentiles, the dispatch gap's
accounting, the measurement window, the rule that says whether a fleet size holds the limits,
and how the client processes' records add up."""

from __future__ import annotations

import math
import random

import httpx
import pytest

from bench.fleet import (
    GapClock,
    Limits,
    Record,
    Result,
    Window,
    error_kind,
    jittered,
    largest_held,
    offered_per_s,
    p50_p99,
    settle,
    short_of,
    split,
)


def _result(**kw: object) -> Result:
    res = Result("tuneyard", 1000, 2.0, 30.0, offered_per_s(1000, 2.0))
    res.served_per_s = 495.0
    res.report_ms, res.next_ms, res.gap_ms = (5.0, 40.0), (20.0, 90.0), (25.0, 150.0)
    for k, v in kw.items():
        setattr(res, k, v)
    return res


def test_offered_load_is_workers_over_epoch() -> None:
    assert offered_per_s(1000, 2.0) == 500.0
    assert offered_per_s(3000, 2.0) == 1500.0


def test_percentiles_in_milliseconds() -> None:
    xs = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    p50, p99 = p50_p99(xs)
    assert p50 == pytest.approx(50.5)
    assert p99 == pytest.approx(99.01)
    assert all(math.isnan(x) for x in p50_p99([]))


def test_a_first_job_has_no_gap_and_each_later_one_its_own() -> None:
    gap = GapClock()
    assert gap.job_started(10.0) is None
    gap.job_ended(14.0)
    # Empty ``next`` answers in between change nothing: the gap runs until a job starts.
    assert gap.job_started(14.35) == pytest.approx(0.35)
    assert gap.job_started(20.0) is None  # no job ended since the last start
    gap.job_ended(22.0)
    assert gap.job_started(22.01) == pytest.approx(0.01)


def test_window_counts_latencies_that_lie_in_it() -> None:
    win = Window(10.0, 20.0)
    assert win.latency(10.0, 10.5)
    assert not win.latency(9.9, 10.5)  # started in the warm-up
    assert not win.latency(19.9, 20.1)  # ended after the window
    assert win.inside(20.0) and not win.inside(20.01)


def test_a_size_within_every_limit_holds() -> None:
    assert short_of(_result(), Limits()) == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"report_ms": (5.0, 51.0)}, "report p99 51.0 > 50 ms"),
        ({"next_ms": (20.0, 101.0)}, "next p99 101 > 100 ms"),
        ({"gap_ms": (25.0, 250.0)}, "gap p99 250 > 200 ms"),
        ({"gap_ms": (math.nan, math.nan)}, "gap p99: not measured"),
        ({"served_per_s": 400.0}, "served 400 < 90% of offered"),
        ({"errors": {"report: HTTP 503": 2, "next: ReadTimeout": 1}}, "3 errors"),
    ],
)
def test_a_size_misses_the_limits_for_each_reason(change: dict[str, object], reason: str) -> None:
    assert short_of(_result(**change), Limits()) == [reason]


def test_records_of_the_client_processes_add_up() -> None:
    a = Record(report_s=[0.01] * 99 + [0.2], next_s=[0.05], gap_s=[0.1], reports=100, jobs=3)
    a.errors = {"report: HTTP 503": 1}
    b = Record(report_s=[0.01] * 100, next_s=[0.07], gap_s=[0.3], reports=200, jobs=5)
    b.errors = {"report: HTTP 503": 2, "pause: HTTP 409": 1}
    res = settle(Result("tuneyard", 600, 2.0, 10.0, 300.0), [a, b], Limits())
    assert res.served_per_s == 30.0
    assert res.jobs_per_s == 0.8
    assert res.report_ms[0] == pytest.approx(10.0)
    assert res.gap_ms[1] == pytest.approx(298.0)
    assert res.errors == {"report: HTTP 503": 3, "pause: HTTP 409": 1}
    assert not res.holds
    assert "4 errors" in res.short_of


def test_largest_held_fleet_per_system() -> None:
    results = [
        _result(workers=100, holds=True),
        _result(workers=300, holds=True),
        _result(workers=1000, holds=False),
        _result(system="optuna-rdb", workers=100, holds=False),
    ]
    assert largest_held(results, "tuneyard") == 300
    assert largest_held(results, "optuna-rdb") is None


def test_errors_are_counted_by_call_and_kind() -> None:
    req = httpx.Request("POST", "http://api/x")
    exc = httpx.HTTPStatusError("boom", request=req, response=httpx.Response(503, request=req))
    assert error_kind("report", exc) == "report: HTTP 503"
    assert error_kind("next", httpx.ReadTimeout("")) == "next: ReadTimeout"
    long = OperationalError("too many clients already\nDETAIL: more")
    assert error_kind("optuna", long) == "optuna: OperationalError (too many clients already)"


class OperationalError(Exception):
    pass


def test_workers_spread_over_processes_and_epochs_stay_in_the_jitter() -> None:
    assert split(1000, 4) == [250, 250, 250, 250]
    assert split(10, 3) == [4, 3, 3]
    assert split(2, 8) == [1, 1]
    rng = random.Random(0)
    times = [jittered(2.0, 0.2, rng) for _ in range(1000)]
    assert min(times) >= 1.6 and max(times) <= 2.4
    assert max(times) - min(times) > 0.7  # the jitter spreads them, not a constant
