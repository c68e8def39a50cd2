"""The sans-IO stateless proxy core: routing by Via, the stateless branch, Max-Forwards, loops,
rejections and the engine/policy hooks (RFC 3261 §16.11, §18.2, RFC 3581)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwarden.detect import DETECTORS, Engine
from sipwarden.detect.finding import Finding
from sipwarden.detect.observation import Observation
from sipwarden.gateway.proxy import (
    BRANCH_PREFIX,
    STUN_COOKIE,
    ProxyConfig,
    Send,
    StatelessProxy,
    build_response,
    stun_binding_response,
)
from sipwarden.gateway.verdict import Drop, DropReason, Reject, Tarpit, Verdict
from sipwarden.net import Endpoint, Transport
from sipwarden.sip import Request, Response, SipParseError, parse_message

LISTEN = Endpoint("127.0.0.1", 5060)
LISTEN6 = Endpoint("::1", 5060)
UP_LOCAL = Endpoint("127.0.0.1", 40000)
UPSTREAM = Endpoint("127.0.0.1", 5070)
CLIENT = Endpoint("192.0.2.10", 5062)
NOW = 1_700_000_000.0


def config(**kw: object) -> ProxyConfig:
    args: dict[str, object] = {
        "listen": (LISTEN, LISTEN6),
        "upstream": UPSTREAM,
        "upstream_local": UP_LOCAL,
        "secret": b"k" * 32,
    }
    args.update(kw)
    return ProxyConfig(**args)  # type: ignore[arg-type]


def request(
    method: str = "OPTIONS",
    via: str = "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKabc;rport",
    max_forwards: int | None = 70,
    uri: str = "sip:alice@example.net",
    extra: str = "",
    cseq: int = 1,
) -> bytes:
    mf = "" if max_forwards is None else f"Max-Forwards: {max_forwards}\r\n"
    return (
        f"{method} {uri} SIP/2.0\r\nVia: {via}\r\n{mf}"
        "From: <sip:bob@example.net>;tag=f1\r\nTo: <sip:alice@example.net>\r\n"
        f"Call-ID: c1@192.0.2.10\r\nCSeq: {cseq} {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


#: What a phone adds to a request and a response does not copy (keeps answers smaller).
PHONE_HEADERS = (
    "Contact: <sip:bob@192.0.2.10:5062>\r\nUser-Agent: Softphone 1.0\r\n"
    "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
)


def forward(proxy: StatelessProxy, data: bytes, src: Endpoint = CLIENT) -> Request:
    [send] = proxy.on_datagram(data, src, LISTEN, NOW)
    assert (send.dest, send.local) == (UPSTREAM, UP_LOCAL)
    out = parse_message(send.data)
    assert isinstance(out, Request)
    return out


def answer(forwarded: Request, status: int = 200) -> bytes:
    """The upstream's response: every Via copied (it echoes ours on top)."""
    vias = "".join(f"Via: {v}\r\n" for v in forwarded.headers.get_all("via"))
    return (
        f"SIP/2.0 {status} OK\r\n{vias}From: <sip:bob@example.net>;tag=f1\r\n"
        "To: <sip:alice@example.net>;tag=t9\r\nCall-ID: c1@192.0.2.10\r\n"
        f"CSeq: 1 {forwarded.method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


# -- requests toward the upstream -------------------------------------------------------------


def test_request_is_forwarded_with_our_via_received_rport_and_max_forwards() -> None:
    proxy = StatelessProxy(config())
    out = forward(proxy, request())
    ours, client = out.via[0], out.via[1]
    assert (ours.host, ours.port, ours.transport) == ("127.0.0.1", 40000, "UDP")
    assert ours.branch is not None and ours.branch.startswith(BRANCH_PREFIX)
    assert client.branch == "z9hG4bKabc"
    assert (client.received, client.rport) == ("192.0.2.10", "5062")
    assert out.max_forwards == 69
    assert proxy.stats.forwarded_requests == 1 and not proxy.stats.dropped


def test_received_added_when_sent_by_differs_and_untouched_otherwise() -> None:
    proxy = StatelessProxy(config())
    natted = forward(proxy, request(via="SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKn"))
    assert natted.via[1].received == "192.0.2.10" and natted.via[1].rport is None
    direct = request(via="SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKd")
    out = forward(proxy, direct)
    assert out.via[1].params_text == ";branch=z9hG4bKd"


@pytest.mark.parametrize("forged", [";received=198.51.100.99", ";received=198.51.100.99;rport=9"])
def test_a_received_written_by_the_client_is_replaced_so_answers_go_to_the_source(
    forged: str,
) -> None:
    """A client writing received=<victim> into its own Via must not aim the upstream's
    responses at the victim (reflection): the gateway overwrites it with the packet source."""
    proxy = StatelessProxy(config())
    out = forward(proxy, request(via=f"SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKr{forged}"))
    assert out.via[1].received == "192.0.2.10"
    [send] = proxy.on_datagram(answer(out), UPSTREAM, UP_LOCAL, NOW)
    assert send.dest.ip == "192.0.2.10"


def test_clients_whose_branches_collide_get_different_branches_from_us() -> None:
    """The upstream matches transactions by branch and sent-by (RFC 3261 §17.2.3); every
    request we forward has our sent-by, so the previous hop's sent-by and source must enter our
    branch - else phone B's request is taken for a retransmission of phone A's."""
    proxy = StatelessProxy(config())
    a = forward(proxy, request(via="SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1"))
    b = forward(proxy, request(via="SIP/2.0/UDP 192.0.2.11:5062;branch=z9hG4bK1"))
    # Two phones behind different NATs with the same private sent-by.
    natted = "SIP/2.0/UDP 192.168.1.10:5060;branch=z9hG4bK1;rport"
    c = forward(proxy, request(via=natted), src=Endpoint("198.51.100.1", 1024))
    d = forward(proxy, request(via=natted), src=Endpoint("198.51.100.2", 1024))
    assert len({m.via[0].branch for m in (a, b, c, d)}) == 4
    # Each response still routes back to its own phone.
    [to_d] = proxy.on_datagram(answer(d), UPSTREAM, UP_LOCAL, NOW)
    assert to_d.dest == Endpoint("198.51.100.2", 1024)


def test_missing_max_forwards_gets_70() -> None:
    out = forward(StatelessProxy(config()), request(max_forwards=None))
    assert out.max_forwards == 70


def test_branch_is_stable_for_retransmissions_and_cancel_and_differs_otherwise() -> None:
    proxy = StatelessProxy(config())
    invite = forward(proxy, request("INVITE")).via[0].branch
    again = forward(proxy, request("INVITE")).via[0].branch
    cancel = forward(proxy, request("CANCEL")).via[0].branch
    other = (
        forward(proxy, request("INVITE", via="SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKother"))
        .via[0]
        .branch
    )
    assert invite == again == cancel
    assert other != invite


def test_rfc2543_peer_without_cookie_gets_a_stable_branch_from_the_transaction() -> None:
    proxy = StatelessProxy(config())
    old = "SIP/2.0/UDP 192.0.2.10:5062"
    first = forward(proxy, request(via=old)).via[0].branch
    assert first == forward(proxy, request(via=old)).via[0].branch
    assert first != forward(proxy, request(via=old, cseq=2)).via[0].branch


def test_max_forwards_zero_is_answered_483_to_the_packet_source() -> None:
    proxy = StatelessProxy(config())
    [send] = proxy.on_datagram(request(max_forwards=0), CLIENT, LISTEN, NOW)
    assert (send.dest, send.local) == (CLIENT, LISTEN)
    response = parse_message(send.data)
    assert isinstance(response, Response) and response.status == 483
    assert response.to is not None and response.to.tag
    assert response.headers.get_all("via") == [
        "SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKabc;rport"
    ]
    assert proxy.stats.dropped == {DropReason.TOO_MANY_HOPS: 1}
    assert proxy.stats.rejected == {(483, DropReason.TOO_MANY_HOPS): 1}


def test_max_forwards_one_is_forwarded_with_zero() -> None:
    assert forward(StatelessProxy(config()), request(max_forwards=1)).max_forwards == 0


def test_ack_with_max_forwards_zero_is_dropped_not_answered() -> None:
    proxy = StatelessProxy(config())
    assert proxy.on_datagram(request("ACK", max_forwards=0), CLIENT, LISTEN, NOW) == []
    assert proxy.stats.dropped == {DropReason.TOO_MANY_HOPS: 1}


def _back_through_us(forwarded: Request, uri: str | None = None) -> bytes:
    """The core sending ``forwarded`` back to our listen address (its own Via on top),
    unchanged (a loop) or retargeted to ``uri`` (a spiral)."""
    raw = forwarded.raw.decode()
    if uri is not None:
        raw = raw.replace(forwarded.uri, uri, 1)
    head, _, rest = raw.partition("\r\n")
    return f"{head}\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKcore1\r\n{rest}".encode()


def test_request_that_comes_back_unchanged_is_a_loop() -> None:
    proxy = StatelessProxy(config())
    once = forward(proxy, request())
    [send] = proxy.on_datagram(_back_through_us(once), UPSTREAM, LISTEN, NOW)
    response = parse_message(send.data)
    assert isinstance(response, Response) and response.status == 482
    assert send.dest == UPSTREAM  # to the packet's source
    assert proxy.stats.dropped == {DropReason.LOOP: 1}


def test_spiral_through_us_is_not_a_loop() -> None:
    """RFC 3261 §16.3 step 4: the core retargeted the request (new Request-URI) back through
    the gateway - a spiral, forwarded, not answered 482."""
    proxy = StatelessProxy(config())
    once = forward(proxy, request())
    twice = forward(proxy, _back_through_us(once, "sip:voicemail@example.net"), src=UPSTREAM)
    assert twice.uri == "sip:voicemail@example.net"
    assert proxy.stats.dropped == {}
    # ... and the spiralled copy coming back unchanged is a loop.
    [send] = proxy.on_datagram(_back_through_us(twice), UPSTREAM, LISTEN, NOW)
    response = parse_message(send.data)
    assert isinstance(response, Response) and response.status == 482


def test_forged_via_of_ours_without_our_loop_digest_is_not_a_loop() -> None:
    proxy = StatelessProxy(config())
    looped = (
        f"SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKx, "
        f"SIP/2.0/UDP 127.0.0.1:40000;branch={BRANCH_PREFIX}0xdeadbeef.0123456789abcdef"
    )
    forward(proxy, request(via=looped))
    assert proxy.stats.dropped == {}


def test_cancel_and_non_2xx_ack_keep_the_invite_branch_and_loop_digest() -> None:
    proxy = StatelessProxy(config())
    invite = forward(proxy, request("INVITE"))
    cancel = forward(proxy, request("CANCEL"))
    ack = forward(
        proxy,
        request("ACK").replace(
            b"<sip:alice@example.net>\r\n", b"<sip:alice@example.net>;tag=t9\r\n"
        ),
    )
    assert invite.via[0].branch == cancel.via[0].branch == ack.via[0].branch


def test_rejection_never_larger_than_the_request() -> None:
    """No amplification toward a (possibly spoofed) source: compact headers expand, a To tag
    and Retry-After are added - such an answer is not sent, only counted."""
    compact = (
        b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
        b"f: <sip:c@d>;tag=1\r\nt: <sip:a@b>\r\ni: x\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"
    )
    policy = fixed(Reject(503, DropReason.OVERLOAD, 30))
    proxy = StatelessProxy(config(), policy=policy)  # type: ignore[arg-type]
    assert proxy.on_datagram(compact, CLIENT, LISTEN, NOW) == []
    assert proxy.stats.answers_suppressed == 1
    assert proxy.stats.dropped == {DropReason.OVERLOAD: 1}
    assert proxy.stats.rejected == {}
    # A phone's request (User-Agent, Contact, Allow ... not copied) is answered.
    phone = request(extra=PHONE_HEADERS)
    [send] = proxy.on_datagram(phone, CLIENT, LISTEN, NOW)
    assert len(send.data) <= len(phone)


def test_405_carries_allow() -> None:
    from sipwarden.gateway.enforcer import Enforcer
    from sipwarden.gateway.policy import Policy

    proxy = StatelessProxy(config(), policy=Enforcer(Policy()))
    [send] = proxy.on_datagram(
        request("FOO", extra="X-Pad: " + "p" * 300 + "\r\n"), CLIENT, LISTEN, NOW
    )
    response = parse_message(send.data)
    assert isinstance(response, Response) and response.status == 405
    assert "INVITE" in (response.headers.get("allow") or "")


def test_unparsable_is_dropped_and_keepalive_ignored() -> None:
    proxy = StatelessProxy(config())
    assert proxy.on_datagram(b"\x00\x01garbage", CLIENT, LISTEN, NOW) == []
    assert proxy.on_datagram(b"\r\n\r\n", CLIENT, LISTEN, NOW) == []
    assert proxy.stats.dropped == {DropReason.MALFORMED: 1}


# -- responses from the upstream --------------------------------------------------------------


def test_response_is_routed_back_by_via_to_received_and_rport() -> None:
    proxy = StatelessProxy(config())
    forwarded = forward(proxy, request(via="SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKn;rport"))
    [send] = proxy.on_datagram(answer(forwarded), UPSTREAM, UP_LOCAL, NOW)
    assert send.dest == CLIENT and send.local == LISTEN
    response = parse_message(send.data)
    assert isinstance(response, Response)
    assert [v.branch for v in response.via] == ["z9hG4bKn"]
    assert proxy.stats.forwarded_responses == 1


def test_response_without_rport_goes_to_sent_by_port() -> None:
    proxy = StatelessProxy(config())
    forwarded = forward(proxy, request(via="SIP/2.0/UDP 192.0.2.10:5099;branch=z9hG4bKq"))
    [send] = proxy.on_datagram(answer(forwarded), UPSTREAM, UP_LOCAL, NOW)
    assert send.dest == Endpoint("192.0.2.10", 5099)


@given(st.text(alphabet="0123456789abcdefx", min_size=1, max_size=24))
def test_forged_branch_is_never_routed(suffix: str) -> None:
    proxy = StatelessProxy(config())
    forwarded = forward(proxy, request())
    real = forwarded.via[0].branch
    assert real is not None
    fake = BRANCH_PREFIX + suffix
    if fake == real:
        return
    data = answer(forwarded).replace(real.encode(), fake.encode())
    assert proxy.on_datagram(data, UPSTREAM, UP_LOCAL, NOW) == []
    assert proxy.stats.dropped == {DropReason.NO_ROUTE: 1}


def test_response_whose_top_via_is_not_ours_is_dropped() -> None:
    proxy = StatelessProxy(config())
    forged = answer(parse_message(request()))  # type: ignore[arg-type]
    assert proxy.on_datagram(forged, UPSTREAM, UP_LOCAL, NOW) == []
    assert proxy.stats.dropped == {DropReason.NO_ROUTE: 1}


def test_datagram_on_upstream_socket_from_elsewhere_is_dropped() -> None:
    proxy = StatelessProxy(config())
    forwarded = forward(proxy, request())
    assert proxy.on_datagram(answer(forwarded), CLIENT, UP_LOCAL, NOW) == []
    assert proxy.stats.dropped == {DropReason.NO_ROUTE: 1}


# -- requests from the upstream toward clients ------------------------------------------------


def bye_from_core(uri: str = "sip:alice@192.0.2.10:5062") -> bytes:
    return request("BYE", via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKcore1", uri=uri)


def test_request_from_upstream_goes_to_request_uri_and_its_response_comes_back() -> None:
    proxy = StatelessProxy(config())
    [send] = proxy.on_datagram(bye_from_core(), UPSTREAM, UP_LOCAL, NOW)
    assert (send.dest, send.local) == (CLIENT, LISTEN)
    bye = parse_message(send.data)
    assert isinstance(bye, Request)
    assert (bye.via[0].host, bye.via[0].port) == ("127.0.0.1", 5060)
    [back] = proxy.on_datagram(answer(bye), CLIENT, LISTEN, NOW)
    assert (back.dest, back.local) == (UPSTREAM, UP_LOCAL)
    response = parse_message(back.data)
    assert isinstance(response, Response)
    assert [v.branch for v in response.via] == ["z9hG4bKcore1"]


@pytest.mark.parametrize(
    "uri",
    ["sip:alice@client.example.net", "sips:alice@192.0.2.10", "sip:a@192.0.2.10;transport=tcp"],
)
def test_request_from_upstream_without_udp_ip_literal_is_not_routed(uri: str) -> None:
    proxy = StatelessProxy(config())
    assert proxy.on_datagram(bye_from_core(uri), UPSTREAM, UP_LOCAL, NOW) == []
    assert proxy.stats.dropped == {DropReason.NO_ROUTE: 1}


def test_ipv6_client_round_trip() -> None:
    proxy = StatelessProxy(config())
    client6 = Endpoint("2001:db8::10", 5062)
    data = request(via="SIP/2.0/UDP [2001:db8::10]:5062;branch=z9hG4bK6;rport")
    [send] = proxy.on_datagram(data, client6, LISTEN6, NOW)
    forwarded = parse_message(send.data)
    assert isinstance(forwarded, Request)
    assert forwarded.via[1].rport == "5062"
    [back] = proxy.on_datagram(answer(forwarded), UPSTREAM, UP_LOCAL, NOW)
    assert (back.dest, back.local) == (client6, LISTEN6)
    [bye] = proxy.on_datagram(
        bye_from_core("sip:alice@[2001:db8::10]:5062"), UPSTREAM, UP_LOCAL, NOW
    )
    assert (bye.dest, bye.local) == (client6, LISTEN6)
    assert b"Via: SIP/2.0/UDP [::1]:5060;branch=" in bye.data


# -- policy and engine hooks -------------------------------------------------------------------


def fixed(verdict: Verdict) -> object:
    def policy(obs: Observation, now: float, findings: Sequence[Finding], raw: bytes) -> Verdict:
        return verdict

    return policy


def test_policy_reject_answers_with_status_and_retry_after() -> None:
    proxy = StatelessProxy(config(), policy=fixed(Reject(503, DropReason.OVERLOAD, 30)))  # type: ignore[arg-type]
    [send] = proxy.on_datagram(request(extra=PHONE_HEADERS), CLIENT, LISTEN, NOW)
    response = parse_message(send.data)
    assert isinstance(response, Response) and response.status == 503
    assert response.headers.get("retry-after") == "30"
    assert proxy.stats.dropped == {DropReason.OVERLOAD: 1}


@pytest.mark.parametrize("verdict", [Drop(DropReason.SCANNER), Tarpit(DropReason.SCANNER, 5.0)])
def test_policy_drop_and_tarpit_send_nothing_and_count(verdict: Verdict) -> None:
    proxy = StatelessProxy(config(), policy=fixed(verdict))  # type: ignore[arg-type]
    assert proxy.on_datagram(request(), CLIENT, LISTEN, NOW) == []
    assert proxy.stats.dropped == {DropReason.SCANNER: 1}


def test_policy_is_not_applied_to_the_upstream() -> None:
    proxy = StatelessProxy(config(), policy=fixed(Drop(DropReason.SCANNER)))  # type: ignore[arg-type]
    assert len(proxy.on_datagram(bye_from_core(), UPSTREAM, UP_LOCAL, NOW)) == 1


def raising(*args: object) -> Verdict:
    raise RuntimeError("bug")


@pytest.mark.parametrize("fail_open", [False, True])
def test_policy_or_engine_error_fails_closed_unless_configured(fail_open: bool) -> None:
    class Broken(Engine):
        def observe(self, obs: Observation) -> None:
            raise RuntimeError("bug")

    for proxy in (
        StatelessProxy(config(fail_open=fail_open), policy=raising),
        StatelessProxy(config(fail_open=fail_open), engine=Broken([])),
    ):
        sent = proxy.on_datagram(request(), CLIENT, LISTEN, NOW)
        assert proxy.stats.engine_errors == 1  # counted whether failing open or closed
        if fail_open:
            assert len(sent) == 1 and not proxy.stats.dropped
        else:
            assert sent == [] and proxy.stats.dropped == {DropReason.ENGINE_ERROR: 1}


def scanner_options(n: int) -> bytes:
    return request(
        via=f"SIP/2.0/UDP 192.0.2.66:5060;branch=z9hG4bKscan{n};rport",
        extra="User-Agent: friendly-scanner\r\n",
    )


def test_real_engine_and_policy_drop_a_scanner_and_ban_it() -> None:
    from sipwarden.gateway.enforcer import Enforcer
    from sipwarden.gateway.policy import Policy

    engine = Engine([cls() for cls in DETECTORS.values()])
    enforcer = Enforcer(Policy())
    proxy = StatelessProxy(config(), engine=engine, policy=enforcer)
    scanner = Endpoint("192.0.2.66", 5060)
    sent = [proxy.on_datagram(scanner_options(i), scanner, LISTEN, NOW + i) for i in range(3)]
    assert sent == [[], [], []]
    assert proxy.stats.forwarded_requests == 0
    assert proxy.stats.dropped == {DropReason.SCANNER: 1, DropReason.BLOCKLISTED: 2}
    [ban] = enforcer.recent  # banned once, not once per packet
    assert (ban.ip, ban.reason, ban.repeat) == ("192.0.2.66", "recon.scanner_user_agent", 0)
    assert any(f.detector.startswith("recon.") for f in engine.findings())
    # A legitimate client is still forwarded.
    assert len(proxy.on_datagram(request(), CLIENT, LISTEN, NOW + 5)) == 1
    proxy.advance(NOW + 10)


# -- build_response ----------------------------------------------------------------------------


@given(status=st.sampled_from([400, 403, 405, 413, 482, 483, 503]), tagged=st.booleans())
def test_build_response_parses_and_copies_the_transaction_headers(
    status: int, tagged: bool
) -> None:
    to = "<sip:alice@example.net>" + (";tag=theirs" if tagged else "")
    req = parse_message(request().replace(b"To: <sip:alice@example.net>", f"To: {to}".encode()))
    assert isinstance(req, Request)
    response = parse_message(build_response(req, status, to_tag="ours"))
    assert isinstance(response, Response) and response.status == status
    assert response.call_id == req.call_id and response.cseq == req.cseq
    assert response.headers.get_all("via") == req.headers.get_all("via")
    assert response.to is not None and response.to.tag == ("theirs" if tagged else "ours")


def test_send_is_a_plain_tuple() -> None:
    assert Send(b"x", CLIENT, LISTEN).dest == CLIENT


# -- hostile input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        request(via="garbage here"),
        request().replace(b"Max-Forwards: 70", b"Max-Forwards: abc"),
    ],
)
def test_malformed_routing_headers_are_dropped_not_raised(data: bytes) -> None:
    proxy = StatelessProxy(config())
    assert proxy.on_datagram(data, CLIENT, LISTEN, NOW) == []
    assert proxy.stats.dropped == {DropReason.MALFORMED: 1}


