"""Network endpoints and address classification, shared by every layer.

``Endpoint(ip, port, transport)`` names one side of a SIP exchange; :func:`classify` says what
kind of address an IP is (private, loopback, documentation …), which the disclosure and
topology-hiding code needs. Pure: no sockets, no DNS.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from typing import NamedTuple

from sipwarden.errors import InputError

__all__ = ["AddressKind", "Endpoint", "Transport", "classify", "parse_host_port"]


class Transport(StrEnum):
    UDP = "udp"
    TCP = "tcp"
    TLS = "tls"
    SCTP = "sctp"
    WS = "ws"
    WSS = "wss"


class Endpoint(NamedTuple):
    """One side of an exchange. ``ip`` is the address's canonical text (IPv6 compressed)."""

    ip: str
    port: int
    transport: Transport = Transport.UDP

    def to_json(self) -> dict[str, object]:
        return {"ip": self.ip, "port": self.port, "transport": str(self.transport)}


class AddressKind(StrEnum):
    LOOPBACK = "loopback"
    PRIVATE = "private"  # RFC 1918, RFC 4193 ULA, RFC 6598 shared (CGNAT)
    LINK_LOCAL = "link_local"
    DOCUMENTATION = "documentation"  # RFC 5737, RFC 3849
    MULTICAST = "multicast"
    UNSPECIFIED = "unspecified"
    RESERVED = "reserved"
    PUBLIC = "public"
    INVALID = "invalid"


_DOCUMENTATION = tuple(
    ipaddress.ip_network(net)
    for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")


def classify(ip: str) -> AddressKind:
    """What kind of address ``ip`` is (brackets of an IPv6 reference are accepted)."""
    try:
        address = ipaddress.ip_address(ip.strip("[]"))
    except ValueError:
        return AddressKind.INVALID
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return AddressKind.LOOPBACK
    if address.is_unspecified:
        return AddressKind.UNSPECIFIED
    if address.is_multicast:
        return AddressKind.MULTICAST
    if address.is_link_local:
        return AddressKind.LINK_LOCAL
    if any(address in net for net in _DOCUMENTATION):
        return AddressKind.DOCUMENTATION
    if address.version == 4 and address in _SHARED:
        return AddressKind.PRIVATE
    if address.is_private:
        return AddressKind.PRIVATE
    if address.is_reserved:
        return AddressKind.RESERVED
    return AddressKind.PUBLIC


def parse_host_port(
    text: str, *, min_port: int = 1, scheme: str = "", source: str | None = None
) -> tuple[str, int]:
    """``IP:PORT`` or ``[IPv6]:PORT`` -> (canonical IP text, port). ``InputError`` naming
    ``source`` (default ``text``) otherwise, with the expected form written as
    ``{scheme}IP:PORT``; ``min_port=0`` admits port 0 (bind any free port)."""
    named = source if source is not None else text
    if text.startswith("["):
        host, bracket, port_text = text[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise InputError(named, f"expected {scheme}[IPv6]:PORT")
        port_text = port_text[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise InputError(named, f"expected {scheme}IP:PORT (IPv6 addresses go in brackets)")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise InputError(named, f"{host!r} is not an IP address") from None
    if not port_text.isdigit() or not min_port <= int(port_text) < 65536:
        raise InputError(named, f"{port_text!r} is not a port ({min_port}-65535)")
    return str(address), int(port_text)
