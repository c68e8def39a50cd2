"""The checks behind ``message.defects`` that the parser leaves for later.

Run once per message, on first access of ``defects``: mandatory and singleton headers
(RFC 3261 §8.1.1, §20; RFC 4475 §3.3.8-3.3.9), every registered typed header, every URI in
an address header and the Request-URI, CSeq method vs request method, and the tolerances an
operator wants to see (Max-Forwards 0, a top Via without the magic cookie).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sipwarden.sip.errors import Defect, SipParseError
from sipwarden.sip.hdr import HEADER_TYPES, HeaderType
from sipwarden.sip.hdr.scalars import parse_delta_seconds
from sipwarden.sip.hdr.via import BRANCH_COOKIE
from sipwarden.sip.message import TYPED_GETTERS, Request

if TYPE_CHECKING:
    from sipwarden.sip.hdr.name_addr import NameAddr
    from sipwarden.sip.message import Message

__all__ = ["semantic_defects"]

# qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_MANDATORY = ("to", "from", "cseq", "call-id", "via")
# Headers whose typed values are addresses with URIs to check.
_ADDRESS_HEADERS = (
    "from",
    "to",
    "contact",
    "route",
    "record-route",
    "path",
    "p-asserted-identity",
    "p-preferred-identity",
    "diversion",
    "history-info",
    "refer-to",
    "referred-by",
)


def semantic_defects(msg: Message) -> Iterator[Defect]:
    headers = msg.headers
    is_request = isinstance(msg, Request)
    # One pass over the fields: the positions of every registered header, by lookup key.
    positions: dict[str, list[int]] = {}
    for i, (key, _, _) in enumerate(headers.fields):
        if key in HEADER_TYPES:
            found = positions.get(key)
            if found is None:
                positions[key] = [i]
            else:
                found.append(i)
    missing = [HEADER_TYPES[key].name for key in _MANDATORY if key not in positions]
    if missing:
        yield Defect(
            "missing_mandatory_header", msg.byte_offset(0), f"missing {', '.join(missing)}"
        )
    if is_request and "max-forwards" not in positions:
        yield Defect(
            "missing_max_forwards",
            msg.byte_offset(0),
            "no Max-Forwards (RFC 2543 style; a proxy adds 70, RFC 3261 §16.6)",
        )
    getters = TYPED_GETTERS
    for key, where in positions.items():
        htype = HEADER_TYPES[key]
        if htype.singleton and len(where) > 1 and key != "content-length":
            yield Defect(
                "duplicate_singleton_header",
                msg.field_offset(where[1]),
                f"{htype.name} appears {len(where)} times",
            )
        try:
            value = getters[key](msg)
        except SipParseError as exc:
            yield Defect("invalid_header_value", exc.offset, exc.detail)
            continue
        if htype.validate is not None:
            invalid = _first_invalid(msg, htype, where)
            if invalid is not None:
                offset, detail = invalid
                yield Defect("invalid_header_value", offset, f"{htype.name}: {detail}")
                continue
        if key in _ADDRESS_HEADERS:
            yield from _address_defects(msg, htype, key, value, where[0])

    if isinstance(msg, Request):
        yield from _request_checks(msg)

    try:
        vias = msg.via
    except SipParseError:
        vias = ()
    if vias:
        top = vias[0]
        if top.protocol != "SIP" or top.version != "2.0":
            yield Defect(
                "invalid_header_value",
                msg.field_offset(headers.indices("via")[0]),
                f"Via: sent-protocol {top.protocol}/{top.version} is not SIP/2.0",
            )
        for hop in vias:
            try:
                hop.params  # noqa: B018 - strict parse: a parameter given twice
            except ValueError as exc:
                yield Defect(
                    "invalid_header_value",
                    msg.field_offset(headers.indices("via")[0]),
                    f"Via: {exc}",
                )
            if ":" in hop.host and not hop.host.startswith("["):
                yield Defect(
                    "invalid_header_value",
                    msg.field_offset(headers.indices("via")[0]),
                    f"Via: IPv6 sent-by {hop.host!r} without brackets (RFC 3261 §25, RFC 5118)",
                )
        branch = top.branch
        if branch is None or not branch.startswith(BRANCH_COOKIE) or branch == BRANCH_COOKIE:
            yield Defect(
                "missing_branch_cookie",
                msg.field_offset(headers.indices("via")[0]),
                f"top Via branch {branch!r} is not z9hG4bK followed by an id "
                "(RFC 2543 transaction matching applies)",
            )


def _address_defects(
    msg: Message, htype: HeaderType, key: str, value: Any, first: int
) -> Iterator[Defect]:
    """Strict checks of the addresses of an address header (``first``: its first field)."""
    for address in value if type(value) is tuple else (value,):
        if address.wildcard:
            continue
        try:
            address.params  # noqa: B018 - strict parse: a parameter given twice
        except ValueError as exc:
            yield Defect("invalid_header_value", msg.field_offset(first), f"{htype.name}: {exc}")
            continue
        try:
            uri = address.uri
        except ValueError as exc:
            yield Defect("invalid_header_value", msg.field_offset(first), f"{htype.name}: {exc}")
            continue
        if uri.scheme not in ("sip", "sips", "tel"):
            yield Defect(
                "unknown_uri_scheme",
                msg.field_offset(first),
                f"{htype.name} URI scheme {uri.scheme!r}",
            )
        if key == "contact":
            problem = _contact_param_problem(address)
            if problem:
                yield Defect("invalid_header_value", msg.field_offset(first), f"Contact: {problem}")


def _first_invalid(msg: Message, htype: HeaderType, positions: list[int]) -> tuple[int, str] | None:
    """(offset, detail) of the first field that fails the strict grammar check, or None."""
    fields = msg.headers.fields
    for i in positions:
        try:
            htype.validate_cached(fields[i][2])
        except ValueError as exc:
            return msg.field_offset(i), str(exc)
    return None


def _contact_param_problem(address: NameAddr) -> str | None:
    """RFC 3261 §20.10: expires is delta-seconds (32 bits), q a qvalue from 0 to 1."""
    expires = address.param("expires")
    if expires is not None:
        try:
            parse_delta_seconds(expires)
        except ValueError as exc:
            return f"expires parameter: {exc}"
    q = address.param("q")
    if q is not None and not _QVALUE.fullmatch(q):
        return f"q parameter {q[:20]!r} is not a qvalue (0 to 1, three decimals)"
    return None


def _request_checks(msg: Request) -> Iterator[Defect]:
    uri_offset = msg.byte_offset(len(msg.method) + 1)
    text = msg.uri
    if text.startswith("<"):
        yield Defect("invalid_request_uri", uri_offset, "Request-URI enclosed in <>")
    else:
        try:
            uri = msg.request_uri
        except SipParseError as exc:
            yield Defect("invalid_request_uri", exc.offset, exc.detail)
        else:
            if uri.scheme not in ("sip", "sips", "tel"):
                yield Defect("unknown_uri_scheme", uri_offset, f"Request-URI scheme {uri.scheme!r}")
            elif uri.headers:
                # RFC 3261 §19.1.5: the headers component is not allowed in a Request-URI.
                yield Defect(
                    "invalid_request_uri", uri_offset, "Request-URI carries a ?headers component"
                )
    try:
        cseq = msg.cseq
    except SipParseError:
        cseq = None
    if cseq is not None and cseq.method != msg.method:
        yield Defect(
            "cseq_method_mismatch",
            msg.field_offset(msg.headers.indices("cseq")[0]),
            f"CSeq method {cseq.method[:32]!r} differs from {msg.method[:32]!r}",
        )
    try:
        max_forwards = msg.max_forwards
    except SipParseError:
        max_forwards = None
    if max_forwards == 0:
        yield Defect(
            "max_forwards_zero",
            msg.field_offset(msg.headers.indices("max-forwards")[0]),
            "Max-Forwards is 0",
        )