def test_reject_of_a_request_with_a_malformed_to_is_a_drop() -> None:
    # A stateless proxy forwards without reading To; answering needs it (the tag).
    data = request().replace(b"To: <sip:alice@example.net>", b"To: <<<")
    proxy = StatelessProxy(config(), policy=fixed(Reject(403, DropReason.INJECTION)))  # type: ignore[arg-type]
    assert proxy.on_datagram(data, CLIENT, LISTEN, NOW) == []
    assert proxy.stats.dropped == {DropReason.INJECTION: 1}  # counted once, by its verdict
    assert not proxy.stats.rejected


def test_request_from_upstream_at_max_forwards_zero_is_answered_483_to_the_upstream() -> None:
    proxy = StatelessProxy(config())
    data = bye_from_core().replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    [send] = proxy.on_datagram(data, UPSTREAM, UP_LOCAL, NOW)
    assert (send.dest, send.local) == (UPSTREAM, UP_LOCAL)
    assert send.data.startswith(b"SIP/2.0 483 ")


_SAMPLES = [request(), request("INVITE"), bye_from_core()]


@given(
    sample=st.sampled_from(_SAMPLES),
    cut=st.integers(0, 400),
    junk=st.binary(max_size=40),
    from_upstream=st.booleans(),
)
def test_any_mutation_yields_actions_or_a_counted_drop(
    sample: bytes, cut: int, junk: bytes, from_upstream: bool
) -> None:
    """The proxy never raises, and a message it does not send on is counted exactly once
    (a rejection sends a response and counts its reason)."""
    proxy = StatelessProxy(config())
    data = sample[:cut] + junk + sample[cut + len(junk) :]
    src, local = (UPSTREAM, UP_LOCAL) if from_upstream else (CLIENT, LISTEN)
    sent = proxy.on_datagram(data, src, local, NOW)
    stats = proxy.stats
    keepalive = data.strip(b"\r\n") == b""
    dropped = sum(stats.dropped.values())
    assert dropped <= 1
    assert dropped == 1 or sent or keepalive
    assert all(isinstance(s, Send) for s in sent)


