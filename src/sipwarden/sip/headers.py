"""Headers: an ordered, case-insensitive multimap that keeps what was written.

Lookups normalise the *key* (lower case, compact form expanded: ``v`` -> ``via``); the fields
keep the name as spelled and the value as written (leading/trailing whitespace removed, folded
continuations kept). Scanners give themselves away by exact casing and order, so nothing is
rewritten. The raw text of each field (for byte-exact edits and offsets) is derived from the
header block on demand.
"""

from __future__ import annotations

from collections.abc import Iterator

from sipwarden.sip import _abnf
from sipwarden.sip.hdr import COMPACT_FORMS

__all__ = ["Field", "Headers", "header_key"]

#: (lookup key, name as written, value)
Field = tuple[str, str, str]

_MAX_CACHED_NAMES = 4096
# name as written (possibly with trailing whitespace before the colon) -> lookup key.
_KEY_CACHE: dict[str, str] = {}


def header_key(name: str) -> str:
    """Lookup key of a header name, e.g. ``"MaX-fOrWaRdS "`` -> ``"max-forwards"``, ``"v"`` ->
    ``"via"``. Raises ValueError when the name is not a token."""
    key = _KEY_CACHE.get(name)
    if key is not None:
        return key
    clean = name.rstrip(" \t")
    if not clean or any(ch not in _abnf.TOKEN_CHARS for ch in clean):
        raise ValueError(f"header name {clean[:40]!r} is not a token")
    key = clean.lower()
    key = COMPACT_FORMS.get(key, key)
    # Attackers choose header names: the cache stops growing at a bound instead of evicting.
    if len(_KEY_CACHE) < _MAX_CACHED_NAMES:
        _KEY_CACHE[name] = key
    return key


class Headers:
    """Header fields in order. ``get``/``get_all``/``in`` accept any case and compact forms."""

    __slots__ = ("_fields", "_first", "_repeated")

    def __init__(
        self,
        fields: list[Field],
        first: dict[str, int],
        repeated: list[str],
    ) -> None:
        # The parser passes ``first`` (key -> first position) and ``repeated`` (keys seen again)
        # that it computed in its own loop; :meth:`build` computes them for everyone else.
        self._fields = fields
        self._first = first
        self._repeated = repeated

    @classmethod
    def build(cls, fields: list[Field]) -> Headers:
        first: dict[str, int] = {}
        repeated: list[str] = []
        for i, (key, _, _) in enumerate(fields):
            if key in first:
                repeated.append(key)
            else:
                first[key] = i
        return cls(fields, first, repeated)

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, str]]) -> Headers:
        """Build headers from (name, value) pairs, e.g. for a message sipwarden composes."""
        fields = [(header_key(name), name, value) for name, value in pairs]
        return cls.build(fields)

    def _key(self, name: str) -> str:
        key = _KEY_CACHE.get(name)
        if key is None:
            key = name.strip().lower()
            key = COMPACT_FORMS.get(key, key)
        return key

    def get(self, name: str) -> str | None:
        """Value of the first field called ``name`` (any case or compact form), or None."""
        key = _KEY_CACHE.get(name)
        i = self._first.get(key if key is not None else self._key(name))
        return None if i is None else self._fields[i][2]

    def get_all(self, name: str) -> list[str]:
        """Values of every field called ``name``, in order (one item per header line)."""
        key = self._key(name)
        i = self._first.get(key)
        if i is None:
            return []
        if key not in self._repeated:
            return [self._fields[i][2]]
        return [value for k, _, value in self._fields if k == key]

    def indices(self, name: str) -> list[int]:
        """Positions of every field called ``name``."""
        key = self._key(name)
        i = self._first.get(key)
        if i is None:
            return []
        if key not in self._repeated:
            return [i]
        return [j for j, (k, _, _) in enumerate(self._fields) if k == key]

    def count(self, name: str) -> int:
        key = self._key(name)
        if key not in self._first:
            return 0
        return 1 + self._repeated.count(key)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._first

    def __len__(self) -> int:
        return len(self._fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        """(name as written, value) for every field, in order."""
        for _, name, value in self._fields:
            yield name.rstrip(" \t"), value

    def items(self) -> list[tuple[str, str]]:
        return list(self)

    def keys(self) -> list[str]:
        """Distinct lookup keys in order of first appearance."""
        return list(self._first)

    @property
    def fields(self) -> list[Field]:
        return self._fields

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._fields] == [(k, v) for k, _, v in other._fields]

    def __hash__(self) -> int:
        return hash(tuple((k, v) for k, _, v in self._fields))

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"
