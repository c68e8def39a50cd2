"""Topology hiding: internal upstream addresses leave the gateway only as authenticated tokens,
requests coming back get them restored byte for byte, and nothing an attacker sends can make
the gateway restore an address it did not hide or spend unbounded work."""

from __future__ import annotations

import ipaddress
from typing import ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.gateway.topology import (
    MAX_ROUTE_ENTRIES,
    MAX_TOKEN_CHARS,
    TOKEN_PARAM,
    HiddenAddress,
    TopologyHider,
)
from sipwarden.net import Endpoint, Transport
from sipwarden.sip import Message, ParseLimits, Request, Response, parse_message, to_bytes

SECRET = b"topology-test-secret-0123456789ab"
LOCAL = Endpoint("203.0.113.1", 5060)
LOCAL_TCP = Endpoint("203.0.113.1", 5062, Transport.TCP)
LOCAL_V6 = Endpoint("2001:db8::1", 5061, Transport.TLS)

CONTACT = "sip:100@10.0.0.7:5070;ob"
RR_EDGE = "sip:10.0.0.5;lr;ftag=abc"  # the proxy nearest the client
RR_PUBLIC = "sip:198.51.100.1;lr"
RR_CORE = "sip:[fd00::5]:5080;transport=tcp;lr"

OK_200 = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1;rport=5060\r\n"
    f"Record-Route: <{RR_EDGE}>, <{RR_PUBLIC}>\r\n"
    f"Record-Route: <{RR_CORE}>\r\n"
    "From: <sip:caller@192.0.2.10>;tag=1\r\n"
    "To: <sip:100@198.51.100.5>;tag=2\r\n"
    "Call-ID: c1\r\n"
    "CSeq: 1 INVITE\r\n"
    f'Contact: "Desk, 1" <{CONTACT}>;expires=30;+sip.instance="<urn:uuid:1,2>"\r\n'
    "Content-Length: 0\r\n\r\n"
)


def message(text: str, limits: ParseLimits | None = None) -> Message:
    data = text.encode()
    return parse_message(data, limits) if limits is not None else parse_message(data)


def request(text: str, limits: ParseLimits | None = None) -> Request:
    msg = message(text, limits)
    assert isinstance(msg, Request)
    return msg


def bye(
    ruri: str, routes: list[str], extra: str = "", limits: ParseLimits | None = None
) -> Request:
    """The in-dialog BYE a client sends: Request-URI = remote target, Route = route set."""
    route = "".join(f"Route: <{r}>\r\n" for r in routes)
    return request(
        f"BYE {ruri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK2\r\n"
        f"{route}{extra}"
        "From: <sip:caller@192.0.2.10>;tag=1\r\nTo: <sip:100@198.51.100.5>;tag=2\r\n"
        "Call-ID: c1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        limits,
    )


def dialog_bye(hidden: Message) -> Request:
    """The BYE a UAC builds from a hidden 2xx (RFC 3261 §12.1.2: route set reversed)."""
    routes = [a.uri_text for a in reversed(hidden.record_route)]
    return bye(hidden.contact[0].uri_text, routes)


@pytest.fixture
def hider() -> TopologyHider:
    return TopologyHider(SECRET)


# -- round trip ------------------------------------------------------------------------------------


def test_dialog_round_trip_restores_the_originals_byte_for_byte(hider: TopologyHider) -> None:
    hidden = hider.hide(message(OK_200), LOCAL)
    text = to_bytes(hidden).decode()
    for internal in ("10.0.0.7", "10.0.0.5", "fd00::5"):
        assert internal not in text
    restored = hider.restore(dialog_bye(hidden))
    expected = bye(CONTACT, [RR_CORE, RR_PUBLIC, RR_EDGE])
    assert restored is not None
    assert to_bytes(restored) == to_bytes(expected)
    assert restored.uri == CONTACT
    assert [a.uri_text for a in restored.route] == [RR_CORE, RR_PUBLIC, RR_EDGE]


