"""The default blocklist store: in memory, bounded, no clock (``now`` is passed in).

When full (``max_entries`` live or not-yet-expired entries) an add of a new network first drops
what has ended, then evicts the *automatic* (finding/exchange) timed ban that would end soonest:
it was going to be lifted first anyway, and a flood of spoofed sources must not make the store
refuse the ban of a real attacker. Operator bans (cli/config) and permanent bans are never
evicted; if only those remain, the add raises :class:`StoreFull`. Both are counted
(``evictions()``, ``refusals``).

Lookups cost one dict probe per distinct prefix length present (at most 32 or 128).
"""

from __future__ import annotations

import builtins
import heapq
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable

from sipwarden.store.base import (
    AUTOMATIC_ORIGINS,
    AddRequest,
    BanHistory,
    BlockEntry,
    BlocklistSettings,
    Origin,
    StoreFull,
    check_request,
    normalize_address,
    normalize_network,
    plan_add,
    sort_key,
)

__all__ = ["MemoryBlocklistStore"]


def _key(network: str) -> tuple[int, int, int]:
    parsed = ipaddress.ip_network(network)
    return (parsed.version, parsed.prefixlen, int(parsed.network_address))


class MemoryBlocklistStore:
    """A :class:`~sipwarden.store.base.BlocklistStore` held in this process."""

    def __init__(self, settings: BlocklistSettings | None = None) -> None:
        self.settings = settings or BlocklistSettings()
        self._entries: dict[str, BlockEntry] = {}
        # (version, prefixlen, network int) -> canonical network text, for longest-prefix match.
        self._index: dict[tuple[int, int, int], str] = {}
        # version -> {prefixlen: count}; lookups only probe lengths that are present.
        self._lengths: dict[int, dict[int, int]] = {4: {}, 6: {}}
        # Lazy-deletion heaps of (expires, network): every timed entry, and the evictable ones.
        self._expiry: list[tuple[float, str]] = []
        self._evictable: list[tuple[float, str]] = []
        self._history: OrderedDict[str, BanHistory] = OrderedDict()
        self._evictions = 0
        self.history_evictions = 0
        self.refusals = 0

    # -- reads -------------------------------------------------------------------------------

    def get(self, ip: str, now: float) -> BlockEntry | None:
        address = normalize_address(ip)
        if address is None:
            return None
        lengths = self._lengths[address.version]
        value = int(address)
        width = address.max_prefixlen
        for prefixlen in sorted(lengths, reverse=True):
            masked = value & (((1 << prefixlen) - 1) << (width - prefixlen))
            network = self._index.get((address.version, prefixlen, masked))
            if network is not None:
                entry = self._entries[network]
                if entry.active(now):
                    return entry
        return None

    def list(self, now: float) -> builtins.list[BlockEntry]:
        return sorted((e for e in self._entries.values() if e.active(now)), key=sort_key)

    def state_size(self) -> int:
        return len(self._entries) + len(self._history)

    def evictions(self) -> int:
        return self._evictions

    def live_networks(self, now: float) -> builtins.list[str]:
        """The networks of the live entries, unsorted (cheaper than :meth:`list`)."""
        return [network for network, entry in self._entries.items() if entry.active(now)]

    def held(self, network: str) -> BlockEntry | None:
        """The entry stored for exactly ``network`` (canonical), live or not yet expired away."""
        return self._entries.get(network)

    def history(self, network: str) -> BanHistory | None:
        """The remembered end of ``network``'s last ban (for tests and the dashboard)."""
        return self._history.get(normalize_network(network))

    # -- writes ------------------------------------------------------------------------------

    def add(
        self,
        network: str,
        now: float,
        *,
        ttl_s: float | None,
        reason: str,
        origin: Origin,
        ref: str | None = None,
    ) -> BlockEntry:
        canonical = normalize_network(network)
        existing = self._entries.get(canonical)
        entry = plan_add(
            existing,
            self._history.get(canonical),
            network=canonical,
            now=now,
            ttl_s=ttl_s,
            reason=reason,
            origin=origin,
            ref=ref,
            settings=self.settings,
        )
        if existing is None and len(self._entries) >= self.settings.max_entries:
            self.expire(now)
            if len(self._entries) >= self.settings.max_entries and not self._evict_one(now):
                self.refusals += 1
                raise StoreFull(canonical, self.settings.max_entries)
        if existing is not None:
            self._unindex(existing)
        self._history.pop(canonical, None)
        self._put(entry)
        return entry

    def add_many(self, requests: Iterable[AddRequest]) -> builtins.list[BlockEntry | None]:
        checked = [check_request(request) for request in requests]
        stored: builtins.list[BlockEntry | None] = []
        for network, now, ttl_s, reason, origin, ref in checked:
            try:
                stored.append(
                    self.add(network, now, ttl_s=ttl_s, reason=reason, origin=origin, ref=ref)
                )
            except StoreFull:
                stored.append(None)
        return stored

    def put(self, entry: BlockEntry, now: float) -> None:
        """Hold ``entry`` exactly as given (no escalation): for a replica of another store, e.g.
        the gateway's in-memory copy of the SQLite blocklist. Same room rules as ``add``."""
        existing = self._entries.get(entry.network)
        if existing is None and len(self._entries) >= self.settings.max_entries:
            self.expire(now)
            if len(self._entries) >= self.settings.max_entries and not self._evict_one(now):
                self.refusals += 1
                raise StoreFull(entry.network, self.settings.max_entries)
        if existing is not None:
            self._unindex(existing)
        self._history.pop(entry.network, None)  # a held entry carries its own ban_count
        self._put(entry)

    def remove(self, network: str) -> bool:
        canonical = normalize_network(network)
        self._history.pop(canonical, None)
        entry = self._entries.get(canonical)
        if entry is None:
            return False
        self._unindex(entry)
        return True

    def expire(self, now: float) -> int:
        removed = 0
        while self._expiry and self._expiry[0][0] <= now:
            expires, network = heapq.heappop(self._expiry)
            entry = self._entries.get(network)
            if entry is None or entry.expires != expires:
                continue  # stale heap item: the entry was removed, replaced or extended
            self._unindex(entry)
            self._remember(network, BanHistory(entry.ban_count, expires))
            removed += 1
        horizon = now - self.settings.escalation_memory_s
        # History is kept in end order except for re-inserts, so stop at the first recent one.
        while self._history:
            network, record = next(iter(self._history.items()))
            if record.ended >= horizon:
                break
            del self._history[network]
        return removed

    # -- internals ---------------------------------------------------------------------------

    def _put(self, entry: BlockEntry) -> None:
        self._entries[entry.network] = entry
        version, prefixlen, value = _key(entry.network)
        self._index[(version, prefixlen, value)] = entry.network
        lengths = self._lengths[version]
        lengths[prefixlen] = lengths.get(prefixlen, 0) + 1
        if entry.expires is not None:
            heapq.heappush(self._expiry, (entry.expires, entry.network))
            if entry.origin in AUTOMATIC_ORIGINS:
                heapq.heappush(self._evictable, (entry.expires, entry.network))
        self._compact()

    def _unindex(self, entry: BlockEntry) -> None:
        del self._entries[entry.network]
        version, prefixlen, value = _key(entry.network)
        del self._index[(version, prefixlen, value)]
        lengths = self._lengths[version]
        lengths[prefixlen] -= 1
        if not lengths[prefixlen]:
            del lengths[prefixlen]

    def _evict_one(self, now: float) -> bool:
        while self._evictable:
            expires, network = heapq.heappop(self._evictable)
            entry = self._entries.get(network)
            if entry is None or entry.expires != expires or entry.origin not in AUTOMATIC_ORIGINS:
                continue
            self._unindex(entry)
            self._remember(network, BanHistory(entry.ban_count, now))  # the ban ended now
            self._evictions += 1
            return True
        return False

    def _remember(self, network: str, record: BanHistory) -> None:
        if self.settings.max_history == 0:
            return
        self._history.pop(network, None)
        self._history[network] = record
        if len(self._history) > self.settings.max_history:
            self._history.popitem(last=False)
            self.history_evictions += 1

    def _compact(self) -> None:
        # Extending a ban leaves its old heap item behind; rebuild before stale items dominate.
        limit = 2 * len(self._entries) + 64
        if len(self._expiry) > limit:
            self._expiry = [
                (e.expires, e.network) for e in self._entries.values() if e.expires is not None
            ]
            heapq.heapify(self._expiry)
        if len(self._evictable) > limit:
            self._evictable = [
                (e.expires, e.network)
                for e in self._entries.values()
                if e.expires is not None and e.origin in AUTOMATIC_ORIGINS
            ]
            heapq.heapify(self._evictable)
