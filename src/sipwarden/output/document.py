"""The ``sipwarden analyze --format json`` document (conventions.md §3), and the stats it
carries. Pure: findings and counters in, JSON-ready data out."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sipwarden import __version__
from sipwarden.detect.finding import Finding, rfc3339
from sipwarden.detect.observation import Observation

__all__ = ["AnalysisStats", "analysis_document"]


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

    def count(self, obs: Observation) -> None:
        self.sip_messages += 1
        if self.first_seen is None or obs.ts < self.first_seen:
            self.first_seen = obs.ts
        if self.last_seen is None or obs.ts > self.last_seen:
            self.last_seen = obs.ts
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
) -> dict[str, Any]:
    """conventions.md §3. ``events`` (FS.38 messages derived from findings) is empty until the
    exchange mapping exists."""
    stats_json = stats.to_json()
    if extra_stats:
        stats_json.update(extra_stats)
    return {
        "sipwarden": __version__,
        "inputs": inputs,
        "stats": stats_json,
        "findings": [f.to_json() for f in findings],
        "events": [],
    }
