"""disclosure detectors: judge only messages leaving the inside networks, stay silent when no
inside network is configured, find private/loopback/link-local hosts in Via (requests),
Contact, Record-Route and SDP, and product versions in Server/User-Agent/SDP; honour the
allow-list; produce nothing above info/low on the benign corpus."""

from __future__ import annotations

import json

import pydantic
import pytest

from sipwarden.detect import DETECTORS, Engine
from sipwarden.detect.detectors.disclosure import (
    PrivateAddressLeak,
    PrivateAddressLeakConfig,
    VersionDisclosure,
    VersionDisclosureConfig,
)
from sipwarden.detect.engine import EngineConfig
from sipwarden.detect.taxonomy import Severity
from sipwarden.sources.capture import iter_observations
from tests.conftest import CORPUS, need_shared
from tests.detect import observe

INSIDE = ("10.0.0.0/8", "2001:db8:1::/48")
SBC = "10.0.0.5"
PEER = "203.0.113.9"


def leak_detector(inside: tuple[str, ...] = INSIDE, **extra: object) -> PrivateAddressLeak:
    return PrivateAddressLeak(PrivateAddressLeakConfig(inside_networks=inside, **extra))


def version_detector(inside: tuple[str, ...] = INSIDE, **extra: object) -> VersionDisclosure:
    return VersionDisclosure(VersionDisclosureConfig(inside_networks=inside, **extra))


def invite(
    via: str = "198.51.100.7",
    contact: str = "198.51.100.7",
    record_route: str | None = None,
    user_agent: str | None = None,
    sdp_address: str | None = None,
    session_name: str = "-",
) -> bytes:
    body = b""
    if sdp_address is not None:
        body = (
            f"v=0\r\no=- 1 1 IN IP4 {sdp_address}\r\ns={session_name}\r\n"
            f"c=IN IP4 {sdp_address}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        ).encode()
    extra = f"Record-Route: <sip:{record_route};lr>\r\n" if record_route else ""
    extra += f"User-Agent: {user_agent}\r\n" if user_agent else ""
    extra += "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"INVITE sip:100@{PEER} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK1\r\n"
        f"From: <sip:200@example.com>;tag=1\r\nTo: <sip:100@{PEER}>\r\nCall-ID: c1\r\n"
        f"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:200@{contact}>\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def response(via: str = "192.168.1.20", server: str | None = None) -> bytes:
    extra = f"Server: {server}\r\n" if server else ""
    return (
        f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK1\r\n"
        f"From: <sip:200@example.com>;tag=1\r\nTo: <sip:100@{PEER}>;tag=2\r\nCall-ID: c1\r\n"
        f"CSeq: 1 OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def test_registered_and_documented() -> None:
    assert DETECTORS["disclosure.private_address"] is PrivateAddressLeak
    assert DETECTORS["disclosure.version_string"] is VersionDisclosure
    assert PrivateAddressLeakConfig().inside_networks == ()
    assert PrivateAddressLeakConfig().leak_kinds == ("private", "loopback", "link_local")
    assert VersionDisclosureConfig().headers == ("server", "user-agent")
    for cls in (PrivateAddressLeak, VersionDisclosure):
        for name, info in cls.Config.model_fields.items():
            assert info.description, f"{cls.id}.{name} has no description"
        assert cls.__doc__ is not None
        for part in ("Signal:", "Why:", "Defaults' anchor:", "Known false positives:"):
            assert part in cls.__doc__, f"{cls.id} docstring lacks {part}"
    with pytest.raises(pydantic.ValidationError, match="inside_network"):
        PrivateAddressLeakConfig(inside_network=("10.0.0.0/8",))  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match="not an IP address or CIDR"):
        PrivateAddressLeakConfig(inside_networks=("10.0.0.0/33",))
    with pytest.raises(pydantic.ValidationError, match="'nat' is not one of"):
        PrivateAddressLeakConfig(leak_kinds=("nat",))


# -- PrivateAddressLeak --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field", "address", "kind"),
    [
        ({"via": "10.1.2.3"}, "Via", "10.1.2.3", "private"),
        ({"contact": "192.168.7.7:5062"}, "Contact", "192.168.7.7", "private"),
        ({"record_route": "172.16.0.1"}, "Record-Route", "172.16.0.1", "private"),
        ({"sdp_address": "10.9.9.9"}, "SDP o=", "10.9.9.9", "private"),
        ({"via": "127.0.0.1"}, "Via", "127.0.0.1", "loopback"),
        ({"via": "[fe80::1]"}, "Via", "[fe80::1]", "link_local"),
        ({"contact": "[fd00::5]"}, "Contact", "[fd00::5]", "private"),
        ({"contact": "100.64.1.1"}, "Contact", "100.64.1.1", "private"),
    ],
)
def test_leak_found_in_each_field(
    kwargs: dict[str, str], field: str, address: str, kind: str
) -> None:
    (hit,) = leak_detector().observe(observe(invite(**kwargs), src=SBC, dst=PEER))
    assert hit.detector == "disclosure.private_address" and hit.key == SBC
    assert hit.severity is Severity.LOW
    assert (hit.indicators["field"], hit.indicators["address"]) == (field, address)
    assert hit.indicators["address_kind"] == kind
    assert hit.target is not None and hit.target.ip == PEER
    assert hit.recommended_action is not None
    assert hit.recommended_action.action_code == "MONITOR"


