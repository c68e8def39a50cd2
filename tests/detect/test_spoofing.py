"""spoofing detectors: each judges the identity an initial request presents, across the RFC 3325
trust boundary, stays low until a boundary is configured, honours the allow-list, judges a
retransmitted request once, and keeps bounded state however hostile the traffic. They have no
count threshold: "fires at N, silent at N-1" is the digit floor below which a user is an
extension, not a number."""

from __future__ import annotations

import itertools

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwarden.detect import DETECTORS, Engine, Severity
from sipwarden.detect.detectors.spoofing import (
    CallerEqualsCallee,
    CallerEqualsCalleeConfig,
    IdentityMismatch,
    IdentityMismatchConfig,
    ImpossibleNumber,
    ImpossibleNumberConfig,
    NationalCliFromAbroad,
    NationalCliFromAbroadConfig,
)
from sipwarden.sources.capture import iter_observations
from tests.conftest import need_shared
from tests.detect import feed_one, observe

SRC = "192.0.2.10"
DST = "198.51.100.5"
ALL = (IdentityMismatch, ImpossibleNumber, CallerEqualsCallee, NationalCliFromAbroad)
_CALL_IDS = itertools.count()


def invite(
    caller: str = "+442079460001",
    callee: str = "+442079460000",
    pai: str | None = None,
    to_tag: str = "",
    method: str = "INVITE",
    call_id: str | None = None,
) -> bytes:
    """An initial request; each gets its own Call-ID unless ``call_id`` repeats one."""
    call_id = call_id if call_id is not None else f"c{next(_CALL_IDS)}"
    pai_line = f"P-Asserted-Identity: <sip:{pai}@carrier.example;user=phone>\r\n" if pai else ""
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"{method} sip:{callee}@{DST};user=phone SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {SRC};branch=z9hG4bK{call_id}\r\n"
        f'From: "Caller" <sip:{caller}@{SRC};user=phone>;tag=a1\r\n'
        f"To: <sip:{callee}@{DST};user=phone>{tag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{pai_line}"
        f"Contact: <sip:{caller}@{SRC}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def test_registered_with_spoofing_ids() -> None:
    assert DETECTORS["spoofing.identity_mismatch"] is IdentityMismatch
    assert DETECTORS["spoofing.impossible_number"] is ImpossibleNumber
    assert DETECTORS["spoofing.caller_equals_callee"] is CallerEqualsCallee
    assert DETECTORS["spoofing.national_cli_from_abroad"] is NationalCliFromAbroad


def test_defaults_match_their_anchors() -> None:
    configs = (
        IdentityMismatchConfig(),
        ImpossibleNumberConfig(),
        CallerEqualsCalleeConfig(),
        NationalCliFromAbroadConfig(),
    )
    for cls, config in zip(ALL, configs, strict=True):
        assert cls.Config is type(config)
        assert config.trusted_networks == () and config.home_region is None
        assert config.min_national_digits == 7
        for name, info in cls.Config.model_fields.items():
            assert info.description, f"{cls.id}.{name} has no description"
        assert "RFC 3325" in (cls.Config.model_fields["trusted_networks"].description or "")
        doc = cls.__doc__ or ""
        assert "Signal" in doc and "Why" in doc and "anchor" in doc and "false positives" in doc
    assert NationalCliFromAbroadConfig().international_trunks == ()
    with pytest.raises(pydantic.ValidationError, match="home_regon"):
        ImpossibleNumberConfig(home_regon="GB")  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match="not a region"):
        ImpossibleNumberConfig(home_region="XX")
    with pytest.raises(pydantic.ValidationError, match="CIDR"):
        IdentityMismatchConfig(trusted_networks=("10.0.0.0/33",))
    assert ImpossibleNumberConfig(home_region="gb").home_region == "GB"


# -- IdentityMismatch ----------------------------------------------------------------------------


def test_identity_mismatch_low_without_a_boundary() -> None:
    detector = IdentityMismatch()
    assert detector.observe(observe(invite(pai="+442079460001"))) == []  # PAI == From: nothing
    (hit,) = detector.observe(observe(invite(pai="+442079460999")))
    assert hit.severity is Severity.LOW and hit.key == SRC
    assert hit.indicators["trust_boundary"] == "unconfigured"
    assert hit.indicators["asserted_identity"] == "+442079460999"
    assert hit.recommended_action is not None and hit.recommended_action.action_code == "MONITOR"


