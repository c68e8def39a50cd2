"""Bounded state for detectors: every table keyed by attacker-controlled data lives here.

Owns :class:`TtlMap`, :class:`LruSet`, :class:`SlidingWindowCounter` and
:class:`DistinctCounter`, plus :class:`TableStats`, the record the engine sums to report state
size and evictions. Stdlib only; like the rest of ``detect/`` this module is sans-IO and must not
import ``time`` or read any clock (design.md §2.1): every time-dependent method takes ``now``.

Theory of operation
-------------------

Source IPs, user names, Call-IDs and dialled numbers are chosen by whoever sends the packets, so
any ``dict`` keyed by them is a memory-exhaustion lever (design.md §2.6). Every table here:

* has ``max_entries`` (number of keys) and never holds more than that many;
* evicts the **least recently written** key when a new key arrives at capacity and counts it in
  ``evictions`` — an eviction means detection state was lost, so the engine surfaces the counter
  as a metric and in ``analyze`` stats (an undersized table or an attack on the detector itself);
* reports ``len(table)`` / ``state_size()`` and ``stats()`` (:class:`TableStats`), which add up.

An entry that had already expired when it is dropped to make room is *not* an eviction: nothing
was lost.

All tables keep one insertion order, **by last write** (an ``OrderedDict`` whose entry moves to
the end on every write). Because a write at time ``now`` gives the entry the latest deadline of
any entry, that order is also deadline order, so the oldest entries are at the front:

* ``expire(now)`` pops from the front until it meets a live entry — amortised O(1) per expired
  entry, never a full scan;
* LRU eviction pops the front too, i.e. the entry that would expire soonest.

Reads (``get``, ``count``, ``in``) do not reorder entries, or the front would stop being the
earliest deadline.

Time is assumed non-decreasing, as it is for a live adapter and a pcap in capture order. If a
caller passes an earlier ``now`` (reordered packets), no method fails and no read ever returns an
entry that is expired at that ``now``; the counters treat a per-key time earlier than the latest
one seen for that key as that latest time, and ``expire`` may return an entry later than its
deadline because it stops at the first live entry.

The counters are exact up to a per-key cap (``max_events_per_key``, ``max_members``): past the
cap the reported count saturates at the cap, which is enough for any threshold at or below it.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

__all__ = [
    "BoundedTable",
    "DistinctCounter",
    "LruSet",
    "SlidingWindowCounter",
    "TableStats",
    "TtlMap",
]

K = TypeVar("K", bound=Hashable)
M = TypeVar("M", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class TableStats:
    """Size and loss counters of one table, or the sum of several (``a + b``, :meth:`total`).

    ``entries`` and ``max_entries`` count keys. ``evictions`` counts keys dropped while still live
    because the table was full. ``saturations`` counts per-key events or members dropped because
    one key reached its own cap (only the counters have one); the reported count then saturates.
    """

    entries: int = 0
    max_entries: int = 0
    evictions: int = 0
    saturations: int = 0

    def __add__(self, other: TableStats) -> TableStats:
        return TableStats(
            self.entries + other.entries,
            self.max_entries + other.max_entries,
            self.evictions + other.evictions,
            self.saturations + other.saturations,
        )

    @classmethod
    def total(cls, tables: Iterable[BoundedTable]) -> TableStats:
        """Sum the stats of ``tables`` (a detector's or the whole engine's state)."""
        result = cls()
        for table in tables:
            result = result + table.stats()
        return result


class BoundedTable(Protocol):
    """What every table here offers, so a detector's ``state_size()`` can sum its tables."""

    @property
    def max_entries(self) -> int: ...

    @property
    def evictions(self) -> int: ...

    def __len__(self) -> int: ...

    def state_size(self) -> int: ...

    def stats(self) -> TableStats: ...


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


