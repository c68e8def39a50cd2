"""Findings as a rich table for terminals. Pure: returns a renderable."""

from __future__ import annotations

from rich.table import Table

from sipwarden.detect.finding import Finding, rfc3339

__all__ = ["findings_table"]

_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan", "info": "dim"}


def findings_table(findings: list[Finding], title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for column in ("severity", "detector", "source", "count", "first seen", "summary"):
        table.add_column(column, overflow="fold")
    for f in sorted(findings, key=lambda f: (-f.severity.rank, f.first_seen)):
        table.add_row(
            f"[{_STYLE[f.severity.value]}]{f.severity.value}[/]",
            f.detector,
            f.source.ip if f.source is not None else "",
            str(f.count),
            rfc3339(f.first_seen),
            f.summary,
        )
    return table
