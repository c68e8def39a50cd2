"""The HTML report (one self-contained page, every wire string escaped) and the bounded traffic
histogram behind its timeline."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from sipwarden.detect import Finding, RecommendedAction, Severity, Target, Threat
from sipwarden.detect.finding import Evidence
from sipwarden.net import Endpoint
from sipwarden.output.document import AnalysisStats, TrafficHistogram
from sipwarden.output.html import MAX_FINDINGS_SHOWN, html_report
from tests.detect import observe

T0 = 1_775_824_496.0
HOSTILE = "<script>alert('x')</script>\"onmouseover=\"alert(1)"


def finding(
    detector: str = "recon.scanner_user_agent",
    *,
    summary: str = "scan from 192.0.2.10",
    severity: Severity = Severity.HIGH,
    ts: float = T0,
    source: str = "192.0.2.10",
    indicators: dict[str, str] | None = None,
    call_ids: tuple[str, ...] = ("a@b",),
) -> Finding:
    return Finding(
        detector,
        Threat(detector.partition(".")[0]),
        severity,
        90,
        summary,
        source + detector,
        ts,
        ts + 30,
        count=12,
        source=Endpoint(source, 5060),
        target=Target("198.51.100.5", 5060, "1001"),
        indicators=indicators if indicators is not None else {"user_agent": "friendly-scanner"},
        evidence=Evidence((1, 2, 3), call_ids),
        recommended_action=RecommendedAction("TEMP_BLOCK", 3600),
    )


def stats_for(times: list[float]) -> AnalysisStats:
    stats = AnalysisStats()
    raw = (
        b"OPTIONS sip:1001@198.51.100.5 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1\r\n"
    )
    raw += b"From: <sip:a@192.0.2.10>;tag=1\r\nTo: <sip:1001@198.51.100.5>\r\nCall-ID: c1\r\n"
    raw += b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    for n, ts in enumerate(times, start=1):
        stats.count(observe(raw, ts=ts, frame=n))
        stats.packets += 1
    return stats


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += attrs


def parse(page: str) -> _Collect:
    collector = _Collect()
    collector.feed(page)
    return collector


def test_page_has_summary_timeline_sources_and_findings() -> None:
    stats = stats_for([T0 + i for i in range(60)])
    findings = [
        finding(),
        finding("credential.password_spray", severity=Severity.MEDIUM, ts=T0 + 20),
        finding("tdos.request_flood", source="203.0.113.7", ts=T0 + 40),
    ]
    page = html_report(["capture.pcap"], stats, findings, events=2, extra_stats={"bad_frames": 4})
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for heading in ("Timeline", "Top sources", "Findings (3)"):
        assert f"<h2>{heading}</h2>" in page
    assert "<b>60</b>SIP messages" in page and "<b>2</b>FS.38 events" in page
    assert "OPTIONS 60" in page and "<b>4</b>bad frames" in page
    # one timeline row per family present, labelled
    for family in ("recon", "credential", "tdos"):
        assert f">{family}</text>" in page
    assert ">wangiri</text>" not in page
    # the top-sources table, worst first
    rows = re.findall(r"<tr><td><code>([^<]+)</code>", page)
    # first the per-detector overview (worst first), then the top sources (worst first)
    assert rows[:3] == [
        "recon.scanner_user_agent",
        "tdos.request_flood",
        "credential.password_spray",
    ]
    assert rows[3:5] == ["192.0.2.10", "203.0.113.7"]
    # each finding with evidence, indicators and action
    assert page.count('<section class="finding"') == 3
    assert "frames</dt><dd>1, 2, 3" in page and "<b>TEMP_BLOCK</b> for 3600 s" in page
    assert "user_agent: <code>friendly-scanner</code>" in page and "a@b" in page
    # medium and above start unfolded
    assert page.count("<details open>") == 3


def test_low_findings_start_folded() -> None:
    page = html_report(["c.pcap"], stats_for([T0]), [finding(severity=Severity.LOW)])
    assert "<details><summary>" in page and "<details open>" not in page


def test_page_is_self_contained() -> None:
    page = html_report(["c.pcap"], stats_for([T0, T0 + 5]), [finding()])
    tags = set(parse(page).tags)
    assert "script" not in tags and "link" not in tags and "img" not in tags
    assert "svg" in tags and "style" in tags
    assert not re.search(r"(src|href)\s*=", page)
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page and "@import" not in page and "url(" not in page


def test_attacker_strings_are_escaped_everywhere() -> None:
    f = finding(
        summary=f"scanner {HOSTILE}",
        indicators={"user_agent": HOSTILE, f"k{HOSTILE}": "v"},
        call_ids=(HOSTILE,),
    )
    page = html_report([f"in{HOSTILE}.pcap"], stats_for([T0]), [f])
    assert "<script" not in page and 'onmouseover="' not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&quot;onmouseover" in page
    collected = parse(page)
    assert "script" not in collected.tags
    assert not any(name.startswith("on") for name, _ in collected.attrs)


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=60))
def test_no_wire_string_can_open_a_tag(text: str) -> None:
    f = finding(summary=text, indicators={"user_agent": text, text or "k": text}, call_ids=(text,))
    page = html_report([text], stats_for([T0]), [f])
    assert "script" not in parse(page).tags
    assert page.count("<section") == 1


def test_no_traffic_and_no_findings_still_renders() -> None:
    page = html_report(["empty.pcap"], AnalysisStats(), [])
    assert "No findings." in page and "Nothing to draw." in page
    assert "No finding names a source." in page


def test_very_many_findings_are_cut_with_a_note() -> None:
    findings = [
        finding(source=f"10.0.{i // 250}.{i % 250}", ts=T0 + i)
        for i in range(MAX_FINDINGS_SHOWN + 5)
    ]
    page = html_report(["big.pcap"], stats_for([T0]), findings)
    assert page.count('<section class="finding"') == MAX_FINDINGS_SHOWN
    assert "5 lower-ranked findings not shown" in page
    assert "more sources." in page


# -- the histogram ---------------------------------------------------------------------------
def test_histogram_counts_every_message_per_bucket() -> None:
    hist = TrafficHistogram(max_buckets=10)
    for ts in (100.2, 100.7, 103.1):
        hist.add(ts)
    assert hist.width_s == 1.0
    assert hist.buckets() == [(100.0, 2), (101.0, 0), (102.0, 0), (103.0, 1)]


def test_histogram_rebins_as_the_span_grows_and_stays_bounded() -> None:
    hist = TrafficHistogram(max_buckets=16)
    times = [1000.0 + i * 7.3 for i in range(5000)] + [500.0]  # long span, one earlier message
    for ts in times:
        hist.add(ts)
    buckets = hist.buckets()
    assert len(buckets) <= 16 and len(hist.counts) <= 16
    assert sum(n for _, n in buckets) == len(times)
    assert buckets[0][0] <= 500.0 and buckets[-1][0] + hist.width_s > max(times)
    assert hist.width_s > 1.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=2e9, allow_nan=False), min_size=1, max_size=200))
def test_histogram_keeps_every_count_in_bounded_buckets(times: list[float]) -> None:
    hist = TrafficHistogram(max_buckets=8)
    for ts in times:
        hist.add(ts)
    buckets = hist.buckets()
    assert sum(n for _, n in buckets) == len(times)
    assert len(buckets) <= 8
    for ts in times:
        assert buckets[0][0] <= ts < buckets[-1][0] + hist.width_s


def test_stats_feed_the_histogram() -> None:
    stats = stats_for([T0, T0 + 0.5, T0 + 2])
    assert sum(n for _, n in stats.histogram.buckets()) == 3
    assert "histogram" not in stats.to_json()  # the §3 document keeps its shape


def test_every_threat_family_gets_its_timeline_row_and_section() -> None:
    by_family = {
        "tdos": "tdos.request_flood",
        "recon": "recon.host_sweep",
        "credential": "credential.password_spray",
        "unauthorized": "unauthorized.open_relay",
        "toll_fraud": "toll_fraud.destination_risk",
        "wangiri": "wangiri.ring_and_cancel",
        "spoofing": "spoofing.identity_mismatch",
        "identity_takeover": "identity_takeover.binding_change",
        "malformed": "malformed.parser_defect",
        "injection": "injection.payload_in_user_field",
        "disclosure": "disclosure.version_string",
    }
    assert set(by_family) == {t.value for t in Threat}
    findings = [finding(d, ts=T0 + n) for n, d in enumerate(by_family.values())]
    page = html_report(["c.pcap"], stats_for([T0, T0 + 20]), findings)
    for family, detector in by_family.items():
        assert f">{family}</text>" in page and f"<code>{detector}</code> " in page
    assert page.count('<section class="finding"') == len(Threat)
