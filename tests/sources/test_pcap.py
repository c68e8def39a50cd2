"""sources.pcap: classic pcap and pcapng reading, file errors, and real captures vs tshark."""

from __future__ import annotations

import csv
import struct
from collections import Counter
from pathlib import Path

import pytest

from sipwarden.errors import InputError
from sipwarden.sip import ParseLimits, parse_message
from sipwarden.sources import Frame, SourceStats, iter_frames, iter_sip
from tests.conftest import need_shared
from tests.sources import INVITE, OK, ethernet, ipv4, udp

FRAME_1 = ethernet(ipv4("192.0.2.1", "192.0.2.2", 17, udp(5060, 5060, INVITE)))
FRAME_2 = ethernet(ipv4("192.0.2.2", "192.0.2.1", 17, udp(5060, 5060, OK)))


def classic_pcap(
    frames: list[tuple[int, int, bytes]],
    *,
    order: str = "<",
    nano: bool = False,
    linktype: int = 1,
) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for sec, frac, data in frames:
        out += struct.pack(order + "IIII", sec, frac, len(data), len(data)) + data
    return out


def _block(order: str, block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack(order + "II", block_type, length) + body + struct.pack(order + "I", length)


def _option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def pcapng(order: str = "<", tsresol: int | None = None) -> bytes:
    shb = _block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    options = b""
    if tsresol is not None:
        options = _option(order, 9, bytes([tsresol])) + _option(order, 0, b"")
    idb = _block(order, 1, struct.pack(order + "HHI", 1, 0, 65535) + options)
    unit = 10**9 if tsresol == 9 else 10**6
    ticks = 1_700_000_000 * unit + unit // 4  # .25 s
    epb = _block(
        order,
        6,
        struct.pack(order + "IIIII", 0, ticks >> 32, ticks & 0xFFFFFFFF, len(FRAME_1), len(FRAME_1))
        + FRAME_1,
    )
    custom = _block(order, 0x00000BAD, b"ignored")
    spb = _block(order, 3, struct.pack(order + "I", len(FRAME_2)) + FRAME_2)
    return shb + idb + custom + epb + spb


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_classic_pcap_both_byte_orders_and_resolutions(
    tmp_path: Path, order: str, nano: bool
) -> None:
    frac = 500_000_000 if nano else 500_000
    path = tmp_path / "c.pcap"
    path.write_bytes(
        classic_pcap([(100, frac, FRAME_1), (101, 0, FRAME_2)], order=order, nano=nano)
    )
    assert list(iter_frames(path)) == [Frame(1, 100.5, 1, FRAME_1), Frame(2, 101.0, 1, FRAME_2)]
    messages = list(iter_sip(path))
    assert [(m.frame, m.payload) for m in messages] == [(1, INVITE), (2, OK)]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("tsresol", [None, 9])
def test_pcapng_sections_interfaces_and_packet_blocks(
    tmp_path: Path, order: str, tsresol: int | None
) -> None:
    path = tmp_path / "c.pcapng"
    path.write_bytes(pcapng(order, tsresol))
    frames = list(iter_frames(path))
    assert [(f.number, f.linktype, f.data) for f in frames] == [(1, 1, FRAME_1), (2, 1, FRAME_2)]
    assert frames[0].ts == pytest.approx(1_700_000_000.25)
    assert [m.payload for m in iter_sip(path)] == [INVITE, OK]


def test_truncated_last_record_keeps_what_was_read(tmp_path: Path) -> None:
    whole = classic_pcap([(1, 0, FRAME_1), (2, 0, FRAME_2)])
    for cut in (len(whole) - 1, len(whole) - len(FRAME_2) - 5):
        path = tmp_path / "cut.pcap"
        path.write_bytes(whole[:cut])
        stats = SourceStats()
        assert [m.payload for m in iter_sip(path, stats)] == [INVITE]
        assert stats.truncated_records == 1
        assert stats.frames == 1


def test_truncated_pcapng_block_keeps_what_was_read(tmp_path: Path) -> None:
    whole = pcapng()
    path = tmp_path / "cut.pcapng"
    path.write_bytes(whole[:-8])
    stats = SourceStats()
    assert [m.payload for m in iter_sip(path, stats)] == [INVITE]
    assert stats.truncated_records == 1


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "not a pcap or pcapng file"),
        (b"", "not a pcap or pcapng file"),
        (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00", "truncated pcap file header"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x4d\x3c\x2b\x1a", "truncated pcapng section header"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\x00\x00\x00\x00", "byte-order magic"),
    ],
    ids=["text", "empty", "pcap-header", "pcapng-header", "pcapng-magic"],
)
def test_unreadable_files_raise_input_error_naming_the_file(
    tmp_path: Path, content: bytes, detail: str
) -> None:
    path = tmp_path / "capture.pcap"
    path.write_bytes(content)
    with pytest.raises(InputError, match=detail) as info:
        list(iter_frames(path))
    assert info.value.source == str(path)
    assert str(path) in str(info.value)


