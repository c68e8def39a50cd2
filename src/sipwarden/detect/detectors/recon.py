"""recon: scanning and enumeration (conventions.md §1)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.finding import Finding, RecommendedAction, Target
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import register
from sipwarden.detect.taxonomy import Severity, Threat
from sipwarden.sip import SipParseError

__all__ = ["ScannerUserAgent"]

# Kamailio's default config blocks User-Agents matching
# friendly|scanner|sipcli|sipvicious|VaxSIPUserAgent|pplsip; the secfilter example list and the
# ET VOIP/SCAN rules add the rest (shared/reference/detection-anchors.md §2.2). "Asterisk PBX"
# is left out on purpose: real Asterisk sends it (ET sid 2012296 fires on it).
_DEFAULT_SIGNATURES = (
    "friendly-scanner",
    "friendly",
    "scanner",
    "sipcli",
    "sipvicious",
    "vaxsipuseragent",
    "pplsip",
    "sundayddr",
    "iwar",
    "simplesip",
    "sip call",
    "ozeki",
    "voipsec",
    "sipscan",
    "conaito",
    "usaairport",
    "portsip voip sdk",
    "zxcvfdf11",
    "fdgddfg546df4g8d5f",
    "siptest",
    "nmap nse",
    "sivus",
    "smap",
    "voiper",
)


class ScannerUserAgentConfig(DetectorConfig):
    signatures: tuple[str, ...] = Field(
        _DEFAULT_SIGNATURES,
        description=(
            "Case-insensitive substrings of User-Agent (or of the From display name) that name "
            "a scanning tool. Default: Kamailio default-config regex + secfilter example list "
            "+ ET VOIP/SCAN signatures; 'Asterisk PBX' deliberately excluded (real Asterisk)."
        ),
    )


@register
class ScannerUserAgent(Detector):
    """A request whose User-Agent or From display name names a known SIP scanner.

    Signal: User-Agent / From display name substrings (SIPVicious 'friendly-scanner', sipcli,
    sundayddr …). Why: tools announce themselves by default and most attackers do not change
    it. Defaults' anchor: Kamailio default config, secfilter, ET rules. Known false positives:
    a PBX vendor string containing 'scanner'; a renamed tool is missed (later detectors look at
    behaviour instead).
    """

    id: ClassVar[str] = "recon.scanner_user_agent"
    threat: ClassVar[Threat] = Threat.RECON
    Config: ClassVar[type[DetectorConfig]] = ScannerUserAgentConfig

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__(config)
        assert isinstance(self.config, ScannerUserAgentConfig)
        self._signatures = tuple(s.lower() for s in self.config.signatures)

    def observe(self, obs: Observation) -> list[Finding]:
        request = obs.request
        if request is None or self.allowed(obs.src.ip):
            return []
        user_agent = request.headers.get("user-agent") or ""
        try:
            sender = request.from_
        except SipParseError:
            sender = None
        display = (sender.display_name or "") if sender is not None else ""
        matched = self._match(user_agent) or self._match(display)
        if matched is None:
            return []
        try:
            user = request.request_uri.user
        except SipParseError:
            user = None
        indicators = {"signature": matched}
        if user_agent:
            indicators["user_agent"] = user_agent[:200]
        return [
            self.hit(
                obs,
                Severity.HIGH,
                90,
                f"SIP scanner {matched!r} from {obs.src.ip} ({request.method} to {obs.dst.ip})",
                obs.src.ip,
                target=Target(obs.dst.ip, obs.dst.port, user),
                indicators=indicators,
                action=RecommendedAction("TEMP_BLOCK", 3600),
            )
        ]

    def _match(self, text: str) -> str | None:
        lowered = text.lower()
        for signature in self._signatures:
            if signature in lowered:
                return signature
        return None
