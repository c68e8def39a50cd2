"""Lexing shared by typed headers: comma-separated lists and ``;name=value`` parameter lists.

Both respect quoted strings (a comma or semicolon inside ``"…"`` is text) and angle brackets
(a comma inside ``<sip:…>`` belongs to the URI). Errors are ValueErrors with a short detail.
"""

from __future__ import annotations

import re

from sipwarden.sip import _abnf

__all__ = ["Params", "param_value", "parse_params", "split_commas", "unquote"]

#: Parameters as written: ((name, value or None), …); names keep their spelling.
Params = tuple[tuple[str, str | None], ...]

# generic-param = token [ EQUAL gen-value ]; gen-value = token / host / quoted-string.
# host adds ":" and brackets to the token set (RFC 5118 §4.5: received=2001:db8::9:255).
_PARAM = re.compile(
    rf"[ \t]*;[ \t]*({_abnf.TOKEN})"
    rf"(?:[ \t]*=[ \t]*({_abnf.QUOTED_STRING}|[A-Za-z0-9\-.!%*_+`'~:\[\]]+))?[ \t]*"
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)


def unquote(text: str) -> str:
    """Strip the quotes of a quoted-string and resolve its quoted-pairs."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        inner = text[1:-1]
        return _QUOTED_PAIR.sub(r"\1", inner) if "\\" in inner else inner
    return text


def parse_params(text: str, *, allow_duplicates: bool = False) -> Params:
    """Parse ``;a=b ; c ;d="x;y"`` (leading whitespace allowed); raise ValueError otherwise.

    A parameter name that appears twice is an error: RFC 3261 §7.3.1 forbids it and a parser
    that kept the first while a peer keeps the last is how tags get smuggled. Typed headers
    check only the grammar when they parse (``allow_duplicates=True``) and report duplicates
    through ``msg.defects``, so the fast and the slow parse paths agree.
    """
    params: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    pos, end = 0, len(text)
    while pos < end:
        match = _PARAM.match(text, pos)
        if match is None:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"invalid parameter at {text[pos : pos + 30]!r}")
        name = match.group(1)
        key = name.lower()
        if key in seen and not allow_duplicates:
            raise ValueError(f"duplicate parameter {name!r}")
        seen.add(key)
        params.append((name, match.group(2)))
        pos = match.end()
    return tuple(params)


def param_value(params: Params, name: str) -> str | None:
    """Value of ``name`` (case-insensitive), unquoted; ``""`` for a flag; None when absent."""
    for key, value in params:
        if key.lower() == name:
            return "" if value is None else unquote(value)
    return None


def split_commas(value: str) -> list[str]:
    """Split a header value at top-level commas; an empty element is an error."""
    if "," not in value:
        return [value]
    parts: list[str] = []
    start = 0
    in_quotes = in_angle = False
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if in_quotes:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    if in_quotes:
        raise ValueError("unterminated quoted string")
    parts.append(value[start:].strip())
    if any(not part for part in parts):
        raise ValueError("empty element in comma-separated list")
    return parts
