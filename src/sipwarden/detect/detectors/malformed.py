"""malformed: protocol violations and fuzzing (conventions.md §1)."""

from __future__ import annotations

from typing import ClassVar

from sipwarden.detect.base import Detector
from sipwarden.detect.finding import Finding, RecommendedAction
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import register
from sipwarden.detect.taxonomy import Severity, Threat

__all__ = ["ParserDefect"]


@register
class ParserDefect(Detector):
    """Messages that fail to parse or break RFC 3261 / RFC 4475 rules, per source.

    Signal: SipParseError, or a violation defect on a parsed message. Why: fuzzers and broken
    or hostile stacks; Kamailio sanity rejects the same (detection-anchors.md §2.4). The engine
    aggregates one finding per source and episode; the count is the number of bad messages.
    Known false positives: a buggy but benign device (the allow-list covers it).
    """

    id: ClassVar[str] = "malformed.parser_defect"
    threat: ClassVar[Threat] = Threat.MALFORMED

    def observe(self, obs: Observation) -> list[Finding]:
        if self.allowed(obs.src.ip):
            return []
        if obs.error is not None:
            code, detail = obs.error.code, obs.error.detail
        elif obs.message is not None:
            violations = obs.message.violations
            if not violations:
                return []
            code, detail = violations[0].code, violations[0].detail
        else:
            return []
        return [
            self.hit(
                obs,
                Severity.LOW,
                80,
                f"malformed SIP from {obs.src.ip}: {code} ({detail[:80]})",
                obs.src.ip,
                indicators={"code": code},
                action=RecommendedAction("MONITOR"),
            )
        ]