def test_identity_mismatch_across_a_configured_boundary() -> None:
    detector = IdentityMismatch(IdentityMismatchConfig(trusted_networks=("203.0.113.0/24",)))
    (hit,) = detector.observe(observe(invite(pai="+442079460999")))
    assert hit.severity is Severity.MEDIUM and hit.indicators["trust_boundary"] == "configured"
    # PAI == From from outside: should have been stripped, worth a low finding only.
    (same,) = detector.observe(observe(invite(pai="+442079460001")))
    assert same.severity is Severity.LOW
    # Inside the trust domain a differing PAI is normal (RFC 3325).
    assert detector.observe(observe(invite(pai="+442079460999"), src="203.0.113.7")) == []


def test_identity_mismatch_compares_numbers_not_spelling() -> None:
    detector = IdentityMismatch(IdentityMismatchConfig(home_region="GB"))
    # The national and the E.164 spelling of one number are the same identity.
    assert detector.observe(observe(invite(caller="02079460001", pai="+442079460001"))) == []
    assert detector.observe(observe(invite(caller="+44-20-7946-0001", pai="+442079460001"))) == []


def test_identity_mismatch_only_judges_initial_requests() -> None:
    detector = IdentityMismatch()
    assert detector.observe(observe(invite(pai="+442079460999", to_tag="b2"))) == []
    assert detector.observe(observe(invite(pai="+442079460999", method="OPTIONS"))) == []
    assert detector.observe(observe(invite(pai="+442079460999", method="MESSAGE"))) != []
    assert detector.observe(observe(b"garbage\r\n\r\n")) == []


def test_identity_mismatch_allow_listed_source_is_silent() -> None:
    config = IdentityMismatchConfig(trusted_networks=("203.0.113.0/24",), allow_sources=(SRC,))
    assert IdentityMismatch(config).observe(observe(invite(pai="+442079460999"))) == []


# -- ImpossibleNumber ----------------------------------------------------------------------------


def test_impossible_number_judges_e164_without_configuration() -> None:
    detector = ImpossibleNumber()
    assert detector.observe(observe(invite(caller="+442079460001"))) == []  # valid
    (impossible,) = detector.observe(observe(invite(caller="+4412")))
    assert impossible.indicators["reason"] == "impossible"
    assert impossible.severity is Severity.LOW
    (unknown_cc,) = detector.observe(observe(invite(caller="+999123456")))
    assert unknown_cc.indicators["reason"] == "impossible"
    (invalid,) = detector.observe(observe(invite(caller="+447700900123")))  # Ofcom drama range
    assert invalid.indicators["reason"] == "invalid" and invalid.severity is Severity.LOW
    # A national number means nothing without a plan; names are not numbers.
    assert detector.observe(observe(invite(caller="07700900123"))) == []
    assert detector.observe(observe(invite(caller="alice"))) == []


def test_impossible_number_prefers_the_asserted_identity() -> None:
    detector = ImpossibleNumber()
    (hit,) = detector.observe(observe(invite(caller="+442079460001", pai="+4412")))
    assert hit.indicators["header"] == "p-asserted-identity"
    assert detector.observe(observe(invite(caller="+4412", pai="+442079460001"))) == []


def test_impossible_number_national_digit_floor_fires_at_n_not_below() -> None:
    detector = ImpossibleNumber(ImpossibleNumberConfig(home_region="GB", min_national_digits=7))
    assert detector.observe(observe(invite(caller="012345"))) == []  # 6 digits: an extension
    (hit,) = detector.observe(observe(invite(caller="0123456")))  # 7 digits: judged
    assert hit.indicators["reason"] == "invalid"  # the right length for GB, but unallocated
    assert detector.observe(observe(invite(caller="02079460001"))) == []  # a valid GB number
    # E.164 written without its '+', as many trunks send it, is valid, not impossible.
    assert detector.observe(observe(invite(caller="442079460001"))) == []
    assert detector.observe(observe(invite(caller="12125550123"))) == []


def test_impossible_number_escalates_only_across_a_configured_boundary() -> None:
    config = ImpossibleNumberConfig(trusted_networks=("203.0.113.0/24",))
    detector = ImpossibleNumber(config)
    (outside,) = detector.observe(observe(invite(caller="+4412")))
    assert outside.severity is Severity.MEDIUM
    (inside,) = detector.observe(observe(invite(caller="+4412"), src="203.0.113.9"))
    assert inside.severity is Severity.LOW
    (invalid,) = detector.observe(observe(invite(caller="+447700900123")))
    assert invalid.severity is Severity.LOW  # metadata lag makes "invalid" weak evidence
    # A national reading is an assumption about the sender's plan: no escalation either.
    national = ImpossibleNumber(config.model_copy(update={"home_region": "GB"}))
    (hit,) = national.observe(observe(invite(caller="0123456789012345")))
    assert hit.indicators["reason"] == "impossible" and hit.severity is Severity.LOW


