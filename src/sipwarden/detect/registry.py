"""The one registry of detectors: id -> class, filled by explicit imports in
``detect/detectors/__init__.py`` (no entry points, no dynamic imports by name)."""

from __future__ import annotations

from typing import TypeVar

from sipwarden.detect.base import Detector

__all__ = ["DETECTORS", "register"]

DETECTORS: dict[str, type[Detector]] = {}

D = TypeVar("D", bound=type[Detector])


def register(cls: D) -> D:
    """Class decorator; a duplicate or malformed id fails at import time."""
    detector_id = cls.id
    family, _, name = detector_id.partition(".")
    if family != cls.threat.value or not name or not name.replace("_", "").isalnum():
        raise ValueError(f"detector id {detector_id!r} must be '{cls.threat.value}.<snake_name>'")
    if detector_id in DETECTORS:
        raise ValueError(f"duplicate detector id {detector_id!r}")
    DETECTORS[detector_id] = cls
    return cls
