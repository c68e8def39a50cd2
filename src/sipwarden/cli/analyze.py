"""``sipwarden analyze CAPTURE...``: run every detector over capture files and report findings.

First slice of issue 3: pcap/pcapng in, findings out as a table, JSON (conventions.md §3) or
JSONL. ``--fail-on SEVERITY`` exits 1 when a finding at or above it is found (for CI gates).
"""

from __future__ import annotations

import contextlib
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from sipwarden.errors import InputError

__all__ = ["analyze_command"]


class Format(StrEnum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


class FailOn(StrEnum):
    never = "never"
    info = "info"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


def analyze_command(
    captures: Annotated[
        list[Path], typer.Argument(metavar="CAPTURE...", help="pcap or pcapng files.")
    ],
    output_format: Annotated[
        Format, typer.Option("--format", "-f", help="table for people; json/jsonl for tools.")
    ] = Format.table,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the report here, not to stdout.")
    ] = None,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", help="Exit 1 if a finding has this severity or more.")
    ] = FailOn.never,
) -> None:
    """Analyze captures with every detector; report findings (conventions.md §2-3)."""
    # Imported here so that `sipwarden --version` and `parse` stay cheap.
    from sipwarden.detect import DETECTORS, Engine, Severity  # noqa: PLC0415
    from sipwarden.output.document import AnalysisStats, analysis_document  # noqa: PLC0415
    from sipwarden.output.table import findings_table  # noqa: PLC0415
    from sipwarden.sources.capture import iter_observations  # noqa: PLC0415
    from sipwarden.sources.decode import SourceStats  # noqa: PLC0415

    engine = Engine([cls() for cls in DETECTORS.values()])
    stats = AnalysisStats()
    source_stats: dict[str, dict[str, int]] = {}
    err = Console(stderr=True)
    show_progress = err.is_terminal
    for capture in captures:
        counters = SourceStats()
        with err.status(f"reading {capture}") if show_progress else contextlib.nullcontext():
            for obs in iter_observations(capture, counters):
                stats.count(obs)
                engine.observe(obs)
        stats.packets += counters.frames
        source_stats[str(capture)] = counters.as_dict()
    findings = engine.finish()
    extra = {
        "bad_frames": sum(
            s.get("truncated", 0) + s.get("malformed", 0) for s in source_stats.values()
        ),
        "state_evictions": engine.evictions(),
    }
    if output_format is Format.json:
        doc = analysis_document([str(c) for c in captures], stats, findings, extra)
        text = json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
    elif output_format is Format.jsonl:
        text = "".join(json.dumps(f.to_json(), ensure_ascii=False) + "\n" for f in findings)
    else:
        text = ""
    if output_format is Format.table:
        # A terminal gets its own width; a pipe or file gets room for whole detector ids.
        width = None if out is None and sys.stdout.isatty() else 160
        with out.open("w", encoding="utf-8") if out else contextlib.nullcontext() as handle:
            console = Console(file=handle or sys.stdout, width=width)
            console.print(findings_table(findings, f"sipwarden: {len(findings)} findings"))
            console.print(
                f"{stats.sip_messages} SIP messages in {stats.packets} frames, "
                f"{stats.malformed} malformed, from {len(captures)} capture(s)"
            )
    elif out is not None:
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(str(out), exc.strerror or str(exc)) from None
    else:
        sys.stdout.write(text)
    if fail_on is not FailOn.never:
        threshold = Severity(fail_on.value).rank
        if any(f.severity.rank >= threshold for f in findings):
            raise typer.Exit(1)
