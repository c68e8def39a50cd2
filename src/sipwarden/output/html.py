"""``sipwarden analyze --format html``: one self-contained page for people. Pure: data in, str
out.

The page has a summary, a timeline (traffic volume per time bucket above one row per threat
family, each finding drawn from first to last sight), the top sources, and every finding with
its evidence, indicators and recommended action. Inline CSS and SVG only: no script, no
external fetch, so it opens offline and in mail clients. Every string that came off the wire
(summaries, indicators, Call-IDs, user parts) is escaped with :func:`html.escape`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any

from sipwarden import __version__
from sipwarden.detect.finding import Finding, rfc3339
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.output.document import AnalysisStats

__all__ = ["MAX_FINDINGS_SHOWN", "html_report"]

#: Findings drawn in full; beyond this the page lists how many were left out (the JSON has all).
MAX_FINDINGS_SHOWN = 1000
_TOP_SOURCES = 20

_COLOR = {
    Severity.CRITICAL: "#7f1d1d",
    Severity.HIGH: "#dc2626",
    Severity.MEDIUM: "#d97706",
    Severity.LOW: "#0891b2",
    Severity.INFO: "#9ca3af",
}

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#111827;
background:#f9fafb}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid
#e5e7eb;padding-bottom:4px}
.muted{color:#6b7280}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:12px 0}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:20px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #e5e7eb;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600}
.sev{display:inline-block;border-radius:4px;padding:0 6px;color:#fff;font-size:12px;
font-weight:600;text-transform:uppercase}
.finding{background:#fff;border:1px solid #e5e7eb;border-left-width:5px;border-radius:6px;
padding:8px 12px;margin:10px 0}
.finding h3{font-size:15px;margin:0 0 4px;display:inline}
.finding summary{cursor:pointer}
.finding dl{display:grid;grid-template-columns:150px 1fr;gap:2px 10px;margin:6px 0}
.finding dt{color:#6b7280}.finding dd{margin:0;word-break:break-all}
code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#f3f4f6;padding:0 3px}
svg text{font:11px system-ui,sans-serif;fill:#374151}
"""


def html_report(
    inputs: Sequence[str],
    stats: AnalysisStats,
    findings: Sequence[Finding],
    events: int = 0,
    extra_stats: Mapping[str, Any] | None = None,
) -> str:
    """The whole page. ``events`` is how many FS.38 events the run derived and
    ``extra_stats`` further counters (bad frames, state evictions), both shown in the
    summary."""
    ordered = sorted(findings, key=lambda f: (-f.severity.rank, f.first_seen, f.detector))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>sipwarden report: {_e(', '.join(inputs))}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        _summary(inputs, stats, findings, events, extra_stats or {}),
        _by_detector(findings),
        "<h2>Timeline</h2>",
        _timeline(stats, findings),
        "<h2>Top sources</h2>",
        _top_sources(findings),
        f"<h2>Findings ({len(findings)})</h2>",
        *(_finding(f) for f in ordered[:MAX_FINDINGS_SHOWN]),
    ]
    if len(ordered) > MAX_FINDINGS_SHOWN:
        parts.append(
            f'<p class="muted">{len(ordered) - MAX_FINDINGS_SHOWN} lower-ranked findings not '
            "shown; the JSON report (--format json) has them all.</p>"
        )
    parts.append(
        f'<p class="muted">sipwarden {_e(__version__)} · threat families and finding fields: '
        "conventions.md §1-2</p></main></body></html>\n"
    )
    return "\n".join(parts)


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _badge(severity: Severity) -> str:
    return f'<span class="sev" style="background:{_COLOR[severity]}">{severity.value}</span>'


# -- summary -----------------------------------------------------------------------------------
def _summary(
    inputs: Sequence[str],
    stats: AnalysisStats,
    findings: Sequence[Finding],
    events: int,
    extra: Mapping[str, Any],
) -> str:
    span = (
        f"{rfc3339(stats.first_seen)} – {rfc3339(stats.last_seen)}"
        if stats.first_seen is not None and stats.last_seen is not None
        else "no SIP traffic"
    )
    by_severity = Counter(f.severity for f in findings)
    cards = [
        ("frames", stats.packets),
        ("SIP messages", stats.sip_messages),
        ("malformed", stats.malformed),
        ("findings", len(findings)),
        ("FS.38 events", events),
    ]
    cards += [(k.replace("_", " "), v) for k, v in extra.items() if isinstance(v, int)]
    severity_line = " ".join(
        f"{_badge(s)} {by_severity[s]}" for s in reversed(Severity) if by_severity[s]
    )
    requests = ", ".join(f"{_e(m)} {n}" for m, n in stats.requests.most_common(8))
    responses = ", ".join(f"{_e(c)} {n}" for c, n in sorted(stats.responses.items())[:12])
    return "\n".join(
        [
            "<h1>sipwarden analysis</h1>",
            f'<p class="muted">{_e(", ".join(inputs))}<br>{_e(span)}</p>',
            '<div class="cards">'
            + "".join(f'<div class="card"><b>{n}</b>{_e(label)}</div>' for label, n in cards)
            + "</div>",
            f"<p>{severity_line or 'No findings.'}</p>",
            f'<p class="muted">Requests: {requests or "none"}<br>'
            f"Responses: {responses or 'none'}</p>",
        ]
    )


