"""A parsed SIP message (or the reason it could not be parsed) as JSON-ready data and as text.

Used by ``sipwarden parse``. Typed values are rendered field by field, so one malformed header
shows its own error next to the others' values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sipwarden.sip import Message, Request, Response, SipParseError
from sipwarden.sip.hdr import HEADER_TYPES
from sipwarden.sip.hdr.name_addr import NameAddr
from sipwarden.sip.headers import header_key
from sipwarden.sip.uri import Uri

__all__ = ["error_to_json", "message_to_json", "render_error_text", "render_message_text"]


def _plain(value: Any) -> Any:
    """Typed header values -> JSON-ready values (dicts, lists, strings, numbers)."""
    if isinstance(value, NameAddr):
        if value.wildcard:
            return {"wildcard": True}
        data: dict[str, Any] = {"uri": value.uri_text}
        if value.display_name is not None:
            data["display_name"] = value.display_name
        if value.tag is not None:
            data["tag"] = value.tag
        if value.params_text:
            data["params"] = value.params_text
        return data
    if isinstance(value, Uri):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items() if v not in (None, ())}
    if isinstance(value, tuple) and hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items() if v not in (None, "", ())}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def _typed_field(name: str, value: str) -> dict[str, Any] | None:
    try:
        htype = HEADER_TYPES.get(header_key(name))
    except ValueError:
        return None
    if htype is None:
        return None
    try:
        return {"value": _plain(htype.parse(value))}
    except ValueError as exc:
        return {"error": str(exc)}


def message_to_json(msg: Message) -> dict[str, Any]:
    """Everything ``sipwarden parse --format json`` prints for a parsed message."""
    doc: dict[str, Any] = {"valid": msg.is_valid}
    if isinstance(msg, Request):
        doc.update(kind="request", method=msg.method, uri=msg.uri)
    elif isinstance(msg, Response):
        doc.update(kind="response", status=msg.status, reason=msg.reason)
    headers = []
    for name, value in msg.headers:
        entry: dict[str, Any] = {"name": name, "value": value}
        typed = _typed_field(name, value)
        if typed is not None:
            entry["typed"] = typed
        headers.append(entry)
    doc["headers"] = headers
    doc["body_bytes"] = len(msg.body)
    doc["message_bytes"] = len(msg.raw)
    doc["defects"] = [d.to_json() for d in msg.defects]
    return doc


def error_to_json(exc: SipParseError) -> dict[str, Any]:
    return {
        "valid": False,
        "error": {
            "code": exc.code,
            "offset": exc.offset,
            "detail": exc.detail,
            "status_hint": exc.status_hint,
        },
    }


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, list):
        return " | ".join(_short(v) for v in value)
    return str(value)


def render_message_text(msg: Message, source: str) -> str:
    doc = message_to_json(msg)
    lines = [f"{source}: {msg.start_line}"]
    width = max((len(h["name"]) for h in doc["headers"]), default=0)
    for header in doc["headers"]:
        lines.append(f"  {header['name']:<{width}}  {header['value']}")
        typed = header.get("typed")
        if typed is not None:
            if "error" in typed:
                lines.append(f"  {'':<{width}}  ! {typed['error']}")
            else:
                lines.append(f"  {'':<{width}}  = {_short(typed['value'])}")
    lines.append(f"  body: {doc['body_bytes']} bytes")
    for defect in msg.defects:
        kind = "VIOLATION" if defect.violation else "tolerated"
        lines.append(f"  defect {defect.code} at byte {defect.offset} ({kind}): {defect.detail}")
    lines.append("verdict: valid" if msg.is_valid else "verdict: INVALID")
    return "\n".join(lines)


def render_error_text(exc: SipParseError, source: str) -> str:
    return (
        f"{source}: not a valid SIP message: {exc.code} at byte {exc.offset}: {exc.detail} "
        f"(a server would answer {exc.status_hint})\nverdict: INVALID"
    )
