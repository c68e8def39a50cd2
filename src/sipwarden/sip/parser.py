"""parse_message: bytes -> Request | Response, or SipParseError. Nothing else escapes.

Theory of operation
-------------------
The parser does the least work that still lets it say "this is a SIP message, here are its
fields" and nothing a caller may never need (h11's lesson: parse lazily, but never be loose
about what decides framing).

1. **Bounds first.** The whole input is checked against ``max_message_bytes`` before any other
   work, the header block against ``max_header_bytes`` as soon as its end is found.
2. **Start line.** Empty lines before it are skipped (RFC 3261 §7.5, defect ``leading_crlf``);
   other junk is skipped only up to a line that is a valid start line (``junk_before_start_line``,
   a violation). Request-Line and Status-Line must match RFC 3261 §25 exactly: one SP between
   elements, ``SIP/2.0``, a three-digit status.
3. **Header block.** Decoded once (UTF-8; invalid bytes kept as surrogate escapes and recorded),
   split into lines, folded continuation lines joined to their field (RFC 3261 §7.3.1), each field
   split at its first colon. Names must be tokens; values are kept as written.
4. **Framing.** Content-Length decides the body (RFC 3261 §18.3): more bytes than announced are
   ignored with a defect (a datagram may carry padding), fewer are an error, a negative or
   non-numeric length is an error, two lengths are a violation. Without Content-Length the body
   is the rest of the datagram (stream framing, which requires the header, is
   :class:`~sipwarden.sip.framing.StreamFramer`'s job).
5. **Everything else is lazy.** Typed headers parse on first access; ``message.defects`` runs
   the remaining checks (mandatory headers, singleton headers, every typed header and URI) once.
"""

from __future__ import annotations

import re

from sipwarden.sip import _abnf
from sipwarden.sip._abnf import KNOWN_METHODS
from sipwarden.sip.errors import Defect, SipParseError
from sipwarden.sip.headers import _KEY_CACHE, Headers, header_key
from sipwarden.sip.limits import DEFAULT_LIMITS, ParseLimits
from sipwarden.sip.message import Request, Response

__all__ = ["KNOWN_METHODS", "field_spans", "parse_message"]


_REQUEST_LINE = re.compile(rf"({_abnf.TOKEN}) ([^\x00-\x20\x7f]+) SIP/2\.0")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9]) ([^\r\n]*)")
_ANY_VERSION_REQUEST = re.compile(rf"{_abnf.TOKEN} [^\x00-\x20\x7f]+ (SIP/\S+)")
_ANY_VERSION_STATUS = re.compile(r"(SIP/\S+) [0-9]+ ")
# What a start line looks like, loosely (any version): used only to skip junk before one.
_LOOSE_START = re.compile(rb"[A-Za-z0-9!%*_+`'~.\-]+ [^ \r\n]+ SIP/[0-9]|SIP/[0-9]\.[0-9] [0-9]")


