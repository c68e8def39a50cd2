"""toll_fraud detectors: dial-string normalisation, range files, destination classification, and
each detector firing at its threshold and not one below, forgetting what left its window,
honouring the allow-list and staying bounded under a hostile key space; plus the corpus."""

from __future__ import annotations

import calendar
import collections
from pathlib import Path

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipwarden.config import ConfigFileError, load_settings
from sipwarden.detect import DETECTORS, Detector, Engine
from sipwarden.detect.detectors.toll_fraud import (
    CallConcurrency,
    CallConcurrencyConfig,
    CallVelocity,
    CallVelocityConfig,
    DestinationRisk,
    DestinationRiskConfig,
    DialPlanConfig,
    OffHoursBurst,
    OffHoursBurstConfig,
    PrefixWalking,
    PrefixWalkingConfig,
    SequentialDialing,
    SequentialDialingConfig,
    classify_destination,
    normalize_dialled,
)
from sipwarden.detect.finding import Finding, RecommendedAction
from sipwarden.detect.taxonomy import Severity
from sipwarden.detect.tracker import Call, CallEvent, CallPhase
from sipwarden.net import Endpoint
from sipwarden.sources.capture import iter_observations
from tests.conftest import need_shared

PLAN = DialPlanConfig()
#: Monday 2026-04-06 12:00 UTC (business hours) and 02:00 UTC (off hours).
MONDAY_NOON = float(calendar.timegm((2026, 4, 6, 12, 0, 0)))
MONDAY_2AM = float(calendar.timegm((2026, 4, 6, 2, 0, 0)))


def event(
    callee: str = "01148185422016",
    ts: float = MONDAY_NOON,
    *,
    account: str | None = "1001",
    src: str = "192.0.2.10",
    phase: CallPhase = CallPhase.STARTED,
    concurrent: int = 0,
    call_id: str = "c1",
) -> CallEvent:
    call = Call(
        call_id,
        Endpoint(src, 5060),
        Endpoint("198.51.100.5", 5060),
        account,
        callee,
        "198.51.100.5",
        None,
        account,
        False,
        "ua",
        ts,
        1,
    )
    return CallEvent(phase, call, ts, 1, concurrent, concurrent)


def ip(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


# -- registry and defaults -----------------------------------------------------------------------

ALL = (
    DestinationRisk,
    PrefixWalking,
    CallVelocity,
    CallConcurrency,
    SequentialDialing,
    OffHoursBurst,
)


def test_registered_with_toll_fraud_ids() -> None:
    for cls in ALL:
        assert DETECTORS[cls.id] is cls
        assert cls.id.startswith("toll_fraud.")


def test_defaults_match_their_anchors() -> None:
    assert (PLAN.international_prefixes, PLAN.outside_line_prefixes) == (("00", "011"), ("9",))
    assert (PLAN.carrier_access_prefix, PLAN.carrier_code_digits) == ("101", 4)
    walk = PrefixWalkingConfig()
    assert (walk.window_s, walk.min_prefixes) == (600.0, 2)
    velocity = CallVelocityConfig()
    assert (velocity.calls_per_minute, velocity.calls_per_day) == (20, 500)
    assert CallConcurrencyConfig().max_concurrent == 10
    assert SequentialDialingConfig().same_number_calls == 10
    off = OffHoursBurstConfig()
    assert (off.business_hours, off.business_days, off.utc_offset_minutes) == (
        "08:00-19:00",
        "Mon-Fri",
        None,
    )
    risk = DestinationRiskConfig()
    assert risk.international_network_codes == ("870", "881", "882", "883")
    assert risk.high_risk_prefixes == {} and risk.country_risk_tiers == {}
    assert "cpm" in (CallVelocityConfig.model_fields["calls_per_minute"].description or "")
    for cls in ALL:
        assert cls.__doc__ and "Known false positives" in cls.__doc__
        for name, info in cls.Config.model_fields.items():
            assert info.description, f"{cls.id}.{name} has no description"
    with pytest.raises(pydantic.ValidationError, match="windw_s"):
        PrefixWalkingConfig(windw_s=1.0)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError, match="PhoneNumberType"):
        DestinationRiskConfig(premium_number_types=("PREMIUM",))
    with pytest.raises(pydantic.ValidationError, match=r"E\.164 prefix"):
        DestinationRiskConfig(high_risk_prefixes={"44-90": "x"})
    with pytest.raises(pydantic.ValidationError, match="digits"):
        DialPlanConfig(international_prefixes=("0x",))


