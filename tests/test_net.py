"""Address classification: what the disclosure and topology-hiding code relies on."""

from __future__ import annotations

import pytest

from sipwarden.errors import InputError
from sipwarden.net import AddressKind, Endpoint, Transport, classify, parse_host_port


@pytest.mark.parametrize(
    ("ip", "kind"),
    [
        ("10.1.2.3", AddressKind.PRIVATE),
        ("172.16.0.1", AddressKind.PRIVATE),
        ("192.168.1.1", AddressKind.PRIVATE),
        ("100.64.0.1", AddressKind.PRIVATE),  # RFC 6598 shared address space (CGNAT)
        ("fd12::1", AddressKind.PRIVATE),  # RFC 4193 ULA
        ("::ffff:10.0.0.1", AddressKind.PRIVATE),  # IPv4-mapped keeps its IPv4 kind
        ("127.0.0.1", AddressKind.LOOPBACK),
        ("::1", AddressKind.LOOPBACK),
        ("169.254.1.1", AddressKind.LINK_LOCAL),
        ("fe80::1", AddressKind.LINK_LOCAL),
        ("192.0.2.7", AddressKind.DOCUMENTATION),
        ("[2001:db8::7]", AddressKind.DOCUMENTATION),
        ("224.0.0.1", AddressKind.MULTICAST),
        ("0.0.0.0", AddressKind.UNSPECIFIED),
        ("8.8.8.8", AddressKind.PUBLIC),
        ("2a00:1450::1", AddressKind.PUBLIC),
        ("not-an-ip", AddressKind.INVALID),
    ],
)
def test_classify(ip: str, kind: AddressKind) -> None:
    assert classify(ip) is kind


def test_endpoint_json() -> None:
    assert Endpoint("192.0.2.1", 5060, Transport.TCP).to_json() == {
        "ip": "192.0.2.1",
        "port": 5060,
        "transport": "tcp",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:5060", ("127.0.0.1", 5060)), ("[::1]:9464", ("::1", 9464))],
)
def test_parse_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1", "expected udp:IP:PORT"),
        ("::1:5060", "expected udp:IP:PORT"),
        ("[::1]5060", r"expected udp:\[IPv6\]:PORT"),
        ("pbx:5060", "'pbx' is not an IP address"),
        ("127.0.0.1:0", r"'0' is not a port \(1-65535\)"),
        ("127.0.0.1:70000", "is not a port"),
    ],
)
def test_parse_host_port_errors_name_the_input(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        parse_host_port(text, scheme="udp:", source=f"udp:{text}")
    assert caught.value.source == f"udp:{text}"