def test_outgoing_edit_applies_only_to_messages_toward_the_untrusted_side() -> None:
    from sipwarden.gateway.sanitize import Sanitizer

    proxy = StatelessProxy(config(), outgoing=Sanitizer().outgoing)
    forwarded = forward(proxy, request(extra="User-Agent: Phone 1.2.3\r\n"))
    assert forwarded.headers.get("user-agent") == "Phone 1.2.3"  # inbound: untouched
    reply = answer(forwarded).replace(
        b"Content-Length", b"Server: kamailio (5.6.3)\r\nContent-Length"
    )
    [send] = proxy.on_datagram(reply, UPSTREAM, UP_LOCAL, NOW)
    assert b"5.6.3" not in send.data


_HOP_A = "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport"
_HOP_B = "SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKb"


@pytest.mark.parametrize(
    "via_lines",
    [
        f"Via: {_HOP_A}, {_HOP_B}",
        f"Via: {_HOP_A}\r\n ,{_HOP_B}",
        f"v: {_HOP_A}\nVia: {_HOP_B}",
    ],
    ids=["two-hops-one-line", "folded", "compact-and-lf"],
)
def test_top_hop_marked_and_other_hops_kept(via_lines: str) -> None:
    data = request().replace(
        b"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bKabc;rport", via_lines.encode()
    )
    out = forward(StatelessProxy(config()), data)
    assert [v.branch for v in out.via][1:] == ["z9hG4bKa", "z9hG4bKb"]
    assert (out.via[1].received, out.via[1].rport) == ("192.0.2.10", "5062")
    assert out.via[2].received is None
    assert out.max_forwards == 69