# -- normalize_dialled ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialled", "expected"),
    [
        ("01148185422016", ("+48185422016", "011")),
        ("901148185422016", ("+48185422016", "9011")),
        ("0048185422016", ("+48185422016", "00")),
        ("90048185422016", ("+48185422016", "900")),
        ("+48185422016", ("+48185422016", "+")),
        ("%2B48185422016", ("+48185422016", "+")),
        ("+48-18-542-2016;phone-context=x", ("+48185422016", "+")),
        ("1010222011972598072172", ("+972598072172", "1010222011")),
        ("91010432011972598072172", ("+972598072172", "91010432011")),
        ("9011972598072172", ("+972598072172", "9011")),
        # national numbers, extensions, names, impossible lengths: not international
        ("0185422016", (None, "")),
        ("1001", (None, "")),
        ("alice", (None, "")),
        ("", (None, "")),
        (None, (None, "")),
        ("0112345", (None, "")),  # 5 digits after 011
        ("0111234567890123456", (None, "")),  # 16 digits
        ("+0123456789", (None, "")),
        ("101022201", (None, "")),
    ],
)
def test_normalize_dialled(dialled: str | None, expected: tuple[str | None, str]) -> None:
    assert normalize_dialled(dialled, PLAN) == expected


def test_normalize_dialled_follows_config() -> None:
    plan = DialPlanConfig(
        international_prefixes=("0011",), outside_line_prefixes=("0",), carrier_access_prefix=""
    )
    assert normalize_dialled("0011448431234567", plan) == ("+448431234567", "0011")
    assert normalize_dialled("00011448431234567", plan) == ("+448431234567", "00011")
    assert normalize_dialled("01148185422016", plan) == (None, "")
    assert normalize_dialled("1010222011972598072172", plan) == (None, "")


@given(
    number=st.from_regex(r"[1-9][0-9]{6,14}", fullmatch=True),
    outside=st.sampled_from(["", "9"]),
    carrier=st.sampled_from(["", "1010222", "1010555"]),
    prefix=st.sampled_from(["00", "011"]),
)
def test_normalize_dialled_recovers_any_prefixed_number(
    number: str, outside: str, carrier: str, prefix: str
) -> None:
    e164, used = normalize_dialled(outside + carrier + prefix + number, PLAN)
    assert e164 == "+" + number
    assert used == outside + carrier + prefix


@given(st.text(max_size=40))
def test_normalize_dialled_never_raises(text: str) -> None:
    e164, used = normalize_dialled(text, PLAN)
    assert e164 is None or (e164[0] == "+" and e164[1:].isdigit() and len(e164) <= 16)
    assert (e164 is None) == (used == "")


# -- high-risk ranges through the config file ---------------------------------------------------


def _risk_config(tmp_path: Path, ranges: str) -> DestinationRiskConfig:
    (tmp_path / "irsf-ranges.txt").write_text(ranges, encoding="utf-8")
    (tmp_path / "sipwarden.toml").write_text(
        '[detectors."toll_fraud.destination_risk"]\nhigh_risk_prefixes_file = "irsf-ranges.txt"\n',
        encoding="utf-8",
    )
    config = load_settings(tmp_path / "sipwarden.toml").detectors["toll_fraud.destination_risk"]
    assert isinstance(config, DestinationRiskConfig)
    return config


