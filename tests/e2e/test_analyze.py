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

from sipwarden.cli.analyze import _write_all
from sipwarden.errors import InputError
from tests.conftest import REPO, need_shared

CAPTURE = REPO / "examples" / "captures" / "sipvicious-svmap-lbnl.pcap"


ANALYZE = (sys.executable, "-m", "sipwarden", "analyze")


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


# -- review regressions: outputs written whole, hostile names, one event per subject ------------
def test_a_failed_run_leaves_no_report_and_keeps_the_old_one(tmp_path: Path) -> None:
    """Reports are written to a temporary file and renamed: a run that fails on a corrupt
    capture leaves the previous report as it was and no partial or temporary file."""
    corrupt = tmp_path / "cut.pcap"
    # A record header announcing 4 GB: the reader stops with an error naming the frame.
    corrupt.write_bytes(CAPTURE.read_bytes() + b"\0" * 8 + b"\xf0\xff\xff\xff" * 2)
    out, events = tmp_path / "report.json", tmp_path / "events.jsonl"
    out.write_text("previous report\n")
    result = run(
        str(CAPTURE), str(corrupt), "-f", "json", "-o", str(out), "--events-out", str(events)
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cut.pcap" in result.stderr
    assert out.read_text() == "previous report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.pcap", "report.json"]


def test_every_format_writes_whole_files_with_ordinary_permissions(tmp_path: Path) -> None:
    for fmt in ("table", "json", "jsonl", "html"):
        out = tmp_path / f"r.{fmt}"
        result = run(str(CAPTURE), "-f", fmt, "-o", str(out))
        assert result.returncode == 0 and result.stdout == "", (fmt, result.stderr)
        assert out.stat().st_mode & 0o044 == (0o044 & ~_umask()), fmt  # not mkstemp's 0600
        text = out.read_text()
        assert "\x1b[" not in text, fmt  # no colour codes in a file
        assert "recon.scanner_user_agent" in text, fmt
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_out_and_events_out_may_not_be_one_file(tmp_path: Path) -> None:
    target = tmp_path / "x.json"
    result = run(str(CAPTURE), "-f", "json", "-o", str(target), "--events-out", str(target))
    assert result.returncode == 2 and "same file" in result.stderr and not target.exists()


def test_a_device_target_is_written_in_place() -> None:
    """/dev/stdout cannot be renamed over; it is written directly."""
    result = run(str(CAPTURE), "-f", "jsonl", "-o", "/dev/stdout")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 26


def test_a_fifo_target_is_not_opened_before_the_analysis(tmp_path: Path) -> None:
    """Checking that a FIFO is writable must not open it (that waits for a reader): the run
    reaches the analysis, and then writes to whoever reads the FIFO."""
    fifo = tmp_path / "events.fifo"
    os.mkfifo(fifo)
    with subprocess.Popen(
        [*ANALYZE, str(CAPTURE), "-f", "jsonl", "--events-out", str(fifo)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as process:
        with fifo.open("rb") as reader:  # blocks until the run opens its end
            events = reader.read()
        assert process.wait(timeout=120) == 0
    assert events.count(b"\n") == 26


def test_rich_markup_in_wire_strings_cannot_break_the_table(tmp_path: Path) -> None:
    """A User-Agent quoted in a summary is shown as written, not parsed as rich markup (a
    ``[/x]`` aborted the report) nor sent to the terminal as an escape sequence."""
    capture = tmp_path / "hostile.pcap"
    data = CAPTURE.read_bytes()
    agent = b"friendly-scanner"
    assert agent in data
    # Same length, so the pcap record lengths stay right.
    capture.write_bytes(data.replace(agent, b"[/x]\x1b[2Jsipvicio", 1))
    result = run(str(capture), "-f", "table")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "[/x]\\x1b[2J" in result.stdout


def test_findings_about_one_attacker_share_events(tmp_path: Path) -> None:
    """svcrack trips nonce reuse and brute force on one source: peers get one
    REGISTRATION_BRUTE_FORCE event for it, not one per detector."""
    capture = REPO / "examples" / "captures" / "sipvicious-svcrack-loopback.pcap"
    events = tmp_path / "events.jsonl"
    assert run(str(capture), "-f", "jsonl", "--events-out", str(events)).returncode == 0
    messages = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = Counter(m["event"]["event_type"] for m in messages)
    assert kinds == {"SIP_SCAN": 1, "REGISTRATION_BRUTE_FORCE": 1, "SIP_FLOOD": 1}
    [brute] = [m for m in messages if m["event"]["event_type"] == "REGISTRATION_BRUTE_FORCE"]
    assert brute["event"]["evidence"]["detection_method"] == (
        "credential.nonce_reuse+credential.registration_brute_force"
    )
    for m in messages:
        assert m["timestamp_utc"] >= m["event"]["last_seen_utc"][:19] + "Z"


def test_read_only_report_and_capture_as_output_are_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked.json"
    locked.write_text("keep\n")
    locked.chmod(0o444)
    if os.access(locked, os.W_OK):  # root ignores permissions
        pytest.skip("running as root")
    result = run(str(CAPTURE), "-f", "json", "-o", str(locked))
    assert result.returncode == 2 and "Permission denied" in result.stderr
    assert locked.read_text() == "keep\n"


def test_a_capture_is_never_overwritten_by_a_report(tmp_path: Path) -> None:
    capture = tmp_path / "c.pcap"
    capture.write_bytes(CAPTURE.read_bytes())
    for option in ("--out", "--events-out"):
        result = run(str(capture), "-f", "json", option, str(capture))
        assert result.returncode == 2 and "is one of the captures" in result.stderr
    assert capture.read_bytes() == CAPTURE.read_bytes()


def test_a_symlinked_report_replaces_the_file_it_points_to(tmp_path: Path) -> None:
    dated = tmp_path / "report-2026-11-27.json"
    dated.write_text("old\n")
    latest = tmp_path / "latest.json"
    latest.symlink_to(dated.name)
    assert run(str(CAPTURE), "-f", "json", "-o", str(latest)).returncode == 0
    assert latest.is_symlink() and json.loads(dated.read_text())["stats"]["sip_messages"] == 26


def test_a_write_failure_leaves_no_file_and_names_the_target(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "gone" / "b.jsonl"
    with pytest.raises(InputError) as info:
        _write_all([(first, "a\n"), (second, "b\n")])
    assert str(second) in str(info.value) and "cannot write" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_reader_that_goes_away_ends_the_run_quietly() -> None:
    """`sipwarden analyze … | head`: when the reader is gone, SIGPIPE ends the run as it ends
    cat or grep - no traceback, and not exit 1, which --fail-on gives a meaning."""
    import signal
    import subprocess

    with subprocess.Popen(
        [sys.executable, "-m", "sipwarden", "analyze", str(CAPTURE), "--format", "jsonl"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as analyze:
        assert analyze.stdout is not None and analyze.stderr is not None
        analyze.stdout.close()  # the reader is gone before the first line is written
        stderr = analyze.stderr.read()
        assert analyze.wait(timeout=60) == -signal.SIGPIPE
    assert b"Traceback" not in stderr and b"BrokenPipe" not in stderr