class _Table:
    """What every bounded table shares: the bound, its counters, its size.

    ``evictions``: live entries dropped to stay within ``max_entries``; ``saturations``: events
    or members dropped because one key reached its own cap (0 for tables without one).
    """

    __slots__ = ("_data", "_evictions", "_max_entries", "_saturations")

    _data: OrderedDict[Any, Any]

    def __init__(self, max_entries: int) -> None:
        _check_positive("max_entries", max_entries)
        self._max_entries = max_entries
        self._evictions = 0
        self._saturations = 0

    @property
    def max_entries(self) -> int:
        return self._max_entries

    @property
    def evictions(self) -> int:
        return self._evictions

    @property
    def saturations(self) -> int:
        return self._saturations

    def __len__(self) -> int:
        """Entries held (for TTL tables, expired ones not yet removed by ``expire`` too)."""
        return len(self._data)

    def state_size(self) -> int:
        return len(self._data)

    def stats(self) -> TableStats:
        return TableStats(len(self._data), self._max_entries, self._evictions, self._saturations)


class TtlMap(_Table, Generic[K, V]):
    """A map whose entries expire ``ttl_s`` seconds after they were last written.

    Use it for per-key state that must be forgotten (a pending INVITE per Call-ID, the last
    binding per AOR). An entry written at ``t`` is live while ``now < t + ttl_s``.

    *Touch semantics*: ``set`` and ``touch`` restart an entry's lifetime and make it the most
    recently written; ``get`` and ``pop`` do not, so a key an attacker keeps *reading* still
    expires, and the LRU order stays the deadline order (see the module docstring).

    ``expire(now)`` is the only way to see entries that expired: ``get``, ``touch``, ``pop`` and
    ``set`` silently discard an expired entry they meet. A detector that must act on every
    expiry calls ``expire(now)`` from ``advance(now)`` before anything else.

    ``get`` returns ``None`` for "absent or expired"; use a non-optional ``V`` to keep that
    unambiguous.
    """

    __slots__ = ("ttl_s",)

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        super().__init__(max_entries)
        _check_positive("ttl_s", ttl_s)
        self.ttl_s = ttl_s
        # key -> (deadline, value); ordered by last write, hence by deadline.
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def set(self, key: K, value: V, now: float) -> tuple[K, V] | None:
        """Store ``value`` under ``key`` until ``now + ttl_s``; evict the oldest entry if full.

        Returns the evicted live entry, if any (an owner that must undo its effects - a call
        counted as concurrent - needs it); an expired entry dropped on the way is not returned.
        """
        data = self._data
        evicted: tuple[K, V] | None = None
        if key in data:
            data.move_to_end(key)
        elif len(data) >= self._max_entries:
            old_key, (deadline, old_value) = data.popitem(last=False)
            if deadline > now:
                self._evictions += 1
                evicted = (old_key, old_value)
        data[key] = (now + self.ttl_s, value)
        return evicted

    def get(self, key: K, now: float) -> V | None:
        """The live value for ``key``, or ``None``; an expired entry is removed."""
        item = self._data.get(key)
        if item is None:
            return None
        if item[0] <= now:
            del self._data[key]
            return None
        return item[1]

    def touch(self, key: K, now: float) -> bool:
        """Restart the lifetime of a live entry (as if re-``set``); ``False`` if absent/expired."""
        item = self._data.get(key)
        if item is None:
            return False
        if item[0] <= now:
            del self._data[key]
            return False
        self._data[key] = (now + self.ttl_s, item[1])
        self._data.move_to_end(key)
        return True

    def pop(self, key: K, now: float) -> V | None:
        """Remove ``key`` and return its live value, or ``None`` if absent or expired."""
        item = self._data.pop(key, None)
        if item is None or item[0] <= now:
            return None
        return item[1]

    def expire(self, now: float) -> list[tuple[K, V]]:
        """Remove and return the entries expired at ``now``, oldest first.

        Pops from the front until the first live entry, so the cost is proportional to what is
        removed, not to the size of the map.
        """
        data = self._data
        expired: list[tuple[K, V]] = []
        while data:
            key, (deadline, value) = next(iter(data.items()))
            if deadline > now:
                break
            del data[key]
            expired.append((key, value))
        return expired

    def next_expiry(self) -> float | None:
        """The earliest deadline held (for ``Detector.next_deadline``), or ``None`` if empty."""
        if not self._data:
            return None
        return next(iter(self._data.values()))[0]