def _by_detector(findings: Sequence[Finding]) -> str:
    if not findings:
        return ""
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.detector, []).append(f)
    ranked = sorted(
        groups.items(),
        key=lambda kv: (-max(f.severity.rank for f in kv[1]), -len(kv[1]), kv[0]),
    )
    rows = [
        "<table><tr><th>detector</th><th>worst</th><th>findings</th><th>occurrences</th>"
        "<th>sources</th></tr>"
    ]
    for detector, group in ranked:
        worst = max((f.severity for f in group), key=lambda s: s.rank)
        sources = len({f.source.ip for f in group if f.source is not None})
        rows.append(
            f"<tr><td><code>{_e(detector)}</code></td><td>{_badge(worst)}</td>"
            f"<td>{len(group)}</td><td>{sum(f.count for f in group)}</td><td>{sources}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


# -- timeline ----------------------------------------------------------------------------------
_W, _LABEL, _ROW, _TRAFFIC_H, _TICKS = 1040, 130, 22, 70, 4


def _tick_label(ts: float, start: float) -> str:
    """Seconds are enough on an axis (bar tooltips have milliseconds); the date is shown only
    when it differs from the start's (named under the chart), so labels do not overlap."""
    text = rfc3339(ts)[:19]
    return text[11:] if text[:10] == rfc3339(start)[:10] else text[5:16].replace("T", " ")


@dataclass
class _Scale:
    start: float
    end: float
    width: float = _W - _LABEL - 10

    def x(self, ts: float) -> float:
        span = self.end - self.start
        return _LABEL + (0.0 if span <= 0 else (ts - self.start) / span * self.width)


def _timeline(stats: AnalysisStats, findings: Sequence[Finding]) -> str:
    buckets = stats.histogram.buckets()
    times = [t for f in findings for t in (f.first_seen, f.last_seen)]
    if buckets:
        times += [buckets[0][0], buckets[-1][0] + stats.histogram.width_s]
    if not times:
        return '<p class="muted">Nothing to draw.</p>'
    scale = _Scale(min(times), max(times))
    families = [t for t in Threat if any(f.threat is t for f in findings)]
    height = _TRAFFIC_H + 28 + _ROW * len(families) + 24
    svg = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" viewBox="0 0 {_W} {height}" '
        'role="img" aria-label="traffic and findings over time">'
    ]
    svg += _traffic_bars(buckets, stats.histogram.width_s, scale)
    top = _TRAFFIC_H + 16
    for row, family in enumerate(families):
        y = top + row * _ROW
        svg.append(f'<text x="4" y="{y + 15}">{_e(family.value)}</text>')
        svg.append(
            f'<rect x="{_LABEL}" y="{y + 2}" width="{scale.width:.1f}" height="{_ROW - 4}" '
            'fill="#f3f4f6"/>'
        )
        for f in sorted((f for f in findings if f.threat is family), key=lambda f: f.severity.rank):
            x0 = scale.x(f.first_seen)
            width = max(3.0, scale.x(f.last_seen) - x0)
            title = f"{f.detector} ×{f.count} {rfc3339(f.first_seen)}: {f.summary}"
            svg.append(
                f'<rect x="{x0:.1f}" y="{y + 4}" width="{width:.1f}" height="{_ROW - 8}" '
                f'fill="{_COLOR[f.severity]}" opacity="0.85"><title>{_e(title)}</title></rect>'
            )
    axis_y = top + _ROW * len(families) + 14
    for tick in range(_TICKS + 1):
        ts = scale.start + (scale.end - scale.start) * tick / _TICKS
        anchor = "start" if tick == 0 else "end" if tick == _TICKS else "middle"
        x = scale.x(ts)
        svg.append(
            f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{axis_y - 11}" stroke="#d1d5db"/>'
        )
        label = _e(_tick_label(ts, scale.start))
        svg.append(f'<text x="{x:.1f}" y="{axis_y}" text-anchor="{anchor}">{label}</text>')
    svg.append("</svg>")
    legend = " ".join(f"{_badge(s)}" for s in reversed(Severity))
    note = (
        f"Time axis in UTC from {rfc3339(scale.start)[:10]}. "
        f"Top: SIP messages per {stats.histogram.width_s:g} s. Rows: findings per threat family, "
        f"first to last sight, coloured by severity {legend}. Hover a bar for its summary."
    )
    return "\n".join(svg) + f'\n<p class="muted">{note}</p>'


