"""Request and Response: raw bytes, ordered headers, body, and typed accessors parsed on demand.

A message is immutable. It keeps the bytes it was parsed from (``raw``) so that the gateway can
forward them untouched and evidence can cite byte offsets; edits in :mod:`.serialize` build a
new message. Typed header values are parsed on first access and cached: reading ``msg.cseq``
costs one small regex, reading nothing costs nothing.

A typed accessor returns ``None`` (or ``()`` for list headers) when the header is absent, and
raises :class:`SipParseError` (code ``invalid_header_value``, at the field's offset) when it
cannot read the value. It checks what it returns (numbers, hosts, ports); for the hottest
headers (Via, the address family, Call-ID) it reads the structure with string operations and
leaves the rest of the grammar to ``msg.defects``, which runs every check once - the strict
grammar of every registered header, mandatory and singleton headers, URIs - and lists what it
found instead of raising. ``msg.is_valid`` is the strict verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sipwarden.sip.errors import Defect, SipParseError
from sipwarden.sip.hdr import HEADER_TYPES, HeaderType, canonical_key

if TYPE_CHECKING:
    from sipwarden.sip.hdr.auth import Challenge, Credentials
    from sipwarden.sip.hdr.identity import Identity
    from sipwarden.sip.hdr.name_addr import NameAddr
    from sipwarden.sip.hdr.pani import AccessNetworkInfo
    from sipwarden.sip.hdr.products import Product
    from sipwarden.sip.hdr.scalars import ContentType, CSeq
    from sipwarden.sip.hdr.via import Via
    from sipwarden.sip.headers import Headers
    from sipwarden.sip.uri import Uri

__all__ = ["TYPED_ACCESSORS", "TYPED_GETTERS", "Message", "Request", "Response"]


class Message:
    """What requests and responses share. Build one with :func:`sipwarden.sip.parse_message`."""

    __slots__ = (
        "_base",
        "_cache",
        "_defects",
        "_head",
        "_parse_defects",
        "_sep",
        "body",
        "headers",
        "raw",
    )

    raw: bytes
    headers: Headers
    body: bytes
    _head: str
    _sep: str
    _base: int
    _parse_defects: list[Defect]
    _defects: tuple[Defect, ...] | None
    _cache: dict[str, Any]

    # -- start line ------------------------------------------------------------------------
    @property
    def start_line(self) -> str:
        return (
            self._head[: self._head.find("\n")].rstrip("\r") if "\n" in self._head else self._head
        )

    @property
    def version(self) -> str:
        return "SIP/2.0"

    # -- offsets ---------------------------------------------------------------------------
    def byte_offset(self, char_offset: int) -> int:
        """Byte offset in the parsed input of a character offset in the decoded head."""
        head = self._head
        if head.isascii():
            return self._base + char_offset
        return self._base + len(head[:char_offset].encode("utf-8", "surrogateescape"))

    def field_offset(self, index: int) -> int:
        """Byte offset of header field ``index`` in the parsed input."""
        from sipwarden.sip.parser import field_spans  # noqa: PLC0415 - cycle: parser builds us

        spans = self._cache.get("#spans")
        if spans is None:
            spans = self._cache["#spans"] = field_spans(self._head, self._sep)
        return self.byte_offset(spans[index][0])

    # -- typed access ----------------------------------------------------------------------
    def _invalid(self, htype: HeaderType, positions: list[int], exc: ValueError) -> SipParseError:
        fields = self.headers._fields
        bad = positions[0]
        for i in positions:
            try:
                htype.parse_cached(fields[i][2])
            except ValueError:
                bad = i
                break
        return SipParseError("invalid_header_value", self.field_offset(bad), f"{htype.name}: {exc}")

    def _parse_field(self, htype: HeaderType, i: int) -> Any:
        """Parse field ``i`` with ``htype`` (value cache miss); SipParseError if malformed."""
        try:
            return htype.parse_cached(self.headers._fields[i][2])
        except ValueError as exc:
            raise self._invalid(htype, [i], exc) from None

    def _typed_list(self, htype: HeaderType) -> tuple[Any, ...]:
        """Every field of a list header, concatenated; cached on the message."""
        key = htype.name.lower()
        cached = self._cache.get(key)
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        positions = self.headers.indices(key)
        items: list[Any] = []
        try:
            for i in positions:
                items.extend(htype.parse_cached(self.headers._fields[i][2]))
        except ValueError as exc:
            raise self._invalid(htype, positions, exc) from None
        value = self._cache[key] = tuple(items)
        return value

    def typed(self, name: str) -> Any:
        """Typed value of a registered header: the value (singletons) or a tuple (the rest).

        Absent -> None / (); malformed -> SipParseError(invalid_header_value) at the field.
        """
        htype = HEADER_TYPES.get(canonical_key(name))
        if htype is None:
            raise KeyError(f"{name!r} is not a typed header; use msg.headers.get()")
        getter = _ACCESSORS[htype.name.lower()].fget
        assert getter is not None
        return getter(self)

    if TYPE_CHECKING:
        # What the accessors below return; they are built by _singleton/_listed for speed.
        @property
        def call_id(self) -> str | None: ...
        @property
        def cseq(self) -> CSeq | None: ...
        @property
        def from_(self) -> NameAddr | None: ...
        @property
        def to(self) -> NameAddr | None: ...
        @property
        def via(self) -> tuple[Via, ...]:
            """Every Via hop, top hop first (several per line are split)."""

        @property
        def contact(self) -> tuple[NameAddr, ...]: ...
        @property
        def route(self) -> tuple[NameAddr, ...]: ...
        @property
        def record_route(self) -> tuple[NameAddr, ...]: ...
        @property
        def p_asserted_identity(self) -> tuple[NameAddr, ...]: ...
        @property
        def max_forwards(self) -> int | None: ...
        @property
        def content_length(self) -> int | None: ...
        @property
        def content_type(self) -> ContentType | None: ...
        @property
        def expires(self) -> int | None: ...
        @property
        def user_agent(self) -> tuple[Product, ...] | None: ...
        @property
        def server(self) -> tuple[Product, ...] | None: ...
        @property
        def identity(self) -> tuple[Identity, ...]: ...
        @property
        def access_network_info(self) -> tuple[AccessNetworkInfo, ...]: ...

    @property
    def authorization(self) -> tuple[Credentials, ...]:
        """Authorization and Proxy-Authorization credentials, in that order."""
        value: tuple[Credentials, ...] = self.typed("authorization") + self.typed(
            "proxy-authorization"
        )
        return value

    @property
    def challenges(self) -> tuple[Challenge, ...]:
        """WWW-Authenticate and Proxy-Authenticate challenges, in that order."""
        value: tuple[Challenge, ...] = self.typed("www-authenticate") + self.typed(
            "proxy-authenticate"
        )
        return value

    # -- validation ------------------------------------------------------------------------
    @property
    def defects(self) -> tuple[Defect, ...]:
        """Every non-fatal problem: those found while parsing, plus every header and URI check
        (run once, on first access)."""
        if self._defects is None:
            from sipwarden.sip.checks import semantic_defects  # noqa: PLC0415

            self._defects = tuple(self._parse_defects) + tuple(semantic_defects(self))
        return self._defects

    @property
    def violations(self) -> tuple[Defect, ...]:
        """The defects that make the message invalid per RFC 3261 / RFC 4475."""
        return tuple(d for d in self.defects if d.violation)

    @property
    def is_valid(self) -> bool:
        return not self.violations

    # -- identity --------------------------------------------------------------------------
    def _key(self) -> tuple[object, ...]:
        return (self.start_line, self.headers, self.body)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return type(self) is type(other) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class Request(Message):
    __slots__ = ("method", "uri")

    method: str
    uri: str

    def __init__(
        self,
        method: str,
        uri: str,
        raw: bytes,
        headers: Headers,
        body: bytes,
        head: str,
        sep: str,
        base: int,
        parse_defects: list[Defect],
    ) -> None:
        self.method = method
        self.uri = uri
        self.raw = raw
        self.headers = headers
        self.body = body
        self._head = head
        self._sep = sep
        self._base = base
        self._parse_defects = parse_defects
        self._defects = None
        self._cache = {}

    @property
    def request_uri(self) -> Uri:
        """The Request-URI, parsed; SipParseError(invalid_request_uri) if it is not a URI."""
        value = self._cache.get("#ruri")
        if value is None:
            from sipwarden.sip.uri import parse_uri  # noqa: PLC0415

            try:
                value = self._cache["#ruri"] = parse_uri(self.uri)
            except ValueError as exc:
                raise SipParseError(
                    "invalid_request_uri", self.byte_offset(len(self.method) + 1), str(exc)
                ) from None
        return value

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} ({len(self.headers)} headers)>"


class Response(Message):
    __slots__ = ("reason", "status")

    status: int
    reason: str

    def __init__(
        self,
        status: int,
        reason: str,
        raw: bytes,
        headers: Headers,
        body: bytes,
        head: str,
        sep: str,
        base: int,
        parse_defects: list[Defect],
    ) -> None:
        self.status = status
        self.reason = reason
        self.raw = raw
        self.headers = headers
        self.body = body
        self._head = head
        self._sep = sep
        self._base = base
        self._parse_defects = parse_defects
        self._defects = None
        self._cache = {}

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} ({len(self.headers)} headers)>"


def _singleton(key: str) -> property:
    """Accessor of a singleton header: one dict probe on a value-cache hit, no other call."""
    htype = HEADER_TYPES[key]
    values = htype.values

    def get(self: Message) -> Any:
        headers = self.headers
        i = headers._first.get(key)
        if i is None:
            return None
        value = values.get(headers._fields[i][2])
        if value is None:
            value = self._parse_field(htype, i)
        return value

    get.__doc__ = f"The typed {htype.name} value, or None when absent."
    return property(get)


def _listed(key: str) -> property:
    """Accessor of a list header: a tuple of every value of every field, () when absent."""
    htype = HEADER_TYPES[key]
    values = htype.values

    def get(self: Message) -> Any:
        headers = self.headers
        i = headers._first.get(key)
        if i is None:
            return ()
        if key in headers._repeated:
            return self._typed_list(htype)
        value = values.get(headers._fields[i][2])
        if value is None:
            value = self._parse_field(htype, i)
        return value

    get.__doc__ = f"Every typed {htype.name} value, in order; () when absent."
    return property(get)


_ACCESSORS: dict[str, property] = {
    key: (_singleton(key) if htype.singleton else _listed(key))
    for key, htype in HEADER_TYPES.items()
}
_NAMED = {
    "call_id": "call-id",
    "cseq": "cseq",
    "from_": "from",
    "to": "to",
    "via": "via",
    "contact": "contact",
    "route": "route",
    "record_route": "record-route",
    "p_asserted_identity": "p-asserted-identity",
    "max_forwards": "max-forwards",
    "content_length": "content-length",
    "content_type": "content-type",
    "expires": "expires",
    "user_agent": "user-agent",
    "server": "server",
    "identity": "identity",
    "access_network_info": "p-access-network-info",
}
for _attr, _key in _NAMED.items():
    setattr(Message, _attr, _ACCESSORS[_key])

#: The typed-value getter of every registered header, by lookup key (for code that walks the
#: header fields, such as the strict checks, without going through attribute names).
TYPED_GETTERS: dict[str, Callable[[Message], Any]] = {
    key: prop.fget for key, prop in _ACCESSORS.items() if prop.fget is not None
}

#: Every typed accessor of a message (fuzzers and property tests read them all).
TYPED_ACCESSORS: tuple[str, ...] = (*_NAMED, "authorization", "challenges")
