"""Gateway policy: every verdict path, exact token buckets with explicit ``now``, trusted peers
that are not a free pass, bans with capped escalation, bounded state under hostile keys, and
reasons only from the closed DropReason set."""

from __future__ import annotations

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.detect import DETECTORS
from sipwarden.detect.finding import Finding, RecommendedAction
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.gateway.policy import (
    BlockView,
    Policy,
    PolicyConfig,
    RateLimitConfig,
    looks_answerable,
)
from sipwarden.gateway.verdict import Drop, DropReason, Forward, Reject, Tarpit, Verdict
from sipwarden.net import Endpoint
from sipwarden.sources.capture import iter_observations
from tests.conftest import need_shared
from tests.detect import feed_one, observe

SRC = "192.0.2.10"
TRUSTED = "203.0.113.7"


def request(
    method: str = "OPTIONS",
    user: str = "100",
    *,
    max_forwards: int | None = 70,
    body: bytes = b"",
    extra: str = "",
    call_id: bool = True,
    via_host: str = "192.0.2.10",
) -> bytes:
    ruri = f"sip:{user}@198.51.100.5"
    mf = f"Max-Forwards: {max_forwards}\r\n" if max_forwards is not None else ""
    cid = "Call-ID: c1\r\n" if call_id else ""
    return (
        f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {via_host};branch=z9hG4bK1\r\n"
        f"From: <sip:caller@192.0.2.10>;tag=1\r\nTo: <{ruri}>\r\n{cid}"
        f"CSeq: 1 {method}\r\n{mf}{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


RESPONSE = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
    b"From: <sip:caller@192.0.2.10>;tag=1\r\nTo: <sip:100@198.51.100.5>;tag=2\r\n"
    b"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


def never(ip: str, now: float) -> bool:
    return False


def finding(
    detector: str,
    severity: Severity = Severity.HIGH,
    *,
    src: str = SRC,
    action: RecommendedAction | None = None,
) -> Finding:
    return Finding(
        detector,
        Threat(detector.split(".", 1)[0]),
        severity,
        80,
        "test",
        src,
        0.0,
        0.0,
        source=Endpoint(src, 5060),
        recommended_action=action,
    )


def decide(
    policy: Policy,
    data: bytes,
    *,
    ts: float = 0.0,
    src: str = SRC,
    findings: list[Finding] | None = None,
    blocked: bool = False,
) -> Verdict:
    return policy.decide(
        observe(data, ts, src), ts, lambda ip, now: blocked, findings or [], raw=data
    )


def trusting(**kwargs: object) -> Policy:
    return Policy(PolicyConfig(trusted_peers=(TRUSTED + "/32",), **kwargs))


# -- configuration -------------------------------------------------------------------------------


def test_defaults_match_their_anchors() -> None:
    cfg = PolicyConfig()
    assert (cfg.per_source.rate_per_s, cfg.per_source.burst) == (15.0, 30.0)  # pike 30 / 2 s
    assert cfg.per_source.action == "drop"
    assert (cfg.per_target.action, cfg.per_target.retry_after_s) == ("reject", 5)
    assert (cfg.max_message_bytes, cfg.max_body_bytes, cfg.max_uri_bytes) == (16384, 8192, 512)
    assert cfg.default_ban_s == 300  # Kamailio default-config ban; the store escalates repeats
    assert cfg.scanner_action == "drop"
    assert cfg.trusted_peers == ()
    for model in (PolicyConfig, RateLimitConfig):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
    with pytest.raises(pydantic.ValidationError, match="max_mesage_bytes"):
        PolicyConfig(max_mesage_bytes=1)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        PolicyConfig(trusted_peers=("not-a-network",))


# -- forward -------------------------------------------------------------------------------------


def test_benign_request_and_response_are_forwarded() -> None:
    policy = Policy()
    assert decide(policy, request()) == Forward()
    assert decide(policy, RESPONSE) == Forward()


def test_response_with_findings_is_still_forwarded() -> None:
    assert decide(Policy(), RESPONSE, findings=[finding("recon.scanner_user_agent")]) == Forward()


# -- unparsable ----------------------------------------------------------------------------------


BAD_HEADER = request().replace(b"Max-Forwards: 70\r\n", b"Max-Forwards 70\r\n")


def test_unparsable_request_with_enough_to_answer_gets_400() -> None:
    assert looks_answerable(BAD_HEADER)
    assert decide(Policy(), BAD_HEADER) == Reject(400, DropReason.MALFORMED)


def test_unparsable_without_the_headers_a_reply_copies_is_dropped() -> None:
    data = BAD_HEADER.replace(b"Call-ID: c1\r\n", b"")
    assert not looks_answerable(data)
    assert decide(Policy(), data) == Drop(DropReason.MALFORMED)
    assert decide(Policy(), b"\x16\x03\x01 garbage") == Drop(DropReason.MALFORMED)


def test_unparsable_ack_and_response_are_dropped() -> None:
    ack = BAD_HEADER.replace(b"OPTIONS", b"ACK")
    assert decide(Policy(), ack) == Drop(DropReason.MALFORMED)
    bad_response = RESPONSE.replace(b"CSeq: 1 OPTIONS", b"CSeq 1 OPTIONS")
    assert decide(Policy(), bad_response) == Drop(DropReason.MALFORMED)


def test_unparsable_uses_the_parser_status_hint() -> None:
    too_many_via = request().replace(
        b"Via:", b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n" * 80 + b"Via:", 1
    )
    assert decide(Policy(), too_many_via) == Reject(483, DropReason.TOO_MANY_HOPS)


def test_unparsable_from_a_blocked_source_is_dropped_as_blocklisted() -> None:
    assert decide(Policy(), BAD_HEADER, blocked=True) == Drop(DropReason.BLOCKLISTED)


# -- blocklist -----------------------------------------------------------------------------------


class Store:
    def __init__(self, *ips: str) -> None:
        self.ips = set(ips)

    def is_blocked(self, ip: str, now: float) -> bool:
        return ip in self.ips


def test_blocklisted_source_is_dropped_via_callable_or_view() -> None:
    policy = Policy()
    view: BlockView = Store(SRC)
    assert policy.decide(observe(request()), 0.0, view, []) == Drop(DropReason.BLOCKLISTED)
    assert policy.decide(observe(RESPONSE), 0.0, view, []) == Drop(DropReason.BLOCKLISTED)
    assert policy.decide(observe(request(), src="192.0.2.99"), 0.0, view, []) == Forward()
    assert decide(policy, request(), blocked=True) == Drop(DropReason.BLOCKLISTED)


# -- hygiene: applies to trusted peers too -------------------------------------------------------


@pytest.mark.parametrize("src", [SRC, TRUSTED])
def test_size_limits(src: str) -> None:
    policy = trusting()
    assert decide(policy, request("MESSAGE", body=b"x" * 8192), src=src) == Forward()
    assert decide(policy, request("MESSAGE", body=b"x" * 8193), src=src) == Reject(
        413, DropReason.TOO_LARGE
    )
    padded = request(extra="X-Pad: " + "y" * 1000 + "\r\n")
    big = request(extra=("X-Pad: " + "y" * 1000 + "\r\n") * 17)
    assert len(padded) < 16384 < len(big)
    assert decide(policy, big, src=src) == Reject(513, DropReason.TOO_LARGE)
    assert decide(policy, request(user="u" * 480), src=src) == Forward()
    assert decide(policy, request(user="u" * 500), src=src) == Reject(414, DropReason.TOO_LARGE)


@pytest.mark.parametrize("src", [SRC, TRUSTED])
def test_method_outside_the_allow_list_gets_405(src: str) -> None:
    policy = trusting(allowed_methods=("INVITE", "ACK", "BYE", "CANCEL"))
    assert decide(policy, request("INVITE"), src=src) == Forward()
    assert decide(policy, request("OPTIONS"), src=src) == Reject(405, DropReason.METHOD_NOT_ALLOWED)
    assert decide(Policy(), request("FOO")) == Reject(405, DropReason.METHOD_NOT_ALLOWED)
    assert policy.allow_header == "INVITE, ACK, BYE, CANCEL"


@pytest.mark.parametrize("src", [SRC, TRUSTED])
def test_spoofed_trusted_source_still_rejected_when_malformed(src: str) -> None:
    assert decide(trusting(), request(call_id=False), src=src) == Reject(400, DropReason.MALFORMED)


def test_tolerated_defects_are_not_rejected() -> None:
    # Missing Max-Forwards is a tolerance (RFC 4475 §3.4.1): the proxy adds one.
    assert decide(Policy(), request(max_forwards=None)) == Forward()
    no_cookie = request().replace(b"branch=z9hG4bK1", b"branch=1")
    assert decide(Policy(), no_cookie) == Forward()


def test_max_forwards_zero_gets_483_but_ack_is_dropped() -> None:
    assert decide(Policy(), request(max_forwards=1)) == Forward()
    assert decide(Policy(), request(max_forwards=0)) == Reject(483, DropReason.TOO_MANY_HOPS)
    assert decide(Policy(), request("ACK", max_forwards=0)) == Drop(DropReason.TOO_MANY_HOPS)


def test_our_own_via_means_a_loop() -> None:
    policy = Policy(PolicyConfig(own_sent_by=("198.51.100.1:5060",)))
    assert decide(policy, request(via_host="198.51.100.1:5060")) == Reject(482, DropReason.LOOP)
    assert decide(policy, request(via_host="198.51.100.1:5062")) == Forward()


@pytest.mark.parametrize("src", [SRC, TRUSTED])
def test_injection_finding_gets_403_even_from_a_trusted_peer(src: str) -> None:
    policy = trusting()
    hit = [finding("injection.payload_in_user_field", Severity.MEDIUM, src=src)]
    assert decide(policy, request(), src=src, findings=hit) == Reject(403, DropReason.INJECTION)
    low = [finding("injection.payload_in_user_field", Severity.LOW, src=src)]
    assert decide(policy, request(), src=src, findings=low) == Forward()


def test_findings_about_another_source_do_not_judge_the_sender() -> None:
    hit = [finding("injection.payload_in_user_field", src="192.0.2.99")]
    assert decide(Policy(), request(), findings=hit) == Forward()


@pytest.mark.parametrize("src", [SRC, TRUSTED])
def test_repeat_malformed_finding_drops(src: str) -> None:
    policy = trusting()
    high = [finding("malformed.parser_defect", Severity.HIGH, src=src)]
    assert decide(policy, request(), src=src, findings=high) == Drop(DropReason.MALFORMED)
    low = [finding("malformed.parser_defect", Severity.LOW, src=src)]
    assert decide(policy, request(), src=src, findings=low) == Forward()


# -- untrusted only ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("drop", Drop(DropReason.SCANNER)),
        ("reject", Reject(403, DropReason.SCANNER)),
        ("tarpit", Tarpit(DropReason.SCANNER, 30.0)),
    ],
)
def test_scanner_finding_action(action: str, expected: Verdict) -> None:
    policy = trusting(scanner_action=action)
    for detector in ("recon.scanner_user_agent", "recon.scanner_fingerprint"):
        assert decide(policy, request(), findings=[finding(detector)]) == expected
        hit = [finding(detector, src=TRUSTED)]
        assert decide(policy, request(), src=TRUSTED, findings=hit) == Forward()


