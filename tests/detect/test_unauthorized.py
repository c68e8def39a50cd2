"""unauthorized detectors: an unauthenticated INVITE accepted (18x/2xx) from an untrusted source,
and a request for a foreign domain relayed by our server. Severities stay below medium for the
benign corpus; the 212.32.250.134 scanner capture is high."""

from __future__ import annotations

import itertools

import pytest

from sipwarden.detect import DETECTORS, Engine, Observation
from sipwarden.detect.detectors.unauthorized import (
    OpenRelay,
    OpenRelayConfig,
    UnauthenticatedCallAccepted,
    UnauthenticatedCallAcceptedConfig,
)
from sipwarden.detect.taxonomy import Severity
from sipwarden.net import Endpoint
from sipwarden.sip import parse_message
from tests.conftest import need_shared

SERVER = "198.51.100.5"
PUBLIC = "185.22.33.44"  # a globally routable address (not a documentation range)
_frames = itertools.count(1)
_branches = itertools.count(1)


def public(i: int) -> str:
    return f"185.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def call(
    ts: float,
    src: str = PUBLIC,
    statuses: tuple[int, ...] = (180, 200),
    callee: str = "0044123456",
    host: str = SERVER,
    credentials: bool = False,
    method: str = "INVITE",
    to_tag: str = "",
) -> list[Observation]:
    """A request from ``src`` and its answers from SERVER."""
    branch = f"z9hG4bK{next(_branches)}"
    call_id = f"call-{branch}"
    tag = f";tag={to_tag}" if to_tag else ""
    auth = (
        'Proxy-Authorization: Digest username="1001", realm="pbx", nonce="n", '
        f'uri="sip:{callee}@{host}", response="00"\r\n'
        if credentials
        else ""
    )
    head = (
        f"Via: SIP/2.0/UDP {src};branch={branch}\r\nFrom: <sip:101@{src}>;tag=1\r\n"
        f"To: <sip:{callee}@{host}>{tag}"
    )
    request = (
        f"{method} sip:{callee}@{host} SIP/2.0\r\n{head}\r\nCall-ID: {call_id}\r\n"
        f"CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n"
    ).encode()
    out = [
        Observation(
            ts, next(_frames), Endpoint(src, 5060), Endpoint(SERVER, 5060),
            parse_message(request), None, len(request),
        )
    ]  # fmt: skip
    for i, status in enumerate(statuses):
        reply = (
            f"SIP/2.0 {status} X\r\n{head}{tag or ';tag=s'}\r\nCall-ID: {call_id}\r\n"
            f"CSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        out.append(
            Observation(
                ts + 0.1 * (i + 1), next(_frames), Endpoint(SERVER, 5060), Endpoint(src, 5060),
                parse_message(reply), None, len(reply),
            )
        )  # fmt: skip
    return out


def run(detectors: list[UnauthenticatedCallAccepted | OpenRelay], observations: list[Observation]):  # type: ignore[no-untyped-def]
    engine = Engine(list(detectors))
    for obs in observations:
        engine.observe(obs)
    return engine.finish()


# -- UnauthenticatedCallAccepted -----------------------------------------------------------------


def test_registered_with_anchored_defaults() -> None:
    assert DETECTORS["unauthorized.unauthenticated_call_accepted"] is UnauthenticatedCallAccepted
    assert DETECTORS["unauthorized.open_relay"] is OpenRelay
    cfg = UnauthenticatedCallAcceptedConfig()
    assert (cfg.window_s, cfg.calls_for_high) == (3600.0, 10)
    assert OpenRelayConfig().local_domains == ()
    for cls in (UnauthenticatedCallAccepted, OpenRelay):
        for name, info in cls.Config.model_fields.items():
            assert info.description, f"{cls.id}.{name}"


def test_one_call_is_one_low_hit_from_a_public_source() -> None:
    (finding,) = run([UnauthenticatedCallAccepted()], call(0.0))
    assert finding.severity is Severity.LOW and finding.count == 1
    assert finding.key == PUBLIC and finding.indicators["answer"] == "18x"
    assert finding.target is not None and finding.target.user == "0044123456"


def test_answered_without_ringing_is_reported_at_the_2xx() -> None:
    (finding,) = run([UnauthenticatedCallAccepted()], call(0.0, statuses=(200,)))
    assert finding.indicators["answer"] == "200"


def test_rejected_or_authenticated_or_in_dialog_calls_are_silent() -> None:
    observations = (
        call(0.0, statuses=(403,))
        + call(1.0, statuses=(100, 486))
        + call(2.0, credentials=True)
        + call(3.0, to_tag="peer")  # a re-INVITE inside a dialog is not a call
    )
    assert run([UnauthenticatedCallAccepted()], observations) == []


def test_private_sources_are_info_whatever_the_volume() -> None:
    observations = [o for i in range(50) for o in call(i * 1.0, src="10.0.0.7")]
    (finding,) = run([UnauthenticatedCallAccepted()], observations)
    assert finding.severity is Severity.INFO and finding.count == 50


def test_high_at_n_calls_from_one_public_source_not_below() -> None:
    detector = UnauthenticatedCallAccepted(UnauthenticatedCallAcceptedConfig(calls_for_high=5))
    (finding,) = run([detector], [o for i in range(4) for o in call(i * 60.0)])
    assert finding.severity is Severity.LOW
    detector = UnauthenticatedCallAccepted(UnauthenticatedCallAcceptedConfig(calls_for_high=5))
    # One episode per source: the 5th call raises it to HIGH and brings TEMP_BLOCK (the engine
    # takes the action of the hit that raises the severity), the count covers every call.
    (finding,) = run([detector], [o for i in range(6) for o in call(i * 60.0)])
    assert finding.severity is Severity.HIGH and finding.count == 6
    assert finding.key == PUBLIC and finding.indicators["calls_in_window"] == "≥5"
    assert finding.recommended_action is not None
    assert finding.recommended_action.action_code == "TEMP_BLOCK"


