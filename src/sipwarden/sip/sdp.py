"""SDP: a strict-but-tolerant reader of session descriptions (RFC 8866, formerly RFC 4566).

Owns :func:`parse_sdp` (bytes -> :class:`SessionDescription`), :func:`message_sdp` (the SDP of a
SIP message's body, cached on the message) and :class:`SdpParseError`. Sans-IO and stdlib only,
like the rest of ``sip/``.

*Strict* where a detector relies on the value: ``v=0`` first, ``o=`` with its six fields,
``c=`` with network type, address type and an address whose multicast suffixes
(``/ttl[/count]`` for IP4, ``/count`` for IP6, RFC 8866 §5.7) are numbers, ``m=`` with a
numeric port (and optional ``/count``), a protocol and at least one format. *Tolerant* where
real stacks differ and nothing depends on it: LF or CRLF line ends, runs of spaces between
fields, empty lines, unknown line types (kept nowhere, ignored as RFC 8866 §5 lets a parser
ignore what it does not understand) and any order of the session-level lines after ``v=``.

Bounded: at most ``max_bytes`` of input and ``max_lines`` lines, so an attacker-chosen body
costs a bounded amount of work. Every problem raises :class:`SdpParseError` (a ``ValueError``
and a ``SipwardenError``) naming the 1-based line and its type letter; nothing else escapes
(a property test holds the parser to that).

Multipart bodies (``multipart/mixed`` with an SDP part, e.g. SIP-I/ISUP) are not unpacked:
:func:`message_sdp` reads only a body whose Content-Type is ``application/sdp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipwarden.errors import SipwardenError

if TYPE_CHECKING:
    from sipwarden.sip.message import Message

__all__ = [
    "MAX_SDP_BYTES",
    "MAX_SDP_LINES",
    "Connection",
    "Media",
    "Origin",
    "SdpParseError",
    "SessionDescription",
    "message_sdp",
    "parse_sdp",
]

#: Default input bound: the largest body a SIP datagram can carry (ParseLimits.max_body_bytes).
MAX_SDP_BYTES = 65535
#: Default line bound. No anchor; a rich video offer (many codecs, ICE candidates) has ~100.
MAX_SDP_LINES = 1024
#: Attribute names, types and other short tokens are cut to this length in the parsed value.
_MAX_TOKEN = 128


class SdpParseError(SipwardenError, ValueError):
    """The bytes are not an SDP session description; ``line`` is 1-based (0: the whole body)."""

    def __init__(self, line: int, detail: str) -> None:
        self.line = line
        self.detail = detail
        super().__init__(f"SDP line {line}: {detail}" if line else f"SDP: {detail}")


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``."""

    username: str
    session_id: str
    session_version: str
    net_type: str
    addr_type: str
    address: str


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>``; ``address`` without the suffixes.

    ``ttl`` is the IP4 multicast TTL, ``count`` the number of consecutive multicast
    addresses (RFC 8866 §5.7); both None for a unicast address.
    """

    net_type: str
    addr_type: str
    address: str
    ttl: int | None = None
    count: int | None = None


@dataclass(frozen=True, slots=True)
class Media:
    """One media section: its ``m=`` line and the ``c=``/``a=`` lines that follow it."""

    media: str
    port: int
    port_count: int | None
    proto: str
    formats: tuple[str, ...]
    connections: tuple[Connection, ...] = ()
    attributes: tuple[tuple[str, str | None], ...] = ()

    def attribute(self, name: str) -> str | None:
        """First value of attribute ``name`` (``""`` for a flag such as ``sendrecv``)."""
        return _attribute(self.attributes, name)


@dataclass(frozen=True, slots=True)
class SessionDescription:
    version: int
    origin: Origin
    session_name: str
    connection: Connection | None = None
    attributes: tuple[tuple[str, str | None], ...] = ()
    media: tuple[Media, ...] = ()

    def attribute(self, name: str) -> str | None:
        """First value of session-level attribute ``name`` (``""`` for a flag)."""
        return _attribute(self.attributes, name)

    def addresses(self) -> tuple[tuple[str, str], ...]:
        """Every address the description discloses, as ``(line, address)``: ``("o", …)``,
        the session ``("c", …)`` and each media section's ``("m<i>.c", …)`` (0-based i)."""
        found: list[tuple[str, str]] = [("o", self.origin.address)]
        if self.connection is not None:
            found.append(("c", self.connection.address))
        for i, media in enumerate(self.media):
            found.extend((f"m{i}.c", c.address) for c in media.connections)
        return tuple(found)


