"""The public API of sipwarden.sip is pinned: tools and benchmarks rely on these names."""

from __future__ import annotations

import pytest

from sipwarden import sip
from sipwarden.sip import DEFECT_CODES, ERROR_CODES, SipParseError, parse_message

EXPECTED = [
    "AccessNetworkInfo",
    "CSeq",
    "Challenge",
    "ContentType",
    "Credentials",
    "DEFAULT_LIMITS",
    "DEFECT_CODES",
    "Defect",
    "ERROR_CODES",
    "FramerEvent",
    "Headers",
    "Identity",
    "KNOWN_METHODS",
    "Message",
    "NEED_DATA",
    "NameAddr",
    "ParseLimits",
    "Product",
    "Request",
    "Response",
    "SdpParseError",
    "SessionDescription",
    "SipParseError",
    "StreamFramer",
    "Uri",
    "Via",
    "decrement_max_forwards",
    "message_sdp",
    "parse_message",
    "parse_sdp",
    "parse_uri",
    "pop_via",
    "push_via",
    "remove_header",
    "replace_header",
    "to_bytes",
]


def test_exported_names_are_pinned() -> None:
    assert sorted(sip.__all__) == sorted(EXPECTED)
    for name in EXPECTED:
        assert hasattr(sip, name), name


def test_pinned_accessors() -> None:
    msg = parse_message(
        b"INVITE sip:bob@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc, "
        b"SIP/2.0/TCP p.example.com;branch=z9hG4bKx\r\n"
        b"f: <sip:alice@example.com>;tag=ft\r\nt: <sip:bob@example.com>\r\ni: cid@192.0.2.1\r\n"
        b"CSeq: 7 INVITE\r\nMax-Forwards: 70\r\nUser-Agent: phone/1.0\r\nl: 0\r\n\r\n"
    )
    assert isinstance(msg, sip.Request)
    assert (msg.method, msg.uri) == ("INVITE", "sip:bob@example.com")
    assert msg.headers.get("VIA") == msg.headers.get("v")
    assert len(msg.headers.get_all("via")) == 1
    assert msg.call_id == "cid@192.0.2.1"
    assert (msg.cseq.number, msg.cseq.method) == (7, "INVITE")
    assert msg.from_.tag == "ft" and msg.to.tag is None
    assert [v.branch for v in msg.via] == ["z9hG4bKabc", "z9hG4bKx"]
    assert msg.headers.get("user-agent") == "phone/1.0"
    response = parse_message(b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(response, sip.Response)
    assert (response.status, response.reason) == (486, "Busy Here")


def test_every_code_has_a_sentence() -> None:
    assert all(info.description.endswith(".") for info in DEFECT_CODES.values())
    assert all(text.endswith(".") for text in ERROR_CODES.values())


def test_errors_use_known_codes() -> None:
    for data in (b"", b"\x00\x01", b"INVITE sip:a SIP/2.0\r\nbad line\r\n\r\n"):
        try:
            parse_message(data)
        except SipParseError as exc:
            assert exc.code in ERROR_CODES


def test_sdp_of_a_message() -> None:
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    msg = parse_message(
        b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKa\r\n"
        b"From: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c\r\n"
        b"CSeq: 1 INVITE\r\nContent-Type: application/sdp\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    sdp = sip.message_sdp(msg)
    assert isinstance(sdp, sip.SessionDescription)
    assert sdp.addresses() == (("o", "192.0.2.1"), ("c", "192.0.2.1"))
    assert sip.parse_sdp(body) == sdp
    with pytest.raises(ValueError, match="SDP line 1") as caught:
        sip.parse_sdp(b"x")
    assert isinstance(caught.value, sip.SdpParseError) and caught.value.line == 1