# -- hostile input through the full stack (engine + policy + sanitizer) ------------------------


def _full_stack(**policy_kw: object) -> tuple[StatelessProxy, object]:
    from sipwarden.gateway.enforcer import Enforcer
    from sipwarden.gateway.policy import Policy, PolicyConfig
    from sipwarden.gateway.sanitize import Sanitizer

    engine = Engine([cls() for cls in DETECTORS.values()])
    enforcer = Enforcer(Policy(PolicyConfig(**policy_kw)))  # type: ignore[arg-type]
    sanitizer = Sanitizer(secret=b"k" * 32)
    proxy = StatelessProxy(
        config(),
        engine=engine,
        policy=enforcer,
        outgoing=sanitizer.outgoing,
        incoming=sanitizer.incoming,
    )
    return proxy, enforcer


HOSTILE = [
    b"\xff\xfe\x00garbage",
    b"x" * 65_507,
    request(extra="X: " + "a" * 65_000 + "\r\n"),
    request(via="SIP/2.0/UDP 192.0.2.10:5062"),  # no branch
    request(via=", ".join(["SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK1"] * 3000)),
    request().replace(b"alice", "äl\udcffice".encode("utf-8", "surrogateescape")),
    request(via="SIP/2.0/UDP [::1:5062;branch=z9hG4bK1;rport=x"),
    request(max_forwards=None).replace(b"Via:", b"Max-Forwards: -1\r\nVia:"),
]


