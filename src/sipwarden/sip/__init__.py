"""The sans-IO SIP core: parse, inspect, edit and frame SIP messages (RFC 3261, RFC 4475).

Standard library only; no sockets, files or clocks. Everything public is listed in ``__all__``
and pinned by a test.
"""

from __future__ import annotations

from sipwarden.sip.errors import DEFECT_CODES, ERROR_CODES, Defect, SipParseError
from sipwarden.sip.framing import NEED_DATA, FramerEvent, StreamFramer
from sipwarden.sip.hdr.auth import Challenge, Credentials
from sipwarden.sip.hdr.identity import Identity
from sipwarden.sip.hdr.name_addr import NameAddr
from sipwarden.sip.hdr.pani import AccessNetworkInfo
from sipwarden.sip.hdr.products import Product
from sipwarden.sip.hdr.scalars import ContentType, CSeq
from sipwarden.sip.hdr.via import Via
from sipwarden.sip.headers import Headers
from sipwarden.sip.limits import DEFAULT_LIMITS, ParseLimits
from sipwarden.sip.message import Message, Request, Response
from sipwarden.sip.parser import KNOWN_METHODS, parse_message
from sipwarden.sip.sdp import SdpParseError, SessionDescription, message_sdp, parse_sdp
from sipwarden.sip.serialize import (
    decrement_max_forwards,
    pop_via,
    push_via,
    remove_header,
    replace_header,
    to_bytes,
)
from sipwarden.sip.uri import Uri, parse_uri

__all__ = [
    "DEFAULT_LIMITS",
    "DEFECT_CODES",
    "ERROR_CODES",
    "KNOWN_METHODS",
    "NEED_DATA",
    "AccessNetworkInfo",
    "CSeq",
    "Challenge",
    "ContentType",
    "Credentials",
    "Defect",
    "FramerEvent",
    "Headers",
    "Identity",
    "Message",
    "NameAddr",
    "ParseLimits",
    "Product",
    "Request",
    "Response",
    "SdpParseError",
    "SessionDescription",
    "SipParseError",
    "StreamFramer",
    "Uri",
    "Via",
    "decrement_max_forwards",
    "message_sdp",
    "parse_message",
    "parse_sdp",
    "parse_uri",
    "pop_via",
    "push_via",
    "remove_header",
    "replace_header",
    "to_bytes",
]