def test_range_file_reads_prefixes_with_or_without_plus(tmp_path: Path) -> None:
    # Regression: "37167" (no '+'), the documented file format, was rejected by the loader.
    text = (
        "# operator IRSF list\n"
        "\n"
        "+88234   satellite range from advisory 12  # trailing comment\n"
        "37167\tLV premium\n"
        "+88234 duplicate keeps the first label\n"
        "2521\n"
    )
    config = _risk_config(tmp_path, text)
    assert config.high_risk_prefixes == {
        "+88234": "satellite range from advisory 12",
        "+37167": "LV premium",
        "+2521": "",
    }
    risk = classify_destination("+37167123456", config)
    assert risk is not None and risk.severity is Severity.HIGH
    assert risk.reasons[0] == "operator range +37167 (LV premium)"


def test_inline_ranges_are_normalised_and_first_spelling_wins() -> None:
    config = DestinationRiskConfig(high_risk_prefixes={"48185": "a", "+48185": "b"})
    assert config.high_risk_prefixes == {"+48185": "a"}


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("+4490\n+44-90 bad\n", 2, "E.164 prefix"),
        ("# c\n\nabc\n", 3, "E.164 prefix"),
        ("+1234567890123456\n", 1, "E.164 prefix"),
        ("+4490 " + "x" * 65 + "\n", 1, "longer than 64"),
    ],
)
def test_range_file_error_names_the_file_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    with pytest.raises(ConfigFileError, match=message) as info:
        _risk_config(tmp_path, text)
    assert f"irsf-ranges.txt:{line}" in str(info.value)


# -- classify_destination ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("e164", "severity", "number_type", "region"),
    [
        ("+449012345678", Severity.MEDIUM, "PREMIUM_RATE", "GB"),
        ("+19005551234", Severity.MEDIUM, "PREMIUM_RATE", "US"),
        ("+881612345678", Severity.MEDIUM, "MOBILE", "001"),
        ("+882345678901", Severity.MEDIUM, "UNKNOWN", "001"),
        ("+33810123456", Severity.LOW, "SHARED_COST", "FR"),
        ("+445512345678", Severity.LOW, "UAN", "GB"),
    ],
)
def test_classify_destination_risky(
    e164: str, severity: Severity, number_type: str, region: str
) -> None:
    risk = classify_destination(e164, DestinationRiskConfig())
    assert risk is not None
    assert (risk.severity, risk.number_type, risk.region) == (severity, number_type, region)


def test_classify_destination_ordinary_numbers_are_not_risky() -> None:
    for e164 in ("+48185422016", "+972598072172", "+442079460000", "+12125550100", "+999"):
        assert classify_destination(e164, DestinationRiskConfig()) is None


def test_classify_destination_country_tiers() -> None:
    config = DestinationRiskConfig(country_risk_tiers={"PL": "high", "IL": "low"})
    risk = classify_destination("+48185422016", config)
    assert risk is not None and risk.severity is Severity.HIGH
    risk = classify_destination("+972598072172", config)
    assert risk is not None and risk.severity is Severity.LOW


# -- DestinationRisk -----------------------------------------------------------------------------


def test_destination_risk_fires_on_risky_call_only() -> None:
    detector = DestinationRisk()
    assert detector.on_call(event("01148185422016")) == []  # ordinary Polish number
    assert detector.on_call(event("1001")) == []  # an extension
    (hit,) = detector.on_call(event("9011449012345678"))
    assert hit.detector == "toll_fraud.destination_risk" and hit.severity is Severity.MEDIUM
    assert hit.indicators["e164"] == "+449012345678"
    assert hit.indicators["dial_prefix"] == "9011"
    assert hit.indicators["number_type"] == "PREMIUM_RATE"
    assert hit.key == "192.0.2.10>+449012345678"
    # One hit per caller and number per minute; other phases are ignored.
    assert detector.on_call(event("9011449012345678", MONDAY_NOON + 1)) == []
    assert detector.on_call(event("9011449012345678", MONDAY_NOON + 61)) != []
    assert detector.on_call(event("9011449012345678", phase=CallPhase.ENDED)) == []


