"""The terminal table: wire strings shown as written, never as rich markup or terminal
control sequences."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from sipwarden.detect import Finding, Severity, Threat
from sipwarden.net import Endpoint
from sipwarden.output.table import findings_table, terminal_safe


def finding(summary: str, severity: Severity = Severity.HIGH, ts: float = 0.0) -> Finding:
    return Finding(
        "recon.scanner_user_agent",
        Threat.RECON,
        severity,
        90,
        summary,
        "k",
        ts,
        ts + 1.0,
        source=Endpoint("192.0.2.10", 5060),
    )


def render(summary: str) -> str:
    buffer = io.StringIO()
    table = findings_table([finding(summary)], "t")
    Console(file=buffer, width=400, force_terminal=True).print(table)
    return buffer.getvalue()


def test_rows_are_capped_worst_first_with_a_note() -> None:
    findings = [finding(f"low {n}", Severity.LOW, float(n)) for n in range(5)]
    findings.append(finding("the high one", Severity.HIGH, 99.0))
    buffer = io.StringIO()
    Console(file=buffer, width=200).print(findings_table(findings, "t", max_rows=3))
    text = buffer.getvalue()
    assert "the high one" in text and "low 0" in text and "low 1" in text
    assert "low 2" not in text and "3 lower-ranked findings not shown" in text


def test_markup_in_a_summary_is_text() -> None:
    # Regression: "[/x]" raised rich.errors.MarkupError and aborted the default report.
    text = render("UA [/x] [link=http://evil.example]click[/link] [bold]")
    assert "[/x] [link=http://evil.example]click[/link] [bold]" in text
    assert "\x1b]8;" not in text  # no hyperlink escape


def test_control_characters_are_escaped() -> None:
    text = render("a\x1b[2Jb\rc\x07d\x9be\udcff")
    assert "a\\x1b[2Jb\\x0dc\\x07d\\x9be\\udcff" in text
    assert terminal_safe("tab\there") == "tab here"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_summary_renders_without_control_characters(summary: str) -> None:
    rendered = render(summary)
    # The only ESC sequences are the table's own SGR colours.
    body = rendered.replace("\x1b[31m", "").replace("\x1b[0m", "").replace("\x1b[1m", "")
    assert "\x1b" not in body and "\r" not in body