def test_only_the_uris_change_and_everything_else_is_kept(hider: TopologyHider) -> None:
    original = message(OK_200)
    hidden = hider.hide(original, LOCAL)
    contact = hidden.contact[0]
    assert contact.display_name == "Desk, 1"
    assert contact.params_text == ';expires=30;+sip.instance="<urn:uuid:1,2>"'
    uri = contact.uri
    assert (uri.user, uri.host, uri.port) == ("100", "203.0.113.1", 5060)
    assert uri.has_param("ob") and uri.param("transport") is None
    edge, public, core = (a.uri for a in hidden.record_route)
    assert edge.has_param("lr") and edge.param("ftag") == "abc"
    assert public.raw == RR_PUBLIC
    assert core.has_param("lr") and core.param("transport") is None
    assert [p[0] for p in core.params] == ["lr", TOKEN_PARAM]
    # Byte-exact outside the URIs: remove the URIs and the rest is identical.
    strip = [CONTACT, RR_EDGE, RR_CORE]
    stripped = [a.uri_text for a in (hidden.contact[0], hidden.record_route[0])]
    stripped.append(hidden.record_route[2].uri_text)
    left, right = original.raw, hidden.raw
    for old, new in zip(strip, stripped, strict=True):
        left, right = left.replace(old.encode(), b"U"), right.replace(new.encode(), b"U")
    assert left == right
    assert parse_message(to_bytes(hidden)) == hidden


def test_uri_level_round_trip_keeps_parameter_order(hider: TopologyHider) -> None:
    for original in (
        "sip:a@10.1.2.3",
        "sips:a:pw@192.168.1.1:5061;transport=TCP;lr;x=1?Subject=hi&h=2",
        "sip:10.0.0.1;maddr=example.org;transport=udp;lr",
        "sip:[fe80::1]:5060",
        "sip:[FD00:0:0::1]",  # non-canonical spelling comes back as written
        "sip:u%40x@100.64.0.1;user=phone",
    ):
        for local in (LOCAL, LOCAL_TCP, LOCAL_V6):
            hidden = hider.hide_uri(original, local)
            assert hidden is not None, original
            assert hider.restore_uri(hidden) == original


def test_bare_compact_contact_gains_brackets_so_params_stay_header_params(
    hider: TopologyHider,
) -> None:
    msg = message(
        OK_200.replace("Contact: ", "X-Old: ").replace(
            "Content-Length", "m: sip:9@172.16.0.1;expires=5\r\nContent-Length"
        )
    )
    hidden = hider.hide(msg, LOCAL)
    (contact,) = hidden.contact
    assert b"\r\nm: <sip:9@203.0.113.1:5060;swt=" in hidden.raw
    assert contact.angle and contact.params_text == ";expires=5"
    assert hider.restore_uri(contact.uri_text) == "sip:9@172.16.0.1"


def test_several_contacts_in_one_field_and_several_fields(hider: TopologyHider) -> None:
    msg = message(
        OK_200.replace(
            "Content-Length",
            "Contact: <sip:a@10.9.9.9>, <sip:b@198.51.100.9>, sip:c@192.168.0.3\r\nContent-Length",
        )
    )
    hidden = hider.hide(msg, LOCAL)
    hosts = [a.uri.host for a in hidden.contact]
    assert hosts == ["203.0.113.1", "203.0.113.1", "198.51.100.9", "203.0.113.1"]
    assert [hider.restore_uri(a.uri_text) for a in hidden.contact] == [
        CONTACT,
        "sip:a@10.9.9.9",
        "sip:b@198.51.100.9",
        "sip:c@192.168.0.3",
    ]


def test_folded_field_is_rewritten_whole_and_round_trips(hider: TopologyHider) -> None:
    msg = message(OK_200.replace(f"<{RR_EDGE}>, <{RR_PUBLIC}>", f"<{RR_EDGE}>,\r\n  <{RR_PUBLIC}>"))
    hidden = hider.hide(msg, LOCAL)
    assert b"10.0.0.5" not in hidden.raw
    restored = hider.restore(dialog_bye(hidden))
    assert restored is not None
    assert [a.uri_text for a in restored.route] == [RR_CORE, RR_PUBLIC, RR_EDGE]


def test_non_ascii_before_the_uri_keeps_byte_offsets_right(hider: TopologyHider) -> None:
    text = OK_200.replace('Contact: "Desk, 1"', 'Contact:  \t "Zoë Ω, ☎"  ')
    msg = message(text.replace("Call-ID: c1", "Call-ID: ü1"))
    hidden = hider.hide(msg, LOCAL)
    new_uri = hidden.contact[0].uri_text.encode()
    # Spliced in place (odd spacing kept), not the whole field rewritten.
    assert hidden.raw.replace(new_uri, b"U").split(b"Contact:")[1].startswith(b'  \t "Zo\xc3\xab')
    assert (
        msg.raw.replace(CONTACT.encode(), b"U").split(b"\r\nContact:")[1]
        == (hidden.raw.replace(new_uri, b"U").split(b"\r\nContact:")[1])
    )
    assert hidden.contact[0].display_name == "Zoë Ω, ☎"
    assert hidden.headers.get("Call-ID") == "ü1"
    restored = hider.restore(dialog_bye(hidden))
    assert restored is not None and restored.uri == CONTACT


