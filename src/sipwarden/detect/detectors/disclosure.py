"""disclosure: topology and version leakage in messages leaving the operator's network
(conventions.md §1; detection-anchors.md §4 item 3 - everyone rewrites, nobody audits egress).

Theory of operation
-------------------
A leak needs a direction. Both detectors take ``inside_networks`` (CIDRs) and judge only
messages *leaving*: packet source inside, packet destination outside. With no inside networks
configured there is no direction, and both stay silent: a private Via between two phones on one
LAN is normal, and guessing "private means inside" would flag every NAT'd subscriber's own
REGISTER. The party judged (and checked against the allow-list) is the packet source, the inside
element that let the leak out. To enable them, list the networks of your own elements for each
detector in the configuration file::

    [detectors."disclosure.private_address"]
    inside_networks = ["10.0.0.0/8", "2001:db8:1::/48"]

    [detectors."disclosure.version_string"]
    inside_networks = ["10.0.0.0/8", "2001:db8:1::/48"]

Neither detector keeps per-key state: each leaving message with a leak is one hit keyed by the
source (and, for versions, the product string), and the engine merges hits into one finding per
episode - so the engine's own bound on open episodes is the only table involved.
"""

from __future__ import annotations

import contextlib
import re
from typing import ClassVar

from pydantic import Field, field_validator

from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.finding import Finding, RecommendedAction, Target
from sipwarden.detect.networks import NetworkList, NetworkSet
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import register
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.net import AddressKind, classify
from sipwarden.sip import Message, NameAddr, Request, SipParseError
from sipwarden.sip.sdp import SdpParseError, message_sdp

__all__ = [
    "PrivateAddressLeak",
    "PrivateAddressLeakConfig",
    "VersionDisclosure",
    "VersionDisclosureConfig",
]

#: Attacker- or device-chosen strings kept in findings are cut to this length.
_MAX_TEXT = 128


def _printable(text: str) -> str:
    """``text`` stripped, cut and made printable: control characters and the surrogate escapes
    of non-UTF-8 wire bytes become backslash escapes, so the text is safe in a finding's key
    (hashed as UTF-8) and in every output format."""
    cut = text.strip()[:_MAX_TEXT]
    if cut.isprintable():
        return cut
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in cut)


class _EgressConfig(DetectorConfig):
    inside_networks: NetworkList = Field(
        (),
        description=(
            "CIDR networks of the operator's own elements (SBCs, proxies, PBXs). A message is "
            "judged only when it leaves: packet source inside, destination outside. Empty by "
            "default, and then the detector is silent: set it to enable the detector. No "
            "anchor can say which side is yours, and treating every private address as "
            "inside would flag NAT'd subscribers' own traffic."
        ),
    )


class _EgressDetector(Detector):
    """Shared direction test for the disclosure detectors."""

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, _EgressConfig)
        self._inside = NetworkSet(self.config.inside_networks)

    def leaving(self, obs: Observation) -> bool:
        """True when ``obs`` goes from an inside source to an outside destination."""
        inside = self._inside
        return bool(inside) and obs.src.ip in inside and obs.dst.ip not in inside


# -- PrivateAddressLeak --------------------------------------------------------------------------

_LEAK_KINDS = ("private", "loopback", "link_local")


class PrivateAddressLeakConfig(_EgressConfig):
    @field_validator("leak_kinds")
    @classmethod
    def _valid_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        known = {kind.value for kind in AddressKind}
        for item in value:
            if item not in known:
                raise ValueError(f"{item!r} is not one of {sorted(known)}")
        return value

    leak_kinds: tuple[str, ...] = Field(
        _LEAK_KINDS,
        description=(
            "Address kinds (sipwarden.net.AddressKind) that must not leave: RFC 1918/6598 "
            "and RFC 4193 ULA ('private'), loopback, link-local. Default: the addresses "
            "topology hiding exists to remove (Kamailio topoh masks them with `mask_ip`, "
            "detection-anchors.md §2.5). Documentation and 0.0.0.0 (SDP hold, RFC 3264 §8.4) "
            "are not leaks."
        ),
    )


