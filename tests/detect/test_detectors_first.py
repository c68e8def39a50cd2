"""The first detectors: each fires on its signal, stays silent without it, and honours the
allow-list; the registry is explicit and its ids match the taxonomy."""

from __future__ import annotations

import subprocess
import sys

from sipwarden.detect import DETECTORS, DetectorConfig, Engine, Threat
from sipwarden.detect.detectors.malformed import ParserDefect
from sipwarden.detect.detectors.recon import ScannerUserAgent
from tests.detect import observe


def request(user_agent: str = "Yealink SIP-T46U", display: str = "Desk") -> bytes:
    return (
        "OPTIONS sip:100@198.51.100.5 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
        f'From: "{display}" <sip:100@198.51.100.5>;tag=1\r\nTo: <sip:100@198.51.100.5>\r\n'
        f"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: {user_agent}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_registry_ids_match_their_family() -> None:
    assert set(DETECTORS) >= {"recon.scanner_user_agent", "malformed.parser_defect"}
    for detector_id, cls in DETECTORS.items():
        assert detector_id.split(".")[0] == cls.threat.value
        assert cls.threat in Threat


def test_scanner_user_agent_fires_and_aggregates_per_source() -> None:
    engine = Engine([ScannerUserAgent()])
    for i in range(24):
        engine.observe(observe(request("friendly-scanner"), ts=i * 0.1, frame=i + 1))
    (finding,) = engine.finish()
    assert finding.detector == "recon.scanner_user_agent"
    assert finding.count == 24 and finding.source is not None
    assert finding.indicators["user_agent"] == "friendly-scanner"
    assert finding.target is not None and finding.target.user == "100"
    assert finding.to_json()["recommended_action"]["action_code"] == "TEMP_BLOCK"


def test_scanner_found_by_from_display_name() -> None:
    (hit,) = ScannerUserAgent().observe(observe(request("x", display="sipvicious")))
    assert hit.indicators["signature"] == "sipvicious"


def test_scanner_user_agent_silent_on_real_phones_and_asterisk() -> None:
    detector = ScannerUserAgent()
    for user_agent in ("Yealink SIP-T46U 108.86.0.45", "Asterisk PBX 20.5.0", "Zoiper rev.10106"):
        assert detector.observe(observe(request(user_agent))) == []


def test_allow_listed_scanner_source_is_silent() -> None:
    engine = Engine([ScannerUserAgent(ScannerUserAgent.Config(allow_sources=("192.0.2.0/24",)))])
    engine.observe(observe(request("friendly-scanner")))
    assert engine.finish() == []


def test_parser_defect_counts_errors_and_violations_per_source() -> None:
    engine = Engine([ParserDefect()])
    engine.observe(observe(b"\x16\x03\x01garbage\r\n\r\n", ts=0.0, frame=1))
    bad_cseq = request().replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
    engine.observe(observe(bad_cseq, ts=1.0, frame=2))
    engine.observe(observe(request(), ts=2.0, frame=3))  # valid: no hit
    (finding,) = engine.finish()
    assert finding.count == 2 and finding.evidence.frames == (1, 2)
    assert finding.indicators["code"] == "cseq_method_mismatch"


def test_config_rejects_unknown_keys() -> None:
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="signaturez"):
        ScannerUserAgent.Config(signaturez=("x",))  # type: ignore[call-arg]
    assert DetectorConfig().allow_sources == ()


def test_cli_lists_and_describes_detectors() -> None:
    run = [sys.executable, "-m", "sipwarden", "detectors"]
    listed = subprocess.run([*run, "list"], capture_output=True, text=True, check=True)
    assert "recon.scanner_user_agent" in listed.stdout
    described = subprocess.run(
        [*run, "describe", "recon.scanner_user_agent"], capture_output=True, text=True, check=True
    )
    assert "signatures =" in described.stdout and "Kamailio" in described.stdout
    missing = subprocess.run(
        [*run, "describe", "nope"], capture_output=True, text=True, check=False
    )
    assert missing.returncode == 2 and "no such detector" in missing.stderr
