"""The ``sipwarden analyze --format json`` document (conventions.md §3), and the stats it
carries. Pure: findings and counters in, JSON-ready data out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sipwarden import __version__
from sipwarden.detect.finding import Finding, rfc3339
from sipwarden.detect.observation import Observation

__all__ = ["AnalysisStats", "TrafficHistogram", "analysis_document"]


@dataclass
class TrafficHistogram:
    """Messages per time bucket, bounded: at most ``max_buckets`` buckets, aligned to multiples
    of ``width_s`` from the epoch. When the time span outgrows them the width doubles and
    neighbouring buckets merge, so any capture length fits in the same memory."""

    max_buckets: int = 120
    width_s: float = 1.0
    counts: Counter[int] = field(default_factory=Counter)

    low: int | None = None
    high: int | None = None

    def add(self, ts: float, n: int = 1) -> None:
        index = int(ts // self.width_s)
        low = index if self.low is None else min(index, self.low)
        high = index if self.high is None else max(index, self.high)
        # Called per message: the common case (same or next bucket) costs two comparisons.
        while high - low >= self.max_buckets:
            self.width_s *= 2
            merged: Counter[int] = Counter()
            for key, count in self.counts.items():
                merged[key // 2] += count
            self.counts = merged
            index, low, high = index // 2, low // 2, high // 2
        self.low, self.high = low, high
        self.counts[index] += n

    def buckets(self) -> list[tuple[float, int]]:
        """(bucket start, messages) for every bucket from the first to the last, zeros kept."""
        if self.low is None or self.high is None:
            return []
        return [(k * self.width_s, self.counts.get(k, 0)) for k in range(self.low, self.high + 1)]


@dataclass
class AnalysisStats:
    """What the analyzer saw: counted as observations go by (bounded: methods and status codes
    are few; unknown methods are counted under one name)."""

    packets: int = 0
    sip_messages: int = 0
    malformed: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    responses: Counter[str] = field(default_factory=Counter)
    first_seen: float | None = None
    last_seen: float | None = None
    histogram: TrafficHistogram = field(default_factory=TrafficHistogram)

    def count(self, obs: Observation) -> None:
        self.sip_messages += 1
        if self.first_seen is None or obs.ts < self.first_seen:
            self.first_seen = obs.ts
        if self.last_seen is None or obs.ts > self.last_seen:
            self.last_seen = obs.ts
        self.histogram.add(obs.ts)
        message = obs.message
        if message is None or not message.is_valid:
            self.malformed += 1
        if obs.request is not None:
            method = obs.request.method
            self.requests[
                method if len(self.requests) < 32 or method in self.requests else "(other)"
            ] += 1
        elif obs.response is not None:
            self.responses[str(obs.response.status)] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "packets": self.packets,
            "sip_messages": self.sip_messages,
            "malformed": self.malformed,
            "requests": dict(self.requests.most_common()),
            "responses": dict(sorted(self.responses.items())),
            "first_seen": rfc3339(self.first_seen) if self.first_seen is not None else None,
            "last_seen": rfc3339(self.last_seen) if self.last_seen is not None else None,
        }


def analysis_document(
    inputs: list[str],
    stats: AnalysisStats,
    findings: list[Finding],
    extra_stats: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """conventions.md §3; ``events`` are the FS.38 messages derived from the findings
    (:func:`sipwarden.output.events.events_from_findings`)."""
    stats_json = stats.to_json()
    if extra_stats:
        stats_json.update(extra_stats)
    return {
        "sipwarden": __version__,
        "inputs": inputs,
        "stats": stats_json,
        "findings": [f.to_json() for f in findings],
        "events": list(events) if events is not None else [],
    }