def test_destination_risk_operator_range_is_high_with_action() -> None:
    config = DestinationRiskConfig(high_risk_prefixes={"+48185": "test"})
    (hit,) = DestinationRisk(config).on_call(event("01148185422016"))
    assert hit.severity is Severity.HIGH
    assert hit.recommended_action is not None
    assert hit.recommended_action.action_code == "RESTRICT_SERVICE"


def test_destination_risk_allow_listed_source_is_silent() -> None:
    detector = DestinationRisk(DestinationRiskConfig(allow_sources=("192.0.2.0/24",)))
    assert detector.on_call(event("9011449012345678")) == []
    assert detector.state_size() == 0


def test_destination_risk_state_bounded() -> None:
    detector = DestinationRisk(DestinationRiskConfig(max_callers=10))
    for i in range(100):
        assert detector.on_call(event("011449012345678", MONDAY_NOON + i, account=f"a{i}"))
        assert detector.state_size() <= 11  # 10 throttled callers + 1 source's account list
    assert detector.evictions() == 90
    detector.advance(MONDAY_NOON + 5000)  # past the 1 h memory of the source's accounts
    assert detector.state_size() == 0 and detector.next_deadline() is None


# -- PrefixWalking -------------------------------------------------------------------------------


def test_prefix_walking_fires_at_two_prefixes_not_one() -> None:
    detector = PrefixWalking()
    for i in range(20):  # one prefix, many times: silent
        assert detector.on_call(event("01148185422016", MONDAY_NOON + i)) == []
    (hit,) = detector.on_call(event("901148185422016", MONDAY_NOON + 30))
    assert hit.detector == "toll_fraud.prefix_walking" and hit.severity is Severity.HIGH
    assert hit.key == "192.0.2.10>+48185422016"
    assert hit.indicators["prefixes_in_window"] == "2"
    assert hit.recommended_action is not None
    assert hit.recommended_action.action_code == "TEMP_BLOCK"
    # A third prefix is a new hit at once; a known prefix again waits for the repeat interval.
    assert detector.on_call(event("1010222011972598072172", MONDAY_NOON + 31)) == []  # own key
    (hit,) = detector.on_call(event("0048185422016", MONDAY_NOON + 32))
    assert hit.indicators["prefixes_in_window"] == "3"
    assert detector.on_call(event("0048185422016", MONDAY_NOON + 33)) == []
    assert detector.on_call(event("0048185422016", MONDAY_NOON + 93)) != []


def test_prefix_walking_threshold_is_configurable() -> None:
    detector = PrefixWalking(PrefixWalkingConfig(min_prefixes=3))
    assert detector.on_call(event("011972598072172")) == []
    assert detector.on_call(event("9011972598072172")) == []
    assert detector.on_call(event("1010222011972598072172")) != []


def test_prefix_walking_ignores_plus_form_and_national_numbers() -> None:
    detector = PrefixWalking()
    assert detector.on_call(event("+48185422016")) == []
    assert detector.on_call(event("0048185422016")) == []
    assert detector.on_call(event("0185422016")) == []
    assert detector.on_call(event("185422016")) == []


def test_prefix_walking_window_slides() -> None:
    detector = PrefixWalking()
    assert detector.on_call(event("01148185422016", MONDAY_NOON)) == []
    # Exactly one window later the first prefix has left: (t - 600, t].
    assert detector.on_call(event("901148185422016", MONDAY_NOON + 600)) == []
    assert detector.on_call(event("0048185422016", MONDAY_NOON + 1199)) != []


def test_prefix_walking_keys_by_source() -> None:
    detector = PrefixWalking()
    assert detector.on_call(event("01148185422016", src="192.0.2.10")) == []
    assert detector.on_call(event("901148185422016", src="192.0.2.11")) == []


def test_prefix_walking_allow_listed_source_is_silent() -> None:
    detector = PrefixWalking(PrefixWalkingConfig(allow_sources=("192.0.2.10",)))
    for prefix in ("011", "9011", "00", "900"):
        assert detector.on_call(event(prefix + "48185422016")) == []
    assert detector.state_size() == 0