def test_every_leaking_field_is_listed() -> None:
    data = invite(via="10.1.1.1", contact="10.1.1.1", record_route="10.1.1.2", sdp_address="10.3")
    (hit,) = leak_detector().observe(observe(data, src=SBC, dst=PEER))
    assert hit.indicators["fields"] == "Contact,Record-Route,Via"
    (hit,) = leak_detector().observe(observe(invite(sdp_address="10.4.4.4"), src=SBC, dst=PEER))
    assert hit.indicators["fields"] == "SDP c=,SDP o=" and "(+1 more)" in hit.summary


def test_public_documentation_and_hold_addresses_are_not_leaks() -> None:
    detector = leak_detector()
    for data in (
        invite(),  # public / documentation everywhere
        invite(via="pbx.example.com", contact="pbx.example.com"),
        invite(sdp_address="0.0.0.0"),  # RFC 3264 hold
        invite(sdp_address="192.0.2.1"),
    ):
        assert detector.observe(observe(data, src=SBC, dst=PEER)) == []


def test_only_messages_leaving_are_judged() -> None:
    detector = leak_detector()
    leaky = invite(via="10.1.2.3")
    assert detector.observe(observe(leaky, src=PEER, dst=SBC)) == []  # arriving
    assert detector.observe(observe(leaky, src=SBC, dst="10.0.0.6")) == []  # inside to inside
    assert detector.observe(observe(leaky, src=PEER, dst="198.51.100.1")) == []  # elsewhere
    assert detector.observe(observe(leaky, src="2001:db8:1::5", dst=PEER)) != []  # IPv6 inside


def test_silent_without_inside_networks() -> None:
    """No direction is known, so nothing can be said to leave: the documented default."""
    detector = PrivateAddressLeak()
    for data in (invite(via="10.1.2.3", contact="192.168.0.1"), invite(sdp_address="10.0.0.1")):
        assert detector.observe(observe(data, src=SBC, dst=PEER)) == []
        assert detector.observe(observe(data, src="192.168.0.1", dst=PEER)) == []


def test_response_via_is_the_requesters_not_a_leak() -> None:
    """A response carries the Via hops of the outside requester (RFC 3261 §16.7)."""
    assert leak_detector().observe(observe(response(via="192.168.1.20"), src=SBC, dst=PEER)) == []


def test_text_prefilter_never_hides_a_leak() -> None:
    """The cheap first-octet test skips only addresses classify() would not call a leak."""
    from sipwarden.detect.detectors.disclosure import _INTERNAL_FIRST_OCTETS, _maybe_leak
    from sipwarden.net import AddressKind, classify

    leak_kinds = {AddressKind.PRIVATE, AddressKind.LOOPBACK, AddressKind.LINK_LOCAL}
    for a in range(256):
        if str(a) in _INTERNAL_FIRST_OCTETS:
            continue
        for b in range(256):
            address = f"{a}.{b}.{b}.1"
            assert not _maybe_leak(address)
            assert classify(address) not in leak_kinds, address
    assert _maybe_leak("[fd00::1]") and _maybe_leak("fe80::1") and _maybe_leak("10.0.0.1")
    assert not _maybe_leak("pbx.example.com") and not _maybe_leak("")


def test_leak_kinds_are_configurable() -> None:
    detector = leak_detector(leak_kinds=("loopback",))
    assert detector.observe(observe(invite(via="10.1.2.3"), src=SBC, dst=PEER)) == []
    assert detector.observe(observe(invite(via="127.0.0.1"), src=SBC, dst=PEER)) != []


