"""Shared builders for detector tests."""

from __future__ import annotations

from sipwarden.detect.observation import Observation
from sipwarden.net import Endpoint
from sipwarden.sip import SipParseError, parse_message


def observe(
    data: bytes,
    ts: float = 0.0,
    src: str = "192.0.2.10",
    frame: int = 1,
    dst: str = "198.51.100.5",
) -> Observation:
    """An Observation of raw SIP bytes from ``src`` to ``dst``; unparsable bytes keep the error."""
    try:
        message, error = parse_message(data), None
    except SipParseError as exc:
        message, error = None, exc
    return Observation(
        ts, frame, Endpoint(src, 5060), Endpoint(dst, 5060), message, error, len(data)
    )
