"""wangiri: one-ring callback fraud - short, cancelled calls from one calling number to many
subscribers (conventions.md §1; anchors in shared/reference/detection-anchors.md §2.3, §3, §4.8).

Theory of operation
-------------------
A Wangiri ("one ring and cut") campaign calls many subscribers from one premium or
international number, lets each phone ring about once and cancels, hoping people call back at
the fraudster's rate. In SIP that is a call that ends CANCELLED (CANCEL or 487) after a short
ring time and was never answered. :class:`RingAndCancel` counts, per *calling number* (the From
user - the campaign arrives through a carrier trunk, so the source IP is the carrier, not the
fraudster), the distinct callees of such calls in a sliding window. Only a calling number a
subscriber could call back counts: ``anonymous``, ``unknown`` and other names are many different
callers who withheld their number, not one campaign.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field

from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.finding import Evidence, Finding, RecommendedAction, Target
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import register
from sipwarden.detect.tables import DistinctCounter, TableStats, TtlMap
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.detect.tracker import CallEnd, CallEvent, CallPhase

__all__ = ["RingAndCancel", "RingAndCancelConfig"]

#: A caller over the threshold gets at most one hit this often: below the engine's 300 s
#: episode gap, so one campaign stays one finding.
_REPEAT_S = 60.0
#: A number a callee could dial back: digits, optional '+', at most 15 digits (ITU-T E.164).
_CALLBACK_NUMBER = re.compile(r"\+?[0-9]{1,15}")
#: RFC 3966 visual separators that phones put in users.
_SEPARATORS = str.maketrans("", "", "-.() ")


class RingAndCancelConfig(DetectorConfig):
    max_ring_s: float = Field(
        6.0,
        gt=0,
        description=(
            "Longest time from INVITE to cancel that counts as 'one ring'. 6 s = one NANP "
            "ringing cycle (2 s on, 4 s off) plus set-up; ABC Monitor's short_calls_ip/uri "
            "thresholds are server-side and not public."
        ),
    )
    window_s: float = Field(
        3600.0,
        gt=0,
        description=(
            "Sliding window, seconds. 1 h: TransNexus NexOSS#402 asks for a Wangiri report by "
            "calling number over a reporting period; campaigns run for hours."
        ),
    )
    distinct_callees: int = Field(
        10,
        ge=2,
        description=(
            "Distinct callees of short cancelled calls from one calling number within the "
            "window that make a campaign. No published default (ABC's are not public); a "
            "person does not ring ten different people once each and hang up within an hour."
        ),
    )
    max_callers: int = Field(
        100_000,
        ge=1,
        description="Calling numbers tracked; least recent evicted and counted in evictions.",
    )
    block_ttl_s: int = Field(
        86_400,
        ge=1,
        description="Suggested TEMP_BLOCK of the calling number, seconds (1 day: callbacks "
        "come for hours after a campaign).",
    )


@register
class RingAndCancel(Detector):
    """Wangiri: one calling number rings many subscribers briefly and cancels.

    Signal: ENDED calls that were never answered, ended CANCELLED within ``max_ring_s`` of the
    INVITE; per From user that is a number (a callback needs one), the distinct Request-URI
    users in ``window_s``; a hit at ``distinct_callees``.
    Why: one-ring calls bait callbacks to premium/international numbers; no open engine detects
    it (detection-anchors §4.8), users ask for it (TransNexus/NexOSS#402).
    Defaults' anchor: ABC Monitor short_calls_ip/short_calls_uri (the closest alarm; thresholds
    not public), NANP ring cadence for ``max_ring_s``; counts ours.
    Known false positives: auto-diallers and alert systems that cancel unanswered calls
    quickly (allow-list their source), a caller ID shared by a whole call centre.
    """

    id: ClassVar[str] = "wangiri.ring_and_cancel"
    threat: ClassVar[Threat] = Threat.WANGIRI
    Config: ClassVar[type[DetectorConfig]] = RingAndCancelConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, RingAndCancelConfig)
        cfg = self.config
        self._cfg = cfg
        self._callees: DistinctCounter[str, str] = DistinctCounter(
            cfg.max_callers, cfg.window_s, cfg.distinct_callees
        )
        self._throttle: TtlMap[str, float] = TtlMap(cfg.max_callers, _REPEAT_S)

    def observe(self, obs: Observation) -> list[Finding]:
        return []  # calls come from the tracker (on_call)

    def on_call(self, event: CallEvent) -> list[Finding]:
        call = event.call
        if event.phase is not CallPhase.ENDED or call.end is not CallEnd.CANCELLED:
            return []
        ring = call.ring_time
        if call.answered is not None or ring is None or ring > self._cfg.max_ring_s:
            return []
        if not call.caller or not call.callee or self.allowed(call.src.ip):
            return []
        caller = call.caller.translate(_SEPARATORS)
        if not _CALLBACK_NUMBER.fullmatch(caller):
            return []  # "anonymous", "unknown", a name: withheld callers, nothing to call back
        cfg = self._cfg
        count = self._callees.add(caller, call.callee, event.ts)
        if count < cfg.distinct_callees:
            return []
        if self._throttle.get(caller, event.ts) is not None:
            return []
        self._throttle.set(caller, event.ts, event.ts)
        return [
            Finding(
                self.id,
                self.threat,
                Severity.HIGH,
                80,
                # Members are capped at the threshold, so the count is a lower bound.
                f"Wangiri ring-and-cancel from {caller}: at least {count} subscribers rung "
                f"≤{cfg.max_ring_s:g} s and cancelled in {cfg.window_s:g} s (via {call.src.ip})",
                caller,
                event.ts,
                event.ts,
                source=call.src,
                target=Target(call.dst.ip, call.dst.port, call.callee),
                indicators={
                    "calling_number": caller,
                    "distinct_callees": str(count),
                    "ring_time_s": f"{ring:.1f}",
                },
                evidence=Evidence().add(event.frame or call.first_frame or None, call.call_id),
                recommended_action=RecommendedAction("TEMP_BLOCK", cfg.block_ttl_s),
            )
        ]

    def advance(self, now: float) -> list[Finding]:
        self._callees.expire(now)
        self._throttle.expire(now)
        return []

    def next_deadline(self) -> float | None:
        deadlines = [
            d for d in (self._callees.next_expiry(), self._throttle.next_expiry()) if d is not None
        ]
        return min(deadlines) if deadlines else None

    def stats(self) -> TableStats:
        return TableStats.total((self._callees, self._throttle))

    def state_size(self) -> int:
        return self.stats().entries

    def evictions(self) -> int:
        return self.stats().evictions