def parse_message(data: bytes, limits: ParseLimits = DEFAULT_LIMITS) -> Request | Response:
    """Parse one SIP message (a datagram, or one message framed from a stream).

    Raises :class:`SipParseError` and nothing else; non-fatal problems are on
    ``message.defects``.
    """
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SipParseError("empty_message", 0, f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    size = len(data)
    if size > limits.max_message_bytes:
        raise SipParseError(
            "message_too_large",
            limits.max_message_bytes,
            f"{size} bytes exceed max_message_bytes={limits.max_message_bytes}",
            513,
        )
    defects: list[Defect] = []
    start = 0 if data[:1].isalpha() else _find_start(data, defects)

    # -- header block: the CRLF fast path, else bare-LF mode ------------------------------
    end = data.find(b"\r\n\r\n", start)
    if 0 <= end - start <= limits.max_header_bytes:
        raw_head = data[start:end]
        head = (
            raw_head.decode("ascii")
            if raw_head.isascii()
            else _decode_utf8(raw_head, start, defects)
        )
        lines = head.split("\r\n")
        sep = "\r\n"
        body_start = end + 4
        if head.count("\n") != len(lines) - 1:  # a bare LF inside the header block
            head, lines, body_start = _split_lf(data, start, size, limits, defects)
            sep = "\n"
    else:
        head, lines, body_start = _split_lf(data, start, size, limits, defects)
        sep = "\n"
    if len(lines) > limits.max_headers + 1:
        raise SipParseError(
            "too_many_headers",
            start,
            f"{len(lines) - 1} header lines exceed max_headers={limits.max_headers}",
        )
    start_line = lines[0]
    if len(head) - len(start_line) > limits.max_header_line_bytes:
        _check_line_lengths(lines, limits, start, head, sep)

    # -- header fields (the hot loop: keep it flat) ----------------------------------------
    fields: list[tuple[str, str, str]] = []
    first_index: dict[str, int] = {}
    repeated: list[str] = []
    key_cache = _KEY_CACHE
    i = 0
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = key_cache.get(name)
        if key is None or not colon:
            if line[:1] in (" ", "\t"):  # a folded continuation: rare, so redo the slow way
                fields, first_index, repeated = _folded_fields(lines, head, sep, start, defects)
                break
            key = _new_field_key(name, colon, line, head, sep, i, start)
        if key in first_index:
            repeated.append(key)
        else:
            first_index[key] = i
        fields.append((key, name, value.strip()))
        i += 1  # noqa: SIM113 - enumerate() costs more in this loop
    via_index = first_index.get("via")
    if via_index is not None and ("," in fields[via_index][2] or "via" in repeated):
        _check_via_hops(fields, limits, start)

    # -- body (RFC 3261 §18.3) ------------------------------------------------------------
    available = size - body_start
    cl_index = first_index.get("content-length")
    if cl_index is not None:
        cl_text = fields[cl_index][2]
        if not (cl_text.isdigit() and cl_text.isascii()):
            raise SipParseError(
                "invalid_content_length",
                _field_offset(head, sep, cl_index, start),
                f"Content-Length {cl_text[:20]!r} is not a non-negative integer",
            )
        length = int(cl_text)
        if repeated and "content-length" in repeated:
            values = sorted({v for k, _, v in fields if k == "content-length"})
            defects.append(
                Defect(
                    "duplicate_content_length",
                    _field_offset(head, sep, cl_index, start),
                    f"Content-Length given {repeated.count('content-length') + 1} times "
                    f"({', '.join(values)})",
                )
            )
        if length > available:
            raise SipParseError(
                "content_length_exceeds_data",
                body_start,
                f"Content-Length {length} but only {max(available, 0)} body bytes",
            )
        body_end = body_start + length
        if length < available:
            defects.append(
                Defect(
                    "extra_bytes_after_body",
                    body_end,
                    f"{available - length} bytes after the body ignored",
                )
            )
    else:
        body_end = size
    if body_end - body_start > limits.max_body_bytes:
        raise SipParseError(
            "body_too_large",
            body_start,
            f"body of {body_end - body_start} bytes exceeds max_body_bytes={limits.max_body_bytes}",
            413,
        )
    body = data[body_start:body_end]
    raw = data if start == 0 and body_end == size else data[start:body_end]
    headers = Headers(fields, first_index, repeated)

    # -- start line -----------------------------------------------------------------------
    match = _REQUEST_LINE.fullmatch(start_line)
    if match is not None:
        method, uri = match.groups()
        if len(method) > limits.max_method_bytes:
            raise SipParseError(
                "method_too_long",
                start,
                f"method of {len(method)} bytes exceeds max_method_bytes={limits.max_method_bytes}",
            )
        if len(uri) > limits.max_uri_bytes:
            raise SipParseError(
                "request_uri_too_long",
                start + len(method) + 1,
                f"Request-URI of {len(uri)} bytes exceeds max_uri_bytes={limits.max_uri_bytes}",
                414,
            )
        if method not in KNOWN_METHODS:
            defects.append(Defect("unknown_method", start, f"extension method {method[:32]!r}"))
        return Request(method, uri, raw, headers, body, head, sep, start, defects)
    match = _STATUS_LINE.fullmatch(start_line)
    if match is not None:
        return Response(
            int(match.group(1)), match.group(2), raw, headers, body, head, sep, start, defects
        )
    raise _start_line_error(start_line, start)


def _folded_fields(
    lines: list[str], head: str, sep: str, base: int, defects: list[Defect]
) -> tuple[list[tuple[str, str, str]], dict[str, int], list[str]]:
    """Fields of a header block with folded lines (RFC 3261 §7.3.1)."""
    fields: list[tuple[str, str, str]] = []
    for i, line in enumerate(_unfold(lines, defects, base, len(sep))[1:]):
        name, colon, value = line.partition(":")
        key = _new_field_key(name, colon, line, head, sep, i, base)
        fields.append((key, name, value.strip()))
    headers = Headers.build(fields)
    return fields, headers._first, headers._repeated


def _new_field_key(
    name: str, colon: str, line: str, head: str, sep: str, index: int, base: int
) -> str:
    """The slow path of the header loop: a name not seen before, or a line without colon."""
    if not colon:
        raise SipParseError(
            "invalid_header_line",
            _field_offset(head, sep, index, base),
            f"no colon in header line {line[:40]!r}",
        )
    try:
        return header_key(name)
    except ValueError as exc:
        raise SipParseError(
            "invalid_header_line", _field_offset(head, sep, index, base), str(exc)
        ) from None


def _check_via_hops(fields: list[tuple[str, str, str]], limits: ParseLimits, base: int) -> None:
    hops = sum(v.count(",") + 1 for k, _, v in fields if k == "via")
    if hops > limits.max_via_hops:
        raise SipParseError(
            "too_many_via", base, f"{hops} Via hops exceed max_via_hops={limits.max_via_hops}", 483
        )


def _split_lf(
    data: bytes, start: int, size: int, limits: ParseLimits, defects: list[Defect]
) -> tuple[str, list[str], int]:
    """Bare-LF line ends (RFC 5118's archive uses them; many stacks accept them)."""
    del defects[:]
    if start:
        _find_start(data, defects)
    candidates = [e for e in (data.find(b"\n\n", start), data.find(b"\n\r\n", start)) if e >= 0]
    if candidates:
        end = min(candidates)
        body_start = end + (2 if data[end + 1 : end + 2] == b"\n" else 3)
    elif b"\n" in data[start:].rstrip(b"\r\n"):
        # A datagram that ends after its last header line (some capture tools and broken
        # stacks drop the empty line). A datagram is one message, so this is unambiguous:
        # read it, as a violation.
        end = len(data.rstrip(b"\r\n"))
        body_start = size
        defects.append(
            Defect("missing_header_terminator", end, "no empty line after the header block")
        )
    else:
        first_line = data[start:].split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
        if not (_REQUEST_LINE.fullmatch(first_line) or _STATUS_LINE.fullmatch(first_line)):
            raise _start_line_error(first_line, start)
        raise SipParseError(
            "incomplete_headers", size, "the header block does not end with an empty line"
        )
    if end - start > limits.max_header_bytes:
        raise SipParseError(
            "headers_too_large",
            start + limits.max_header_bytes,
            f"header block of {end - start} bytes exceeds max_header_bytes="
            f"{limits.max_header_bytes}",
            513,
        )
    raw_head = data[start:end]
    head = (
        raw_head.decode("ascii") if raw_head.isascii() else _decode_utf8(raw_head, start, defects)
    )
    if head.count("\n") != head.count("\r\n"):
        defects.insert(0, Defect("bare_lf_line_ending", start, "lines end in LF, not CRLF"))
    lines = [line[:-1] if line.endswith("\r") else line for line in head.split("\n")]
    return head, lines, body_start


def _decode_utf8(raw_head: bytes, base: int, defects: list[Defect]) -> str:
    """Decode a non-ASCII header block; invalid UTF-8 is kept (surrogate escapes) and recorded."""
    head = raw_head.decode("utf-8", "surrogateescape")
    try:
        head.encode("utf-8")
    except UnicodeEncodeError as exc:
        offset = base + len(head[: exc.start].encode("utf-8", "surrogateescape"))
        defects.append(Defect("invalid_utf8", offset, "header text is not valid UTF-8"))
    return head


def _find_start(data: bytes, defects: list[Defect]) -> int:
    """Skip empty lines (tolerated) and junk (a violation) before the start line.

    Junk is skipped only up to a line that looks like a start line, looked for line by line
    (each check anchored at a line start, so hostile input costs linear time).
    """
    stripped = data.lstrip(b"\r\n")
    start = len(data) - len(stripped)
    if not stripped.strip():
        raise SipParseError("empty_message", 0, "no start line: the input is empty or blank")
    if start:
        defects.append(
            Defect("leading_crlf", 0, f"{start} bytes of empty lines before the start line")
        )
    if _LOOSE_START.match(data, start):
        return start
    line_start = data.find(b"\n", start) + 1
    while 0 < line_start < len(data):
        if _LOOSE_START.match(data, line_start):
            defects.append(
                Defect(
                    "junk_before_start_line",
                    start,
                    f"{line_start - start} bytes before the start line",
                )
            )
            return line_start
        line_start = data.find(b"\n", line_start) + 1
    return start  # no start line anywhere: let the start-line check name the problem


def _start_line_error(line: str, offset: int) -> SipParseError:
    match = _ANY_VERSION_REQUEST.fullmatch(line) or _ANY_VERSION_STATUS.match(line)
    if match is not None and match.group(1) != "SIP/2.0":
        return SipParseError(
            "unsupported_version", offset, f"{match.group(1)[:20]!r} is not SIP/2.0", 505
        )
    if line.startswith("SIP/2.0 "):
        return SipParseError(
            "invalid_status_code",
            offset + 8,
            f"status {line[8:].split(' ', 1)[0][:20]!r} is not 100-699",
        )
    if line != line.strip() or "  " in line:
        detail = "extra whitespace in the start line (RFC 3261 §7.1 allows exactly one SP)"
    else:
        detail = f"not a Request-Line or Status-Line: {line[:60]!r}"
    return SipParseError("invalid_start_line", offset, detail)


def _field_offset(head: str, sep: str, index: int, base: int) -> int:
    """Byte offset of header field ``index`` (0 = first field after the start line)."""
    spans = field_spans(head, sep)
    pos = spans[index][0] if index < len(spans) else 0
    return base + len(head[:pos].encode("utf-8", "surrogateescape"))


def _line_offset(head: str, sep: str, line_no: int, base: int) -> int:
    """Byte offset of line ``line_no`` (0 = start line) of the head."""
    pos = 0
    for _ in range(line_no):
        nxt = head.find("\n", pos)
        if nxt < 0:
            break
        pos = nxt + 1
    return base + len(head[:pos].encode("utf-8", "surrogateescape"))


def _check_line_lengths(
    lines: list[str], limits: ParseLimits, base: int, head: str, sep: str
) -> None:
    limit = limits.max_header_line_bytes
    field_len = 0
    field_start = 0
    for n, line in enumerate(lines[1:], 1):
        if line[:1] in (" ", "\t"):
            field_len += len(line) + len(sep)
        else:
            field_len, field_start = len(line), n
        if field_len > limit:
            raise SipParseError(
                "header_line_too_long",
                _line_offset(head, sep, field_start, base),
                f"header field of over {limit} bytes (max_header_line_bytes)",
            )


def _unfold(lines: list[str], defects: list[Defect], base: int, sep_len: int) -> list[str]:
    """Join continuation lines (starting with SP/HT) to the field before them (RFC 3261 §7.3.1).

    The joined value keeps one SP for the line break, as LWS is equivalent to SP. One defect
    records the first continuation line.
    """
    out = [lines[0]]
    offset = base + len(lines[0].encode("utf-8", "surrogateescape")) + sep_len
    first_fold: int | None = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if len(out) == 1:
                raise SipParseError(
                    "invalid_header_line", offset, "continuation line before the first header"
                )
            if first_fold is None:
                first_fold = offset
            out[-1] = out[-1].rstrip(" \t") + " " + line.lstrip(" \t")
        else:
            out.append(line)
        offset += len(line.encode("utf-8", "surrogateescape")) + sep_len
    if first_fold is not None:
        defects.append(
            Defect("folded_header", first_fold, "a header value continues on the next line")
        )
    return out


def field_spans(head: str, sep: str) -> list[tuple[int, int]]:
    """Character spans (start, end) of each header field's text in ``head``, folded
    continuation lines included, line terminators excluded."""
    spans: list[tuple[int, int]] = []
    pos = head.find("\n")
    if pos < 0:
        return spans
    pos += 1
    n = len(head)
    while pos < n:
        nxt = head.find("\n", pos)
        line_end = n if nxt < 0 else nxt
        text_end = line_end - 1 if line_end > pos and head[line_end - 1] == "\r" else line_end
        if head[pos : pos + 1] in (" ", "\t") and spans:
            spans[-1] = (spans[-1][0], text_end)
        else:
            spans.append((pos, text_end))
        pos = line_end + 1
    return spans
