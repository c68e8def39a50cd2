"""The blocklist the gateway reads and the exchange, the findings and the CLI write.

One entry blocks one network (an IP address or a CIDR network) until ``expires`` (epoch seconds,
``None`` = until removed). Backends implement :class:`BlocklistStore`; time is always passed in
(``now``), so the stores are as testable as the sans-IO core and the CLI alone reads the clock.

Ban escalation (fail2ban ``bantime.increment``, detection-anchors §2.2 / §2.7): an *automatic*
ban (origin ``finding`` or ``exchange``) of a network whose previous ban ended less than
``escalation_memory_s`` ago lasts ``ttl × escalation_factor ** ban_count``, capped at
``max_ttl_s``. Operator bans (origin ``cli`` or ``config``) last exactly what the operator asked;
they still count as a ban in the history. Re-adding a network that is still blocked is not a
repeat (fail2ban ignores "already banned"): an automatic re-add extends the ban if it would last
longer, an operator re-add replaces it. ``remove`` is an operator saying "this ban was wrong", so
it forgets the history too.

This is the only escalation rule: the gateway's policy decides *that* a source is banned, for
which base TTL and why, and the store decides how long a repeat lasts - with its history, which
for the SQLite store is shared by every gateway worker and the CLI.
"""

from __future__ import annotations

import builtins
import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, NamedTuple, Protocol, get_args

from pydantic import BaseModel, ConfigDict, Field

from sipwarden.errors import InputError, SipwardenError

__all__ = [
    "AUTOMATIC_ORIGINS",
    "AddRequest",
    "BanHistory",
    "BlockEntry",
    "BlocklistSettings",
    "BlocklistStore",
    "Origin",
    "StoreFull",
    "StoreUnavailable",
    "check_request",
    "lookup_key",
    "lookup_keys",
    "normalize_address",
    "normalize_network",
    "plan_add",
    "sort_key",
]

Origin = Literal["finding", "cli", "exchange", "config"]
ORIGINS: Final = frozenset(get_args(Origin))
#: Bans decided by sipwarden itself (or a peer); these escalate and may be evicted when full.
AUTOMATIC_ORIGINS: Final = frozenset({"finding", "exchange"})

#: Attacker-influenced text (reasons built from findings, references) is cut to this many chars.
MAX_TEXT_CHARS: Final = 128
#: fail2ban caps the exponent at 20 (``1 << min(ban.Count, 20)``); so do we, against overflow.
MAX_ESCALATION_EXPONENT: Final = 20

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class StoreUnavailable(SipwardenError):  # noqa: N818 - state-named, design.md §3
    """A backend cannot be read or written (missing, locked, corrupt, not ours, newer schema)."""

    def __init__(self, where: str, detail: str) -> None:
        self.where = where
        self.detail = detail
        super().__init__(f"{where}: {detail}")


class StoreFull(SipwardenError):  # noqa: N818 - state-named, design.md §3
    """The store is at ``max_entries`` and holds nothing it may evict (see BlocklistSettings)."""

    def __init__(self, network: str, max_entries: int) -> None:
        self.network = network
        self.max_entries = max_entries
        super().__init__(
            f"{network}: blocklist full ({max_entries} entries, none evictable: operator or "
            "permanent bans only)"
        )


def _parse_network(text: str) -> Network:
    candidate = text.strip()
    if candidate.startswith("[") and "]" in candidate:  # "[2001:db8::1]" or "[2001:db8::]/32"
        close = candidate.index("]")
        candidate = candidate[1:close] + candidate[close + 1 :]
    try:
        network = ipaddress.ip_network(candidate, strict=False)
    except ValueError:
        raise InputError(text[:MAX_TEXT_CHARS], "not an IP address or CIDR network") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:  # ::ffff:192.0.2.1 is how a dual-stack socket shows 192.0.2.1
            network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    if network.prefixlen == 0:
        # Blocking every address is never what a finding or an operator means, and ipset's
        # hash:net cannot hold a /0 anyway.
        raise InputError(text[:MAX_TEXT_CHARS], "refusing to block every address (/0)")
    return network


def _network_text(network: Network) -> str:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def normalize_network(text: str) -> str:
    """Canonical text of an IP or CIDR network: host bits cleared, a single address without
    ``/32``/``/128``, IPv4-mapped IPv6 as IPv4, brackets removed. InputError if it is not one."""
    return _network_text(_parse_network(text))


