"""Every detector family, imported explicitly: this list is the registry's single source of
truth (design.md §2.4). Module name == threat family."""

from __future__ import annotations

from sipwarden.detect.detectors import (
    credential,
    disclosure,
    identity_takeover,
    injection,
    malformed,
    recon,
    spoofing,
    tdos,
    toll_fraud,
    unauthorized,
    wangiri,
)

__all__ = [
    "credential",
    "disclosure",
    "identity_takeover",
    "injection",
    "malformed",
    "recon",
    "spoofing",
    "tdos",
    "toll_fraud",
    "unauthorized",
    "wangiri",
]
