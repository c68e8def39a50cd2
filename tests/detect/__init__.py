"""Shared builders for detector tests."""

from __future__ import annotations

from weakref import WeakKeyDictionary

from sipwarden.detect.base import Detector
from sipwarden.detect.finding import Finding
from sipwarden.detect.observation import Observation
from sipwarden.detect.tracker import CallEvent, Tracker
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


_trackers: WeakKeyDictionary[Detector, Tracker] = WeakKeyDictionary()


def feed_one(detector: Detector, obs: Observation) -> list[Finding]:
    """Feed one observation to ``detector`` exactly as the engine does - windows due by now
    first, then ``observe``, then the events of the detector's own tracker - and return its
    hits (unaggregated)."""
    tracker = _trackers.setdefault(detector, Tracker())
    events = tracker.advance(obs.ts)
    hits: list[Finding] = []
    deadline = detector.next_deadline()
    if deadline is not None and deadline <= obs.ts:
        hits += detector.advance(obs.ts)
    events += tracker.observe(obs)
    hits += detector.observe(obs)
    for event in events:
        if isinstance(event, CallEvent):
            hits += detector.on_call(event)
        else:
            hits += detector.on_transaction(event)
    return hits
