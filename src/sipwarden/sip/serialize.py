"""to_bytes and the edits a stateless proxy makes, each touching only its own bytes.

An untouched message serialises to exactly the bytes it was parsed from. An edit splices the
bytes of the fields it changes (the rest of the message, including odd spacing, folding and
header order, is copied as is) and re-parses the result, so the returned message is as
consistent as one received from the wire. Edits that belong together (push Via + decrement
Max-Forwards) can be applied in one splice with :func:`apply_edits`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

from sipwarden.sip.hdr import display_name
from sipwarden.sip.hdr.params import split_commas
from sipwarden.sip.headers import header_key
from sipwarden.sip.limits import DEFAULT_LIMITS, ParseLimits
from sipwarden.sip.message import Message
from sipwarden.sip.parser import field_spans, parse_message

__all__ = [
    "Edit",
    "apply_edits",
    "decrement_max_forwards",
    "pop_value_edit",
    "pop_via",
    "push_field_edit",
    "push_via",
    "remove_header",
    "replace_field_edit",
    "replace_header",
    "splice",
    "to_bytes",
]

M = TypeVar("M", bound=Message)


def to_bytes(msg: Message) -> bytes:
    """The message's bytes: exactly what was parsed, for an untouched message."""
    return msg.raw


@dataclass(frozen=True, slots=True)
class Edit:
    """One splice: replace raw bytes ``start:end`` (offsets into ``msg.raw``) by ``data``."""

    start: int
    end: int
    data: bytes


def _field_byte_spans(msg: Message) -> list[tuple[int, int]]:
    """(start, end) of each field's text in ``msg.raw``, terminator excluded."""
    spans = field_spans(msg._head, msg._sep)
    base = msg._base
    return [(msg.byte_offset(a) - base, msg.byte_offset(b) - base) for a, b in spans]


def _checked(value: str) -> str:
    """A value about to be written: CR, LF or NUL would smuggle in a header field of its own."""
    if "\r" in value or "\n" in value or "\x00" in value:
        raise ValueError(f"header value {value[:40]!r} contains CR, LF or NUL")
    return value


def _line(msg: Message, name: str, value: str) -> bytes:
    _checked(value)
    return f"{name}: {value}{msg._sep}".encode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def splice(raw: bytes, edits: list[Edit]) -> bytes:
    """``raw`` with non-overlapping splices applied, not parsed again: for a message that is
    only sent on (a proxy forwarding), where re-parsing would cost as much as the first parse."""
    out: list[bytes] = []
    pos = 0
    for edit in sorted(edits, key=lambda e: (e.start, e.end)):
        if edit.start < pos:
            raise ValueError("overlapping edits")
        out.append(raw[pos : edit.start])
        out.append(edit.data)
        pos = edit.end
    out.append(raw[pos:])
    return b"".join(out)


def apply_edits(msg: M, edits: list[Edit], limits: ParseLimits = DEFAULT_LIMITS) -> M:
    """Apply non-overlapping splices to ``msg.raw`` and parse the result."""
    result = parse_message(splice(msg.raw, edits), limits)
    if type(result) is not type(msg):
        raise ValueError("edit changed the kind of message")
    return result


def _terminator(raw: bytes, at: int) -> int:
    """Length of the line terminator at ``at``: lines may mix CRLF and LF."""
    if raw.startswith(b"\r\n", at):
        return 2
    return 1 if raw.startswith(b"\n", at) else 0


def _remove_field(msg: Message, spans: list[tuple[int, int]], index: int) -> Edit:
    start, end = spans[index]
    return Edit(start, end + _terminator(msg.raw, end), b"")


def _replace_field_value(
    msg: Message, spans: list[tuple[int, int]], index: int, value: str
) -> Edit:
    start, end = spans[index]
    _checked(value)
    name = msg.headers.fields[index][1].rstrip(" \t")
    return Edit(start, end, _encode(f"{name}: {value}"))


def _header_block_end(msg: Message, spans: list[tuple[int, int]]) -> int:
    """Offset just after the last field's terminator (where a new field is appended)."""
    if spans:
        end = spans[-1][1]
    else:
        first_line = msg._head.split("\n", 1)[0].rstrip("\r")
        end = msg.byte_offset(len(first_line)) - msg._base
    return end + _terminator(msg.raw, end)