def test_prefix_walking_state_bounded_under_hostile_sources() -> None:
    detector = PrefixWalking(PrefixWalkingConfig(max_keys=10))
    for i in range(100):
        assert detector.on_call(event("01148185422016", MONDAY_NOON + i * 0.01, src=ip(i))) == []
        assert detector.state_size() <= 10
    assert detector.evictions() == 90
    detector.advance(MONDAY_NOON + 10_000)
    assert detector.state_size() == 0 and detector.next_deadline() is None


# -- CallVelocity --------------------------------------------------------------------------------


def test_call_velocity_per_minute_fires_at_threshold_not_below() -> None:
    detector = CallVelocity()
    for i in range(19):
        assert detector.on_call(event(f"10{i}", MONDAY_NOON + i * 3)) == []
    (hit,) = detector.on_call(event("1099", MONDAY_NOON + 57))
    assert hit.detector == "toll_fraud.call_velocity" and hit.key == "192.0.2.10"
    assert hit.indicators["calls_in_minute"] == "20"
    assert hit.severity is Severity.MEDIUM


def test_call_velocity_per_minute_window_slides() -> None:
    detector = CallVelocity()
    # 20 calls, the last exactly 60 s after the first: never 20 within (t - 60, t].
    for i in range(20):
        ts = MONDAY_NOON + i * 60 / 19
        assert detector.on_call(event(f"10{i}", ts)) == []


def test_call_velocity_per_day_fires_at_threshold_and_resets_at_day_change() -> None:
    config = CallVelocityConfig(calls_per_day=5, calls_per_minute=100)
    detector = CallVelocity(config)
    day_start = MONDAY_NOON - 12 * 3600
    for i in range(4):
        assert detector.on_call(event(f"10{i}", day_start + i * 3600)) == []
    # The 5th call is the next day: a new count.
    assert detector.on_call(event("105", day_start + 86_400 + 1)) == []
    (hit,) = detector.on_call(event("104", day_start + 5 * 3600))
    assert hit.key == "192.0.2.10" and hit.indicators["calls_in_day"] == "5"
    # With an offset of +13 h the 24:00 UTC boundary moves to 11:00 UTC.
    detector = CallVelocity(CallVelocityConfig(calls_per_day=2, utc_offset_minutes=13 * 60))
    assert detector.on_call(event("1", MONDAY_NOON - 7200)) == []  # 10:00 UTC, day d
    assert detector.on_call(event("2", MONDAY_NOON)) == []  # 12:00 UTC, day d + 1


def test_call_velocity_allow_listed_and_bounded() -> None:
    detector = CallVelocity(CallVelocityConfig(allow_sources=("192.0.2.0/24",)))
    for i in range(50):
        assert detector.on_call(event("1", MONDAY_NOON + i)) == []
    assert detector.state_size() == 0
    detector = CallVelocity(CallVelocityConfig(max_accounts=10))
    for i in range(100):
        assert detector.on_call(event("1", MONDAY_NOON + i * 0.01, account=f"a{i}")) == []
        assert detector.stats().entries <= 30
    assert detector.evictions() == 180  # per-minute and per-day tables, 90 each
    detector.advance(MONDAY_NOON + 200_000)
    assert detector.state_size() == 0 and detector.next_deadline() is None


def test_call_velocity_falls_back_to_source_ip() -> None:
    detector = CallVelocity(CallVelocityConfig(calls_per_minute=2))
    assert detector.on_call(event("1", account=None)) == []
    (hit,) = detector.on_call(event("2", account=None))
    assert hit.key == "192.0.2.10" and hit.indicators["account"] == "192.0.2.10"


# -- CallConcurrency -----------------------------------------------------------------------------