@register
class PrivateAddressLeak(_EgressDetector):
    """Private, loopback or link-local addresses in a message leaving the inside networks.

    Signal: in a message from an ``inside_networks`` source to an outside destination, a host
    of kind ``leak_kinds`` in a Via hop (requests only), Contact, Record-Route, or the SDP
    ``o=``/``c=`` lines. Responses keep the Via hops the *outside* requester wrote (each inside
    proxy removes its own, RFC 3261 §16.7), so their Via is not judged.
    Why: internal addressing tells an attacker the topology behind the SBC (which hosts to
    target, which ranges to spoof) - the 'disclosure' family of conventions.md §1 - and
    topology hiding (Kamailio topoh/topos, OpenSIPS topology_hiding) exists to remove it.
    Nobody audits that it works (detection-anchors.md §4, item 3).
    Defaults' anchor: the address kinds topology hiding removes; severity low - a leak is a
    weakness to fix, not an attack in progress.
    Known false positives: a transit proxy (outside -> inside proxy -> outside) forwards the
    outside caller's own Via and Contact unchanged; put it in ``allow_sources`` or accept the
    finding as "topology hiding is off".
    Off until ``inside_networks`` lists your own elements' networks (module docstring).
    """

    id: ClassVar[str] = "disclosure.private_address"
    threat: ClassVar[Threat] = Threat.DISCLOSURE
    Config: ClassVar[type[DetectorConfig]] = PrivateAddressLeakConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, PrivateAddressLeakConfig)
        self._kinds = frozenset(AddressKind(kind) for kind in self.config.leak_kinds)
        # The default kinds allow a cheap text test before the (costly) address parse.
        self._prefilter = self._kinds <= _PREFILTERED_KINDS

    def observe(self, obs: Observation) -> list[Finding]:
        message = obs.message
        if message is None or not self.leaving(obs) or self.allowed(obs.src.ip):
            return []
        leaks = self._leaks(message)
        if not leaks:
            return []
        where, address, kind = leaks[0]
        fields = sorted({field for field, _, _ in leaks})
        more = f" (+{len(leaks) - 1} more)" if len(leaks) > 1 else ""
        return [
            self.hit(
                obs,
                Severity.LOW,
                70,
                f"topology leak from {obs.src.ip} to {obs.dst.ip}: {kind} address "
                f"{address} in {where}{more}",
                obs.src.ip,
                target=Target(obs.dst.ip, obs.dst.port),
                indicators={
                    "field": where,
                    "address": address,
                    "address_kind": kind,
                    "fields": ",".join(fields)[:_MAX_TEXT],
                },
                action=RecommendedAction("MONITOR"),
            )
        ]

    def _leaks(self, message: Message) -> list[tuple[str, str, str]]:
        """``(field, address, kind)`` of every leaking host, in header order then SDP."""
        hosts: list[tuple[str, str]] = []
        if isinstance(message, Request):
            # A malformed Via is malformed.parser_defect's business, not a leak.
            with contextlib.suppress(SipParseError):
                hosts.extend(("Via", hop.host) for hop in message.via)
        hosts.extend(_name_addr_hosts("Contact", message, "contact"))
        hosts.extend(_name_addr_hosts("Record-Route", message, "record_route"))
        try:
            sdp = message_sdp(message)
        except SdpParseError:
            sdp = None
        if sdp is not None:
            hosts.extend((f"SDP {line}=", address) for line, address in sdp.addresses())
        leaks = []
        prefilter = self._prefilter
        for field, host in hosts:
            if prefilter and not _maybe_leak(host):
                continue
            kind = classify(host)
            if kind in self._kinds:
                leaks.append((field, _printable(host), kind.value))
        return leaks


_PREFILTERED_KINDS = frozenset({AddressKind.PRIVATE, AddressKind.LOOPBACK, AddressKind.LINK_LOCAL})
# First octets of every IPv4 range sipwarden.net.classify may call private, loopback or
# link-local (RFC 1918, RFC 6598, 127/8, 169.254/16, and what ipaddress.is_private adds:
# 0/8, 192.0.0/24, 198.18/15, 240/4 ...). Any other dotted quad is public or multicast.
_INTERNAL_FIRST_OCTETS = frozenset(
    {"0", "10", "100", "127", "169", "172", "192", "198", "203"}
    | {str(octet) for octet in range(240, 256)}
)


