"""Identity (RFC 8224) and Privacy (RFC 3323, RFC 3325 ``id``).

Only the syntax lives here; verifying a PASSporT needs certificates and belongs to
``detect/passport.py``.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sipwarden.sip import _abnf
from sipwarden.sip.hdr.params import Params, param_value, parse_params

__all__ = ["Identity", "parse_identity", "parse_privacy"]

# signed-identity-digest = 1*(base64-char / ".") — a compact JWS: header.payload.signature,
# where the payload may be empty (RFC 8224 §7 compact form).
_JWS = re.compile(r"[A-Za-z0-9+/=_\-]*\.[A-Za-z0-9+/=_\-]*\.[A-Za-z0-9+/=_\-]+")
# RFC 4474 (obsoleted by RFC 8224) carried a bare or quoted base64 signature; RFC 4475 §3.1.1.11
# uses that form, so it is accepted and marked ``legacy``.
_LEGACY = re.compile(r'"?[A-Za-z0-9+/=]+"?')
_INFO = re.compile(r"[ \t]*;[ \t]*info[ \t]*=[ \t]*<([^<>\s]+)>", re.I)
_PRIV_VALUE = re.compile(_abnf.TOKEN)


class Identity(NamedTuple):
    passport: str
    info: str | None
    params: Params
    #: True for an RFC 4474 signature (no PASSporT inside).
    legacy: bool = False

    @property
    def alg(self) -> str | None:
        return param_value(self.params, "alg")

    @property
    def ppt(self) -> str | None:
        return param_value(self.params, "ppt")

    @property
    def header_b64(self) -> str:
        return self.passport.split(".", 1)[0]


def parse_identity(value: str) -> Identity:
    semi = value.find(";")
    token = (value if semi < 0 else value[:semi]).strip()
    legacy = False
    if not _JWS.fullmatch(token):
        if not _LEGACY.fullmatch(token):
            raise ValueError(
                "Identity must start with a compact PASSporT (header.payload.signature)"
            )
        legacy = True
        token = token.strip('"')
    rest = "" if semi < 0 else value[semi:]
    info = None
    match = _INFO.match(rest)
    if match is not None:
        info = match.group(1)
        rest = rest[match.end() :]
    return Identity(token, info, parse_params(rest), legacy)


def parse_privacy(value: str) -> tuple[str, ...]:
    """``Privacy: id;user`` -> ("id", "user"), lower-cased (RFC 3323 §4.2)."""
    values = tuple(part.strip().lower() for part in value.split(";"))
    for item in values:
        if not _PRIV_VALUE.fullmatch(item):
            raise ValueError(f"invalid Privacy value {item!r}")
    return values