def test_missing_file_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        list(iter_frames(tmp_path / "absent.pcap"))


def test_implausible_record_length_names_the_frame(tmp_path: Path) -> None:
    data = bytearray(classic_pcap([(1, 0, FRAME_1), (2, 0, FRAME_2)]))
    second = 24 + 16 + len(FRAME_1)
    data[second + 8 : second + 12] = struct.pack("<I", 0x7FFFFFFF)
    path = tmp_path / "bad.pcap"
    path.write_bytes(bytes(data))
    frames: list[Frame] = []
    with pytest.raises(InputError) as info:
        frames.extend(iter_frames(path))
    assert info.value.where == "frame 2"
    assert [f.number for f in frames] == [1]


def test_bad_frames_are_counted_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pcap"
    frames = [(1, 0, b"\x00" * 10), (2, 0, ethernet(b"\x00" * 28, 0x0806)), (3, 0, FRAME_2)]
    path.write_bytes(classic_pcap(frames))
    stats = SourceStats()
    assert [m.frame for m in iter_sip(path, stats)] == [3]
    assert (stats.frames, stats.truncated, stats.non_ip, stats.sip_messages) == (3, 1, 1, 1)


def test_pcapng_packet_block_for_an_unknown_interface_is_counted(tmp_path: Path) -> None:
    data = bytearray(pcapng())
    epb = data.index(struct.pack("<I", 6))
    data[epb + 8 : epb + 12] = struct.pack("<I", 5)  # interface 5 was never described
    path = tmp_path / "c.pcapng"
    path.write_bytes(bytes(data))
    stats = SourceStats()
    assert [(f.number, f.data) for f in iter_frames(path, stats)] == [(2, FRAME_2)]
    assert stats.malformed == 1


# -- real captures, compared with tshark's counts in INDEX.tsv ------------------------------

CORPUS = "corpus/pcap"


def _index() -> dict[str, dict[str, str]]:
    path = need_shared(f"{CORPUS}/INDEX.tsv")
    with path.open(encoding="utf-8") as handle:
        return {row["file"]: row for row in csv.DictReader(handle, delimiter="\t")}


def _transports(row: dict[str, str]) -> dict[str, int]:
    field = row["sip_frames_by_transport"]
    if field == "-":
        return {}
    return {k: int(v) for k, v in (part.split(":") for part in field.split(","))}


