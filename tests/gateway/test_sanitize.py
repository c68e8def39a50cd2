"""Sanitising messages going out: product versions stripped or neutralised, trust-domain
headers removed, every other byte kept as received, and the result round-trips."""

from __future__ import annotations

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.config import ConfigFileError, parse_settings
from sipwarden.gateway.sanitize import (
    SanitizeConfig,
    Sanitizer,
    neutralise_products,
    private_addresses,
)
from sipwarden.net import Endpoint
from sipwarden.sip import Request, Response, parse_message, to_bytes

SECRET = b"sanitize-test-secret-0123456789ab"
LOCAL = Endpoint("203.0.113.1", 5060)

HEAD = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1;rport=5060\r\n"
    b"Record-Route: <sip:10.0.0.5;lr>, <sip:198.51.100.1;lr>\r\n"
    b"From: <sip:caller@192.0.2.10>;tag=1\r\nTo:   <sip:100@198.51.100.5>;tag=2\r\n"
    b"Call-ID: c1\r\nCSeq: 1 INVITE\r\n"
    b"Contact: <sip:100@10.0.0.7:5060>\r\n"
)


def response(extra: bytes = b"", body: bytes = b"") -> Response:
    data = HEAD + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def without(raw: bytes, line: bytes) -> bytes:
    assert raw.count(line) == 1
    return raw.replace(line, b"")


def test_defaults_and_descriptions() -> None:
    cfg = SanitizeConfig()
    assert cfg.product_mode == "strip_versions"
    assert cfg.product_headers == ("Server", "User-Agent")
    assert cfg.strip_headers == ("P-Charging-Vector", "P-Charging-Function-Addresses")
    assert cfg.hide_topology is True
    assert cfg.hide_networks == ()
    for name, info in SanitizeConfig.model_fields.items():
        assert info.description, f"{name} has no description"
    with pytest.raises(pydantic.ValidationError):
        SanitizeConfig(product_mod="remove")  # type: ignore[call-arg]


def test_server_versions_are_stripped_and_nothing_else_moves() -> None:
    msg = response(b"Server: Asterisk PBX/18.9.0 (Linux x86_64)\r\n", b"v=0\r\n")
    out = Sanitizer().outgoing(msg)
    assert out.headers.get("Server") == "Asterisk PBX"
    assert to_bytes(out) == msg.raw.replace(
        b"Server: Asterisk PBX/18.9.0 (Linux x86_64)\r\n", b"Server: Asterisk PBX\r\n"
    )
    assert parse_message(to_bytes(out)) == out
    assert out.body == b"v=0\r\n"


def test_user_agent_and_repeated_fields_become_one_clean_field() -> None:
    msg = response(b"User-Agent: FPBX-16.0.40(18.9.0)\r\nX-A: 1\r\nUser-Agent: Foo/2\r\n")
    out = Sanitizer().outgoing(msg)
    assert out.headers.get_all("User-Agent") == ["FPBX-16.0.40 Foo"]
    assert out.headers.get("X-A") == "1"


def test_clean_message_is_returned_untouched() -> None:
    msg = response(b"Server: Kamailio\r\n")
    assert Sanitizer().outgoing(msg) is msg
    bare = response()
    assert Sanitizer().outgoing(bare) is bare


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("keep", "Acme/1.2 (build 7)"),
        ("replace", "SIP"),
        ("strip_versions", "Acme"),
        ("remove", None),
    ],
)
def test_product_modes(mode: str, expected: str | None) -> None:
    msg = response(b"Server: Acme/1.2 (build 7)\r\n")
    out = Sanitizer(SanitizeConfig(product_mode=mode)).outgoing(msg)
    assert out.headers.get("Server") == expected
    if expected is None:
        assert to_bytes(out) == without(msg.raw, b"Server: Acme/1.2 (build 7)\r\n")


def test_comment_only_or_unparsable_product_is_removed() -> None:
    only_comment = response(b"Server: (internal build 1.2)\r\n")
    assert "Server" not in Sanitizer().outgoing(only_comment).headers
    broken = response(b"Server: Acme/1.2 (unclosed\r\n")
    out = neutralise_products(broken, "Server", "strip_versions")
    assert to_bytes(out) == without(broken.raw, b"Server: Acme/1.2 (unclosed\r\n")


def test_trust_domain_headers_are_removed_with_their_line_only() -> None:
    pcv = b"P-Charging-Vector: icid-value=1234;icid-generated-at=10.0.0.9\r\n"
    msg = response(pcv)
    out = Sanitizer().outgoing(msg)
    assert to_bytes(out) == without(msg.raw, pcv)


def test_without_secret_or_local_record_route_contact_and_via_are_not_touched() -> None:
    """Hiding needs the token key and the endpoint the message leaves from; the one-argument
    ``outgoing`` (the proxy's current call) keeps its old behaviour."""
    msg = response(b"Server: Acme/1\r\n")
    out = Sanitizer().outgoing(msg, LOCAL)
    assert Sanitizer(secret=SECRET).outgoing(msg).raw == out.raw
    for name in ("Via", "Record-Route", "Contact"):
        assert out.headers.get_all(name) == msg.headers.get_all(name)
    assert private_addresses(out) == [("Record-Route", "10.0.0.5"), ("Contact", "10.0.0.7")]