@pytest.mark.parametrize("data", HOSTILE)
@pytest.mark.parametrize("from_upstream", [False, True])
def test_hostile_datagrams_never_raise_through_the_full_stack(
    data: bytes, from_upstream: bool
) -> None:
    proxy, _ = _full_stack()
    src, local = (UPSTREAM, UP_LOCAL) if from_upstream else (CLIENT, LISTEN)
    for i in range(3):
        sent = proxy.on_datagram(data, src, local, NOW + i)
        for s in sent:
            if s.dest == src:  # an answer to the sender: never an amplifier
                assert len(s.data) <= len(data)
    proxy.advance(NOW + 100)


@given(data=st.binary(max_size=2000))
def test_random_bytes_never_raise_through_the_full_stack(data: bytes) -> None:
    proxy, _ = _full_stack()
    for s in proxy.on_datagram(data, CLIENT, LISTEN, NOW):
        assert s.dest != CLIENT or len(s.data) <= len(data)


def test_spoofed_trusted_peer_is_never_banned_and_spoofed_flood_bans_are_bounded() -> None:
    from sipwarden.gateway.enforcer import Enforcer
    from sipwarden.gateway.policy import Policy, PolicyConfig
    from sipwarden.store.base import BlocklistSettings
    from sipwarden.store.memory import MemoryBlocklistStore

    trunk = Endpoint("198.51.100.7", 5060)
    engine = Engine([cls() for cls in DETECTORS.values()])
    store = MemoryBlocklistStore(BlocklistSettings(max_entries=10))
    enforcer = Enforcer(Policy(PolicyConfig(trusted_peers=("198.51.100.0/24",))), store)
    proxy = StatelessProxy(config(), engine=engine, policy=enforcer)
    # A scanner spoofing the trunk's address: its requests are dropped, the trunk is not banned.
    for i in range(5):
        proxy.on_datagram(scanner_options(i), trunk, LISTEN, NOW + i)
    assert not enforcer.is_blocked(trunk.ip, NOW + 5)
    # A flood of spoofed scanner sources: the ban table stays within its bound, refusals counted.
    for i in range(50):
        src = Endpoint(f"203.0.113.{i + 1}", 5060)
        proxy.on_datagram(scanner_options(i), src, LISTEN, NOW + 10)
    assert len(store.list(NOW + 10)) <= 10
    assert enforcer.bans_refused + store.evictions() >= 40