def _attribute(attributes: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    for key, value in attributes:
        if key == name:
            return "" if value is None else value
    return None


def _number(text: str, what: str, line: int, kind: str, maximum: int) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 10 or int(text) > maximum:
        raise SdpParseError(line, f"{kind}= {what} {text[:40]!r} is not a number 0..{maximum}")
    return int(text)


def _connection(value: str, line: int) -> Connection:
    fields = value.split()
    if len(fields) != 3:
        raise SdpParseError(line, f"c= needs 3 fields, found {len(fields)}")
    net_type, addr_type, text = fields
    address, *suffixes = text.split("/")
    if not address:
        raise SdpParseError(line, "c= address is empty")
    ttl = count = None
    upper = addr_type.upper()
    if upper == "IP4" and suffixes:
        if len(suffixes) > 2:
            raise SdpParseError(line, f"c= IP4 address {text[:60]!r} has more than /ttl/count")
        ttl = _number(suffixes[0], "TTL", line, "c", 255)
        if len(suffixes) == 2:
            count = _number(suffixes[1], "address count", line, "c", 2**31 - 1)
    elif upper == "IP6" and suffixes:
        if len(suffixes) > 1:
            raise SdpParseError(line, f"c= IP6 address {text[:60]!r} has more than /count")
        count = _number(suffixes[0], "address count", line, "c", 2**31 - 1)
    elif suffixes:
        raise SdpParseError(line, f"c= {addr_type[:20]} address {text[:60]!r} has a / suffix")
    return Connection(net_type[:_MAX_TOKEN], addr_type[:_MAX_TOKEN], address, ttl, count)


def _origin(value: str, line: int) -> Origin:
    fields = value.split()
    if len(fields) != 6:
        raise SdpParseError(line, f"o= needs 6 fields, found {len(fields)}")
    return Origin(*fields)


def _media(value: str, line: int) -> Media:
    fields = value.split()
    if len(fields) < 4:
        raise SdpParseError(line, f"m= needs media, port, proto and a format, found {fields!r:.80}")
    media, port_text, proto, *formats = fields
    port_part, slash, count_part = port_text.partition("/")
    port = _number(port_part, "port", line, "m", 65535)
    port_count = _number(count_part, "port count", line, "m", 65535) if slash else None
    return Media(media[:_MAX_TOKEN], port, port_count, proto[:_MAX_TOKEN], tuple(formats))


def _attr(value: str) -> tuple[str, str | None]:
    name, colon, rest = value.partition(":")
    return name[:_MAX_TOKEN], (rest if colon else None)


class _MediaBuilder:
    __slots__ = ("attributes", "connections", "head")

    def __init__(self, head: Media) -> None:
        self.head = head
        self.connections: list[Connection] = []
        self.attributes: list[tuple[str, str | None]] = []

    def build(self) -> Media:
        head = self.head
        return Media(
            head.media,
            head.port,
            head.port_count,
            head.proto,
            head.formats,
            tuple(self.connections),
            tuple(self.attributes),
        )


def parse_sdp(
    data: bytes, *, max_bytes: int = MAX_SDP_BYTES, max_lines: int = MAX_SDP_LINES
) -> SessionDescription:
    """Parse one session description; raise :class:`SdpParseError` naming the line if the
    bytes are not one (or exceed ``max_bytes`` / ``max_lines``)."""
    if len(data) > max_bytes:
        raise SdpParseError(0, f"{len(data)} bytes exceed the {max_bytes}-byte limit")
    # RFC 8866 §5: text is UTF-8 (ISO 10646); undecodable bytes are kept as surrogate escapes
    # so a bad byte in a free-text field (s=, i=) does not hide the addresses.
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    if len(lines) > max_lines + 1:  # a final line end leaves one empty string
        raise SdpParseError(0, f"more than {max_lines} lines")
    version: int | None = None
    origin: Origin | None = None
    session_name: str | None = None
    connection: Connection | None = None
    attributes: list[tuple[str, str | None]] = []
    media: list[_MediaBuilder] = []
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpParseError(number, f"not <type>=<value>: {line[:40]!r}")
        kind, value = line[0], line[2:]
        if version is None:
            if kind != "v":
                raise SdpParseError(number, f"the first line must be v=, not {kind}=")
            if value.strip() != "0":
                raise SdpParseError(number, f"unsupported SDP version {value[:20]!r}")
            version = 0
            continue
        if kind == "v":
            raise SdpParseError(number, "a second v= line (one description per body)")
        if kind == "m":
            media.append(_MediaBuilder(_media(value, number)))
        elif kind == "c":
            parsed = _connection(value, number)
            if media:
                media[-1].connections.append(parsed)
            elif connection is not None:
                raise SdpParseError(number, "a second session-level c= line")
            else:
                connection = parsed
        elif kind == "a":
            (media[-1].attributes if media else attributes).append(_attr(value))
        elif media:
            continue  # i=, b=, k= of a media section: not needed by any reader yet
        elif kind == "o":
            if origin is not None:
                raise SdpParseError(number, "a second o= line")
            origin = _origin(value, number)
        elif kind == "s":
            if session_name is not None:
                raise SdpParseError(number, "a second s= line")
            session_name = value
    if version is None:
        raise SdpParseError(0, "no v= line (empty description)")
    if origin is None:
        raise SdpParseError(0, "no o= line")
    return SessionDescription(
        version,
        origin,
        session_name if session_name is not None else "",
        connection,
        tuple(attributes),
        tuple(m.build() for m in media),
    )


def message_sdp(message: Message) -> SessionDescription | None:
    """The SDP body of ``message``: None when there is no ``application/sdp`` body; raises
    :class:`SdpParseError` when there is one that does not parse. Cached on the message."""
    cache = message._cache
    if "#sdp" in cache:
        cached = cache["#sdp"]
        if isinstance(cached, SdpParseError):
            raise cached
        return cached  # type: ignore[no-any-return]
    result: SessionDescription | SdpParseError | None = None
    if message.body:
        value = message.headers.get("content-type")
        # Read the media type with string operations: a malformed Content-Type parameter
        # list must not hide an SDP body whose type is plain.
        mime = value.split(";", 1)[0].strip().lower() if value is not None else ""
        if mime == "application/sdp":
            try:
                result = parse_sdp(message.body)
            except SdpParseError as exc:
                result = exc
    cache["#sdp"] = result
    if isinstance(result, SdpParseError):
        raise result
    return result