def test_high_finding_recommending_a_block_drops_now() -> None:
    block = RecommendedAction("TEMP_BLOCK", 300)
    high = [finding("tdos.request_flood", Severity.HIGH, action=block)]
    assert decide(Policy(), request(), findings=high) == Drop(DropReason.BLOCKLISTED)
    medium = [finding("tdos.request_flood", Severity.MEDIUM, action=block)]
    assert decide(Policy(), request(), findings=medium) == Forward()
    monitor = [finding("tdos.request_flood", Severity.HIGH, action=RecommendedAction("MONITOR"))]
    assert decide(Policy(), request(), findings=monitor) == Forward()
    trusted = [finding("tdos.request_flood", Severity.HIGH, src=TRUSTED, action=block)]
    assert decide(trusting(), request(), src=TRUSTED, findings=trusted) == Forward()


# -- token buckets -------------------------------------------------------------------------------


def source_limited(rate: float = 1.0, burst: float = 3.0, **kwargs: object) -> Policy:
    return trusting(
        per_source=RateLimitConfig(rate_per_s=rate, burst=burst, action="drop", **kwargs),
        per_target=RateLimitConfig(rate_per_s=1, burst=1, action="reject", enabled=False),
    )


def test_default_source_bucket_fires_at_31_not_30() -> None:
    policy = Policy(
        PolicyConfig(per_target=PolicyConfig().per_target.model_copy(update={"enabled": False}))
    )
    verdicts = [decide(policy, request(), ts=0.0) for _ in range(31)]
    assert verdicts[:30] == [Forward()] * 30
    assert verdicts[30] == Drop(DropReason.RATE_LIMITED_SOURCE)
    # 15 tokens per second: one more after 1/15 s.
    assert decide(policy, request(), ts=1 / 15) == Forward()
    assert decide(policy, request(), ts=1 / 15) == Drop(DropReason.RATE_LIMITED_SOURCE)


