"""Headers (the ordered multimap), typed header values read through messages, and URIs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sipwarden.sip import (
    Headers,
    Request,
    Response,
    SipParseError,
    Uri,
    parse_message,
    parse_uri,
)

# --- Headers ----------------------------------------------------------------------------------


def _headers() -> Headers:
    return Headers.from_pairs(
        [
            ("v", "SIP/2.0/UDP a.example.com;branch=z9hG4bK1"),
            ("Max-Forwards", "70"),
            ("VIA", "SIP/2.0/UDP b.example.com;branch=z9hG4bK2"),
            ("X-Custom", "one"),
            ("x-custom", "two"),
            ("Via", "SIP/2.0/UDP c.example.com;branch=z9hG4bK3"),
        ]
    )


def test_headers_keep_order_and_names_as_written() -> None:
    assert [name for name, _ in _headers()] == [
        "v",
        "Max-Forwards",
        "VIA",
        "X-Custom",
        "x-custom",
        "Via",
    ]
    assert len(_headers()) == 6


def test_headers_get_is_the_first_value() -> None:
    headers = _headers()
    assert headers.get("Via") == "SIP/2.0/UDP a.example.com;branch=z9hG4bK1"
    assert headers.get("X-CUSTOM") == "one"
    assert headers.get("Nope") is None


def test_headers_get_all_is_every_value_in_order() -> None:
    headers = _headers()
    assert headers.get_all("via") == [
        "SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
        "SIP/2.0/UDP b.example.com;branch=z9hG4bK2",
        "SIP/2.0/UDP c.example.com;branch=z9hG4bK3",
    ]
    assert headers.get_all("max-forwards") == ["70"]
    assert headers.get_all("nope") == []


@pytest.mark.parametrize("name", ["via", "VIA", "Via", "vIa", "v", "V", " Via "])
def test_headers_lookup_ignores_case_and_accepts_compact_forms(name: str) -> None:
    headers = _headers()
    assert name in headers
    assert headers.count(name) == 3
    assert headers.get(name) == headers.get("Via")
    assert headers.get_all(name) == headers.get_all("Via")


def test_headers_count_and_contains() -> None:
    headers = _headers()
    assert headers.count("x-custom") == 2
    assert headers.count("max-forwards") == 1
    assert headers.count("nope") == 0
    assert "nope" not in headers
    assert 42 not in headers


def test_headers_keys_are_distinct_lookup_keys_in_first_order() -> None:
    assert _headers().keys() == ["via", "max-forwards", "x-custom"]


COMPACT = {
    "v": "Via",
    "f": "From",
    "t": "To",
    "m": "Contact",
    "i": "Call-ID",
    "l": "Content-Length",
    "c": "Content-Type",
    "s": "Subject",
    "k": "Supported",
    "e": "Content-Encoding",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "y": "Identity",
}


@pytest.mark.parametrize(("compact", "full"), COMPACT.items())
def test_compact_form_maps_to_its_long_name(compact: str, full: str) -> None:
    headers = Headers.from_pairs([(compact.upper(), "value")])
    assert headers.get(full) == "value"
    assert headers.get(full.upper()) == "value"
    assert headers.get(compact) == "value"
    assert headers.keys() == [full.lower()]
    assert list(headers) == [(compact.upper(), "value")]


def test_headers_equality_ignores_name_spelling_but_not_order() -> None:
    a = Headers.from_pairs([("v", "x"), ("To", "y")])
    assert a == Headers.from_pairs([("VIA", "x"), ("t", "y")])
    assert a != Headers.from_pairs([("To", "y"), ("Via", "x")])
    assert hash(a) == hash(Headers.from_pairs([("Via", "x"), ("to", "y")]))


def test_header_name_that_is_not_a_token_is_refused() -> None:
    with pytest.raises(ValueError, match="token"):
        Headers.from_pairs([("Bad Name", "x")])


def test_parsed_headers_keep_names_as_written_and_strip_values() -> None:
    msg = parse_message(
        b"OPTIONS sip:a@example.com SIP/2.0\r\nmAx-FoRwArDs :   70  \r\nv:SIP/2.0/UDP h\r\n\r\n"
    )
    assert list(msg.headers) == [("mAx-FoRwArDs", "70"), ("v", "SIP/2.0/UDP h")]
    assert msg.max_forwards == 70


# --- typed headers, table-driven ----------------------------------------------------------------


def _parse(*headers: str, start: str = "OPTIONS sip:bob@example.com SIP/2.0") -> Request | Response:
    lines = [start, *headers, "Content-Length: 0", "", ""]
    return parse_message("\r\n".join(lines).encode())


def _hops(msg: Request | Response) -> list[tuple[Any, ...]]:
    return [(v.transport, v.host, v.port, v.branch) for v in msg.via]


TYPED: list[tuple[str, list[str], Callable[[Any], Any], Any]] = [
    (
        "via_two_hops_on_one_line",
        [
            "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/tcp b.example.com:5070"
            ";branch=z9hG4bK2"
        ],
        _hops,
        [("UDP", "a.example.com", None, "z9hG4bK1"), ("TCP", "b.example.com", 5070, "z9hG4bK2")],
    ),
    (
        "via_hops_over_several_lines",
        [
            "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1",
            "v: SIP/2.0/TLS b.example.com;branch=z9hG4bK2,SIP/2.0/SCTP c.example.com"
            ";branch=z9hG4bK3",
        ],
        lambda m: [v.branch for v in m.via],
        ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3"],
    ),
    (
        "via_sws_around_slashes_and_colon",
        ["Via: SIP / 2.0 / UDP  host.example.com : 5061 ;branch=z9hG4bKsws"],
        _hops,
        [("UDP", "host.example.com", 5061, "z9hG4bKsws")],
    ),
    (
        "via_params",
        [
            "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp;maddr=224.2.0.1;ttl=16"
            ";received=192.0.2.7;rport=5062;x-custom"
        ],
        lambda m: (m.via[0].maddr, m.via[0].param("ttl"), m.via[0].received, m.via[0].rport),
        ("224.2.0.1", "16", "192.0.2.7", "5062"),
    ),
    (
        "via_rport_flag_is_empty_string",
        ["Via: SIP/2.0/UDP h.example.com;rport;branch=z9hG4bKr"],
        lambda m: (m.via[0].rport, m.via[0].received),
        ("", None),
    ),
    (
        "via_ipv6_sent_by",
        ["Via: SIP/2.0/UDP [2001:db8::9:1]:5060;branch=z9hG4bKas3-111"],
        lambda m: (m.via[0].host, m.via[0].port, m.via[0].sent_by),
        ("[2001:db8::9:1]", 5060, "[2001:db8::9:1]:5060"),
    ),
    (
        "via_received_ipv6_without_brackets_rfc5118_4_5",
        ["Via: SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3-111"],
        lambda m: m.via[0].received,
        "2001:db8::9:255",
    ),
    (
        "via_received_ipv6_with_brackets_rfc5118_4_5",
        ["Via: SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3-111"],
        lambda m: m.via[0].received,
        "[2001:db8::9:255]",
    ),
    (
        "from_quoted_display_name_with_escapes",
        ['From: "Bob \\"B\\" Smith" <sip:bob@example.com>;tag=abc'],
        lambda m: (m.from_.display_name, m.from_.uri_text, m.from_.tag),
        ('Bob "B" Smith', "sip:bob@example.com", "abc"),
    ),
    (
        "from_unquoted_display_name_of_tokens",
        ["From: Alice Liddell <sips:alice@example.com;transport=tls>;tag=9f"],
        lambda m: (m.from_.display_name, m.from_.uri.scheme, m.from_.uri.param("transport")),
        ("Alice Liddell", "sips", "tls"),
    ),
    (
        "from_no_space_between_quoted_name_and_lt",
        ['From: "caller"<sip:caller@example.com>;tag=323'],
        lambda m: (m.from_.display_name, m.from_.tag),
        ("caller", "323"),
    ),
    (
        "from_bare_addr_spec_params_belong_to_the_header",
        ["From: sip:alice@example.com;tag=1"],
        lambda m: (m.from_.angle, m.from_.uri_text, m.from_.tag, m.from_.uri.params),
        (False, "sip:alice@example.com", "1", ()),
    ),
    (
        "to_without_tag",
        ["To: <sip:bob@example.com>", "Subject: x"],
        lambda m: (m.to.display_name, m.to.tag),
        (None, None),
    ),
    (
        "to_tag_name_is_case_insensitive",
        ["To: <sip:bob@example.com>;TAG=8321"],
        lambda m: m.to.tag,
        "8321",
    ),
    (
        "contact_wildcard",
        ["Contact: *", "Expires: 0"],
        lambda m: (len(m.contact), m.contact[0].wildcard, m.expires),
        (1, True, 0),
    ),
    (
        "contact_list_with_q_and_expires",
        [
            'Contact: <sip:a@192.0.2.1>;q=0.7;expires=3600, "Mr X" <sip:x@h.example.com>;q=0.1',
            "m: sip:bare@host.example.com;expires=60",
        ],
        lambda m: [(c.uri_text, c.param("q"), c.param("expires")) for c in m.contact],
        [
            ("sip:a@192.0.2.1", "0.7", "3600"),
            ("sip:x@h.example.com", "0.1", None),
            ("sip:bare@host.example.com", None, "60"),
        ],
    ),
    (
        "route_lists_over_lines",
        [
            "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
            "Route: <sip:p3.example.com;lr>",
        ],
        lambda m: [r.uri.host for r in m.route],
        ["p1.example.com", "p2.example.com", "p3.example.com"],
    ),
    (
        "record_route_with_params",
        ["Record-Route: <sip:rr.example.com;lr;ftag=1>;x=y"],
        lambda m: (m.record_route[0].uri.has_param("lr"), m.record_route[0].param("x")),
        (True, "y"),
    ),
    (
        "p_asserted_identity_sip_and_tel",
        ['P-Asserted-Identity: "Cullen Jennings" <sip:fluffy@cisco.com>, tel:+14085264000'],
        lambda m: [(a.display_name, a.uri.scheme, a.uri.user) for a in m.p_asserted_identity],
        [("Cullen Jennings", "sip", "fluffy"), (None, "tel", "+14085264000")],
    ),
    (
        "diversion",
        ["Diversion: <sip:+15551234@example.com>;reason=unconditional;counter=1;privacy=off"],
        lambda m: [
            (d.uri.user, d.param("reason"), d.param("counter")) for d in m.typed("Diversion")
        ],
        [("+15551234", "unconditional", "1")],
    ),
    (
        "history_info",
        [
            "History-Info: <sip:bob@example.com>;index=1, "
            "<sip:bob@192.0.2.4?Reason=SIP%3Bcause%3D302>;index=1.1;rc=1"
        ],
        lambda m: [(h.param("index"), h.uri.headers) for h in m.typed("history-info")],
        [("1", ()), ("1.1", (("Reason", "SIP%3Bcause%3D302"),))],
    ),
    (
        "refer_to_with_escaped_replaces",
        ["r: <sip:carol@example.com?Replaces=12345%40192.0.2.3%3Bto-tag%3D1%3Bfrom-tag%3D2>"],
        lambda m: m.typed("refer-to").uri.headers,
        (("Replaces", "12345%40192.0.2.3%3Bto-tag%3D1%3Bfrom-tag%3D2"),),
    ),
    (
        "cseq",
        ["CSeq:  4711   OPTIONS"],
        lambda m: (m.cseq.number, m.cseq.method),
        (4711, "OPTIONS"),
    ),
    (
        "cseq_max_uint32",
        ["CSeq: 4294967295 OPTIONS"],
        lambda m: m.cseq.number,
        4294967295,
    ),
    ("max_forwards", ["Max-Forwards: 0"], lambda m: m.max_forwards, 0),
    ("max_forwards_255", ["Max-Forwards: 255"], lambda m: m.max_forwards, 255),
    ("expires", ["Expires: 3600"], lambda m: m.expires, 3600),
    (
        "content_type_params",
        ['c: Application/SDP ; charset=utf-8;version="1"'],
        lambda m: (
            m.content_type.mime,
            m.content_type.param("charset"),
            m.content_type.param("version"),
        ),
        ("application/sdp", "utf-8", "1"),
    ),
    (
        "identity_rfc8224_compact_passport",
        [
            "Identity: eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0In0"
            ".eyJhdHRlc3QiOiJBIn0.c2lnbmF0dXJl"
            ";info=<https://cert.example.org/passport.cer>;alg=ES256;ppt=shaken"
        ],
        lambda m: (
            m.identity[0].info,
            m.identity[0].alg,
            m.identity[0].ppt,
            m.identity[0].legacy,
            m.identity[0].header_b64[:10],
        ),
        ("https://cert.example.org/passport.cer", "ES256", "shaken", False, "eyJhbGciOi"),
    ),
    (
        "identity_compact_form_with_empty_payload",
        ["y: eyJhbGciOiJFUzI1NiJ9..c2ln;info=<https://c.example.org/x.cer>;alg=ES256;ppt=shaken"],
        lambda m: (m.identity[0].passport, m.identity[0].ppt),
        ("eyJhbGciOiJFUzI1NiJ9..c2ln", "shaken"),
    ),
    ("privacy_id_user", ["Privacy: id;user"], lambda m: m.typed("privacy"), ("id", "user")),
    (
        "privacy_lower_cased",
        ["Privacy: ID ; Header"],
        lambda m: m.typed("privacy"),
        ("id", "header"),
    ),
    (
        "user_agent_products_and_comments",
        ["User-Agent: Foo/1.2 (Linux; x86) Bar"],
        lambda m: [(p.name, p.version, p.comment) for p in m.user_agent],
        [("Foo", "1.2", None), ("", None, "Linux; x86"), ("Bar", None, None)],
    ),
    (
        "server_nested_comment",
        ["Server: Asterisk/18.0 (comment (nested))"],
        lambda m: [(p.name, p.version, p.comment) for p in m.server],
        [("Asterisk", "18.0", None), ("", None, "comment (nested)")],
    ),
    (
        "p_access_network_info_3gpp",
        ["P-Access-Network-Info: 3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=234150999999999"],
        lambda m: (
            m.access_network_info[0].access_type,
            m.access_network_info[0].cell_id,
            m.access_network_info[0].param("UTRAN-CELL-ID-3GPP"),
        ),
        ("3GPP-E-UTRAN-FDD", "234150999999999", "234150999999999"),
    ),
    (
        "call_id_word_at_word",
        ["i: f81d4fae-7dec-11d0-a765-00a0c91e6bf6@foo.bar.com"],
        lambda m: m.call_id,
        "f81d4fae-7dec-11d0-a765-00a0c91e6bf6@foo.bar.com",
    ),
]


@pytest.mark.parametrize(
    ("headers", "read", "expected"), [t[1:] for t in TYPED], ids=[t[0] for t in TYPED]
)
def test_typed_header_value(headers: list[str], read: Callable[[Any], Any], expected: Any) -> None:
    msg = _parse(*headers)
    assert read(msg) == expected
    assert not [d for d in msg.defects if d.code == "invalid_header_value"]


ABSENT = {
    "call_id": None,
    "cseq": None,
    "from_": None,
    "to": None,
    "via": (),
    "contact": (),
    "route": (),
    "record_route": (),
    "max_forwards": None,
    "content_type": None,
    "expires": None,
    "user_agent": None,
    "server": None,
    "identity": (),
    "access_network_info": (),
    "authorization": (),
    "challenges": (),
}


@pytest.mark.parametrize(("attr", "expected"), ABSENT.items())
def test_absent_typed_header_is_none_or_empty(attr: str, expected: Any) -> None:
    assert getattr(_parse(), attr) == expected


INVALID = {
    "via_port_out_of_range": "Via: SIP/2.0/UDP h.example.com:70000;branch=z9hG4bK1",
    "via_branch_without_value": "Via: SIP/2.0/UDP h.example.com;branch",
    "via_received_not_an_address": "Via: SIP/2.0/UDP h.example.com;received=999.1.1.1",
    "via_unterminated_ipv6": "Via: SIP/2.0/UDP [2001:db8::1;branch=z9hG4bK1",
    "via_trailing_comma": "Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1,",
    "from_two_addresses": "From: Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
    "from_missing_gt": "From: <sip:a@example.com",
    "from_unterminated_quote": 'From: "Mr. J. User <sip:j.user@example.com>',
    "route_bare_addr_spec": "Route: sip:p1.example.com;lr",
    "cseq_over_32_bits": "CSeq: 4294967296 OPTIONS",
    "cseq_no_method": "CSeq: 1",
    "max_forwards_over_255": "Max-Forwards: 256",
    "max_forwards_negative": "Max-Forwards: -1",
    "expires_over_32_bits": "Expires: 4294967296",
    "content_type_no_subtype": "Content-Type: text",
    "privacy_empty_value": "Privacy: id;;user",
    "user_agent_unterminated_comment": "User-Agent: Foo (bar",
    "identity_not_a_passport": "Identity: ???",
    "call_id_with_space": "Call-ID: a b",
}


# Values that typed access cannot read at all: it raises. The others are read (the hot
# headers' typed access checks structure, hosts and numbers) and only msg.defects, which holds
# every value to the full grammar, reports them.
UNREADABLE = {
    "via_port_out_of_range",
    "via_unterminated_ipv6",
    "via_trailing_comma",
    "from_missing_gt",
    "from_unterminated_quote",
    "route_bare_addr_spec",
    "cseq_over_32_bits",
    "cseq_no_method",
    "max_forwards_over_255",
    "max_forwards_negative",
    "expires_over_32_bits",
    "content_type_no_subtype",
    "privacy_empty_value",
    "user_agent_unterminated_comment",
    "identity_not_a_passport",
}
FIELD_OFFSET = len(b"OPTIONS sip:bob@example.com SIP/2.0\r\n")


@pytest.mark.parametrize("header", INVALID.values(), ids=INVALID.keys())
def test_malformed_typed_header_is_a_defect_at_its_field(header: str) -> None:
    msg = _parse(header)
    assert ("invalid_header_value", FIELD_OFFSET) in {(d.code, d.offset) for d in msg.defects}
    assert not msg.is_valid


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_typed_header_raises_parse_error(name: str) -> None:
    header = INVALID[name]
    msg = _parse(header)
    with pytest.raises(SipParseError) as err:
        msg.typed(header.split(":", 1)[0])
    assert err.value.code == "invalid_header_value"
    assert err.value.offset == FIELD_OFFSET


# Non-ASCII digits: Python's \d and int() accept them; RFC 3261's DIGIT is %x30-39 only.
UNICODE_DIGITS = {
    "max_forwards_arabic_indic": ("Max-Forwards: \u0667\u0660", "max-forwards"),
    "cseq_arabic_indic": ("CSeq: \u0663 OPTIONS", "cseq"),
    "expires_arabic_indic": ("Expires: \u0663", "expires"),
    "via_port_fullwidth": ("Via: SIP/2.0/UDP h.example.com:\uff15\uff10\uff16\uff10", "via"),
    "min_expires_arabic_indic": ("Min-Expires: \u0663", "min-expires"),
}


@pytest.mark.parametrize(("header", "name"), UNICODE_DIGITS.values(), ids=UNICODE_DIGITS.keys())
def test_non_ascii_digits_are_not_numbers(header: str, name: str) -> None:
    msg = _parse(header)
    with pytest.raises(SipParseError):
        msg.typed(name)


def test_duplicate_via_branch_is_a_defect_whatever_the_spacing() -> None:
    spaced = _parse("Via: SIP/2.0/UDP h.example.com ;branch=z9hG4bKa;branch=z9hG4bKb")
    tight = _parse("Via: SIP/2.0/UDP h.example.com;branch=z9hG4bKa;branch=z9hG4bKb")
    assert "invalid_header_value" in {d.code for d in spaced.defects}
    assert "invalid_header_value" in {d.code for d in tight.defects}


def test_duplicate_from_tag_is_a_defect_whatever_the_spacing() -> None:
    spaced = _parse("From: <sip:a@example.com> ;tag=1;tag=2")
    tight = _parse("From: <sip:a@example.com>;tag=1;tag=2")
    assert "invalid_header_value" in {d.code for d in spaced.defects}
    assert "invalid_header_value" in {d.code for d in tight.defects}


def test_uri_port_of_non_ascii_digits_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_uri("sip:alice@atlanta.com:\u0665\u0660\u0666\u0660")


# --- URIs -------------------------------------------------------------------------------------

URIS: list[tuple[str, dict[str, Any]]] = [
    (
        "sip:alice@atlanta.com",
        {"scheme": "sip", "user": "alice", "host": "atlanta.com", "port": None, "is_sip": True},
    ),
    (
        "sip:alice:secretword@atlanta.com;transport=tcp",
        {"user": "alice", "password": "secretword", "params": (("transport", "tcp"),)},
    ),
    (
        "sips:alice@atlanta.com?subject=project%20x&priority=urgent",
        {"scheme": "sips", "headers": (("subject", "project%20x"), ("priority", "urgent"))},
    ),
    (
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        {"user": "+1-212-555-1212", "password": "1234", "params": (("user", "phone"),)},
    ),
    ("sips:1212@gateway.com", {"scheme": "sips", "user": "1212", "host": "gateway.com"}),
    ("sip:alice@192.0.2.4", {"host": "192.0.2.4"}),
    (
        "sip:atlanta.com;method=REGISTER?to=alice%40atlanta.com",
        {
            "user": None,
            "params": (("method", "REGISTER"),),
            "headers": (("to", "alice%40atlanta.com"),),
        },
    ),
    ("sip:alice;day=tuesday@atlanta.com", {"user": "alice;day=tuesday", "params": ()}),
    (
        "sip:[2001:db8::10]:5070;lr",
        {"host": "[2001:db8::10]", "port": 5070, "params": (("lr", None),)},
    ),
    (
        "SIP:Alice@Example.COM:5060",
        {"scheme": "sip", "user": "Alice", "host": "Example.COM", "port": 5060},
    ),
    ("sip:%61lice@atlanta.com", {"user": "%61lice", "user_unescaped": "alice"}),
    ("sip:sip%3Auser%40example.com@example.net", {"user_unescaped": "sip:user@example.com"}),
    ("tel:+1-201-555-0123", {"scheme": "tel", "user": "+1-201-555-0123", "is_sip": False}),
    (
        "tel:7042;phone-context=example.com",
        {"scheme": "tel", "user": "7042", "params": (("phone-context", "example.com"),)},
    ),
    ("http://example.com/x", {"scheme": "http", "opaque": "//example.com/x", "is_sip": False}),
]


@pytest.mark.parametrize(("text", "fields"), URIS, ids=[u for u, _ in URIS])
def test_parse_uri_fields(text: str, fields: dict[str, Any]) -> None:
    uri = parse_uri(text)
    assert uri.raw == text
    assert str(uri) == text
    for name, value in fields.items():
        assert getattr(uri, name) == value, name


@pytest.mark.parametrize(
    "text",
    [
        "alice@atlanta.com",
        "sip:",
        "sip:alice@",
        "sip:a@b:70000",
        "sip:%zz@example.com",
        "sip:user@[2001:db8::10",
        "sip:user@[2001:db8:::10]",
        "sip:user@256.1.1.1",
        "sip:a b@example.com",
        "sip:a@example.com;=x",
        "tel:7042",
        "tel:+",
    ],
)
def test_parse_uri_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_uri(text)


def test_uri_param_lookup_is_case_insensitive() -> None:
    uri = parse_uri("sip:a@example.com;Transport=TCP;LR")
    assert uri.param("transport") == "TCP"
    assert uri.param("lr") == ""
    assert uri.has_param("Lr")
    assert uri.param("maddr") is None


# RFC 3261 §19.1.4: the equal and not-equal pairs the RFC lists, plus its non-transitivity note.
EQUAL = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
    ("sip:carol@chicago.com;security=off", "sip:carol@chicago.com"),
    ("tel:+1-201-555-0123", "tel:+12015550123"),
]
NOT_EQUAL = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
    ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
    ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
    ("sip:alice:pw@atlanta.com", "sip:alice@atlanta.com"),
    ("sip:alice@atlanta.com;maddr=192.0.2.1", "sip:alice@atlanta.com"),
    ("sip:alice@atlanta.com;user=phone", "sip:alice@atlanta.com"),
]


@pytest.mark.parametrize(("a", "b"), EQUAL)
def test_rfc3261_equal_uris(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua == ub
    assert ub == ua
    assert hash(ua) == hash(ub)


@pytest.mark.parametrize(("a", "b"), NOT_EQUAL)
def test_rfc3261_not_equal_uris(a: str, b: str) -> None:
    ua, ub = parse_uri(a), parse_uri(b)
    assert ua != ub
    assert ub != ua


def test_uri_is_not_equal_to_its_text() -> None:
    assert parse_uri("sip:a@example.com") != "sip:a@example.com"
    assert isinstance(parse_uri("sip:a@example.com"), Uri)


def test_escaped_password_equals_unescaped() -> None:
    assert parse_uri("sip:alice:%70w@atlanta.com") == parse_uri("sip:alice:pw@atlanta.com")


def test_escaped_reserved_character_in_user_is_not_the_character() -> None:
    assert parse_uri("sip:a%3Bb@atlanta.com") != parse_uri("sip:a;b@atlanta.com")


def test_value_cache_can_be_turned_off_and_on() -> None:
    """The cache is an optimisation only: with it off, typed values are the same."""
    from sipwarden.sip import parse_message
    from sipwarden.sip.hdr import HEADER_TYPES, VALUE_CACHE_ENTRIES, set_value_cache_entries

    data = (
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKcache\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    cached = parse_message(data).via
    set_value_cache_entries(0)
    try:
        assert parse_message(data).via == cached
        assert len(HEADER_TYPES["via"].values) == 0
    finally:
        set_value_cache_entries(VALUE_CACHE_ENTRIES)
    parse_message(data).via  # noqa: B018
    assert len(HEADER_TYPES["via"].values) == 1