MATCHING = [
    "normal/suricata-verify--sip-invite-sdp-200.pcap",
    "attack/initconf--BadUserAgent-sipvicious.pcap",
    "attack/initconf--SIP-212.32.250.134.pcap",
    "attack/initconf--SIP-3700-unauthorized-401.pcap",
    "normal/heplify--sip_ipv6_udp.pcap",
    "normal/ndpi--sip_hello.pcapng",
    "edge/ndpi--sip-in-gre.pcapng",
    "normal/heplify--sip_ipv4_tcp.pcap",
    "normal/heplify--sip_ipv4_tcp_fragmented.pcap",
    "normal/heplify--sip_ipv4_tcp_retrans.pcap",
    "normal/heplify--ipip0.pcap",
    "normal/ndpi--FAX-Call-t38-CA-TDM-SIP-FB-1.pcap",
    "normal/snort3_demo--SIP_Eyebeam2Eyebeam_Video_Audio.pcap",
    "normal/snort3_demo--digium.pcap",
    "normal/suricata-verify--cloudshark-sip-s0.pcap",
    "normal/suricata-verify--sip-options-200.pcap",
    "normal/suricata-verify--sip-tcp-register-401.pcap",
    "normal/suricata-verify--sip-tcp-register-zoiper.pcap",
    "normal/suricata-verify--sip-udp-register-401.pcap",
    "normal/suricata-verify--wireshark-aaa-sip-rtp.pcap",
    "edge/suricata-verify--sip_compact_form.pcap",
    "edge/zeek--sip-long-request-response-paths.pcap",
    "malformed/snort3_demo--user_defined_method.pcap",
    "malformed/suricata-verify--sip_header_multi_val.pcap",
    "malformed/zeek--invalid-content-length.pcap",
    "malformed/zeek--sip-junk-before-request.pcap",
    "negative/ndpi--http_on_sip_port.pcap",
    "negative/suricata-verify--ssdp.pcap",
]
# Messages the content test finds but tshark's port-based dissector does not (neither port 5060).
EXTRA_ON_OTHER_PORTS = {"attack/initconf--SIP-Bruteforce-Single-IP.pcap": 6}
# Content tshark decodes only because of the port, which is not a SIP message by content.
UNPARSEABLE_BY_DESIGN = {"malformed/zeek--invalid-content-length.pcap"}


@pytest.mark.parametrize("name", [*MATCHING, *EXTRA_ON_OTHER_PORTS])
def test_sip_messages_match_tshark(name: str) -> None:
    row = _index()[name]
    path = need_shared(f"{CORPUS}/{name}")
    stats = SourceStats()
    messages = list(iter_sip(path, stats))
    expected = int(row["sip_messages"]) + EXTRA_ON_OTHER_PORTS.get(name, 0)
    assert len(messages) == expected, stats.as_dict()
    assert stats.sip_messages == expected
    if name.startswith("negative/"):
        return
    transports = Counter(str(m.src.transport) for m in messages)
    if name not in EXTRA_ON_OTHER_PORTS:
        assert dict(transports) == _transports(row)
    assert [m.frame for m in messages] == sorted(m.frame for m in messages)
    if name not in UNPARSEABLE_BY_DESIGN:
        for message in messages:
            parse_message(message.payload)


def test_invalid_content_length_capture_reaches_the_parser() -> None:
    """Both datagrams are SIP by their start line; the parser then rejects `Content-Length: bad`."""
    from sipwarden.sip import SipParseError

    path = need_shared(f"{CORPUS}/malformed/zeek--invalid-content-length.pcap")
    messages = list(iter_sip(path))
    assert len(messages) == 2
    for message in messages:
        with pytest.raises(SipParseError):
            parse_message(message.payload)


def test_large_tcp_body_needs_larger_limits() -> None:
    """A 65 KB INVITE exceeds the default max_message_bytes: reported as a framing error (an
    observation with the error, so the malformed detectors see it), framed with raised limits."""
    path = need_shared(f"{CORPUS}/edge/suricata-verify--sip-body-large.pcap")
    stats = SourceStats()
    refused, trying = list(iter_sip(path, stats))
    assert refused.error is not None and refused.error.code == "message_too_large"
    assert (refused.frame, refused.payload) == (5, b"")
    assert trying.error is None and trying.payload.startswith(b"SIP/2.0 100")
    assert stats.tcp_framing_errors == 1
    big = ParseLimits(max_message_bytes=1 << 20, max_body_bytes=1 << 20)
    messages = list(iter_sip(path, limits=big))
    assert len(messages) == 2
    assert len(messages[0].payload) > 65535