def stun_request(transaction: bytes = b"t" * 12) -> bytes:
    return b"\x00\x01\x00\x00" + STUN_COOKIE + transaction


def test_stun_keepalive_answered_only_on_a_known_flow_and_at_most_once_a_second() -> None:
    """RFC 5626 §4.4.2 over UDP: a flow that sent a request gets a Binding response naming
    its address (XOR-MAPPED-ADDRESS, RFC 5389 §15.2); an unknown source gets nothing (the
    answer is larger than the request: no amplifier for spoofed sources)."""
    proxy = StatelessProxy(config())
    assert proxy.on_datagram(stun_request(), CLIENT, LISTEN, NOW) == []
    assert proxy.stats.dropped[DropReason.NO_ROUTE] == 1
    forward(proxy, request())
    [send] = proxy.on_datagram(stun_request(), CLIENT, LISTEN, NOW + 30)
    assert send.dest == CLIENT and send.local == LISTEN
    answer = send.data
    assert answer[:2] == b"\x01\x01" and answer[4:20] == STUN_COOKIE + b"t" * 12
    attr = answer[20:]
    assert attr[:2] == b"\x00\x20" and attr[5] == 1
    port = int.from_bytes(attr[6:8], "big") ^ 0x2112
    ip = bytes(a ^ b for a, b in zip(attr[8:12], STUN_COOKIE, strict=True))
    assert (ipaddress.ip_address(ip), port) == (ipaddress.ip_address(CLIENT.ip), CLIENT.port)
    assert proxy.on_datagram(stun_request(), CLIENT, LISTEN, NOW + 30.5) == []
    assert len(proxy.on_datagram(stun_request(), CLIENT, LISTEN, NOW + 32)) == 1
    assert proxy.stats.keepalives_answered == 2
    assert proxy.state_size() == 1
    # The flow is forgotten flow_ttl_s after its last request.
    assert proxy.on_datagram(stun_request(), CLIENT, LISTEN, NOW + 400) == []


def test_stun_response_for_ipv6_and_refusals() -> None:
    src = Endpoint("2001:db8::5", 5062)
    transaction = bytes(range(12))
    answer = stun_binding_response(stun_request(transaction), src)
    assert answer is not None and answer[25] == 2
    key = STUN_COOKIE + transaction
    ip = bytes(a ^ b for a, b in zip(answer[28:44], key, strict=True))
    assert ipaddress.ip_address(ip) == ipaddress.ip_address(src.ip)
    # Not a Binding request, a length that lies, a response: no answer.
    assert stun_binding_response(b"\x01\x01\x00\x00" + STUN_COOKIE + transaction, src) is None
    assert stun_binding_response(b"\x00\x01\x00\x08" + STUN_COOKIE + transaction, src) is None
    assert stun_binding_response(b"\x00\x01\x00\x00" + STUN_COOKIE[:3], src) is None


def test_topology_hidden_going_out_and_restored_coming_in() -> None:
    """The core's private Contact and Record-Route leave as the gateway's address with a
    token; the client's in-dialog request carries them back and the core gets its own
    addresses; a forged token is dropped and counted."""
    from sipwarden.gateway.sanitize import Sanitizer

    sanitizer = Sanitizer(secret=b"k" * 32)
    proxy = StatelessProxy(config(), outgoing=sanitizer.outgoing, incoming=sanitizer.incoming)
    forwarded = forward(proxy, request("INVITE"))
    ok = answer(forwarded).replace(
        b"Content-Length: 0",
        b"Contact: <sip:core@10.0.0.5:5080>\r\nRecord-Route: <sip:10.0.0.6;lr>\r\n"
        b"Content-Length: 0",
    )
    [send] = proxy.on_datagram(ok, UPSTREAM, UP_LOCAL, NOW)
    assert send.dest == CLIENT
    out = parse_message(send.data)
    assert isinstance(out, Response)
    assert b"10.0.0." not in send.data
    contact = out.headers.get("contact") or ""
    route = out.headers.get("record-route") or ""
    assert "127.0.0.1:5060" in contact and ";swt=" in contact
    assert "127.0.0.1:5060" in route and ";lr" in route
    target = contact.strip("<>")
    bye = request("BYE", uri=target, extra=f"Route: {route}\r\n", cseq=2)
    restored = forward(proxy, bye)
    assert restored.uri == "sip:core@10.0.0.5:5080"
    assert restored.headers.get("route") == "<sip:10.0.0.6;lr>"
    forged = bye.replace(b";swt=", b";swt=A", 1)
    assert proxy.on_datagram(forged, CLIENT, LISTEN, NOW) == []
    assert proxy.stats.dropped[DropReason.TOPOLOGY_TOKEN] == 1


