"""tdos.registration_storm: REGISTERs per registrar reach the threshold; a storm of AORs the
registrar never accepted is high, a re-registration burst of known AORs (after an outage) is low.
Fires at N, silent at N-1, the window slides, allow-listed sources are silent, and the registrar
and known-AOR tables stay bounded under a hostile key space."""

from __future__ import annotations

import itertools
from pathlib import Path

import pydantic
import pytest

from sipwarden.detect import DETECTORS, Engine, Observation
from sipwarden.detect.detectors.tdos import RegistrationStorm, RegistrationStormConfig
from sipwarden.detect.taxonomy import Severity
from sipwarden.net import Endpoint
from sipwarden.sip import parse_message
from tests.conftest import need_shared

REGISTRAR = "198.51.100.5"
DOMAIN = "example.net"
_frames = itertools.count(1)
_branches = itertools.count(1)


def ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def register_pair(
    user: str, ts: float, src: str = "192.0.2.10", status: int | None = 200, dst: str = REGISTRAR
) -> list[Observation]:
    """A REGISTER for ``user@DOMAIN`` from ``src`` and (unless ``status`` is None) its answer."""
    branch = f"z9hG4bK{next(_branches)}"
    head = (
        f"Via: SIP/2.0/UDP {src};branch={branch}\r\n"
        f"From: <sip:{user}@{DOMAIN}>;tag=1\r\nTo: <sip:{user}@{DOMAIN}>"
    )
    common = f"\r\nCall-ID: {user}-{branch}\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
    request = f"REGISTER sip:{DOMAIN} SIP/2.0\r\n{head}{common}".encode()
    out = [
        Observation(
            ts, next(_frames), Endpoint(src, 5060), Endpoint(dst, 5060),
            parse_message(request), None, len(request),
        )
    ]  # fmt: skip
    if status is not None:
        reply = f"SIP/2.0 {status} X\r\n{head};tag=r{common}".encode()
        out.append(
            Observation(
                ts + 0.001, next(_frames), Endpoint(dst, 5060), Endpoint(src, 5060),
                parse_message(reply), None, len(reply),
            )
        )  # fmt: skip
    return out


def run(detector: RegistrationStorm, observations: list[Observation]) -> list[Severity]:
    """Observe with a tracker (the engine), returning the severities of the findings."""
    engine = Engine([detector])
    for obs in observations:
        engine.observe(obs)
    return [f.severity for f in engine.finish()]


def small(**kwargs: float) -> RegistrationStorm:
    kwargs.setdefault("min_sources", 3)
    kwargs.setdefault("warmup_s", 0.0)  # the warm-up has its own tests
    return RegistrationStorm(
        RegistrationStormConfig(registers_per_window=10, window_s=10.0, **kwargs)  # type: ignore[arg-type]
    )


def test_registered_with_anchored_defaults() -> None:
    assert DETECTORS["tdos.registration_storm"] is RegistrationStorm
    cfg = RegistrationStormConfig()
    assert (cfg.window_s, cfg.registers_per_window, cfg.min_known_share) == (60.0, 100, 0.8)
    assert cfg.known_aor_ttl_s == 7 * 86400 and cfg.min_sources == 10
    assert "ET Open" in (RegistrationStormConfig.model_fields["window_s"].description or "")
    for name, info in RegistrationStormConfig.model_fields.items():
        assert info.description, name
    with pytest.raises(pydantic.ValidationError, match="min_known_share"):
        RegistrationStormConfig(min_known_share=1.5)


def test_storm_of_unknown_aors_fires_at_n_not_below() -> None:
    detector = small()
    for i in range(9):
        (obs,) = register_pair(f"u{i}", ts=i * 0.1, status=None, src=ip(i))
        assert detector.observe(obs) == []
    (obs,) = register_pair("u9", ts=0.9, status=None, src=ip(9))
    (hit,) = detector.observe(obs)
    assert hit.detector == "tdos.registration_storm" and hit.severity is Severity.HIGH
    assert hit.key == f"{REGISTRAR}|storm"
    assert hit.indicators["unknown_aor_registers"] == "10"
    assert hit.recommended_action is not None
    assert hit.recommended_action.action_code == "RATE_LIMIT"


def test_storm_during_the_warm_up_is_low_then_high() -> None:
    """Right after a registrar is first seen no AOR can be known: low, "too soon to tell";
    after the warm-up the same storm is high."""
    detector = small(warmup_s=100.0)
    hits = []
    for i in range(10):
        (obs,) = register_pair(f"u{i}", ts=i * 0.1, status=None, src=ip(i))
        hits += detector.observe(obs)
    (early,) = hits
    assert early.severity is Severity.LOW and "too soon to tell" in early.summary
    hits = []
    for i in range(10):
        (obs,) = register_pair(f"w{i}", ts=200.0 + i * 0.1, status=None, src=ip(i))
        hits += detector.observe(obs)
    (late,) = hits
    assert late.severity is Severity.HIGH


def test_reregistration_burst_of_known_aors_is_low() -> None:
    detector = small()
    # Normal life: 20 phones register (accepted) once, spread out - no spike.
    before = [o for i in range(20) for o in register_pair(f"p{i}", ts=i * 30.0, src=ip(i))]
    # Outage over at t=1000: all 20 re-register within 2 s.
    burst = [o for i in range(20) for o in register_pair(f"p{i}", 1000 + i * 0.1, src=ip(i))]
    engine = Engine([detector])
    for obs in before + burst:
        engine.observe(obs)
    assert detector.is_known(f"p0@{DOMAIN}", 1001.0)
    assert [f.severity for f in engine.finish()] == [Severity.LOW]


