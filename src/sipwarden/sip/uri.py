"""SIP, SIPS and TEL URIs: parse, inspect and compare (RFC 3261 §19.1, RFC 3966, RFC 5118).

No DNS and no normalisation of the stored text: :attr:`Uri.raw` keeps what was written, and the
fields keep escapes as written (``user`` may contain ``%40``); :meth:`Uri.__eq__` implements the
comparison rules of RFC 3261 §19.1.4, which unescape before comparing.

Other schemes (``http:``, ``isbn:``, ``soap.beep:`` …) are legal ``absoluteURI``s in most places
(RFC 4475 §3.3.2-3.3.4); they parse into a :class:`Uri` with only ``scheme`` and ``opaque`` set.

Parsers raise :class:`ValueError` with a short detail; the message layer turns that into a
:class:`~sipwarden.sip.errors.SipParseError` or a defect with an offset.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from sipwarden.sip import _abnf

__all__ = ["Uri", "parse_uri", "parse_uri_cached"]

_SIP_REST = re.compile(
    rf"(?P<host>{_abnf.HOST})(?::(?P<port>[0-9]{{1,5}}))?"
    r"(?P<params>(?:;[^;?]*)*)(?:\?(?P<headers>.*))?",
    re.S,
)
_USER = re.compile(_abnf.USER)
_PASSWORD = re.compile(_abnf.PASSWORD)
_PARAM = re.compile(rf"({_abnf.PARAMCHARS})(?:=({_abnf.PARAMCHARS}))?")
_HEADER = re.compile(rf"({_abnf.HCHARS}+)=({_abnf.HCHARS}*)")
_SCHEME = re.compile(rf"({_abnf.SCHEME}):")
_IPV4 = re.compile(_abnf.IPV4)
_HOSTNAME = re.compile(_abnf.HOSTNAME)
# RFC 3966: global-number-digits = "+" *phonedigit DIGIT *phonedigit (visual separators - . ( ))
_TEL_GLOBAL = re.compile(r"\+[0-9\-.()]*[0-9][0-9\-.()]*")
_TEL_LOCAL = re.compile(r"[0-9A-Fa-f*#\-.()]*[0-9A-Fa-f*#][0-9A-Fa-f*#\-.()]*")
# absoluteURI's opaque part: no whitespace and no control characters.
_OPAQUE = re.compile(r"[^\x00-\x20\x7f<>\"]+")

# RFC 3261 §19.1.4: these parameters must match when present in either URI.
_MUST_MATCH_PARAMS = ("user", "ttl", "method", "maddr", "transport")


def _unescape(text: str) -> bytes:
    return unquote_to_bytes(text)


# RFC 2396 "reserved": an escaped reserved character is NOT the same as the character itself.
_RESERVED = frozenset(";/?:@&=+$,")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def _canonical(text: str | None) -> str | None:
    """RFC 3261 §19.1.4: characters other than reserved ones equal their %HEX form, so decode
    those and normalise the case of the escapes that stay."""
    if text is None or "%" not in text:
        return text

    def one(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return f"%{match.group(1).upper()}" if char in _RESERVED or ord(char) > 0x7E else char

    return _ESCAPE.sub(one, text)


# Hosts already found valid; one device sends the same few hosts again and again. Bounded.
_VALID_HOSTS: set[str] = set()
_MAX_VALID_HOSTS = 4096


def check_host(host: str) -> None:
    """Raise ValueError unless ``host`` is a hostname, an IPv4 address or an IPv6 reference."""
    if host in _VALID_HOSTS:
        return
    _check_host(host)
    if len(_VALID_HOSTS) >= _MAX_VALID_HOSTS:
        _VALID_HOSTS.clear()
    _VALID_HOSTS.add(host)


def _check_host(host: str) -> None:
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError(f"unterminated IPv6 reference {host!r}")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            # RFC 5118 §4.10: the 3-colon form the RFC 3261 ABNF allowed by mistake is invalid.
            raise ValueError(f"invalid IPv6 address {host!r}") from None
        return
    if _IPV4.fullmatch(host):
        if any(int(octet) > 255 for octet in host.split(".")):
            raise ValueError(f"invalid IPv4 address {host!r}")
        return
    if not _HOSTNAME.fullmatch(host):
        raise ValueError(f"invalid host {host!r}")


@dataclass(frozen=True, slots=True, eq=False)
class Uri:
    """A parsed URI. ``scheme`` is lower-cased; every other field is text as written."""

    raw: str
    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    #: For schemes other than sip/sips/tel: everything after ``scheme:``.
    opaque: str | None = None

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    @property
    def host_lower(self) -> str:
        return self.host.lower()

    def param(self, name: str) -> str | None:
        """Value of a URI parameter (case-insensitive name); ``""`` for a flag like ``lr``."""
        lname = name.lower()
        for key, value in self.params:
            if key.lower() == lname:
                return "" if value is None else value
        return None

    def has_param(self, name: str) -> bool:
        lname = name.lower()
        return any(key.lower() == lname for key, _ in self.params)

    @property
    def user_unescaped(self) -> str | None:
        """The user part with %-escapes resolved (invalid UTF-8 kept as surrogate escapes)."""
        if self.user is None:
            return None
        return _unescape(self.user).decode("utf-8", "surrogateescape")

    def __str__(self) -> str:
        return self.raw

    def _comparable_params(self) -> dict[str, str]:
        return {
            (_canonical(k) or "").lower(): (_canonical(v) or "").lower() for k, v in self.params
        }

    def __eq__(self, other: object) -> bool:
        """URI equality per RFC 3261 §19.1.4 (for sip/sips; other schemes compare their text)."""
        if not isinstance(other, Uri):
            return NotImplemented
        if self.scheme != other.scheme:
            return False
        if not self.is_sip:
            if self.scheme == "tel":
                return (
                    _tel_digits(self.user or "") == _tel_digits(other.user or "")
                    and self._comparable_params() == other._comparable_params()
                )
            return self.raw.lower() == other.raw.lower()
        # userinfo is case-sensitive, compared after unescaping
        # userinfo (password included) is case-sensitive, compared after unescaping
        if _canonical(self.user) != _canonical(other.user):
            return False
        if _canonical(self.password) != _canonical(other.password):
            return False
        if self.host.lower() != other.host.lower() or self.port != other.port:
            return False
        mine, theirs = self._comparable_params(), other._comparable_params()
        for name in _MUST_MATCH_PARAMS:
            if mine.get(name) != theirs.get(name):
                return False
        for name in mine.keys() & theirs.keys():
            if mine[name] != theirs[name]:
                return False
        my_headers = {(_canonical(k) or "").lower(): _canonical(v) for k, v in self.headers}
        their_headers = {(_canonical(k) or "").lower(): _canonical(v) for k, v in other.headers}
        return my_headers == their_headers

    def __hash__(self) -> int:
        # Consistent with __eq__: only fields that must always match take part.
        if self.is_sip:
            return hash((self.scheme, _canonical(self.user), self.host.lower(), self.port))
        if self.scheme == "tel":
            return hash((self.scheme, _tel_digits(self.user or "")))
        return hash((self.scheme, self.raw.lower()))


def _tel_digits(number: str) -> str:
    return "".join(ch for ch in number if ch not in "-.()").lower()


def _parse_params(text: str) -> tuple[tuple[str, str | None], ...]:
    """``;a=b;c`` -> (("a", "b"), ("c", None)), each name/value checked against paramchar."""
    if not text:
        return ()
    params: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        match = _PARAM.fullmatch(item)
        if match is None:
            raise ValueError(f"invalid URI parameter {item!r}")
        params.append((match.group(1), match.group(2)))
    return tuple(params)


def _parse_sip(raw: str, scheme: str, rest: str) -> Uri:
    user = password = None
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, pw = userinfo.partition(":")
        if not _USER.fullmatch(user):
            raise ValueError(f"invalid user part {user!r}")
        if colon:
            if not _PASSWORD.fullmatch(pw):
                raise ValueError("invalid password part")
            password = pw
    match = _SIP_REST.fullmatch(rest)
    if match is None:
        raise ValueError(f"invalid host part {rest!r}")
    host = match.group("host")
    check_host(host)
    port = match.group("port")
    port_number = None
    if port is not None:
        port_number = int(port)
        if port_number > 65535:
            raise ValueError(f"port {port_number} out of range")
    headers: tuple[tuple[str, str], ...] = ()
    if match.group("headers") is not None:
        items = []
        for item in match.group("headers").split("&"):
            hmatch = _HEADER.fullmatch(item)
            if hmatch is None:
                raise ValueError(f"invalid URI header {item!r}")
            items.append((hmatch.group(1), hmatch.group(2)))
        headers = tuple(items)
    return Uri(
        raw=raw,
        scheme=scheme,
        user=user,
        password=password,
        host=host,
        port=port_number,
        params=_parse_params(match.group("params")),
        headers=headers,
    )


def _parse_tel(raw: str, rest: str) -> Uri:
    number, _, params_text = rest.partition(";")
    params = _parse_params(";" + params_text) if params_text else ()
    if _TEL_GLOBAL.fullmatch(number):
        pass
    elif _TEL_LOCAL.fullmatch(number):
        # RFC 3966 §5.1.5: a local number must carry phone-context.
        if not any(name.lower() == "phone-context" for name, _ in params):
            raise ValueError(f"local tel number {number!r} without phone-context")
    else:
        raise ValueError(f"invalid telephone number {number!r}")
    return Uri(raw=raw, scheme="tel", user=number, params=params)


def parse_uri(text: str) -> Uri:
    """Parse a URI as written in a SIP message; raise ValueError with a detail if it is not one."""
    match = _SCHEME.match(text)
    if match is None:
        raise ValueError(f"no URI scheme in {text[:60]!r}")
    scheme = match.group(1).lower()
    rest = text[match.end() :]
    if scheme in ("sip", "sips"):
        return _parse_sip(text, scheme, rest)
    if scheme == "tel":
        return _parse_tel(text, rest)
    if not _OPAQUE.fullmatch(rest):
        raise ValueError(f"invalid {scheme}: URI {text[:60]!r}")
    return Uri(raw=text, scheme=scheme, opaque=rest)


# URIs repeat across messages (every message of a dialog names the same parties). Bounded.
_URI_CACHE: dict[str, Uri] = {}
_MAX_URI_CACHE = 4096


def parse_uri_cached(text: str) -> Uri:
    """:func:`parse_uri` through a bounded cache of URIs already parsed (Uri is immutable)."""
    uri = _URI_CACHE.get(text)
    if uri is None:
        uri = parse_uri(text)
        if len(_URI_CACHE) >= _MAX_URI_CACHE:
            _URI_CACHE.clear()
        _URI_CACHE[text] = uri
    return uri