def test_truncated_copy_of_a_real_capture(tmp_path: Path) -> None:
    source = need_shared(f"{CORPUS}/normal/suricata-verify--cloudshark-sip-s0.pcap")
    data = source.read_bytes()
    offsets = []
    pos = 24
    while pos < len(data):
        offsets.append(pos)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: offsets[6] + 30])  # inside frame 7's packet data
    stats = SourceStats()
    frames = list(iter_frames(cut, stats))
    assert [f.number for f in frames] == [1, 2, 3, 4, 5, 6]
    assert stats.truncated_records == 1
    assert [m.frame for m in iter_sip(cut)] == [m.frame for m in iter_sip(source)][:6]


def test_sip_over_sctp_with_a_fragmented_user_message() -> None:
    """tshark's 4 messages in heplify--sip_sctp.pcap: the INVITE (SIP-I, with ISUP) is split
    over frames 1 and 2 as two DATA chunks (begin, end) of one stream."""
    path = need_shared(f"{CORPUS}/normal/heplify--sip_sctp.pcap")
    stats = SourceStats()
    messages = list(iter_sip(path, stats))
    assert [m.frame for m in messages] == [2, 3, 4, 5]
    assert {m.src.transport for m in messages} == {"sctp"}
    assert messages[0].payload.startswith(b"INVITE sip:9275890000@VMSSM;user=phone SIP/2.0")
    assert (stats.sctp_packets, stats.sctp_messages, stats.other_protocol) == (5, 4, 0)


def test_websocket_messages_are_unwrapped() -> None:
    """SIP over WebSocket (RFC 7118, a SIP.js client through OpenSIPS): tshark's 39 messages,
    28 on UDP and 11 in WebSocket frames on TCP port 8080."""
    path = need_shared(f"{CORPUS}/normal/heplify--sip_tcp_websocket.pcap")
    stats = SourceStats()
    messages = list(iter_sip(path, stats))
    assert Counter(str(m.src.transport) for m in messages) == {"udp": 28, "ws": 11}
    assert (stats.ws_messages, stats.ws_framing_errors) == (11, 0)
    ws = [m for m in messages if m.src.transport == "ws"]
    assert [m.frame for m in ws] == [11, 13, 15, 18, 19, 24, 34, 46, 49, 52, 56]
    assert ws[0].payload.startswith(b"INVITE sip:+12263382742@") and ws[0].dst.port == 8080


def test_fuzzed_capture_is_read_to_the_end() -> None:
    """tshark decodes 52 by port 5060, leniently; we skip 6 frames whose IP or UDP length exceeds
    the captured bytes (counted as truncated) and one whose start line ends in CR + junk, and find
    2 that tshark does not."""
    path = need_shared(f"{CORPUS}/malformed/ndpi--fuzz-2006-06-26-2594.pcap")
    stats = SourceStats()
    messages = list(iter_sip(path, stats))
    assert len(messages) == 47
    assert stats.frames == 691
    assert stats.truncated > 0


def test_pages_read_are_released_behind_the_reader(tmp_path: Path) -> None:
    """A mapped capture's pages count as resident memory; the reader hands them back every
    8 MiB (page-aligned), so a large capture does not end up resident as a whole."""
    import mmap

    from sipwarden.sources.pcap import _RELEASE_BYTES, _Releaser

    path = tmp_path / "blob"
    path.write_bytes(b"\x00" * (_RELEASE_BYTES * 2 + 12345))
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        releaser = _Releaser(buf)
        releaser.upto(_RELEASE_BYTES - 1)
        assert releaser.done == 0
        releaser.upto(_RELEASE_BYTES + 100)
        assert releaser.done == _RELEASE_BYTES and releaser.done % mmap.PAGESIZE == 0
        releaser.upto(len(buf))
        assert releaser.done == len(buf) - len(buf) % mmap.PAGESIZE
