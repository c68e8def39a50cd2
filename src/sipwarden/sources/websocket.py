"""WebSocket deframing for SIP over WebSocket (RFC 7118) seen in a capture.

A browser client (SIP.js, JsSIP) opens an HTTP/1.1 connection, upgrades it to WebSocket
(RFC 6455 §4: ``GET`` with ``Upgrade: websocket``, answered ``101 Switching Protocols``) and
then sends each SIP message as one WebSocket message (RFC 7118 §5). :class:`WebSocketDeframer`
follows one TCP direction: it skips the HTTP head, then turns frames into whole messages -
unmasking client frames, joining continuation frames, skipping control frames - and stops at
a close frame. It is pure and bounded: a head over ``MAX_HANDSHAKE_BYTES`` or a message over
``max_message_bytes`` is an error, and nothing else is buffered.
"""

from __future__ import annotations

import re

__all__ = ["MAX_HANDSHAKE_BYTES", "WebSocketDeframer", "WebSocketError", "starts_websocket"]

#: The HTTP upgrade request or response head must end within this many bytes (browsers send
#: under 1 KB; 8 KB is the common HTTP server header limit).
MAX_HANDSHAKE_BYTES = 8192

_UPGRADE_REQUEST = re.compile(rb"GET \S+ HTTP/1\.1\r\n")
_UPGRADE_RESPONSE = re.compile(rb"HTTP/1\.1 101[ \r]")
_WEBSOCKET = re.compile(rb"\r\nupgrade:[ \t]*websocket", re.IGNORECASE)

_OP_CONTINUATION = 0x0
_OP_TEXT = 0x1
_OP_BINARY = 0x2
_OP_CLOSE = 0x8


class WebSocketError(ValueError):
    """The direction is not a well-formed WebSocket stream (or exceeds a bound)."""


def starts_websocket(payload: bytes) -> bool:
    """True for the first segment of an upgrade: ``GET … HTTP/1.1`` asking for websocket, or
    the server's ``HTTP/1.1 101``."""
    if _UPGRADE_RESPONSE.match(payload):
        return True
    if not _UPGRADE_REQUEST.match(payload):
        return False
    head_end = payload.find(b"\r\n\r\n", 0, MAX_HANDSHAKE_BYTES)
    head = payload[: head_end if head_end >= 0 else MAX_HANDSHAKE_BYTES]
    return _WEBSOCKET.search(head) is not None


class WebSocketDeframer:
    """One direction of an upgraded connection: bytes in, whole messages out."""

    __slots__ = ("_buffer", "_closed", "_fragments", "_in_head", "max_message_bytes")

    def __init__(self, max_message_bytes: int) -> None:
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()
        self._in_head = True
        self._closed = False
        self._fragments: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; the messages they complete. Raises :class:`WebSocketError`."""
        if self._closed:
            return []
        self._buffer += data
        if self._in_head and not self._skip_head():
            return []
        out: list[bytes] = []
        while not self._closed:
            message = self._next_frame()
            if message is None:
                break
            if message:
                out.append(message)
        return out

    def _skip_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HANDSHAKE_BYTES:
                raise WebSocketError(f"upgrade head longer than {MAX_HANDSHAKE_BYTES} bytes")
            return False
        del self._buffer[: end + 4]
        self._in_head = False
        return True

    def _next_frame(self) -> bytes | None:
        """The message a complete frame finishes, b"" for a frame that finishes none, or None
        when more bytes are needed."""
        buf = self._buffer
        if len(buf) < 2:
            return None
        fin = buf[0] & 0x80
        opcode = buf[0] & 0x0F
        masked = buf[1] & 0x80
        length = buf[1] & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = int.from_bytes(buf[2:4], "big")
            pos = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = int.from_bytes(buf[2:10], "big")
            pos = 10
        pending = sum(len(f) for f in self._fragments)
        if pending + length > self.max_message_bytes:
            raise WebSocketError(
                f"message of {pending + length} bytes exceeds max_message_bytes="
                f"{self.max_message_bytes}"
            )
        key = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            key = bytes(buf[pos : pos + 4])
            pos += 4
        if len(buf) < pos + length:
            return None
        payload = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        if key:
            payload = _unmask(payload, key)
        if opcode == _OP_CLOSE:
            self._closed = True
            return b""
        if opcode & 0x08:  # ping, pong: control frames carry no SIP
            return b""
        if opcode not in (_OP_TEXT, _OP_BINARY, _OP_CONTINUATION):
            raise WebSocketError(f"reserved opcode {opcode:#x}")
        if opcode == _OP_CONTINUATION and not self._fragments:
            raise WebSocketError("continuation frame without a message to continue")
        if opcode != _OP_CONTINUATION and self._fragments:
            raise WebSocketError("new message before the previous one finished")
        self._fragments.append(payload)
        if not fin:
            return b""
        message = b"".join(self._fragments)
        self._fragments = []
        return message


def _unmask(payload: bytes, key: bytes) -> bytes:
    """RFC 6455 §5.3: XOR with the 4-byte key, repeated (done as one big integer XOR)."""
    n = len(payload)
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")