def test_impossible_number_allow_listed_source_is_silent() -> None:
    detector = ImpossibleNumber(ImpossibleNumberConfig(allow_sources=("192.0.2.0/24",)))
    assert detector.observe(observe(invite(caller="+4412"))) == []


# -- CallerEqualsCallee --------------------------------------------------------------------------


def test_caller_equals_callee_fires_on_full_numbers() -> None:
    detector = CallerEqualsCallee()
    (hit,) = detector.observe(observe(invite(caller="+442079460000", callee="+442079460000")))
    assert hit.severity is Severity.LOW and hit.target is not None
    assert hit.target.user == "+442079460000"
    assert detector.observe(observe(invite(caller="+442079460001", callee="+442079460000"))) == []


def test_caller_equals_callee_digit_floor_fires_at_n_not_below() -> None:
    detector = CallerEqualsCallee(CallerEqualsCalleeConfig(min_national_digits=4))
    assert detector.observe(observe(invite(caller="200", callee="200"))) == []  # voicemail habit
    assert detector.observe(observe(invite(caller="2000", callee="2000"))) != []


def test_caller_equals_callee_national_vs_e164_and_boundary() -> None:
    config = CallerEqualsCalleeConfig(home_region="GB", trusted_networks=("203.0.113.0/24",))
    detector = CallerEqualsCallee(config)
    (hit,) = detector.observe(observe(invite(caller="02079460000", callee="+442079460000")))
    assert hit.severity is Severity.MEDIUM
    inside = detector.observe(
        observe(invite(caller="02079460000", callee="+442079460000"), src="203.0.113.1")
    )
    assert inside[0].severity is Severity.LOW
    assert detector.observe(observe(invite(caller="+442079460000", method="MESSAGE"))) == []


def test_caller_equals_callee_allow_listed_source_is_silent() -> None:
    detector = CallerEqualsCallee(CallerEqualsCalleeConfig(allow_sources=(SRC,)))
    assert detector.observe(observe(invite(caller="+442079460000"))) == []


# -- NationalCliFromAbroad -----------------------------------------------------------------------

TRUNK = "203.0.113.50"


def abroad(**overrides: object) -> NationalCliFromAbroad:
    settings: dict[str, object] = {
        "home_region": "GB",
        "international_trunks": ("203.0.113.48/29",),
        **overrides,
    }
    return NationalCliFromAbroad(NationalCliFromAbroadConfig.model_validate(settings))


def test_national_cli_from_abroad_needs_configuration() -> None:
    assert NationalCliFromAbroad().observe(observe(invite(), src=TRUNK)) == []
    assert abroad(home_region=None).observe(observe(invite(), src=TRUNK)) == []


def test_national_cli_from_abroad_fires_on_home_numbers_from_the_trunk() -> None:
    detector = abroad()
    (hit,) = detector.observe(observe(invite(caller="+442079460001"), src=TRUNK))
    assert hit.severity is Severity.MEDIUM
    assert hit.indicators == {
        "calling_number": "+442079460001",
        "header": "from",
        "region": "GB",
    }
    # The national spelling is the same number.
    assert detector.observe(observe(invite(caller="02079460001"), src=TRUNK)) != []
    # A foreign CLI on the trunk, or a home CLI off the trunk, is normal.
    assert detector.observe(observe(invite(caller="+33142685300"), src=TRUNK)) == []
    assert detector.observe(observe(invite(caller="+442079460001"), src=SRC)) == []
    # Impossible numbers are the impossible_number detector's.
    assert detector.observe(observe(invite(caller="+4412"), src=TRUNK)) == []


def test_national_cli_from_abroad_shared_country_code() -> None:
    detector = abroad(home_region="CA")
    assert detector.observe(observe(invite(caller="+12125550123"), src=TRUNK)) == []  # NYC
    assert detector.observe(observe(invite(caller="+14165550123"), src=TRUNK)) != []  # Toronto


def test_national_cli_from_abroad_allow_listed_source_is_silent() -> None:
    detector = abroad(allow_sources=(TRUNK,))
    assert detector.observe(observe(invite(), src=TRUNK)) == []


# -- all of them ---------------------------------------------------------------------------------


