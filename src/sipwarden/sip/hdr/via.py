"""Via (RFC 3261 §20.42, §18.2.1; RFC 3581 rport; RFC 5118 IPv6 forms).

One header line may carry several hops separated by commas; :func:`parse_via` returns all of
them in order (top hop first). A hop keeps its parameters as written (``params_text``); the
grammar of every parameter is checked when the hop is parsed, while :attr:`Via.params` (which
also rejects a parameter given twice) is built on access - ``msg.defects`` reads it, so a
duplicated ``branch`` is reported there.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from sipwarden.sip import _abnf
from sipwarden.sip.hdr.params import Params, param_value, parse_params, split_commas
from sipwarden.sip.uri import check_host

__all__ = ["BRANCH_COOKIE", "Via", "parse_via"]

#: RFC 3261 §8.1.1.7: branches of RFC 3261 elements start with this magic cookie.
BRANCH_COOKIE = "z9hG4bK"

# sent-protocol = protocol-name SLASH protocol-version SLASH transport (SLASH = SWS "/" SWS)
# sent-by = host [ COLON port ]
_HOP = re.compile(
    rf"({_abnf.TOKEN})[ \t]*/[ \t]*({_abnf.TOKEN})[ \t]*/[ \t]*({_abnf.TOKEN})[ \t]+"
    rf"({_abnf.HOST})(?:[ \t]*:[ \t]*([0-9]{{1,5}}))?"
)
# The common case: one hop "SIP/2.0/UDP host:port;params", no odd whitespace, no quotes, a
# strict IPv4 address or a hostname whose last label starts with a letter (RFC 3261 toplabel).
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_FAST_SENT_BY = re.compile(
    rf"((?:{_OCTET}\.){{3}}{_OCTET}|(?:[A-Za-z0-9\-]+\.)*[A-Za-z][A-Za-z0-9\-]*\.?"
    r"|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?"
)
_TOKEN_CHARS = r"[A-Za-z0-9\-.!%*_+`'~]"
# One regex checks the whole common hop and captures transport, sent-by, the parameter list
# and the branch; parameters that need a value (RFC 3261 §25: branch, received, maddr, ttl)
# may not appear bare. The two parameter alternatives exclude each other ((?!branch=)), so a
# hostile run of ";branch=a" cannot make the engine backtrack exponentially.
_FAST = re.compile(
    rf"SIP/2\.0/([A-Za-z]+) ([^;\s,]+)((?:;(?:branch=({_TOKEN_CHARS}+)"
    rf"|(?!branch=)(?!(?i:branch|received|maddr|ttl)(?:;|$)){_TOKEN_CHARS}+"
    rf"(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?))*)"
)
# Builds a Via without the generated __new__ (a Python call): every field must be given.
_new_via = tuple.__new__
# sent-by values repeat (one per device); validated ones are remembered, bounded.
_SENT_BY: dict[str, tuple[str, int | None]] = {}
_MAX_SENT_BY = 4096
_EMPTY_PARAMS = re.compile(r"(?:[ \t]*;)+[ \t]*;")
_BRANCH = re.compile(r";[ \t]*branch[ \t]*=[ \t]*([^;,\s]+)", re.I)


class Via(NamedTuple):
    """One Via hop. ``transport`` is upper-cased; parameters are kept as written."""

    protocol: str
    version: str
    transport: str
    host: str
    port: int | None
    params_text: str
    #: The branch parameter (RFC 3261 §8.1.1.7), or None; read on every message, so stored.
    branch: str | None = None
    #: What RFC 3261 forbids but this hop does anyway in an unambiguous way (empty parameters,
    #: as some phones send ";;"); ``msg.defects`` reports it.
    problem: str | None = None

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def params(self) -> Params:
        """The parameters; ValueError if one is given twice."""
        return parse_params(self.params_text)

    def param(self, name: str) -> str | None:
        return param_value(parse_params(self.params_text), name.lower())

    @property
    def received(self) -> str | None:
        return self.param("received") if "eceived" in self.params_text.lower() else None

    @property
    def rport(self) -> str | None:
        """``""`` when the client asked for rport (RFC 3581), the port when a server filled it."""
        return self.param("rport") if "rport" in self.params_text.lower() else None

    @property
    def maddr(self) -> str | None:
        return self.param("maddr") if "maddr" in self.params_text.lower() else None


def _branch(params_text: str) -> str | None:
    match = _BRANCH.search(params_text)
    return None if match is None else match.group(1)


_NEEDS_VALUE = frozenset({"branch", "received", "maddr", "ttl"})


def _check_received(value: str) -> None:
    # RFC 3261 §20.42 and RFC 5118 §4.5: an IPv4 or IPv6 address; the IPv6 form may come with
    # or without brackets.
    check_host(value if value.startswith("[") or ":" not in value else f"[{value}]")


def _check_params(params_text: str) -> None:
    for name, value in parse_params(params_text, allow_duplicates=True):
        lname = name.lower()
        if value is None and lname in _NEEDS_VALUE:
            raise ValueError(f"Via parameter {name!r} needs a value")
        if lname == "received" and value:
            _check_received(value)


def _sent_by(text: str) -> tuple[str, int | None] | None:
    """(host, port) of a plain ``host[:port]``, from a bounded cache; None if unusual."""
    hit = _SENT_BY.get(text)
    if hit is not None:
        return hit
    match = _FAST_SENT_BY.fullmatch(text)
    if match is None:
        return _unbracketed_ipv6(text)
    host, port = match.groups()
    if host[0] == "[":
        check_host(host)
    port_number = None if port is None else int(port)
    if port_number is not None and port_number > 65535:
        raise ValueError(f"Via port {port_number} out of range")
    if len(_SENT_BY) >= _MAX_SENT_BY:
        _SENT_BY.clear()
    result = _SENT_BY[text] = (host, port_number)
    return result


def _unbracketed_ipv6(text: str) -> tuple[str, int | None] | None:
    """Real devices write IPv6 sent-by without brackets ("fe80::1:5060"). RFC 3261 needs the
    brackets, so ``msg.defects`` reports it; reading it anyway keeps Via usable: the whole text
    is the address if it is one, else the part before the last colon with that colon's port."""
    if text.count(":") < 2 or text.startswith("["):
        return None
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        address, _, port = text.rpartition(":")
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            return None
        if not (port.isdigit() and port.isascii()) or int(port) > 65535:
            return None
        return address, int(port)
    return text, None