def test_source_bucket_refills_exactly() -> None:
    policy = source_limited()
    assert [decide(policy, request(), ts=0.0) for _ in range(3)] == [Forward()] * 3
    assert decide(policy, request(), ts=0.0) == Drop(DropReason.RATE_LIMITED_SOURCE)
    assert decide(policy, request(), ts=0.999) == Drop(DropReason.RATE_LIMITED_SOURCE)
    assert decide(policy, request(), ts=1.0) == Forward()
    assert decide(policy, request(), ts=1.0) == Drop(DropReason.RATE_LIMITED_SOURCE)
    # After a full refill time the bucket is full again: three more, not four.
    assert [decide(policy, request(), ts=10.0) for _ in range(4)] == [Forward()] * 3 + [
        Drop(DropReason.RATE_LIMITED_SOURCE)
    ]


def test_source_buckets_are_per_source_and_skip_trusted_and_exempt_methods() -> None:
    policy = source_limited(burst=1)
    assert decide(policy, request()) == Forward()
    assert decide(policy, request()) == Drop(DropReason.RATE_LIMITED_SOURCE)
    assert decide(policy, request(), src="192.0.2.11") == Forward()
    assert all(decide(policy, request(), src=TRUSTED) == Forward() for _ in range(10))
    for method in ("ACK", "CANCEL", "BYE", "PRACK"):
        assert decide(policy, request(method)) == Forward()


