"""The name-addr family: From, To, Contact, Route, Record-Route, P-Asserted-Identity,
P-Preferred-Identity, Diversion, History-Info, Refer-To, Referred-By (RFC 3261 §20, RFC 3325,
RFC 5806, RFC 7044, RFC 3515).

``name-addr = [ display-name ] "<" addr-spec ">"`` or a bare ``addr-spec``; in the bare form
everything after the first ``;`` is a header parameter, and the URI may not contain ``,``, ``?``
or ``;`` (RFC 3261 §20, RFC 4475 §3.1.2.13).

Parsing checks the grammar of the whole value. The URI is parsed on first access of
:attr:`NameAddr.uri` and the parameter list on access of :attr:`NameAddr.params` (which also
rejects a parameter given twice), so reading a tag costs neither. Addresses are immutable
tuples, shared between messages by the header value cache.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sipwarden.sip import _abnf
from sipwarden.sip.hdr.params import Params, param_value, parse_params, split_commas, unquote
from sipwarden.sip.uri import Uri, parse_uri_cached

__all__ = [
    "NameAddr",
    "parse_contact",
    "parse_name_addr",
    "parse_name_addr_list",
    "parse_route_list",
]

_QUOTED = re.compile(_abnf.QUOTED_STRING)
_DISPLAY_TOKENS = re.compile(rf"{_abnf.TOKEN}(?:[ \t]+{_abnf.TOKEN})*")
# Fast path: optional simple display name, <uri without spaces>, simple params.
_TOKEN_RUN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_FAST = re.compile(
    rf'(?:"([^"\\\r\n]*)"[ \t]*|({_TOKEN_RUN}(?:[ \t]+{_TOKEN_RUN})*)?[ \t]*)'
    r"<([^<>\s\"]+)>"
    rf"((?:;{_TOKEN_RUN}(?:={_TOKEN_RUN})?)*)"
)
_TAG = re.compile(r";[ \t]*tag[ \t]*=[ \t]*([^;,\s]+)", re.I)


class NameAddr(NamedTuple):
    """One address with optional display name and header parameters (kept as written)."""

    display_name: str | None
    uri_text: str
    params_text: str = ""
    #: The tag parameter (RFC 3261 §19.3), or None; read on every message, so stored.
    tag: str | None = None
    #: False for the bare addr-spec form (no <>).
    angle: bool = True
    #: True for the Contact wildcard ``*``.
    wildcard: bool = False
    #: What RFC 3261 forbids but this value does anyway in an unambiguous way (e.g. a display
    #: name with stray backslashes, as some phones send); ``msg.defects`` reports it.
    problem: str | None = None

    @property
    def uri(self) -> Uri:
        """The parsed URI (from a bounded cache); raises ValueError if it is not a valid URI."""
        if self.wildcard:
            raise ValueError("the Contact wildcard * has no URI")
        return parse_uri_cached(self.uri_text)

    @property
    def params(self) -> Params:
        """The header parameters; ValueError if one is given twice."""
        return parse_params(self.params_text)

    def param(self, name: str) -> str | None:
        return param_value(parse_params(self.params_text), name.lower())


_new_name_addr = tuple.__new__


def _make(
    display_name: str | None,
    uri_text: str,
    params_text: str,
    angle: bool = True,
    problem: str | None = None,
) -> NameAddr:
    tag = None
    if params_text:
        i = params_text.find(";tag=") if '"' not in params_text else -1
        if i >= 0:
            j = params_text.find(";", i + 5)
            tag = params_text[i + 5 : j] if j > 0 else params_text[i + 5 :]
        elif "tag" in params_text.lower():
            match = _TAG.search(params_text)
            if match is not None:
                tag = unquote(match.group(1))
    return _new_name_addr(
        NameAddr, (display_name, uri_text, params_text, tag, angle, False, problem)
    )


def _parse_one(text: str, *, allow_bare: bool = True) -> NameAddr:
    fast = _FAST.fullmatch(text)
    if fast is not None:
        quoted, plain, uri_text, params_text = fast.groups()
        return _make(quoted if quoted is not None else plain, uri_text, params_text)
    text = text.strip()
    if not text:
        raise ValueError("empty address")
    display: str | None = None
    rest = text
    if text[0] == '"':
        match = _QUOTED.match(text)
        if match is None:
            raise ValueError("unterminated quoted display name")
        display = unquote(match.group(0))
        rest = text[match.end() :].lstrip(" \t")
        if not rest.startswith("<"):
            raise ValueError("quoted display name not followed by <URI>")
    lt = rest.find("<")
    problem = None
    if lt >= 0:
        if display is None:
            plain = rest[:lt].strip(" \t")
            if plain:
                if not _DISPLAY_TOKENS.fullmatch(plain):
                    # Unambiguous thanks to the <>: read it, and let msg.defects report it.
                    if "," in plain or '"' in plain.replace('\\"', ""):
                        raise ValueError(f"display name {plain!r} must be tokens or quoted")
                    problem = f"display name {plain!r} is neither tokens nor a quoted string"
                display = plain
        gt = rest.find(">", lt)
        if gt < 0:
            raise ValueError("missing > after URI")
        uri_text = rest[lt + 1 : gt]
        if not uri_text or any(ch in uri_text for ch in ' \t<"'):
            raise ValueError(f"invalid URI inside <> {uri_text[:60]!r}")
        params_text = rest[gt + 1 :].strip(" \t")
        parse_params(params_text, allow_duplicates=True)  # grammar check
        return _make(display, uri_text, params_text, problem=problem)
    if not allow_bare:
        raise ValueError("address must be enclosed in <>")
    # addr-spec form: the URI ends at the first ";" or whitespace.
    end = len(rest)
    for stop in (";", " ", "\t"):
        idx = rest.find(stop)
        if 0 <= idx < end:
            end = idx
    uri_text = rest[:end]
    if "?" in uri_text or "," in uri_text:
        raise ValueError(f"URI with ? or , must be enclosed in <> ({uri_text[:60]!r})")
    params_text = rest[end:].strip(" \t")
    parse_params(params_text, allow_duplicates=True)
    return _make(None, uri_text, params_text, angle=False)


def _read(text: str) -> NameAddr | None:
    """Structure of a plain ``["display"] <uri>;params`` with string operations only, or None
    for anything unusual. The grammar of the parts is :func:`validate_name_addr`'s job, run by
    ``msg.defects``."""
    if text[:1] == '"':
        q = text.find('"', 1)
        if q < 0 or "\\" in text[1:q]:
            return None
        display: str | None = text[1:q]
        rest = text[q + 1 :]
        lt = rest.find("<")
        if lt < 0 or rest[:lt].strip(" \t"):
            return None
    else:
        rest = text
        lt = rest.find("<")
        if lt < 0:
            return None  # the addr-spec form: the strict reader knows its rules
        display = rest[:lt].rstrip(" \t") or None
        if display is not None and '"' in display:
            return None
    gt = rest.find(">", lt)
    if gt < 0:
        return None
    uri_text = rest[lt + 1 : gt]
    if not uri_text or " " in uri_text:
        return None
    return _make(display, uri_text, rest[gt + 1 :].strip(" \t"))


def parse_name_addr(value: str) -> NameAddr:
    """From, To, Refer-To, Referred-By (typed access): one address; ValueError when it cannot
    be read at all. The full grammar is checked by :func:`validate_name_addr`."""
    return _read(value) or _parse_single(value)


def _parse_single(value: str) -> NameAddr:
    if "," not in value or _FAST.fullmatch(value) is not None:
        return _parse_one(value)
    parts = split_commas(value)
    if len(parts) != 1:
        raise ValueError("several addresses where one is allowed")
    return _parse_one(parts[0])


def validate_name_addr(value: str) -> None:
    """One address against RFC 3261 §25 (name-addr / addr-spec); ValueError if not."""
    address = _parse_single(value)
    if address.problem:
        raise ValueError(address.problem)


def validate_name_addr_list(value: str) -> None:
    for part in split_commas(value):
        address = _parse_one(part)
        if address.problem:
            raise ValueError(address.problem)


def validate_route_list(value: str) -> None:
    for part in split_commas(value):
        _parse_one(part, allow_bare=False)


def validate_contact(value: str) -> None:
    if value.strip() != "*":
        validate_name_addr_list(value)


def parse_name_addr_list(value: str) -> tuple[NameAddr, ...]:
    """P-Asserted-Identity, P-Preferred-Identity, Diversion, History-Info: one or more."""
    if "," not in value:
        return (_read(value) or _parse_one(value),)
    return tuple(_read(part) or _parse_one(part) for part in split_commas(value))


def parse_route_list(value: str) -> tuple[NameAddr, ...]:
    """Route, Record-Route, Path: name-addr only (RFC 3261 §20.30, §20.34)."""
    if "," not in value:
        return (_read(value) or _parse_one(value, allow_bare=False),)
    return tuple(_read(part) or _parse_one(part, allow_bare=False) for part in split_commas(value))


def parse_contact(value: str) -> tuple[NameAddr, ...]:
    """Contact: ``*`` (REGISTER removal, RFC 3261 §10.2.2) or one or more addresses."""
    if value.strip() == "*":
        return (NameAddr(None, "*", "", None, False, True),)
    return parse_name_addr_list(value)
