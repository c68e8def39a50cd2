"""The memory store against a naive reference model (Hypothesis stateful test): same answers to
get/list/add/remove/expire for any sequence of operations, within its bounds."""

from __future__ import annotations

import ipaddress
from collections import OrderedDict

from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from sipwarden.store import BlockEntry, BlocklistSettings, MemoryBlocklistStore, StoreFull
from sipwarden.store.base import AUTOMATIC_ORIGINS, BanHistory, Origin, plan_add

SETTINGS = BlocklistSettings(max_entries=6, max_history=4, max_ttl_s=400, escalation_memory_s=200)

# A small universe so that networks nest, repeat and collide.
UNIVERSE = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3",
    "10.1.2.4",
    "10.9.0.1",
    "2001:db8::/32",
    "2001:db8:1::/48",
    "2001:db8:1::1",
    "192.0.2.1",
]
NETWORKS = st.sampled_from(UNIVERSE)
ADDRESSES = st.sampled_from(
    [
        "10.1.2.3",
        "10.1.2.4",
        "10.1.2.9",
        "10.1.7.7",
        "10.9.0.1",
        "10.200.0.1",
        "11.0.0.1",
        "2001:db8:1::1",
        "2001:db8:1::2",
        "2001:db8:2::1",
        "192.0.2.1",
        "::ffff:10.1.2.3",
    ]
)
ORIGINS: list[Origin] = ["finding", "exchange", "cli", "config"]


class Model:
    """Obviously-correct and slow: linear scans everywhere."""

    def __init__(self) -> None:
        self.entries: dict[str, BlockEntry] = {}
        self.history: OrderedDict[str, BanHistory] = OrderedDict()

    def remember(self, network: str, record: BanHistory) -> None:
        self.history.pop(network, None)
        self.history[network] = record
        if len(self.history) > SETTINGS.max_history:
            self.history.popitem(last=False)

    def expire(self, now: float) -> int:
        ended = sorted(
            (e.expires, n)
            for n, e in self.entries.items()
            if e.expires is not None and e.expires <= now
        )
        for expires, network in ended:
            self.remember(network, BanHistory(self.entries.pop(network).ban_count, expires))
        # The store forgets history past the escalation memory, oldest first, stopping at the
        # first recent record (records are nearly in end order); forgetting them is invisible to
        # escalation but frees max_history slots, so the model forgets the same way.
        while self.history:
            network, record = next(iter(self.history.items()))
            if record.ended >= now - SETTINGS.escalation_memory_s:
                break
            del self.history[network]
        return len(ended)

    def add(self, network: str, now: float, ttl: float | None, origin: Origin) -> BlockEntry:
        existing = self.entries.get(network)
        entry = plan_add(
            existing,
            self.history.get(network),
            network=network,
            now=now,
            ttl_s=ttl,
            reason="r",
            origin=origin,
            ref=None,
            settings=SETTINGS,
        )
        if existing is None and len(self.entries) >= SETTINGS.max_entries:
            self.expire(now)
            if len(self.entries) >= SETTINGS.max_entries:
                victims = sorted(
                    (e.expires, n)
                    for n, e in self.entries.items()
                    if e.expires is not None and e.origin in AUTOMATIC_ORIGINS
                )
                if not victims:
                    raise StoreFull(network, SETTINGS.max_entries)
                victim = victims[0][1]
                self.remember(victim, BanHistory(self.entries.pop(victim).ban_count, now))
        self.history.pop(network, None)
        self.entries[network] = entry
        return entry

    def get(self, ip: str, now: float) -> BlockEntry | None:
        address = ipaddress.ip_address(ip)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        live = [
            e
            for e in self.entries.values()
            if e.active(now) and address in ipaddress.ip_network(e.network)
        ]
        return max(live, key=lambda e: ipaddress.ip_network(e.network).prefixlen, default=None)


class MemoryStoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryBlocklistStore(SETTINGS)
        self.model = Model()
        self.now = 1000.0

    @rule(dt=st.sampled_from([0.0, 1.0, 50.0, 150.0, 500.0]))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule(
        network=NETWORKS,
        ttl=st.one_of(st.none(), st.sampled_from([10.0, 100.0, 300.0])),
        origin=st.sampled_from(ORIGINS),
    )
    def add(self, network: str, ttl: float | None, origin: Origin) -> None:
        try:
            expected: BlockEntry | StoreFull = self.model.add(network, self.now, ttl, origin)
        except StoreFull as exc:
            expected = exc
        try:
            got: BlockEntry | StoreFull = self.store.add(
                network, self.now, ttl_s=ttl, reason="r", origin=origin
            )
        except StoreFull as exc:
            got = exc
        if isinstance(expected, StoreFull):
            assert isinstance(got, StoreFull)
        else:
            assert got == expected

    @rule(network=NETWORKS)
    def remove(self, network: str) -> None:
        self.model.history.pop(network, None)
        expected = self.model.entries.pop(network, None) is not None
        assert self.store.remove(network) == expected

    @rule()
    def expire(self) -> None:
        assert self.store.expire(self.now) == self.model.expire(self.now)

    @rule(ip=ADDRESSES)
    def get(self, ip: str) -> None:
        got, expected = self.store.get(ip, self.now), self.model.get(ip, self.now)
        assert got == expected, (ip, got, expected)

    @invariant()
    def same_live_entries_and_bounded(self) -> None:
        assert {e.network: e for e in self.store.list(self.now)} == {
            n: e for n, e in self.model.entries.items() if e.active(self.now)
        }
        assert self.store.state_size() <= SETTINGS.max_entries + SETTINGS.max_history
        for network in UNIVERSE:
            assert self.store.history(network) == self.model.history.get(network), network


MemoryStoreMachine.TestCase.settings = hsettings(
    max_examples=300, stateful_step_count=40, deadline=None
)
TestMemoryStoreMatchesModel = MemoryStoreMachine.TestCase
