"""Properties of parse_message over arbitrary, mutated and generated input.

The contract (parser.py's docstring): ``parse_message`` returns a Request or Response or raises
SipParseError, nothing else; a typed accessor raises only SipParseError; an accepted message
serialises to bytes that parse back to an equal message. Generated *valid* messages parse with
no violations and give back the values they were built from.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipwarden.sip import (
    DEFECT_CODES,
    ERROR_CODES,
    KNOWN_METHODS,
    Request,
    Response,
    SipParseError,
    parse_message,
    parse_uri,
    to_bytes,
)
from sipwarden.sip.headers import header_key
from sipwarden.sip.message import TYPED_ACCESSORS

TORTURE = Path("/work/shared/corpus/torture")
SEEDS_DIR = Path(__file__).resolve().parents[2] / "fuzz" / "seeds"

ACCESSORS = TYPED_ACCESSORS


def _exercise(msg: Request | Response, size: int) -> None:
    """Read every typed accessor and the defects; only SipParseError may escape any of them."""
    for name in ACCESSORS:
        try:
            getattr(msg, name)
        except SipParseError as exc:
            assert exc.code in ERROR_CODES
            assert 0 <= exc.offset <= size
    if isinstance(msg, Request):
        try:
            _ = msg.request_uri
        except SipParseError as exc:
            assert 0 <= exc.offset <= size
    try:
        defects = msg.defects
    except SipParseError:
        return
    for defect in defects:
        assert defect.code in DEFECT_CODES
        assert 0 <= defect.offset <= size
    assert msg.is_valid == (not msg.violations)


def check_contract(data: bytes) -> Request | Response | None:
    """The whole contract for one input; the accepted message, or None when refused."""
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        assert exc.code in ERROR_CODES
        assert 0 <= exc.offset <= len(data)
        return None
    assert isinstance(msg, Request | Response)
    _exercise(msg, len(data))
    again = parse_message(to_bytes(msg))
    assert again == msg
    assert to_bytes(again) == to_bytes(msg)
    return msg


# --- (a) arbitrary bytes -----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_parse_or_raise_sip_parse_error(data: bytes) -> None:
    check_contract(data)


START_LINES = [
    "INVITE sip:bob@example.com SIP/2.0",
    "REGISTER sips:registrar.example.com SIP/2.0",
    "OPTIONS tel:+14085551234 SIP/2.0",
    "SIP/2.0 200 OK",
    "SIP/2.0 401 Unauthorized",
]
HEADER_NAMES = [
    "Via",
    "v",
    "From",
    "f",
    "To",
    "t",
    "Call-ID",
    "i",
    "CSeq",
    "Contact",
    "m",
    "Route",
    "Record-Route",
    "Max-Forwards",
    "Content-Length",
    "l",
    "Content-Type",
    "c",
    "Expires",
    "User-Agent",
    "Server",
    "Identity",
    "y",
    "P-Access-Network-Info",
    "P-Asserted-Identity",
    "Authorization",
    "Proxy-Authenticate",
    "WWW-Authenticate",
    "Privacy",
    "Refer-To",
    "Diversion",
    "Date",
    "X-Other",
]
# The characters SIP grammar cares about, plus some it should never see.
SIP_CHARS = "abcxyzAZ019 \t;:=,<>\"\\@%/.?&[]()*+-_'~!\x00\x7f\u00e9\u0663\ud800"
FRAGMENTS = [
    "SIP/2.0/UDP ",
    "sip:",
    "sips:",
    "tel:+1",
    ";branch=z9hG4bK",
    ";tag=",
    ";received=",
    "<sip:a@b>",
    '"x"',
    "Digest ",
    'realm="r"',
    "[2001:db8::1]",
    ":5060",
    ", ",
    "\r\n ",
]


@st.composite
def sipish(draw: st.DrawFn) -> bytes:
    """A start line and header lines built from SIP's vocabulary with random values."""
    value = st.lists(
        st.one_of(st.text(SIP_CHARS, max_size=8), st.sampled_from(FRAGMENTS)), max_size=8
    ).map("".join)
    sep = draw(st.sampled_from(["\r\n", "\n"]))
    lines = [draw(st.sampled_from(START_LINES))]
    for name, text in draw(st.lists(st.tuples(st.sampled_from(HEADER_NAMES), value), max_size=12)):
        lines.append(f"{name}: {text}")
    body = draw(st.binary(max_size=20))
    if draw(st.booleans()):
        lines.append(f"Content-Length: {len(body)}")
    raw = sep.join(lines) + sep + sep
    return raw.encode("utf-8", "surrogatepass") + body


