"""wangiri.ring_and_cancel: fires at N distinct callees and not at N−1, counts only short,
cancelled, unanswered calls, forgets what left the window, honours the allow-list, stays bounded
under hostile calling numbers, and works end to end through the engine's call tracker."""

from __future__ import annotations

import pydantic
import pytest

from sipwarden.detect import DETECTORS, Engine
from sipwarden.detect.detectors.wangiri import RingAndCancel, RingAndCancelConfig
from sipwarden.detect.taxonomy import Severity
from sipwarden.detect.tracker import Call, CallEnd, CallEvent, CallPhase
from sipwarden.net import Endpoint
from tests.conftest import need_shared
from tests.detect import observe

CALLER = "+88234123456"
TRUNK = "203.0.113.7"


def ended(
    callee: str,
    ts: float = 1000.0,
    *,
    ring_s: float = 3.0,
    caller: str | None = CALLER,
    end: CallEnd = CallEnd.CANCELLED,
    answered: bool = False,
    src: str = TRUNK,
) -> CallEvent:
    started = ts - ring_s
    call = Call(
        f"call-{callee}-{ts}",
        Endpoint(src, 5060),
        Endpoint("198.51.100.5", 5060),
        caller,
        callee,
        "198.51.100.5",
        None,
        caller,
        False,
        "ua",
        started,
        1,
        answered=started + 1 if answered else None,
        ended=ts,
        end=end,
    )
    return CallEvent(CallPhase.ENDED, call, ts, 2, 0, 0)


def test_registered_and_defaults_documented() -> None:
    assert DETECTORS["wangiri.ring_and_cancel"] is RingAndCancel
    config = RingAndCancelConfig()
    assert (config.max_ring_s, config.window_s, config.distinct_callees) == (6.0, 3600.0, 10)
    assert "short_calls" in (RingAndCancelConfig.model_fields["max_ring_s"].description or "")
    assert RingAndCancel.__doc__ and "Known false positives" in RingAndCancel.__doc__
    for name, info in RingAndCancelConfig.model_fields.items():
        assert info.description, f"{name} has no description"
    with pytest.raises(pydantic.ValidationError, match="windw_s"):
        RingAndCancelConfig(windw_s=1.0)  # type: ignore[call-arg]


def test_fires_at_threshold_not_below() -> None:
    detector = RingAndCancel()
    for i in range(9):
        assert detector.on_call(ended(f"4930{i:06d}", 1000.0 + i)) == []
    (hit,) = detector.on_call(ended("4930999999", 1010.0))
    assert hit.detector == "wangiri.ring_and_cancel" and hit.threat.value == "wangiri"
    assert hit.key == CALLER and hit.severity is Severity.HIGH
    assert hit.indicators["distinct_callees"] == "10"
    assert hit.recommended_action is not None
    assert hit.recommended_action.action_code == "TEMP_BLOCK"
    # Rate-limited while over, again after the repeat interval.
    assert detector.on_call(ended("4931000000", 1011.0)) == []
    assert detector.on_call(ended("4931000001", 1071.0)) != []


def test_calling_number_spellings_are_one_caller() -> None:
    detector = RingAndCancel(RingAndCancelConfig(distinct_callees=2))
    assert detector.on_call(ended("1", caller="+882-341-23456")) == []
    (hit,) = detector.on_call(ended("2", caller="+882 (34) 123456"))
    assert hit.key == CALLER and hit.indicators["calling_number"] == CALLER
    assert "at least 2 subscribers" in hit.summary


def test_same_callee_counts_once() -> None:
    detector = RingAndCancel()
    for i in range(50):
        assert detector.on_call(ended("4930000001", 1000.0 + i)) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ring_s": 6.5},  # rang too long
        {"answered": True},
        {"end": CallEnd.FAILED},  # busy / rejected by the callee's side
        {"end": CallEnd.TIMEOUT},
        {"caller": None},
        # Regression: withheld callers are many people, not one campaign; nothing to call back.
        {"caller": "anonymous"},
        {"caller": "unknown"},
        {"caller": "alice"},
    ],
)
def test_other_calls_do_not_count(kwargs: dict[str, object]) -> None:
    detector = RingAndCancel(RingAndCancelConfig(distinct_callees=2))
    for i in range(20):
        assert detector.on_call(ended(f"4930{i:06d}", 1000.0 + i, **kwargs)) == []  # type: ignore[arg-type]


