"""IP networks in detector settings: one validated field type and one membership test, so that
every allow-list, trust boundary and inside network is read and matched the same way."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import AfterValidator

__all__ = ["NetworkList", "NetworkSet", "check_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_networks(value: tuple[str, ...]) -> tuple[str, ...]:
    """Every item an IP address or CIDR network (host bits allowed), else ValueError naming it."""
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return value


#: A settings field holding IP addresses / CIDR networks, validated when the config is read.
NetworkList = Annotated[tuple[str, ...], AfterValidator(check_networks)]


class NetworkSet:
    """Parsed networks; ``ip in networks`` for packet addresses (bracketed IPv6 and
    IPv4-mapped IPv6 included; anything that is not an address is never a member)."""

    __slots__ = ("networks",)

    def __init__(self, items: tuple[str, ...]) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(item, strict=False) for item in items
        )

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, ip: object) -> bool:
        if not self.networks or not isinstance(ip, str):
            return False  # the unconfigured default: no address parsing at all
        try:
            address = ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.networks)
