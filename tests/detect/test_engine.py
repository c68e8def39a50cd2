"""The engine aggregates hits into one finding per episode, in packet time, within bounds."""

from __future__ import annotations

from typing import ClassVar

from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.engine import Engine, EngineConfig
from sipwarden.detect.finding import Evidence, Finding, RecommendedAction
from sipwarden.detect.observation import Observation
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.detect.tracker import TrackerConfig
from sipwarden.net import Endpoint
from sipwarden.sip import parse_message

OPTIONS = parse_message(
    b"OPTIONS sip:100@198.51.100.5 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:100@198.51.100.5>\r\nCall-ID: c1\r\n"
    b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def obs(ts: float, src: str = "192.0.2.10", frame: int = 1) -> Observation:
    return Observation(
        ts, frame, Endpoint(src, 5060), Endpoint("198.51.100.5", 5060), OPTIONS, None, 100
    )


class EveryMessage(Detector):
    """A test detector: one hit per observation, keyed by source."""

    id: ClassVar[str] = "recon.every_message"
    threat: ClassVar[Threat] = Threat.RECON

    def observe(self, o: Observation) -> list[Finding]:
        if self.allowed(o.src.ip):
            return []
        return [
            Finding(
                self.id,
                self.threat,
                Severity.LOW if o.frame < 3 else Severity.HIGH,
                50,
                f"message from {o.src.ip}",
                o.src.ip,
                o.ts,
                o.ts,
                source=o.src,
                evidence=Evidence(frames=(o.frame,)),
                recommended_action=RecommendedAction("MONITOR" if o.frame < 3 else "TEMP_BLOCK"),
            )
        ]


def test_hits_of_one_key_become_one_finding_per_episode() -> None:
    engine = Engine([EveryMessage()], EngineConfig(episode_gap_s=10))
    for i, ts in enumerate([0.0, 1.0, 2.0, 5.0], start=1):
        engine.observe(obs(ts, frame=i))
    engine.observe(obs(30.0, frame=5))  # 25 s of silence: a new episode
    first, second = engine.finish()
    assert (first.count, first.first_seen, first.last_seen) == (4, 0.0, 5.0)
    assert first.evidence.frames == (1, 2, 3, 4)
    assert first.severity is Severity.HIGH  # the highest seen in the episode
    # ... with the action of the hit that raised it
    assert first.recommended_action == RecommendedAction("TEMP_BLOCK")
    assert (second.count, second.first_seen) == (1, 30.0)
    assert first.id != second.id


def test_gap_exactly_at_the_limit_stays_one_episode() -> None:
    engine = Engine([EveryMessage()], EngineConfig(episode_gap_s=10))
    engine.observe(obs(0.0))
    engine.observe(obs(10.0))
    assert [f.count for f in engine.finish()] == [2]


def test_allow_listed_source_is_silent() -> None:
    detector = EveryMessage(DetectorConfig(allow_sources=("192.0.2.0/24",)))
    engine = Engine([detector])
    engine.observe(obs(0.0, src="192.0.2.99"))
    engine.observe(obs(0.0, src="203.0.113.1"))
    assert [f.key for f in engine.finish()] == ["203.0.113.1"]


def test_disabled_detector_does_not_run() -> None:
    engine = Engine([EveryMessage(DetectorConfig(enabled=False))])
    engine.observe(obs(0.0))
    assert engine.finish() == []


def test_open_episodes_are_bounded_under_a_hostile_key_space() -> None:
    config = EngineConfig(
        max_open_episodes=100, max_findings=500, tracker=TrackerConfig(max_transactions=50)
    )
    engine = Engine([EveryMessage()], config)
    for i in range(10_000):
        engine.observe(obs(float(i) / 1000, src=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"))
        assert engine.state_size() <= 100 + 50
    findings = engine.finish()
    assert len(findings) == 500
    assert engine.stats.findings_dropped == 10_000 - 500
    # Every transaction beyond the 50 held was evicted before its 32 s timeout.
    assert engine.evictions() == (10_000 - 100) + (10_000 - 50)


def test_invalid_allow_list_entry_is_a_config_error_naming_it() -> None:
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="not an IP address"):
        DetectorConfig(allow_sources=("192.0.2.0/33",))


def test_observe_returns_the_findings_this_observation_raised_or_extended() -> None:
    engine = Engine([EveryMessage()], EngineConfig(episode_gap_s=10))
    (first,) = engine.observe(obs(0.0, src="192.0.2.1", frame=1))
    assert (first.key, first.count) == ("192.0.2.1", 1)
    (extended,) = engine.observe(obs(1.0, src="192.0.2.1", frame=2))
    assert (extended.key, extended.count) == ("192.0.2.1", 2)
    allowed = Engine([EveryMessage(DetectorConfig(allow_sources=("192.0.2.0/24",)))])
    assert allowed.observe(obs(0.0, src="192.0.2.1")) == []