def test_ring_at_limit_counts() -> None:
    detector = RingAndCancel(RingAndCancelConfig(distinct_callees=2))
    assert detector.on_call(ended("1", ring_s=6.0)) == []
    assert detector.on_call(ended("2", ring_s=6.0)) != []


def test_window_slides() -> None:
    detector = RingAndCancel(RingAndCancelConfig(distinct_callees=2))
    assert detector.on_call(ended("1", 1000.0)) == []
    # Exactly one window later the first callee has left: (t - 3600, t].
    assert detector.on_call(ended("2", 4600.0)) == []
    assert detector.on_call(ended("3", 8199.0)) != []


def test_allow_listed_source_is_silent() -> None:
    detector = RingAndCancel(RingAndCancelConfig(allow_sources=("203.0.113.0/24",)))
    for i in range(30):
        assert detector.on_call(ended(str(i), 1000.0 + i)) == []
    assert detector.state_size() == 0


def test_state_bounded_under_hostile_callers() -> None:
    detector = RingAndCancel(RingAndCancelConfig(max_callers=10))
    for i in range(100):
        assert detector.on_call(ended("1", 1000.0 + i * 0.01, caller=f"+1555{i:07d}")) == []
        assert detector.state_size() <= 10
    assert detector.evictions() == 90
    detector.advance(10_000.0)
    assert detector.state_size() == 0 and detector.next_deadline() is None


def _invite(callee: str, branch: str, method: str = "INVITE") -> bytes:
    return (
        f"{method} sip:{callee}@198.51.100.5 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {TRUNK};branch=z9hG4bK{branch}\r\n"
        f"From: <sip:{CALLER}@{TRUNK}>;tag=a{branch}\r\nTo: <sip:{callee}@198.51.100.5>\r\n"
        f"Call-ID: {branch}@{TRUNK}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _ringing(callee: str, branch: str) -> bytes:
    return (
        f"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bK{branch}\r\n"
        f"From: <sip:{CALLER}@{TRUNK}>;tag=a{branch}\r\n"
        f"To: <sip:{callee}@198.51.100.5>;tag=b{branch}\r\n"
        f"Call-ID: {branch}@{TRUNK}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_end_to_end_through_the_tracker() -> None:
    engine = Engine([RingAndCancel()])
    frame = 0
    for i in range(12):
        callee, branch, ts = f"4930{i:06d}", f"b{i}", 100.0 + i * 10
        for data, at, src, dst in (
            (_invite(callee, branch), ts, TRUNK, "198.51.100.5"),
            (_ringing(callee, branch), ts + 0.5, "198.51.100.5", TRUNK),
            (_invite(callee, branch, "CANCEL"), ts + 2.5, TRUNK, "198.51.100.5"),
        ):
            frame += 1
            engine.observe(observe(data, ts=at, src=src, dst=dst, frame=frame))
    (finding,) = engine.finish()
    assert finding.detector == "wangiri.ring_and_cancel" and finding.key == CALLER
    # The 10th callee's cancel makes the hit; the next two fall in its repeat interval.
    assert finding.count == 1 and finding.first_seen == 192.5
    assert finding.evidence.call_ids == ("b9@203.0.113.7",)
    assert finding.severity is Severity.HIGH


def test_end_to_end_nine_callees_is_silent() -> None:
    engine = Engine([RingAndCancel()])
    for i in range(9):
        callee, branch, ts = f"4930{i:06d}", f"b{i}", 100.0 + i * 10
        engine.observe(observe(_invite(callee, branch), ts=ts, src=TRUNK))
        engine.observe(observe(_invite(callee, branch, "CANCEL"), ts=ts + 2, src=TRUNK))
    assert engine.finish() == []


@pytest.mark.parametrize(
    "name",
    [
        "normal/snort3_demo--digium.pcap",
        "normal/suricata-verify--wireshark-aaa-sip-rtp.pcap",
        "attack/initconf--SIP-212.32.250.134.pcap",
    ],
)
def test_corpus_has_no_wangiri(name: str) -> None:
    from sipwarden.sources.capture import iter_observations

    engine = Engine([RingAndCancel()])
    for obs in iter_observations(need_shared(f"corpus/pcap/{name}")):
        engine.observe(obs)
    assert engine.finish() == []
