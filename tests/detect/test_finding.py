"""Findings serialise exactly as conventions.md §2 and keep stable ids."""

from __future__ import annotations

import pytest

from sipwarden.detect.finding import Evidence, Finding, RecommendedAction, Target, rfc3339
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.net import Endpoint, Transport


def _finding(**changes: object) -> Finding:
    base: dict[str, object] = {
        "detector": "recon.scanner_user_agent",
        "threat": Threat.RECON,
        "severity": Severity.HIGH,
        "confidence": 90,
        "summary": "SIPVicious svmap sweep from 192.0.2.10 (24 OPTIONS to 24 hosts)",
        "key": "192.0.2.10",
        "first_seen": 1775824496.123,
        "last_seen": 1775824510.002,
        "count": 24,
        "source": Endpoint("192.0.2.10", 5060, Transport.UDP),
        "target": Target(ip="198.51.100.5", port=5060, user="1001"),
        "indicators": {"user_agent": "friendly-scanner"},
        "evidence": Evidence(frames=(1, 2, 3), call_ids=("abc",)),
        "recommended_action": RecommendedAction("TEMP_BLOCK", 3600),
    }
    base.update(changes)
    return Finding(**base)  # type: ignore[arg-type]


def test_json_shape_is_conventions_section_2() -> None:
    doc = _finding().to_json()
    assert list(doc) == [
        "id",
        "detector",
        "threat",
        "severity",
        "confidence",
        "summary",
        "first_seen",
        "last_seen",
        "count",
        "source",
        "target",
        "indicators",
        "evidence",
        "recommended_action",
    ]
    assert doc["first_seen"] == "2026-04-10T12:34:56.123Z"
    assert doc["last_seen"] == "2026-04-10T12:35:10.002Z"
    assert doc["source"] == {"ip": "192.0.2.10", "port": 5060, "transport": "udp"}
    assert doc["target"] == {"ip": "198.51.100.5", "port": 5060, "user": "1001"}
    assert doc["evidence"] == {"frames": [1, 2, 3], "call_ids": ["abc"]}
    assert doc["recommended_action"] == {"action_code": "TEMP_BLOCK", "suggested_ttl_seconds": 3600}
    assert doc["id"].startswith("f-") and len(doc["id"]) == 18


def test_id_is_stable_and_depends_on_detector_key_and_start() -> None:
    assert _finding().id == _finding(count=99, last_seen=1775824999.0).id
    assert _finding().id != _finding(key="192.0.2.11").id
    assert _finding().id != _finding(first_seen=1775824496.124).id


def test_detector_id_must_match_its_family() -> None:
    with pytest.raises(ValueError, match="must start with"):
        _finding(threat=Threat.TDOS)


def test_evidence_is_a_bounded_sample() -> None:
    evidence = Evidence()
    for frame in range(1, 100):
        evidence = evidence.add(frame, f"call-{frame}")
    assert len(evidence.frames) == 20 and len(evidence.call_ids) == 20
    assert evidence.add(1, "call-1") == evidence


def test_severity_rank_orders_info_to_critical() -> None:
    assert [s.rank for s in Severity] == [0, 1, 2, 3, 4]
    assert rfc3339(0.0) == "1970-01-01T00:00:00.000Z"


def test_id_of_a_key_with_undecodable_wire_bytes() -> None:
    """Wire text decoded with surrogateescape (non-UTF-8 bytes) may reach a key: the id must
    still be computable, and stable."""
    key = b"agent-\xff\xfe".decode("utf-8", "surrogateescape")
    finding = Finding("recon.x", Threat.RECON, Severity.LOW, 10, "s", key, 1.0, 1.0)
    assert finding.id == Finding("recon.x", Threat.RECON, Severity.LOW, 10, "s", key, 1.0, 1.0).id
    assert finding.id.startswith("f-")