def test_call_concurrency_fires_at_threshold_not_below() -> None:
    detector = CallConcurrency()
    assert detector.on_call(event(phase=CallPhase.ANSWERED, concurrent=9)) == []
    assert detector.on_call(event(phase=CallPhase.STARTED, concurrent=50)) == []
    (hit,) = detector.on_call(event(phase=CallPhase.ANSWERED, concurrent=10))
    assert hit.detector == "toll_fraud.call_concurrency"
    assert hit.indicators["concurrent_calls"] == "10"
    # Rate-limited, then again after the repeat interval.
    assert (
        detector.on_call(event(ts=MONDAY_NOON + 1, phase=CallPhase.ANSWERED, concurrent=11)) == []
    )
    ts = MONDAY_NOON + 61
    assert detector.on_call(event(ts=ts, phase=CallPhase.ANSWERED, concurrent=11)) != []


def test_call_concurrency_allow_listed_and_bounded() -> None:
    detector = CallConcurrency(CallConcurrencyConfig(allow_sources=("192.0.2.10",)))
    assert detector.on_call(event(phase=CallPhase.ANSWERED, concurrent=99)) == []
    detector = CallConcurrency(CallConcurrencyConfig(max_accounts=10))
    for i in range(100):
        hits = detector.on_call(
            event(ts=MONDAY_NOON + i, phase=CallPhase.ANSWERED, concurrent=10, account=f"a{i}")
        )
        assert len(hits) == 1 and detector.state_size() <= 11  # + the source's account list
    assert detector.evictions() == 90


# -- SequentialDialing ---------------------------------------------------------------------------


def test_sequential_same_number_fires_at_threshold_not_below() -> None:
    detector = SequentialDialing()
    # 01148... and 901148... are the same number.
    for i in range(9):
        callee = "01148185422016" if i % 2 else "901148185422016"
        assert detector.on_call(event(callee, MONDAY_NOON + i)) == []
    (hit,) = detector.on_call(event("0048185422016", MONDAY_NOON + 9))
    assert hit.key == "192.0.2.10" and hit.indicators["consecutive_calls"] == "10"


def test_sequential_run_breaks_on_other_number_and_idle_time() -> None:
    detector = SequentialDialing()
    for i in range(9):
        assert detector.on_call(event("5551234", MONDAY_NOON + i)) == []
    assert detector.on_call(event("5559999", MONDAY_NOON + 9)) == []
    assert detector.on_call(event("5551234", MONDAY_NOON + 10)) == []
    detector = SequentialDialing()
    for i in range(9):
        assert detector.on_call(event("5551234", MONDAY_NOON + i)) == []
    # An hour of silence forgets the run.
    assert detector.on_call(event("5551234", MONDAY_NOON + 8 + 3600)) == []


def test_sequential_incrementing_numbers() -> None:
    detector = SequentialDialing()
    for i in range(9):
        assert detector.on_call(event(f"01144870000{i:03d}", MONDAY_NOON + i)) == []
    (hit,) = detector.on_call(event("01144870000009", MONDAY_NOON + 9))
    assert hit.indicators["pattern"] == "incrementing numbers"


def test_sequential_allow_listed_and_bounded() -> None:
    detector = SequentialDialing(SequentialDialingConfig(allow_sources=("192.0.2.10",)))
    for i in range(20):
        assert detector.on_call(event("5551234", MONDAY_NOON + i)) == []
    assert detector.state_size() == 0
    detector = SequentialDialing(SequentialDialingConfig(max_accounts=10))
    for i in range(100):
        assert detector.on_call(event("5551234", MONDAY_NOON + i, account=f"a{i}")) == []
        assert detector.state_size() <= 10
    assert detector.evictions() == 90


# -- OffHoursBurst -------------------------------------------------------------------------------


def test_off_hours_clock() -> None:
    detector = OffHoursBurst()
    assert not detector.off_hours(MONDAY_NOON)
    assert detector.off_hours(MONDAY_2AM)
    assert detector.off_hours(MONDAY_NOON - 2 * 86_400)  # Saturday noon
    assert detector.off_hours(MONDAY_NOON + 7 * 3600)  # 19:00 is closed
    assert not detector.off_hours(MONDAY_NOON - 4 * 3600)  # 08:00 is open
    shifted = OffHoursBurst(OffHoursBurstConfig(utc_offset_minutes=-10 * 60))
    assert shifted.off_hours(MONDAY_NOON)  # 02:00 local
    night = OffHoursBurst(
        OffHoursBurstConfig(business_hours="22:00-06:00", business_days="Sun-Thu")
    )
    assert not night.off_hours(MONDAY_2AM)
    assert night.off_hours(MONDAY_NOON)
    assert night.off_hours(MONDAY_2AM - 3 * 86_400)  # Friday