def _plain_hop(
    transport: str, sent_by: tuple[str, int | None], params_text: str, branch: str | None
) -> Via:
    """A SIP/2.0 hop with no problem to report, built without the generated __new__."""
    return _new_via(
        Via,
        (
            "SIP",
            "2.0",
            transport if transport.isupper() else transport.upper(),
            sent_by[0],
            sent_by[1],
            params_text,
            branch,
            None,
        ),
    )


def _parse_hop(text: str) -> Via:
    # Fast path: one regex splits "SIP/2.0/<transport> <sent-by>[;params]" and checks the
    # parameter grammar; sent-by is checked (and remembered) on its own.
    fast = _FAST.fullmatch(text)
    if fast is not None:
        transport, sent_by_text, params_text, branch = fast.groups()
        sent_by = _SENT_BY.get(sent_by_text) or _sent_by(sent_by_text)
        if sent_by is not None:
            if "eceived" in params_text:
                r = params_text.find(";received=")
                if r >= 0 and params_text.count("eceived") == 1:
                    end = params_text.find(";", r + 10)
                    _check_received(params_text[r + 10 : end if end > 0 else None])
                else:
                    _check_params(params_text)
            if branch is None and "ranch" in params_text.lower():
                branch = _branch(params_text)  # e.g. BRANCH=, spelled in another case
            elif params_text.count("branch=") > 1:
                branch = _branch(params_text)  # duplicated (a defect): the first, as elsewhere
            return _plain_hop(transport, sent_by, params_text, branch)
    match = _HOP.match(text)
    if match is None:
        raise ValueError(f"invalid Via hop {text[:60]!r}")
    protocol, version, transport, host, port = match.groups()
    check_host(host)
    port_number = int(port) if port is not None else None
    if port_number is not None and port_number > 65535:
        raise ValueError(f"Via port {port_number} out of range")
    params_text = text[match.end() :].strip(" \t")
    problem = None
    cleaned = _EMPTY_PARAMS.sub(";", params_text).rstrip(" \t;")
    if cleaned != params_text.rstrip(" \t"):
        # ";;" or a trailing ";": empty parameters, which RFC 3261 forbids (RFC 4475 §3.1.2.1)
        # but which leave every other parameter readable.
        problem = "empty parameter (';;' or a trailing ';')"
        params_text = cleaned
    _check_params(params_text)
    return Via(
        protocol.upper(),
        version,
        transport.upper(),
        host,
        port_number,
        params_text,
        _branch(params_text),
        problem,
    )


def _read_hop(text: str) -> Via | None:
    """Structure of a plain hop with string operations only, or None for anything unusual.

    Checks what it returns (transport is letters, sent-by a valid host and port); the grammar
    of every parameter is :func:`validate_via`'s job, run by ``msg.defects``.
    """
    if not text.startswith("SIP/2.0/"):
        return None
    sp = text.find(" ", 8)
    if sp < 0:
        return None
    transport = text[8:sp]
    semi = text.find(";", sp)
    if semi < 0:
        sent_by_text = text[sp + 1 :]
        params_text = ""
    else:
        sent_by_text = text[sp + 1 : semi]
        params_text = text[semi:]
    sent_by = _SENT_BY.get(sent_by_text) or _sent_by(sent_by_text)
    if sent_by is None or not transport.isalpha():
        return None
    i = params_text.find(";branch=")  # the first one, if a hostile hop has two
    if i >= 0:
        j = params_text.find(";", i + 8)
        branch: str | None = params_text[i + 8 : j] if j > 0 else params_text[i + 8 :]
    else:
        branch = _branch(params_text) if "ranch" in params_text.lower() else None
    return _plain_hop(transport, sent_by, params_text, branch)


def parse_via(value: str) -> tuple[Via, ...]:
    """The hops of a Via value (typed access): structure and hosts checked, the full grammar
    left to :func:`validate_via`; ValueError when a hop cannot be read at all."""
    if "," not in value:
        return (_read_hop(value) or _parse_hop(value),)
    return tuple(_read_hop(part) or _parse_hop(part) for part in split_commas(value))


def validate_via(value: str) -> None:
    """Every hop against the RFC 3261 §25 grammar; ValueError naming the first problem."""
    for part in split_commas(value):
        hop = _parse_hop(part)
        if hop.problem:
            raise ValueError(hop.problem)
