"""tdos detectors: each fires at its threshold and not one below, forgets what left the window,
honours the allow-list, emits at most one hit per window, and keeps its state bounded when the
key space is hostile."""

from __future__ import annotations

import itertools

import pydantic
import pytest

from sipwarden.detect import DETECTORS, Engine
from sipwarden.detect.detectors.tdos import (
    InviteRatePerTarget,
    InviteRatePerTargetConfig,
    RequestFlood,
    RequestFloodConfig,
    TargetFanIn,
    TargetFanInConfig,
)
from sipwarden.sip import SipParseError
from tests.detect import observe

DST = "198.51.100.5"


def request(
    method: str = "OPTIONS", user: str | None = "100", call_id: str = "c1", to_tag: str = ""
) -> bytes:
    ruri = f"sip:{user}@{DST}" if user is not None else f"sip:{DST}"
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
        f"From: <sip:caller@192.0.2.10>;tag=1\r\nTo: <{ruri}>{tag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def response(code: int = 200) -> bytes:
    return (
        f"SIP/2.0 {code} OK\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
        f"From: <sip:caller@192.0.2.10>;tag=1\r\nTo: <sip:100@{DST}>;tag=2\r\n"
        "Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def test_registered_with_tdos_ids() -> None:
    assert DETECTORS["tdos.request_flood"] is RequestFlood
    assert DETECTORS["tdos.target_fan_in"] is TargetFanIn
    assert DETECTORS["tdos.invite_rate_per_target"] is InviteRatePerTarget


def test_defaults_match_their_anchors() -> None:
    assert RequestFlood.Config is RequestFloodConfig
    flood = RequestFloodConfig()
    assert (flood.window_s, flood.requests_per_window) == (2.0, 30)
    assert flood.block_ttl_s == 300
    fan_in = TargetFanInConfig()
    assert (fan_in.window_s, fan_in.sources_per_window) == (10.0, 50)
    invite = InviteRatePerTargetConfig()
    assert (invite.window_s, invite.invites_per_window) == (10.0, 20)
    described = RequestFlood.Config.model_fields["window_s"].description or ""
    assert "sampling_time_unit" in described and "as soon as the count is reached" in described
    for cls in (RequestFlood, TargetFanIn, InviteRatePerTarget):
        for name, info in cls.Config.model_fields.items():
            assert info.description, f"{cls.id}.{name} has no description"
    with pytest.raises(pydantic.ValidationError, match="windw_s"):
        RequestFloodConfig(windw_s=1.0)  # type: ignore[call-arg]


# -- RequestFlood --------------------------------------------------------------------------------


def test_request_flood_fires_at_threshold_not_below() -> None:
    detector = RequestFlood()
    hits = [detector.observe(observe(request(), ts=i * 0.05, frame=i + 1)) for i in range(29)]
    assert all(h == [] for h in hits)
    (hit,) = detector.observe(observe(request(), ts=29 * 0.05, frame=30))
    assert hit.detector == "tdos.request_flood" and hit.key == "192.0.2.10"
    assert hit.indicators["requests_in_window"] == "30"
    assert hit.recommended_action is not None
    assert hit.recommended_action.action_code == "TEMP_BLOCK"
    assert hit.recommended_action.suggested_ttl_seconds == 300
    assert hit.evidence.frames == (30,)


def test_request_flood_one_hit_per_window_while_over() -> None:
    detector = RequestFlood(RequestFloodConfig(window_s=2.0, requests_per_window=5))
    hit_times = []
    for i in range(100):  # 10 requests/s for 10 s: over the threshold the whole time
        ts = i * 0.1
        if detector.observe(observe(request(), ts=ts)):
            hit_times.append(round(ts, 6))
    assert hit_times[0] == 0.4  # the 5th request
    assert len(hit_times) == 5  # then one per 2 s window: 0.4, 2.4, 4.4, 6.4, 8.4
    assert all(b - a >= 2.0 - 1e-9 for a, b in itertools.pairwise(hit_times))


def test_request_flood_window_slides() -> None:
    detector = RequestFlood()
    # 30 requests spread over 2.9 s: never 30 within any 2 s window.
    hits = [detector.observe(observe(request(), ts=i * 0.1)) for i in range(30)]
    assert all(h == [] for h in hits)
    # A request exactly one window after the first: the first has left (window is (t-2, t]).
    detector = RequestFlood(RequestFloodConfig(requests_per_window=2))
    assert detector.observe(observe(request(), ts=10.0)) == []
    assert detector.observe(observe(request(), ts=12.0)) == []
    assert detector.observe(observe(request(), ts=13.999)) != []


def test_request_flood_ignores_responses() -> None:
    detector = RequestFlood(RequestFloodConfig(requests_per_window=3))
    for i in range(50):
        assert detector.observe(observe(response(), ts=i * 0.01)) == []
    assert detector.observe(observe(b"garbage\r\n\r\n", ts=0.6)) == []
    assert detector.observe(observe(request(), ts=0.7)) == []
    assert detector.observe(observe(request(), ts=0.8)) == []
    assert detector.observe(observe(request(), ts=0.9)) != []


def test_request_flood_allow_listed_source_is_silent() -> None:
    config = RequestFloodConfig(allow_sources=("192.0.2.0/24",))
    detector = RequestFlood(config)
    for i in range(100):
        assert detector.observe(observe(request(), ts=i * 0.01)) == []
    assert detector.state_size() == 0
    engine = Engine([RequestFlood(config)])
    for i in range(100):
        engine.observe(observe(request(), ts=i * 0.01))
    assert engine.finish() == []


def test_request_flood_state_bounded_under_hostile_sources() -> None:
    detector = RequestFlood(RequestFloodConfig(max_sources=10, requests_per_window=2))
    for i in range(100):  # 10 x max_sources distinct sources, all within one window
        assert detector.observe(observe(request(), ts=i * 0.001, src=ip(i))) == []
        assert detector.state_size() <= 10
    assert detector.evictions() == 90
    # Time passing frees what left the window.
    detector.advance(100.0)
    assert detector.state_size() == 0 and detector.next_deadline() is None


def test_request_flood_through_engine_is_one_finding_per_episode() -> None:
    engine = Engine([RequestFlood(RequestFloodConfig(window_s=2.0, requests_per_window=5))])
    frame = 0
    for i in range(100):  # 10 s of 10 requests/s from one source
        frame += 1
        engine.observe(observe(request(call_id=f"c{i}"), ts=i * 0.1, frame=frame))
    (open_finding,) = engine.findings()
    assert open_finding.count == 5
    for i in range(100, 140):  # 4 s more, still one episode, the count grows
        frame += 1
        engine.observe(observe(request(call_id=f"c{i}"), ts=i * 0.1, frame=frame))
    (finding,) = engine.finish()
    assert finding.detector == "tdos.request_flood" and finding.count == 7
    assert finding.first_seen == pytest.approx(0.4) and finding.last_seen == pytest.approx(12.4)
    assert finding.to_json()["recommended_action"] == {
        "action_code": "TEMP_BLOCK",
        "suggested_ttl_seconds": 300,
    }
    assert len(finding.evidence.frames) == 7


def test_request_flood_new_episode_after_the_gap() -> None:
    engine = Engine([RequestFlood(RequestFloodConfig(requests_per_window=3))])
    for start in (0.0, 1000.0):
        for i in range(3):
            engine.observe(observe(request(), ts=start + i * 0.1))
    first, second = engine.finish()
    assert first.id != second.id and first.count == second.count == 1


# -- TargetFanIn ---------------------------------------------------------------------------------


def test_fan_in_fires_at_threshold_not_below() -> None:
    detector = TargetFanIn()
    for i in range(49):
        assert detector.observe(observe(request(user="555"), ts=i * 0.1, src=ip(i))) == []
    # The same sources again do not add to the distinct count.
    for i in range(49):
        assert detector.observe(observe(request(user="555"), ts=5.0, src=ip(i))) == []
    (hit,) = detector.observe(observe(request(user="555"), ts=5.0, src=ip(49)))
    assert hit.detector == "tdos.target_fan_in" and hit.key == f"555@{DST}"
    assert hit.indicators["sources_in_window"] == "50"
    assert hit.target is not None and hit.target.user == "555"
    assert hit.recommended_action is not None
    assert hit.recommended_action.action_code == "RATE_LIMIT"


def test_fan_in_window_slides() -> None:
    detector = TargetFanIn(TargetFanInConfig(window_s=10.0, sources_per_window=5))
    # 5 distinct sources, 2.5 s apart: the first has left when the fifth arrives (at 10.0).
    for i in range(5):
        assert detector.observe(observe(request(), ts=i * 2.5, src=ip(i))) == []
    # A sixth within the window of sources 2..5 fires.
    assert detector.observe(observe(request(), ts=10.5, src=ip(5))) != []


def test_fan_in_keys_per_target_and_ignores_register_and_responses() -> None:
    detector = TargetFanIn(TargetFanInConfig(sources_per_window=3))
    for i in range(10):
        assert detector.observe(observe(request(user=f"u{i}"), ts=0.1, src=ip(i))) == []
        assert detector.observe(observe(request("REGISTER", user=None), ts=0.1, src=ip(i))) == []
        assert detector.observe(observe(response(), ts=0.1, src=ip(i))) == []
    # Requests without a user in the Request-URI are keyed by host.
    hits = [detector.observe(observe(request(user=None), ts=0.2, src=ip(i))) for i in range(3)]
    assert hits[:2] == [[], []] and hits[2][0].key == DST


def test_fan_in_unparsable_request_uri_keys_by_destination_ip() -> None:
    detector = TargetFanIn(TargetFanInConfig(sources_per_window=2))
    bad = request().replace(f"OPTIONS sip:100@{DST}".encode(), b"OPTIONS sip:[bad")
    obs = observe(bad, ts=0.0, src=ip(1))
    assert obs.request is not None
    with pytest.raises(SipParseError):
        _ = obs.request.request_uri
    assert detector.observe(obs) == []
    (hit,) = detector.observe(observe(bad, ts=0.1, src=ip(2)))
    assert hit.key == f"ip:{DST}"


def test_fan_in_allow_listed_sources_are_silent() -> None:
    detector = TargetFanIn(TargetFanInConfig(sources_per_window=3, allow_sources=("10.0.0.0/8",)))
    for i in range(100):
        assert detector.observe(observe(request(), ts=i * 0.01, src=ip(i))) == []


def test_fan_in_state_bounded_under_hostile_targets() -> None:
    detector = TargetFanIn(TargetFanInConfig(max_targets=10, sources_per_window=2))
    for i in range(100):
        assert detector.observe(observe(request(user=f"t{i}"), ts=i * 0.001)) == []
        assert detector.state_size() <= 10
    assert detector.evictions() == 90
    detector.advance(1000.0)
    assert detector.state_size() == 0


def test_fan_in_through_engine_aggregates() -> None:
    engine = Engine([TargetFanIn(TargetFanInConfig(window_s=10.0, sources_per_window=5))])
    for i in range(300):  # a new source every 0.1 s for 30 s
        engine.observe(observe(request(), ts=i * 0.1, src=ip(i), frame=i + 1))
    (finding,) = engine.finish()
    assert finding.key == f"100@{DST}" and finding.count == 3  # at 0.4, 10.4, 20.4


# -- InviteRatePerTarget -------------------------------------------------------------------------


def test_invite_rate_fires_at_threshold_not_below() -> None:
    detector = InviteRatePerTarget()
    for i in range(19):
        invite = request("INVITE", user="4420", call_id=f"c{i}")
        assert detector.observe(observe(invite, ts=i * 0.4, src=ip(i))) == []
    (hit,) = detector.observe(observe(request("INVITE", user="4420"), ts=19 * 0.4, src=ip(19)))
    assert hit.detector == "tdos.invite_rate_per_target" and hit.key == "4420"
    assert hit.indicators["invites_in_window"] == "20"


def test_invite_rate_window_slides() -> None:
    detector = InviteRatePerTarget()
    # 20 INVITEs over 11.4 s: never 20 within any 10 s window.
    for i in range(20):
        assert detector.observe(observe(request("INVITE"), ts=i * 0.6)) == []


def test_invite_rate_counts_only_new_invites_per_callee() -> None:
    detector = InviteRatePerTarget(
        InviteRatePerTargetConfig(invites_per_window=2, ignore_users=("ivr",))
    )
    for i in range(10):
        ts = i * 0.01
        assert detector.observe(observe(request("OPTIONS"), ts=ts)) == []
        assert detector.observe(observe(request("INVITE", to_tag="x"), ts=ts)) == []  # re-INVITE
        assert detector.observe(observe(request("INVITE", user="ivr"), ts=ts)) == []
        assert detector.observe(observe(request("INVITE", user=None), ts=ts)) == []
        assert detector.observe(observe(request("INVITE", user=f"u{i}"), ts=ts)) == []
        assert detector.observe(observe(response(), ts=ts)) == []
    assert detector.observe(observe(request("INVITE"), ts=1.0)) == []
    assert detector.observe(observe(request("INVITE"), ts=1.1)) != []


def test_invite_rate_allow_listed_source_is_silent() -> None:
    detector = InviteRatePerTarget(InviteRatePerTargetConfig(allow_sources=("192.0.2.10",)))
    for i in range(100):
        assert detector.observe(observe(request("INVITE", call_id=f"c{i}"), ts=i * 0.01)) == []


def test_invite_rate_state_bounded_under_hostile_callees() -> None:
    detector = InviteRatePerTarget(InviteRatePerTargetConfig(max_callees=10))
    for i in range(100):
        assert detector.observe(observe(request("INVITE", user=f"{i:08d}"), ts=i * 0.001)) == []
        assert detector.state_size() <= 10
    assert detector.evictions() == 90


def test_invite_rate_through_engine_aggregates() -> None:
    engine = Engine([InviteRatePerTarget()])
    for i in range(200):  # 5 INVITEs/s to one callee for 40 s, from rotating sources
        engine.observe(
            observe(request("INVITE", call_id=f"c{i}"), ts=i * 0.2, src=ip(i % 7), frame=i + 1)
        )
    (finding,) = engine.finish()
    assert finding.detector == "tdos.invite_rate_per_target"
    assert finding.count == 4  # at 3.8, 13.8, 23.8, 33.8
    assert finding.evidence.call_ids[0] == "c19"
