"""WebSocket deframing (RFC 6455) for SIP over WebSocket (RFC 7118): handshake skipped, client
frames unmasked, fragments joined, control frames skipped, bounds enforced - and the extractor
turning a TCP direction that upgrades into SIP messages."""

from __future__ import annotations

import contextlib
import os
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwarden.net import Transport
from sipwarden.sources.decode import SipExtractor
from sipwarden.sources.websocket import (
    MAX_HANDSHAKE_BYTES,
    WebSocketDeframer,
    WebSocketError,
    starts_websocket,
)
from tests.sources.test_decode import A, B, ipv4, tcp

UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: proxy.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: sip\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
SWITCHING = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Protocol: sip\r\n\r\n"
)
OPTIONS = (
    b"OPTIONS sip:proxy.example.com SIP/2.0\r\nVia: SIP/2.0/WS df7jal23ls0d.invalid;"
    b"branch=z9hG4bKhjhs8ass877\r\nMax-Forwards: 70\r\nTo: <sip:proxy.example.com>\r\n"
    b"From: <sip:alice@example.com>;tag=1928301774\r\nCall-ID: a84b4c76e66710\r\n"
    b"CSeq: 63104 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def frame(payload: bytes, opcode: int = 1, *, fin: bool = True, mask: bytes | None = None) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if mask is not None else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if mask is None:
        return head + payload
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def test_handshake_detection() -> None:
    assert starts_websocket(UPGRADE) and starts_websocket(SWITCHING)
    assert not starts_websocket(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP
    assert not starts_websocket(OPTIONS)


def test_masked_client_message_after_the_handshake() -> None:
    deframer = WebSocketDeframer(65535)
    assert deframer.feed(UPGRADE) == []
    assert deframer.feed(frame(OPTIONS, mask=os.urandom(4))) == [OPTIONS]


def test_server_messages_split_anywhere_and_extended_lengths() -> None:
    big = OPTIONS + b"x" * 300  # 16-bit length form
    stream = SWITCHING + frame(OPTIONS) + frame(big, opcode=2)
    for cut in range(1, len(stream)):
        deframer = WebSocketDeframer(65535)
        assert deframer.feed(stream[:cut]) + deframer.feed(stream[cut:]) == [OPTIONS, big]


def test_fragments_joined_and_control_frames_skipped() -> None:
    deframer = WebSocketDeframer(65535)
    deframer.feed(SWITCHING)
    parts = [
        frame(OPTIONS[:10], fin=False),
        frame(b"ping", opcode=0x9),  # control frames may come between fragments
        frame(OPTIONS[10:50], opcode=0, fin=False),
        frame(OPTIONS[50:], opcode=0),
    ]
    assert deframer.feed(b"".join(parts)) == [OPTIONS]


def test_close_frame_ends_the_stream() -> None:
    deframer = WebSocketDeframer(65535)
    deframer.feed(SWITCHING)
    assert deframer.feed(frame(b"\x03\xe8", opcode=0x8) + frame(OPTIONS)) == []
    assert deframer.feed(frame(OPTIONS)) == []


@pytest.mark.parametrize(
    ("stream", "match"),
    [
        (SWITCHING + frame(b"x" * 2000), "exceeds max_message_bytes=1024"),
        (SWITCHING + frame(b"x" * 600, fin=False) + frame(b"y" * 600, opcode=0), "exceeds"),
        (SWITCHING + frame(b"x", opcode=0x3), "reserved opcode"),
        (SWITCHING + frame(b"x", opcode=0), "continuation frame without"),
        (SWITCHING + frame(b"x", fin=False) + frame(b"y"), "new message before"),
        (b"HTTP/1.1 101 " + b"a" * MAX_HANDSHAKE_BYTES, "upgrade head longer"),
    ],
    ids=[
        "oversize",
        "oversize-fragments",
        "reserved",
        "orphan-continuation",
        "interleaved",
        "head",
    ],
)
def test_violations_are_errors(stream: bytes, match: str) -> None:
    with pytest.raises(WebSocketError, match=match):
        WebSocketDeframer(1024).feed(stream)


def test_a_huge_declared_length_is_refused_before_buffering() -> None:
    deframer = WebSocketDeframer(65535)
    deframer.feed(SWITCHING)
    with pytest.raises(WebSocketError, match="exceeds"):
        deframer.feed(b"\x81\x7f" + struct.pack("!Q", 1 << 62))


@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_raise_the_documented_error(data: bytes) -> None:
    deframer = WebSocketDeframer(4096)
    with contextlib.suppress(WebSocketError):
        deframer.feed(SWITCHING + data)


def test_extractor_unwraps_sip_from_an_upgraded_connection() -> None:
    extractor = SipExtractor()
    seq = 1
    out = []
    for payload in (UPGRADE, frame(OPTIONS, mask=b"\x01\x02\x03\x04"), frame(b"not sip")):
        out += extractor.feed(1, 0.0, 101, ipv4(A, B, 6, tcp(40000, 8080, seq, payload)))
        seq += len(payload)
    (message,) = out
    assert message.payload == OPTIONS and message.src.transport is Transport.WS
    assert extractor.stats.ws_messages == 1 and extractor.stats.sip_messages == 1


def test_extractor_drops_a_broken_websocket_stream() -> None:
    extractor = SipExtractor()
    bad = SWITCHING + frame(b"x", opcode=0x3)
    assert extractor.feed(1, 0.0, 101, ipv4(B, A, 6, tcp(8080, 40000, 1, bad))) == []
    assert extractor.stats.ws_framing_errors == 1 and extractor.flow_count == 0