def normalize_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A packet address (brackets and IPv4-mapped IPv6 accepted), or None if it is not one."""
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
    try:
        address = ipaddress.ip_address(candidate)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def lookup_key(network: str) -> str:
    """``"<version>/<prefixlen>/<network as hex int>"``: an index key that :func:`lookup_keys`
    can produce from an address with integer operations only (no parsing per prefix)."""
    parsed = _parse_network(network)
    return f"{parsed.version}/{parsed.prefixlen}/{int(parsed.network_address):x}"


def lookup_keys(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
    """The :func:`lookup_key` of every network (/1 … host) that contains ``address``."""
    value = int(address)
    width = address.max_prefixlen
    version = address.version
    full = (1 << width) - 1
    return [
        f"{version}/{prefixlen}/{value & (full ^ ((1 << (width - prefixlen)) - 1)):x}"
        for prefixlen in range(width, 0, -1)
    ]


@dataclass(frozen=True, slots=True)
class BlockEntry:
    """One blocked network. ``network`` is canonical (see :func:`normalize_network`)."""

    network: str
    reason: str
    origin: Origin
    created: float
    expires: float | None  # epoch seconds; None = until removed
    ban_count: int = 0  # earlier bans of this network remembered for escalation
    ref: str | None = None  # the finding or FS.38 event id that caused it

    def __post_init__(self) -> None:
        object.__setattr__(self, "network", normalize_network(self.network))
        object.__setattr__(self, "reason", self.reason[:MAX_TEXT_CHARS])
        object.__setattr__(self, "created", float(self.created))
        if self.expires is not None:
            object.__setattr__(self, "expires", float(self.expires))
        if self.ref is not None:
            object.__setattr__(self, "ref", self.ref[:MAX_TEXT_CHARS])
        if self.origin not in ORIGINS:
            raise InputError(str(self.origin)[:MAX_TEXT_CHARS], "not a blocklist origin")
        if self.ban_count < 0:
            raise ValueError("ban_count must be >= 0")

    @property
    def version(self) -> int:
        """4 or 6."""
        return _parse_network(self.network).version

    def active(self, now: float) -> bool:
        """Whether the ban is in force at ``now``."""
        return self.expires is None or self.expires > now

    def remaining_s(self, now: float) -> int | None:
        """Whole seconds left (rounded up, so a live ban never exports as 0), None if permanent."""
        if self.expires is None:
            return None
        return max(0, math.ceil(self.expires - now))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``from_json`` reads it back)."""
        return {
            "network": self.network,
            "reason": self.reason,
            "origin": self.origin,
            "created": self.created,
            "expires": self.expires,
            "ban_count": self.ban_count,
            "ref": self.ref,
        }

    @classmethod
    def stored(
        cls,
        network: str,
        reason: str,
        origin: str,
        created: float,
        expires: float | None,
        ban_count: int,
        ref: str | None,
    ) -> BlockEntry:
        """An entry read back from a store that wrote it: the network is already canonical and
        the text already cut, so they are not parsed again - a gateway reloads the whole shared
        store when it changes, and parsing dominated that (about 40 µs an entry). The origin
        is still checked."""
        if origin not in ORIGINS:
            raise InputError(origin[:MAX_TEXT_CHARS], "not a blocklist origin")
        entry = object.__new__(cls)
        for name, value in (
            ("network", network),
            ("reason", reason),
            ("origin", origin),
            ("created", created),
            ("expires", expires),
            ("ban_count", ban_count),
            ("ref", ref),
        ):
            object.__setattr__(entry, name, value)
        return entry

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BlockEntry:
        """The inverse of :meth:`to_json`."""
        return cls(
            network=str(data["network"]),
            reason=str(data["reason"]),
            origin=data["origin"],
            created=float(data["created"]),
            expires=None if data.get("expires") is None else float(data["expires"]),
            ban_count=int(data.get("ban_count", 0)),
            ref=data.get("ref"),
        )


class AddRequest(NamedTuple):
    """The arguments of one :meth:`BlocklistStore.add`, for :meth:`BlocklistStore.add_many`
    (e.g. the bans a gateway made locally and writes to the shared store on its next tick)."""

    network: str
    now: float
    ttl_s: float | None
    reason: str
    origin: Origin
    ref: str | None = None


def check_request(request: AddRequest) -> AddRequest:
    """``request`` with its network canonical; InputError for a bad network, ttl or origin
    (checked before a batch writes anything)."""
    if request.ttl_s is not None and not request.ttl_s > 0:
        raise InputError(f"ttl {request.ttl_s}", "must be a positive number of seconds")
    if request.origin not in ORIGINS:
        raise InputError(str(request.origin)[:MAX_TEXT_CHARS], "not a blocklist origin")
    return request._replace(network=normalize_network(request.network))


class BanHistory(NamedTuple):
    """What a store remembers of a network's last ban after it ended."""

    ban_count: int
    ended: float


