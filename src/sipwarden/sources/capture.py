"""Capture file → :class:`~sipwarden.detect.Observation`s: the pcap reader's SIP payloads,
parsed. A payload that does not parse is still an observation (with ``error`` set): malformed
traffic is evidence, not noise."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from sipwarden.detect.observation import Observation
from sipwarden.sip import DEFAULT_LIMITS, ParseLimits, SipParseError, parse_message
from sipwarden.sources.decode import SourceStats
from sipwarden.sources.pcap import iter_sip

__all__ = ["iter_observations"]


def iter_observations(
    path: str | Path, stats: SourceStats | None = None, limits: ParseLimits = DEFAULT_LIMITS
) -> Iterator[Observation]:
    """Every SIP message of a capture, in capture order, as an Observation."""
    for item in iter_sip(path, stats, limits=limits):
        if item.error is not None:  # a TCP stream that could not be framed
            yield Observation(item.ts, item.frame, item.src, item.dst, None, item.error, 0)
            continue
        try:
            message, error = parse_message(item.payload, limits), None
        except SipParseError as exc:
            message, error = None, exc
        yield Observation(
            item.ts, item.frame, item.src, item.dst, message, error, len(item.payload)
        )
