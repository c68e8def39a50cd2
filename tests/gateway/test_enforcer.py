"""The enforcer's bans: applied at once in memory, escalated by the store, written to the shared
SQLite store on the tick, and lifted when the shared store says so."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sipwarden.detect.finding import Finding, RecommendedAction
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.gateway.enforcer import AppliedBan, Enforcer, SharedBlocklist
from sipwarden.gateway.policy import Policy
from sipwarden.net import Endpoint
from sipwarden.store import BlocklistSettings, MemoryBlocklistStore, SqliteBlocklistStore
from sipwarden.store.base import StoreUnavailable
from tests.detect import observe

T0 = 1_700_000_000.0
DETECTOR = "tdos.request_flood"

OPTIONS = (
    b"OPTIONS sip:100@198.51.100.5 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
    b"From: <sip:caller@192.0.2.10>;tag=1\r\nTo: <sip:100@198.51.100.5>\r\nCall-ID: c1\r\n"
    b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def flood_finding(src: str, ttl: int | None = 300) -> Finding:
    return Finding(
        DETECTOR,
        Threat.TDOS,
        Severity.HIGH,
        80,
        "test",
        src,
        0.0,
        0.0,
        source=Endpoint(src, 5060),
        recommended_action=RecommendedAction("TEMP_BLOCK", ttl),
    )


def offend(enforcer: Enforcer, src: str, now: float, ttl: int | None = 300) -> None:
    """One request from ``src`` that the engine judged a flood recommending a ban."""
    enforcer(observe(OPTIONS, now, src), now, [flood_finding(src, ttl)], OPTIONS)


OpenShared = Callable[..., SharedBlocklist]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "blocklist.db"


@pytest.fixture
def open_shared(db: Path) -> Iterator[OpenShared]:
    opened: list[SharedBlocklist] = []

    def make(enforcer: Enforcer | None = None, **kw: int | float) -> SharedBlocklist:
        shared = SharedBlocklist(db, enforcer or Enforcer(Policy()), **kw)  # type: ignore[arg-type]
        opened.append(shared)
        return shared

    yield make
    for shared in opened:
        shared.close()


def other_connection(db: Path) -> SqliteBlocklistStore:
    """What `sipwarden blocklist` (or another worker) opens on the same file."""
    return SqliteBlocklistStore(db)


# -- in memory --------------------------------------------------------------------------------


def test_a_finding_ban_applies_at_once_and_is_reported() -> None:
    enforcer = Enforcer(Policy())
    offend(enforcer, "192.0.2.10", T0)
    assert enforcer.is_blocked("192.0.2.10", T0)
    [ban] = enforcer.recent
    assert ban == AppliedBan("192.0.2.10", 300.0, T0 + 300, DETECTOR, 0, ban.finding_id)
    assert ban.finding_id == flood_finding("192.0.2.10").id
    entry = enforcer.store.held("192.0.2.10")
    assert entry is not None and (entry.origin, entry.ref) == ("finding", ban.finding_id)


def test_a_banned_source_is_not_banned_again_in_the_same_episode() -> None:
    enforcer = Enforcer(Policy())
    for i in range(50):
        offend(enforcer, "192.0.2.10", T0 + i)
    assert len(enforcer.recent) == 1
    assert enforcer.store.get("192.0.2.10", T0 + 50).expires == T0 + 300  # type: ignore[union-attr]


def test_the_store_escalates_a_repeat_and_caps_it() -> None:
    enforcer = Enforcer(Policy(), MemoryBlocklistStore(BlocklistSettings(max_ttl_s=1000)))
    now = T0
    for _ in range(4):
        offend(enforcer, "192.0.2.10", now)
        now = enforcer.recent[-1].expires_at + 10  # type: ignore[operator]
        enforcer.advance(now)
    assert [(b.ttl_s, b.repeat) for b in enforcer.recent] == [
        (300, 0),
        (600, 1),
        (1000, 2),
        (1000, 3),
    ]


# -- the shared store -----------------------------------------------------------------------


def test_a_finding_ban_is_written_on_the_tick_exactly_once(
    db: Path, open_shared: OpenShared
) -> None:
    shared = open_shared()
    enforcer = shared.enforcer
    shared(T0)
    offend(enforcer, "192.0.2.10", T0 + 0.5)
    assert [r.network for r in shared.pending] == ["192.0.2.10"]
    with other_connection(db) as cli:
        assert cli.list(T0 + 0.5) == []  # not a write per packet: only on the tick
        shared(T0 + 1)
        shared(T0 + 2)
        [entry] = cli.list(T0 + 2)
    assert (entry.network, entry.origin, entry.reason, entry.ban_count) == (
        "192.0.2.10",
        "finding",
        DETECTOR,
        0,
    )
    assert entry.ref == enforcer.recent[0].finding_id
    assert entry.expires == T0 + 0.5 + 300  # stamped when the gateway banned, not when written
    assert (shared.flushed, shared.pending_overflow, shared.flush_failures) == (1, 0, 0)
    assert not shared.pending
    assert enforcer.store.held("192.0.2.10") == entry


def test_removing_a_finding_ban_from_the_shared_store_lifts_it_on_the_next_tick(
    db: Path, open_shared: OpenShared
) -> None:
    shared = open_shared()
    offend(shared.enforcer, "192.0.2.10", T0)
    shared(T0 + 1)
    with other_connection(db) as cli:
        assert cli.remove("192.0.2.10")
    assert shared.enforcer.is_blocked("192.0.2.10", T0 + 1.5)  # until the tick
    shared(T0 + 2)
    assert not shared.enforcer.is_blocked("192.0.2.10", T0 + 2)


def test_two_workers_on_one_file_converge(db: Path, open_shared: OpenShared) -> None:
    first, second = open_shared(), open_shared()
    offend(first.enforcer, "192.0.2.10", T0)
    offend(second.enforcer, "192.0.2.20", T0)
    offend(second.enforcer, "192.0.2.10", T0 + 0.2)  # both saw it: not a repeat
    for tick in (T0 + 1, T0 + 2):  # each flushes its own, then mirrors the other's
        first(tick)
        second(tick + 0.1)
    views = [w.enforcer.store.list(T0 + 3) for w in (first, second)]
    assert views[0] == views[1]
    assert [(e.network, e.ban_count) for e in views[0]] == [("192.0.2.10", 0), ("192.0.2.20", 0)]
    assert views[0][0].expires == T0 + 0.2 + 300  # the later add extended it, no escalation


def test_escalation_history_is_the_shared_stores(db: Path, open_shared: OpenShared) -> None:
    """A worker that never saw an address's earlier ban still escalates its repeat once the
    shared store answers: the history every worker writes lives there."""
    first = open_shared()
    offend(first.enforcer, "192.0.2.10", T0)
    first(T0 + 1)
    second = open_shared()  # started after that ban ended
    offend(second.enforcer, "192.0.2.10", T0 + 400)
    assert second.enforcer.recent[-1].ttl_s == 300  # provisional: this worker's own history
    second(T0 + 401)
    entry = second.enforcer.store.get("192.0.2.10", T0 + 401)
    assert entry is not None and entry.ban_count == 1 and entry.expires == T0 + 400 + 600
    first(T0 + 402)  # and the first worker follows
    assert first.enforcer.store.held("192.0.2.10") == entry


def test_a_locked_database_keeps_the_pending_bans_and_retries(
    db: Path, open_shared: OpenShared
) -> None:
    shared = open_shared(busy_timeout_s=0.01)
    shared(T0)
    offend(shared.enforcer, "192.0.2.10", T0)
    with other_connection(db) as cli:
        cli.add("192.0.2.99", T0, ttl_s=None, reason="operator", origin="cli")  # moves the version
        holder = sqlite3.connect(db, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # someone holds the write lock
            with pytest.raises(StoreUnavailable, match="1 gateway bans kept"):
                shared(T0 + 1)
            assert (shared.flush_failures, shared.flushed, len(shared.pending)) == (1, 0, 1)
            # The mirror still ran: the operator's ban arrived, the unwritten one stayed.
            assert shared.enforcer.is_blocked("192.0.2.99", T0 + 1)
            assert shared.enforcer.is_blocked("192.0.2.10", T0 + 1)
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        shared(T0 + 2)
        assert (shared.flush_failures, shared.flushed, len(shared.pending)) == (1, 1, 0)
        assert [e.network for e in cli.list(T0 + 2)] == ["192.0.2.10", "192.0.2.99"]


def test_pending_overflow_drops_the_oldest_and_is_counted(
    db: Path, open_shared: OpenShared
) -> None:
    shared = open_shared(max_pending=3)
    for i in range(5):
        offend(shared.enforcer, f"192.0.2.{i + 1}", T0)
    assert shared.pending_overflow == 2
    assert [r.network for r in shared.pending] == ["192.0.2.3", "192.0.2.4", "192.0.2.5"]
    assert all(shared.enforcer.is_blocked(f"192.0.2.{i + 1}", T0) for i in range(5))
    shared(T0 + 1)
    with other_connection(db) as cli:
        assert [e.network for e in cli.list(T0 + 1)] == ["192.0.2.3", "192.0.2.4", "192.0.2.5"]
    # The shared store is the truth: the overflowed bans never reached it (nor the operator's
    # view), so the mirror of the first tick lifted them here too.
    assert not shared.enforcer.is_blocked("192.0.2.1", T0 + 1)


def test_a_tick_writes_at_most_max_flush_bans(db: Path, open_shared: OpenShared) -> None:
    shared = open_shared(max_flush=2)
    for i in range(5):
        offend(shared.enforcer, f"192.0.2.{i + 1}", T0)
    flushed = []
    for tick in range(1, 4):
        shared(T0 + tick)
        flushed.append(shared.flushed)
    assert flushed == [2, 4, 5]
    with other_connection(db) as cli:
        assert len(cli.list(T0 + 4)) == 5


def test_bad_bounds_are_refused(open_shared: OpenShared) -> None:
    with pytest.raises(ValueError, match="max_pending"):
        open_shared(max_pending=0)


def test_drain_writes_every_pending_ban_at_exit(db: Path, open_shared: OpenShared) -> None:
    shared = open_shared(max_flush=2)
    for i in range(7):
        offend(shared.enforcer, f"192.0.2.{i + 1}", T0)
    assert shared.drain(T0 + 0.5) == 0
    with other_connection(db) as cli:
        assert len(cli.list(T0 + 1)) == 7


def test_drain_gives_up_on_a_database_locked_throughout(db: Path, open_shared: OpenShared) -> None:
    shared = open_shared()
    offend(shared.enforcer, "192.0.2.10", T0)
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        assert shared.drain(T0, busy_timeout_s=0.05) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_peer_made_trusted_is_not_held_by_an_automatic_ban() -> None:
    from sipwarden.gateway.policy import PolicyConfig

    enforcer = Enforcer(Policy())
    offend(enforcer, "192.0.2.10", T0)
    enforcer.store.add("192.0.2.11", T0, ttl_s=None, reason="operator", origin="cli")
    assert enforcer.is_blocked("192.0.2.10", T0 + 1)
    enforcer.policy = Policy(PolicyConfig(trusted_peers=("192.0.2.0/24",)))  # a reload
    assert not enforcer.is_blocked("192.0.2.10", T0 + 1)
    assert enforcer.is_blocked("192.0.2.11", T0 + 1)  # an operator's ban is honoured
