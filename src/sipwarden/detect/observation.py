"""Observation: the only input of the detection engine - one SIP message (or one that failed to
parse) seen at a packet time, between two endpoints. Sources (pcap, HEP, the gateway) build
them; detectors only read them."""

from __future__ import annotations

from typing import NamedTuple

from sipwarden.net import Endpoint
from sipwarden.sip import Request, Response, SipParseError

__all__ = ["Observation"]


class Observation(NamedTuple):
    #: Packet time, epoch seconds (from the capture, or the wall clock of a live adapter).
    ts: float
    #: 1-based capture frame number, or 0 when there is no capture (live traffic).
    frame: int
    src: Endpoint
    dst: Endpoint
    #: The parsed message, or None when it failed to parse (then ``error`` is set).
    message: Request | Response | None
    error: SipParseError | None
    #: Bytes on the wire (the SIP payload).
    size: int

    @property
    def request(self) -> Request | None:
        return self.message if isinstance(self.message, Request) else None

    @property
    def response(self) -> Response | None:
        return self.message if isinstance(self.message, Response) else None
