"""``sipwarden analyze`` as a user runs it, on the bundled LBNL capture (BSD-3, see
examples/captures/README.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.conftest import REPO

CAPTURE = REPO / "examples" / "captures" / "sipvicious-svmap-lbnl.pcap"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipwarden", "analyze", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_json_document_is_conventions_section_3() -> None:
    result = run(str(CAPTURE), "--format", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert list(doc) == ["sipwarden", "inputs", "stats", "findings", "events"]
    assert doc["stats"]["sip_messages"] == 26 and doc["stats"]["requests"] == {"OPTIONS": 26}
    assert doc["stats"]["first_seen"].endswith("Z")
    sources = Counter(f["source"]["ip"] for f in doc["findings"])
    assert len(sources) == 11  # every scanning source, as the capture's description says
    assert sum(f["count"] for f in doc["findings"]) == 26
    assert {f["detector"] for f in doc["findings"]} == {"recon.scanner_user_agent"}


def test_renamed_user_agent_is_still_caught_by_the_from_display_name() -> None:
    result = run(str(CAPTURE), "--format", "jsonl")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    renamed = [r for r in rows if r["indicators"].get("user_agent") == "Zeeko"]
    assert len(renamed) == 1 and renamed[0]["indicators"]["signature"] == "sipvicious"


def test_fail_on_gates_on_severity(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = run(str(CAPTURE), "--format", "json", "--out", str(out), "--fail-on", "high")
    assert result.returncode == 1
    assert json.loads(out.read_text())["findings"]
    assert run(str(CAPTURE), "--fail-on", "critical").returncode == 0


def test_table_is_the_default() -> None:
    result = run(str(CAPTURE))
    assert result.returncode == 0
    assert "recon.scanner_user_agent" in result.stdout and "26 SIP messages" in result.stdout


def test_unreadable_capture_is_an_error_naming_it(tmp_path: Path) -> None:
    bogus = tmp_path / "not-a-capture.pcap"
    bogus.write_bytes(b"hello, this is not a capture file at all")
    result = run(str(bogus))
    assert result.returncode == 2
    assert str(bogus) in result.stderr and "Traceback" not in result.stderr
    missing = run(str(tmp_path / "missing.pcap"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
