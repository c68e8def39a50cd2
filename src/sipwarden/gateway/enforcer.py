"""The gateway's enforcement of :mod:`sipwarden.gateway.policy`: the policy decides, the
:class:`Enforcer` keeps the blocklist it reads (a bounded in-memory copy of the shared store)
and adds the bans the policy orders from findings; :class:`SharedBlocklist` keeps that copy in
step with the shared SQLite store that ``sipwarden blocklist``, the exchange and every other
gateway worker write.

Theory of operation
-------------------

A ban the policy orders is added to the in-memory store at once (the very next packet from that
source is dropped), escalated by the store's rule (``store/base.py``) with the history the copy
holds. With a shared store, the ban is also queued; once a second (the server's tick)
:class:`SharedBlocklist` writes the queue to SQLite in one transaction, as ``origin="finding"``
entries carrying the finding id - never a write per packet. SQLite escalates again with *its*
history, which every worker and the CLI share, and the stored entry replaces the provisional
one in memory. Then, if another connection committed (SQLite's ``data_version`` moved), the copy
is made equal to the shared store's live entries: the shared store is the truth, so a ban an
operator removed with ``sipwarden blocklist remove`` is lifted here within a tick, whoever added
it. Bans not yet written (the database was locked) are kept until they are.

Every worker flushes its own bans and mirrors everyone's, so N workers on one file converge
within a tick or two. A mirror reloads every live entry (measured on the dev VM: ~70 ms for 21k
entries when few changed, ~300 ms when all were new); a change log in the file would make it
incremental. A busy database costs at most ``busy_timeout_s`` of the event loop per
tick; the queue waits (bounded: the oldest is dropped and counted when it overflows) and is
retried on the next tick.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sipwarden.detect.finding import Finding
from sipwarden.detect.observation import Observation
from sipwarden.gateway.policy import Policy as GatewayPolicy
from sipwarden.gateway.verdict import Verdict
from sipwarden.store.base import (
    AUTOMATIC_ORIGINS,
    AddRequest,
    BlockEntry,
    StoreFull,
    StoreUnavailable,
)
from sipwarden.store.memory import MemoryBlocklistStore

__all__ = ["AppliedBan", "Enforcer", "SharedBlocklist"]

#: Bans kept for the exit report and logs.
MAX_RECENT: Final = 1000
#: Bans waiting for the shared store. No published anchor: 10 s of a 1000 bans/s spoofed-source
#: flood, ~100 bytes each; a locked database rarely lasts longer than a CLI transaction.
MAX_PENDING: Final = 10_000
#: Bans written per tick: one transaction of 1000 adds took ~30 ms on the 2-vCPU dev VM, about
#: the longest the event loop should stall once a second. The rest wait for the next tick.
MAX_FLUSH: Final = 1000
#: How long a tick's write waits for another connection's lock. No published anchor: a CLI add
#: holds the lock for milliseconds; every packet waits behind the tick meanwhile.
BUSY_TIMEOUT_S: Final = 0.05


@dataclass(frozen=True, slots=True)
class AppliedBan:
    """A ban the gateway applied (what :attr:`Enforcer.recent` holds for the exit report).

    ``ttl_s`` includes escalation by the gateway's own copy of the blocklist; with a shared
    store the next tick may lengthen it (that store's history covers every worker). ``repeat``
    is the ban's ``ban_count``: earlier bans of ``ip`` remembered (0 for a first ban).
    """

    ip: str
    ttl_s: float | None
    expires_at: float | None
    reason: str
    repeat: int
    finding_id: str | None = None

    @classmethod
    def of(cls, ip: str, entry: BlockEntry, now: float) -> AppliedBan:
        ttl_s = None if entry.expires is None else entry.expires - now
        return cls(ip, ttl_s, entry.expires, entry.reason, entry.ban_count, entry.ref)


class Enforcer:
    """Adapts :class:`~sipwarden.gateway.policy.Policy` to the proxy: each decision reads the
    blocklist (a :class:`~sipwarden.store.memory.MemoryBlocklistStore`: the gateway's copy of
    the shared store, see :meth:`mirror`), and the bans the policy orders from findings are
    added to it as ``origin="finding"`` entries (escalated by the store on repeat).
    """

    def __init__(self, policy: GatewayPolicy, store: MemoryBlocklistStore | None = None) -> None:
        self.policy = policy
        self.store = store if store is not None else MemoryBlocklistStore()
        #: The latest bans applied (for the exit report and logs), bounded.
        self.recent: deque[AppliedBan] = deque(maxlen=MAX_RECENT)
        #: Bans the store had no room for (operator bans fill it): counted, not raised.
        self.bans_refused = 0
        #: Called with each ban applied, canonical network (SharedBlocklist queues it).
        self.on_ban: Callable[[AddRequest], None] | None = None

    @property
    def allow_header(self) -> str:
        """The ``Allow`` value of the proxy's 405 answers (RFC 3261 §21.4.6)."""
        return self.policy.allow_header

    def is_blocked(self, ip: str, now: float) -> bool:
        """On the blocklist - except a trusted peer under an automatic ban (one applied before
        it was made trusted, or learnt from a peer operator): trust wins over what sipwarden
        decided by itself; an operator's own ban of it is honoured."""
        entry = self.store.get(ip, now)
        if entry is None:
            return False
        return entry.origin not in AUTOMATIC_ORIGINS or not self.policy.trusted(ip)

    def __call__(
        self, obs: Observation, now: float, findings: Sequence[Finding], raw: bytes = b""
    ) -> Verdict:
        verdict = self.policy.decide(obs, now, self.is_blocked, findings, raw)
        self.ban(findings, now)
        return verdict

    def ban(self, findings: Sequence[Finding], now: float) -> None:
        """Apply the bans ``findings`` order (the policy's ``blocklist_entries``): from the
        message just judged, or from the upstream's answers (a brute-force finding is raised
        by the tenth 401, not by the guess)."""
        # A source already banned is not banned again for the same episode: the engine keeps
        # extending the episode while the source keeps sending, and re-adding on every packet
        # would extend the ban (and queue a shared-store write) per packet.
        fresh = [f for f in findings if f.source is None or not self.is_blocked(f.source.ip, now)]
        if not fresh:
            return
        for order in self.policy.blocklist_entries(fresh):
            try:
                entry = self.store.add(
                    order.ip,
                    now,
                    ttl_s=order.ttl_s,
                    reason=order.reason,
                    origin="finding",
                    ref=order.finding_id,
                )
            except StoreFull:
                self.bans_refused += 1
                continue
            self.recent.append(AppliedBan.of(order.ip, entry, now))
            if self.on_ban is not None:
                self.on_ban(
                    AddRequest(entry.network, now, order.ttl_s, entry.reason, "finding", entry.ref)
                )

    def mirror(self, shared: list[BlockEntry], now: float, keep: Collection[str] = ()) -> None:
        """Make the copy hold exactly ``shared`` (the live entries of the store the CLI, the
        exchange and the other workers write) plus the networks in ``keep`` (this gateway's
        bans not yet written there, canonical)."""
        listed = {entry.network for entry in shared}
        for network in self.store.live_networks(now):
            if network not in listed and network not in keep:
                self.store.remove(network)  # lifted in the shared store: lift it here
        for entry in shared:
            if self.store.held(entry.network) == entry:
                continue  # unchanged: most of a large list on every mirror
            try:
                self.store.put(entry, now)
            except StoreFull:
                self.bans_refused += 1

    def advance(self, now: float) -> None:
        self.policy.advance(now)
        self.store.expire(now)


class SharedBlocklist:
    """The tick (call it about once a second) that writes the gateway's bans to the shared
    SQLite blocklist and copies that store into the gateway's in-memory one when another
    connection changed it (see the module docstring).

    Counters: ``flushed`` bans written, ``flush_failures`` ticks whose write failed (the
    database was locked or unwritable; retried next tick), ``pending_overflow`` bans dropped
    from a full queue (applied by this worker only until its next mirror: the shared store is
    the truth), ``store.refusals`` bans
    the shared store had no room for. A failed write is raised *after* the mirror ran, so the
    server counts and logs it while the copy still follows the file.
    """

    def __init__(
        self,
        path: Path,
        enforcer: Enforcer,
        *,
        max_pending: int = MAX_PENDING,
        max_flush: int = MAX_FLUSH,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        from sipwarden.store.sqlite import SqliteBlocklistStore  # noqa: PLC0415

        if max_pending < 1 or max_flush < 1:
            raise ValueError("max_pending and max_flush must be >= 1")
        # Opened with the default (long) busy timeout: at start-up, waiting for a CLI write is
        # fine; InputError/StoreUnavailable name the file.
        self.store = SqliteBlocklistStore(path, enforcer.store.settings)
        self.store.set_busy_timeout(busy_timeout_s)
        self.enforcer = enforcer
        self.max_pending = max_pending
        self.max_flush = max_flush
        self.pending: deque[AddRequest] = deque()
        self.flushed = 0
        self.flush_failures = 0
        self.pending_overflow = 0
        self._seen: int | None = None
        enforcer.on_ban = self.queue

    def queue(self, request: AddRequest) -> None:
        """Write ``request`` on the next tick (the enforcer calls this for each ban)."""
        if len(self.pending) >= self.max_pending:
            self.pending.popleft()  # the oldest: it has been enforced locally the longest
            self.pending_overflow += 1
        self.pending.append(request)

    def __call__(self, now: float) -> None:
        failure = self._flush(now)
        version = self.store.data_version()
        if version != self._seen:
            keep = {request.network for request in self.pending}
            self.enforcer.mirror(self.store.live(now), now, keep)
            self._seen = version
        if failure is not None:
            raise failure

    def _flush(self, now: float) -> StoreUnavailable | None:
        if not self.pending:
            return None
        batch = list(itertools.islice(self.pending, self.max_flush))
        try:
            stored = self.store.add_many(batch)
        except StoreUnavailable as exc:
            self.flush_failures += 1
            return StoreUnavailable(
                exc.where,
                f"{exc.detail}; {len(self.pending)} gateway bans kept to retry on the next tick",
            )
        for _ in batch:
            self.pending.popleft()
        self.flushed += len(batch)
        for entry in stored:
            # The shared store's answer (escalated with everyone's history) replaces ours.
            if entry is not None and entry.active(now):
                try:
                    self.enforcer.store.put(entry, now)
                except StoreFull:
                    self.enforcer.bans_refused += 1
        return None

    def drain(self, now: float, busy_timeout_s: float = 5.0) -> int:
        """Write every pending ban (at exit), waiting up to ``busy_timeout_s`` per batch for
        another writer's lock (other workers drain at the same moment); how many are left."""
        self.store.set_busy_timeout(busy_timeout_s)
        while self.pending:
            before = len(self.pending)
            if self._flush(now) is not None or len(self.pending) >= before:
                break
        return len(self.pending)

    def __str__(self) -> str:
        return str(self.store.path)

    def close(self) -> None:
        """Close the database connection (pending bans not yet written are lost)."""
        self.store.close()
