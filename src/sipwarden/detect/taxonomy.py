"""The FS.38 threat families and severities (conventions.md §1): every finding has one of each."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["SEVERITY_ORDER", "Severity", "Threat"]


class Threat(StrEnum):
    """The ``threat`` field of a finding; one docstring line each, from conventions.md §1."""

    TDOS = "tdos"  # telephony denial of service: floods per source, fan-in, call floods, storms
    RECON = "recon"  # scanning and enumeration: sweeps, probes, extension enumeration, scanners
    CREDENTIAL = "credential"  # digest brute force, credential stuffing, nonce replay
    UNAUTHORIZED = "unauthorized"  # service without authentication, open relay
    TOLL_FRAUD = "toll_fraud"  # IRSF, premium rate, PBX hacking, velocity and concurrency abuse
    WANGIRI = "wangiri"  # one-ring callback fraud
    SPOOFING = "spoofing"  # caller-ID spoofing, invalid numbers, STIR/SHAKEN failures
    IDENTITY_TAKEOVER = "identity_takeover"  # SIM swap, IMS identity rebinding
    MALFORMED = "malformed"  # protocol violations and fuzzing, oversize, header bombs
    INJECTION = "injection"  # SQL / script / command / format-string payloads in SIP fields
    DISCLOSURE = "disclosure"  # topology and version leakage


class Severity(StrEnum):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 (info) to 4 (critical), for ``--fail-on`` and sorting."""
        return SEVERITY_ORDER.index(self)


SEVERITY_ORDER: tuple[Severity, ...] = tuple(Severity)
