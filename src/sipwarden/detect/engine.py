"""Engine: fan observations out to detectors, advance time, aggregate hits into findings.

Theory of operation
-------------------
Detectors return *hits*: findings for one event or one window. The engine merges hits with the
same ``(detector, key)`` into one finding per *episode* - while hits keep coming no more than
``episode_gap_s`` apart, the episode's finding grows (``count``, ``last_seen``, evidence, the
highest severity and confidence seen); a later hit starts a new episode with a new stable id.
Episodes idle for longer than the gap are closed when time advances.

Before the detectors see an observation, the engine's :class:`~sipwarden.detect.tracker.Tracker`
matches it to its transaction and call; the tracker's events go to the detectors that override
``on_transaction`` / ``on_call``. ``observe`` returns the findings the observation raised or
extended, so an inline gateway can act on the packet that caused them.

Time is packet time: the caller (a pcap reader, the gateway) passes each observation in order
and calls :meth:`Engine.advance` when time moves without traffic. Nothing here reads a clock.

Everything is bounded: open episodes (the least recently updated is closed first when full) and
kept findings (beyond ``max_findings`` new ones are counted, not kept).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from sipwarden.detect.base import Detector
from sipwarden.detect.finding import Finding
from sipwarden.detect.observation import Observation
from sipwarden.detect.tracker import CallEvent, Tracker, TrackerConfig, TrackerEvent

__all__ = ["Engine", "EngineConfig", "EngineStats"]


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    episode_gap_s: float = Field(
        300.0,
        gt=0,
        description=(
            "Hits of one detector and key closer than this belong to one finding; a longer "
            "silence closes it. 300 s as Kamailio's default-config ban (htable autoexpire)."
        ),
    )
    max_open_episodes: int = Field(
        100_000, ge=1, description="Episodes tracked at once; the least recently updated closes."
    )
    max_findings: int = Field(
        100_000, ge=1, description="Findings kept for the report; more are counted, not kept."
    )
    tracker: TrackerConfig = Field(
        default_factory=TrackerConfig,
        description="The transaction and call tracker the detectors share.",
    )


@dataclasses.dataclass
class EngineStats:
    observations: int = 0
    hits: int = 0
    episodes_closed_early: int = 0
    findings_dropped: int = 0


class Engine:
    """Runs detectors over observations in packet-time order."""

    def __init__(self, detectors: Sequence[Detector], config: EngineConfig | None = None) -> None:
        self.detectors = [d for d in detectors if d.config.enabled]
        self.config = config if config is not None else EngineConfig()
        self.stats = EngineStats()
        self._open: OrderedDict[tuple[str, str], Finding] = OrderedDict()
        self._closed: list[Finding] = []
        self._now = float("-inf")
        # Keys merged during the current observe() (None outside it).
        self._touched: list[tuple[str, str]] | None = None
        self.tracker = Tracker(self.config.tracker)
        # Only detectors that override a tracker hook are called for its events.
        self._tx_detectors = [
            d for d in self.detectors if type(d).on_transaction is not Detector.on_transaction
        ]
        self._call_detectors = [
            d for d in self.detectors if type(d).on_call is not Detector.on_call
        ]
        # Asking every detector for its deadline at every packet costs as much as a detector;
        # those that never have one are not asked.
        self._timed_detectors = [
            d for d in self.detectors if type(d).next_deadline is not Detector.next_deadline
        ]

    def observe(self, obs: Observation) -> list[Finding]:
        """Feed one observation. Returns the findings (open episodes, as they stand now) that
        this observation raised or extended - what an inline gateway acts on at once. Hits
        from windows that closed because time moved are not among them (they are about
        earlier traffic)."""
        self.stats.observations += 1
        if obs.ts > self._now:
            self.advance(obs.ts)
        touched: list[tuple[str, str]] = []
        self._touched = touched
        try:
            events = self.tracker.observe(obs)
            for detector in self.detectors:
                # Each detector applies its allow-list to the party it judges: the source of a
                # request, but the client a response goes to (credential detectors).
                self._merge(detector.observe(obs))
            if events:
                self._dispatch(events)
        finally:
            self._touched = None
        if not touched:
            return []
        found = (self._open.get(key) for key in dict.fromkeys(touched))
        return [finding for finding in found if finding is not None]

    def _dispatch(self, events: list[TrackerEvent]) -> None:
        for event in events:
            if isinstance(event, CallEvent):
                for detector in self._call_detectors:
                    self._merge(detector.on_call(event))
            else:
                for detector in self._tx_detectors:
                    self._merge(detector.on_transaction(event))

    def advance(self, now: float) -> None:
        """Let time pass: detectors close windows, idle episodes close."""
        self._now = max(self._now, now)
        deadline = self.tracker.next_deadline()
        if deadline is not None and deadline <= now:
            self._dispatch(self.tracker.advance(now))
        for detector in self._timed_detectors:
            deadline = detector.next_deadline()
            if deadline is not None and deadline <= now:
                self._merge(detector.advance(now))
        gap = self.config.episode_gap_s
        while self._open:
            key, finding = next(iter(self._open.items()))
            if now - finding.last_seen <= gap:
                break
            del self._open[key]
            self._keep(finding)

    def finish(self) -> list[Finding]:
        """End of input: every detector's pending windows, every episode closed; the findings
        in order of first sight."""
        self._dispatch(self.tracker.advance(float("inf")))
        for detector in self.detectors:
            self._merge(detector.advance(float("inf")))
        while self._open:
            self._keep(self._open.popitem(last=False)[1])
        return sorted(self._closed, key=lambda f: (f.first_seen, f.detector, f.key))

    def findings(self) -> list[Finding]:
        """Closed and still-open findings so far, in order of first sight."""
        return sorted(
            [*self._closed, *self._open.values()], key=lambda f: (f.first_seen, f.detector, f.key)
        )

    def state_size(self) -> int:
        return (
            len(self._open)
            + self.tracker.state_size()
            + sum(d.state_size() for d in self.detectors)
        )

    def evictions(self) -> int:
        return (
            self.stats.episodes_closed_early
            + self.tracker.evictions()
            + sum(d.evictions() for d in self.detectors)
        )

    # -- aggregation ---------------------------------------------------------------------------
    def _merge(self, hits: Iterable[Finding]) -> None:
        touched = self._touched
        for hit in hits:
            self.stats.hits += 1
            key = (hit.detector, hit.key)
            if touched is not None:
                touched.append(key)
            current = self._open.get(key)
            if current is not None and hit.first_seen - current.last_seen <= (
                self.config.episode_gap_s
            ):
                self._open[key] = _combine(current, hit)
                self._open.move_to_end(key)
                continue
            if current is not None:
                del self._open[key]
                self._keep(current)
            self._open[key] = hit
            if len(self._open) > self.config.max_open_episodes:
                self.stats.episodes_closed_early += 1
                self._keep(self._open.popitem(last=False)[1])

    def _keep(self, finding: Finding) -> None:
        if len(self._closed) >= self.config.max_findings:
            self.stats.findings_dropped += 1
            return
        self._closed.append(finding)


def _combine(episode: Finding, hit: Finding) -> Finding:
    evidence = episode.evidence
    for frame in hit.evidence.frames:
        evidence = evidence.add(frame, None)
    for call_id in hit.evidence.call_ids:
        evidence = evidence.add(None, call_id)
    # The action follows the severity: a hit that raises the episode's severity brings its own
    # (stronger) recommended action; otherwise the episode keeps the one it has.
    action = episode.recommended_action
    if hit.severity.rank > episode.severity.rank or action is None:
        action = hit.recommended_action or action
    return dataclasses.replace(
        episode,
        last_seen=max(episode.last_seen, hit.last_seen),
        count=episode.count + hit.count,
        recommended_action=action,
        severity=max(episode.severity, hit.severity, key=lambda s: s.rank),
        confidence=max(episode.confidence, hit.confidence),
        summary=hit.summary,
        indicators={**episode.indicators, **hit.indicators},
        evidence=evidence,
    )
