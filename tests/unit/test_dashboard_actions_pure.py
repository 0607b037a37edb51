"""The pure parts behind the dashboard's actions: which rung importance reads, the checks on
notes and tags, and the timeline's window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tuneyard.errors import InvalidRequest
from tuneyard.scheduler.importance import MIN_TRIALS, RUNG_TRIALS, pick_rung
from tuneyard.service.dashboard.notes import (
    MAX_NOTE_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    clean_note,
    clean_tags,
)
from tuneyard.service.dashboard.timeline import DEFAULT_WINDOW, MAX_WINDOW, window


# -- the rung importance reads -----------------------------------------------------------------
def test_pick_rung_takes_the_highest_rung_with_enough_trials() -> None:
    rungs = [(0, 300, 1.0), (1, 100, 3.0), (2, RUNG_TRIALS, 9.0), (3, RUNG_TRIALS - 1, 27.0)]
    assert pick_rung(rungs) == (2, RUNG_TRIALS, 9.0)
    # Order of the rows does not matter.
    assert pick_rung(list(reversed(rungs))) == (2, RUNG_TRIALS, 9.0)
    assert pick_rung(rungs, enough=101) == (0, 300, 1.0)
    assert pick_rung(rungs, enough=20) == (3, RUNG_TRIALS - 1, 27.0)


def test_pick_rung_falls_back_to_the_most_reached_rung_then_to_none() -> None:
    few = [(0, 30, 1.0), (1, 12, 3.0), (2, 30, 9.0)]
    assert pick_rung(few) == (0, 30, 1.0)  # the most reached, the lower on a tie
    assert pick_rung([(0, MIN_TRIALS, 1.0)]) == (0, MIN_TRIALS, 1.0)
    assert pick_rung([(0, MIN_TRIALS - 1, 1.0)]) is None
    assert pick_rung([]) is None


# -- notes and tags ----------------------------------------------------------------------------
def test_clean_note_keeps_text_and_clears_blank() -> None:
    assert clean_note("line one\nline two\ttabbed\r\n") == "line one\nline two\ttabbed\r\n"
    assert clean_note("  \n ") is None
    assert clean_note(None) is None
    assert clean_note("é ✓ 日本") == "é ✓ 日本"
    assert clean_note("x" * MAX_NOTE_CHARS) == "x" * MAX_NOTE_CHARS


@pytest.mark.parametrize("note", ["x" * (MAX_NOTE_CHARS + 1), "a\x00b", "bell\x07", "\x1b[31m"])
def test_clean_note_refuses_long_notes_and_control_characters(note: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        clean_note(note)
    assert exc.value.extra["field"] == "note"
    assert exc.value.detail.startswith("note: ")


def test_clean_tags_keeps_order_and_drops_repeats() -> None:
    assert clean_tags(["b", "a", "b", "v1.2", "team:vision", "x/y", "a+b", "ü"]) == [
        "b",
        "a",
        "v1.2",
        "team:vision",
        "x/y",
        "a+b",
        "ü",
    ]
    assert clean_tags([]) == []
    # The count is checked on the tags as given, repeats included.
    with pytest.raises(InvalidRequest):
        clean_tags(["t"] * (MAX_TAGS + 1))


@pytest.mark.parametrize(
    ("tags", "where"),
    [
        (["ok", "two words"], "tags[1]"),
        ([""], "tags[0]"),
        (["x" * (MAX_TAG_CHARS + 1)], "tags[0]"),
        (["-x"], "tags[0]"),
        (["_x"], "tags[0]"),
        (["a,b"], "tags[0]"),
        (["<script>"], "tags[0]"),
        (["ok", 7], "tags[1]"),
        ([f"t{i}" for i in range(MAX_TAGS + 1)], "tags:"),
    ],
)
def test_clean_tags_names_the_bad_tag(tags: list[object], where: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        clean_tags(tags)
    assert exc.value.extra["field"] == "tags"
    assert exc.value.detail.startswith(where), exc.value.detail


def test_clean_tags_names_the_field_it_is_given() -> None:
    with pytest.raises(InvalidRequest) as exc:
        clean_tags(["no spaces"], field="tag")
    assert exc.value.extra["field"] == "tag" and exc.value.detail.startswith("tag[0]")


# -- the timeline's window ---------------------------------------------------------------------
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def test_window_defaults() -> None:
    assert window(NOW, None, None) == (NOW - DEFAULT_WINDOW, NOW)
    until = NOW - timedelta(days=1)
    assert window(NOW, None, until) == (until - DEFAULT_WINDOW, until)
    since = NOW - timedelta(days=2)
    assert window(NOW, since, None) == (since, NOW)
    # A study: from its creation to its end, or to now while it runs.
    made, ended = NOW - timedelta(hours=30), NOW - timedelta(hours=2)
    assert window(NOW, None, None, (made, ended)) == (made, ended)
    assert window(NOW, None, None, (made, None)) == (made, NOW)
    # A long study: its last MAX_WINDOW.
    old = NOW - timedelta(days=400)
    assert window(NOW, None, None, (old, None)) == (NOW - MAX_WINDOW, NOW)
    # A naive time is UTC.
    naive = datetime(2026, 6, 1, 10)
    assert window(NOW, naive, None) == (naive.replace(tzinfo=UTC), NOW)


@pytest.mark.parametrize(
    ("since", "until"),
    [
        (NOW, NOW),
        (NOW, NOW - timedelta(seconds=1)),
        (NOW - MAX_WINDOW - timedelta(seconds=1), NOW),
    ],
)
def test_window_refuses_empty_reversed_and_wide_windows(since: datetime, until: datetime) -> None:
    with pytest.raises(InvalidRequest) as exc:
        window(NOW, since, until)
    assert exc.value.extra["field"] == "since"


def test_window_at_the_ends_of_time_is_a_422_not_an_overflow() -> None:
    with pytest.raises(InvalidRequest) as exc:
        window(NOW, None, datetime(1, 1, 1, tzinfo=UTC))
    assert exc.value.extra["field"] == "until"
    with pytest.raises(InvalidRequest) as exc:
        window(NOW, datetime(1, 1, 1, tzinfo=UTC), None)
    assert exc.value.extra["field"] == "since"
    top = datetime(9999, 12, 31, 23, tzinfo=UTC)
    assert window(NOW, None, top) == (top - DEFAULT_WINDOW, top)