# -- transport and IPv6 ----------------------------------------------------------------------------


def test_non_udp_local_adds_its_transport_where_the_original_stood(hider: TopologyHider) -> None:
    assert hider.hide_uri(RR_CORE, LOCAL_TCP) == (
        "sip:203.0.113.1:5062;transport=tcp;lr;swt="
        + hider.seal(HiddenAddress("[fd00::5]", 5080, "tcp", 0))
    )
    hidden = hider.hide_uri(RR_EDGE, LOCAL_V6)
    assert hidden is not None
    assert hidden.startswith("sip:[2001:db8::1]:5061;lr;ftag=abc;transport=tls;swt=")
    assert hider.restore_uri(hidden) == RR_EDGE


def test_ipv6_internal_hosts_are_hidden(hider: TopologyHider) -> None:
    for host in ("[fd12:3456::1]", "[fe80::abcd]", "[::1]", "[::ffff:10.0.0.1]"):
        hidden = hider.hide_uri(f"sip:x@{host}:5060", LOCAL)
        assert hidden is not None, host
        assert hider.restore_uri(hidden) == f"sip:x@{host}:5060"


# -- what is not hidden ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "sip:a@198.51.100.7",
        "sip:a@[2001:db8::7]",
        "sip:a@pbx.internal.example",  # hostnames are left alone
        "tel:+15551234567",
        "sip:a@10.0.0.1;transport=tcp;transport=udp",  # repeated parameter: not ours to fix
    ],
)
def test_uris_not_to_hide(hider: TopologyHider, uri: str) -> None:
    assert hider.hide_uri(uri, LOCAL) is None


def test_message_needing_no_edit_is_the_same_object(hider: TopologyHider) -> None:
    public = message(
        OK_200.replace("10.0.0.7", "198.51.100.7")
        .replace("10.0.0.5", "198.51.100.5")
        .replace("[fd00::5]", "pbx.example.com")
    )
    assert hider.hide(public, LOCAL) is public
    wildcard = message(
        "REGISTER sip:198.51.100.5 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.3;branch=z9hG4bK3\r\n"
        "From: <sip:a@198.51.100.5>;tag=1\r\nTo: <sip:a@198.51.100.5>\r\nCall-ID: r\r\n"
        "CSeq: 9 REGISTER\r\nContact: *\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n"
    )
    assert hider.hide(wildcard, LOCAL) is wildcard
    plain = bye("sip:100@198.51.100.5", [RR_PUBLIC])
    assert hider.restore(plain) is plain
    mention = request(
        to_bytes(bye("sip:100@198.51.100.5", []))
        .decode()
        .replace("Max-Forwards", "Subject: swt=\r\nMax-Forwards")
    )
    assert hider.restore(mention) is mention


def test_register_response_keeps_contacts_and_hides_service_route(hider: TopologyHider) -> None:
    msg = message(
        OK_200.replace("CSeq: 1 INVITE", "CSeq: 1 REGISTER").replace(
            "Content-Length",
            "Service-Route: <sip:orig@10.0.0.20;lr>\r\nPath: <sip:10.0.0.21;lr;ob>\r\n"
            "Content-Length",
        )
    )
    hidden = hider.hide(msg, LOCAL)
    assert hidden.headers.get_all("Contact") == msg.headers.get_all("Contact")
    service_route = hidden.headers.get("Service-Route") or ""
    path = hidden.headers.get("Path") or ""
    assert "10.0.0.2" not in service_route + path and ";ob;swt=" in path
    # The UA preloads the Service-Route: the next request's Route is restored.
    uri = service_route.strip("<>")
    restored = hider.restore(bye("sip:200@198.51.100.5", [uri]))
    assert restored is not None and restored.route[0].uri_text == "sip:orig@10.0.0.20;lr"


def test_warning_agent_is_replaced_by_the_gateway(hider: TopologyHider) -> None:
    msg = message(
        OK_200.replace(
            "Content-Length",
            'Warning: 399 10.0.0.9:5060 "busy, really", 370 198.51.100.1 "x"\r\n'
            'Warning: 399 [fd00::9] "y"\r\nContent-Length',
        )
    )
    hidden = hider.hide(msg, LOCAL_V6)
    assert hidden.headers.get_all("Warning") == [
        '399 [2001:db8::1]:5061 "busy, really", 370 198.51.100.1 "x"',
        '399 [2001:db8::1] "y"',
    ]