def test_off_hours_burst_fires_at_threshold_not_below() -> None:
    detector = OffHoursBurst()
    for i in range(9):
        assert detector.on_call(event(f"10{i}", MONDAY_2AM + i * 30)) == []
    (hit,) = detector.on_call(event("1099", MONDAY_2AM + 300))
    assert hit.detector == "toll_fraud.off_hours_burst"
    assert hit.indicators["calls_in_window"] == "10"


def test_off_hours_burst_ignores_business_hours_and_slides() -> None:
    detector = OffHoursBurst()
    for i in range(50):
        assert detector.on_call(event(f"10{i}", MONDAY_NOON + i)) == []
    for i in range(20):  # one call each 67 s: 10 calls span 603 s, never within 600 s
        assert detector.on_call(event(f"10{i}", MONDAY_2AM + i * 67)) == []


def test_off_hours_burst_allow_listed_and_bounded() -> None:
    detector = OffHoursBurst(OffHoursBurstConfig(allow_sources=("192.0.2.10",)))
    for i in range(20):
        assert detector.on_call(event("1", MONDAY_2AM + i)) == []
    assert detector.state_size() == 0
    detector = OffHoursBurst(OffHoursBurstConfig(max_accounts=10))
    for i in range(100):
        assert detector.on_call(event("1", MONDAY_2AM + i * 0.01, account=f"a{i}")) == []
        assert detector.state_size() <= 10
    assert detector.evictions() == 90
    detector.advance(MONDAY_2AM + 10_000)
    assert detector.state_size() == 0 and detector.next_deadline() is None


def test_off_hours_burst_is_low_until_the_offset_is_configured() -> None:
    # Regression: with nothing configured, every capture from outside UTC's office day was
    # "off hours" and got a medium finding.
    detector = OffHoursBurst()
    hits = [h for i in range(10) for h in detector.on_call(event(f"10{i}", MONDAY_2AM + i))]
    assert [(h.severity, h.recommended_action) for h in hits] == [
        (Severity.LOW, RecommendedAction("MONITOR"))
    ]
    assert "offset not configured" in hits[0].summary
    detector = OffHoursBurst(OffHoursBurstConfig(utc_offset_minutes=0))
    hits = [h for i in range(10) for h in detector.on_call(event(f"10{i}", MONDAY_2AM + i))]
    assert [h.severity for h in hits] == [Severity.MEDIUM]
    assert "UTC+0 min" in hits[0].summary


# -- one finding per source ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("detector", "phase"),
    [
        (SequentialDialing(), CallPhase.STARTED),
        (OffHoursBurst(), CallPhase.STARTED),
        (CallVelocity(CallVelocityConfig(calls_per_minute=10)), CallPhase.STARTED),
        (CallConcurrency(), CallPhase.ANSWERED),
        (DestinationRisk(), CallPhase.STARTED),
    ],
)
def test_rotating_accounts_of_one_source_share_one_key(
    detector: Detector, phase: CallPhase
) -> None:
    # Regression: initconf--SIP-212.32.250.134 cycles the From user (101, 202, ... 4004) from
    # one address; keyed per account that was 14 findings per detector for one attacker.
    hits: list[Finding] = []
    for a in range(12):
        for i in range(10):
            ts = MONDAY_2AM + a * 120 + i
            hits += detector.on_call(
                event("9011449012345678", ts, account=f"{a}0{a}", phase=phase, concurrent=10)
            )
    assert len(hits) >= 12
    assert {h.key for h in hits} == {"192.0.2.10>+449012345678"} or {h.key for h in hits} == {
        "192.0.2.10"
    }
    last = hits[-1].indicators
    assert last["account"] == "11011"
    # The first ten accounts are named, the rest shown as "..."; the summary says so too.
    assert last["accounts"] == ", ".join(f"{a}0{a}" for a in range(10)) + ", ..."
    assert "flagged accounts from 192.0.2.10: " in hits[-1].summary
    assert "accounts" not in hits[0].summary