class BlocklistSettings(BaseModel):
    """Bounds and escalation of a blocklist store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_entries: int = Field(
        default=100_000,
        ge=1,
        description=(
            "Most networks blocked at once. No published anchor: ipset's hash:net default "
            "maxelem is 65536; 100000 keeps every ban of a large spoofed-source scan while "
            "bounding memory (~300 bytes per entry in memory)."
        ),
    )
    max_history: int = Field(
        default=100_000,
        ge=0,
        description=(
            "Most ended bans remembered for escalation; the oldest is forgotten first. Same "
            "bound as max_entries: each ban ends in at most one history record."
        ),
    )
    escalation_factor: float = Field(
        default=2.0,
        ge=1.0,
        description=(
            "An automatic repeat ban lasts ttl x factor ** ban_count: x2 per repeat as fail2ban "
            "bantime.increment (ban.Time * (1 << min(ban.Count, 20)); detection-anchors §2.2, "
            "§2.7 'x2 per repeat, capped')."
        ),
    )
    max_ttl_s: float = Field(
        default=86_400.0,
        gt=0,
        description=(
            "Cap on an escalated automatic ban, seconds (fail2ban leaves bantime.maxtime unset; "
            "detection-anchors §2.7 asks for a cap, no published value). One day: a UDP source "
            "can be spoofed, and a reassigned dynamic or CGNAT address should recover within a "
            "day; from a 300 s ban (Kamailio default config, §2.7) the cap is reached after 9 "
            "repeats. Longer bans are an operator's (--ttl, or none). A base ttl above the cap "
            "is kept, not shortened."
        ),
    )
    escalation_memory_s: float = Field(
        default=86_400.0,
        ge=0,
        description=(
            "A ban counts as a repeat if the previous one ended at most this long ago, seconds "
            "(fail2ban dbpurgeage = 1d: how long it remembers bans)."
        ),
    )


def _escalated_ttl(ttl_s: float, ban_count: int, settings: BlocklistSettings) -> float:
    exponent = min(ban_count, MAX_ESCALATION_EXPONENT)
    return min(ttl_s * settings.escalation_factor**exponent, max(ttl_s, settings.max_ttl_s))


def plan_add(
    existing: BlockEntry | None,
    history: BanHistory | None,
    *,
    network: str,
    now: float,
    ttl_s: float | None,
    reason: str,
    origin: Origin,
    ref: str | None,
    settings: BlocklistSettings,
) -> BlockEntry:
    """The entry a store keeps after ``add`` (pure; shared by every backend).

    ``existing`` is the stored entry for the same network (live or not yet expired away),
    ``history`` the record of its last ended ban.
    """
    if ttl_s is not None and not ttl_s > 0:
        raise InputError(f"ttl {ttl_s}", "must be a positive number of seconds")
    manual = origin not in AUTOMATIC_ORIGINS
    if existing is not None and existing.active(now):
        if manual:
            expires = None if ttl_s is None else now + ttl_s
            return BlockEntry(network, reason, origin, now, expires, existing.ban_count, ref)
        if existing.expires is None:
            return existing
        if ttl_s is None:
            return replace(existing, expires=None)
        extended = now + _escalated_ttl(ttl_s, existing.ban_count, settings)
        return replace(existing, expires=max(existing.expires, extended))
    if existing is not None and existing.expires is not None:
        history = BanHistory(existing.ban_count, existing.expires)  # ended, not yet expired away
    ban_count = 0
    if history is not None and now - history.ended <= settings.escalation_memory_s:
        ban_count = history.ban_count + 1
    if ttl_s is None:
        expires = None
    elif manual:
        expires = now + ttl_s
    else:
        expires = now + _escalated_ttl(ttl_s, ban_count, settings)
    return BlockEntry(network, reason, origin, now, expires, ban_count, ref)


class BlocklistStore(Protocol):
    """What the gateway reads and the findings, the exchange and the CLI write."""

    settings: BlocklistSettings
    refusals: int  # adds refused with StoreFull
    history_evictions: int  # ended-ban records forgotten early to stay within max_history

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
        """Block ``network`` (escalating repeats, see the module docstring); the stored entry.
        InputError for a bad network or ttl; StoreFull when full and nothing is evictable."""
        ...

    def add_many(self, requests: Iterable[AddRequest]) -> builtins.list[BlockEntry | None]:
        """:meth:`add` for each request in order, as one write (one transaction for SQLite);
        the stored entries, None where the store was full (counted in ``refusals``). A bad
        request raises InputError before anything is written."""
        ...

    def remove(self, network: str) -> bool:
        """Unblock ``network`` (exactly that network) and forget its history; False if absent."""
        ...

    def get(self, ip: str, now: float) -> BlockEntry | None:
        """The live entry with the longest prefix containing ``ip``; None if none (or not an IP)."""
        ...

    def list(self, now: float) -> builtins.list[BlockEntry]:
        """Every live entry, sorted by IP version, then address, then prefix length."""
        ...

    def expire(self, now: float) -> int:
        """Drop entries that ended by ``now`` (remembering them for escalation); how many."""
        ...

    def state_size(self) -> int:
        """Entries held, live or not yet expired away."""
        ...

    def evictions(self) -> int:
        """Live entries evicted to make room since the store was opened."""
        ...


def sort_key(entry: BlockEntry) -> tuple[int, int, int]:
    """Order of :meth:`BlocklistStore.list`: version, address, prefix length."""
    network = _parse_network(entry.network)
    return (network.version, int(network.network_address), network.prefixlen)