def test_hide_networks_extends_what_is_hidden() -> None:
    hider = TopologyHider(SECRET, ("198.51.100.0/24",))
    hidden = hider.hide_uri(RR_PUBLIC, LOCAL)
    assert hidden is not None and hider.restore_uri(hidden) == RR_PUBLIC
    # The same key without the network refuses it: only what would be hidden is restored.
    assert TopologyHider(SECRET).restore_uri(hidden) is None


# -- tokens ----------------------------------------------------------------------------------------


def test_tokens_are_deterministic_and_keyed(hider: TopologyHider) -> None:
    first = hider.hide(message(OK_200), LOCAL)
    again = TopologyHider(SECRET).hide(message(OK_200), LOCAL)
    assert first.raw == again.raw
    other = TopologyHider(b"another-secret-of-thirty-two-byte").hide(message(OK_200), LOCAL)
    assert other.raw != first.raw
    token = first.contact[0].uri.param(TOKEN_PARAM) or ""
    assert len(token) <= 40 and token.replace("-", "").replace("_", "").isalnum()


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        TopologyHider(b"short")


def forged_variants(hider: TopologyHider) -> list[str]:
    token = hider.seal(HiddenAddress("10.0.0.7", 5070, None, 0))
    flipped = [
        token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :] for i in range(len(token))
    ]
    foreign = TopologyHider(b"x" * 32).seal(HiddenAddress("10.0.0.7", 5070, None, 0))
    return [*flipped, token[:-1], token[:-4], token[:20], "", "A", "%%%", token + "A", foreign]


def test_forged_altered_truncated_and_foreign_tokens_are_refused(hider: TopologyHider) -> None:
    for bad in forged_variants(hider):
        assert hider.open(bad) is None, bad
        assert hider.restore(bye(f"sip:100@203.0.113.1:5060;swt={bad}", [])) is None
        assert hider.restore(bye("sip:100@198.51.100.5", [f"sip:203.0.113.1;lr;swt={bad}"])) is None


def test_token_parameter_without_value_is_refused(hider: TopologyHider) -> None:
    assert hider.restore(bye("sip:100@203.0.113.1;swt", [])) is None


def test_token_for_a_public_address_is_refused_even_when_authentic(hider: TopologyHider) -> None:
    token = hider.seal(HiddenAddress("198.51.100.7", 5060, None, 0))
    assert hider.open(token) is None
    assert hider.restore(bye(f"sip:100@203.0.113.1;swt={token}", [])) is None


def test_parameter_names_are_case_insensitive(hider: TopologyHider) -> None:
    hidden = hider.hide_uri(CONTACT, LOCAL)
    assert hidden is not None
    restored = hider.restore(bye(hidden.replace(";swt=", ";SwT="), []))
    assert restored is not None and restored.uri == CONTACT


def test_token_is_honoured_whatever_the_request_uri_host(hider: TopologyHider) -> None:
    """The gateway forwards only to its upstream, and the token only names an address that
    upstream published: restoring is safe, and a gateway behind NAT is addressed by another IP."""
    hidden = hider.hide_uri(CONTACT, LOCAL)
    assert hidden is not None
    elsewhere = hidden.replace("203.0.113.1", "192.0.2.99")
    restored = hider.restore(bye(elsewhere, []))
    assert restored is not None and restored.uri == CONTACT


def test_response_record_route_copied_by_the_uas_is_restored(hider: TopologyHider) -> None:
    """Upstream → client INVITE: the client's 2xx copies the hidden Record-Route, and the
    upstream must see its own entries in it to build its route set."""
    invite_rr = hider.hide_uri(RR_EDGE, LOCAL)
    assert invite_rr is not None
    answer = message(
        OK_200.replace(
            f"Record-Route: <{RR_EDGE}>, <{RR_PUBLIC}>\r\n", f"Record-Route: <{invite_rr}>\r\n"
        )
        .replace(f"Record-Route: <{RR_CORE}>\r\n", "")
        .replace(CONTACT, "sip:client@198.51.100.20")
    )
    assert isinstance(answer, Response)
    restored = hider.restore(answer)
    assert restored is not None
    assert to_bytes(restored) == to_bytes(answer).replace(invite_rr.encode(), RR_EDGE.encode())
    forged = message(to_bytes(answer).decode().replace(invite_rr[-6:], "AAAAAA"))
    assert hider.restore(forged) is None


# -- hostile input ---------------------------------------------------------------------------------