@settings(max_examples=200, deadline=None)
@given(sipish())
def test_sip_shaped_garbage_parses_or_raises_sip_parse_error(data: bytes) -> None:
    check_contract(data)


# --- (b) mutated real messages --------------------------------------------------------------------


def _seed_messages() -> list[bytes]:
    seeds = [
        (
            "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
            "v:  SIP/2.0/UDP a.example.com;branch=z9hG4bK1 , SIP/2.0/TCP b.example.com:5061"
            ";branch=z9hG4bK2;received=192.0.2.1\r\n"
            'f: "Jöns, Jacob" <sip:jons@atlanta.example.com>;tag=88sja8x\r\n'
            "Max-Forwards: 70\r\n"
            "t: <sip:bob@biloxi.example.com>\r\n"
            "i: 987asjd97y7atg@atlanta.example.com\r\n"
            "CSeq: 986759 INVITE\r\n"
            "Contact: <sip:jons@192.0.2.1:5060;transport=udp>;q=0.5;expires=60\r\n"
            "Route: <sip:p1.example.com;lr>, <sip:[2001:db8::1]:5070;lr>\r\n"
            "P-Asserted-Identity: <sip:jons@atlanta.example.com>, tel:+15551234567\r\n"
            "Identity: eyJhbGciOiJFUzI1NiJ9.eyJhIjoiYiJ9.c2ln;info=<https://c.example.org/c.cer>"
            ";alg=ES256;ppt=shaken\r\n"
            "P-Access-Network-Info: 3GPP-E-UTRAN-FDD; utran-cell-id-3gpp=234150999999999\r\n"
            "User-Agent: Foo/1.0 (bar)\r\n"
            "Subject: lunch\r\n\t at noon\r\n"
            "c: application/sdp\r\n"
            "l: 13\r\n"
            "\r\n"
            "v=0\r\ns=-\r\nt=0"
        ).encode(),
        (
            b"SIP/2.0 401 Unauthorized\r\n"
            b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7;rport=5060\r\n"
            b"From: <sip:alice@example.com>;tag=1\r\n"
            b"To: <sip:alice@example.com>;tag=2\r\n"
            b"Call-ID: 843817637684230@998sdasdh09\r\n"
            b"CSeq: 1 REGISTER\r\n"
            b'WWW-Authenticate: Digest realm="example.com", nonce="ea9c8e88df84f1cec4341ae6cbe5a3"'
            b', qop="auth", algorithm=MD5\r\n'
            b"Server: Kamailio (5.7.0 (x86_64/linux))\r\n"
            b"Content-Length: 0\r\n\r\n"
        ),
        (
            b"REGISTER sip:example.com SIP/2.0\n"
            b"Via: SIP/2.0/TCP [2001:db8::9:1];branch=z9hG4bKr;received=2001:db8::9:255\n"
            b"Max-Forwards: 70\n"
            b"From: <sip:alice@example.com>;tag=1\n"
            b"To: <sip:alice@example.com>\n"
            b"Call-ID: reg-1\n"
            b"CSeq: 2 REGISTER\n"
            b"Contact: *\n"
            b"Expires: 0\n"
            b'Authorization: Digest username="alice", realm="example.com", nonce="abc", '
            b'uri="sip:example.com", response="6629fae49393a05397450978507c4ef1"\n'
            b"Content-Length: 0\n\n"
        ),
    ]
    if TORTURE.is_dir():
        seeds += [path.read_bytes() for path in sorted(TORTURE.glob("rfc*/*.dat"))]
    return seeds


SEEDS = _seed_messages()
SPECIAL = b'\x00\r\n \t:;,<>"\\@%[]\xff\xc3\xa9'
MUTATIONS = ("flip", "truncate", "dup_line", "nul", "crlf", "case", "special", "delete")


def _mutate(data: bytes, op: str, pos: int, value: int) -> bytes:
    at = pos % (len(data) + 1)
    if op == "flip" and data:
        i = pos % len(data)
        return data[:i] + bytes([data[i] ^ (1 << (value % 8))]) + data[i + 1 :]
    if op == "truncate":
        return data[:at]
    if op == "dup_line":
        lines = data.split(b"\n")
        j = pos % len(lines)
        return b"\n".join([*lines[: j + 1], lines[j], *lines[j + 1 :]])
    if op == "nul":
        return data[:at] + b"\x00" + data[at:]
    if op == "crlf":
        return data[:at] + b"\r\n" + data[at:]
    if op == "case":
        lines = data.split(b"\n")
        j = pos % len(lines)
        name, colon, rest = lines[j].partition(b":")
        lines[j] = name.swapcase() + colon + rest
        return b"\n".join(lines)
    if op == "special":
        return data[:at] + SPECIAL[value % len(SPECIAL) : value % len(SPECIAL) + 1] + data[at:]
    if op == "delete":
        return data[:at] + data[at + 1 + value % 8 :]
    return data


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 1 << 20), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_real_messages_keep_the_contract(
    seed: bytes, ops: list[tuple[str, int, int]]
) -> None:
    data = seed
    for op, pos, value in ops:
        data = _mutate(data, op, pos, value)
    check_contract(data)


