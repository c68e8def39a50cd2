"""Pure edits to messages leaving the gateway: product versions and trust-domain headers.

Every edit goes through :mod:`sipwarden.sip.serialize`, so bytes the edit does not touch are
copied as they came; a message that needs no edit is returned as the same object.

What is done here (the stateless, always-safe subset of topology hiding):

* ``Server`` and ``User-Agent`` lose their product versions and comments (``Asterisk PBX
  18.9.0 (Linux)`` → ``Asterisk PBX``), or are removed or replaced, per config. Version strings
  are what vulnerability scanners match on (the ``disclosure.version_string`` detector flags
  them); both headers are optional (RFC 3261 §20.35, §20.41), so removing them is always legal.
* Headers that must not leave a trust domain are removed, by default ``P-Charging-Vector`` and
  ``P-Charging-Function-Addresses`` (RFC 7315 §4.6, §4.5: not passed outside the trust domain;
  the former carries the generating node's address).

What is deliberately *not* done, and why (left for a stateful or encoding topology hider):

* **Via** in responses going out: after the proxy pops its own Via, only the client side's hops
  remain - they are needed to route the response and reveal nothing of the upstream. Via of
  requests going out (upstream → untrusted side) lists internal proxies, and a stateless proxy
  needs them to route the responses back; hiding them means encoding them into our own branch
  (Kamailio topoh) - later.
* **Record-Route**: the untrusted side builds its route set from it; removing the upstream's
  entries makes in-dialog requests skip the core proxies that record-routed (kamailio#1005,
  OpenSIPS#2333). Masking them needs a reversible encoding the proxy undoes on the way in -
  later.
* **Contact**: the remote target of the dialog; rewriting it needs the same reversible
  encoding (or dialog state, Kamailio topos) - later.

:func:`private_addresses` lists what is left exposed (upstream addresses in those headers), so
the gateway can count or log the remaining leak instead of hiding it silently.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from sipwarden.net import AddressKind, classify
from sipwarden.sip import Message, SipParseError, remove_header, replace_header
from sipwarden.sip.hdr.products import Product, parse_products

__all__ = [
    "SanitizeConfig",
    "Sanitizer",
    "neutralise_products",
    "private_addresses",
    "strip_versions",
]

M = TypeVar("M", bound=Message)

ProductMode = Literal["keep", "strip_versions", "remove", "replace"]

#: Address kinds that reveal internal topology when they leave the gateway.
_INTERNAL = frozenset({AddressKind.PRIVATE, AddressKind.LOOPBACK, AddressKind.LINK_LOCAL})


class SanitizeConfig(BaseModel):
    """Edits applied to messages the gateway sends to the untrusted side."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    product_headers: tuple[str, ...] = Field(
        ("Server", "User-Agent"),
        description="Headers holding product tokens (RFC 3261 §20.35, §20.41) to neutralise.",
    )
    product_mode: ProductMode = Field(
        "strip_versions",
        description=(
            "keep; strip_versions (keep product names, drop versions and comments - names "
            "still let peers apply interop workarounds, versions are what scanners match); "
            "remove the header; or replace it by product_replacement. As Kamailio's "
            "server_signature / server_header settings; disclosure.version_string flags them."
        ),
    )
    product_replacement: str = Field(
        "SIP",
        min_length=1,
        description="The value written in replace mode; a neutral token, not our own name.",
    )
    strip_headers: tuple[str, ...] = Field(
        ("P-Charging-Vector", "P-Charging-Function-Addresses"),
        description=(
            "Headers removed from every message going out: charging headers must not leave "
            "the trust domain (RFC 7315 §4.5, §4.6). Add P-Asserted-Identity when the "
            "untrusted side is not entitled to it (RFC 3325 §5)."
        ),
    )


def strip_versions(products: tuple[Product, ...]) -> str:
    """Product names only: ``Asterisk/18.9.0 (Linux)`` → ``Asterisk``; ``""`` when none."""
    return " ".join(p.name for p in products if p.name)


def neutralise_products(msg: M, name: str, mode: ProductMode, replacement: str = "SIP") -> M:
    """``msg`` with header ``name`` neutralised per ``mode``; the same object when nothing
    changes. A value that does not parse as products is removed rather than guessed at."""
    values = msg.headers.get_all(name)
    if not values or mode == "keep":
        return msg
    if mode == "remove":
        return remove_header(msg, name)
    if mode == "replace":
        if values == [replacement]:
            return msg
        return replace_header(msg, name, replacement)
    products: list[Product] = []
    try:
        for value in values:
            products.extend(parse_products(value))
    except ValueError:
        return remove_header(msg, name)
    stripped = strip_versions(tuple(products))
    if not stripped:
        return remove_header(msg, name)
    if values == [stripped]:
        return msg  # already clean: leave its bytes alone
    return replace_header(msg, name, stripped)


class Sanitizer:
    """Applies :class:`SanitizeConfig` to messages going out to the untrusted side."""

    def __init__(self, config: SanitizeConfig | None = None) -> None:
        self.config = config if config is not None else SanitizeConfig()

    def outgoing(self, msg: M) -> M:
        """``msg`` with product headers neutralised and trust-domain headers removed; the same
        object when nothing needed an edit."""
        cfg = self.config
        for name in cfg.strip_headers:
            msg = remove_header(msg, name)
        for name in cfg.product_headers:
            msg = neutralise_products(msg, name, cfg.product_mode, cfg.product_replacement)
        return msg


def private_addresses(msg: Message) -> list[tuple[str, str]]:
    """(header, host) pairs of private, loopback or link-local hosts left in Record-Route and
    Contact - the topology this module does not hide. Unreadable headers are skipped."""
    found: list[tuple[str, str]] = []
    for header in ("Record-Route", "Contact"):
        try:
            addresses = msg.record_route if header == "Record-Route" else msg.contact
        except SipParseError:
            continue
        for address in addresses:
            try:
                host = address.uri.host
            except ValueError:
                continue
            if host and classify(host) in _INTERNAL:
                found.append((header, host))
    return found
