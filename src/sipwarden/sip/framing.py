"""StreamFramer: cut a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3, RFC 5626 §3.5.1).

Theory of operation
-------------------
A stream carries messages back to back; each ends after its header block (an empty line) plus
``Content-Length`` body bytes, and Content-Length is mandatory on streams. Between messages a
peer may send RFC 5626 keep-alives: ``CRLF CRLF`` (a *ping*, to be answered with ``CRLF``) and
``CRLF`` (a *pong*).

The framer is sans-IO: :meth:`StreamFramer.feed` appends bytes, :meth:`StreamFramer.next_message`
returns the next complete message as ``bytes``, a keep-alive marker, or :data:`NEED_DATA`.

Two promises:

* **No rescans.** The search for the end of the header block resumes where the last one stopped
  (three bytes back, in case the terminator straddles two feeds), and once the header block is
  found its Content-Length is remembered. A 256 KiB header trickled in one byte at a time costs
  O(n), not O(n²).
* **Incomplete is never confused with invalid.** ``NEED_DATA`` means more bytes could still make
  a valid message. Bytes that cannot start a message, a header block longer than
  ``max_header_bytes``, a missing or malformed Content-Length, or a body over ``max_body_bytes``
  raise :class:`SipParseError` at once. The buffer never holds more than one message's limit.
"""

from __future__ import annotations

import re
from enum import Enum

from sipwarden.sip.errors import SipParseError
from sipwarden.sip.limits import DEFAULT_LIMITS, ParseLimits

__all__ = ["NEED_DATA", "FramerEvent", "StreamFramer"]


class FramerEvent(Enum):
    """What :meth:`StreamFramer.next_message` returns when it has no message bytes."""

    #: More bytes are needed before the next message is complete.
    NEED_DATA = "need_data"
    #: RFC 5626 keep-alive ping (CRLF CRLF): answer with a single CRLF.
    PING = "ping"
    #: RFC 5626 keep-alive pong (CRLF).
    PONG = "pong"


NEED_DATA = FramerEvent.NEED_DATA

_CONTENT_LENGTH = re.compile(
    rb"^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.I | re.M
)
# What a start line may begin with: a method token or "SIP/".
_START_BYTES = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~"
)
_FIRST_LINE = re.compile(
    rb"[A-Za-z0-9\-.!%*_+`'~]+ [^\x00-\x20\x7f]+ SIP/\d+\.\d+\r?"
    rb"|SIP/\d+\.\d+ \d+ [^\r\n]*\r?"
)


