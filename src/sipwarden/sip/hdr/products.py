"""User-Agent and Server (RFC 3261 §20.41, §20.35): product tokens and comments.

``server-val = product / comment``; ``product = token [SLASH product-version]``. Scanners are
identified by these strings, so the text is kept exactly and split only on demand.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from sipwarden.sip import _abnf

__all__ = ["Product", "parse_products"]

_ITEM = re.compile(
    rf"[ \t]*(?:(?P<name>{_abnf.TOKEN})(?:[ \t]*/[ \t]*(?P<version>{_abnf.TOKEN}))?"
    r"|(?P<comment>\((?:[^()\\]|\\.|\((?:[^()\\]|\\.)*\))*\)))[ \t]*",
    re.S,
)


class Product(NamedTuple):
    """A product token (``name``/``version``) or a comment (``comment`` set, name empty)."""

    name: str
    version: str | None = None
    comment: str | None = None


def parse_products(value: str) -> tuple[Product, ...]:
    items: list[Product] = []
    pos, end = 0, len(value)
    while pos < end:
        match = _ITEM.match(value, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"invalid product or comment at {value[pos : pos + 30]!r}")
        if match.group("comment") is not None:
            items.append(Product("", None, match.group("comment")[1:-1]))
        else:
            items.append(Product(match.group("name"), match.group("version")))
        pos = match.end()
    if not items:
        raise ValueError("empty product list")
    return tuple(items)
