"""to_bytes and the proxy edits: untouched messages are byte-exact, an edit splices only its field.

Each edit test states the exact expected output as the input with one splice, so a change that
"normalises" anything else (spacing, casing, order, folding) fails.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sipwarden.sip import (
    Request,
    Response,
    SipParseError,
    decrement_max_forwards,
    parse_message,
    pop_via,
    push_via,
    remove_header,
    replace_header,
    to_bytes,
)
from sipwarden.sip.serialize import apply_edits, pop_value_edit, push_field_edit

TORTURE = Path("/work/shared/corpus/torture")


def _torture_params() -> list[object]:
    """Every torture file that parses (the others have nothing to serialise)."""
    if not TORTURE.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{TORTURE} is absent"))]
    params: list[object] = []
    for path in sorted(TORTURE.glob("rfc*/*.dat")):
        try:
            parse_message(path.read_bytes())
        except SipParseError:
            continue
        params.append(pytest.param(path, id=f"{path.parent.name}/{path.name}"))
    return params


@pytest.mark.parametrize("path", _torture_params())
def test_untouched_torture_message_serialises_byte_exact(path: Path) -> None:
    """Exactly the input, minus what the parser documents it drops (bytes after the body)."""
    data = path.read_bytes()
    msg = parse_message(data)
    extra = [d.offset for d in msg.defects if d.code == "extra_bytes_after_body"]
    expected = data[: extra[0]] if extra else data
    assert to_bytes(msg) == expected
    assert parse_message(to_bytes(msg)) == msg


def test_extra_datagram_bytes_are_not_serialised() -> None:
    msg = parse_message(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 2") + b"hiJUNK")
    assert msg.body == b"hi"
    assert to_bytes(msg).endswith(b"\r\n\r\nhi")


def test_leading_empty_lines_are_not_serialised() -> None:
    msg = parse_message(b"\r\n\r\n" + OPTIONS)
    assert to_bytes(msg) == OPTIONS


# --- edits ------------------------------------------------------------------------------------

OPTIONS = (
    b"OPTIONS sip:carol@chicago.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKhjhs8ass877\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:carol@chicago.example.com>\r\n"
    b"From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710\r\n"
    b"CSeq: 63104 OPTIONS\r\n"
    b"Accept: application/sdp\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

# Odd but legal: compact names, mixed casing, extra whitespace, folding, two hops on one line,
# a UTF-8 display name before the fields being edited, and a body.
ODD = (
    "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    "v:  SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , SIP/2.0/TCP b.example.com:5061"
    ";branch=z9hG4bK2\r\n"
    "VIA:SIP/2.0/UDP c.example.com;branch=z9hG4bK3\r\n"
    'f:   "Jöns Jacob" <sip:jons@atlanta.example.com>;tag=88sja8x\r\n'
    "MAX-forwards:  70\r\n"
    "t  : <sip:bob@biloxi.example.com>\r\n"
    "i: 987asjd97y7atg\r\n"
    "cseq:    986759 INVITE\r\n"
    "Subject: lunch\r\n"
    "\t at noon\r\n"
    "c: text/plain\r\n"
    "l: 4\r\n"
    "\r\n"
    "body"
).encode()

LF_ONLY = OPTIONS.replace(b"\r\n", b"\n")


def _assert_reparses(msg: Request | Response) -> None:
    assert parse_message(to_bytes(msg)) == msg
    assert msg.violations == ()


def test_decrement_max_forwards_splices_only_the_value() -> None:
    out = decrement_max_forwards(parse_message(OPTIONS))
    assert to_bytes(out) == OPTIONS.replace(b"Max-Forwards: 70", b"Max-Forwards: 69", 1)
    assert out.max_forwards == 69
    _assert_reparses(out)


def test_decrement_max_forwards_keeps_everything_else_of_an_odd_message() -> None:
    """The field is rewritten as ``name: value`` (its name as written); nothing else moves."""
    out = decrement_max_forwards(parse_message(ODD))
    assert to_bytes(out) == ODD.replace(b"MAX-forwards:  70", b"MAX-forwards: 69", 1)
    assert out.body == b"body"
    assert out.from_ is not None
    assert out.from_.display_name == "Jöns Jacob"
    _assert_reparses(out)


def test_decrement_max_forwards_from_one_reaches_zero() -> None:
    data = OPTIONS.replace(b"Max-Forwards: 70", b"Max-Forwards: 1")
    out = decrement_max_forwards(parse_message(data))
    assert to_bytes(out) == OPTIONS.replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    assert out.max_forwards == 0


@pytest.mark.parametrize("value", [b"0", b"00"])
def test_decrement_max_forwards_at_zero_is_value_error(value: bytes) -> None:
    msg = parse_message(OPTIONS.replace(b"Max-Forwards: 70", b"Max-Forwards: " + value))
    with pytest.raises(ValueError, match="Max-Forwards"):
        decrement_max_forwards(msg)


def test_decrement_max_forwards_when_absent_appends_70() -> None:
    """RFC 3261 §16.6 step 3: a proxy adds Max-Forwards (70) at the end of the header block."""
    data = OPTIONS.replace(b"Max-Forwards: 70\r\n", b"")
    out = decrement_max_forwards(parse_message(data))
    assert to_bytes(out) == data.replace(
        b"Content-Length: 0\r\n\r\n", b"Content-Length: 0\r\nMax-Forwards: 70\r\n\r\n"
    )
    assert out.max_forwards == 70
    _assert_reparses(out)


def test_decrement_max_forwards_when_absent_uses_the_message_line_ends() -> None:
    data = LF_ONLY.replace(b"Max-Forwards: 70\n", b"")
    out = decrement_max_forwards(parse_message(data))
    assert to_bytes(out) == data.replace(b"\n\n", b"\nMax-Forwards: 70\n\n")


def test_decrement_max_forwards_with_lf_line_ends() -> None:
    out = decrement_max_forwards(parse_message(LF_ONLY))
    assert to_bytes(out) == LF_ONLY.replace(b"Max-Forwards: 70", b"Max-Forwards: 69")


def test_decrement_malformed_max_forwards_raises_parse_error() -> None:
    msg = parse_message(OPTIONS.replace(b"Max-Forwards: 70", b"Max-Forwards: seventy"))
    with pytest.raises(SipParseError) as err:
        decrement_max_forwards(msg)
    assert err.value.code == "invalid_header_value"


def test_edit_offsets_are_bytes_after_leading_crlf() -> None:
    out = decrement_max_forwards(parse_message(b"\r\n" + OPTIONS))
    assert to_bytes(out) == OPTIONS.replace(b"Max-Forwards: 70", b"Max-Forwards: 69")


def test_push_via_goes_above_the_top_via() -> None:
    hop = "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKnew1"
    out = push_via(parse_message(OPTIONS), hop)
    assert to_bytes(out) == OPTIONS.replace(b"Via: ", b"Via: " + hop.encode() + b"\r\nVia: ", 1)
    assert [v.branch for v in out.via] == ["z9hG4bKnew1", "z9hG4bKhjhs8ass877"]
    _assert_reparses(out)


def test_push_via_above_a_compact_via_line() -> None:
    hop = "SIP/2.0/TLS proxy.example.com:5061;branch=z9hG4bKnew2"
    out = push_via(parse_message(ODD), hop)
    assert to_bytes(out) == ODD.replace(b"v:  ", b"Via: " + hop.encode() + b"\r\nv:  ", 1)
    assert [v.branch for v in out.via] == ["z9hG4bKnew2", "z9hG4bK1", "z9hG4bK2", "z9hG4bK3"]
    assert out.via[0].transport == "TLS"
    assert out.via[0].port == 5061


def test_push_via_without_via_goes_first() -> None:
    data = OPTIONS.replace(
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKhjhs8ass877\r\n", b""
    )
    out = push_via(parse_message(data), "SIP/2.0/UDP p.example.com;branch=z9hG4bKx1")
    assert to_bytes(out) == data.replace(
        b"SIP/2.0\r\n", b"SIP/2.0\r\nVia: SIP/2.0/UDP p.example.com;branch=z9hG4bKx1\r\n", 1
    )


def test_pop_via_removes_a_single_hop_line() -> None:
    out = pop_via(parse_message(OPTIONS))
    assert to_bytes(out) == OPTIONS.replace(
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKhjhs8ass877\r\n", b""
    )
    assert out.via == ()


def test_pop_via_removes_only_the_first_hop_of_a_two_hop_line() -> None:
    msg = parse_message(ODD)
    out = pop_via(msg)
    assert to_bytes(out) == ODD.replace(
        b"v:  SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , SIP/2.0/TCP",
        b"v: SIP/2.0/TCP",
        1,
    )
    assert [v.branch for v in out.via] == ["z9hG4bK2", "z9hG4bK3"]
    assert out.via[0].sent_by == "b.example.com:5061"
    assert out.via == msg.via[1:]


def test_pop_via_twice_then_thrice_walks_down_the_hops() -> None:
    once = pop_via(parse_message(ODD))
    twice = pop_via(once)
    assert to_bytes(twice) == ODD.replace(
        b"v:  SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , SIP/2.0/TCP b.example.com:5061"
        b";branch=z9hG4bK2\r\n",
        b"",
    )
    thrice = pop_via(twice)
    assert thrice.via == ()
    with pytest.raises(ValueError, match="no Via"):
        pop_via(thrice)


def test_pop_via_of_a_folded_two_hop_line() -> None:
    data = OPTIONS.replace(
        b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKhjhs8ass877\r\n",
        b"Via: SIP/2.0/UDP a.example.com;branch=z9hG4bKf1,\r\n"
        b"     SIP/2.0/UDP b.example.com;branch=z9hG4bKf2\r\n",
    )
    msg = parse_message(data)
    assert [v.branch for v in msg.via] == ["z9hG4bKf1", "z9hG4bKf2"]
    out = pop_via(msg)
    assert to_bytes(out) == data.replace(
        b"Via: SIP/2.0/UDP a.example.com;branch=z9hG4bKf1,\r\n     SIP",
        b"Via: SIP",
    )
    assert [v.branch for v in out.via] == ["z9hG4bKf2"]
    assert "folded_header" not in {d.code for d in out.defects}


def test_pop_via_keeps_a_comma_inside_a_quoted_parameter() -> None:
    data = OPTIONS.replace(
        b";branch=z9hG4bKhjhs8ass877",
        b';branch=z9hG4bKq1;x="a,b", SIP/2.0/UDP b.example.com;branch=z9hG4bKq2',
    )
    out = pop_via(parse_message(data))
    assert [v.branch for v in out.via] == ["z9hG4bKq2"]


def test_replace_header_rewrites_the_first_and_removes_the_rest() -> None:
    data = OPTIONS.replace(
        b"Accept: application/sdp\r\n",
        b"Accept: application/sdp\r\nX-Trace: one\r\nx-trace : two\r\nX-TRACE: three\r\n",
    )
    out = replace_header(parse_message(data), "X-Trace", "new")
    assert to_bytes(out) == OPTIONS.replace(
        b"Accept: application/sdp\r\n", b"Accept: application/sdp\r\nX-Trace: new\r\n"
    )
    assert out.headers.get_all("x-trace") == ["new"]


def test_replace_header_by_compact_name_keeps_the_written_name() -> None:
    out = replace_header(parse_message(ODD), "Call-ID", "new-call-id")
    assert to_bytes(out) == ODD.replace(b"i: 987asjd97y7atg", b"i: new-call-id")
    assert out.call_id == "new-call-id"


def test_replace_header_of_a_folded_field_replaces_the_continuation_too() -> None:
    out = replace_header(parse_message(ODD), "s", "dinner")
    assert to_bytes(out) == ODD.replace(b"Subject: lunch\r\n\t at noon", b"Subject: dinner")
    assert out.headers.get("Subject") == "dinner"


def test_replace_header_when_absent_appends_with_a_conventional_name() -> None:
    out = replace_header(parse_message(OPTIONS), "user-agent", "sipwarden/1")
    assert to_bytes(out) == OPTIONS.replace(
        b"Content-Length: 0\r\n\r\n", b"Content-Length: 0\r\nUser-Agent: sipwarden/1\r\n\r\n"
    )
    assert out.user_agent is not None
    assert out.user_agent[0].name == "sipwarden"


def test_replace_header_keeps_the_body() -> None:
    out = replace_header(parse_message(ODD), "Content-Type", "text/html")
    assert to_bytes(out) == ODD.replace(b"c: text/plain", b"c: text/html")
    assert out.body == b"body"
    assert out.content_type is not None
    assert out.content_type.mime == "text/html"


def test_remove_header_removes_every_field_in_any_spelling() -> None:
    out = remove_header(parse_message(ODD), "via")
    assert to_bytes(out) == ODD.replace(
        b"v:  SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , SIP/2.0/TCP b.example.com:5061"
        b";branch=z9hG4bK2\r\nVIA:SIP/2.0/UDP c.example.com;branch=z9hG4bK3\r\n",
        b"",
    )
    assert out.via == ()
    assert "v" not in out.headers


def test_remove_header_of_a_folded_field() -> None:
    out = remove_header(parse_message(ODD), "SUBJECT")
    assert to_bytes(out) == ODD.replace(b"Subject: lunch\r\n\t at noon\r\n", b"")


def test_remove_absent_header_returns_the_message_unchanged() -> None:
    msg = parse_message(OPTIONS)
    assert remove_header(msg, "X-Nope") is msg


def test_edits_on_a_response() -> None:
    data = (
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1, "
        b"SIP/2.0/UDP pc33.example.com;branch=z9hG4bKu1;received=192.0.2.1\r\n"
        b"To: <sip:bob@example.com>;tag=a6c85cf\r\n"
        b"From: <sip:alice@example.com>;tag=1928301774\r\n"
        b"Call-ID: a84b4c76e66710\r\n"
        b"CSeq: 314159 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    out = pop_via(parse_message(data))
    assert isinstance(out, Response)
    assert out.status == 180
    assert to_bytes(out) == data.replace(
        b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1, SIP", b"Via: SIP"
    )
    assert out.via[0].received == "192.0.2.1"


def test_chained_edits_of_a_proxy() -> None:
    """What a stateless proxy does to a request: push its Via, decrement Max-Forwards."""
    hop = "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKprx"
    out = decrement_max_forwards(push_via(parse_message(OPTIONS), hop))
    expected = OPTIONS.replace(b"Max-Forwards: 70", b"Max-Forwards: 69").replace(
        b"Via: ", b"Via: " + hop.encode() + b"\r\nVia: ", 1
    )
    assert to_bytes(out) == expected
    back = pop_via(parse_message(to_bytes(out)))
    assert [v.branch for v in back.via] == ["z9hG4bKhjhs8ass877"]


@pytest.mark.parametrize(
    "value", ["x\r\nVia: SIP/2.0/UDP e;branch=z9hG4bKe", "x\nRoute: <sip:e>", "x\x00y"]
)
def test_edit_value_with_line_break_or_nul_is_refused(value: str) -> None:
    """A CR or LF in a value would smuggle in a header field of its own."""
    msg = parse_message(OPTIONS)
    edits: list[Callable[[], object]] = [
        lambda: replace_header(msg, "Subject", value),
        lambda: replace_header(msg, "Accept", value),
        lambda: push_via(msg, value),
    ]
    for edit in edits:
        with pytest.raises(ValueError):
            edit()


# --- known bugs -------------------------------------------------------------------------------

# Some header lines end in LF, some in CRLF: the parser accepts it (bare-LF mode strips the CR).
MIXED = (
    b"OPTIONS sip:carol@chicago.example.com SIP/2.0\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bKmix\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:carol@chicago.example.com>\n"
    b"From: <sip:alice@atlanta.example.com>;tag=1\n"
    b"Call-ID: mixed\n"
    b"CSeq: 1 OPTIONS\n"
    b"Content-Length: 0\r\n"
    b"\n"
)


def test_remove_header_with_mixed_line_ends_keeps_later_headers() -> None:
    out = remove_header(parse_message(MIXED), "Max-Forwards")
    assert to_bytes(out) == MIXED.replace(b"Max-Forwards: 70\r\n", b"")
    assert out.call_id == "mixed"


def test_append_header_with_mixed_line_ends() -> None:
    data = MIXED.replace(b"Max-Forwards: 70\r\n", b"")
    out = decrement_max_forwards(parse_message(data))
    assert out.max_forwards == 70
    assert out.content_length == 0


def test_append_header_after_a_utf8_start_line_without_headers() -> None:
    data = "SIP/2.0 200 Größe OK\r\n\r\n".encode()
    out = replace_header(parse_message(data), "X-A", "1")
    assert to_bytes(out) == data.replace(b"\r\n\r\n", b"\r\nX-A: 1\r\n\r\n")


def test_push_field_goes_above_the_first_of_its_name_or_at_the_end() -> None:
    msg = parse_message(
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"Record-Route: <sip:p1;lr>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    out = apply_edits(msg, [push_field_edit(msg, "record-route", "<sip:p0;lr>")])
    assert out.headers.get_all("record-route") == ["<sip:p0;lr>", "<sip:p1;lr>"]
    path = apply_edits(msg, [push_field_edit(msg, "Path", "<sip:gw;lr>")])
    assert path.headers.get("path") == "<sip:gw;lr>"
    assert path.raw.endswith(b"Path: <sip:gw;lr>\r\n\r\n")


def test_pop_value_edit_removes_the_top_route_only() -> None:
    msg = parse_message(
        b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n"
        b"Route: <sip:p0;lr>, <sip:p1;lr>\r\nRoute: <sip:p2;lr>\r\nCall-ID: x\r\n"
        b"CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    once = apply_edits(msg, [pop_value_edit(msg, "route")])
    assert once.headers.get_all("route") == ["<sip:p1;lr>", "<sip:p2;lr>"]
    twice = apply_edits(once, [pop_value_edit(once, "route")])
    assert twice.headers.get_all("route") == ["<sip:p2;lr>"]
    with pytest.raises(ValueError, match="no Path"):
        pop_value_edit(msg, "path")
