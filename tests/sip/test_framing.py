"""StreamFramer: cutting a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3, RFC 5626 §3.5.1).

Every framing case runs three ways (h11's ``tr()`` idea): the whole stream in one feed, one byte
per feed, and with a partial next message after it. All three must yield the same messages and
keep-alive events, and leave the same bytes buffered.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.sip import (
    NEED_DATA,
    FramerEvent,
    ParseLimits,
    SipParseError,
    StreamFramer,
    parse_message,
)

PING = FramerEvent.PING
PONG = FramerEvent.PONG
TORTURE = Path("/work/shared/corpus/torture/rfc4475")

Event = bytes | FramerEvent


def _msg(start: str, *headers: str, body: bytes = b"", sep: str = "\r\n") -> bytes:
    """A message with the right Content-Length appended to ``headers``."""
    lines = [start, *headers, f"Content-Length: {len(body)}", ""]
    return sep.join(lines).encode() + sep.encode() + body


SDP = (
    b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\ns=-\r\n"
    b"c=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0\r\n"
)
INVITE = _msg(
    "INVITE sip:bob@example.com SIP/2.0",
    "Via: SIP/2.0/TCP client.example.com:5060;branch=z9hG4bK74bf9",
    "Max-Forwards: 70",
    "From: Alice <sip:alice@example.com>;tag=9fxced76sl",
    "To: Bob <sip:bob@example.com>",
    "Call-ID: 3848276298220188511@client.example.com",
    "CSeq: 1 INVITE",
    "Contact: <sip:alice@client.example.com;transport=tcp>",
    "Content-Type: application/sdp",
    body=SDP,
)
MESSAGE = _msg(
    "MESSAGE sip:bob@example.com SIP/2.0",
    "Via: SIP/2.0/TCP client.example.com;branch=z9hG4bK776sgdkse",
    "Max-Forwards: 70",
    "From: <sip:alice@example.com>;tag=49583",
    "To: <sip:bob@example.com>",
    "Call-ID: asd88asd77a@client.example.com",
    "CSeq: 1 MESSAGE",
    "Content-Type: text/plain",
    body=b"Watson, come here.",
)
OK = _msg(
    "SIP/2.0 200 OK",
    "Via: SIP/2.0/TCP client.example.com:5060;branch=z9hG4bK74bf9;received=192.0.2.10",
    "From: Alice <sip:alice@example.com>;tag=9fxced76sl",
    "To: Bob <sip:bob@example.com>;tag=8321234356",
    "Call-ID: 3848276298220188511@client.example.com",
    "CSeq: 1 INVITE",
)
COMPACT = (
    b"OPTIONS sip:carol@example.com SIP/2.0\r\n"
    b"v: SIP/2.0/TCP client.example.com;branch=z9hG4bKhjhs8ass877\r\n"
    b"Max-Forwards: 70\r\n"
    b"f: <sip:alice@example.com>;tag=1928301774\r\n"
    b"t: <sip:carol@example.com>\r\n"
    b"i: a84b4c76e66710\r\n"
    b"CSeq: 63104 OPTIONS\r\n"
    b"c: text/plain\r\n"
    b"l:   5\r\n"
    b"\r\n"
    b"hello"
)
LF_ONLY = _msg(
    "MESSAGE sip:bob@example.com SIP/2.0",
    "Via: SIP/2.0/TCP client.example.com;branch=z9hG4bKlf1",
    "Max-Forwards: 70",
    "From: <sip:alice@example.com>;tag=lf",
    "To: <sip:bob@example.com>",
    "Call-ID: lf-only@client.example.com",
    "CSeq: 2 MESSAGE",
    body=b"line one\nline two\n",
    sep="\n",
)
# The body holds an empty line: only Content-Length says where the message ends.
CRLFCRLF_BODY = _msg(
    "MESSAGE sip:bob@example.com SIP/2.0",
    "Via: SIP/2.0/TCP client.example.com;branch=z9hG4bKbody2",
    "Max-Forwards: 70",
    "From: <sip:alice@example.com>;tag=b2",
    "To: <sip:bob@example.com>",
    "Call-ID: crlfcrlf@client.example.com",
    "CSeq: 3 MESSAGE",
    "Content-Type: message/sip",
    body=b"OPTIONS sip:x@example.com SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\nINVITE not a message",
)
# What "a partial next message" looks like: a valid prefix that needs more bytes.
PARTIAL = b"OPTIONS sip:carol@example.com SIP/2.0\r\nVia: SIP/2.0/TCP client.exa"

CASES: dict[str, tuple[bytes, list[Event]]] = {
    "one_message": (INVITE, [INVITE]),
    "two_back_to_back_with_bodies": (INVITE + MESSAGE, [INVITE, MESSAGE]),
    "request_then_response": (INVITE + OK, [INVITE, OK]),
    "ping_before_first_message": (b"\r\n\r\n" + INVITE, [PING, INVITE]),
    "ping_between_messages": (INVITE + b"\r\n\r\n" + MESSAGE, [INVITE, PING, MESSAGE]),
    "pong_between_messages": (INVITE + b"\r\n" + MESSAGE, [INVITE, PONG, MESSAGE]),
    "ping_then_pong": (INVITE + b"\r\n\r\n\r\n" + OK, [INVITE, PING, PONG, OK]),
    "two_pings": (b"\r\n\r\n\r\n\r\n" + MESSAGE, [PING, PING, MESSAGE]),
    "compact_content_length": (COMPACT + COMPACT, [COMPACT, COMPACT]),
    "lf_only_line_ends": (LF_ONLY + LF_ONLY, [LF_ONLY, LF_ONLY]),
    "body_containing_crlfcrlf": (CRLFCRLF_BODY + OK, [CRLFCRLF_BODY, OK]),
    "zero_length_body": (OK + OK + OK, [OK, OK, OK]),
}


def _drain(framer: StreamFramer, chunks: Iterable[bytes]) -> list[Event]:
    """Feed every chunk and collect what next_message returns until it needs data."""
    events: list[Event] = []
    for chunk in chunks:
        framer.feed(chunk)
        while (event := framer.next_message()) is not NEED_DATA:
            events.append(event)
    return events


def _whole(stream: bytes) -> list[bytes]:
    return [stream]


def _bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def _whole_with_tail(stream: bytes) -> list[bytes]:
    return [stream + PARTIAL]


def _bytewise_with_tail(stream: bytes) -> list[bytes]:
    return _bytewise(stream + PARTIAL)


WAYS: dict[str, tuple[Callable[[bytes], list[bytes]], int]] = {
    "whole": (_whole, 0),
    "bytewise": (_bytewise, 0),
    "whole_tail": (_whole_with_tail, len(PARTIAL)),
    "bytewise_tail": (_bytewise_with_tail, len(PARTIAL)),
}


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("case", CASES)
def test_framing_is_the_same_whole_bytewise_and_with_trailing_bytes(case: str, way: str) -> None:
    stream, expected = CASES[case]
    split, leftover = WAYS[way]
    framer = StreamFramer()
    assert _drain(framer, split(stream)) == expected
    assert framer.buffered == leftover


@pytest.mark.parametrize("case", CASES)
def test_framed_messages_parse_with_their_whole_body(case: str) -> None:
    stream, _ = CASES[case]
    for event in _drain(StreamFramer(), [stream]):
        if isinstance(event, bytes):
            msg = parse_message(event)
            assert msg.raw == event
            assert msg.content_length == len(msg.body)
            assert msg.violations == ()


def test_byte_at_a_time_equals_whole() -> None:
    stream = b"".join(CASES[name][0] for name in CASES)
    assert _drain(StreamFramer(), _bytewise(stream)) == _drain(StreamFramer(), [stream])


def test_empty_framer_needs_data() -> None:
    framer = StreamFramer()
    assert framer.next_message() is NEED_DATA
    assert framer.buffered == 0


@pytest.mark.parametrize(
    ("stream", "expected"),
    [(b"\r", []), (b"\r\n", []), (b"\r\n\r", []), (b"\r\n\r\n\r\n", [PING])],
)
def test_keepalive_prefix_waits_for_more_bytes(stream: bytes, expected: list[Event]) -> None:
    """A trailing CRLF may still grow into a CRLFCRLF ping, so it is not a pong yet."""
    framer = StreamFramer()
    assert _drain(framer, [stream]) == expected
    assert framer.buffered == len(stream) - 4 * len(expected)


def test_message_is_returned_only_when_body_is_complete() -> None:
    framer = StreamFramer()
    framer.feed(MESSAGE[:-1])
    assert framer.next_message() is NEED_DATA
    assert framer.next_message() is NEED_DATA  # asking again changes nothing
    framer.feed(MESSAGE[-1:])
    assert framer.next_message() == MESSAGE
    assert framer.buffered == 0


# --- invalid is not incomplete --------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [b"\x00", b" ", b"\t", b"<", b"{", b"\x16", b"\xff", b"/", b":"],
    ids=["nul", "space", "tab", "lt", "brace", "tls_handshake", "0xff", "slash", "colon"],
)
def test_first_byte_that_cannot_start_a_message_raises_at_once(first: bytes) -> None:
    framer = StreamFramer()
    framer.feed(first)
    with pytest.raises(SipParseError) as err:
        framer.next_message()
    assert err.value.code == "framing_error"


def test_bad_byte_after_a_message_reports_its_stream_offset() -> None:
    framer = StreamFramer()
    framer.feed(OK + b"\x16\x03\x01")
    assert framer.next_message() == OK
    with pytest.raises(SipParseError) as err:
        framer.next_message()
    assert err.value.offset == len(OK)


def test_start_line_that_is_not_sip_raises_once_the_line_is_complete() -> None:
    framer = StreamFramer()
    framer.feed(b"GET / HTTP/1.1")
    assert framer.next_message() is NEED_DATA  # could still be "GET / SIP/2.0"
    framer.feed(b"\r\n")
    with pytest.raises(SipParseError) as err:
        framer.next_message()
    assert err.value.code == "invalid_start_line"


def test_missing_content_length_raises_on_a_stream() -> None:
    framer = StreamFramer()
    framer.feed(b"OPTIONS sip:a@example.com SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n")
    with pytest.raises(SipParseError) as err:
        framer.next_message()
    assert err.value.code == "framing_error"


@pytest.mark.parametrize(
    "value", [b"-1", b"-999", b"abc", b"0x10", b"+5", b"5 5", b"1.0", b"", b"\xd9\xa3"]
)
def test_malformed_content_length_raises(value: bytes) -> None:
    framer = StreamFramer()
    framer.feed(b"OPTIONS sip:a@example.com SIP/2.0\r\nContent-Length: " + value + b"\r\n\r\n")
    with pytest.raises(SipParseError) as err:
        framer.next_message()
    assert err.value.code == "invalid_content_length"


@pytest.mark.parametrize(
    "headers",
    [
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Content-Length: 5\r\nl: 0\r\n",
        b"l: 1\r\nCONTENT-LENGTH: 2\r\n",
    ],
)
def test_conflicting_content_lengths_raise(headers: bytes) -> None:
    framer = StreamFramer()
    framer.feed(b"MESSAGE sip:a@example.com SIP/2.0\r\n" + headers + b"\r\nhello")
    with pytest.raises(SipParseError) as err:
        framer.next_message()
    assert err.value.code == "framing_error"


def test_header_block_over_limit_raises_as_soon_as_the_limit_is_passed() -> None:
    limits = ParseLimits(max_header_bytes=1024)
    stream = b"OPTIONS sip:a@example.com SIP/2.0\r\n" + b"X-Pad: aaaaaaaaaaaaaaaa\r\n" * 100
    framer = StreamFramer(limits)
    for fed in range(1, len(stream) + 1):
        framer.feed(stream[fed - 1 : fed])
        try:
            assert framer.next_message() is NEED_DATA
        except SipParseError as err:
            assert err.code == "headers_too_large"
            assert err.status_hint == 513
            break
    else:
        pytest.fail("the framer kept asking for data past max_header_bytes")
    assert fed == limits.max_header_bytes + 1


def test_complete_header_block_over_limit_raises() -> None:
    limits = ParseLimits(max_header_bytes=256)
    framer = StreamFramer(limits)
    framer.feed(_msg("OPTIONS sip:a@example.com SIP/2.0", "X-Pad: " + "a" * 300))
    with pytest.raises(SipParseError) as err:
        framer.next_message()
    assert err.value.code == "headers_too_large"


def test_content_length_over_max_body_raises_before_the_body_arrives() -> None:
    limits = ParseLimits(max_body_bytes=1000)
    framer = StreamFramer(limits)
    framer.feed(b"MESSAGE sip:a@example.com SIP/2.0\r\nContent-Length: 1001\r\n\r\n")
    with pytest.raises(SipParseError) as err:
        framer.next_message()
    assert err.value.code == "body_too_large"
    assert err.value.status_hint == 413


def test_huge_content_length_raises_at_once() -> None:
    framer = StreamFramer()
    framer.feed(b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 99999999999999999999\r\n\r\n")
    with pytest.raises(SipParseError):
        framer.next_message()


def test_header_plus_body_over_max_message_bytes_raises_at_once() -> None:
    limits = ParseLimits(max_message_bytes=4096, max_header_bytes=4096, max_body_bytes=4096)
    framer = StreamFramer(limits)
    framer.feed(
        b"MESSAGE sip:a@example.com SIP/2.0\r\nX-Pad: " + b"a" * 2000 + b"\r\n"
        b"Content-Length: 4000\r\n\r\n"
    )
    with pytest.raises(SipParseError) as err:
        framer.next_message()
    assert err.value.code == "message_too_large"


def test_stray_cr_after_pong_raises_instead_of_waiting_forever() -> None:
    framer = StreamFramer()
    framer.feed(b"\r\n\r" + OK)
    with pytest.raises(SipParseError):
        for _ in range(3):
            framer.next_message()


def test_lf_header_lines_ended_by_crlf_empty_line_are_framed_like_the_parser_does() -> None:
    message = b"OPTIONS sip:a@example.com SIP/2.0\nCSeq: 1 OPTIONS\nContent-Length: 0\n\r\n"
    assert parse_message(message).raw == message
    framer = StreamFramer()
    framer.feed(message + OK)
    assert framer.next_message() == message


# --- DoS guard --------------------------------------------------------------------------------


def test_256k_header_block_fed_byte_at_a_time_is_linear() -> None:
    """A framer that rescans its buffer on every feed would take minutes here."""
    limits = ParseLimits(max_header_bytes=512 * 1024, max_message_bytes=1024 * 1024)
    pad = b"".join(b"X-Pad-%06d: %s\r\n" % (i, b"a" * 40) for i in range(256 * 1024 // 56))
    message = b"OPTIONS sip:a@example.com SIP/2.0\r\n" + pad + b"Content-Length: 0\r\n\r\n"
    assert len(message) > 256 * 1024
    framer = StreamFramer(limits)
    out: list[Event] = []
    began = time.perf_counter()
    for i in range(len(message)):
        framer.feed(message[i : i + 1])
        event = framer.next_message()
        if event is not NEED_DATA:
            out.append(event)
    elapsed = time.perf_counter() - began
    assert out == [message]
    assert elapsed < 5.0


# --- property: any chunking of any sequence of messages -----------------------------------------


def _pool() -> list[bytes]:
    pool = [INVITE, MESSAGE, OK, COMPACT, LF_ONLY, CRLFCRLF_BODY]
    for name in ("wsinv.dat", "esc01.dat", "mpart01.dat", "intmeth.dat", "unreason.dat"):
        path = TORTURE / name
        if path.is_file():
            pool.append(path.read_bytes())
    return pool


POOL = _pool()
GAPS = {"none": b"", "ping": b"\r\n\r\n", "pong": b"\r\n"}


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[bytes], list[Event]]:
    """Messages with at most one keep-alive before each, and cut points into the stream."""
    messages = draw(st.lists(st.sampled_from(POOL), min_size=1, max_size=5))
    stream = b""
    expected: list[Event] = []
    for message in messages:
        gap = draw(st.sampled_from(sorted(GAPS)))
        stream += GAPS[gap] + message
        if gap != "none":
            expected.append(PING if gap == "ping" else PONG)
        expected.append(message)
    cuts = sorted(draw(st.sets(st.integers(0, len(stream)), max_size=40)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    return chunks, expected


@settings(max_examples=200, deadline=None)
@given(streams())
def test_any_chunking_yields_the_messages_in_order(case: tuple[list[bytes], list[Event]]) -> None:
    chunks, expected = case
    framer = StreamFramer()
    assert _drain(framer, chunks) == expected
    assert framer.buffered == 0


def test_undrained_buffer_is_bounded() -> None:
    """A caller that feeds without draining cannot be made to buffer without bound."""
    limits = ParseLimits(max_message_bytes=1000)
    framer = StreamFramer(limits)
    chunk = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(SipParseError) as info:
        for _ in range(1000):
            framer.feed(chunk)
    assert info.value.code == "framing_error"
    assert framer.buffered <= 4 * limits.max_message_bytes
