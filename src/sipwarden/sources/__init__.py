"""Ways in for passive analysis: capture files and (later) HEP, as SIP payloads with metadata.

``decode`` is pure (frames → UDP/TCP → SIP payloads, bounded reassembly); ``pcap`` reads files.
"""

from __future__ import annotations

from sipwarden.sources.decode import (
    Datagram,
    FrameDecoder,
    Segment,
    SipExtractor,
    SipPayload,
    Skipped,
    SkipReason,
    SourceStats,
)
from sipwarden.sources.pcap import Frame, iter_frames, iter_sip

__all__ = [
    "Datagram",
    "Frame",
    "FrameDecoder",
    "Segment",
    "SipExtractor",
    "SipPayload",
    "SkipReason",
    "Skipped",
    "SourceStats",
    "iter_frames",
    "iter_sip",
]