def push_via_edit(msg: Message, value: str) -> Edit:
    spans = _field_byte_spans(msg)
    positions = msg.headers.indices("via")
    at = spans[positions[0]][0] if positions else _first_field_start(msg, spans)
    return Edit(at, at, _line(msg, "Via", value))


def push_field_edit(msg: Message, name: str, value: str) -> Edit:
    """An edit adding ``Name: value`` as the *top* value of a list header (Record-Route,
    Path): above its first field, or at the end of the header block when there is none."""
    spans = _field_byte_spans(msg)
    positions = msg.headers.indices(name)
    at = spans[positions[0]][0] if positions else _header_block_end(msg, spans)
    return Edit(at, at, _line(msg, display_name(header_key(name)), value))


def replace_field_edit(msg: Message, index: int, value: str) -> Edit:
    """An edit giving the ``index``-th header field the value ``value`` (its name kept)."""
    return _replace_field_value(msg, _field_byte_spans(msg), index, value)


def _first_field_start(msg: Message, spans: list[tuple[int, int]]) -> int:
    return spans[0][0] if spans else _header_block_end(msg, spans)


def push_via(msg: M, value: str, limits: ParseLimits = DEFAULT_LIMITS) -> M:
    """Add ``Via: value`` above the current top Via (RFC 3261 §16.6 step 8)."""
    return apply_edits(msg, [push_via_edit(msg, value)], limits)


def pop_value_edit(msg: Message, name: str) -> Edit:
    """An edit removing the top value of the list header ``name`` (Via, Route); other values on
    its line stay. ValueError when there is none."""
    positions = msg.headers.indices(name)
    if not positions:
        raise ValueError(f"no {display_name(header_key(name))} to remove")
    spans = _field_byte_spans(msg)
    first = positions[0]
    hops = split_commas(msg.headers.fields[first][2])
    if len(hops) == 1:
        return _remove_field(msg, spans, first)
    return _replace_field_value(msg, spans, first, ", ".join(hops[1:]))


def pop_via(msg: M, limits: ParseLimits = DEFAULT_LIMITS) -> M:
    """Remove the top Via hop (RFC 3261 §16.7 step 3); other hops on its line stay."""
    return apply_edits(msg, [pop_value_edit(msg, "via")], limits)


def decrement_max_forwards_edit(msg: Message) -> Edit:
    positions = msg.headers.indices("max-forwards")
    spans = _field_byte_spans(msg)
    if not positions:
        # RFC 3261 §16.6 step 3: a proxy adds Max-Forwards: 70 when the request has none.
        at = _header_block_end(msg, spans)
        return Edit(at, at, _line(msg, "Max-Forwards", "70"))
    current = msg.max_forwards
    if current is None or current <= 0:
        raise ValueError("Max-Forwards is 0: answer 483, do not forward")
    return _replace_field_value(msg, spans, positions[0], str(current - 1))


def decrement_max_forwards(msg: M, limits: ParseLimits = DEFAULT_LIMITS) -> M:
    """Max-Forwards minus one (or 70 added when absent); ValueError at 0 (the caller sends 483)."""
    return apply_edits(msg, [decrement_max_forwards_edit(msg)], limits)


def replace_header(msg: M, name: str, value: str, limits: ParseLimits = DEFAULT_LIMITS) -> M:
    """Set ``name`` to ``value``: the first field is rewritten in place, later fields of the same
    name removed; appended at the end of the header block when absent."""
    positions = msg.headers.indices(name)
    spans = _field_byte_spans(msg)
    if not positions:
        at = _header_block_end(msg, spans)
        label = display_name(header_key(name))  # ValueError unless a token
        return apply_edits(msg, [Edit(at, at, _line(msg, label, value))], limits)
    edits = [_replace_field_value(msg, spans, positions[0], value)]
    edits += [_remove_field(msg, spans, i) for i in positions[1:]]
    return apply_edits(msg, edits, limits)


def remove_header(msg: M, name: str, limits: ParseLimits = DEFAULT_LIMITS) -> M:
    """Remove every field called ``name`` (any case or compact form)."""
    positions = msg.headers.indices(name)
    if not positions:
        return msg
    spans = _field_byte_spans(msg)
    return apply_edits(msg, [_remove_field(msg, spans, i) for i in positions], limits)
