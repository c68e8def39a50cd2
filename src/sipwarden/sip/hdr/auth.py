"""Typed values of the SIP authentication headers: challenges and credentials.

This module owns the parsing of ``WWW-Authenticate`` / ``Proxy-Authenticate`` values (a
:class:`Challenge`) and ``Authorization`` / ``Proxy-Authorization`` values (a
:class:`Credentials`), per RFC 3261 §25.1 (``challenge`` / ``credentials``), with the parameters
RFC 7616 §3.3-§3.4 adds to Digest (``userhash``, ``charset``, the SHA-2 algorithms) that RFC 8760
brings to SIP. Computing and checking digest responses lives in :mod:`sipwarden.sip.digest`.

Parsers raise a plain :class:`ValueError` with a short detail; the message layer wraps it into a
``SipParseError`` carrying the byte offset. No other exception escapes them, whatever the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Challenge", "Credentials", "parse_challenge", "parse_credentials"]

# RFC 3261 §25.1 core rules, as regex fragments.
# SWS = [LWS]; LWS = [*WSP CRLF] 1*WSP. A line break is only legal when followed by WSP
# (folding, §7.3.1). Bare LF is accepted alongside CRLF because the message layer tolerates
# bare-LF line ends (defect ``bare_lf_line_ending``).
_WS = r"(?:[ \t]|\r?\n[ \t])"
_SWS = _WS + "*+"
# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]++"
# quoted-string body: qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII, and
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F). Code points U+D800-U+DFFF cannot come from
# UTF-8, so they are excluded (which also keeps every parsed value encodable for hashing).
# The three alternatives start with disjoint characters and the repeat is possessive, so a
# hostile unterminated quote costs linear time.
_QTEXT = r'(?:[^"\\\x00-\x1f\x7f\ud800-\udfff]|\t|\\[\x00-\x09\x0b\x0c\x0e-\x7f]|\r?\n[ \t])*+'

_SCHEME_RE = re.compile(rf"{_SWS}({_TOKEN}){_WS}++")
# One auth-param (RFC 3261 §25.1: auth-param = auth-param-name EQUAL (token / quoted-string),
# EQUAL = SWS "=" SWS), then either a COMMA (SWS "," SWS) or the end of the value.
_PARAM_RE = re.compile(
    rf"({_TOKEN}){_SWS}={_SWS}(?:({_TOKEN})|\"({_QTEXT})\"){_SWS}(?:(,){_SWS}|\Z)"
)
_TOKEN_RE = re.compile(_TOKEN)
_SWS_RE = re.compile(_SWS)
_QTEXT_RE = re.compile(_QTEXT)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")

# RFC 3261 §25.1's digest-cln / dig-resp lists make every parameter optional, but RFC 3261 §22.4
# builds on RFC 2617, whose §3.2.1 / §3.2.2 (and RFC 7616 §3.3 / §3.4) make these mandatory:
# without them no response can be computed or checked.
_CHALLENGE_REQUIRED = ("realm", "nonce")
_CREDENTIALS_REQUIRED = ("username", "realm", "nonce", "uri", "response")


def _unquote(text: str) -> str:
    """Resolve quoted-pairs and unfold line breaks inside a quoted-string's body."""
    # Fast path: most values have neither escapes nor folds.
    if "\\" in text:
        text = _QUOTED_PAIR_RE.sub(r"\1", text)
    if "\n" in text:
        # RFC 3261 §7.3.1: folding is CRLF + WSP; the line break carries no meaning, the WSP stays.
        text = _FOLD_RE.sub("", text)
    return text


def _skip(pattern: re.Pattern[str], value: str, pos: int) -> int:
    """Return the end of ``pattern`` matched at ``pos`` (patterns used here may match empty)."""
    m = pattern.match(value, pos)
    return m.end() if m is not None else pos