def test_state_stays_bounded_under_hostile_sources_and_numbers() -> None:
    trusted = ("203.0.113.0/24",)
    detectors = [
        IdentityMismatch(IdentityMismatchConfig(trusted_networks=trusted)),
        ImpossibleNumber(ImpossibleNumberConfig(trusted_networks=trusted)),
        CallerEqualsCallee(CallerEqualsCalleeConfig(trusted_networks=trusted)),
        NationalCliFromAbroad(
            NationalCliFromAbroadConfig(trusted_networks=trusted, international_trunks=trusted)
        ),
    ]
    for i in range(500):
        obs = observe(invite(caller=f"+99{i}", callee=f"+99{i}", pai=f"+44{i}"), src=ip(i), ts=i)
        for detector in detectors:
            feed_one(detector, obs)  # as the engine does: due windows first
            assert detector.state_size() <= 33  # Call-IDs of the last 32 s only
    for detector in detectors:
        detector.advance(600.0)
        assert detector.state_size() == 0 and detector.next_deadline() is None
    # Call-IDs alike in their first 128 chars are still distinct calls (kept as a digest).
    bounded = ImpossibleNumber(ImpossibleNumberConfig(max_recent_calls=10))
    for i in range(100):
        bounded.observe(observe(invite(caller="+4412", call_id="x" * 500 + str(i)), ts=i / 100))
        assert bounded.state_size() <= 10
    assert bounded.evictions() == 90


def test_a_retransmission_is_judged_once() -> None:
    # Regression: every retransmission of one spoofed INVITE counted as one more hit.
    detector = ImpossibleNumber()
    data = invite(caller="+4412", call_id="retx")
    assert len(detector.observe(observe(data, ts=0.0))) == 1
    assert detector.observe(observe(data, ts=0.5)) == []  # Timer A retransmission
    assert detector.observe(observe(data, ts=31.9)) == []
    # The INVITE re-sent with credentials after a 407 is the same call (new CSeq, same Call-ID).
    assert detector.observe(observe(data.replace(b"CSeq: 1", b"CSeq: 2"), ts=2.0)) == []
    # A MESSAGE sharing the Call-ID is another request; after Timer B the Call-ID is forgotten.
    assert (
        len(detector.observe(observe(invite(caller="+4412", call_id="retx", method="MESSAGE"))))
        == 1
    )
    detector.advance(40.0)
    assert len(detector.observe(observe(data, ts=40.0))) == 1


def test_engine_aggregates_one_finding_per_source_episode() -> None:
    engine = Engine([ImpossibleNumber()])
    for i in range(5):
        engine.observe(observe(invite(caller="+4412", call_id=f"c{i}"), ts=i, frame=i + 1))
    engine.observe(observe(invite(caller="+4412", call_id="late"), ts=10_000, frame=99))
    first, second = engine.finish()
    assert (first.count, first.evidence.frames) == (5, (1, 2, 3, 4, 5))
    assert second.count == 1 and second.first_seen == 10_000


_NUMBERS = st.from_regex(r"\+?[0-9]{1,17}", fullmatch=True)


@given(_NUMBERS, _NUMBERS, st.one_of(st.none(), _NUMBERS), st.sampled_from([None, "GB", "US"]))
def test_nothing_configured_never_reaches_medium(
    caller: str, callee: str, pai: str | None, region: str | None
) -> None:
    """Without a trust boundary or trunks, any numbers at all stay below medium."""
    obs = observe(invite(caller=caller, callee=callee, pai=pai))
    detectors = [
        IdentityMismatch(IdentityMismatchConfig(home_region=region)),
        ImpossibleNumber(ImpossibleNumberConfig(home_region=region)),
        CallerEqualsCallee(CallerEqualsCalleeConfig(home_region=region)),
        NationalCliFromAbroad(NationalCliFromAbroadConfig(home_region=region)),
    ]
    for detector in detectors:
        assert all(h.severity.rank < Severity.MEDIUM.rank for h in detector.observe(obs))


@pytest.mark.parametrize(
    "capture",
    [
        "normal/heplify--sip_ipv4_tcp_fragmented.pcap",
        "normal/heplify--sip_tcp_websocket.pcap",
        "normal/heplify--ipip0.pcap",
        "normal/snort3_demo--digium.pcap",
        "normal/suricata-verify--cloudshark-sip-s0.pcap",
    ],
)
def test_benign_captures_stay_below_medium(capture: str) -> None:
    path = need_shared(f"corpus/pcap/{capture}")
    engine = Engine([cls() for cls in ALL])
    for obs in iter_observations(path):
        engine.observe(obs)
    assert all(f.severity.rank < Severity.MEDIUM.rank for f in engine.finish())