@pytest.mark.parametrize("seed", SEEDS[:3], ids=["invite", "401", "register_lf"])
def test_seed_messages_are_valid(seed: bytes) -> None:
    msg = check_contract(seed)
    assert msg is not None
    assert msg.violations == ()


def test_fuzz_seeds_are_valid_messages() -> None:
    """The fuzzer starts from these; an invalid seed would only explore the error paths."""
    paths = sorted(SEEDS_DIR.glob("*")) if SEEDS_DIR.is_dir() else []
    if not paths:
        pytest.skip(f"no seeds in {SEEDS_DIR}")
    for path in paths:
        msg = check_contract(path.read_bytes())
        assert msg is not None, path.name
        assert msg.violations == (), path.name


@pytest.mark.parametrize(
    "contact", ["<sip:a@example.com>;expires=1;expires=2", "<sip:a@example.com>;q=1;Q=0"]
)
def test_duplicate_contact_parameter_keeps_the_defects_contract(contact: str) -> None:
    data = (
        "REGISTER sip:example.com SIP/2.0\r\nContact: " + contact + "\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    msg = parse_message(data)
    codes = {d.code for d in msg.defects}
    assert "invalid_header_value" in codes


def test_request_uri_error_code_is_a_registered_error_code() -> None:
    msg = parse_message(b"OPTIONS sip:@bad SIP/2.0\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(msg, Request)
    with pytest.raises(SipParseError) as err:
        _ = msg.request_uri
    assert err.value.code in ERROR_CODES


def test_extension_method_starting_with_a_digit_parses() -> None:
    data = (
        b"42 sip:bob@example.com SIP/2.0\r\n"
        b"Via : SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(data)
    assert isinstance(msg, Request)
    assert msg.method == "42"
    assert "junk_before_start_line" not in {d.code for d in msg.defects}


def test_junk_without_start_line_parses_in_linear_time() -> None:
    timings = []
    for size in (4000, 16000):
        data = b"0" + b"x" * size
        began = time.perf_counter()
        with pytest.raises(SipParseError):
            parse_message(data)
        timings.append(time.perf_counter() - began)
    # Four times the input may cost four times the time, with slack; quadratic costs ~16x.
    assert timings[1] < 8 * timings[0] + 0.05
    assert timings[1] < 0.1


# --- (c)/(d) generated valid messages -------------------------------------------------------------

TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
WORD = TOKEN + '()<>:\\"/[]?{}'
USER_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()&=+$,;?/"
QDTEXT = "abc XYZ019,;:<>@!#$%&'()*+-./=?[]^_`{|}~\u00e9\u4e2d"

tokens = st.text(TOKEN, min_size=1, max_size=10)
alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)
labels = st.builds(lambda a, b: f"{a}-{b}" if b else a, alnum, st.one_of(st.just(""), alnum))
hostnames = st.builds(
    lambda parts, first, rest: ".".join([*parts, first + rest]),
    st.lists(labels, max_size=3),
    st.sampled_from("abcxyz"),
    st.text("abcz09", max_size=4),
)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.integers(1, 0xFFFF).map(lambda n: f"[2001:db8::{n:x}]")
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.one_of(st.none(), st.integers(1, 65535))
users = st.one_of(
    st.text(USER_CHARS, min_size=1, max_size=10),
    st.text("abc", min_size=1, max_size=3).map(lambda u: u + "%41%2c"),
)


COMPACT = {
    "v": "Via",
    "f": "From",
    "t": "To",
    "i": "Call-ID",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
}


def _casing(draw: st.DrawFn, name: str) -> str:
    style = draw(st.sampled_from(["as_is", "lower", "upper", "random"]))
    if style == "lower":
        return name.lower()
    if style == "upper":
        return name.upper()
    if style == "random":
        mask = draw(st.integers(0, 2 ** len(name) - 1))
        return "".join(c.swapcase() if mask >> i & 1 else c for i, c in enumerate(name))
    return name


@st.composite
def sip_uris(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    scheme = draw(st.sampled_from(["sip", "sips"]))
    user = draw(st.one_of(st.none(), users))
    host = draw(hosts)
    port = draw(ports)
    params = draw(st.lists(st.sampled_from([";transport=tcp", ";lr", ";user=phone"]), unique=True))
    text = f"{scheme}:{'' if user is None else user + '@'}{host}"
    text += f":{port}" if port is not None else ""
    text += "".join(params)
    # The same URI with scheme and host in upper case and the parameters in reverse order.
    alt = f"{scheme.upper()}:{'' if user is None else user + '@'}{host.upper()}"
    alt += (f":{port}" if port is not None else "") + "".join(reversed(params))
    return text, {"scheme": scheme, "user": user, "host": host, "port": port, "alt": alt}


@st.composite
def display_names(draw: st.DrawFn) -> tuple[str, str | None]:
    """(as written, as parsed)."""
    kind = draw(st.sampled_from(["none", "tokens", "quoted"]))
    if kind == "tokens":
        words = draw(st.lists(tokens, min_size=1, max_size=3))
        return " ".join(words) + " ", " ".join(words)
    if kind == "quoted":
        parts = draw(st.lists(st.one_of(st.text(QDTEXT, max_size=6), st.sampled_from(['"', "\\"]))))
        plain = "".join(parts)
        written = "".join("\\" + p if p in ('"', "\\") else p for p in parts)
        return f'"{written}" ', plain
    return "", None


@st.composite
def name_addrs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    written_name, name = draw(display_names())
    uri, _ = draw(sip_uris())
    tag = draw(st.one_of(st.none(), tokens))
    text = f"{written_name}<{uri}>" + ("" if tag is None else f";tag={tag}")
    return text, {"display_name": name, "uri_text": uri, "tag": tag}


@st.composite
def via_hops(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "WSS"]))
    host = draw(hosts)
    port = draw(ports)
    branch = "z9hG4bK" + draw(tokens)
    rport = draw(st.sampled_from(["", ";rport"]))
    text = f"SIP/2.0/{_casing(draw, transport)} {host}"
    text += (f":{port}" if port is not None else "") + rport + f";branch={branch}"
    return text, {"transport": transport, "host": host, "port": port, "branch": branch}


@st.composite
def valid_messages(draw: st.DrawFn) -> tuple[bytes, dict[str, Any]]:
    """A message valid per RFC 3261, and the values it was built from."""
    spec: dict[str, Any] = {}
    is_request = draw(st.booleans())
    # Extension methods start with a letter here; digits are tested on their own.
    extension = st.builds(str.__add__, st.sampled_from("ABCXYZ"), st.text(TOKEN, max_size=8))
    method = draw(st.one_of(st.sampled_from(sorted(KNOWN_METHODS)), extension))
    if is_request:
        uri, _ = draw(sip_uris())
        start = f"{method} {uri} SIP/2.0"
        spec.update(method=method, uri=uri)
    else:
        status = draw(st.integers(100, 699))
        reason = draw(st.text("abcXYZ -.\u00e9\u00fc", max_size=20))
        start = f"SIP/2.0 {status} {reason}"
        spec.update(status=status, reason=reason)
    headers: list[tuple[str, str]] = []
    hops = draw(st.lists(via_hops(), min_size=1, max_size=4))
    spec["via"] = [h for _, h in hops]
    i = 0
    while i < len(hops):  # several hops per line, or one per line
        n = draw(st.integers(1, len(hops) - i))
        headers.append(("Via", ", ".join(text for text, _ in hops[i : i + n])))
        i += n
    from_text, spec["from"] = draw(name_addrs())
    to_text, spec["to"] = draw(name_addrs())
    headers += [("From", from_text), ("To", to_text)]
    spec["call_id"] = draw(st.text(WORD, min_size=1, max_size=16)) + draw(
        st.one_of(st.just(""), st.text(WORD, min_size=1, max_size=8).map(lambda w: "@" + w))
    )
    headers.append(("Call-ID", spec["call_id"]))
    spec["cseq"] = (draw(st.integers(0, 2**31 - 1)), method)
    headers.append(("CSeq", f"{spec['cseq'][0]} {method}"))
    if is_request:
        spec["max_forwards"] = draw(st.integers(0, 255))
        headers.append(("Max-Forwards", str(spec["max_forwards"])))
    if draw(st.booleans()):
        contacts = draw(st.lists(name_addrs(), min_size=1, max_size=3))
        spec["contact"] = [c for _, c in contacts]
        headers.append(("Contact", ", ".join(f"{t};q=0.{n}" for n, (t, _) in enumerate(contacts))))
    if draw(st.booleans()):
        spec["expires"] = draw(st.integers(0, 2**32 - 1))
        headers.append(("Expires", str(spec["expires"])))
    for name in draw(st.lists(st.text(TOKEN, min_size=3, max_size=8), max_size=3)):
        headers.append(("X-" + name, draw(st.text(QDTEXT, max_size=12)).strip()))
    body = draw(st.binary(max_size=64))
    if body:
        headers.append(("Content-Type", "application/octet-stream"))
    headers.append(("Content-Length", str(len(body))))
    spec["body"] = body
    # Any order of fields, but Via lines keep theirs (hop order is meaningful).
    via_lines = iter([value for name, value in headers if name == "Via"])
    headers = [
        (name, next(via_lines) if name == "Via" else value)
        for name, value in draw(st.permutations(headers))
    ]

    compact = {v: k for k, v in COMPACT.items()}
    lines = [start]
    for long_name, value in headers:
        name = compact[long_name] if long_name in compact and draw(st.booleans()) else long_name
        colon = draw(st.sampled_from([": ", ":", " : ", ":\t", ":   "]))
        lines.append(_casing(draw, name) + colon + value)
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    return data, spec


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_messages())
def test_generated_valid_message_has_no_violations_and_gives_back_its_values(
    case: tuple[bytes, dict[str, Any]],
) -> None:
    data, spec = case
    msg = check_contract(data)
    assert msg is not None
    assert msg.violations == ()
    assert to_bytes(msg) == data
    if "method" in spec:
        assert isinstance(msg, Request)
        assert (msg.method, msg.uri) == (spec["method"], spec["uri"])
        assert msg.request_uri.raw == spec["uri"]
        assert msg.max_forwards == spec["max_forwards"]
    else:
        assert isinstance(msg, Response)
        assert (msg.status, msg.reason) == (spec["status"], spec["reason"])
    assert msg.cseq is not None
    assert (msg.cseq.number, msg.cseq.method) == spec["cseq"]
    assert msg.call_id == spec["call_id"]
    assert [(v.transport, v.host, v.port, v.branch) for v in msg.via] == [
        (h["transport"], h["host"], h["port"], h["branch"]) for h in spec["via"]
    ]
    for attr, key in (("from_", "from"), ("to", "to")):
        addr = getattr(msg, attr)
        assert (addr.display_name, addr.uri_text, addr.tag) == (
            spec[key]["display_name"],
            spec[key]["uri_text"],
            spec[key]["tag"],
        )
    assert [c.uri_text for c in msg.contact] == [c["uri_text"] for c in spec.get("contact", [])]
    assert msg.expires == spec.get("expires")
    assert msg.body == spec["body"]
    assert msg.content_length == len(spec["body"])
    # (d) lookups ignore case, whatever casing the message was written in
    for name, value in msg.headers:
        assert name.upper() in msg.headers
        assert msg.headers.get_all(name.lower()) == msg.headers.get_all(name.upper())
        assert value in msg.headers.get_all(name.swapcase())


