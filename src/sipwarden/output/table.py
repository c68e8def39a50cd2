"""Findings as a rich table for terminals. Pure: returns a renderable.

Summaries quote wire strings (user agents, user parts), so every cell is a plain
:class:`rich.text.Text` - never parsed as rich markup, where a ``[/x]`` in a User-Agent would
abort the report - and control characters are shown as escapes rather than sent to the
terminal, where an ESC sequence could rewrite the screen the operator reads.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from sipwarden.detect.finding import Finding, rfc3339

__all__ = ["MAX_ROWS", "findings_table", "terminal_safe"]

#: Rows drawn; the rest are counted in the caption. rich lays a 20 000-row table out in about
#: 25 s and nobody reads that many rows on a terminal (the JSON has them all), as the HTML
#: report's MAX_FINDINGS_SHOWN.
MAX_ROWS = 1000

_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


def terminal_safe(text: str) -> str:
    """``text`` with C0/C1 control characters, DEL and lone surrogates (undecodable wire
    bytes) written as ``\\xNN`` / ``\\udcNN`` escapes; tabs become spaces."""
    out = []
    for char in text:
        code = ord(char)
        if char == "\t":
            out.append(" ")
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code < 0xE000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def findings_table(findings: list[Finding], title: str, max_rows: int = MAX_ROWS) -> Table:
    """Worst first, then earliest; beyond ``max_rows`` the caption says how many were left
    out."""
    left_out = max(0, len(findings) - max_rows)
    caption = (
        f"{left_out} lower-ranked findings not shown; --format json has them all"
        if left_out
        else None
    )
    table = Table(title=Text(terminal_safe(title)), caption=caption, show_lines=False)
    for column in ("severity", "detector", "source", "count", "first seen", "summary"):
        table.add_column(column, overflow="fold")
    ranked = sorted(findings, key=lambda f: (-f.severity.rank, f.first_seen))
    for f in ranked[:max_rows]:
        table.add_row(
            Text(f.severity.value, style=_STYLE[f.severity.value]),
            Text(terminal_safe(f.detector)),
            Text(terminal_safe(f.source.ip) if f.source is not None else ""),
            Text(str(f.count)),
            Text(rfc3339(f.first_seen)),
            Text(terminal_safe(f.summary)),
        )
    return table
