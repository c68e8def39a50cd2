"""Detector: the shape every detector has (Zeek's brute-force template, in Python).

A detector is a small class with a typed, documented ``Config`` (pydantic, ``extra="forbid"``,
every default citing its anchor), fed :class:`Observation`s in packet-time order. It returns
*hits* - :class:`Finding`s for one event or window - and the engine aggregates hits with the
same detector and key into one finding per episode. Detectors that need "later" (a window that
closes, a call that never answered) implement :meth:`advance` and :meth:`next_deadline`.
Detectors never read a clock, a file or a socket.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from sipwarden.detect.finding import Evidence, Finding, RecommendedAction, Target
from sipwarden.detect.networks import NetworkList, NetworkSet
from sipwarden.detect.observation import Observation
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.detect.tracker import CallEvent, Transaction
from sipwarden.sip import SipParseError

__all__ = ["Detector", "DetectorConfig"]


class DetectorConfig(BaseModel):
    """Settings every detector has. Subclasses add theirs, each with a description."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="Run this detector.")
    allow_sources: NetworkList = Field(
        (),
        description=(
            "Source IPs or CIDR networks this detector ignores (trusted PBXs, SBCs, "
            "monitoring). Empty by default: nothing is trusted until configured."
        ),
    )


class Detector(ABC):
    """Base class: set ``id`` (``"<threat>.<snake_name>"``), ``threat`` and ``Config``."""

    id: ClassVar[str]
    threat: ClassVar[Threat]
    Config: ClassVar[type[DetectorConfig]] = DetectorConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()
        self._allow = NetworkSet(self.config.allow_sources)

    def allowed(self, ip: str) -> bool:
        """True when ``ip`` is on this detector's allow-list. Detectors call it for the party
        they judge (a request's source; for a response, the client it goes to)."""
        return ip in self._allow

    def hit(
        self,
        obs: Observation,
        severity: Severity,
        confidence: int,
        summary: str,
        key: str,
        *,
        target: Target | None = None,
        indicators: dict[str, str] | None = None,
        action: RecommendedAction | None = None,
    ) -> Finding:
        """A one-observation hit of this detector: seen at ``obs.ts`` from ``obs.src``, with
        the frame and (when readable) the Call-ID as evidence."""
        call_id = None
        if obs.message is not None:
            try:
                call_id = obs.message.call_id
            except SipParseError:
                call_id = None
        return Finding(
            self.id,
            self.threat,
            severity,
            confidence,
            summary,
            key,
            obs.ts,
            obs.ts,
            source=obs.src,
            target=target,
            indicators=indicators if indicators is not None else {},
            evidence=Evidence().add(obs.frame or None, call_id),
            recommended_action=action,
        )

    @abstractmethod
    def observe(self, obs: Observation) -> list[Finding]:
        """Hits caused by this observation (often none)."""

    def on_transaction(self, tx: Transaction) -> list[Finding]:
        """Hits caused by a request/response pair the engine's tracker matched (first 18x,
        final, or unanswered). Called after :meth:`observe` of the message that completed it."""
        return []

    def on_call(self, event: CallEvent) -> list[Finding]:
        """Hits caused by a call phase (started, ringing, answered, ended) from the tracker."""
        return []

    def advance(self, now: float) -> list[Finding]:
        """Hits that time alone produces (windows closing); ``now`` is packet time."""
        return []

    def next_deadline(self) -> float | None:
        """When :meth:`advance` next has something to do, or None."""
        return None

    def state_size(self) -> int:
        """Entries held in this detector's tables (bounded; reported as a metric)."""
        return 0

    def evictions(self) -> int:
        """Entries its bounded tables dropped to stay within their limits."""
        return 0