def test_upstream_401s_to_a_guesser_ban_it() -> None:
    """The credential detectors read the upstream's answers: each 401 is observed as it leaves
    toward the guesser (our Via popped), so it matches the guess; the finding it raises bans
    the guesser, whose next request is dropped."""
    proxy, enforcer = _full_stack()
    guesser = Endpoint("192.0.2.66", 5062)
    for n in range(12):
        auth = (
            'Authorization: Digest username="alice", realm="example.net", '
            f'nonce="n{n}", uri="sip:example.net", response="{n:032x}"\r\n'
        )
        data = request(
            "REGISTER",
            via=f"SIP/2.0/UDP 192.0.2.66:5062;branch=z9hG4bKg{n};rport",
            uri="sip:example.net",
            extra=auth + "Contact: <sip:alice@192.0.2.66:5062>\r\nUser-Agent: Zoiper 5\r\n",
            cseq=n + 1,
        )
        sends = proxy.on_datagram(data, guesser, LISTEN, NOW + n)
        if not sends:
            break
        [send] = sends
        forwarded = parse_message(send.data)
        assert isinstance(forwarded, Request)
        [back] = proxy.on_datagram(answer(forwarded, 401), UPSTREAM, UP_LOCAL, NOW + n + 0.1)
        assert back.dest == guesser
    assert enforcer.is_blocked(guesser.ip, NOW + n)  # type: ignore[attr-defined]
    assert any(b.ip == guesser.ip for b in enforcer.recent)  # type: ignore[attr-defined]
    assert proxy.stats.dropped[DropReason.BLOCKLISTED] >= 1