def test_malformed_fields_are_skipped_not_raised() -> None:
    data = invite(via="10.1.2.3").replace(b"Contact: <sip:200@198.51.100.7>", b"Contact: <<<")
    (hit,) = leak_detector().observe(observe(data, src=SBC, dst=PEER))
    assert hit.indicators["fields"] == "Via"
    bad_sdp = invite(sdp_address="10.1.1.1").replace(b"c=IN IP4 10.1.1.1", b"c=IN IP4")
    assert leak_detector().observe(observe(bad_sdp, src=SBC, dst=PEER)) == []
    garbage = observe(b"\x16\x03\x01garbage\r\n\r\n", src=SBC, dst=PEER)
    assert leak_detector().observe(garbage) == []


def test_leak_allow_listed_source_is_silent() -> None:
    detector = leak_detector(allow_sources=("10.0.0.0/24",))
    assert detector.observe(observe(invite(via="10.1.2.3"), src=SBC, dst=PEER)) == []
    assert detector.observe(observe(invite(via="10.1.2.3"), src="10.0.1.5", dst=PEER)) != []


def test_leaks_aggregate_per_source_and_episode() -> None:
    engine = Engine([leak_detector()], EngineConfig(episode_gap_s=300.0))
    for i in range(10):
        engine.observe(observe(invite(via="10.1.2.3"), ts=i, src=SBC, dst=PEER, frame=i + 1))
    # The episode closes after the gap; a leak an hour later is a new finding.
    engine.observe(observe(invite(via="10.1.2.3"), ts=4000.0, src=SBC, dst=PEER, frame=11))
    first, second = engine.finish()
    assert first.count == 10 and first.evidence.frames[:3] == (1, 2, 3)
    assert second.count == 1 and first.id != second.id


def test_leak_hostile_sources_bounded_by_the_engine() -> None:
    """The detector holds no table; the engine's episode bound caps what many leaking
    sources cost, and the early closes are counted."""
    engine = Engine([leak_detector()], EngineConfig(max_open_episodes=10))
    for i in range(100):
        src = f"10.{i >> 8}.{i & 255}.1"
        engine.observe(observe(invite(via="10.1.2.3"), ts=i * 0.01, src=src, dst=PEER))
        assert engine.state_size() <= 10 + engine.tracker.state_size()
    assert engine.detectors[0].state_size() == 0
    assert engine.stats.episodes_closed_early == 90 and engine.evictions() >= 90


# -- VersionDisclosure ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "version"),
    [
        ("Asterisk PBX 16.2.1", "16.2.1"),
        ("Kamailio (5.6.4 (x86_64/linux))", "5.6.4"),
        ("FreeSWITCH-mod_sofia/1.8.2-3-a98a958ac3~64bit", "1.8.2"),
        ("Cisco-CUCM11.5", "11.5"),
        ("AVAYA-SM-7.1.2.0.712004", "7.1.2.0.712004"),
    ],
)
def test_version_found_in_server(value: str, version: str) -> None:
    (hit,) = version_detector().observe(observe(response(server=value), src=SBC, dst=PEER))
    assert hit.detector == "disclosure.version_string" and hit.severity is Severity.INFO
    assert hit.indicators == {"field": "Server", "product": value, "version": version}
    assert hit.key == f"{SBC}|Server|{value}"


@pytest.mark.parametrize("value", ["eyeBeam release 1011s stamp 41121", "Zoiper rev.10106", "SBC"])
def test_product_without_dotted_version_is_silent(value: str) -> None:
    assert version_detector().observe(observe(response(server=value), src=SBC, dst=PEER)) == []


def test_version_in_user_agent_and_sdp_session_name() -> None:
    data = invite(user_agent="Yealink SIP-T46U 108.86.0.45")
    (hit,) = version_detector().observe(observe(data, src=SBC, dst=PEER))
    assert hit.indicators["field"] == "User-Agent" and hit.indicators["version"] == "108.86.0.45"
    data = invite(sdp_address="198.51.100.7", session_name="Asterisk PBX 18.9.0")
    (hit,) = version_detector().observe(observe(data, src=SBC, dst=PEER))
    assert hit.indicators["field"] == "SDP s=" and hit.indicators["version"] == "18.9.0"
    off = version_detector(check_sdp_session_name=False)
    assert off.observe(observe(data, src=SBC, dst=PEER)) == []