def _diagnose(value: str, pos: int) -> str:
    """Explain why no auth-param matches at ``pos`` (slow path, errors only)."""
    name = _TOKEN_RE.match(value, pos)
    if name is None:
        if pos >= len(value):
            return "trailing comma after the last auth-param"
        if value[pos] == ",":
            return f"empty auth-param at offset {pos}"
        return f"expected an auth-param name at offset {pos}, found {value[pos]!r}"
    param = name.group()
    rest = _skip(_SWS_RE, value, name.end())
    if rest >= len(value) or value[rest] != "=":
        return f"expected '=' after auth-param {param!r}"
    start = _skip(_SWS_RE, value, rest + 1)
    if start < len(value) and value[start] == '"':
        end = _skip(_QTEXT_RE, value, start + 1)
        if end >= len(value) or value[end] != '"':
            if end < len(value) and value[end] == "\\":
                return f"invalid escape in quoted value of {param!r}"
            if end >= len(value):
                return f"unterminated quoted-string in {param!r}"
            return f"invalid character {value[end]!r} in quoted value of {param!r}"
        return f"expected ',' after the value of {param!r}"
    if start >= len(value) or _TOKEN_RE.match(value, start) is None:
        return f"auth-param {param!r} has no valid value"
    return f"expected ',' after the value of {param!r}"


def _parse(value: str, kind: str) -> tuple[str, dict[str, str]]:
    """Split ``scheme LWS auth-param *(COMMA auth-param)`` into the scheme and its params."""
    if not isinstance(value, str):
        raise ValueError(f"{kind} must be text")
    if not value.strip(" \t\r\n"):
        raise ValueError(f"empty {kind}")
    scheme_m = _SCHEME_RE.match(value)
    if scheme_m is None:
        head = _TOKEN_RE.match(value.lstrip(" \t"))
        if head is None:
            raise ValueError(f"{kind} does not start with an auth-scheme token")
        rest = value.lstrip(" \t")[head.end() :]
        if not rest.strip(" \t\r\n"):
            # RFC 3261 §25.1 requires at least one auth-param after the scheme (SIP has no
            # token68 form, unlike HTTP's RFC 7235 §2.1).
            raise ValueError(f"no auth-params after scheme {head.group()!r}")
        raise ValueError(f"expected whitespace after scheme {head.group()!r}")
    scheme = scheme_m.group(1)
    params: dict[str, str] = {}
    pos = scheme_m.end()
    end = len(value)
    if pos >= end:
        raise ValueError(f"no auth-params after scheme {scheme!r}")
    match = _PARAM_RE.match
    while True:
        m = match(value, pos)
        if m is None:
            raise ValueError(_diagnose(value, pos))
        # Param names are case-insensitive (RFC 3261 §25.1 uses literal names, and ABNF
        # literals are case-insensitive per RFC 2234 §2.3).
        name = m.group(1).lower()
        if name in params:
            # A repeated name makes the value ambiguous (which nonce? which uri?): refuse it.
            raise ValueError(f"duplicate auth-param {name!r}")
        token = m.group(2)
        params[name] = token if token is not None else _unquote(m.group(3))
        pos = m.end()
        if m.group(4) is None:
            break
        if pos >= end:
            raise ValueError("trailing comma after the last auth-param")
    return scheme, params


def _missing(params: dict[str, str], required: tuple[str, ...]) -> str | None:
    for name in required:
        if name not in params:
            return name
    return None


def _flag(params: dict[str, str], name: str) -> bool:
    # RFC 7616 §3.3 / RFC 3261 §25.1: stale and userhash are "true" / "false", case-insensitive.
    return params.get(name, "").lower() == "true"