def test_gateway_stays_on_the_path_of_dialogs_and_registrations() -> None:
    """Record-Route on a dialog-creating request, Path on a REGISTER, both naming the client's
    flow; each side sees an address of ours it can reach (double record-routing); the core's
    later requests come back along them and reach the client's flow whatever the Request-URI
    says; our own Route entries are removed (RFC 3261 §16.4)."""
    proxy = StatelessProxy(config())
    invite = forward(proxy, request("INVITE"))
    [ours] = invite.headers.get_all("record-route")
    assert ours.startswith("<sip:127.0.0.1:40000;lr;swf=")
    register = forward(proxy, request("REGISTER", cseq=2))
    assert (register.headers.get("path") or "").startswith("<sip:127.0.0.1:40000;lr;swf=")
    assert register.headers.get("record-route") is None
    assert forward(proxy, request("OPTIONS", cseq=3)).headers.get("record-route") is None
    in_dialog = request("INVITE", cseq=4).replace(
        b"To: <sip:alice@example.net>", b"To: <sip:alice@example.net>;tag=t9"
    )
    assert forward(proxy, in_dialog).headers.get("record-route") is None

    # The 2xx goes back with the core's entry and ours, ours now on the client's side.
    ok = answer(invite).replace(
        b"Content-Length: 0",
        f"Record-Route: <sip:10.0.0.6;lr>, {ours}\r\nContent-Length: 0".encode(),
    )
    [send] = proxy.on_datagram(ok, UPSTREAM, UP_LOCAL, NOW)
    out = parse_message(send.data)
    assert isinstance(out, Response)
    client_side = ours.replace("127.0.0.1:40000", "127.0.0.1:5060")
    assert out.headers.get("record-route") == f"<sip:10.0.0.6;lr>, {client_side}"

    # The client's BYE: route set = reversed Record-Route; our entry is removed on the way.
    bye = request("BYE", uri="sip:core@10.0.0.5", cseq=5,
                  extra=f"Route: {client_side}, <sip:10.0.0.6;lr>\r\n")  # fmt: skip
    assert forward(proxy, bye).headers.get_all("route") == ["<sip:10.0.0.6;lr>"]

    # The core's BYE to the client: along our entry, to the client's flow (not the URI).
    core_bye = (
        "BYE sip:bob@198.51.100.99:5999 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKcorebye\r\nMax-Forwards: 70\r\n"
        f"Route: {ours}\r\nFrom: <sip:alice@example.net>;tag=t9\r\n"
        "To: <sip:bob@example.net>;tag=f1\r\nCall-ID: c1@192.0.2.10\r\nCSeq: 7 BYE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    [down] = proxy.on_datagram(core_bye, UPSTREAM, UP_LOCAL, NOW)
    assert (down.dest, down.local) == (CLIENT, LISTEN)
    sent = parse_message(down.data)
    assert isinstance(sent, Request) and sent.headers.get("route") is None
    # A forged flow token routes nowhere.
    forged = core_bye.replace(b";swf=", b";swf=A")
    assert proxy.on_datagram(forged, UPSTREAM, UP_LOCAL, NOW) == []


def test_call_from_the_core_to_a_registered_client_follows_its_path() -> None:
    """The registrar sends an INVITE along the Path of the client's REGISTER: it reaches the
    client's flow with our Record-Route (client side); the client's 2xx goes back with that
    entry swapped to our upstream side, so the core's in-dialog requests come to us too."""
    proxy = StatelessProxy(config())
    path = forward(proxy, request("REGISTER")).headers.get("path") or ""
    invite = (
        "INVITE sip:bob@192.0.2.10:7777 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKcoreinv\r\nMax-Forwards: 70\r\n"
        f"Route: {path}\r\nRecord-Route: <sip:10.0.0.6;lr>\r\n"
        "From: <sip:carol@example.net>;tag=c1\r\nTo: <sip:bob@example.net>\r\n"
        "Call-ID: incoming@core\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@10.0.0.9>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    [down] = proxy.on_datagram(invite, UPSTREAM, UP_LOCAL, NOW)
    assert down.dest == CLIENT  # the REGISTER's flow, not the Request-URI's port 7777
    sent = parse_message(down.data)
    assert isinstance(sent, Request)
    ours = sent.headers.get_all("record-route")[0]
    assert ours.startswith("<sip:127.0.0.1:5060;lr;swf=")
    vias = "".join(f"Via: {v}\r\n" for v in sent.headers.get_all("via"))
    ok = (
        f"SIP/2.0 200 OK\r\n{vias}Record-Route: {ours}, <sip:10.0.0.6;lr>\r\n"
        "From: <sip:carol@example.net>;tag=c1\r\nTo: <sip:bob@example.net>;tag=b1\r\n"
        "Call-ID: incoming@core\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    [up] = proxy.on_datagram(ok, CLIENT, LISTEN, NOW)
    assert (up.dest, up.local) == (UPSTREAM, UP_LOCAL)
    back = parse_message(up.data)
    assert isinstance(back, Response)
    assert (back.headers.get("record-route") or "").startswith("<sip:127.0.0.1:40000;lr;swf=")


# -- review fixes: the upstream is never banned, no relay through a bare entry, Path modes,
# -- SIPS entries, NAT without rport, keep-alives not counted as messages


def test_the_upstream_is_never_banned_for_what_it_relays() -> None:
    proxy, enforcer = _full_stack()
    bad = b"INVITE sip:bob@192.0.2.10 SIP/2.0\r\nVia: \x00\r\n\r\n"
    for n in range(40):
        proxy.on_datagram(bad + b"X" * n, UPSTREAM, UP_LOCAL, NOW + n * 0.1)
    proxy.on_framing_error(SipParseError("framing_error", 0, "x"), UPSTREAM, UP_LOCAL, NOW, 9)
    assert not enforcer.is_blocked(UPSTREAM.ip, NOW + 5)  # type: ignore[attr-defined]
    assert proxy.stats.dropped[DropReason.MALFORMED] >= 40


def test_a_bare_entry_of_ours_or_a_hostile_request_uri_routes_nowhere() -> None:
    proxy = StatelessProxy(config())

    def core_request(uri: str, route: str = "") -> bytes:
        return (
            f"BYE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKc{len(uri)}\r\n"
            f"{route}From: <sip:a@example.net>;tag=1\r\nTo: <sip:b@example.net>;tag=2\r\n"
            "Call-ID: relay\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        ).encode()

    bare = core_request("sip:x@198.51.100.99:5060", "Route: <sip:127.0.0.1:40000;lr>\r\n")
    assert proxy.on_datagram(bare, UPSTREAM, UP_LOCAL, NOW) == []
    for uri in ("sip:x@239.1.2.3", "sip:x@0.0.0.0", "sip:x@127.0.0.1:5070", "sip:x@[ff02::1]"):
        assert proxy.on_datagram(core_request(uri), UPSTREAM, UP_LOCAL, NOW) == [], uri
    assert proxy.stats.dropped[DropReason.NO_ROUTE] == 5
    [ok] = proxy.on_datagram(core_request("sip:x@198.51.100.99:5060"), UPSTREAM, UP_LOCAL, NOW)
    assert ok.dest == Endpoint("198.51.100.99", 5060)


@pytest.mark.parametrize(
    ("mode", "supported", "expected"),
    [
        ("always", "", True),
        ("if_supported", "", False),
        ("if_supported", "Supported: timer, path\r\n", True),
        ("never", "Supported: path\r\n", False),
    ],
)
def test_path_modes(mode: str, supported: str, expected: bool) -> None:
    proxy = StatelessProxy(config(path=mode))
    out = forward(proxy, request("REGISTER", extra=supported))
    assert (out.headers.get("path") is not None) is expected


def test_sips_dialog_gets_a_sips_entry_on_the_tls_side() -> None:
    tls = Endpoint("127.0.0.1", 5061, Transport.TLS)
    proxy = StatelessProxy(config(listen=(LISTEN, tls)))
    client = Endpoint("192.0.2.10", 40001, Transport.TLS)
    data = request(
        "INVITE", uri="sips:alice@example.net", via="SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bKs"
    )
    [send] = proxy.on_datagram(data, client, tls, NOW)
    invite = parse_message(send.data)
    assert isinstance(invite, Request)
    ours = invite.headers.get_all("record-route")[0]
    assert ours.startswith("<sip:127.0.0.1:40000;lr;swf=")  # the core's side is UDP
    ok = answer(invite).replace(
        b"Content-Length: 0", f"Record-Route: {ours}\r\nContent-Length: 0".encode()
    )
    [back] = proxy.on_datagram(ok, UPSTREAM, UP_LOCAL, NOW)
    assert back.dest == client and back.local == tls
    out = parse_message(back.data)
    assert isinstance(out, Response)
    assert (out.headers.get("record-route") or "").startswith(
        "<sips:127.0.0.1:5061;transport=tls;lr;swf="
    )


def test_a_udp_client_without_rport_behind_nat_gets_the_client_side_entry() -> None:
    """Its answers go to its Via port, not the source port its flow was recorded with: our
    entry is still swapped (matched by address)."""
    proxy = StatelessProxy(config())
    nat = Endpoint("198.51.100.7", 40001)
    data = request("INVITE", via="SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKnat")
    [send] = proxy.on_datagram(data, nat, LISTEN, NOW)
    invite = parse_message(send.data)
    assert isinstance(invite, Request)
    ours = invite.headers.get_all("record-route")[0]
    ok = answer(invite).replace(
        b"Content-Length: 0", f"Record-Route: {ours}\r\nContent-Length: 0".encode()
    )
    [back] = proxy.on_datagram(ok, UPSTREAM, UP_LOCAL, NOW)
    assert back.dest == Endpoint("198.51.100.7", 5060)
    assert b"<sip:127.0.0.1:5060;lr;swf=" in back.data


def test_crlf_keepalives_are_not_counted_as_messages() -> None:
    proxy = StatelessProxy(config())
    assert proxy.on_datagram(b"\r\n\r\n", CLIENT, LISTEN, NOW) == []
    assert (proxy.stats.received, proxy.stats.keepalives_ignored) == (0, 1)
