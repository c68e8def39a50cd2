"""Typed header values, registered by canonical name (dnspython's ``rdtypes`` shape).

Each :class:`HeaderType` knows how to parse one field value (a ``str``) into a typed value and
whether the header is a *singleton* (at most one field, no comma list: RFC 3261 §7.3.1 and
RFC 4475 §3.3.8). List headers parse into a ``list``; the message layer concatenates the lists
of all fields with that name. Unknown headers stay raw text.

Parsing happens on first access, so the gateway's fast path pays only for what policy reads.
For the hottest headers (Via, the address family, Call-ID) typed access reads the structure
with string operations and checks what it returns (hosts, ports, numbers), while the header's
``validate`` function - run once by ``msg.defects`` - holds the value to the full RFC grammar.
Parsers raise ValueError; the message layer adds the offset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sipwarden.sip.hdr.auth import parse_challenge, parse_credentials
from sipwarden.sip.hdr.identity import parse_identity, parse_privacy
from sipwarden.sip.hdr.name_addr import (
    parse_contact,
    parse_name_addr,
    parse_name_addr_list,
    parse_route_list,
    validate_contact,
    validate_name_addr,
    validate_name_addr_list,
    validate_route_list,
)
from sipwarden.sip.hdr.pani import parse_access_network_info
from sipwarden.sip.hdr.products import parse_products
from sipwarden.sip.hdr.scalars import (
    parse_call_id,
    parse_content_length,
    parse_content_type,
    parse_cseq,
    parse_date,
    parse_delta_seconds,
    parse_max_forwards,
    read_call_id,
)
from sipwarden.sip.hdr.via import parse_via, validate_via

__all__ = [
    "COMPACT_FORMS",
    "HEADER_TYPES",
    "VALUE_CACHE_ENTRIES",
    "HeaderType",
    "canonical_key",
    "display_name",
    "set_value_cache_entries",
]

#: RFC 3261 §7.3.3 compact forms and the later ones registered with IANA
#: (RFC 3841 a/j/d, RFC 3265 o/u, RFC 3515 r, RFC 3892 b, RFC 4028 x, RFC 8224 y).
COMPACT_FORMS: dict[str, str] = {
    "v": "via",
    "f": "from",
    "t": "to",
    "m": "contact",
    "i": "call-id",
    "l": "content-length",
    "c": "content-type",
    "s": "subject",
    "k": "supported",
    "e": "content-encoding",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}


#: Most distinct values remembered per header type by the value cache (see HeaderType).
VALUE_CACHE_ENTRIES = 4096
value_cache_entries = VALUE_CACHE_ENTRIES


@dataclass(frozen=True, slots=True)
class HeaderType:
    """How to read one header: its parser, whether it is a singleton, and its value cache.

    ``parse`` returns the typed value of a singleton, or a tuple of values for a list header.

    The value cache (``values``: text -> typed value) exists because a SIP element sees every
    value twice or more - a response repeats its request's Via, From, To, Call-ID and CSeq byte
    for byte, and every message of a dialog repeats From, To and Call-ID - so remembering what a
    text parsed to saves most typed parsing on real traffic. Typed values are immutable, so
    sharing them between messages is safe; invalid values are never stored. Attackers choose
    values, so the table is bounded: when full it is emptied (O(1), no eviction bookkeeping),
    and a flood of unique values degrades to plain parsing, never to more memory.
    """

    name: str
    parse: Callable[[str], Any]
    singleton: bool
    #: The strict check of one field value against the RFC grammar (ValueError if not), run by
    #: ``msg.defects``. None when ``parse`` already checks everything it reads.
    validate: Callable[[str], Any] | None = None
    values: dict[str, Any] = field(default_factory=dict)
    #: Texts that passed ``validate`` (same reasoning and bound as ``values``; failures are
    #: never stored, so every invalid field is checked - and reported - again).
    valid: set[str] = field(default_factory=set)

    def parse_cached(self, text: str) -> Any:
        values = self.values
        hit = values.get(text)
        if hit is None:
            hit = self.parse(text)
            if len(values) >= value_cache_entries:
                values.clear()
            if value_cache_entries:
                values[text] = hit
        return hit

    def validate_cached(self, text: str) -> None:
        """``validate(text)`` unless the text already passed (ValueError when invalid)."""
        valid = self.valid
        if text in valid or self.validate is None:
            return
        self.validate(text)
        if len(valid) >= value_cache_entries:
            valid.clear()
        if value_cache_entries:
            valid.add(text)


def _one(parse: Callable[[str], Any]) -> Callable[[str], tuple[Any, ...]]:
    """List headers parse to tuples; these carry one value per field."""

    def parse_one(value: str) -> tuple[Any, ...]:
        return (parse(value),)

    parse_one.__name__ = parse.__name__
    return parse_one


def _entries() -> dict[str, HeaderType]:
    table = [
        HeaderType("Via", parse_via, False, validate_via),
        HeaderType("From", parse_name_addr, True, validate_name_addr),
        HeaderType("To", parse_name_addr, True, validate_name_addr),
        HeaderType("Contact", parse_contact, False, validate_contact),
        HeaderType("Route", parse_route_list, False, validate_route_list),
        HeaderType("Record-Route", parse_route_list, False, validate_route_list),
        HeaderType("Path", parse_route_list, False, validate_route_list),
        HeaderType("P-Asserted-Identity", parse_name_addr_list, False, validate_name_addr_list),
        HeaderType("P-Preferred-Identity", parse_name_addr_list, False, validate_name_addr_list),
        HeaderType("Diversion", parse_name_addr_list, False, validate_name_addr_list),
        HeaderType("History-Info", parse_name_addr_list, False, validate_name_addr_list),
        HeaderType("Refer-To", parse_name_addr, True, validate_name_addr),
        HeaderType("Referred-By", parse_name_addr, True, validate_name_addr),
        HeaderType("CSeq", parse_cseq, True),
        HeaderType("Call-ID", read_call_id, True, parse_call_id),
        HeaderType("Max-Forwards", parse_max_forwards, True),
        HeaderType("Content-Length", parse_content_length, True),
        HeaderType("Content-Type", parse_content_type, True),
        HeaderType("Expires", parse_delta_seconds, True),
        HeaderType("Min-Expires", parse_delta_seconds, True),
        HeaderType("Date", parse_date, True),
        HeaderType("WWW-Authenticate", _one(parse_challenge), False),
        HeaderType("Proxy-Authenticate", _one(parse_challenge), False),
        HeaderType("Authorization", _one(parse_credentials), False),
        HeaderType("Proxy-Authorization", _one(parse_credentials), False),
        HeaderType("Identity", _one(parse_identity), False),
        HeaderType("Privacy", parse_privacy, True),
        HeaderType("User-Agent", parse_products, True),
        HeaderType("Server", parse_products, True),
        HeaderType("P-Access-Network-Info", parse_access_network_info, False),
    ]
    return {entry.name.lower(): entry for entry in table}


HEADER_TYPES: dict[str, HeaderType] = _entries()

# Canonical spellings for display, e.g. "call-id" -> "Call-ID".
_DISPLAY = {key: entry.name for key, entry in HEADER_TYPES.items()}


def set_value_cache_entries(max_entries: int) -> None:
    """Bound every header type's value cache (0 turns caching off, e.g. to measure without)."""
    global value_cache_entries  # noqa: PLW0603 - one process-wide knob, read on the hot path
    value_cache_entries = max_entries
    for entry in HEADER_TYPES.values():
        entry.values.clear()
        entry.valid.clear()


def canonical_key(name: str) -> str:
    """Lookup key of a header name: lower-cased, compact form expanded."""
    key = name.strip().lower()
    return COMPACT_FORMS.get(key, key)


def display_name(key: str) -> str:
    """A conventional spelling of a lookup key ("call-id" -> "Call-ID")."""
    known = _DISPLAY.get(key)
    if known is not None:
        return known
    return "-".join(part.capitalize() for part in key.split("-"))