@dataclass(frozen=True, slots=True)
class Challenge:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (RFC 3261 §20.44, §20.27).

    ``scheme`` is as written (compare it case-insensitively); ``params`` maps lower-cased names
    to values with quoting removed.
    """

    scheme: str
    params: dict[str, str]

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def nonce(self) -> str | None:
        return self.params.get("nonce")

    @property
    def opaque(self) -> str | None:
        return self.params.get("opaque")

    @property
    def domain(self) -> str | None:
        return self.params.get("domain")

    @property
    def algorithm(self) -> str | None:
        """The digest algorithm; RFC 7616 §3.3: absent means "MD5" for Digest."""
        alg = self.params.get("algorithm")
        if alg is None and self.is_digest:
            return "MD5"
        return alg

    @property
    def qop_options(self) -> tuple[str, ...]:
        """The offered qop values (RFC 3261 §25.1 qop-options: a quoted comma list)."""
        raw = self.params.get("qop")
        if raw is None:
            return ()
        return tuple(item for item in (part.strip(" \t") for part in raw.split(",")) if item)

    @property
    def stale(self) -> bool:
        """True when the server says the nonce expired but the credentials were right."""
        return _flag(self.params, "stale")

    @property
    def userhash(self) -> bool:
        """True when the server accepts a hashed username (RFC 7616 §3.4.4)."""
        return _flag(self.params, "userhash")


@dataclass(frozen=True, slots=True)
class Credentials:
    """An ``Authorization`` / ``Proxy-Authorization`` value (RFC 3261 §20.7, §20.28).

    ``scheme`` is as written (compare it case-insensitively); ``params`` maps lower-cased names
    to values with quoting removed.
    """

    scheme: str
    params: dict[str, str]

    @property
    def is_digest(self) -> bool:
        return self.scheme.lower() == "digest"

    @property
    def username(self) -> str | None:
        """The username, or with ``userhash`` true its hash (RFC 7616 §3.4.4)."""
        return self.params.get("username")

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")

    @property
    def nonce(self) -> str | None:
        return self.params.get("nonce")

    @property
    def uri(self) -> str | None:
        return self.params.get("uri")

    @property
    def response(self) -> str | None:
        return self.params.get("response")

    @property
    def algorithm(self) -> str | None:
        """The digest algorithm; RFC 7616 §3.4: absent means "MD5" for Digest."""
        alg = self.params.get("algorithm")
        if alg is None and self.is_digest:
            return "MD5"
        return alg

    @property
    def cnonce(self) -> str | None:
        return self.params.get("cnonce")

    @property
    def opaque(self) -> str | None:
        return self.params.get("opaque")

    @property
    def qop(self) -> str | None:
        return self.params.get("qop")

    @property
    def nc(self) -> str | None:
        return self.params.get("nc")

    @property
    def userhash(self) -> bool:
        """True when ``username`` carries H(username ":" realm) (RFC 7616 §3.4.4)."""
        return _flag(self.params, "userhash")


def parse_challenge(value: str) -> Challenge:
    """Parse a ``WWW-Authenticate`` / ``Proxy-Authenticate`` value (RFC 3261 §25.1 challenge).

    Raises ValueError when the value is not ``scheme LWS auth-param *(COMMA auth-param)``, repeats
    a parameter, or is a Digest challenge without ``realm`` or ``nonce``.
    """
    scheme, params = _parse(value, "challenge")
    if scheme.lower() == "digest":
        missing = _missing(params, _CHALLENGE_REQUIRED)
        if missing is not None:
            raise ValueError(f"Digest challenge lacks required {missing!r}")
    return Challenge(scheme, params)


def parse_credentials(value: str) -> Credentials:
    """Parse an ``Authorization`` / ``Proxy-Authorization`` value (RFC 3261 §25.1 credentials).

    Raises ValueError when the value is not ``scheme LWS auth-param *(COMMA auth-param)``, repeats
    a parameter, or is a Digest response without ``username``, ``realm``, ``nonce``, ``uri`` or
    ``response``. An unknown scheme parses with its parameters (RFC 4475 §3.3.7 shows that
    ``NoOneKnowsThisScheme opaque-data=here`` is syntactically valid).
    """
    scheme, params = _parse(value, "credentials")
    if scheme.lower() == "digest":
        missing = _missing(params, _CREDENTIALS_REQUIRED)
        if missing is not None:
            raise ValueError(f"Digest credentials lack required {missing!r}")
    return Credentials(scheme, params)
