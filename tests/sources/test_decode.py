"""sources.decode: link layers, IP, fragments, tunnels, and SIP extraction over UDP and TCP."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.net import Endpoint, Transport
from sipwarden.sip import ParseLimits, parse_message
from sipwarden.sources.decode import (
    SUPPORTED_LINKTYPES,
    Datagram,
    FrameDecoder,
    Segment,
    SipExtractor,
    Skipped,
    SkipReason,
    SourceStats,
    looks_like_sip,
)
from tests.sources import (
    INVITE,
    OK,
    ethernet,
    ipv4,
    ipv6,
    ipv6_fragment,
    sll,
    sll2,
    tcp,
    udp,
)

A, B = "192.0.2.1", "198.51.100.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
UDP_PACKET = ipv4(A, B, 17, udp(5060, 5080, INVITE))
EXPECTED = Datagram(A, 5060, B, 5080, INVITE)


@pytest.mark.parametrize(
    ("linktype", "frame"),
    [
        (1, ethernet(UDP_PACKET)),
        (1, ethernet(UDP_PACKET, vlans=(100,))),
        (1, ethernet(UDP_PACKET, vlans=(100, 200))),  # QinQ: 802.1ad outer, 802.1Q inner
        (113, sll(UDP_PACKET)),
        (276, sll2(UDP_PACKET)),
        (101, UDP_PACKET),
        (12, UDP_PACKET),
        (14, UDP_PACKET),
        (228, UDP_PACKET),
        (0, struct.pack("<I", 2) + UDP_PACKET),  # BSD NULL, little-endian host
        (0, struct.pack(">I", 2) + UDP_PACKET),  # BSD NULL, big-endian host
        (108, struct.pack(">I", 2) + UDP_PACKET),  # OpenBSD LOOP: network byte order
    ],
    ids=[
        "eth",
        "vlan",
        "qinq",
        "sll",
        "sll2",
        "raw",
        "raw12",
        "raw14",
        "ipv4",
        "null-le",
        "null-be",
        "loop",
    ],
)
def test_each_link_type_decodes_to_the_same_datagram(linktype: int, frame: bytes) -> None:
    decoder = FrameDecoder()
    assert decoder.decode(linktype, frame, 0.0) == EXPECTED
    assert decoder.stats.decoded == 1
    assert decoder.stats.udp_datagrams == 1


def test_ethernet_padding_after_the_ip_packet_is_ignored() -> None:
    assert FrameDecoder().decode(1, ethernet(UDP_PACKET) + b"\x00" * 6, 0.0) == EXPECTED


def test_ipv6_with_extension_headers() -> None:
    hop_by_hop = bytes([60, 0]) + b"\x01\x04\x00\x00\x00\x00"  # → destination options
    dest_opts = bytes([17, 0]) + b"\x01\x04\x00\x00\x00\x00"  # → UDP
    packet = ipv6(A6, B6, 0, hop_by_hop + dest_opts + udp(5060, 5060, OK))
    for linktype, frame in [
        (1, ethernet(packet, 0x86DD)),
        (101, packet),
        (229, packet),
        (0, struct.pack("<I", 30) + packet),
    ]:
        assert FrameDecoder().decode(linktype, frame, 0.0) == Datagram(A6, 5060, B6, 5060, OK)


def test_ipv4_fragments_out_of_order_are_reassembled() -> None:
    datagram = udp(5060, 5060, INVITE)
    pieces = [datagram[i : i + 64] for i in range(0, len(datagram), 64)]
    frames = [
        ipv4(A, B, 17, piece, ident=7, offset=64 * i, more=i < len(pieces) - 1)
        for i, piece in enumerate(pieces)
    ]
    decoder = FrameDecoder()
    order = [2, 0, *range(3, len(frames)), 1]
    results = [decoder.decode(101, frames[i], float(n)) for n, i in enumerate(order)]
    assert all(r == Skipped(SkipReason.FRAGMENT_PENDING) for r in results[:-1])
    assert results[-1] == Datagram(A, 5060, B, 5060, INVITE)
    assert decoder.stats.fragments == len(frames)
    assert decoder.stats.fragments_reassembled == 1
    assert len(decoder.fragments) == 0


def test_ipv6_fragment_header_is_reassembled() -> None:
    datagram = udp(5060, 5060, OK)
    first, second = datagram[:80], datagram[80:]
    decoder = FrameDecoder()
    frag2 = ipv6(A6, B6, 44, ipv6_fragment(17, 80, False, 9, second))
    frag1 = ipv6(A6, B6, 44, ipv6_fragment(17, 0, True, 9, first))
    assert decoder.decode(101, frag2, 0.0) == Skipped(SkipReason.FRAGMENT_PENDING)
    assert decoder.decode(101, frag1, 0.1) == Datagram(A6, 5060, B6, 5060, OK)


def test_fragment_table_is_bounded_and_counts_evictions() -> None:
    decoder = FrameDecoder(max_fragmented_datagrams=4)
    for ident in range(40):
        decoder.decode(101, ipv4(A, B, 17, b"x" * 8, ident=ident, more=True), 0.0)
    assert len(decoder.fragments) == 4
    assert decoder.stats.fragments_evicted == 36


def test_fragments_expire_in_packet_time() -> None:
    decoder = FrameDecoder(fragment_timeout_s=30.0)
    datagram = udp(5060, 5060, OK)
    decoder.decode(101, ipv4(A, B, 17, datagram[:64], ident=3, more=True), 0.0)
    late = decoder.decode(101, ipv4(A, B, 17, datagram[64:], ident=3, offset=64), 31.0)
    assert late == Skipped(SkipReason.FRAGMENT_PENDING)
    assert decoder.stats.fragments_expired == 1
    assert decoder.stats.fragments_reassembled == 0


def test_conflicting_fragment_drops_the_datagram() -> None:
    decoder = FrameDecoder()
    decoder.decode(101, ipv4(A, B, 17, b"a" * 16, ident=5, more=True), 0.0)
    result = decoder.decode(101, ipv4(A, B, 17, b"b" * 16, ident=5, more=True), 0.0)
    assert result == Skipped(SkipReason.FRAGMENT_DROPPED)
    assert decoder.stats.fragments_dropped == 1
    assert len(decoder.fragments) == 0


def test_ip_in_ip_is_unwrapped_once() -> None:
    decoder = FrameDecoder()
    assert decoder.decode(101, ipv4("10.0.0.1", "10.0.0.2", 4, UDP_PACKET), 0.0) == EXPECTED
    inner6 = ipv6(A6, B6, 17, udp(5060, 5060, OK))
    six_in_four = decoder.decode(101, ipv4("10.0.0.1", "10.0.0.2", 41, inner6), 0.0)
    assert six_in_four == Datagram(A6, 5060, B6, 5060, OK)
    twice = ipv4("10.0.0.3", "10.0.0.4", 4, ipv4("10.0.0.1", "10.0.0.2", 4, UDP_PACKET))
    assert decoder.decode(101, twice, 0.0).reason is SkipReason.TUNNEL_TOO_DEEP  # type: ignore[union-attr]
    assert decoder.stats.tunnels == 3
    assert decoder.stats.tunnel_too_deep == 1


@pytest.mark.parametrize(
    ("gre_header", "inner"),
    [
        (struct.pack("!HH", 0, 0x0800), UDP_PACKET),
        (struct.pack("!HHI", 0x2000, 0x0800, 42), UDP_PACKET),  # with key
        (struct.pack("!HH", 0, 0x6558), ethernet(UDP_PACKET)),  # transparent bridging
        (struct.pack("!HHII", 0x3001, 0x880B, 0, 1), b"\xff\x03\x00\x21" + UDP_PACKET),  # PPTP
    ],
    ids=["plain", "key", "bridged", "pptp"],
)
def test_gre_is_unwrapped(gre_header: bytes, inner: bytes) -> None:
    frame = ipv4("10.0.0.1", "10.0.0.2", 47, gre_header + inner)
    assert FrameDecoder().decode(101, frame, 0.0) == EXPECTED


def test_tcp_segment_fields() -> None:
    frame = ipv4(A, B, 6, tcp(40000, 5060, 1000, b"hello", flags=0x18))
    result = FrameDecoder().decode(101, frame, 0.0)
    assert result == Segment(A, 40000, B, 5060, 1000, 0x18, b"hello")
    assert isinstance(result, Segment)
    assert result.flow == (A, 40000, B, 5060)


@pytest.mark.parametrize(
    ("linktype", "frame", "reason"),
    [
        (147, UDP_PACKET, SkipReason.UNSUPPORTED_LINKTYPE),
        (1, ethernet(b"\x00" * 28, 0x0806), SkipReason.NON_IP),  # ARP
        (101, b"\x20" + UDP_PACKET[1:], SkipReason.NON_IP),  # IP version 2
        (101, ipv4(A, B, 1, b"\x08\x00" + b"\x00" * 6), SkipReason.OTHER_PROTOCOL),  # ICMP
        (101, ipv4(A, B, 50, b"\x00" * 12), SkipReason.OTHER_PROTOCOL),  # ESP
        (101, UDP_PACKET[:30], SkipReason.TRUNCATED),
        (101, b"\x44" + UDP_PACKET[1:], SkipReason.MALFORMED),  # IHL of 16 bytes
        (0, struct.pack("<I", 7) + UDP_PACKET, SkipReason.NON_IP),
    ],
    ids=["linktype", "arp", "version", "icmp", "esp", "truncated", "ihl", "null-family"],
)
def test_undecodable_frames_are_skipped_and_counted(
    linktype: int, frame: bytes, reason: SkipReason
) -> None:
    decoder = FrameDecoder()
    result = decoder.decode(linktype, frame, 0.0)
    assert isinstance(result, Skipped)
    assert result.reason is reason
    assert getattr(decoder.stats, reason.value) == 1
    assert decoder.stats.decoded == 0


def test_every_prefix_of_a_frame_is_skipped_as_truncated() -> None:
    frame = ethernet(UDP_PACKET, vlans=(5,))
    decoder = FrameDecoder()
    for cut in range(len(frame)):
        result = decoder.decode(1, frame[:cut], 0.0)
        assert result == Skipped(SkipReason.TRUNCATED, result.detail)  # type: ignore[union-attr]


@settings(max_examples=300, deadline=None)
@given(linktype=st.sampled_from(sorted(SUPPORTED_LINKTYPES)), data=st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(linktype: int, data: bytes) -> None:
    result = FrameDecoder().decode(linktype, data, 0.0)
    assert isinstance(result, Datagram | Segment | Skipped)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=120), position=st.integers(0, 200))
def test_mutated_frames_never_raise(data: bytes, position: int) -> None:
    frame = bytearray(ethernet(ipv4(A, B, 47, struct.pack("!HH", 0, 0x0800) + UDP_PACKET)))
    position %= len(frame)
    frame[position : position + len(data)] = data
    extractor = SipExtractor()
    extractor.feed(1, 0.0, 1, bytes(frame))
    assert extractor.stats.frames == 1


# -- SIP extraction -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (INVITE, True),
        (OK, True),
        (b"OPTIONS sips:100@192.0.2.1 SIP/2.0\n", True),
        (b"MESSAGE tel:+15551234 SIP/2.0\r\n", True),
        (b"DBREGISTER sip:1.1.1.1:5060 SIP/2.0\r\n", True),  # junk glued to the method
        (b"NOTIFY * HTTP/1.1\r\n", False),  # SSDP
        (b"GET / HTTP/1.1\r\n", False),
        (b"\r\n\r\n", False),  # keep-alive
        (b"\x00\x00\x00\x00", False),
        (b"SIP/2.0 20 OK\r\n", False),
        (b"", False),
    ],
)
def test_looks_like_sip(payload: bytes, expected: bool) -> None:
    assert looks_like_sip(payload) is expected


def test_udp_sip_is_found_on_any_port() -> None:
    extractor = SipExtractor()
    frame = ethernet(ipv4(A, B, 17, udp(40000, 41000, INVITE)))
    (item,) = extractor.feed(7, 1.5, 1, frame)
    assert item.frame == 7
    assert item.ts == 1.5
    assert item.src == Endpoint(A, 40000, Transport.UDP)
    assert item.dst == Endpoint(B, 41000, Transport.UDP)
    assert parse_message(item.payload).method == "INVITE"  # type: ignore[union-attr]
    assert extractor.feed(8, 1.6, 1, ethernet(ipv4(A, B, 17, udp(1, 2, b"\x00" * 12)))) == []
    assert extractor.stats.udp_datagrams == 2
    assert extractor.stats.udp_sip == extractor.stats.sip_messages == 1


def _tcp_frames(stream: bytes, size: int, seq: int = 1000, sport: int = 40000) -> list[bytes]:
    return [
        ipv4(A, B, 6, tcp(sport, 5060, seq + i, stream[i : i + size]))
        for i in range(0, len(stream), size)
    ]


def test_tcp_messages_split_across_segments_are_framed() -> None:
    stream = INVITE + b"\r\n\r\n" + OK  # a keep-alive ping between the two
    extractor = SipExtractor()
    out = []
    syn = ipv4(A, B, 6, tcp(40000, 5060, 999, flags=0x02))
    extractor.feed(1, 0.0, 101, syn)
    for n, frame in enumerate(_tcp_frames(stream, 50), start=2):
        out += extractor.feed(n, float(n), 101, frame)
    assert [m.payload for m in out] == [INVITE, OK]
    assert out[0].src == Endpoint(A, 40000, Transport.TCP)
    assert out[0].frame == 2 + (len(INVITE) - 1) // 50
    assert extractor.stats.tcp_messages == 2
    assert extractor.stats.tcp_keepalives == 1


def test_tcp_retransmissions_are_ignored_and_overlaps_trimmed() -> None:
    extractor = SipExtractor()
    frames = _tcp_frames(INVITE, 60)
    out = []
    for frame in [frames[0], frames[0], *frames[1:]]:
        out += extractor.feed(1, 0.0, 101, frame)
    overlap = ipv4(A, B, 6, tcp(40000, 5060, 1000 + len(INVITE) - 10, INVITE[-10:] + OK))
    out += extractor.feed(2, 0.0, 101, overlap)
    assert [m.payload for m in out] == [INVITE, OK]
    assert extractor.stats.tcp_retransmissions == 1


def test_tcp_gap_drops_the_buffer_and_resynchronises() -> None:
    extractor = SipExtractor()
    frames = _tcp_frames(INVITE, 60)
    out = []
    for frame in [frames[0], *frames[2:]]:  # segment 2 lost
        out += extractor.feed(1, 0.0, 101, frame)
    assert out == []
    assert extractor.stats.tcp_gaps == 1
    after = 1000 + len(INVITE)
    out += extractor.feed(2, 0.0, 101, ipv4(A, B, 6, tcp(40000, 5060, after, OK)))
    assert [m.payload for m in out] == [OK]


def test_tcp_framing_error_is_reported_counted_and_the_flow_dropped() -> None:
    extractor = SipExtractor()
    bad = INVITE.replace(b"Content-Length: 4", b"Content-Length: x")
    (refused,) = extractor.feed(1, 0.0, 101, ipv4(A, B, 6, tcp(40000, 5060, 1, bad)))
    assert refused.error is not None and refused.error.code == "invalid_content_length"
    assert refused.payload == b"" and refused.src.port == 40000
    assert extractor.stats.tcp_framing_errors == 1
    assert extractor.stats.sip_messages == 0
    assert extractor.flow_count == 0


def test_framing_error_of_a_stream_that_never_looked_like_sip_is_silent() -> None:
    """An FTP reply ("550 ...") passes the cheap stream-start test but is not SIP: its framing
    error is counted, not reported as malformed SIP."""
    extractor = SipExtractor()
    ftp = b"550 SiteStat.xml: No such file or directory\r\n\r\n"
    assert extractor.feed(1, 0.0, 101, ipv4(A, B, 6, tcp(40000, 5060, 1, ftp))) == []


def test_non_sip_tcp_is_not_tracked() -> None:
    extractor = SipExtractor()
    http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert extractor.feed(1, 0.0, 101, ipv4(A, B, 6, tcp(40000, 5060, 1, http))) == []
    assert extractor.flow_count == 0
    assert extractor.stats.tcp_segments == 1


def test_tcp_flows_are_bounded_lru() -> None:
    extractor = SipExtractor(max_flows=3)
    half = len(INVITE) // 2
    for port in range(40000, 40010):
        extractor.feed(1, 0.0, 101, ipv4(A, B, 6, tcp(port, 5060, 1, INVITE[:half])))
    assert extractor.flow_count == 3
    assert extractor.stats.flows_evicted == 7
    # the three most recent flows are still there and complete their messages
    rest = [
        extractor.feed(2, 0.0, 101, ipv4(A, B, 6, tcp(port, 5060, 1 + half, INVITE[half:])))
        for port in range(40007, 40010)
    ]
    assert all(len(r) == 1 for r in rest)


def test_fin_ends_the_flow() -> None:
    extractor = SipExtractor()
    extractor.feed(1, 0.0, 101, ipv4(A, B, 6, tcp(40000, 5060, 1, INVITE[:30])))
    assert extractor.flow_count == 1
    extractor.feed(2, 0.0, 101, ipv4(A, B, 6, tcp(40000, 5060, 31, flags=0x11)))
    assert extractor.flow_count == 0


def test_stats_as_dict_lists_every_counter() -> None:
    stats = SourceStats(frames=3)
    assert stats.as_dict()["frames"] == 3
    assert set(stats.as_dict()) >= {"truncated", "fragments_reassembled", "flows_evicted"}


# -- SCTP (RFC 4168) ---------------------------------------------------------------------------


def sctp_data(data: bytes, stream: int = 0, *, begin: bool = True, end: bool = True) -> bytes:
    flags = (0x02 if begin else 0) | (0x01 if end else 0)
    chunk = struct.pack("!BBHIHHI", 0, flags, 16 + len(data), 1, stream, 0, 0) + data
    return chunk + b"\x00" * (-len(chunk) % 4)


def sctp(*chunks: bytes) -> bytes:
    return struct.pack("!HHII", 5060, 5060, 0xDEADBEEF, 0) + b"".join(chunks)


def test_sctp_bundled_messages_and_other_chunks() -> None:
    extractor = SipExtractor()
    heartbeat = struct.pack("!BBH", 4, 0, 8) + b"\x00" * 4
    packet = sctp(heartbeat, sctp_data(INVITE), sctp_data(b"not sip at all"), sctp_data(INVITE, 3))
    out = extractor.feed(1, 0.0, 101, ipv4(A, B, 132, packet))
    assert [m.payload for m in out] == [INVITE, INVITE]
    assert {m.src.transport for m in out} == {"sctp"}
    assert (extractor.stats.sctp_packets, extractor.stats.sctp_messages) == (1, 2)


def test_sctp_fragments_joined_per_stream_and_orphans_dropped() -> None:
    extractor = SipExtractor()
    head, middle, tail = INVITE[:40], INVITE[40:90], INVITE[90:]
    feed = [
        sctp(sctp_data(head, 1, end=False), sctp_data(b"x", 2, begin=False)),  # orphan on 2
        sctp(sctp_data(middle, 1, begin=False, end=False)),
        sctp(sctp_data(tail, 1, begin=False)),
    ]
    out = [
        m for i, p in enumerate(feed) for m in extractor.feed(i + 1, 0.0, 101, ipv4(A, B, 132, p))
    ]
    assert [(m.frame, m.payload) for m in out] == [(3, INVITE)]
    assert extractor.stats.sctp_fragments_dropped == 1


def test_sctp_fragments_over_the_message_limit_are_dropped() -> None:
    extractor = SipExtractor(limits=ParseLimits(max_message_bytes=64))
    extractor.feed(1, 0.0, 101, ipv4(A, B, 132, sctp(sctp_data(b"A" * 60, end=False))))
    extractor.feed(2, 0.0, 101, ipv4(A, B, 132, sctp(sctp_data(b"B" * 60, begin=False))))
    assert extractor.stats.sctp_fragments_dropped == 1


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"\x00" * 8, SkipReason.TRUNCATED),
        (sctp(struct.pack("!BBH", 0, 3, 2)), SkipReason.MALFORMED),
        (sctp(struct.pack("!BBH", 0, 3, 200)), SkipReason.TRUNCATED),
        (sctp(struct.pack("!BBH", 0, 3, 8) + b"\x00" * 4), SkipReason.MALFORMED),
    ],
    ids=["header", "chunk-length", "chunk-truncated", "short-data"],
)
def test_broken_sctp_is_skipped_with_a_reason(packet: bytes, reason: SkipReason) -> None:
    decoded = FrameDecoder().decode(101, ipv4(A, B, 132, packet), 0.0)
    assert isinstance(decoded, Skipped) and decoded.reason is reason
