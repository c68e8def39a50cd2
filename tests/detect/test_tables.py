"""detect/tables.py: exact time-driven behaviour, LRU order, bounds under a hostile key space.

Time is always explicit (design.md §6.5): values are 0.0, 0.1, … or multiples of 0.25 so the
window boundaries are exact in binary floating point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.detect.tables import (
    DistinctCounter,
    LruSet,
    SlidingWindowCounter,
    TableStats,
    TtlMap,
)

MAX = 64


# --- TtlMap ---------------------------------------------------------------------------------


def test_ttl_map_entry_lives_until_its_deadline_exclusive() -> None:
    m: TtlMap[str, int] = TtlMap(max_entries=4, ttl_s=1.0)
    m.set("a", 1, now=0.0)
    assert m.get("a", now=0.0) == 1
    assert m.get("a", now=0.9) == 1
    assert m.get("a", now=1.0) is None
    assert len(m) == 0


def test_ttl_map_get_does_not_refresh_but_set_and_touch_do() -> None:
    m: TtlMap[str, int] = TtlMap(max_entries=4, ttl_s=1.0)
    m.set("read", 1, now=0.0)
    m.set("touched", 2, now=0.0)
    m.set("rewritten", 3, now=0.0)
    assert m.get("read", now=0.5) == 1
    assert m.touch("touched", now=0.5)
    m.set("rewritten", 4, now=0.5)
    assert m.get("read", now=1.2) is None
    assert m.get("touched", now=1.2) == 2
    assert m.get("rewritten", now=1.2) == 4
    assert m.get("touched", now=1.5) is None


def test_ttl_map_touch_protects_from_eviction_and_reorders_expiry() -> None:
    m: TtlMap[str, int] = TtlMap(max_entries=2, ttl_s=1.0)
    m.set("a", 1, now=0.0)
    m.set("b", 2, now=0.25)
    assert m.touch("a", now=0.5)
    assert m.next_expiry() == 1.25
    m.set("c", 3, now=0.5)
    assert m.get("b", now=0.5) is None
    assert m.get("a", now=0.5) == 1
    assert m.evictions == 1


def test_ttl_map_touch_and_pop_on_absent_or_expired() -> None:
    m: TtlMap[str, int] = TtlMap(max_entries=4, ttl_s=1.0)
    assert not m.touch("x", now=0.0)
    m.set("x", 1, now=0.0)
    assert not m.touch("x", now=1.0)
    assert len(m) == 0
    m.set("y", 2, now=1.0)
    assert m.pop("y", now=1.5) == 2
    assert m.pop("y", now=1.5) is None
    m.set("z", 3, now=2.0)
    assert m.pop("z", now=3.0) is None
    assert len(m) == 0


def test_ttl_map_expire_returns_expired_oldest_first_and_stops_at_first_live() -> None:
    m: TtlMap[str, int] = TtlMap(max_entries=8, ttl_s=1.0)
    assert m.next_expiry() is None
    m.set("a", 1, now=0.0)
    m.set("b", 2, now=0.25)
    m.set("c", 3, now=0.5)
    m.set("a", 10, now=0.75)  # rewrite moves a behind c
    assert m.next_expiry() == 1.25
    assert m.expire(now=1.0) == []
    assert m.expire(now=1.5) == [("b", 2), ("c", 3)]
    assert len(m) == 1
    assert m.next_expiry() == 1.75
    assert m.expire(now=5.0) == [("a", 10)]
    assert m.next_expiry() is None


def test_ttl_map_evicts_least_recently_written_and_counts_it() -> None:
    m: TtlMap[str, int] = TtlMap(max_entries=2, ttl_s=10.0)
    m.set("a", 1, now=0.0)
    m.set("b", 2, now=0.1)
    assert m.get("a", now=0.2) == 1  # a read does not protect "a"
    m.set("c", 3, now=0.3)
    assert m.get("a", now=0.3) is None
    assert m.evictions == 1
    m.set("b", 20, now=0.4)  # a write does protect "b"
    m.set("d", 4, now=0.5)
    assert m.get("c", now=0.5) is None
    assert m.get("b", now=0.5) == 20
    assert m.evictions == 2
    assert len(m) == 2


def test_ttl_map_dropping_an_expired_entry_for_room_is_not_an_eviction() -> None:
    m: TtlMap[str, int] = TtlMap(max_entries=2, ttl_s=1.0)
    m.set("a", 1, now=0.0)
    m.set("b", 2, now=0.5)
    m.set("c", 3, now=1.0)  # "a" expired at 1.0
    assert m.evictions == 0
    assert len(m) == 2


def test_ttl_map_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        TtlMap[str, int](max_entries=0, ttl_s=1.0)
    with pytest.raises(ValueError, match="ttl_s"):
        TtlMap[str, int](max_entries=1, ttl_s=0.0)


# --- LruSet ---------------------------------------------------------------------------------


def test_lru_set_add_reports_new_members_and_refreshes_recency() -> None:
    s: LruSet[str] = LruSet(max_entries=2)
    assert s.add("a")
    assert s.add("b")
    assert not s.add("a")  # refresh: "b" is now the oldest
    assert s.add("c")
    assert "a" in s
    assert "b" not in s
    assert "c" in s
    assert s.evictions == 1


def test_lru_set_membership_test_does_not_refresh() -> None:
    s: LruSet[str] = LruSet(max_entries=2)
    s.add("a")
    s.add("b")
    assert "a" in s
    s.add("c")
    assert "a" not in s
    s.discard("b")
    s.discard("never")
    assert len(s) == 1


# --- SlidingWindowCounter -------------------------------------------------------------------


def test_counter_fires_at_n_silent_at_n_minus_1() -> None:
    threshold = 5
    hot: SlidingWindowCounter[str] = SlidingWindowCounter(8, window_s=10.0, max_events_per_key=8)
    cold: SlidingWindowCounter[str] = SlidingWindowCounter(8, window_s=10.0, max_events_per_key=8)
    hot_counts = [hot.add("src", now=i * 0.1) for i in range(threshold)]
    cold_counts = [cold.add("src", now=i * 0.1) for i in range(threshold - 1)]
    assert hot_counts == [1, 2, 3, 4, 5]
    assert hot_counts[-1] >= threshold
    assert cold_counts[-1] == threshold - 1


def test_counter_window_slides_and_is_half_open() -> None:
    c: SlidingWindowCounter[str] = SlidingWindowCounter(8, window_s=10.0, max_events_per_key=8)
    assert [c.add("src", now=t) for t in (0.0, 2.5, 5.0, 7.5)] == [1, 2, 3, 4]
    # The event at 0.0 is in (−0.1, 9.9] but not in (0.0, 10.0]: five events, never five at once.
    assert c.count("src", now=9.9) == 4
    assert c.add("src", now=10.0) == 4
    assert c.count("src", now=12.5) == 3
    assert c.count("src", now=19.9) == 1
    assert c.count("src", now=20.0) == 0
    assert len(c) == 0  # count() dropped the empty key


def test_counter_add_many_merges_equal_times() -> None:
    c: SlidingWindowCounter[str] = SlidingWindowCounter(8, window_s=1.0, max_events_per_key=100)
    assert c.add("k", now=0.0, n=3) == 3
    assert c.add("k", now=0.0, n=2) == 5
    assert c.add("k", now=0.5) == 6
    assert c.count("k", now=1.0) == 1
    with pytest.raises(ValueError, match="n must be"):
        c.add("k", now=1.0, n=0)


def test_counter_saturates_at_cap_keeping_the_most_recent_events() -> None:
    c: SlidingWindowCounter[str] = SlidingWindowCounter(8, window_s=10.0, max_events_per_key=3)
    assert [c.add("k", now=float(t)) for t in range(5)] == [1, 2, 3, 3, 3]
    assert c.saturations == 2
    # Kept events are 2.0, 3.0, 4.0: exactly the true count in (1.5, 11.5].
    assert c.count("k", now=11.5) == 3
    assert c.count("k", now=12.5) == 2
    assert c.add("k", now=13.0, n=5) == 3
    assert c.saturations == 2 + 3
    assert c.stats() == TableStats(entries=1, max_entries=8, evictions=0, saturations=5)


def test_counter_out_of_order_time_counts_as_latest_time_for_the_key() -> None:
    c: SlidingWindowCounter[str] = SlidingWindowCounter(8, window_s=1.0, max_events_per_key=8)
    c.add("k", now=5.0)
    assert c.add("k", now=4.0) == 2
    assert c.next_expiry() == 6.0
    assert c.expire(now=5.5) == 0
    assert c.count("k", now=5.5) == 2
    assert c.count("k", now=6.0) == 0


def test_counter_evicts_least_recently_added_key() -> None:
    c: SlidingWindowCounter[str] = SlidingWindowCounter(2, window_s=10.0, max_events_per_key=8)
    c.add("a", now=0.0)
    c.add("b", now=0.1)
    assert c.count("a", now=0.2) == 1  # count() does not refresh "a"
    c.add("c", now=0.3)
    assert c.count("a", now=0.3) == 0
    assert c.evictions == 1
    c.add("b", now=0.4)
    c.add("d", now=0.5)
    assert c.count("c", now=0.5) == 0
    assert c.count("b", now=0.5) == 2
    assert c.evictions == 2


def test_counter_expire_and_next_expiry() -> None:
    c: SlidingWindowCounter[str] = SlidingWindowCounter(8, window_s=1.0, max_events_per_key=8)
    assert c.next_expiry() is None
    c.add("a", now=0.0)
    c.add("b", now=0.5)
    c.add("a", now=0.75)
    assert c.next_expiry() == 1.5
    assert c.expire(now=1.4) == 0
    assert c.expire(now=1.5) == 1
    assert c.count("b", now=1.5) == 0
    assert c.count("a", now=1.5) == 1
    c.add("c", now=3.0)
    assert c.expire(now=3.0) == 1  # "a", whose last event left the window at 1.75
    assert len(c) == 1
    assert c.evictions == 0


def test_counter_dropping_an_empty_key_for_room_is_not_an_eviction() -> None:
    c: SlidingWindowCounter[str] = SlidingWindowCounter(1, window_s=1.0, max_events_per_key=8)
    c.add("a", now=0.0)
    c.add("b", now=1.0)
    assert c.evictions == 0
    c.add("c", now=1.5)
    assert c.evictions == 1


# --- DistinctCounter ------------------------------------------------------------------------


def test_distinct_counts_members_not_events() -> None:
    d: DistinctCounter[str, str] = DistinctCounter(8, window_s=10.0, max_members=8)
    assert [d.add("src", u, now=i * 0.1) for i, u in enumerate("aabab")] == [1, 1, 2, 2, 2]
    assert d.add("src", "c", now=0.5) == 3
    assert d.add("other", "a", now=0.6) == 1


def test_distinct_fires_at_n_silent_at_n_minus_1() -> None:
    threshold = 4
    d: DistinctCounter[str, str] = DistinctCounter(8, window_s=10.0, max_members=8)
    counts = [d.add("hot", f"user{i}", now=i * 0.1) for i in range(threshold)]
    assert counts[-1] == threshold
    counts = [d.add("cold", f"user{i}", now=i * 0.1) for i in range(threshold - 1)]
    counts += [d.add("cold", "user0", now=0.5)]  # a repeat is not a new member
    assert counts[-1] == threshold - 1


def test_distinct_window_slides_on_last_seen() -> None:
    d: DistinctCounter[str, str] = DistinctCounter(8, window_s=10.0, max_members=8)
    d.add("src", "a", now=0.0)
    d.add("src", "b", now=5.0)
    assert d.add("src", "c", now=10.0) == 2  # "a" left at 10.0
    d.add("src", "b", now=12.0)  # seen again: stays until 22.0
    assert d.count("src", now=15.0) == 2
    assert d.count("src", now=20.0) == 1
    assert d.count("src", now=22.0) == 0
    assert len(d) == 0


def test_distinct_saturates_at_max_members() -> None:
    d: DistinctCounter[str, str] = DistinctCounter(8, window_s=10.0, max_members=3)
    assert [d.add("src", u, now=float(i)) for i, u in enumerate("abcde")] == [1, 2, 3, 3, 3]
    assert d.saturations == 2
    # Kept members are c@2, d@3, e@4: exactly the true distinct count in (2.5, 12.5].
    assert d.count("src", now=12.5) == 2
    assert d.stats().saturations == 2


def test_distinct_evicts_least_recently_added_key_and_expires() -> None:
    d: DistinctCounter[str, str] = DistinctCounter(2, window_s=1.0, max_members=8)
    d.add("a", "x", now=0.0)
    d.add("b", "x", now=0.25)
    assert d.count("a", now=0.25) == 1
    d.add("c", "x", now=0.5)
    assert d.count("a", now=0.5) == 0
    assert d.evictions == 1
    assert d.next_expiry() == 1.25
    assert d.expire(now=1.25) == 1
    assert d.expire(now=2.0) == 1
    assert len(d) == 0
    assert d.next_expiry() is None


def test_distinct_out_of_order_time_keeps_last_seen_order() -> None:
    d: DistinctCounter[str, str] = DistinctCounter(8, window_s=1.0, max_members=8)
    d.add("k", "a", now=5.0)
    assert d.add("k", "b", now=4.0) == 2
    assert d.count("k", now=5.5) == 2
    assert d.count("k", now=6.0) == 0


# --- Bounded state under a hostile key space (design.md §6.6) --------------------------------


def test_hostile_key_space_stays_bounded_and_counts_evictions() -> None:
    ttl: TtlMap[str, int] = TtlMap(MAX, ttl_s=60.0)
    lru: LruSet[str] = LruSet(MAX)
    rate: SlidingWindowCounter[str] = SlidingWindowCounter(MAX, window_s=60.0, max_events_per_key=4)
    fan: DistinctCounter[str, str] = DistinctCounter(MAX, window_s=60.0, max_members=4)
    tables = (ttl, lru, rate, fan)
    for i in range(10 * MAX):
        key, now = f"198.51.100.{i}", i * 0.01
        ttl.set(key, i, now)
        lru.add(key)
        rate.add(key, now)
        fan.add(key, f"user{i}", now)
        for table in tables:
            assert len(table) <= MAX
    for table in tables:
        assert len(table) == table.state_size() == MAX
        assert table.evictions == 9 * MAX
    total = TableStats.total(tables)
    assert total == TableStats(
        entries=4 * MAX, max_entries=4 * MAX, evictions=4 * 9 * MAX, saturations=0
    )


def test_hostile_members_per_key_stay_bounded() -> None:
    rate: SlidingWindowCounter[str] = SlidingWindowCounter(4, window_s=60.0, max_events_per_key=16)
    fan: DistinctCounter[str, str] = DistinctCounter(4, window_s=60.0, max_members=16)
    for i in range(10 * 16):
        rate.add("src", i * 0.01)  # distinct times: one run per event
        fan.add("src", f"user{i}", i * 0.01)
    assert rate.count("src", 2.0) == 16
    assert fan.count("src", 2.0) == 16
    assert rate.saturations == fan.saturations == 9 * 16
    assert len(rate._data["src"].events) == 16


# --- Reference models (Hypothesis) ----------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
STEP = st.integers(min_value=0, max_value=6).map(lambda ticks: ticks * 0.25)


@dataclass
class NaiveCounter:
    """Every event kept in a list; LRU by a write sequence number; O(n) everything."""

    max_entries: int
    window_s: float
    cap: int
    events: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    seq: int = 0
    evictions: int = 0
    saturations: int = 0

    def _true(self, key: str, now: float) -> int:
        return sum(n for t, n in self.events.get(key, []) if t > now - self.window_s)

    def add(self, key: str, now: float, n: int) -> int:
        if key not in self.events and len(self.events) >= self.max_entries:
            victim = min(self.written, key=self.written.__getitem__)
            if self.last[victim] > now - self.window_s:
                self.evictions += 1
            self._drop(victim)
        stored = min(self.cap, self._true(key, now))
        self.saturations += max(0, stored + n - self.cap)
        self.events.setdefault(key, []).append((now, n))
        self.seq += 1
        self.written[key] = self.seq
        self.last[key] = now
        return min(self.cap, self._true(key, now))

    def count(self, key: str, now: float) -> int:
        if key not in self.events:
            return 0
        result = min(self.cap, self._true(key, now))
        if result == 0:
            self._drop(key)
        return result

    def expire(self, now: float) -> int:
        gone = [k for k, t in self.last.items() if t <= now - self.window_s]
        for key in gone:
            self._drop(key)
        return len(gone)

    def _drop(self, key: str) -> None:
        del self.events[key], self.written[key], self.last[key]


COUNTER_OPS = st.lists(
    st.tuples(
        st.sampled_from(["add", "add", "add", "count", "expire"]),
        KEYS,
        STEP,
        st.integers(min_value=1, max_value=3),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=COUNTER_OPS,
    max_entries=st.integers(min_value=1, max_value=4),
    window_ticks=st.integers(min_value=1, max_value=12),
    cap=st.integers(min_value=1, max_value=6),
)
def test_sliding_window_counter_matches_naive_model(
    ops: list[tuple[str, str, float, int]], max_entries: int, window_ticks: int, cap: int
) -> None:
    window_s = window_ticks * 0.25
    real: SlidingWindowCounter[str] = SlidingWindowCounter(max_entries, window_s, cap)
    model = NaiveCounter(max_entries, window_s, cap)
    now = 0.0
    for op, key, step, n in ops:
        now += step
        if op == "add":
            assert real.add(key, now, n) == model.add(key, now, n)
        elif op == "count":
            assert real.count(key, now) == model.count(key, now)
        else:
            assert real.expire(now) == model.expire(now)
        assert len(real) == len(model.events) <= max_entries
        assert real.evictions == model.evictions
        assert real.saturations == model.saturations


@dataclass
class NaiveTtlMap:
    """Entries with deadlines and write sequence numbers; LRU victim found by a full scan."""

    max_entries: int
    ttl_s: float
    entries: dict[str, tuple[float, int, int]] = field(default_factory=dict)  # deadline, seq, v
    seq: int = 0
    evictions: int = 0

    def set(self, key: str, value: int, now: float) -> None:
        if key not in self.entries and len(self.entries) >= self.max_entries:
            victim = min(self.entries, key=lambda k: self.entries[k][1])
            if self.entries.pop(victim)[0] > now:
                self.evictions += 1
        self.seq += 1
        self.entries[key] = (now + self.ttl_s, self.seq, value)

    def _live(self, key: str, now: float) -> tuple[float, int, int] | None:
        item = self.entries.get(key)
        if item is not None and item[0] <= now:
            del self.entries[key]
            return None
        return item

    def get(self, key: str, now: float) -> int | None:
        item = self._live(key, now)
        return None if item is None else item[2]

    def touch(self, key: str, now: float) -> bool:
        item = self._live(key, now)
        if item is None:
            return False
        self.seq += 1
        self.entries[key] = (now + self.ttl_s, self.seq, item[2])
        return True

    def pop(self, key: str, now: float) -> int | None:
        item = self._live(key, now)
        if item is None:
            return None
        del self.entries[key]
        return item[2]

    def expire(self, now: float) -> list[tuple[str, int]]:
        gone = sorted((k for k, e in self.entries.items() if e[0] <= now), key=self._seq)
        return [(k, self.entries.pop(k)[2]) for k in gone]

    def _seq(self, key: str) -> int:
        return self.entries[key][1]


TTL_OPS = st.lists(
    st.tuples(
        st.sampled_from(["set", "set", "get", "touch", "pop", "expire"]),
        KEYS,
        STEP,
        st.integers(min_value=0, max_value=99),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(
    ops=TTL_OPS,
    max_entries=st.integers(min_value=1, max_value=4),
    ttl_ticks=st.integers(min_value=1, max_value=12),
)
def test_ttl_map_matches_naive_model(
    ops: list[tuple[str, str, float, int]], max_entries: int, ttl_ticks: int
) -> None:
    real: TtlMap[str, int] = TtlMap(max_entries, ttl_ticks * 0.25)
    model = NaiveTtlMap(max_entries, ttl_ticks * 0.25)
    now = 0.0
    for op, key, step, value in ops:
        now += step
        if op == "set":
            real.set(key, value, now)
            model.set(key, value, now)
        elif op == "get":
            assert real.get(key, now) == model.get(key, now)
        elif op == "touch":
            assert real.touch(key, now) == model.touch(key, now)
        elif op == "pop":
            assert real.pop(key, now) == model.pop(key, now)
        else:
            assert real.expire(now) == model.expire(now)
        assert len(real) == len(model.entries) <= max_entries
        assert real.evictions == model.evictions
        deadlines = [e[0] for e in model.entries.values()]
        assert real.next_expiry() == (min(deadlines) if deadlines else None)