def test_source_bucket_can_reject_with_503() -> None:
    policy = trusting(per_source=RateLimitConfig(rate_per_s=1, burst=1, action="reject"))
    assert decide(policy, request()) == Forward()
    assert decide(policy, request()) == Reject(503, DropReason.RATE_LIMITED_SOURCE, 5)


def test_target_bucket_fires_at_burst_plus_one_with_503_retry_after() -> None:
    policy = Policy(
        PolicyConfig(
            per_source=RateLimitConfig(rate_per_s=1, burst=1, action="drop", enabled=False)
        )
    )
    sources = [f"192.0.2.{i}" for i in range(1, 22)]
    verdicts = [decide(policy, request("INVITE"), src=s) for s in sources]
    assert verdicts[:20] == [Forward()] * 20
    assert verdicts[20] == Reject(503, DropReason.RATE_LIMITED_TARGET, 5)
    assert decide(policy, request("INVITE", user="101"), src="192.0.2.30") == Forward()
    assert decide(policy, request("INVITE"), ts=1.0, src="192.0.2.31") == Forward()


def test_hostile_key_space_stays_within_bounds() -> None:
    cfg = PolicyConfig(
        per_source=RateLimitConfig(rate_per_s=1, burst=5, action="drop", max_entries=50),
        per_target=RateLimitConfig(rate_per_s=1, burst=5, action="reject", max_entries=50),
    )
    policy = Policy(cfg)
    for i in range(500):
        src = f"10.0.{i // 256}.{i % 256}"
        assert decide(policy, request(user=f"u{i}" + "x" * 300), src=src) == Forward()
    assert policy.state_size() <= 100
    assert policy.evictions() == 2 * (500 - 50)
    stats = policy.stats()
    assert (stats.entries, stats.max_entries) == (100, 100)


def test_refilled_buckets_expire_on_advance() -> None:
    policy = source_limited(burst=3)
    decide(policy, request(), ts=0.0)
    assert policy.state_size() == 1
    policy.advance(2.9)
    assert policy.state_size() == 1
    policy.advance(3.0)
    assert policy.state_size() == 0
    assert policy.evictions() == 0


# -- bans ----------------------------------------------------------------------------------------