def test_known_share_below_the_minimum_is_a_storm() -> None:
    detector = small(min_known_share=0.8)
    known = [o for i in range(7) for o in register_pair(f"p{i}", ts=i * 30.0, src=ip(i))]
    # 7 known + 3 unknown in the window: 70 % known < 80 % -> storm.
    spike = [o for i in range(7) for o in register_pair(f"p{i}", 1000 + i * 0.1, src=ip(i))]
    spike += [o for i in range(3) for o in register_pair(f"x{i}", 1001 + i * 0.1, status=404)]
    assert run(detector, known + spike) == [Severity.HIGH]
    # 8 known + 2 unknown: exactly 80 % -> burst.
    detector = small(min_known_share=0.8)
    known = [o for i in range(8) for o in register_pair(f"p{i}", ts=i * 30.0, src=ip(i))]
    spike = [o for i in range(8) for o in register_pair(f"p{i}", 1000 + i * 0.1, src=ip(i))]
    spike += [o for i in range(2) for o in register_pair(f"x{i}", 1001 + i * 0.1, status=404)]
    assert run(detector, known + spike) == [Severity.LOW]


def test_failed_registrations_do_not_make_an_aor_known() -> None:
    detector = small()
    run(detector, register_pair("p1", 0.0, status=401) + register_pair("p2", 0.0, status=403))
    assert not detector.is_known(f"p1@{DOMAIN}", 1.0)
    assert not detector.is_known(f"p2@{DOMAIN}", 1.0)


def test_window_slides() -> None:
    detector = small()
    # 10 REGISTERs spread over 10 s: the first has left the (t-10, t] window when the 10th comes.
    for i in range(10):
        (obs,) = register_pair(f"u{i}", ts=i * (10.0 / 9), status=None, src=ip(i))
        assert detector.observe(obs) == []
    (obs,) = register_pair("u10", ts=10.5, status=None, src=ip(10))
    assert detector.observe(obs) != []


def test_one_hit_per_window_per_kind() -> None:
    detector = small()
    hits = []
    for i in range(100):  # 10/s for 10 s of unknown AORs: over all the time
        (obs,) = register_pair(f"u{i}", ts=i * 0.1, status=None, src=ip(i))
        hits.extend(detector.observe(obs))
    assert len(hits) == 1  # first at 0.9 s, the next would be at >= 10.9 s


def test_allow_listed_source_is_silent() -> None:
    detector = RegistrationStorm(
        RegistrationStormConfig(registers_per_window=5, allow_sources=("192.0.2.0/24",))
    )
    for i in range(50):
        (obs,) = register_pair(f"u{i}", ts=i * 0.01, status=None)
        assert detector.observe(obs) == []
    assert detector.state_size() == 0


def test_hostile_registrars_and_aors_stay_bounded() -> None:
    detector = RegistrationStorm(
        RegistrationStormConfig(registers_per_window=5, max_registrars=4, max_known_aors=10)
    )
    engine = Engine([detector])
    for i in range(100):  # 100 registrars, 100 accepted AORs, all within one window
        for obs in register_pair(f"u{i}", ts=i * 0.01, dst=ip(i)):
            engine.observe(obs)
        assert detector.state_size() <= 3 * 4 + 2 * 4 + 10
    assert detector.evictions() >= (100 - 4) + (100 - 10)
    assert engine.finish() == []
    detector.advance(10 * 86400.0)
    assert detector.state_size() == 0 and detector.next_deadline() is None


def test_one_source_is_not_a_storm_however_many_registers() -> None:
    # Regression: svwar/svcrack and the initconf brute force (one source, ~100 REGISTERs a
    # minute) were reported as a registration storm; that is a per-source flood or guessing.
    detector = small(min_sources=3)
    for i in range(100):
        (obs,) = register_pair(f"u{i}", ts=i * 0.05, status=None)
        assert detector.observe(obs) == []


def test_fires_at_min_sources_not_below() -> None:
    detector = small(min_sources=3)
    # 10 REGISTERs from 2 sources: enough REGISTERs, too few clients.
    for i in range(10):
        (obs,) = register_pair(f"u{i}", ts=i * 0.1, status=None, src=ip(i % 2))
        assert detector.observe(obs) == []
    # The 11th from a third source: the window holds 11 REGISTERs from 3 sources.
    (obs,) = register_pair("u10", ts=1.0, status=None, src=ip(2))
    (hit,) = detector.observe(obs)
    assert hit.severity is Severity.HIGH
    assert hit.indicators["distinct_sources_at_least"] == "3"


def test_sources_leave_the_window() -> None:
    detector = small(min_sources=3)
    for i in range(2):  # two sources early, then gone
        (obs,) = register_pair(f"a{i}", ts=0.0, status=None, src=ip(100 + i))
        assert detector.observe(obs) == []
    # 11 s later only one source is active; its 10 REGISTERs do not make a storm.
    for i in range(10):
        (obs,) = register_pair(f"u{i}", ts=11.0 + i * 0.1, status=None, src=ip(1))
        assert detector.observe(obs) == []


def _capture_findings(path: Path) -> list[Severity]:
    from sipwarden.sources.capture import iter_observations

    engine = Engine([RegistrationStorm()])
    for obs in iter_observations(path):
        engine.observe(obs)
    return [f.severity for f in engine.finish()]


def test_single_source_captures_are_not_storms() -> None:
    bruteforce = need_shared("corpus/pcap/attack/initconf--SIP-Bruteforce-Single-IP.pcap")
    assert _capture_findings(bruteforce) == []
    examples = Path(__file__).resolve().parents[2] / "examples" / "captures"
    for name in ("sipvicious-svcrack-loopback.pcap", "sipvicious-svwar-loopback.pcap"):
        assert _capture_findings(examples / name) == [], name