@settings(max_examples=300, deadline=None)
@given(sip_uris())
def test_generated_uri_fields_round_trip(case: tuple[str, dict[str, Any]]) -> None:
    text, spec = case
    uri = parse_uri(text)
    assert (uri.scheme, uri.user, uri.host, uri.port) == (
        spec["scheme"],
        spec["user"],
        spec["host"],
        spec["port"],
    )
    alt = parse_uri(spec["alt"])
    assert uri == alt
    assert hash(uri) == hash(alt)


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_messages())
def test_compact_and_long_names_are_equivalent(case: tuple[bytes, dict[str, Any]]) -> None:
    """The same message written with every compact form, and with every long name."""
    data, _ = case
    msg = parse_message(data)
    head, _, body = data.partition(b"\r\n\r\n")
    first, *lines = head.split(b"\r\n")
    long_lines, short_lines = [first], [first]
    short = {v.lower(): k for k, v in COMPACT.items()}
    for line in lines:
        name, _, value = line.partition(b":")
        key = header_key(name.decode())
        long_name = next((v for v in COMPACT.values() if v.lower() == key), name.decode().strip())
        long_lines.append(long_name.encode() + b":" + value)
        short_lines.append(short.get(key, name.decode().strip()).encode() + b":" + value)
    long_msg = parse_message(b"\r\n".join(long_lines) + b"\r\n\r\n" + body)
    short_msg = parse_message(b"\r\n".join(short_lines) + b"\r\n\r\n" + body)
    assert long_msg == short_msg == msg
    for attr in ("via", "from_", "to", "call_id", "contact", "content_length", "content_type"):
        assert getattr(long_msg, attr) == getattr(short_msg, attr)
    assert long_msg.headers.get("v") == short_msg.headers.get("Via")
