"""The LRU map shared by the per-process caches."""

from __future__ import annotations

import threading

import pytest

from tuneyard.lru import LRU


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_get_put_pop_clear_len() -> None:
    c: LRU[str, int] = LRU(3)
    assert c.get("a") is None and len(c) == 0
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1 and c.get("b") == 2 and len(c) == 2
    c.put("a", 10)
    assert c.get("a") == 10 and len(c) == 2, "a put replaces, it does not add"
    assert c.pop("a") == 10 and c.pop("a") is None and c.get("a") is None
    assert len(c) == 1
    c.clear()
    assert len(c) == 0 and c.get("b") is None


def test_the_least_recently_used_entry_goes_first() -> None:
    c: LRU[str, int] = LRU(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.get("a") == 1  # a is now newer than b
    c.put("c", 3)
    assert c.get("b") is None
    assert c.get("a") == 1 and c.get("c") == 3


def test_a_put_counts_as_a_use() -> None:
    c: LRU[str, int] = LRU(2)
    c.put("a", 1)
    c.put("b", 2)
    c.put("a", 3)
    c.put("c", 4)
    assert c.get("b") is None and c.get("a") == 3


def test_peek_does_not_count_as_a_use() -> None:
    c: LRU[str, int] = LRU(2)
    c.put("a", 1)
    c.put("b", 2)
    assert c.peek("a") == 1
    c.put("c", 3)
    assert c.peek("a") is None, "evicted in the order stored: peek did not refresh it"
    assert c.peek("b") == 2 and c.peek("c") == 3


def test_items_are_a_snapshot_oldest_first() -> None:
    c: LRU[str, int] = LRU(3)
    for i, k in enumerate("abc"):
        c.put(k, i)
    c.get("a")
    assert c.items() == [("b", 1), ("c", 2), ("a", 0)]


def test_maxsize_zero_keeps_nothing() -> None:
    c: LRU[str, int] = LRU(0)
    c.put("a", 1)
    assert c.get("a") is None and len(c) == 0


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        LRU(-1)
    with pytest.raises(ValueError):
        LRU(1, ttl=-1.0)


# -- weights ---------------------------------------------------------------------------------
def test_weighted_entries_are_evicted_until_the_total_weight_fits() -> None:
    c: LRU[str, bytes] = LRU(10, weigh=len)
    c.put("a", b"xxxx")
    c.put("b", b"xxxx")
    assert len(c) == 2
    c.put("c", b"xxxx")  # 12 > 10: a goes
    assert c.get("a") is None and c.get("b") == b"xxxx" and c.get("c") == b"xxxx"
    c.put("d", b"xxxxxxxxx")  # 9: b and c both go
    assert len(c) == 1 and c.get("d") == b"xxxxxxxxx"


def test_replacing_an_entry_replaces_its_weight() -> None:
    c: LRU[str, bytes] = LRU(10, weigh=len)
    c.put("a", b"x" * 8)
    c.put("a", b"x" * 2)
    c.put("b", b"x" * 8)
    assert c.get("a") == b"xx" and c.get("b") == b"x" * 8


def test_an_entry_heavier_than_maxsize_is_not_kept_and_evicts_nothing() -> None:
    c: LRU[str, bytes] = LRU(10, weigh=len)
    c.put("a", b"xxxx")
    c.put("b", b"x" * 11)
    assert c.get("b") is None and c.get("a") == b"xxxx"
    c.put("a", b"x" * 11)
    assert c.get("a") is None, "an older value is never answered after a newer put"


# -- ttl -------------------------------------------------------------------------------------
def test_an_entry_lives_ttl_seconds_after_its_put() -> None:
    clock = FakeClock()
    c: LRU[str, int] = LRU(10, ttl=5.0, clock=clock)
    c.put("a", 1)
    clock.now += 5.0
    assert c.get("a") == 1, "alive up to and including the deadline"
    clock.now += 0.001
    assert c.get("a") is None and len(c) == 0, "an expired entry is dropped when read"


def test_a_read_does_not_extend_the_life_but_a_put_does() -> None:
    clock = FakeClock()
    c: LRU[str, int] = LRU(10, ttl=5.0, clock=clock)
    c.put("a", 1)
    clock.now += 4.0
    assert c.get("a") == 1
    clock.now += 2.0
    assert c.peek("a") is None
    c.put("a", 2)
    clock.now += 4.0
    assert c.get("a") == 2


def test_expired_entries_are_not_popped_nor_listed() -> None:
    clock = FakeClock()
    c: LRU[str, int] = LRU(10, ttl=1.0, clock=clock)
    c.put("a", 1)
    clock.now += 0.5
    c.put("b", 2)
    clock.now += 0.75
    assert c.items() == [("b", 2)]
    assert c.pop("a") is None and c.pop("b") == 2


def test_without_ttl_entries_never_expire() -> None:
    clock = FakeClock()
    c: LRU[str, int] = LRU(10, clock=clock)
    c.put("a", 1)
    clock.now += 1e9
    assert c.get("a") == 1


# -- threads ---------------------------------------------------------------------------------
def test_concurrent_puts_and_gets_keep_the_bound_and_the_weight() -> None:
    c: LRU[int, bytes] = LRU(1000, weigh=len)
    start = threading.Barrier(4)

    def work(offset: int) -> None:
        start.wait()
        for i in range(2000):
            c.put((offset * 7919 + i) % 300, b"x" * (1 + i % 9))
            c.get(i % 300)
            if i % 13 == 0:
                c.pop((i * 3) % 300)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(len(v) for _, v in c.items())
    assert total <= 1000
    # The running weight agrees with the entries: filling up evicts exactly what it must.
    c.put(-1, b"x" * (1000 - total))
    assert sum(len(v) for _, v in c.items()) == 1000 and len(c) == len(c.items())
