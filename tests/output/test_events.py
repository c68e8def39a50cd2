"""FS.38 schema-1.0 events derived from findings: one mapping per threat family, subscriber
data only where the event needs it, actions made schema-valid, stable ids."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.detect import DETECTORS, Finding, RecommendedAction, Severity, Target, Threat
from sipwarden.detect.finding import Evidence
from sipwarden.net import Endpoint
from sipwarden.output.document import AnalysisStats, analysis_document
from sipwarden.output.events import (
    DEFAULT_ACTION_TTL_S,
    DEFAULT_MERGE_GAP_S,
    event_type,
    events_from_findings,
    finding_event,
)

T0 = 1_775_824_496.123  # 2026-04-10T12:34:56.123Z

# Patterns of exchange-stir-diameter.md §A.1 (the draft JSON Schema for 1.0).
MESSAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{7,127}$")
SENDER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}$")
UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")
LOG_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
NEEDS_TTL = {"MONITOR", "CHALLENGE", "RATE_LIMIT", "RESTRICT_SERVICE", "TEMP_BLOCK"}
NEEDS_NUMBER = {"IRSF", "WANGIRI", "TRAFFIC_PUMPING", "PREMIUM_RATE_FRAUD"}
NEEDS_IP = {"SIP_SCAN", "EXTENSION_ENUMERATION", "REGISTRATION_BRUTE_FORCE", "TDOS", "SIP_FLOOD"}
NEEDS_SUBSCRIBER = {"SIM_SWAP", "ACCOUNT_TAKEOVER", "SUBSCRIPTION_FRAUD"}


def finding(
    detector: str,
    *,
    severity: Severity = Severity.HIGH,
    indicators: dict[str, str] | None = None,
    action: RecommendedAction | None = None,
    source: str | None = "192.0.2.10",
    target: Target | None = None,
    frames: tuple[int, ...] = (3, 7),
    start: float = T0,
    confidence: int = 80,
    count: int = 4,
) -> Finding:
    threat = Threat(detector.partition(".")[0])
    return Finding(
        detector,
        threat,
        severity,
        confidence,
        f"{detector} test finding",
        "key",
        start,
        start + 5,
        count=count,
        source=Endpoint(source, 5060) if source else None,
        target=target,
        indicators=indicators or {},
        evidence=Evidence(frames, ("abc@192.0.2.10",)),
        recommended_action=action,
    )


def check_schema_rules(message: dict[str, Any]) -> None:
    """The rules of the 1.0 draft schema a mapping bug could break (jsonschema is not a
    dependency; the whole schema was checked against corpus events by hand, see report)."""
    assert list(message) == [
        "message_id",
        "timestamp_utc",
        "schema_version",
        "sender_id",
        "event",
        "recommended_action",
    ]
    assert MESSAGE_ID.match(message["message_id"])
    assert UTC.match(message["timestamp_utc"]) and message["schema_version"] == "1.0"
    assert SENDER_ID.match(message["sender_id"])
    event = message["event"]
    assert 0 <= event["confidence_score"] <= 100
    assert event.get("severity", "low") in {"low", "medium", "high", "critical"}
    evidence = event["evidence"]
    assert all(LOG_REF.match(ref) for ref in evidence["log_refs"])
    assert len(evidence["log_refs"]) == len(set(evidence["log_refs"])) <= 50
    types = {i["type"] for i in event.get("indicators", [])}
    if event["event_type"] in NEEDS_NUMBER:
        assert types & {"tel", "e164_prefix"}
    if event["event_type"] in NEEDS_IP:
        assert types & {"ipv4", "ipv6", "cidr"}
    if event["event_type"] in NEEDS_SUBSCRIBER:
        assert {"msisdn", "imsi"} & set(event)
    assert {"msisdn", "imsi"} & set(event) or types
    action = message["recommended_action"]
    if action["action_code"] in NEEDS_TTL:
        assert 60 <= action["suggested_ttl_seconds"] <= 2_592_000
    if action["action_code"] == "RATE_LIMIT":
        assert action["rate_limit"]["max_requests"] >= 1
        assert 1 <= action["rate_limit"]["per_seconds"] <= 86_400


# One case per threat family (and per detector-name rule within a family).
CASES = [
    ("tdos.request_flood", {}, "SIP_FLOOD"),
    ("tdos.invite_rate_per_target", {"callee": "+447700900123"}, "TDOS"),
    ("recon.scanner_user_agent", {"user_agent": "friendly-scanner"}, "SIP_SCAN"),
    ("recon.extension_enumeration", {}, "EXTENSION_ENUMERATION"),
    ("credential.registration_brute_force", {}, "REGISTRATION_BRUTE_FORCE"),
    ("unauthorized.unauthenticated_call_accepted", {"callee": "+88213000001"}, "TOLL_FRAUD"),
    ("toll_fraud.destination_risk", {"e164": "+88213000001"}, "IRSF"),
    (
        "toll_fraud.destination_risk",
        {"e164": "+447700900123", "number_type": "PREMIUM_RATE"},
        "PREMIUM_RATE_FRAUD",
    ),
    ("toll_fraud.call_velocity", {"account": "1001"}, "TOLL_FRAUD"),
    ("wangiri.ring_and_cancel", {"calling_number": "+88213000001"}, "WANGIRI"),
    ("wangiri.ring_and_cancel", {"calling_number": "0123"}, "ROBOCALL"),
    ("spoofing.identity_mismatch", {"from_user": "+447700900123"}, "CLI_SPOOFING"),
    ("spoofing.stir_shaken_failure", {}, "STIR_SHAKEN_FAILURE"),
    (
        "identity_takeover.binding_change",
        {"msisdn": "+447700900123", "imsi": "234150123456789", "impi": "x@ims"},
        "SIM_SWAP",
    ),
    ("identity_takeover.binding_change", {"impu": "sip:alice@ims"}, "REGISTRATION_HIJACK"),
    ("malformed.parser_defect", {"code": "junk_before_start_line"}, "MALFORMED_SIP"),
    ("injection.payload_in_user_field", {"field": "From"}, "MALFORMED_SIP"),
]


@pytest.mark.parametrize(("detector", "indicators", "expected"), CASES)
def test_each_family_maps_to_its_event_type(
    detector: str, indicators: dict[str, str], expected: str
) -> None:
    f = finding(detector, indicators=indicators)
    assert event_type(f) == expected
    message = finding_event(f, "operator-a")
    assert message is not None and message["event"]["event_type"] == expected
    check_schema_rules(message)


def test_every_threat_family_is_decided() -> None:
    covered = {Threat(d.partition(".")[0]) for d, _, _ in CASES} | {Threat.DISCLOSURE}
    assert covered == set(Threat)


def test_disclosure_is_not_shared() -> None:
    assert finding_event(finding("disclosure.private_address"), "operator-a") is None


def test_registered_detectors_all_map_to_valid_events() -> None:
    """Generic over whatever detectors exist now: each gives a schema-valid event or none."""
    for detector_id in DETECTORS:
        message = finding_event(finding(detector_id), "operator-a")
        if message is not None:
            check_schema_rules(message)
        else:
            assert detector_id.startswith("disclosure.")


def test_conventions_section_4_shape_and_fields() -> None:
    f = finding(
        "recon.scanner_user_agent",
        indicators={"user_agent": "friendly-scanner"},
        action=RecommendedAction("TEMP_BLOCK", 3600),
    )
    message = finding_event(f, "operator-a")
    assert message == {
        "message_id": f"fs38-20260410-{f.id.removeprefix('f-')}",
        "timestamp_utc": "2026-04-10T12:35:02Z",  # last_seen rounded up, never before it
        "schema_version": "1.0",
        "sender_id": "operator-a",
        "event": {
            "event_type": "SIP_SCAN",
            "confidence_score": 80,
            "severity": "high",
            "first_seen_utc": "2026-04-10T12:34:56.123Z",
            "last_seen_utc": "2026-04-10T12:35:01.123Z",
            "indicators": [
                {"type": "ipv4", "value": "192.0.2.10", "role": "source"},
                {"type": "user_agent", "value": "friendly-scanner", "role": "source"},
            ],
            "evidence": {
                "detection_method": "recon.scanner_user_agent",
                "log_refs": [f.id, "frame:3", "frame:7"],
                "detector_id": "recon.scanner_user_agent",
                "observations": 4,
            },
        },
        "recommended_action": {"action_code": "TEMP_BLOCK", "suggested_ttl_seconds": 3600},
    }


def test_message_id_is_stable_and_unique_per_finding() -> None:
    a = finding("tdos.request_flood")
    assert finding_event(a, "x1") == finding_event(a, "x1")
    b = finding("tdos.target_fan_in")
    ids = {finding_event(f, "x1")["message_id"] for f in (a, b)}  # type: ignore[index]
    assert len(ids) == 2


def test_sim_swap_carries_only_msisdn_and_imsi() -> None:
    f = finding(
        "identity_takeover.binding_change",
        indicators={
            "msisdn": "447700900123",  # IMS writes MSISDNs without '+'
            "imsi": "234150123456789",
            "impi": "234150123456789@ims.mnc015.mcc234.3gppnetwork.org",
            "previous_imsi": "234150999999999",
        },
        action=RecommendedAction("INVESTIGATE", 86_400),
    )
    message = finding_event(f, "operator-a")
    assert message is not None
    event = message["event"]
    assert (event["msisdn"], event["imsi"]) == ("+447700900123", "234150123456789")
    text = repr(message)
    assert "234150999999999" not in text and "3gppnetwork" not in text
    assert "abc@192.0.2.10" not in text  # Call-IDs are never copied
    assert message["recommended_action"] == {
        "action_code": "INVESTIGATE",
        "suggested_ttl_seconds": 86_400,
    }


def test_tdos_victim_number_is_not_shared() -> None:
    f = finding("tdos.invite_rate_per_target", indicators={"callee": "+447700900123"})
    assert "+447700900123" not in repr(finding_event(f, "operator-a"))


def test_fraud_numbers_become_tel_and_prefix_indicators() -> None:
    f = finding(
        "toll_fraud.destination_risk",
        indicators={"e164": "+88213000001", "high_risk_prefix": "+88213", "dialled": "0088213"},
    )
    message = finding_event(f, "operator-a")
    assert message is not None
    assert {"type": "tel", "value": "+88213000001", "role": "destination"} in message["event"][
        "indicators"
    ]
    assert {"type": "e164_prefix", "value": "+88213", "role": "destination"} in message["event"][
        "indicators"
    ]
    wangiri = finding_event(
        finding("wangiri.ring_and_cancel", indicators={"calling_number": "+88213000001"}), "a1"
    )
    assert wangiri is not None
    assert wangiri["event"]["indicators"][-1]["role"] == "caller"


def test_fan_in_without_source_names_the_target_address() -> None:
    f = finding("tdos.target_fan_in", source=None, target=Target("2001:db8::5", 5060, "1001"))
    message = finding_event(f, "operator-a")
    assert message is not None
    assert message["event"]["indicators"] == [
        {"type": "ipv6", "value": "2001:db8::5", "role": "destination"}
    ]


@pytest.mark.parametrize(
    ("action", "indicators", "expected"),
    [
        (None, {}, {"action_code": "MONITOR", "suggested_ttl_seconds": DEFAULT_ACTION_TTL_S}),
        (
            RecommendedAction("MONITOR"),
            {},
            {"action_code": "MONITOR", "suggested_ttl_seconds": DEFAULT_ACTION_TTL_S},
        ),
        (
            RecommendedAction("TEMP_BLOCK", 5),
            {},
            {"action_code": "TEMP_BLOCK", "suggested_ttl_seconds": 60},
        ),
        (
            RecommendedAction("RATE_LIMIT", 300),
            {"invites_in_window": "20", "window_s": "10"},
            {
                "action_code": "RATE_LIMIT",
                "suggested_ttl_seconds": 300,
                "rate_limit": {"max_requests": 19, "per_seconds": 10},
            },
        ),
        (
            RecommendedAction("RATE_LIMIT", 300),
            {},
            {"action_code": "MONITOR", "suggested_ttl_seconds": 300},
        ),
        (
            RecommendedAction("RATE_LIMIT", 300),
            {"calls_in_window": "5", "window_s": "inf"},
            {"action_code": "MONITOR", "suggested_ttl_seconds": 300},
        ),
        (RecommendedAction("BLOCK"), {}, {"action_code": "BLOCK"}),
        (RecommendedAction("NONE", 600), {}, {"action_code": "NONE"}),
        (
            RecommendedAction("NUKE_IT", 600),
            {},
            {"action_code": "MONITOR", "suggested_ttl_seconds": 600},
        ),
    ],
)
def test_actions_are_made_schema_valid(
    action: RecommendedAction | None, indicators: dict[str, str], expected: dict[str, Any]
) -> None:
    f = finding("tdos.invite_rate_per_target", indicators=indicators, action=action)
    message = finding_event(f, "operator-a")
    assert message is not None and message["recommended_action"] == expected


def test_min_severity_selects_findings() -> None:
    # One source each: findings about one source would share one event.
    findings = [
        finding("tdos.request_flood", severity=s, source=f"192.0.2.{n}")
        for n, s in enumerate(Severity, start=1)
    ]
    assert len(events_from_findings(findings, "op-a")) == 3  # medium, high, critical
    assert len(events_from_findings(findings, "op-a", Severity.INFO)) == 5
    info = events_from_findings(findings, "op-a", Severity.INFO)[0]
    assert "severity" not in info["event"]  # the schema has no "info"


def test_evidence_frames_are_capped_at_fifty_refs() -> None:
    f = finding("tdos.request_flood", frames=tuple(range(1, 80)))
    message = finding_event(f, "op-a")
    assert message is not None and len(message["event"]["evidence"]["log_refs"]) == 50


def test_document_carries_the_events() -> None:
    f = finding("tdos.request_flood")
    events = events_from_findings([f], "op-a")
    doc = analysis_document(["a.pcap"], AnalysisStats(), [f], None, events)
    assert doc["events"] == events and list(doc)[-1] == "events"
    assert analysis_document(["a.pcap"], AnalysisStats(), [f])["events"] == []


@settings(max_examples=200, deadline=None)
@given(
    detector=st.sampled_from(sorted(DETECTORS)),
    indicators=st.dictionaries(
        st.sampled_from(
            [
                "msisdn",
                "imsi",
                "e164",
                "calling_number",
                "callee",
                "user_agent",
                "window_s",
                "calls_in_window",
                "high_risk_prefix",
                "number_type",
            ]
        ),
        st.text(max_size=20) | st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True),
    ),
    severity=st.sampled_from(list(Severity)),
    ttl=st.none() | st.integers(min_value=-5, max_value=10**9),
    code=st.sampled_from(["MONITOR", "TEMP_BLOCK", "RATE_LIMIT", "BLOCK", "NONE", "x"]),
)
def test_any_finding_gives_a_schema_valid_event_or_none(
    detector: str,
    indicators: dict[str, str],
    severity: Severity,
    ttl: int | None,
    code: str,
) -> None:
    f = finding(
        detector, severity=severity, indicators=indicators, action=RecommendedAction(code, ttl)
    )
    message = finding_event(f, "op-a")
    if message is not None:
        check_schema_rules(message)


# -- regressions and de-duplication -----------------------------------------------------------
def test_timestamp_is_never_before_last_seen() -> None:
    # Regression: timestamp_utc was last_seen cut to the second, so 12:35:01Z < 12:35:01.123Z
    # and receivers checking last_seen_utc <= timestamp_utc (§A.1) rejected the message.
    for start in (T0, float(int(T0))):
        message = finding_event(finding("tdos.request_flood", start=start), "op-a")
        assert message is not None
        stamped = datetime.fromisoformat(message["timestamp_utc"])
        assert stamped >= datetime.fromisoformat(message["event"]["last_seen_utc"])
        assert stamped.timestamp() - (start + 5) < 1


def test_finding_without_a_subject_gives_no_event() -> None:
    # Regression: a finding with no address, subscriber or number gave an event without
    # indicators, which the schema's anyOf rejects.
    for detector in ("malformed.parser_defect", "identity_takeover.binding_change"):
        assert finding_event(finding(detector, source=None), "op-a") is None
    assert events_from_findings([finding("recon.host_sweep", source=None)], "op-a") == []
    # A network attack needs an address: a user agent alone does not do.
    lone_agent = finding(
        "credential.distributed_brute_force", source=None, indicators={"user_agent": "x"}
    )
    assert finding_event(lone_agent, "op-a") is None


def test_two_detectors_on_one_scanner_give_one_event() -> None:
    by_ua = finding(
        "recon.scanner_user_agent",
        indicators={"user_agent": "friendly-scanner"},
        action=RecommendedAction("TEMP_BLOCK", 3600),
        count=24,
        confidence=90,
    )
    by_shape = finding(
        "recon.scanner_fingerprint",
        start=T0 + 2,
        action=RecommendedAction("MONITOR", 600),
        severity=Severity.MEDIUM,
        count=20,
        frames=(7, 9),
    )
    [message] = events_from_findings([by_ua, by_shape], "op-a")
    check_schema_rules(message)
    event = message["event"]
    assert event["event_type"] == "SIP_SCAN"
    assert event["confidence_score"] == 90 and event["severity"] == "high"
    assert event["first_seen_utc"] == "2026-04-10T12:34:56.123Z"
    assert event["last_seen_utc"] == "2026-04-10T12:35:03.123Z"
    assert message["timestamp_utc"] == "2026-04-10T12:35:04Z"
    assert [i["type"] for i in event["indicators"]] == ["ipv4", "user_agent"]
    evidence = event["evidence"]
    assert evidence["detection_method"] == "recon.scanner_user_agent+recon.scanner_fingerprint"
    assert evidence["detector_id"] == "recon.scanner_user_agent"
    assert evidence["observations"] == 24  # same packets seen twice: the larger count
    assert evidence["summary"] == (
        "2 findings by recon.scanner_user_agent, recon.scanner_fingerprint"
    )
    assert evidence["log_refs"][:2] == [by_ua.id, by_shape.id]
    assert evidence["log_refs"].count("frame:7") == 1
    assert message["recommended_action"] == {
        "action_code": "TEMP_BLOCK",
        "suggested_ttl_seconds": 3600,
    }
    assert message["message_id"] == finding_event(by_ua, "op-a")["message_id"]  # type: ignore[index]


def test_one_detectors_episodes_close_together_add_up() -> None:
    parts = [finding("credential.registration_brute_force", start=T0 + n * 60) for n in range(3)]
    [message] = events_from_findings(parts, "op-a")
    assert message["event"]["evidence"]["observations"] == 12
    assert message["event"]["evidence"]["detection_method"] == "credential.registration_brute_force"
    assert "summary" not in message["event"]["evidence"]


def test_detector_ids_too_long_to_join_keep_the_first_as_method() -> None:
    a = finding("unauthorized.unauthenticated_call_accepted")
    b = finding("toll_fraud.sequential_dialing", start=T0 + 1)
    [message] = events_from_findings([a, b], "op-a")
    evidence = message["event"]["evidence"]
    assert evidence["detection_method"] == "unauthorized.unauthenticated_call_accepted"
    assert "toll_fraud.sequential_dialing" in evidence["summary"]
    check_schema_rules(message)


def test_events_split_by_subject_type_and_gap() -> None:
    a = finding("recon.scanner_user_agent")
    other_source = finding("recon.scanner_user_agent", source="192.0.2.99")
    other_type = finding("recon.extension_enumeration")
    # Sightings exactly merge_gap_s apart still merge; one second more starts a new episode.
    touching = finding("recon.scanner_user_agent", start=T0 + 5 + DEFAULT_MERGE_GAP_S)
    assert len(events_from_findings([a, other_source, other_type, touching], "op-a")) == 3
    later = finding("recon.scanner_user_agent", start=T0 + 6 + DEFAULT_MERGE_GAP_S)
    assert len(events_from_findings([a, later], "op-a")) == 2
    assert len(events_from_findings([a, later], "op-a", merge_gap_s=3600)) == 1


@settings(max_examples=100, deadline=None)
@given(
    picks=st.lists(
        st.tuples(
            st.sampled_from(sorted(DETECTORS)),
            st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1", None]),
            st.integers(min_value=0, max_value=2000),
            st.sampled_from(["MONITOR", "TEMP_BLOCK", "RATE_LIMIT", "BLOCK", "NONE"]),
            st.sampled_from([{}, {"e164": "+447700900123"}, {"user_agent": "sipvicious"}]),
        ),
        max_size=12,
    )
)
def test_merged_events_stay_schema_valid_and_one_per_subject_episode(
    picks: list[tuple[str, str | None, int, str, dict[str, str]]],
) -> None:
    findings = [
        finding(d, source=ip, start=T0 + t, action=RecommendedAction(code), indicators=ind)
        for d, ip, t, code, ind in picks
    ]
    events = events_from_findings(findings, "op-a", Severity.INFO)
    singles = [e for f in findings if (e := finding_event(f, "op-a")) is not None]
    assert len(events) <= len(singles)
    assert sum(len(e["event"]["evidence"]["log_refs"]) > 0 for e in events) == len(events)
    for message in events:
        check_schema_rules(message)
        assert message["event"]["first_seen_utc"] <= message["event"]["last_seen_utc"]