def test_works_on_requests_and_lf_only_messages() -> None:
    data = (
        b"INVITE sip:100@192.0.2.10 SIP/2.0\n"
        b"Via: SIP/2.0/UDP 198.51.100.1;branch=z9hG4bK2\n"
        b"From: <sip:a@198.51.100.1>;tag=9\nTo: <sip:100@192.0.2.10>\n"
        b"Call-ID: c2\nCSeq: 2 INVITE\nMax-Forwards: 69\n"
        b"User-Agent: Core/5.1\nContent-Length: 0\n\n"
    )
    msg = parse_message(data)
    out = Sanitizer().outgoing(msg)
    assert to_bytes(out) == data.replace(b"User-Agent: Core/5.1\n", b"User-Agent: Core\n")


TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+~",
    min_size=1,
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(TOKEN, st.one_of(st.none(), TOKEN)), min_size=1, max_size=4),
    st.sampled_from(["keep", "strip_versions", "remove", "replace"]),
)
def test_any_product_list_round_trips_and_leaves_other_bytes(
    products: list[tuple[str, str | None]], mode: str
) -> None:
    value = " ".join(name if version is None else f"{name}/{version}" for name, version in products)
    line = f"Server: {value}\r\n".encode()
    msg = response(line)
    out = Sanitizer(SanitizeConfig(product_mode=mode)).outgoing(msg)
    assert parse_message(to_bytes(out)) == out
    assert to_bytes(out).replace(
        b"Server: " + (out.headers.get("Server") or "").encode() + b"\r\n", b""
    ) == without(msg.raw, line)
    if mode in ("strip_versions", "replace"):
        assert "/" not in (out.headers.get("Server") or "")


# -- topology hiding -------------------------------------------------------------------------------


def in_dialog_bye(hidden: Response) -> Request:
    """The BYE a client sends from a hidden 2xx: Request-URI = Contact, Route = reversed RRs."""
    routes = ", ".join(f"<{a.uri_text}>" for a in reversed(hidden.record_route))
    msg = parse_message(
        f"BYE {hidden.contact[0].uri_text} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK9\r\n"
        f"Route: {routes}\r\n"
        "From: <sip:caller@192.0.2.10>;tag=1\r\nTo: <sip:100@198.51.100.5>;tag=2\r\n"
        "Call-ID: c1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n".encode()
    )
    assert isinstance(msg, Request)
    return msg


def test_outgoing_hides_topology_and_incoming_restores_it() -> None:
    sanitizer = Sanitizer(secret=SECRET)
    msg = response(b"Server: Asterisk PBX/18.9.0\r\n")
    out = sanitizer.outgoing(msg, LOCAL)
    assert out.headers.get("Server") == "Asterisk PBX"
    assert private_addresses(out) == []
    assert b"10.0.0." not in out.raw
    restored = sanitizer.incoming(in_dialog_bye(out))
    assert restored is not None
    assert restored.uri == "sip:100@10.0.0.7:5060"
    assert restored.headers.get("Route") == "<sip:198.51.100.1;lr>, <sip:10.0.0.5;lr>"


def test_incoming_refuses_a_forged_token_and_passes_plain_requests() -> None:
    sanitizer = Sanitizer(secret=SECRET)
    out = Sanitizer(secret=b"some-other-gateway-secret-012345").outgoing(response(), LOCAL)
    assert sanitizer.incoming(in_dialog_bye(out)) is None
    plain = in_dialog_bye(response())
    assert sanitizer.incoming(plain) is plain


def test_hiding_off_leaves_both_directions_alone() -> None:
    sanitizer = Sanitizer(SanitizeConfig(hide_topology=False), secret=SECRET)
    msg = response()
    assert sanitizer.outgoing(msg, LOCAL) is msg
    forged = in_dialog_bye(Sanitizer(secret=b"x" * 32).outgoing(msg, LOCAL))
    assert sanitizer.incoming(forged) is forged
    assert Sanitizer().incoming(forged) is forged


def test_hide_networks_reach_the_hider() -> None:
    sanitizer = Sanitizer(SanitizeConfig(hide_networks=("198.51.100.0/24",)), secret=SECRET)
    out = sanitizer.outgoing(response(), LOCAL)
    assert b"198.51.100.1" not in out.raw
    assert b"To:   <sip:100@198.51.100.5>" in out.raw  # From/To do not route: kept


def test_bad_hide_networks_name_the_key() -> None:
    with pytest.raises(pydantic.ValidationError, match="hide_networks"):
        SanitizeConfig(hide_networks=("10.0.0.0/33",))
    with pytest.raises(ConfigFileError) as info:
        parse_settings({"gateway": {"sanitize": {"hide_networks": ["nope"]}}}, "gw.toml")
    assert "gateway.sanitize.hide_networks" in str(info.value)
    assert "'nope'" in str(info.value)
