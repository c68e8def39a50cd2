"""Single-value headers: CSeq, Call-ID, Max-Forwards, Content-Length, Expires, Date,
Content-Type (RFC 3261 §20).

Ranges follow RFC 3261: CSeq and Expires fit 32 bits (§8.1.1.5, §20.19), Max-Forwards 0-255
(§20.22). RFC 4475 §3.1.2.4-5 messages overflow each of them.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sipwarden.sip import _abnf
from sipwarden.sip._abnf import KNOWN_METHODS
from sipwarden.sip.hdr.params import Params, param_value, parse_params

__all__ = [
    "CSeq",
    "ContentType",
    "parse_call_id",
    "parse_content_length",
    "parse_content_type",
    "parse_cseq",
    "parse_date",
    "parse_delta_seconds",
    "parse_max_forwards",
]

MAX_UINT32 = 2**32 - 1

_CSEQ = re.compile(rf"([0-9]+)[ \t]+({_abnf.TOKEN})")
_CALL_ID = re.compile(_abnf.CALL_ID)
_DIGITS = re.compile(r"[0-9]+")
# rfc1123-date = wkday "," SP date1 SP time SP "GMT" (RFC 3261 §20.17: only GMT)
_DATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} "
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT"
)
_MEDIA_TYPE = re.compile(rf"({_abnf.TOKEN})[ \t]*/[ \t]*({_abnf.TOKEN})")


class CSeq(NamedTuple):
    number: int
    method: str


class ContentType(NamedTuple):
    type: str
    subtype: str
    params: Params

    @property
    def mime(self) -> str:
        return f"{self.type}/{self.subtype}".lower()

    def param(self, name: str) -> str | None:
        return param_value(self.params, name.lower())


_new_cseq = tuple.__new__


def parse_cseq(value: str) -> CSeq:
    number, _, method = value.partition(" ")
    if (
        number.isdigit()
        and number.isascii()
        and len(number) <= 10
        and method in KNOWN_METHODS
        and int(number) <= MAX_UINT32
    ):
        return _new_cseq(CSeq, (int(number), method))
    match = _CSEQ.fullmatch(value)
    if match is None:
        raise ValueError(f"CSeq must be 'number method', not {value[:40]!r}")
    digits = match.group(1)
    if len(digits) > 10 or int(digits) > MAX_UINT32:
        raise ValueError(f"CSeq number {digits[:30]} exceeds 2**32-1")
    return CSeq(int(digits), match.group(2))


def read_call_id(value: str) -> str:
    """Call-ID for typed access: the value itself; :func:`parse_call_id` checks the grammar."""
    return value


def parse_call_id(value: str) -> str:
    if not _CALL_ID.fullmatch(value):
        raise ValueError(f"Call-ID must be word[@word], not {value[:40]!r}")
    return value


def _uint(value: str, what: str, maximum: int) -> int:
    if not _DIGITS.fullmatch(value):
        raise ValueError(f"{what} must be decimal digits, not {value[:40]!r}")
    if len(value.lstrip("0")) > len(str(maximum)) or int(value) > maximum:
        raise ValueError(f"{what} {value[:30]} exceeds {maximum}")
    return int(value)


def parse_max_forwards(value: str) -> int:
    return _uint(value, "Max-Forwards", 255)


def parse_content_length(value: str) -> int:
    return _uint(value, "Content-Length", MAX_UINT32)


def parse_delta_seconds(value: str) -> int:
    """Expires, Min-Expires: delta-seconds within 32 bits."""
    return _uint(value, "delta-seconds", MAX_UINT32)


def parse_date(value: str) -> str:
    if not _DATE.fullmatch(value):
        raise ValueError(f"Date must be an RFC 1123 date in GMT, not {value[:40]!r}")
    return value


def parse_content_type(value: str) -> ContentType:
    match = _MEDIA_TYPE.match(value)
    if match is None:
        raise ValueError(f"Content-Type must be type/subtype, not {value[:40]!r}")
    return ContentType(match.group(1), match.group(2), parse_params(value[match.end() :]))
