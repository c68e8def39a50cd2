"""``sipwarden analyze`` as a user runs it, on the bundled LBNL capture (BSD-3, see
examples/captures/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO, need_shared

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
    # Other recon detectors may also fire on the sweep; the User-Agent one counts every packet.
    by_user_agent = [f for f in doc["findings"] if f["detector"] == "recon.scanner_user_agent"]
    sources = Counter(f["source"]["ip"] for f in by_user_agent)
    assert len(sources) == 11  # every scanning source, as the capture's description says
    assert sum(f["count"] for f in by_user_agent) == 26
    assert {f["threat"] for f in doc["findings"]} == {"recon"}


def test_renamed_user_agent_is_still_caught_by_the_from_display_name() -> None:
    result = run(str(CAPTURE), "--format", "jsonl")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    renamed = [
        r
        for r in rows
        if r["detector"] == "recon.scanner_user_agent"
        and r["indicators"].get("user_agent") == "Zeeko"
    ]
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


# -- events, html, config, errors --------------------------------------------------------------
def test_events_out_writes_fs38_events_also_in_the_document(tmp_path: Path) -> None:
    events_path = tmp_path / "events.jsonl"
    result = run(str(CAPTURE), "--format", "json", "--events-out", str(events_path))
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    events = [json.loads(line) for line in events_path.read_text().splitlines()]
    assert events and events == doc["events"]
    high = [f for f in doc["findings"] if f["severity"] in ("medium", "high", "critical")]
    assert len(events) == len(high)
    for event in events:
        assert event["schema_version"] == "1.0" and event["sender_id"] == "unconfigured"
        assert event["event"]["event_type"] == "SIP_SCAN"
        assert event["event"]["indicators"][0]["type"] == "ipv4"
    # same capture, same events: ids are stable
    again = tmp_path / "again.jsonl"
    run(str(CAPTURE), "--format", "jsonl", "--events-out", str(again))
    assert again.read_text() == events_path.read_text()


def test_config_sets_sender_id_min_severity_and_detectors(tmp_path: Path) -> None:
    config = tmp_path / "sipwarden.toml"
    config.write_text(
        '[exchange]\nsender_id = "operator-a"\n[events]\nmin_severity = "critical"\n'
        '[detectors."recon.scanner_user_agent"]\nenabled = false\n',
        encoding="utf-8",
    )
    events_path = tmp_path / "events.jsonl"
    result = run(
        str(CAPTURE), "--format", "json", "--config", str(config), "--events-out", str(events_path)
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert "recon.scanner_user_agent" not in {f["detector"] for f in doc["findings"]}
    assert doc["events"] == [] and events_path.read_text() == ""
    config.write_text('[exchange]\nsender_id = "operator-a"\n', encoding="utf-8")
    result = run(str(CAPTURE), "-f", "json", "-c", str(config))
    assert {e["sender_id"] for e in json.loads(result.stdout)["events"]} == {"operator-a"}


def test_example_config_runs() -> None:
    result = run(str(CAPTURE), "--config", str(REPO / "examples" / "sipwarden.toml"))
    assert result.returncode == 0, result.stderr


def test_html_report_is_one_self_contained_page(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = run(str(CAPTURE), "--format", "html", "--out", str(out))
    assert result.returncode == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<script" not in page
    assert "friendly-scanner" in page and "<h2>Top sources</h2>" in page
    assert "<b>26</b>SIP messages" in page


def test_non_terminal_run_is_quiet_on_stderr(tmp_path: Path) -> None:
    result = run(str(CAPTURE), "--format", "json", "--out", str(tmp_path / "r.json"))
    assert result.returncode == 0 and result.stderr == "" and result.stdout == ""


def test_bad_config_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[detectors."tdos.request_flood"]\nwindow_s = -1\n', encoding="utf-8")
    result = run(str(CAPTURE), "--config", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f'error: {config}: detectors."tdos.request_flood".window_s: Input should be greater than 0'
    )
    config.write_text("[engine\n", encoding="utf-8")
    result = run(str(CAPTURE), "--config", str(config))
    assert result.returncode == 2 and "line 1" in result.stderr
    missing = run(str(CAPTURE), "--config", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "none.toml" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_unwritable_outputs_are_errors_before_analysis(tmp_path: Path) -> None:
    for option in ("--out", "--events-out"):
        target = tmp_path / "no-such-dir" / "x.json"
        result = run(str(CAPTURE), "--format", "json", option, str(target))
        assert result.returncode == 2, option
        assert str(target) in result.stderr and "cannot write" in result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_non_utf8_wire_bytes_do_not_break_reports(tmp_path: Path) -> None:
    """The fuzz capture carries bytes that are not UTF-8; every format still writes."""
    capture = need_shared("corpus/pcap/malformed/ndpi--fuzz-2006-06-26-2594.pcap")
    for fmt in ("json", "jsonl", "html", "table"):
        out = tmp_path / f"report.{fmt}"
        result = run(str(capture), "--format", fmt, "--out", str(out))
        assert result.returncode == 0, (fmt, result.stderr)
        if fmt == "json":
            assert json.loads(out.read_text(encoding="utf-8"))["stats"]["sip_messages"] > 0


def test_progress_bar_is_drawn_on_a_terminal(tmp_path: Path) -> None:
    """stderr is a pseudo-terminal here, as in an operator's shell: the bar names the capture
    and reaches its full size in bytes; the report itself is unchanged."""
    pty = pytest.importorskip("pty")
    main_fd, child_fd = pty.openpty()
    out = tmp_path / "r.json"
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    with subprocess.Popen(
        [sys.executable, "-m", "sipwarden", "analyze", str(CAPTURE), "-f", "json", "-o", str(out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=child_fd,
        env=env,
    ) as process:
        os.close(child_fd)
        drawn = b""
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            drawn += chunk
        assert process.wait(timeout=120) == 0
    os.close(main_fd)
    text = drawn.decode("utf-8", "replace")
    assert CAPTURE.name in text and "12.1/12.1 kB" in text
    assert json.loads(out.read_text())["stats"]["sip_messages"] == 26