class CountingHider(TopologyHider):
    """Counts the URIs :meth:`restore` examines (a subclass, not a patch)."""

    examined: ClassVar[list[str]] = []

    def restore_uri(self, uri_text: str) -> str | None:
        self.examined.append(uri_text)
        return super().restore_uri(uri_text)


BIG = ParseLimits(
    max_message_bytes=1 << 20,
    max_header_bytes=1 << 20,
    max_header_line_bytes=1 << 20,
    max_headers=2000,
    max_uri_bytes=1 << 15,
)


def test_thousand_route_entries_cost_a_bounded_number_of_token_checks() -> None:
    """Entries past MAX_ROUTE_ENTRIES are not examined (here: 1000 forged ones after 32 good
    ones reach the upstream untouched instead of costing 1000 decryptions)."""
    hider = CountingHider(SECRET, limits=BIG)
    good = hider.hide_uri(RR_EDGE, LOCAL)
    assert good is not None
    forged = good[:-3] + "AAA"
    routes = "".join(f"Route: <{good}>\r\n" for _ in range(MAX_ROUTE_ENTRIES))
    routes += "".join(f"Route: <{forged}>\r\n" for _ in range(1000))
    CountingHider.examined.clear()
    restored = hider.restore(bye("sip:100@198.51.100.5", [], routes, BIG))
    assert len(CountingHider.examined) == 1 + MAX_ROUTE_ENTRIES  # Request-URI + the cap
    assert restored is not None
    assert [a.uri_text for a in restored.route[:MAX_ROUTE_ENTRIES]] == [RR_EDGE] * MAX_ROUTE_ENTRIES
    one_line = "Route: " + ", ".join([f"<{forged}>"] * 1000) + "\r\n"
    CountingHider.examined.clear()
    assert hider.restore(bye("sip:100@198.51.100.5", [], one_line, BIG)) is None
    assert len(CountingHider.examined) == 2  # the first forged entry ends it


def test_ten_kilobyte_token_is_refused_before_decoding() -> None:
    hider = TopologyHider(SECRET, limits=BIG)
    huge = "A" * 10_240
    assert len(huge) > MAX_TOKEN_CHARS
    assert hider.open(huge) is None
    assert hider.restore(bye(f"sip:1@203.0.113.1;swt={huge}", [], limits=BIG)) is None


def test_hiding_twice_keeps_one_token(hider: TopologyHider) -> None:
    """A gateway on a private address: its own hidden URIs are internal too, but not re-hidden."""
    lan = Endpoint("10.99.0.1", 5060)
    once = hider.hide(message(OK_200), lan)
    assert b"10.99.0.1:5060;ob;swt=" in once.raw
    assert hider.hide(once, lan) is once


def test_unspecified_local_address_is_a_caller_error(hider: TopologyHider) -> None:
    with pytest.raises(ValueError, match="unspecified"):
        hider.hide(message(OK_200), Endpoint("0.0.0.0", 5060))


def test_hidden_message_over_the_limits_is_left_as_it_was() -> None:
    tight = ParseLimits(max_header_line_bytes=80)
    hider = TopologyHider(SECRET, limits=tight)
    msg = message(OK_200)
    assert hider.hide(msg, LOCAL) is msg


# -- property --------------------------------------------------------------------------------------

PRIVATE_V4 = st.sampled_from(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"])
PRIVATE_V6 = st.sampled_from(["fc00::/7", "fe80::/10"])


@st.composite
def internal_hosts(draw: st.DrawFn) -> str:
    net = ipaddress.ip_network(draw(st.one_of(PRIVATE_V4, PRIVATE_V6)))
    offset = draw(st.integers(min_value=0, max_value=net.num_addresses - 1))
    address = net[offset]
    return f"[{address}]" if address.version == 6 else str(address)


@settings(max_examples=200, deadline=None)
@given(
    internal_hosts(),
    st.one_of(st.none(), st.integers(min_value=1, max_value=65535)),
    st.sampled_from([None, "udp", "tcp", "TLS", "sctp", "ws"]),
    st.booleans(),
    st.sampled_from([LOCAL, LOCAL_TCP, LOCAL_V6]),
)
def test_any_internal_address_round_trips(
    host: str, port: int | None, transport: str | None, lr: bool, local: Endpoint
) -> None:
    hider = TopologyHider(SECRET)
    params = (f";transport={transport}" if transport else "") + (";lr" if lr else "")
    original = f"sip:u@{host}{'' if port is None else f':{port}'}{params}"
    hidden = hider.hide_uri(original, local)
    assert hidden is not None
    assert host not in hidden
    assert hider.restore_uri(hidden) == original