def test_blocklist_entries_from_recommended_actions() -> None:
    policy = trusting()
    findings = [
        finding("recon.scanner_user_agent", action=RecommendedAction("TEMP_BLOCK", 3600)),
        finding("tdos.request_flood", action=RecommendedAction("TEMP_BLOCK", 300)),  # same ip
        finding(
            "credential.registration_brute_force",
            src="192.0.2.20",
            action=RecommendedAction("BLOCK"),
        ),
        finding("tdos.request_flood", src=TRUSTED, action=RecommendedAction("TEMP_BLOCK", 300)),
        finding(
            "recon.host_sweep",
            Severity.MEDIUM,
            src="192.0.2.30",
            action=RecommendedAction("TEMP_BLOCK", 3600),
        ),
        finding("tdos.target_fan_in", src="192.0.2.40", action=RecommendedAction("RATE_LIMIT")),
    ]
    orders = policy.blocklist_entries(findings)
    assert [(o.ip, o.ttl_s, o.reason) for o in orders] == [
        (SRC, 3600.0, "recon.scanner_user_agent"),
        ("192.0.2.20", 300.0, "credential.registration_brute_force"),
    ]
    assert orders[0].finding_id == findings[0].id
    assert orders[1].finding_id == findings[2].id


def test_policy_orders_the_base_ttl_every_time_and_keeps_no_ban_state() -> None:
    """Escalation is the store's (store/base.py plan_add): the policy orders the same base ban
    for every repeat and remembers nothing about bans."""
    policy = Policy(PolicyConfig(default_ban_s=120))
    hit = [finding("tdos.request_flood", action=RecommendedAction("TEMP_BLOCK"))]
    assert [policy.blocklist_entries(hit)[0].ttl_s for _ in range(5)] == [120.0] * 5
    assert policy.state_size() == 0


def test_escalation_keys_are_not_policy_settings() -> None:
    for key in ("ban_escalation_factor", "max_ban_s", "ban_memory_s", "ban_memory_entries"):
        with pytest.raises(pydantic.ValidationError):
            PolicyConfig(**{key: 1})


# -- properties ----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([SRC, TRUSTED]))
def test_any_bytes_get_a_verdict_with_a_closed_set_reason(data: bytes, src: str) -> None:
    verdict = decide(trusting(), data, src=src)
    assert isinstance(verdict, Forward | Reject | Drop | Tarpit)
    if not isinstance(verdict, Forward):
        assert verdict.reason in set(DropReason)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["INVITE", "ACK", "BYE", "OPTIONS", "REGISTER", "FOO"]),
    st.integers(0, 3),
    st.sampled_from(["", "Max-Forwards 1\r\n", "Content-Length: x\r\n"]),
)
def test_ack_is_never_answered(method: str, max_forwards: int, extra: str) -> None:
    verdict = decide(Policy(), request(method, max_forwards=max_forwards, extra=extra))
    if method == "ACK":
        assert not isinstance(verdict, Reject)


# -- corpus --------------------------------------------------------------------------------------


def run_capture(relative: str) -> dict[str, int]:
    """Verdict counts for a capture with every registered detector's hits per observation."""
    path = need_shared(relative)
    detectors = [cls() for cls in DETECTORS.values()]
    policy = Policy()
    counts: dict[str, int] = {}
    for obs in iter_observations(path):
        hits = [hit for detector in detectors for hit in feed_one(detector, obs)]
        verdict = policy.decide(obs, obs.ts, never, hits)
        label = "forward" if isinstance(verdict, Forward) else str(verdict.reason)
        counts[label] = counts.get(label, 0) + 1
    return counts


@pytest.mark.parametrize(
    "capture",
    [
        "corpus/pcap/normal/suricata-verify--sip-invite-sdp-200.pcap",
        "corpus/pcap/normal/suricata-verify--sip-tcp-register-401.pcap",
        "corpus/pcap/normal/snort3_demo--SIP_Eyebeam2Eyebeam_Video_Audio.pcap",
        "corpus/pcap/normal/heplify--sip_ipv6_udp.pcap",
    ],
)
def test_benign_captures_are_forwarded(capture: str) -> None:
    counts = run_capture(capture)
    assert set(counts) == {"forward"}, counts


def test_sipvicious_capture_is_refused() -> None:
    counts = run_capture("corpus/pcap/attack/initconf--BadUserAgent-sipvicious.pcap")
    refused = sum(n for label, n in counts.items() if label != "forward")
    assert refused > 0 and counts.get("scanner", 0) > 0, counts


@pytest.mark.parametrize("module", ["policy.py", "sanitize.py", "verdict.py"])
def test_pure_gateway_modules_are_sans_io(module: str) -> None:
    """design.md §2.1 for the gateway's pure parts (tests/test_layering.py checks sip/, detect/)."""
    from tests.test_layering import FORBIDDEN, SRC, top_level_imports

    bad = top_level_imports(SRC / "gateway" / module) & FORBIDDEN
    assert not bad, f"gateway/{module} imports {sorted(bad)}"
