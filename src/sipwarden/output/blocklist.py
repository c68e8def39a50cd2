"""Blocklist exports for the host firewall: a plain list, an ``ipset restore`` script, an ``nft -f``
script. Pure: entries and ``now`` in, text out.

Every export *replaces* the set's content (create if missing, flush, add), so running it
periodically mirrors the store, removals included; timeouts are the seconds left at ``now``
(rounded up), so the kernel lifts a ban when the store would. Networks come from
:class:`~sipwarden.store.base.BlockEntry`, which validated and canonicalised them, so nothing
needs escaping; set names are checked here.

- ``ipset``: two ``hash:net`` sets, ``NAME-v4`` (``family inet``) and ``NAME-v6`` (``family
  inet6``), created with ``timeout 0`` (per-entry timeouts, 0 = permanent). Load with
  ``ipset -exist restore < FILE``. ipset caps timeouts at 2147483 s (~24.8 days); a longer ban
  is exported with the cap and renewed by the next export.
- ``nftables``: two sets ``NAME_v4`` / ``NAME_v6`` in ``TABLE`` (default ``inet filter``) with
  ``flags interval, timeout``. An interval set refuses overlapping elements, so a network inside
  another exported network is left out: the broader ban governs, and the narrower one is
  exported again once the broader one is gone. Load with ``nft -f FILE``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Final

from sipwarden.errors import InputError
from sipwarden.store.base import BlockEntry, sort_key

__all__ = ["IPSET_MAX_TIMEOUT_S", "to_ipset", "to_nftables", "to_plain"]

#: ipset(8): "The largest possible timeout value is 2147483" seconds.
IPSET_MAX_TIMEOUT_S: Final = 2_147_483
#: ipset's hash:net default maxelem; raised in the create line when there are more entries.
IPSET_DEFAULT_MAXELEM: Final = 65_536

# ipset set names are at most 31 characters; "-v4"/"-v6" is appended.
_IPSET_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,28}")
# nft identifiers: a letter then letters, digits, "_"; at most 31 characters with the "_v4"/"_v6"
# suffix, because kernels before 4.13 limit set names to 32 bytes with the NUL.
_NFT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,27}")
_NFT_FAMILIES: Final = frozenset({"ip", "ip6", "inet", "arp", "bridge", "netdev"})


def _live(entries: Iterable[BlockEntry], now: float) -> list[BlockEntry]:
    return sorted((e for e in entries if e.active(now)), key=sort_key)


def to_plain(entries: Iterable[BlockEntry], now: float) -> str:
    """One network per line (IPv4 first, by address), live entries only."""
    return "".join(f"{entry.network}\n" for entry in _live(entries, now))


def to_ipset(entries: Iterable[BlockEntry], now: float, name: str = "sipwarden") -> str:
    """An ``ipset restore`` script for sets ``NAME-v4`` and ``NAME-v6``."""
    if not _IPSET_NAME.fullmatch(name):
        raise InputError(name[:64], "ipset name: 1-28 of A-Z a-z 0-9 _ . : - (suffix -v4/-v6)")
    live = _live(entries, now)
    lines: list[str] = []
    for version, family in ((4, "inet"), (6, "inet6")):
        members = [e for e in live if e.version == version]
        set_name = f"{name}-v{version}"
        maxelem = max(IPSET_DEFAULT_MAXELEM, len(members))
        lines.append(f"create {set_name} hash:net family {family} timeout 0 maxelem {maxelem}")
        lines.append(f"flush {set_name}")
        for entry in members:
            left = entry.remaining_s(now)
            timeout = 0 if left is None else min(left, IPSET_MAX_TIMEOUT_S)
            lines.append(f"add {set_name} {entry.network} timeout {timeout}")
    return "".join(f"{line}\n" for line in lines)


def _outermost(members: list[BlockEntry]) -> list[BlockEntry]:
    """Entries not inside another one. ``members`` is in :func:`sort_key` order (address, then
    shorter prefix first) and CIDR blocks either nest or are disjoint, so one sweep suffices."""
    kept: list[BlockEntry] = []
    end = -1
    for entry in members:
        network = ipaddress.ip_network(entry.network)
        if int(network.network_address) <= end:
            continue
        kept.append(entry)
        end = int(network.broadcast_address)
    return kept


def to_nftables(
    entries: Iterable[BlockEntry],
    now: float,
    name: str = "sipwarden",
    table: str = "inet filter",
) -> str:
    """An ``nft -f`` script for sets ``NAME_v4`` and ``NAME_v6`` in ``table``."""
    if not _NFT_NAME.fullmatch(name):
        raise InputError(name[:64], "nftables set name: a letter, then letters, digits or _")
    family, _, table_name = table.partition(" ")
    if family not in _NFT_FAMILIES or not _NFT_NAME.fullmatch(table_name):
        raise InputError(table[:64], "nftables table: FAMILY NAME, e.g. 'inet filter'")
    live = _live(entries, now)
    lines = [f"add table {family} {table_name}"]
    for version in (4, 6):
        set_name = f"{name}_v{version}"
        lines.append(
            f"add set {family} {table_name} {set_name}"
            f" {{ type ipv{version}_addr; flags interval, timeout; }}"
        )
        lines.append(f"flush set {family} {table_name} {set_name}")
        elements = []
        for entry in _outermost([e for e in live if e.version == version]):
            left = entry.remaining_s(now)
            elements.append(entry.network if left is None else f"{entry.network} timeout {left}s")
        if elements:  # "{ }" is a syntax error in nft
            lines.append(
                f"add element {family} {table_name} {set_name} {{ {', '.join(elements)} }}"
            )
    return "".join(f"{line}\n" for line in lines)