def test_window_slides() -> None:
    config = UnauthenticatedCallAcceptedConfig(calls_for_high=3, window_s=100.0)
    # 3 calls 60 s apart: the first has left the window when the third is answered.
    severities = {
        f.severity
        for f in run(
            [UnauthenticatedCallAccepted(config)], [o for i in range(3) for o in call(i * 60.0)]
        )
    }
    assert severities == {Severity.LOW}


def test_allow_listed_peer_is_silent() -> None:
    config = UnauthenticatedCallAcceptedConfig(allow_sources=("185.22.33.0/24",))
    detector = UnauthenticatedCallAccepted(config)
    assert run([detector], [o for i in range(20) for o in call(i * 1.0)]) == []
    assert detector.state_size() == 0


def test_hostile_sources_stay_bounded() -> None:
    detector = UnauthenticatedCallAccepted(UnauthenticatedCallAcceptedConfig(max_sources=10))
    engine = Engine([detector])
    for i in range(100):
        for obs in call(i * 1.0, src=public(i)):
            engine.observe(obs)
        assert detector.state_size() <= 10
    assert detector.evictions() == 90
    assert {f.severity for f in engine.finish()} == {Severity.LOW}
    assert detector.state_size() == 0


def test_scanner_capture_is_high_and_benign_captures_stay_below_medium() -> None:
    from sipwarden.sources.capture import iter_observations

    path = need_shared("corpus/pcap/attack/initconf--SIP-212.32.250.134.pcap")
    findings = run([UnauthenticatedCallAccepted()], list(iter_observations(path)))
    assert [(f.key, f.severity) for f in findings] == [("206.55.185.163", Severity.HIGH)]
    assert findings[0].recommended_action is not None
    assert findings[0].recommended_action.action_code == "TEMP_BLOCK"
    normal = path.parent.parent / "normal"
    for name in (
        "snort3_demo--SIP_Eyebeam2Eyebeam_Video_Audio.pcap",
        "snort3_demo--digium.pcap",
        "heplify--sip_ipv4_tcp_fragmented.pcap",
        "suricata-verify--cloudshark-sip-s0.pcap",
        "ndpi--FAX-Call-t38-CA-TDM-SIP-FB-1.pcap",
    ):
        benign = run([UnauthenticatedCallAccepted()], list(iter_observations(normal / name)))
        assert benign, name  # they do have unauthenticated calls answered...
        assert all(f.severity.rank < Severity.MEDIUM.rank for f in benign), name  # ...benign


# -- OpenRelay -----------------------------------------------------------------------------------

LOCAL = OpenRelayConfig(local_domains=("example.net", "198.51.100.0/24"))


def test_relay_to_a_foreign_domain_accepted_is_high() -> None:
    (finding,) = run([OpenRelay(LOCAL)], call(0.0, host="victim.example.org"))
    assert finding.detector == "unauthorized.open_relay" and finding.severity is Severity.HIGH
    assert finding.indicators["foreign_host"] == "victim.example.org"
    assert finding.indicators["status"] == "180"
    assert finding.key == PUBLIC


@pytest.mark.parametrize(
    "host", ["example.net", "EXAMPLE.NET", "pbx.example.net", "198.51.100.9", SERVER]
)
def test_local_hosts_are_not_relayed(host: str) -> None:
    assert run([OpenRelay(LOCAL)], call(0.0, host=host)) == []


def test_relay_needs_configuration_acceptance_and_no_credentials() -> None:
    foreign = "victim.example.org"
    assert run([OpenRelay()], call(0.0, host=foreign)) == []  # nothing configured: silent
    assert run([OpenRelay(LOCAL)], call(0.0, host=foreign, statuses=(403,))) == []
    assert run([OpenRelay(LOCAL)], call(0.0, host=foreign, credentials=True)) == []
    assert run([OpenRelay(LOCAL)], call(0.0, host=foreign, to_tag="x")) == []  # in-dialog
    assert run([OpenRelay(LOCAL)], call(0.0, host=foreign, method="OPTIONS")) == []
    (finding,) = run([OpenRelay(LOCAL)], call(0.0, host=foreign, method="MESSAGE"))
    assert finding.indicators["method"] == "MESSAGE"


def test_relay_fires_per_request_and_aggregates() -> None:
    observations = [o for i in range(3) for o in call(i * 1.0, host="victim.example.org")]
    (finding,) = run([OpenRelay(LOCAL)], observations)
    assert finding.count == 3


def test_relay_allow_listed_source_is_silent() -> None:
    config = OpenRelayConfig(local_domains=("example.net",), allow_sources=(PUBLIC,))
    detector = OpenRelay(config)
    assert run([detector], call(0.0, host="victim.example.org")) == []
    assert detector.state_size() == 0


def test_relay_pending_requests_stay_bounded() -> None:
    detector = OpenRelay(OpenRelayConfig(local_domains=("example.net",), max_pending=10))
    for i in range(100):  # unanswered candidates from hostile sources
        detector.observe(call(i * 0.01, src=public(i), host="x.example.org", statuses=())[0])
        assert detector.state_size() <= 10
    assert detector.evictions() == 90
    detector.advance(100.0)
    assert detector.state_size() == 0 and detector.next_deadline() is None
