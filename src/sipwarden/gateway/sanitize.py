"""Pure edits to messages crossing the gateway: product versions, trust-domain headers and
the upstream's topology.

Every edit goes through :mod:`sipwarden.sip.serialize`, so bytes the edit does not touch are
copied as they came; a message that needs no edit is returned as the same object.

What is done to messages going out to the untrusted side (:meth:`Sanitizer.outgoing`):

* ``Server`` and ``User-Agent`` lose their product versions and comments (``Asterisk PBX
  18.9.0 (Linux)`` → ``Asterisk PBX``), or are removed or replaced, per config. Version strings
  are what vulnerability scanners match on (the ``disclosure.version_string`` detector flags
  them); both headers are optional (RFC 3261 §20.35, §20.41), so removing them is always legal.
* Headers that must not leave a trust domain are removed, by default ``P-Charging-Vector`` and
  ``P-Charging-Function-Addresses`` (RFC 7315 §4.6, §4.5: not passed outside the trust domain;
  the former carries the generating node's address).
* Topology hiding (``hide_topology``, on by default: FS.38 asks for it, RFC 3323 describes
  header privacy, Kamailio ``topoh`` is the model): the upstream's private, loopback and
  link-local addresses (plus ``hide_networks``) in **Contact**, **Record-Route**,
  **Service-Route** and **Path** become the gateway's own address with an encrypted,
  authenticated ``swt`` token, and internal **Warning** agents become the gateway's address
  (:mod:`sipwarden.gateway.topology`). It needs the gateway secret (the token key) and the
  endpoint the message leaves from.

What is done to messages coming in (:meth:`Sanitizer.incoming`): the tokens are opened and the
original URIs written back - the Request-URI and Route of requests, the Record-Route a UAS
copied into its response - so the upstream sees exactly what it wrote. A token that does not
open (forged, altered, another gateway's key) makes ``incoming`` return ``None``: drop it.

What is still *not* hidden, and why:

* **Via** of requests going out (upstream → untrusted side) lists internal proxies, and a
  stateless proxy needs them to route the responses back; hiding them means encoding them into
  our own branch (Kamailio topoh) or keeping state (Kamailio topos). Via in responses going
  out is not a leak: after the proxy pops its own Via, only the client side's hops remain.
* **SDP** ``c=`` / ``o=`` addresses: media must still reach the upstream's media servers;
  hiding them is a media relay's job (an SBC anchoring RTP), not a signalling edit.
* **Hostnames** in any header: resolving them is not a sans-IO core's job, and a name is what
  an operator publishes on purpose.
* **Contact of responses to REGISTER**: they are the UA's own bindings, which it looks for to
  learn its expiry (RFC 3261 §10.3 step 8).
* Call-ID (often ``random@internal-ip``; Kamailio topoh's ``mask_callid``), From/To hosts and
  headers this module does not know (``X-`` headers, P-Asserted-Identity hosts): they do not
  route, and rewriting them statelessly breaks dialog matching or identity; add headers to
  ``strip_headers`` when they must not leave.

:func:`private_addresses` lists what is left exposed (upstream addresses in Record-Route and
Contact), so the gateway can count or log a remaining leak - with hiding off, or for messages
whose hidden form would exceed the parse limits.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from sipwarden.detect.networks import NetworkList, NetworkSet
from sipwarden.gateway.topology import INTERNAL_KINDS, TopologyHider
from sipwarden.net import Endpoint, classify
from sipwarden.sip import Message, Request, Response, SipParseError, remove_header, replace_header
from sipwarden.sip.hdr.products import Product, parse_products

__all__ = [
    "SanitizeConfig",
    "Sanitizer",
    "neutralise_products",
    "private_addresses",
    "strip_versions",
]

M = TypeVar("M", bound=Message)
R = TypeVar("R", Request, Response)

ProductMode = Literal["keep", "strip_versions", "remove", "replace"]

#: Address kinds that reveal internal topology when they leave the gateway.
_INTERNAL = INTERNAL_KINDS


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
    hide_topology: bool = Field(
        True,
        description=(
            "Hide the upstream's private, loopback and link-local addresses in Contact, "
            "Record-Route, Service-Route, Path and Warning of messages going out, behind the "
            "gateway's own address and an encrypted swt URI parameter that requests coming "
            "back are restored from (RFC 3323 header privacy; Kamailio topoh, made "
            "stateless and authenticated). On by default: GSMA FS.38 asks for topology "
            "hiding. Needs gateway.secret_file so that tokens survive a restart."
        ),
    )
    hide_networks: NetworkList = Field(
        (),
        description=(
            "Further IP addresses / CIDR networks to hide (e.g. the upstream's public "
            "addresses that should not be dialled directly); private ranges are always hidden."
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
    """Applies :class:`SanitizeConfig` to messages crossing the gateway.

    ``secret`` keys the topology tokens (the gateway secret; a label separates this key from
    the branch key). Without it, or with ``hide_topology`` off, addresses are not hidden and
    :meth:`incoming` passes messages through.
    """

    def __init__(
        self, config: SanitizeConfig | None = None, *, secret: bytes | None = None
    ) -> None:
        self.config = config if config is not None else SanitizeConfig()
        self.topology: TopologyHider | None = None
        if self.config.hide_topology and secret is not None:
            self.topology = TopologyHider(secret, NetworkSet(self.config.hide_networks))

    def outgoing(self, msg: M, local: Endpoint | None = None) -> M:
        """``msg`` with product headers neutralised, trust-domain headers removed and, when
        ``local`` (the endpoint it leaves from) is given, its topology hidden; the same object
        when nothing needed an edit."""
        cfg = self.config
        for name in cfg.strip_headers:
            msg = remove_header(msg, name)
        for name in cfg.product_headers:
            msg = neutralise_products(msg, name, cfg.product_mode, cfg.product_replacement)
        if self.topology is not None and local is not None:
            msg = self.topology.hide(msg, local)
        return msg

    def incoming(self, msg: R) -> R | None:
        """``msg`` from the untrusted side with hidden addresses restored (Request-URI and
        Route of a request, Record-Route of a response); the same object when it carries no
        token or hiding is off; None when a token does not authenticate (drop: MALFORMED)."""
        if self.topology is None:
            return msg
        return self.topology.restore(msg)


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