def test_account_list_is_bounded_under_hostile_sources() -> None:
    detector = SequentialDialing(SequentialDialingConfig(same_number_calls=2, max_accounts=10))
    for i in range(100):
        for n in range(2):
            ts = MONDAY_NOON + i + n / 10
            detector.on_call(event("5551234", ts, src=ip(i), account=f"{i}" + "x" * 128))
        assert detector.state_size() <= 30  # runs, throttle, account lists: 10 each
    assert detector.evictions() >= 2 * 90  # throttle entries over 60 s old expire instead
    hits = [
        h
        for n in range(2)
        for h in detector.on_call(event("5551234", MONDAY_NOON + 200 + n, account="y" * 128))
    ]
    assert len(hits) == 1 and len(hits[0].indicators["account"]) == 64


# -- corpus --------------------------------------------------------------------------------------


def _run(path: str) -> list[Finding]:
    engine = Engine([cls() for cls in ALL])
    for obs in iter_observations(need_shared(path)):
        engine.observe(obs)
    return engine.finish()


def test_corpus_212_32_250_134_one_finding_per_detector() -> None:
    findings = _run("corpus/pcap/attack/initconf--SIP-212.32.250.134.pcap")
    by_detector = collections.Counter(f.detector for f in findings)
    assert by_detector == {
        "toll_fraud.prefix_walking": 1,
        "toll_fraud.sequential_dialing": 1,
        "toll_fraud.off_hours_burst": 1,
    }
    (walk,) = [f for f in findings if f.detector == "toll_fraud.prefix_walking"]
    assert walk.severity is Severity.HIGH
    assert walk.key == "206.55.185.163>+48185422016"
    assert walk.recommended_action is not None
    (sequential,) = [f for f in findings if f.detector == "toll_fraud.sequential_dialing"]
    assert sequential.severity is Severity.MEDIUM and sequential.key == "206.55.185.163"
    assert sequential.indicators["accounts"].startswith("101, 202, 303")
    (night,) = [f for f in findings if f.detector == "toll_fraud.off_hours_burst"]
    assert night.severity is Severity.LOW  # no utc_offset_minutes configured


def test_corpus_prefix_walking_3700_unauthorized() -> None:
    findings = _run("corpus/pcap/attack/initconf--SIP-3700-unauthorized-401.pcap")
    walks = {f.key: f for f in findings if f.detector == "toll_fraud.prefix_walking"}
    assert set(walks) == {"40.129.198.250>+972598072172", "40.129.198.250>+972599501806"}
    assert all(f.severity is Severity.HIGH for f in walks.values())
    # The second number was walked with 011, 9011 and four dial-around carrier codes.
    assert walks["40.129.198.250>+972598072172"].indicators["prefixes_in_window"] == "6"


NORMAL = [
    "heplify--sip_ipv4_tcp.pcap",
    "heplify--sip_ipv6_udp.pcap",
    "ndpi--FAX-Call-t38-CA-TDM-SIP-FB-1.pcap",
    "snort3_demo--SIP_Eyebeam2Eyebeam_Video_Audio.pcap",
    "snort3_demo--digium.pcap",
    "suricata-verify--cloudshark-sip-s0.pcap",
    "suricata-verify--sip-invite-sdp-200.pcap",
    "suricata-verify--wireshark-aaa-sip-rtp.pcap",
]


@pytest.mark.parametrize("name", NORMAL)
def test_corpus_benign_captures_nothing_medium_or_above(name: str) -> None:
    findings = _run(f"corpus/pcap/normal/{name}")
    severe = collections.Counter(
        f.detector for f in findings if f.severity.rank >= Severity.MEDIUM.rank
    )
    assert severe == collections.Counter()
