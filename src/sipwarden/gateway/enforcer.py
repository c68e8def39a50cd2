"""The gateway's enforcement of :mod:`sipwarden.gateway.policy`: the policy decides, the
:class:`Enforcer` keeps the blocklist it reads (a bounded in-memory copy of the shared store)
and writes the bans the policy orders from findings; :class:`SharedBlocklist` keeps that copy in
step with the shared SQLite store that ``sipwarden blocklist`` (and later the exchange) writes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import Path

from sipwarden.detect.finding import Finding
from sipwarden.detect.observation import Observation
from sipwarden.gateway.policy import BlockOrder
from sipwarden.gateway.policy import Policy as GatewayPolicy
from sipwarden.gateway.verdict import Verdict
from sipwarden.store.base import BlockEntry, StoreFull
from sipwarden.store.memory import MemoryBlocklistStore

__all__ = ["Enforcer", "SharedBlocklist"]


class Enforcer:
    """Adapts :class:`~sipwarden.gateway.policy.Policy` to the proxy: each decision reads the
    blocklist (a :class:`~sipwarden.store.memory.MemoryBlocklistStore`: the gateway's copy of
    the shared store, see :meth:`mirror`), and the bans the policy orders from findings are
    written to it as ``origin="finding"`` entries.
    """

    def __init__(self, policy: GatewayPolicy, store: MemoryBlocklistStore | None = None) -> None:
        self.policy = policy
        self.store = store if store is not None else MemoryBlocklistStore()
        #: The latest bans ordered (for the exit report and logs), bounded.
        self.recent: deque[BlockOrder] = deque(maxlen=1000)
        #: Bans the store had no room for (operator bans fill it): counted, not raised.
        self.bans_refused = 0

    @property
    def allow_header(self) -> str:
        """The ``Allow`` value of the proxy's 405 answers (RFC 3261 §21.4.6)."""
        return self.policy.allow_header

    def is_blocked(self, ip: str, now: float) -> bool:
        return self.store.get(ip, now) is not None

    def __call__(
        self, obs: Observation, now: float, findings: Sequence[Finding], raw: bytes = b""
    ) -> Verdict:
        verdict = self.policy.decide(obs, now, self.is_blocked, findings, raw)
        # A source already banned is not banned again for the same episode: the engine keeps
        # extending the episode while the source keeps sending, and escalating on every packet
        # would reach the cap in a few packets.
        fresh = [f for f in findings if f.source is None or not self.is_blocked(f.source.ip, now)]
        if fresh:
            for order in self.policy.blocklist_entries(fresh, now):
                entry = BlockEntry(
                    order.ip,
                    order.reason,
                    "finding",
                    now,
                    order.expires_at,
                    order.repeat,
                    order.finding_id,
                )
                try:
                    self.store.put(entry, now)
                except StoreFull:
                    self.bans_refused += 1
                    continue
                self.recent.append(order)
        return verdict

    def mirror(self, shared: list[BlockEntry], now: float) -> None:
        """Make the copy hold exactly ``shared`` (the entries of the store the CLI and the
        exchange write), keeping the gateway's own finding bans."""
        keep = {entry.network for entry in shared}
        for entry in self.store.list(now):
            if entry.origin != "finding" and entry.network not in keep:
                self.store.remove(entry.network)
        for entry in shared:
            try:
                self.store.put(entry, now)
            except StoreFull:
                self.bans_refused += 1

    def advance(self, now: float) -> None:
        self.policy.advance(now)
        self.store.expire(now)


class SharedBlocklist:
    """A tick that copies the shared SQLite blocklist into the gateway's in-memory one when it
    changed (its data_version moved): one cheap query a second instead of one per message."""

    def __init__(self, path: Path, enforcer: Enforcer) -> None:
        from sipwarden.store.sqlite import SqliteBlocklistStore  # noqa: PLC0415

        self.store = SqliteBlocklistStore(path)  # InputError/StoreUnavailable name the file
        self.enforcer = enforcer
        self._seen: int | None = None

    def __call__(self, now: float) -> None:
        version = self.store.data_version()
        if version != self._seen:
            self.enforcer.mirror(self.store.list(now), now)
            self._seen = version
