"""``sipwarden analyze CAPTURE...``: run every detector over capture files and report findings.

pcap/pcapng in; findings out as a table, JSON (conventions.md §3), JSONL (one finding per line)
or one self-contained HTML page. ``--events-out FILE`` also writes the FS.38 schema-1.0 events
derived from the findings (conventions.md §4), one per line. ``--config FILE`` is a TOML file
(``sipwarden.config``; example in examples/sipwarden.toml). ``--fail-on SEVERITY`` exits 1 when
a finding at or above it is found (for CI gates). A progress bar (bytes per capture) is drawn
only when stderr is a terminal; pipes and CI logs stay quiet.

Output files are written whole or not at all: each report goes to a temporary file next to its
target and is renamed over it only when every report is complete, so a failed run never leaves a
truncated report that looks finished. (Targets that are not regular files - ``/dev/stdout``, a
FIFO - are written directly: they cannot be renamed over.)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from sipwarden.cli._pipes import end_quietly_on_broken_pipe
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
    targets = [t for t in (out, events_out) if t is not None]
    if out is not None and events_out is not None and _same_file(out, events_out):
        raise InputError(str(events_out), "--out and --events-out name the same file")
    for target in targets:
        if any(_same_file(target, capture) for capture in captures):
            raise InputError(str(target), "is one of the captures; it would be overwritten")
    # Fail on an unwritable output before minutes of analysis, not after.
    for target in targets:
        _check_writable(target)
    end_quietly_on_broken_pipe()
    engine = Engine(settings.build_detectors(), settings.engine)
    stats = AnalysisStats()
    source_stats = _run(captures, engine, stats)
    findings = engine.finish()
    events = events_from_findings(
        findings,
        settings.exchange.sender_id,
        settings.events.min_severity,
        merge_gap_s=settings.engine.episode_gap_s,
    )
    extra = {
        "bad_frames": sum(
            s.get("truncated", 0) + s.get("malformed", 0) for s in source_stats.values()
        ),
        "state_evictions": engine.evictions(),
    }
    inputs = [str(c) for c in captures]
    files: list[tuple[Path, str]] = []
    if output_format is Format.table:
        if out is None:
            _print_table(findings, stats, len(captures), len(events))
        else:
            files.append((out, _table_text(findings, stats, len(captures), len(events))))
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
            files.append((out, text))
        else:
            sys.stdout.flush()
            sys.stdout.buffer.write(_utf8(text))
            sys.stdout.buffer.flush()
    if events_out is not None:
        files.append(
            (events_out, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events))
        )
    _write_all(files)
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
        # The description is rich markup: a file named "[/x].pcap" must not abort the run.
        task = self.progress.add_task(escape(capture.name), total=total or None)
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


def _is_special(path: Path) -> bool:
    """An existing target that is not a regular file (a device such as /dev/stdout, a FIFO):
    written in place, as a temporary file cannot be renamed over it."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _real(path: Path) -> Path:
    """Where a report lands: through a symlink (``latest.json`` -> a dated report), the file
    it points to is replaced, not the link."""
    return Path(os.path.realpath(path))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() and not _is_special(a)
    except OSError:
        return False


def _check_writable(path: Path) -> None:
    """The target can be replaced: it is not a directory and its directory takes a new file
    (the temporary file the report is written to), or it is a writable device/FIFO. Never
    opens the target itself - opening a FIFO would wait for a reader."""
    if path.is_dir():
        raise InputError(str(path), "cannot write: Is a directory")
    if path.exists() and not os.access(path, os.W_OK):
        # Renaming over a read-only report would succeed; refuse as `cp` does.
        raise InputError(str(path), "cannot write: Permission denied")
    if _is_special(path):
        return
    real = _real(path)
    try:
        with tempfile.NamedTemporaryFile(dir=real.parent, prefix=f".{real.name}.", delete=True):
            pass
    except OSError as exc:
        raise InputError(str(path), f"cannot write: {exc.strerror or exc}") from None


def _utf8(text: str) -> bytes:
    # Wire bytes that are not UTF-8 reach findings as lone surrogates (surrogateescape); written
    # as the escape \udcXX they stay valid JSON text instead of failing the whole report.
    return text.encode("utf-8", "backslashreplace")


def _write_all(files: list[tuple[Path, str]]) -> None:
    """Write every report to a temporary file beside its target, then rename them all into
    place; on any error remove the temporary files and name the target that failed."""
    pending: list[tuple[str, Path]] = []
    current = files[0][0] if files else Path()
    try:
        for current, text in files:
            if _is_special(current):
                continue
            real = _real(current)
            fd, temp = tempfile.mkstemp(dir=real.parent, prefix=f".{real.name}.", suffix=".tmp")
            pending.append((temp, real))
            with os.fdopen(fd, "wb") as handle:
                handle.write(_utf8(text))
            os.chmod(temp, _file_mode(real))
        for current, text in files:
            if _is_special(current):
                with current.open("wb") as handle:
                    handle.write(_utf8(text))
        for temp, real in pending:
            current = real
            os.replace(temp, real)
    except OSError as exc:
        for temp, _ in pending:
            with contextlib.suppress(OSError):
                os.unlink(temp)
        raise InputError(str(current), f"cannot write: {exc.strerror or exc}") from None


def _file_mode(path: Path) -> int:
    """An existing report keeps its permissions; a new one gets the usual 0666 less umask
    (mkstemp's 0600 would surprise whoever reads reports)."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _table_text(findings: list[Any], stats: AnalysisStats, captures: int, events: int) -> str:
    buffer = io.StringIO()
    # A file gets room for whole detector ids and no colour codes.
    _render_table(Console(file=buffer, width=160), findings, stats, captures, events)
    return buffer.getvalue()


def _print_table(findings: list[Any], stats: AnalysisStats, captures: int, events: int) -> None:
    # A terminal gets its own width; a pipe gets room for whole detector ids.
    width = None if sys.stdout.isatty() else 160
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")  # see _utf8
    _render_table(Console(file=sys.stdout, width=width), findings, stats, captures, events)


def _render_table(
    console: Console, findings: list[Any], stats: AnalysisStats, captures: int, events: int
) -> None:
    from sipwarden.output.table import findings_table  # noqa: PLC0415

    console.print(findings_table(findings, f"sipwarden: {len(findings)} findings"))
    console.print(
        f"{stats.sip_messages} SIP messages in {stats.packets} frames, "
        f"{stats.malformed} malformed, from {captures} capture(s); {events} FS.38 event(s)"
    )