def test_version_only_when_leaving_and_silent_by_default() -> None:
    data = response(server="Asterisk PBX 16.2.1")
    assert version_detector().observe(observe(data, src=PEER, dst=SBC)) == []
    assert version_detector().observe(observe(data, src=SBC, dst="10.0.0.6")) == []
    assert VersionDisclosure().observe(observe(data, src=SBC, dst=PEER)) == []


def test_version_allow_listed_source_is_silent() -> None:
    detector = version_detector(allow_sources=(SBC,))
    assert detector.observe(observe(response(server="Asterisk PBX 16.2.1"), src=SBC)) == []


def test_version_one_finding_per_source_and_product() -> None:
    engine = Engine([version_detector()])
    for i in range(5):
        for server in ("Asterisk PBX 16.2.1", "kamailio (5.2.1 (x86_64/linux))"):
            engine.observe(observe(response(server=server), ts=i, src=SBC, dst=PEER))
    findings = engine.finish()
    assert sorted(f.count for f in findings) == [5, 5]
    assert {f.indicators["version"] for f in findings} == {"16.2.1", "5.2.1"}


def test_version_hostile_products_bounded_by_the_engine() -> None:
    engine = Engine([version_detector()], EngineConfig(max_open_episodes=10))
    for i in range(100):
        engine.observe(observe(response(server=f"X {i}.0"), ts=i * 0.01, src=SBC, dst=PEER))
    assert engine.stats.episodes_closed_early == 90 and engine.evictions() >= 90
    # Product strings are cut to 128 characters, so the tail cannot multiply keys.
    engine = Engine([version_detector()])
    for i in range(100):
        server = f"X{'y' * 300} {i}.0"
        engine.observe(observe(response(server=server), ts=i * 0.01, src=SBC, dst=PEER))
    (finding,) = engine.finish()
    assert finding.count == 100 and len(finding.indicators["product"]) == 128


def test_version_non_utf8_product_is_escaped_and_hashable() -> None:
    """Regression: a User-Agent with non-UTF-8 bytes (the ndpi fuzz capture has them) reached
    the finding key as lone surrogates, and Finding.id's UTF-8 hash crashed `analyze`."""
    data = invite(user_agent="Nero SIPPS 2.0.51.16").replace(b"SIPPS", b"SI\x9aPPS\x01")
    engine = Engine([version_detector()])
    engine.observe(observe(data, src=SBC, dst=PEER))
    (finding,) = engine.finish()
    assert finding.indicators["product"] == "Nero SI\\udc9aPPS\\x01 2.0.51.16"
    assert finding.id and json.dumps(finding.to_json(), ensure_ascii=False).encode()


# -- corpus --------------------------------------------------------------------------------------

RFC1918 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10")


def _normal_captures() -> list[str]:
    return sorted(str(p.name) for p in (CORPUS / "pcap" / "normal").glob("*.pcap*"))


@pytest.mark.parametrize("name", _normal_captures() or ["(corpus absent)"])
def test_benign_captures_nothing_above_low(name: str) -> None:
    """Even with every private range declared inside (the noisiest honest setting), benign
    traffic yields only low leaks and info versions; with defaults, nothing."""
    path = need_shared(f"corpus/pcap/normal/{name}")
    for inside in ((), RFC1918):
        engine = Engine([leak_detector(inside), version_detector(inside)])
        for obs in iter_observations(path):
            engine.observe(obs)
        findings = engine.finish()
        assert all(f.severity.rank <= Severity.LOW.rank for f in findings)
        if not inside:
            assert findings == []


def test_corpus_capture_with_nat_leak() -> None:
    """wireshark-aaa-sip-rtp: a phone at 192.168.1.2 talks to public proxies with its private
    address in Via and Contact, and announces its User-Agent version."""
    path = need_shared("corpus/pcap/normal/suricata-verify--wireshark-aaa-sip-rtp.pcap")
    engine = Engine([leak_detector(RFC1918), version_detector(RFC1918)])
    for obs in iter_observations(path):
        engine.observe(obs)
    by_detector = {f.detector: f for f in engine.finish()}
    leak = by_detector["disclosure.private_address"]
    assert leak.key == "192.168.1.2" and leak.count == 47
    version = by_detector["disclosure.version_string"]
    assert version.indicators["version"] == "2.0.51.16"
