"""The BlocklistStore contract, run against every backend (memory and SQLite)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sipwarden.errors import InputError, SipwardenError
from sipwarden.store import (
    AddRequest,
    BlockEntry,
    BlocklistSettings,
    BlocklistStore,
    MemoryBlocklistStore,
    SqliteBlocklistStore,
    StoreFull,
    StoreUnavailable,
    normalize_network,
)
from sipwarden.store.base import plan_add

T0 = 1_700_000_000.0
MakeStore = Callable[..., BlocklistStore]


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    opened: list[SqliteBlocklistStore] = []

    def make(settings: BlocklistSettings | None = None) -> BlocklistStore:
        if request.param == "memory":
            return MemoryBlocklistStore(settings)
        store = SqliteBlocklistStore(tmp_path / f"bl{len(opened)}.db", settings)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: MakeStore) -> BlocklistStore:
    return make_store()


def ban(
    store: BlocklistStore, net: str, now: float, ttl: float | None = 300.0, **kw: str
) -> BlockEntry:
    origin = kw.pop("origin", "finding")
    return store.add(net, now, ttl_s=ttl, reason=kw.pop("reason", "test"), origin=origin)  # type: ignore[arg-type]


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("192.0.2.1/32", "192.0.2.1"),
        ("192.0.2.77/24", "192.0.2.0/24"),
        ("2001:DB8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1/48", "2001:db8::/48"),
        ("::ffff:192.0.2.9", "192.0.2.9"),
        (" 10.0.0.0/8 ", "10.0.0.0/8"),
    ],
)
def test_networks_are_canonical(given: str, canonical: str) -> None:
    assert normalize_network(given) == canonical


@pytest.mark.parametrize("bad", ["", "host.example", "192.0.2.1/33", "0.0.0.0/0", "::/0", "1.2.3"])
def test_bad_network_is_an_input_error(store: BlocklistStore, bad: str) -> None:
    with pytest.raises(InputError):
        ban(store, bad, T0)
    assert store.list(T0) == []


def test_bad_origin_and_ttl_are_refused(store: BlocklistStore) -> None:
    with pytest.raises(InputError):
        store.add("192.0.2.1", T0, ttl_s=0, reason="r", origin="cli")
    with pytest.raises(InputError):
        store.add("192.0.2.1", T0, ttl_s=1, reason="r", origin="nope")  # type: ignore[arg-type]


def test_attacker_text_is_cut(store: BlocklistStore) -> None:
    entry = store.add(
        "192.0.2.1", T0, ttl_s=1, reason="x" * 10_000, origin="finding", ref="y" * 999
    )
    assert len(entry.reason) == 128 and entry.ref is not None and len(entry.ref) == 128
    assert store.get("192.0.2.1", T0) == entry


def test_errors_are_sipwarden_errors() -> None:
    assert issubclass(StoreUnavailable, SipwardenError) and issubclass(StoreFull, SipwardenError)


# -- lookups ---------------------------------------------------------------------------------


def test_longest_prefix_wins_ipv4(store: BlocklistStore) -> None:
    ban(store, "10.0.0.0/8", T0, reason="wide")
    ban(store, "10.1.0.0/16", T0, reason="mid")
    ban(store, "10.1.2.3", T0, reason="host")
    assert store.get("10.1.2.3", T0 + 1).reason == "host"  # type: ignore[union-attr]
    assert store.get("10.1.2.4", T0 + 1).reason == "mid"  # type: ignore[union-attr]
    assert store.get("10.2.0.1", T0 + 1).reason == "wide"  # type: ignore[union-attr]
    assert store.get("11.0.0.1", T0 + 1) is None


def test_longest_prefix_wins_ipv6(store: BlocklistStore) -> None:
    ban(store, "2001:db8::/32", T0, reason="wide")
    ban(store, "2001:db8:1::/48", T0, reason="mid")
    ban(store, "2001:db8:1::5", T0, reason="host")
    assert store.get("2001:db8:1::5", T0).reason == "host"  # type: ignore[union-attr]
    assert store.get("[2001:db8:1::6]", T0).reason == "mid"  # type: ignore[union-attr]
    assert store.get("2001:db8:ffff::1", T0).reason == "wide"  # type: ignore[union-attr]
    assert store.get("2001:db9::1", T0) is None
    assert store.get("10.0.0.1", T0) is None  # families never mix


def test_ipv4_mapped_address_matches_ipv4_entry(store: BlocklistStore) -> None:
    ban(store, "192.0.2.0/24", T0)
    assert store.get("::ffff:192.0.2.200", T0) is not None


def test_not_an_address_is_never_blocked(store: BlocklistStore) -> None:
    ban(store, "192.0.2.0/24", T0)
    assert store.get("not-an-ip", T0) is None
    assert store.get("", T0) is None


def test_expired_longer_prefix_falls_back_to_live_shorter(store: BlocklistStore) -> None:
    ban(store, "10.0.0.0/8", T0, ttl=1000)
    ban(store, "10.1.2.3", T0, ttl=10)
    assert store.get("10.1.2.3", T0 + 5).network == "10.1.2.3"  # type: ignore[union-attr]
    assert store.get("10.1.2.3", T0 + 10).network == "10.0.0.0/8"  # type: ignore[union-attr]


# -- TTL and expiry --------------------------------------------------------------------------


def test_ban_holds_until_expiry_then_lifts(store: BlocklistStore) -> None:
    entry = ban(store, "192.0.2.1", T0, ttl=300)
    assert entry.expires == T0 + 300 and entry.ban_count == 0
    assert store.get("192.0.2.1", T0 + 299.9) is not None
    assert store.get("192.0.2.1", T0 + 300) is None  # live while now < expires
    assert store.list(T0 + 300) == []
    assert store.state_size() == 1  # still held until expire() ...
    assert store.expire(T0 + 300) == 1
    assert store.expire(T0 + 300) == 0
    assert store.state_size() == 1  # ... which moves it to the escalation history


def test_permanent_ban_never_expires(store: BlocklistStore) -> None:
    ban(store, "192.0.2.1", T0, ttl=None, origin="cli")
    assert store.expire(T0 + 10**9) == 0
    assert store.get("192.0.2.1", T0 + 10**9) is not None


def test_list_is_sorted_and_live_only(store: BlocklistStore) -> None:
    for net in ["2001:db8::1", "192.0.2.0/24", "10.0.0.1", "192.0.2.0/25"]:
        ban(store, net, T0)
    ban(store, "198.51.100.1", T0, ttl=1)
    assert [e.network for e in store.list(T0 + 2)] == [
        "10.0.0.1",
        "192.0.2.0/24",
        "192.0.2.0/25",
        "2001:db8::1",
    ]


def test_remove_is_exact_and_forgets_history(store: BlocklistStore) -> None:
    ban(store, "10.0.0.0/8", T0)
    ban(store, "10.1.2.3", T0)
    assert store.remove("10.1.2.3/32") is True
    assert store.remove("10.1.2.3") is False
    assert store.get("10.1.2.3", T0).network == "10.0.0.0/8"  # type: ignore[union-attr]
    store.expire(T0 + 300)
    assert store.remove("10.0.0.0/8") is False  # already expired away, history only ...
    assert ban(store, "10.0.0.0/8", T0 + 400).ban_count == 0  # ... and remove forgot it


# -- escalation ------------------------------------------------------------------------------


def test_repeat_ban_doubles_until_the_cap(make_store: MakeStore) -> None:
    store = make_store(BlocklistSettings(max_ttl_s=3000))
    now = T0
    durations = []
    for _ in range(6):
        entry = ban(store, "192.0.2.1", now, ttl=300)
        assert entry.expires is not None
        durations.append(entry.expires - now)
        now = entry.expires + 60  # banned again one minute after the ban ended
        store.expire(now)
    assert durations == [300, 600, 1200, 2400, 3000, 3000]


def test_repeat_after_memory_starts_over(make_store: MakeStore) -> None:
    store = make_store(BlocklistSettings(escalation_memory_s=3600))
    ban(store, "192.0.2.1", T0, ttl=300)
    store.expire(T0 + 300)
    assert ban(store, "192.0.2.1", T0 + 300 + 3600, ttl=300).ban_count == 1
    store.expire(T0 + 10_000)
    entry = ban(store, "192.0.2.1", T0 + 10_000 + 600 + 3601, ttl=300)
    assert entry.ban_count == 0 and entry.expires == T0 + 10_000 + 600 + 3601 + 300


def test_repeat_counts_even_before_expire_is_called(store: BlocklistStore) -> None:
    ban(store, "192.0.2.1", T0, ttl=300)
    entry = ban(store, "192.0.2.1", T0 + 400, ttl=300)
    assert entry.ban_count == 1 and entry.expires == T0 + 400 + 600


def test_readd_while_banned_is_not_a_repeat(store: BlocklistStore) -> None:
    ban(store, "192.0.2.1", T0, ttl=300)
    again = ban(store, "192.0.2.1", T0 + 100, ttl=300)
    assert again.ban_count == 0 and again.expires == T0 + 400  # extended, not escalated
    shorter = ban(store, "192.0.2.1", T0 + 101, ttl=10)
    assert shorter.expires == T0 + 400  # an automatic re-add never shortens


def test_operator_ban_is_exact_and_replaces(store: BlocklistStore) -> None:
    ban(store, "192.0.2.1", T0, ttl=300)
    store.expire(T0 + 300)
    manual = ban(store, "192.0.2.1", T0 + 310, ttl=60, origin="cli")
    assert manual.expires == T0 + 370 and manual.ban_count == 1  # counted, not escalated
    replaced = ban(store, "192.0.2.1", T0 + 320, ttl=None, origin="cli", reason="keep out")
    assert replaced.expires is None and replaced.reason == "keep out"
    assert ban(store, "192.0.2.1", T0 + 330, ttl=300).expires is None  # finding can't shorten


def test_base_ttl_above_cap_is_kept() -> None:
    settings = BlocklistSettings(max_ttl_s=100)
    entry = plan_add(
        None,
        None,
        network="192.0.2.1",
        now=T0,
        ttl_s=500,
        reason="r",
        origin="finding",
        ref=None,
        settings=settings,
    )
    assert entry.expires == T0 + 500


def test_escalation_exponent_is_bounded() -> None:
    from sipwarden.store.base import BanHistory

    settings = BlocklistSettings(max_ttl_s=1e300)
    entry = plan_add(
        None,
        BanHistory(10**6, T0),
        network="192.0.2.1",
        now=T0 + 1,
        ttl_s=1,
        reason="r",
        origin="finding",
        ref=None,
        settings=settings,
    )
    assert entry.expires == T0 + 1 + 2**20 and entry.ban_count == 10**6 + 1


# -- bounds ----------------------------------------------------------------------------------


def test_full_store_evicts_the_automatic_ban_that_ends_soonest(make_store: MakeStore) -> None:
    store = make_store(BlocklistSettings(max_entries=3))
    ban(store, "192.0.2.1", T0, ttl=100)
    ban(store, "192.0.2.2", T0, ttl=50)
    ban(store, "192.0.2.3", T0, ttl=None, origin="cli")
    ban(store, "192.0.2.4", T0, ttl=10)
    assert [e.network for e in store.list(T0)] == ["192.0.2.1", "192.0.2.3", "192.0.2.4"]
    assert store.evictions() == 1
    assert store.state_size() <= 3 + 1  # three entries and the evicted one's history


def test_full_store_drops_ended_bans_before_evicting(make_store: MakeStore) -> None:
    store = make_store(BlocklistSettings(max_entries=2))
    ban(store, "192.0.2.1", T0, ttl=10)
    ban(store, "192.0.2.2", T0, ttl=100)
    ban(store, "192.0.2.3", T0 + 20, ttl=100)
    assert store.evictions() == 0
    assert [e.network for e in store.list(T0 + 20)] == ["192.0.2.2", "192.0.2.3"]


def test_full_of_operator_bans_refuses(make_store: MakeStore) -> None:
    store = make_store(BlocklistSettings(max_entries=2))
    ban(store, "192.0.2.1", T0, ttl=None, origin="config")
    ban(store, "192.0.2.2", T0, ttl=100, origin="cli")
    with pytest.raises(StoreFull):
        ban(store, "192.0.2.3", T0, ttl=100)
    assert store.refusals == 1
    ban(store, "192.0.2.2", T0 + 1, ttl=500, origin="cli")  # updating an entry needs no room
    assert len(store.list(T0 + 1)) == 2


def test_hostile_key_space_stays_bounded(make_store: MakeStore) -> None:
    """A spoofed-source flood: every finding bans a new address; the store never grows past
    its bounds and counts what it evicted."""
    store = make_store(BlocklistSettings(max_entries=50, max_history=20))
    for i in range(500):
        ban(store, f"198.51.{i // 256}.{i % 256}", T0 + i, ttl=1000)
    assert len(store.list(T0 + 500)) == 50
    assert store.state_size() <= 70
    assert store.evictions() == 450
    assert store.history_evictions == 430
    assert store.get("198.51.1.243", T0 + 500) is not None  # the newest survive
    assert store.get("198.51.0.0", T0 + 500) is None


# -- batches ---------------------------------------------------------------------------------


def test_add_many_is_add_for_each_in_order(make_store: MakeStore) -> None:
    store = make_store(BlocklistSettings(max_entries=2))
    ban(store, "192.0.2.9", T0, ttl=None, origin="cli")
    stored = store.add_many(
        [
            AddRequest("192.0.2.1/32", T0, 300.0, "a", "finding", "f1"),
            AddRequest("192.0.2.1", T0 + 10, 300.0, "b", "finding", "f2"),  # still banned
            AddRequest("192.0.2.2", T0, 300.0, "c", "finding"),  # evicts the first
        ]
    )
    first, extended, newest = stored
    assert first is not None and (first.network, first.ref) == ("192.0.2.1", "f1")
    assert extended is not None and extended.expires == T0 + 310 and extended.ban_count == 0
    assert newest is not None and store.evictions() == 1
    assert [e.network for e in store.list(T0 + 10)] == ["192.0.2.2", "192.0.2.9"]


def test_add_many_counts_a_refusal_and_keeps_the_rest(make_store: MakeStore) -> None:
    store = make_store(BlocklistSettings(max_entries=1))
    ban(store, "192.0.2.9", T0, ttl=None, origin="cli")
    stored = store.add_many(
        [
            AddRequest("192.0.2.1", T0, 300.0, "a", "finding"),
            AddRequest("192.0.2.9", T0, 60.0, "operator again", "cli"),
        ]
    )
    assert stored[0] is None and stored[1] is not None and store.refusals == 1
    assert store.get("192.0.2.9", T0).reason == "operator again"  # type: ignore[union-attr]


def test_add_many_escalates_a_repeat_within_the_batch(store: BlocklistStore) -> None:
    first, again = store.add_many(
        [
            AddRequest("192.0.2.1", T0, 300.0, "a", "finding"),
            AddRequest("192.0.2.1", T0 + 400, 300.0, "a", "finding"),
        ]
    )
    assert first is not None and again is not None
    assert (again.ban_count, again.expires) == (1, T0 + 400 + 600)


@pytest.mark.parametrize(
    "bad",
    [
        AddRequest("not-an-ip", T0, 300.0, "r", "finding"),
        AddRequest("192.0.2.2", T0, 0.0, "r", "finding"),
        AddRequest("192.0.2.2", T0, 1.0, "r", "nope"),  # type: ignore[arg-type]
    ],
)
def test_add_many_checks_every_request_before_writing(
    store: BlocklistStore, bad: AddRequest
) -> None:
    with pytest.raises(InputError):
        store.add_many([AddRequest("192.0.2.1", T0, 300.0, "r", "finding"), bad])
    assert store.list(T0) == []


def test_add_many_of_nothing_writes_nothing(store: BlocklistStore) -> None:
    assert store.add_many([]) == []


def test_escalation_defaults_match_their_anchors() -> None:
    """detection-anchors §2.2/§2.7: fail2ban bantime.increment (x2 per repeat, exponent capped
    at 20), capped; remembered for fail2ban's dbpurgeage (1 day)."""
    settings = BlocklistSettings()
    assert settings.escalation_factor == 2.0
    assert settings.max_ttl_s == 86_400.0
    assert settings.escalation_memory_s == 86_400.0
    assert settings.max_history == settings.max_entries == 100_000
    for name, info in BlocklistSettings.model_fields.items():
        assert info.description, name
