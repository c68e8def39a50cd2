"""The sans-IO detection engine: observations in, findings out (no I/O, no clock).

Importing this package fills the detector registry (``DETECTORS``) from the explicit list in
``detect/detectors/__init__.py``.
"""

from __future__ import annotations

from sipwarden.detect import detectors as _detectors  # noqa: F401 - fills DETECTORS
from sipwarden.detect.base import Detector, DetectorConfig
from sipwarden.detect.engine import Engine, EngineConfig
from sipwarden.detect.finding import Evidence, Finding, RecommendedAction, Target
from sipwarden.detect.observation import Observation
from sipwarden.detect.registry import DETECTORS, register
from sipwarden.detect.taxonomy import Severity, Threat

__all__ = [
    "DETECTORS",
    "Detector",
    "DetectorConfig",
    "Engine",
    "EngineConfig",
    "Evidence",
    "Finding",
    "Observation",
    "RecommendedAction",
    "Severity",
    "Target",
    "Threat",
    "register",
]