def _maybe_leak(host: str) -> bool:
    """False only when ``host`` certainly is not private, loopback or link-local: a host
    name, or a dotted quad whose first octet starts no such range. IPv6 is always checked."""
    if not host:
        return False
    first = host[0]
    if first == "[" or ":" in host:
        return True
    if not first.isdigit():
        return False
    return host.split(".", 1)[0] in _INTERNAL_FIRST_OCTETS


def _name_addr_hosts(label: str, message: Message, attr: str) -> list[tuple[str, str]]:
    try:
        values: tuple[NameAddr, ...] = getattr(message, attr)
    except SipParseError:
        return []
    hosts = []
    for value in values:
        if value.wildcard:
            continue
        try:
            hosts.append((label, value.uri.host))
        except ValueError:
            continue
    return hosts


# -- VersionDisclosure ---------------------------------------------------------------------------

# A dotted version number (major.minor at least) standing on its own or after a name:
# "Asterisk PBX 16.2.1", "kamailio (5.6.4 (x86_64/linux))", "MicroSIP/3.14.5", "Cisco-CUCM11.5".
# The look-behind keeps "rev.10106" and the middle of longer numbers out.
_VERSION = re.compile(r"(?<![\d.])\d{1,5}(?:\.\d{1,9}){1,4}")


class VersionDisclosureConfig(_EgressConfig):
    headers: tuple[str, ...] = Field(
        ("server", "user-agent"),
        description=(
            "Headers whose product string is judged. Default Server and User-Agent, the two "
            "RFC 3261 §20.35/§20.41 warns 'can reveal' software with known vulnerabilities "
            "(and what ET Open's 'Asterisk PBX' UA rule keys on, detection-anchors.md §3)."
        ),
    )
    check_sdp_session_name: bool = Field(
        True,
        description=(
            "Also judge the SDP s= and o= username, where some stacks put their product "
            "and version. No anchor; on by default because it is free once the SDP is read."
        ),
    )


@register
class VersionDisclosure(_EgressDetector):
    """Product and version strings in a message leaving the inside networks.

    Signal: a Server or User-Agent header (and SDP s=/o= username) carrying a dotted version
    number (``Asterisk PBX 16.2.1``, ``Kamailio (5.6.4 (x86_64/linux))``) in a message from an
    ``inside_networks`` source to an outside destination. One finding per source and product
    string per episode.
    Why: RFC 3261 §20.35 and §20.41 warn that these headers let an attacker pick exploits for
    the exact version; scanners read them from the first OPTIONS answer.
    Defaults' anchor: RFC 3261 §20.35/§20.41; severity info - it is hygiene, nothing to block.
    Known false positives: none in the strict sense; operators who decide to expose a version
    (e.g. to a peering partner) put that element in ``allow_sources``.
    Off until ``inside_networks`` lists your own elements' networks (module docstring).
    """

    id: ClassVar[str] = "disclosure.version_string"
    threat: ClassVar[Threat] = Threat.DISCLOSURE
    Config: ClassVar[type[DetectorConfig]] = VersionDisclosureConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, VersionDisclosureConfig)
        self._cfg = self.config

    def observe(self, obs: Observation) -> list[Finding]:
        message = obs.message
        if message is None or not self.leaving(obs) or self.allowed(obs.src.ip):
            return []
        found = self._disclosure(message)
        if found is None:
            return []
        where, text, version = found
        return [
            self.hit(
                obs,
                Severity.INFO,
                90,
                f"version disclosed by {obs.src.ip} to {obs.dst.ip}: {where} {text!r}",
                f"{obs.src.ip}|{where}|{text}",
                target=Target(obs.dst.ip, obs.dst.port),
                indicators={"field": where, "product": text, "version": version},
            )
        ]

    def _disclosure(self, message: Message) -> tuple[str, str, str] | None:
        """``(field, product text, version)`` of the first versioned product string."""
        for name in self._cfg.headers:
            for value in message.headers.get_all(name):
                match = _VERSION.search(value)
                if match is not None:
                    return _header_label(name), _printable(value), match.group(0)
        if not self._cfg.check_sdp_session_name:
            return None
        try:
            sdp = message_sdp(message)
        except SdpParseError:
            return None
        if sdp is None:
            return None
        for where, value in (("SDP s=", sdp.session_name), ("SDP o=", sdp.origin.username)):
            match = _VERSION.search(value)
            if match is not None:
                return where, _printable(value), match.group(0)
        return None


def _header_label(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))