class LruSet(_Table, Generic[K]):
    """A set that forgets its least recently added member when full.

    Use it for "seen before" questions where forgetting only costs a repeat (user agents already
    reported, nonces already seen). ``add`` refreshes a member's recency; ``in`` does not.
    """

    __slots__ = ()

    def __init__(self, max_entries: int) -> None:
        super().__init__(max_entries)
        self._data: OrderedDict[K, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def add(self, key: K) -> bool:
        """Add or refresh ``key``; ``True`` if it was not already a member."""
        data = self._data
        if key in data:
            data.move_to_end(key)
            return False
        if len(data) >= self._max_entries:
            data.popitem(last=False)
            self._evictions += 1
        data[key] = None
        return True

    def discard(self, key: K) -> None:
        """Remove ``key`` if present."""
        self._data.pop(key, None)


class _Events:
    """One key's recent events for SlidingWindowCounter: ``(time, n)`` runs, oldest first."""

    __slots__ = ("events", "last", "total")

    def __init__(self, now: float) -> None:
        self.events: deque[tuple[float, int]] = deque()
        self.total = 0
        self.last = now

    def prune(self, cutoff: float) -> None:
        events = self.events
        while events and events[0][0] <= cutoff:
            self.total -= events.popleft()[1]


class SlidingWindowCounter(_Table, Generic[K]):
    """Per-key count of events in the sliding window ``(now - window_s, now]``.

    Use it for rate thresholds (REGISTERs per source per minute). The counter is **exact**, not
    bucketed: each key keeps the times of its recent events, with equal times merged into one
    ``(time, n)`` run, so "fires at N, silent at N−1" and "the event at ``t`` leaves the window at
    ``t + window_s``" hold to the float.

    *Cap*: a key keeps at most ``max_events_per_key`` events (its most recent ones), so ``add``
    and ``count`` return ``min(true count, max_events_per_key)``. Set the cap at or above the
    detector's threshold and the answer to "reached N?" stays exact; each event dropped past the
    cap is counted in ``saturations``. Memory is bounded by ``max_entries ×
    max_events_per_key`` runs.

    Keys are ordered by last ``add``; when a new key arrives at ``max_entries`` the least recently
    added key is evicted (counted in ``evictions`` unless its window was already empty).
    ``count`` does not refresh a key.
    """

    __slots__ = ("max_events_per_key", "window_s")

    def __init__(self, max_entries: int, window_s: float, max_events_per_key: int) -> None:
        super().__init__(max_entries)
        _check_positive("window_s", window_s)
        _check_positive("max_events_per_key", max_events_per_key)
        self.window_s = window_s
        self.max_events_per_key = max_events_per_key
        self._data: OrderedDict[K, _Events] = OrderedDict()

    def add(self, key: K, now: float, n: int = 1) -> int:
        """Record ``n`` events for ``key`` at ``now``; return the count in the window ending now."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n!r}")
        data = self._data
        window = data.get(key)
        if window is not None:
            data.move_to_end(key)
        else:
            if len(data) >= self._max_entries:
                _, oldest = data.popitem(last=False)
                if oldest.last > now - self.window_s:
                    self._evictions += 1
            window = data[key] = _Events(now)
        # Keep each key's events in time order even if packets arrive out of order.
        now = max(now, window.last)
        window.last = now
        window.prune(now - self.window_s)
        events = window.events
        if events and events[-1][0] == now:
            events[-1] = (now, events[-1][1] + n)
        else:
            events.append((now, n))
        window.total += n
        excess = window.total - self.max_events_per_key
        if excess > 0:
            self._saturations += excess
            window.total -= excess
            while excess:
                t, count = events[0]
                if count <= excess:
                    events.popleft()
                    excess -= count
                else:
                    events[0] = (t, count - excess)
                    excess = 0
        return window.total

    def count(self, key: K, now: float) -> int:
        """The count for ``key`` in ``(now - window_s, now]``, without recording an event."""
        window = self._data.get(key)
        if window is None:
            return 0
        window.prune(max(now, window.last) - self.window_s)
        if not window.total:
            del self._data[key]
        return window.total

    def expire(self, now: float) -> int:
        """Drop keys whose last event left the window by ``now``; return how many were dropped."""
        data = self._data
        cutoff = now - self.window_s
        dropped = 0
        while data:
            key, window = next(iter(data.items()))
            if window.last > cutoff:
                break
            del data[key]
            dropped += 1
        return dropped

    def next_expiry(self) -> float | None:
        """When the least recently added key's window empties, or ``None`` if empty."""
        if not self._data:
            return None
        return next(iter(self._data.values())).last + self.window_s


class DistinctCounter(_Table, Generic[K, M]):
    """Per key, the number of distinct members seen in ``(now - window_s, now]``.

    Use it for fan-out signals: distinct user names tried per source, distinct targets called per
    account. Each key keeps its members with the time each was last seen, least recent first.

    *Cap*: a key keeps at most ``max_members`` members (its most recently seen ones), so ``add``
    and ``count`` return ``min(true distinct count, max_members)`` — the count saturates at the
    cap, which stays exact for any threshold at or below it. Each member dropped to make room is
    counted in ``saturations``. Memory is bounded by ``max_entries × max_members`` members.

    Keys are ordered by last ``add``; when a new key arrives at ``max_entries`` the least recently
    added key is evicted (counted in ``evictions`` unless its window was already empty).
    ``count`` does not refresh a key.
    """

    __slots__ = ("max_members", "window_s")

    def __init__(self, max_entries: int, window_s: float, max_members: int) -> None:
        super().__init__(max_entries)
        _check_positive("window_s", window_s)
        _check_positive("max_members", max_members)
        self.window_s = window_s
        self.max_members = max_members
        # key -> (member -> last seen), each ordered least recently seen first.
        self._data: OrderedDict[K, OrderedDict[M, float]] = OrderedDict()

    @staticmethod
    def _last_seen(members: OrderedDict[M, float]) -> float:
        return next(reversed(members.values()))

    @staticmethod
    def _prune(members: OrderedDict[M, float], cutoff: float) -> None:
        while members:
            member, seen = next(iter(members.items()))
            if seen > cutoff:
                break
            del members[member]

    def add(self, key: K, member: M, now: float) -> int:
        """Record ``member`` for ``key`` at ``now``; return the distinct count in the window."""
        data = self._data
        members = data.get(key)
        if members is not None:
            data.move_to_end(key)
            # Keep members in last-seen order even if packets arrive out of order.
            now = max(now, self._last_seen(members))
        else:
            if len(data) >= self._max_entries:
                _, oldest = data.popitem(last=False)
                if self._last_seen(oldest) > now - self.window_s:
                    self._evictions += 1
            members = data[key] = OrderedDict()
        self._prune(members, now - self.window_s)
        members[member] = now
        members.move_to_end(member)
        if len(members) > self.max_members:
            members.popitem(last=False)
            self._saturations += 1
        return len(members)

    def count(self, key: K, now: float) -> int:
        """The distinct count for ``key`` in ``(now - window_s, now]``, without adding."""
        members = self._data.get(key)
        if members is None:
            return 0
        self._prune(members, max(now, self._last_seen(members)) - self.window_s)
        if not members:
            del self._data[key]
        return len(members)

    def expire(self, now: float) -> int:
        """Drop keys whose members all left the window by ``now``; return how many were dropped."""
        data = self._data
        cutoff = now - self.window_s
        dropped = 0
        while data:
            key, members = next(iter(data.items()))
            if self._last_seen(members) > cutoff:
                break
            del data[key]
            dropped += 1
        return dropped

    def next_expiry(self) -> float | None:
        """When the least recently added key's window empties, or ``None`` if empty."""
        if not self._data:
            return None
        return self._last_seen(next(iter(self._data.values()))) + self.window_s
