"""Finding: what a detector reports, aggregated per episode (conventions.md §2).

A finding is immutable; the engine replaces it with an updated copy (``count``, ``last_seen``,
evidence) while the episode lasts. ``id`` is stable: a hash of detector, key and first_seen, so
re-running the same capture gives the same ids. ``to_json`` is conventions.md §2 exactly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.net import Endpoint

__all__ = ["Evidence", "Finding", "RecommendedAction", "Target", "rfc3339"]

#: Evidence is a sample, not a log: at most this many frames and Call-IDs per finding.
MAX_EVIDENCE_ITEMS = 20


def rfc3339(ts: float) -> str:
    """Packet time as RFC 3339 UTC with milliseconds, e.g. ``2026-04-10T12:34:56.123Z``."""
    return (
        datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


@dataclass(frozen=True, slots=True)
class Target:
    ip: str | None = None
    port: int | None = None
    user: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in (("ip", self.ip), ("port", self.port), ("user", self.user))
            if v is not None
        }


@dataclass(frozen=True, slots=True)
class Evidence:
    frames: tuple[int, ...] = ()
    call_ids: tuple[str, ...] = ()

    def add(self, frame: int | None, call_id: str | None) -> Evidence:
        """A copy with one more sample, bounded by MAX_EVIDENCE_ITEMS."""
        frames = self.frames
        if frame is not None and frame not in frames and len(frames) < MAX_EVIDENCE_ITEMS:
            frames = (*frames, frame)
        call_ids = self.call_ids
        if call_id and call_id not in call_ids and len(call_ids) < MAX_EVIDENCE_ITEMS:
            call_ids = (*call_ids, call_id)
        return Evidence(frames, call_ids)

    def to_json(self) -> dict[str, Any]:
        return {"frames": list(self.frames), "call_ids": list(self.call_ids)}


@dataclass(frozen=True, slots=True)
class RecommendedAction:
    #: FS.38 action codes, e.g. TEMP_BLOCK, MONITOR, RATE_LIMIT.
    action_code: str
    suggested_ttl_seconds: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"action_code": self.action_code}
        if self.suggested_ttl_seconds is not None:
            data["suggested_ttl_seconds"] = self.suggested_ttl_seconds
        return data


@dataclass(frozen=True, slots=True)
class Finding:
    detector: str
    threat: Threat
    severity: Severity
    confidence: int
    summary: str
    #: The aggregation key within the detector (e.g. the source IP); part of the stable id.
    key: str
    first_seen: float
    last_seen: float
    count: int = 1
    source: Endpoint | None = None
    target: Target | None = None
    indicators: dict[str, str] = field(default_factory=dict)
    evidence: Evidence = Evidence()
    recommended_action: RecommendedAction | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.confidence <= 100:
            raise ValueError(f"confidence {self.confidence} is not 0..100")
        if self.detector.split(".", 1)[0] != self.threat.value:
            raise ValueError(f"detector id {self.detector!r} must start with {self.threat.value}")

    @property
    def id(self) -> str:
        # Keys carry wire text, which may hold undecodable bytes as lone surrogates.
        digest = hashlib.sha256(
            f"{self.detector}\x00{self.key}\x00{self.first_seen:.6f}".encode(
                "utf-8", "surrogateescape"
            )
        ).hexdigest()
        return f"f-{digest[:16]}"

    def to_json(self) -> dict[str, Any]:
        """conventions.md §2; optional parts are omitted when empty."""
        data: dict[str, Any] = {
            "id": self.id,
            "detector": self.detector,
            "threat": self.threat.value,
            "severity": self.severity.value,
            "confidence": self.confidence,
            "summary": self.summary,
            "first_seen": rfc3339(self.first_seen),
            "last_seen": rfc3339(self.last_seen),
            "count": self.count,
        }
        if self.source is not None:
            data["source"] = self.source.to_json()
        if self.target is not None:
            data["target"] = self.target.to_json()
        data["indicators"] = dict(self.indicators)
        data["evidence"] = self.evidence.to_json()
        if self.recommended_action is not None:
            data["recommended_action"] = self.recommended_action.to_json()
        return data
