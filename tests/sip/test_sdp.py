"""SDP reader: the RFC 8866 shapes a detector reads (o=, c= with multicast suffixes, m=,
attributes), tolerance of real-world line ends, bounds, and the contract that nothing but
SdpParseError escapes - for arbitrary bytes and for mutated real descriptions."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.errors import SipwardenError
from sipwarden.sip import parse_message
from sipwarden.sip.sdp import (
    Connection,
    Media,
    Origin,
    SdpParseError,
    message_sdp,
    parse_sdp,
)

# RFC 8866 §5's example, verbatim.
RFC_EXAMPLE = (
    b"v=0\r\n"
    b"o=jdoe 3724394400 3724394405 IN IP4 198.51.100.1\r\n"
    b"s=Call to John Smith\r\n"
    b"i=SDP Offer #1\r\n"
    b"u=http://www.jdoe.example.com/home.html\r\n"
    b"e=Jane Doe <jane@jdoe.example.com>\r\n"
    b"p=+1 617 555-6011\r\n"
    b"c=IN IP4 198.51.100.1\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0\r\n"
    b"m=audio 49180 RTP/AVP 0\r\n"
    b"m=video 51372 RTP/AVP 99\r\n"
    b"c=IN IP6 2001:db8::2\r\n"
    b"a=rtpmap:99 h263-1998/90000\r\n"
)

OFFER = (
    b"v=0\r\no=- 20518 0 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n"
    b"a=sendrecv\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=ptime:20\r\n"
)


def test_rfc_8866_example() -> None:
    sdp = parse_sdp(RFC_EXAMPLE)
    assert sdp.version == 0
    assert sdp.origin == Origin("jdoe", "3724394400", "3724394405", "IN", "IP4", "198.51.100.1")
    assert sdp.session_name == "Call to John Smith"
    assert sdp.connection == Connection("IN", "IP4", "198.51.100.1")
    assert [m.media for m in sdp.media] == ["audio", "audio", "video"]
    video = sdp.media[2]
    assert (video.port, video.proto, video.formats) == (51372, "RTP/AVP", ("99",))
    assert video.connections == (Connection("IN", "IP6", "2001:db8::2"),)
    assert video.attribute("rtpmap") == "99 h263-1998/90000"
    assert sdp.addresses() == (
        ("o", "198.51.100.1"),
        ("c", "198.51.100.1"),
        ("m2.c", "2001:db8::2"),
    )


def test_session_and_media_attributes_are_kept_apart() -> None:
    sdp = parse_sdp(OFFER)
    assert sdp.attributes == (("sendrecv", None),)
    assert sdp.attribute("sendrecv") == "" and sdp.attribute("recvonly") is None
    (audio,) = sdp.media
    assert audio == Media(
        "audio",
        4000,
        None,
        "RTP/AVP",
        ("0", "8", "101"),
        (),
        (("rtpmap", "101 telephone-event/8000"), ("ptime", "20")),
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("c=IN IP4 233.252.0.1/127", Connection("IN", "IP4", "233.252.0.1", 127, None)),
        ("c=IN IP4 233.252.0.1/127/3", Connection("IN", "IP4", "233.252.0.1", 127, 3)),
        ("c=IN IP6 ff1e:db8::101/3", Connection("IN", "IP6", "ff1e:db8::101", None, 3)),
        ("c=IN IP4 pbx.example.com", Connection("IN", "IP4", "pbx.example.com")),
        ("c=IN IP6 [2001:db8::1]", Connection("IN", "IP6", "[2001:db8::1]")),
        ("c=ATM NSAP 47.0091.8100.0000", Connection("ATM", "NSAP", "47.0091.8100.0000")),
    ],
)
def test_connection_address_forms(line: str, expected: Connection) -> None:
    """RFC 8866 §5.7: IP4 multicast carries /ttl[/count], IP6 multicast /count."""
    sdp = parse_sdp(f"v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\n{line}\n".encode())
    assert sdp.connection == expected


def test_media_port_count() -> None:
    sdp = parse_sdp(b"v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nm=video 49170/2 RTP/AVP 31\n")
    assert (sdp.media[0].port, sdp.media[0].port_count) == (49170, 2)


def test_tolerates_lf_spaces_empty_lines_and_unknown_types() -> None:
    text = b"v=0\n\no=-  1 1  IN IP4 192.0.2.1\r\ns=\nz=0 0\nx=private\nm=audio 9 RTP/AVP 0\n"
    sdp = parse_sdp(text)
    assert sdp.origin.address == "192.0.2.1" and sdp.session_name == ""
    assert sdp.media[0].port == 9


def test_missing_session_name_is_tolerated() -> None:
    assert parse_sdp(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n").session_name == ""


@pytest.mark.parametrize(
    ("data", "line", "fragment"),
    [
        (b"", 0, "no v= line"),
        (b"o=- 1 1 IN IP4 192.0.2.1\r\n", 1, "first line must be v="),
        (b"v=1\r\n", 1, "unsupported SDP version"),
        (b"v=0\r\ns=x\r\n", 0, "no o= line"),
        (b"v=0\r\no=- 1 IN IP4 192.0.2.1\r\n", 2, "o= needs 6 fields"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4\r\n", 3, "c= needs 3 fields"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 224.2.1.1/x\r\n", 3, "TTL"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 224.2.1.1/1/2/3\r\n", 3, "/ttl/count"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 1.2.3.4/256\r\n", 3, "TTL"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP6 ff1e::1/1/2\r\n", 3, "/count"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN X a/1\r\n", 3, "/ suffix"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nm=audio x RTP/AVP 0\r\n", 3, "port"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 70000 RTP/AVP 0\r\n", 3, "port"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nm=audio 4000 RTP/AVP\r\n", 3, "m= needs"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nhello\r\n", 3, "not <type>=<value>"),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nv=0\r\n", 3, "second v="),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\no=- 1 1 IN IP4 a\r\n", 3, "second o="),
        (b"v=0\r\no=- 1 1 IN IP4 a\r\nc=IN IP4 a\r\nc=IN IP4 b\r\n", 4, "second session"),
    ],
)
def test_errors_name_the_line(data: bytes, line: int, fragment: str) -> None:
    with pytest.raises(SdpParseError, match=fragment) as info:
        parse_sdp(data)
    assert info.value.line == line
    assert isinstance(info.value, ValueError) and isinstance(info.value, SipwardenError)
    assert (f"line {line}:" in str(info.value)) == (line > 0)


def test_bounds_on_bytes_and_lines() -> None:
    with pytest.raises(SdpParseError, match="exceed the 100-byte limit"):
        parse_sdp(OFFER + b"a=x\r\n" * 30, max_bytes=100)
    many = b"v=0\r\no=- 1 1 IN IP4 a\r\n" + b"a=x\r\n" * 8
    assert len(parse_sdp(many, max_lines=10).attributes) == 8
    with pytest.raises(SdpParseError, match="more than 9 lines"):
        parse_sdp(many, max_lines=9)


def _invite(body: bytes, content_type: str = "application/sdp") -> bytes:
    return (
        "INVITE sip:100@198.51.100.5 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
        "From: <sip:200@192.0.2.10>;tag=1\r\nTo: <sip:100@198.51.100.5>\r\nCall-ID: c1\r\n"
        f"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def test_message_sdp_reads_and_caches_the_body() -> None:
    message = parse_message(_invite(OFFER, "Application/SDP ; x=1"))
    sdp = message_sdp(message)
    assert sdp is not None and sdp.origin.address == "10.0.0.5"
    assert message_sdp(message) is sdp


def test_message_sdp_none_without_an_sdp_body() -> None:
    assert message_sdp(parse_message(_invite(b""))) is None
    assert message_sdp(parse_message(_invite(OFFER, "multipart/mixed;boundary=x"))) is None
    assert message_sdp(parse_message(_invite(b"<xml/>", "application/pidf+xml"))) is None


def test_message_sdp_bad_body_raises_every_time() -> None:
    message = parse_message(_invite(b"good\r\n"))
    for _ in range(2):
        with pytest.raises(SdpParseError, match="line 1"):
            message_sdp(message)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=600), st.binary(max_size=600).map(b"v=0\r\n".__add__)))
def test_arbitrary_bytes_parse_or_raise_sdp_parse_error(data: bytes) -> None:
    with contextlib.suppress(SdpParseError):
        parse_sdp(data)


_LINES = OFFER.split(b"\r\n") + RFC_EXAMPLE.split(b"\r\n")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(_LINES), max_size=20),
    st.integers(0, 400),
    st.binary(min_size=0, max_size=4),
)
def test_mutated_descriptions_parse_or_raise_sdp_parse_error(
    lines: list[bytes], at: int, junk: bytes
) -> None:
    data = b"v=0\r\n" + b"\r\n".join(lines)
    data = data[:at] + junk + data[at:]
    try:
        sdp = parse_sdp(data)
    except SdpParseError:
        return
    # An accepted description always exposes its origin address among the addresses.
    assert sdp.addresses()[0] == ("o", sdp.origin.address)