def _traffic_bars(buckets: list[tuple[float, int]], width_s: float, scale: _Scale) -> list[str]:
    out = ['<text x="4" y="14">messages</text>']
    peak = max((n for _, n in buckets), default=0)
    if peak == 0:
        return out
    out.append(f'<text x="4" y="30">peak {peak}</text>')
    for start, n in buckets:
        if not n:
            continue
        x0 = scale.x(start)
        width = max(1.0, scale.x(start + width_s) - x0 - 0.5)
        h = max(1.0, n / peak * (_TRAFFIC_H - 6))
        out.append(
            f'<rect x="{x0:.1f}" y="{_TRAFFIC_H - h:.1f}" width="{width:.1f}" height="{h:.1f}" '
            f'fill="#6366f1"><title>{_e(rfc3339(start))}: {n} messages</title></rect>'
        )
    return out


# -- top sources -------------------------------------------------------------------------------
@dataclass
class _Source:
    findings: int = 0
    events: int = 0
    worst: Severity = Severity.INFO
    families: set[str] = field(default_factory=set)
    first_seen: float = float("inf")


def _top_sources(findings: Iterable[Finding]) -> str:
    sources: dict[str, _Source] = {}
    for f in findings:
        if f.source is None:
            continue
        entry = sources.setdefault(f.source.ip, _Source())
        entry.findings += 1
        entry.events += f.count
        entry.worst = max(entry.worst, f.severity, key=lambda s: s.rank)
        entry.families.add(f.threat.value)
        entry.first_seen = min(entry.first_seen, f.first_seen)
    if not sources:
        return '<p class="muted">No finding names a source.</p>'
    ranked = sorted(sources.items(), key=lambda kv: (-kv[1].worst.rank, -kv[1].events, kv[0]))
    rows = [
        "<table><tr><th>source</th><th>worst</th><th>findings</th><th>occurrences</th>"
        "<th>threat families</th><th>first seen</th></tr>"
    ]
    for ip, s in ranked[:_TOP_SOURCES]:
        rows.append(
            f"<tr><td><code>{_e(ip)}</code></td><td>{_badge(s.worst)}</td><td>{s.findings}</td>"
            f"<td>{s.events}</td><td>{_e(', '.join(sorted(s.families)))}</td>"
            f"<td>{_e(rfc3339(s.first_seen))}</td></tr>"
        )
    rows.append("</table>")
    if len(ranked) > _TOP_SOURCES:
        rows.append(f'<p class="muted">{len(ranked) - _TOP_SOURCES} more sources.</p>')
    return "\n".join(rows)


# -- findings ----------------------------------------------------------------------------------
def _finding(f: Finding) -> str:
    """One finding; medium and above start unfolded, the rest folded (``<details>`` needs no
    script)."""
    rows: list[tuple[str, str]] = [
        ("seen", f"{_e(rfc3339(f.first_seen))} – {_e(rfc3339(f.last_seen))} ({f.count}×)"),
    ]
    if f.recommended_action is not None:
        action = f.recommended_action
        ttl = (
            f" for {action.suggested_ttl_seconds} s"
            if action.suggested_ttl_seconds is not None
            else ""
        )
        rows.append(("recommended action", f"<b>{_e(action.action_code)}</b>{_e(ttl)}"))
    rows.append(("confidence", f"{f.confidence}/100"))
    if f.source is not None:
        where = f"{f.source.ip} port {f.source.port} ({f.source.transport})"
        rows.append(("source", f"<code>{_e(where)}</code>"))
    if f.target is not None and f.target.to_json():
        target = ", ".join(f"{k}={v}" for k, v in f.target.to_json().items())
        rows.append(("target", f"<code>{_e(target)}</code>"))
    if f.indicators:
        items = (f"{_e(k)}: <code>{_e(v)}</code>" for k, v in sorted(f.indicators.items()))
        rows.append(("indicators", "<br>".join(items)))
    if f.evidence.frames:
        rows.append(("frames", _e(", ".join(str(n) for n in f.evidence.frames))))
    if f.evidence.call_ids:
        rows.append(("Call-IDs", " ".join(f"<code>{_e(c)}</code>" for c in f.evidence.call_ids)))
    rows.append(("finding id", f"<code>{_e(f.id)}</code>"))
    body = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows)
    unfolded = " open" if f.severity.rank >= Severity.MEDIUM.rank else ""
    return (
        f'<section class="finding" style="border-left-color:{_COLOR[f.severity]}">'
        f"<details{unfolded}><summary><h3>{_badge(f.severity)} <code>{_e(f.detector)}</code> "
        f"{_e(f.summary)}</h3></summary><dl>{body}</dl></details></section>"
    )
