"""``sipwarden analyze CAPTURE...``: run every detector over capture files and report findings.

pcap/pcapng in; findings out as a table, JSON (conventions.md §3), JSONL (one finding per line)
or one self-contained HTML page. ``--events-out FILE`` also writes the FS.38 schema-1.0 events
derived from the findings (conventions.md §4), one per line. ``--config FILE`` is a TOML file
(``sipwarden.config``; example in examples/sipwarden.toml). ``--fail-on SEVERITY`` exits 1 when
a finding at or above it is found (for CI gates). A progress bar (bytes per capture) is drawn
only when stderr is a terminal; pipes and CI logs stay quiet.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from sipwarden.errors import InputError

if TYPE_CHECKING:
    from sipwarden.detect import Engine
    from sipwarden.output.document import AnalysisStats

__all__ = ["analyze_command"]

#: Bytes a capture spends per record besides the SIP payload (pcap record header + Ethernet,
#: IPv4 and UDP headers): the progress bar's estimate of bytes read, as the reader exposes
#: frames and payloads but not its file offset.
_RECORD_OVERHEAD = 16 + 14 + 20 + 8


class Format(StrEnum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    html = "html"


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
        Format,
        typer.Option(
            "--format", "-f", help="table for people; json/jsonl for tools; html for a report."
        ),
    ] = Format.table,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the report here, not to stdout.")
    ] = None,
    events_out: Annotated[
        Path | None,
        typer.Option("--events-out", help="Write FS.38 schema-1.0 events here (JSON lines)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML config (see examples/sipwarden.toml)."),
    ] = None,
    fail_on: Annotated[
        FailOn, typer.Option("--fail-on", help="Exit 1 if a finding has this severity or more.")
    ] = FailOn.never,
) -> None:
    """Analyze captures with every detector; report findings (conventions.md §2-4)."""
    # Imported here so that `sipwarden --version` and `parse` stay cheap.
    from sipwarden.config import Settings, load_settings  # noqa: PLC0415
    from sipwarden.detect import Engine, Severity  # noqa: PLC0415
    from sipwarden.output.document import AnalysisStats, analysis_document  # noqa: PLC0415
    from sipwarden.output.events import events_from_findings  # noqa: PLC0415

    settings = load_settings(config) if config is not None else Settings()
    # Fail on an unwritable output before minutes of analysis, not after.
    for target in (out, events_out):
        if target is not None:
            _check_writable(target)
    engine = Engine(settings.build_detectors(), settings.engine)
    stats = AnalysisStats()
    source_stats = _run(captures, engine, stats)
    findings = engine.finish()
    events = events_from_findings(
        findings, settings.exchange.sender_id, settings.events.min_severity
    )
    extra = {
        "bad_frames": sum(
            s.get("truncated", 0) + s.get("malformed", 0) for s in source_stats.values()
        ),
        "state_evictions": engine.evictions(),
    }
    inputs = [str(c) for c in captures]
    if output_format is Format.table:
        _write_table(out, findings, stats, len(captures), len(events))
    else:
        if output_format is Format.json:
            doc = analysis_document(inputs, stats, findings, extra, events)
            text = json.dumps(doc, ensure_ascii=False, indent=2) + "\n"
        elif output_format is Format.jsonl:
            text = "".join(json.dumps(f.to_json(), ensure_ascii=False) + "\n" for f in findings)
        else:
            from sipwarden.output.html import html_report  # noqa: PLC0415

            text = html_report(inputs, stats, findings, len(events), extra)
        if out is not None:
            _write(out, text)
        else:
            sys.stdout.flush()
            sys.stdout.buffer.write(_utf8(text))
            sys.stdout.buffer.flush()
    if events_out is not None:
        _write(events_out, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events))
    if fail_on is not FailOn.never:
        threshold = Severity(fail_on.value).rank
        if any(f.severity.rank >= threshold for f in findings):
            raise typer.Exit(1)


def _run(captures: list[Path], engine: Engine, stats: AnalysisStats) -> dict[str, dict[str, int]]:
    from sipwarden.sources.capture import iter_observations  # noqa: PLC0415
    from sipwarden.sources.decode import SourceStats  # noqa: PLC0415

    err = Console(stderr=True)
    source_stats: dict[str, dict[str, int]] = {}
    with _progress(err) as progress:
        for capture in captures:
            counters = SourceStats()
            task = progress.start(capture) if progress is not None else None
            payload_bytes = 0
            for n, obs in enumerate(iter_observations(capture, counters)):
                stats.count(obs)
                engine.observe(obs)
                if progress is not None:
                    payload_bytes += obs.size
                    if n % 256 == 0:  # redraw cost stays off the per-message path
                        progress.update(task, payload_bytes + counters.frames * _RECORD_OVERHEAD)
            if progress is not None:
                progress.finish(task)
            stats.packets += counters.frames
            source_stats[str(capture)] = counters.as_dict()
    return source_stats


class _Bar:
    """rich.progress over the captures, one bar each, in bytes of the file."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._totals: dict[Any, int] = {}

    def start(self, capture: Path) -> Any:
        try:
            total = capture.stat().st_size
        except OSError:
            total = 0  # the reader reports the real problem with the file's name
        task = self.progress.add_task(capture.name, total=total or None)
        self._totals[task] = total
        return task

    def update(self, task: Any, done: int) -> None:
        total = self._totals[task]
        self.progress.update(task, completed=min(done, total) if total else done)

    def finish(self, task: Any) -> None:
        self.progress.update(task, completed=self._totals[task])


@contextlib.contextmanager
def _progress(console: Console) -> Iterator[_Bar | None]:
    if not console.is_terminal:
        yield None
        return
    bar = _Bar(console)
    with bar.progress:
        yield bar


def _check_writable(path: Path) -> None:
    existed = path.exists()
    try:
        with path.open("a", encoding="utf-8"):
            pass
        if not existed:
            path.unlink()
    except OSError as exc:
        raise InputError(str(path), f"cannot write: {exc.strerror or exc}") from None


def _utf8(text: str) -> bytes:
    # Wire bytes that are not UTF-8 reach findings as lone surrogates (surrogateescape); written
    # as the escape \udcXX they stay valid JSON text instead of failing the whole report.
    return text.encode("utf-8", "backslashreplace")


def _write(path: Path, text: str) -> None:
    try:
        path.write_bytes(_utf8(text))
    except OSError as exc:
        raise InputError(str(path), f"cannot write: {exc.strerror or exc}") from None


def _write_table(
    out: Path | None, findings: list[Any], stats: AnalysisStats, captures: int, events: int
) -> None:
    from sipwarden.output.table import findings_table  # noqa: PLC0415

    # A terminal gets its own width; a pipe or file gets room for whole detector ids.
    width = None if out is None and sys.stdout.isatty() else 160
    try:
        handle_cm = (
            out.open("w", encoding="utf-8", errors="backslashreplace")
            if out
            else contextlib.nullcontext()
        )
    except OSError as exc:
        raise InputError(str(out), f"cannot write: {exc.strerror or exc}") from None
    if out is None and isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")  # see _utf8
    with handle_cm as handle:
        console = Console(file=handle or sys.stdout, width=width)
        console.print(findings_table(findings, f"sipwarden: {len(findings)} findings"))
        console.print(
            f"{stats.sip_messages} SIP messages in {stats.packets} frames, "
            f"{stats.malformed} malformed, from {captures} capture(s); {events} FS.38 event(s)"
        )