class StreamFramer:
    """Frames one direction of one stream. Not thread-safe; one per connection."""

    __slots__ = ("_buf", "_consumed", "_limits", "_need", "_scan")

    def __init__(self, limits: ParseLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits
        self._buf = bytearray()
        self._scan = 0  # where the header-end search resumes
        self._need: int | None = None  # total bytes of the current message, once known
        self._consumed = 0  # stream offset of _buf[0], for error offsets

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned."""
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        """Append bytes from the stream.

        The caller drains complete messages with :meth:`next_message` between feeds; a buffer
        of more than four messages' limit that was never drained is refused, so a peer cannot
        make it grow without bound even through a caller that forgot to.
        """
        if len(self._buf) + len(data) > 4 * self._limits.max_message_bytes:
            self._fail(
                "framing_error",
                len(self._buf),
                f"more than {4 * self._limits.max_message_bytes} bytes buffered without being "
                "framed",
            )
        self._buf += data

    def next_message(self) -> bytes | FramerEvent:
        """The next complete message, a keep-alive event, or NEED_DATA."""
        buf = self._buf
        if self._need is None:
            if not buf:
                return NEED_DATA
            if buf[0] in (13, 10):
                return self._keepalive()
            self._check_start()
            limits = self._limits
            end, body_start = self._find_head_end()
            if end < 0:
                if len(buf) > limits.max_header_bytes:
                    self._fail(
                        "headers_too_large",
                        limits.max_header_bytes,
                        f"no end of header block within max_header_bytes={limits.max_header_bytes}",
                        513,
                    )
                return NEED_DATA
            if end > limits.max_header_bytes:
                self._fail(
                    "headers_too_large",
                    limits.max_header_bytes,
                    f"header block of {end} bytes exceeds max_header_bytes="
                    f"{limits.max_header_bytes}",
                    513,
                )
            length = self._content_length(bytes(buf[:end]))
            if body_start + length > limits.max_message_bytes:
                self._fail(
                    "message_too_large",
                    0,
                    f"message of {body_start + length} bytes exceeds max_message_bytes="
                    f"{limits.max_message_bytes}",
                    513,
                )
            if length > limits.max_body_bytes:
                self._fail(
                    "body_too_large",
                    body_start,
                    f"Content-Length {length} exceeds max_body_bytes={limits.max_body_bytes}",
                    413,
                )
            self._need = body_start + length
        need = self._need
        if len(buf) < need:
            return NEED_DATA
        message = bytes(buf[:need])
        del buf[:need]
        self._consumed += need
        self._need = None
        self._scan = 0
        return message

    def _keepalive(self) -> FramerEvent:
        buf = self._buf
        if buf.startswith(b"\r\n\r\n"):
            self._drop(4)
            return FramerEvent.PING
        if buf.startswith(b"\r\n"):
            if len(buf) == 2 or (len(buf) == 3 and buf[2] == 13):
                return NEED_DATA  # could still become a ping
            self._drop(2)
            return FramerEvent.PONG
        if buf == b"\r":
            return NEED_DATA
        self._fail("framing_error", 0, "stray line break between messages")
        raise AssertionError("unreachable")

    def _drop(self, n: int) -> None:
        del self._buf[:n]
        self._consumed += n

    def _check_start(self) -> None:
        """Fail now if the bytes so far cannot begin a Request-Line or Status-Line."""
        buf = self._buf
        if buf[0] not in _START_BYTES:
            self._fail("framing_error", 0, f"byte 0x{buf[0]:02x} cannot start a SIP message")
        nl = buf.find(b"\n", 0, self._limits.max_uri_bytes + 64)
        if nl < 0:
            if len(buf) > self._limits.max_uri_bytes + 64:
                self._fail("invalid_start_line", 0, "start line too long")
            return
        if not _FIRST_LINE.fullmatch(buf, 0, nl):
            self._fail("invalid_start_line", 0, f"not a start line: {bytes(buf[: min(nl, 60)])!r}")

    def _find_head_end(self) -> tuple[int, int]:
        """(end of header block, start of body) or (-1, -1); resumes the previous search."""
        buf = self._buf
        scan = self._scan
        # The same three endings parse_message accepts: CRLF CRLF, LF LF, and LF CRLF (a
        # bare-LF header block closed by a CRLF empty line).
        found = [
            (end, end + size)
            for end, size in (
                (buf.find(b"\r\n\r\n", scan), 4),
                (buf.find(b"\n\n", scan), 2),
                (buf.find(b"\n\r\n", scan), 3),
            )
            if end >= 0
        ]
        if not found:
            self._scan = max(0, len(buf) - 3)
            return -1, -1
        # min: CRLF CRLF at p wins over the "\n\r\n" found inside it at p + 1.
        return min(found)

    def _content_length(self, head: bytes) -> int:
        values = {m.group(1) for m in _CONTENT_LENGTH.finditer(head)}
        if not values:
            self._fail(
                "framing_error", 0, "no Content-Length: it is mandatory on streams (RFC 3261 §18.3)"
            )
        if len(values) > 1:
            self._fail(
                "framing_error",
                0,
                f"conflicting Content-Length values {sorted(v.decode('latin-1') for v in values)}",
            )
        value = values.pop()
        if not value.isdigit() or len(value) > 10:
            self._fail(
                "invalid_content_length",
                0,
                f"Content-Length {value[:20].decode('latin-1')!r} is not a non-negative integer",
            )
        return int(value)

    def _fail(self, code: str, offset: int, detail: str, status: int = 400) -> None:
        raise SipParseError(code, self._consumed + offset, detail, status)
