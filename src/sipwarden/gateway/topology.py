"""Reversible, stateless topology hiding: the upstream's private addresses never leave the
gateway, and requests coming back are routed exactly as if they had.

Pure: no sockets, files or clocks; every edit goes through :mod:`sipwarden.sip.serialize`, so
the bytes an edit does not touch are copied as they came.

Theory of operation
-------------------

The untrusted side needs two kinds of upstream address to continue a dialog: the *remote
target* (the Contact of a 2xx or of a request the upstream sends, RFC 3261 §12.1.1-12.1.2)
and the *route set* (Record-Route, reversed by a UAC, RFC 3261 §12.1.2; Service-Route after a
REGISTER, RFC 3608). Both come back verbatim: the remote target as the Request-URI of every
in-dialog request, the route set as its Route header (loose routing, ``;lr``, RFC 3261 §16.12).

So, as Kamailio's ``topoh`` does, :meth:`TopologyHider.hide` rewrites each such URI whose host
is an internal address to point at the gateway itself (the listen endpoint the message leaves
from) and appends a URI parameter ``swt=<token>`` that carries what is needed to route back:
the original host, port and ``transport`` parameter. :meth:`TopologyHider.restore` finds the
parameter in the Request-URI and Route entries of a request coming in, and writes the original
URI back, byte for byte (user part, other parameters and their order are never touched). No
dialog state is kept: the token *is* the state, like the proxy's stateless branch.

The token is ``base64url(AES-SIV(key, plaintext))`` without padding (only characters of the
RFC 3261 §25 ``token`` rule, so it is a valid ``pvalue``). AES-SIV (RFC 5297) is deterministic
authenticated encryption: the untrusted side cannot read the internal address, cannot forge or
alter a token (a 128-bit synthetic IV authenticates it; a flipped bit, a truncation, or a token
from a gateway with another key fails and :meth:`restore` returns ``None``), and the same URI
always hides to the same token, so retransmissions stay identical and a dialog's route set is
stable. Determinism reveals only *equality* of two hidden addresses (two dialogs through the
same internal proxy carry the same token), which the untrusted side learns anyway from routing
behaviour. The key is derived from the gateway secret with BLAKE2b under a label of its own, so
it is independent of the branch key the proxy derives from the same secret. Consequences of
statelessness: a gateway restarted with another secret (the default without ``secret_file`` is
a random secret per process) cannot route dialogs it hid before, and several gateways in front
of one upstream need the same secret.

What counts as internal: an IP literal host (IPv4, or IPv6 in brackets) that is private
(RFC 1918, RFC 4193 ULA, RFC 6598 CGNAT), loopback or link-local, or inside the configured
``hide_networks``. Hostnames are left alone: resolving them is not a sans-IO core's job, and a
name is what an operator publishes on purpose. :meth:`restore` accepts a token only when the
address it carries is one :meth:`hide` would have hidden (defence in depth: even with a leaked
key, a forged token names only an internal address, never a third party).

Decisions worth knowing:

* A token is honoured wherever the Request-URI host points (the gateway's own address or not):
  the gateway forwards every request from the untrusted side to its one upstream, and the token
  only ever restores an address that upstream itself published, so a copied token cannot aim
  traffic anywhere else. Checking the host would break a gateway behind a 1:1 NAT, where
  clients address its public IP.
* Responses from the untrusted side are restored too (their Record-Route): a UAS copies the
  request's Record-Route into its response (RFC 3261 §12.1.1), and the upstream builds its own
  route set from that copy, so it must see its own entries, not the gateway's.
* Contacts of responses to REGISTER are the registering UA's own bindings (RFC 3261 §10.3 step
  8): a UA looks for its Contact there to learn the granted expiry, so they are left as they
  are; Service-Route and Path in those responses are hidden.
* ``Warning`` agents (RFC 3261 §20.43) that are internal addresses are replaced by the
  gateway's address; nothing routes on them, so nothing is restored.
* A token authenticates the address only, not the rest of the URI or the dialog: a client may
  reuse one with another user part, or outside the dialog it came from. That reaches only an
  address the upstream published to that client, through the upstream's own routing - as the
  hidden Contact itself does. Binding tokens to a Call-ID
  would break what legitimately outlives a dialog (Service-Route, GRUU-like Contacts).
* Bounded work on hostile input: :meth:`restore` examines at most :data:`MAX_ROUTE_ENTRIES`
  Route entries and rejects tokens longer than :data:`MAX_TOKEN_CHARS` before decoding.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import NamedTuple, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from sipwarden.detect.networks import NetworkSet
from sipwarden.net import AddressKind, Endpoint, Transport, classify
from sipwarden.sip import Message, Request, Response, SipParseError
from sipwarden.sip.hdr import HEADER_TYPES, canonical_key
from sipwarden.sip.hdr.name_addr import NameAddr, parse_contact, parse_route_list
from sipwarden.sip.limits import DEFAULT_LIMITS, ParseLimits
from sipwarden.sip.serialize import Edit, apply_edits
from sipwarden.sip.uri import Uri, parse_uri_cached

__all__ = [
    "INTERNAL_KINDS",
    "MAX_ROUTE_ENTRIES",
    "MAX_TOKEN_CHARS",
    "TOKEN_PARAM",
    "HiddenAddress",
    "TopologyHider",
]

M = TypeVar("M", bound=Message)
#: parse_contact or parse_route_list: one header value to its addresses.
AddressParser = Callable[[str], tuple[NameAddr, ...]]

#: Address kinds that reveal internal topology when they leave the gateway (net.classify:
#: PRIVATE covers RFC 1918, RFC 4193 ULA and RFC 6598 shared/CGNAT space).
INTERNAL_KINDS = frozenset({AddressKind.PRIVATE, AddressKind.LOOPBACK, AddressKind.LINK_LOCAL})
#: The URI parameter carrying a hidden address (short: it rides in every in-dialog request).
TOKEN_PARAM = "swt"
#: The longest token :meth:`TopologyHider.seal` writes is 110 characters (82 bytes: flags, an
#: IPv6 host kept as 45 characters of text, port, a 16-character transport, the 16-byte SIV);
#: anything longer is rejected before decoding.
MAX_TOKEN_CHARS = 128
#: Route entries examined per message. A dialog's route set holds a handful of proxies and RFC
#: 3261 sets no limit; 32 is generous and bounds the work one message can cost. Entries past it
#: reach the upstream as they are, tokens unopened - like any Route a client writes.
MAX_ROUTE_ENTRIES = 32

#: Domain separation: the proxy keys its branch digest with the same gateway secret.
_KEY_PERSON = b"sw-topo"
#: AEAD_AES_SIV_CMAC_512 (RFC 5297 §6.3): a 64-byte key, i.e. two AES-256 keys.
_KEY_BYTES = 64
_TAG_BYTES = 16  # the synthetic IV V that SIV-Encrypt puts before the ciphertext (RFC 5297)
_MAX_CACHED = 4096  # entries per cache, as sip.uri's host and URI caches
_MAX_TRANSPORT_CHARS = 16  # longest transport value written into a token ("sctp", "wss": 4)

# Plaintext layout: flags, host, [port], [transport index, transport text].
_V6 = 0x01  # host is 16 address bytes (else 4)
_HOST_TEXT = 0x02  # host kept as written: length byte + ASCII (non-canonical IPv6 spelling)
_HAS_PORT = 0x04
_HAS_TRANSPORT = 0x08
_FLAG_BITS = _V6 | _HOST_TEXT | _HAS_PORT | _HAS_TRANSPORT

_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_HAS_TOKEN_PARAM = re.compile(rb"swt", re.I)
_TRANSPORT_VALUE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")  # RFC 3261 §25 token
#: warning-value = warn-code SP warn-agent SP warn-text (RFC 3261 §20.43, §25).
_WARNING = re.compile(r"[ \t]*[0-9]{3}[ \t]+(?P<agent>[^ \t]+)[ \t]")
#: Headers holding routable upstream addresses, hidden in messages going out.
_ROUTE_HEADERS = ("record-route", "service-route", "path")
_UNSPECIFIED = frozenset({"0.0.0.0", "::"})  # Endpoint.ip is canonical text


class HiddenAddress(NamedTuple):
    """What a token carries: enough to rewrite the gateway's address back into the original."""

    host: str  # as written, brackets included for IPv6
    port: int | None
    transport: str | None  # the transport URI parameter's value as written, None when absent
    transport_index: int  # its position among the URI parameters


class _UriParts(NamedTuple):
    """A sip/sips URI cut into the pieces a rewrite keeps (as written) or replaces."""

    prefix: str  # "sip:" or "sips:" as written, plus "userinfo@" when present
    params: list[tuple[str, str | None]]
    headers: str  # "?h=v&..." as written, or ""


def _split_uri(uri: Uri) -> _UriParts:
    scheme, _, rest = uri.raw.partition(":")
    at = rest.rfind("@")
    prefix = f"{scheme}:{rest[: at + 1]}" if at >= 0 else f"{scheme}:"
    headers = "?" + "&".join(f"{k}={v}" for k, v in uri.headers) if uri.headers else ""
    return _UriParts(prefix, list(uri.params), headers)


def _join_uri(
    prefix: str, host_port: str, params: Iterable[tuple[str, str | None]], tail: str
) -> str:
    text = "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)
    return f"{prefix}{host_port}{text}{tail}"


def _uri_host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


#: value -> URI spans; a dialog's header values repeat in every message. Bounded.
_SPANS: dict[str, list[tuple[int, int, bool]]] = {}


def _address_uri_spans(value: str) -> list[tuple[int, int, bool]]:
    spans = _SPANS.get(value)
    if spans is None:
        spans = _scan_address_uri_spans(value)
        _remember(_SPANS, value, spans)
    return spans


def _scan_address_uri_spans(value: str) -> list[tuple[int, int, bool]]:
    """(start, end, in angle brackets) of the URI of each comma-separated address in ``value``
    (name-addr or addr-spec, RFC 3261 §20.10), skipping quoted strings and ``<...>`` when
    looking for commas. Character offsets into ``value``."""
    entries: list[tuple[int, int]] = []
    start, i, n = 0, 0, len(value)
    quoted = angle = False
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif angle:
            angle = ch != ">"
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ",":
            entries.append((start, i))
            start = i + 1
        i += 1
    entries.append((start, n))
    spans: list[tuple[int, int, bool]] = []
    for entry_start, e in entries:
        s = entry_start
        while s < e and value[s] in " \t":
            s += 1
        j = s
        if j < e and value[j] == '"':  # quoted display name: skip it, escapes included
            j += 1
            while j < e and value[j] != '"':
                j += 2 if value[j] == "\\" else 1
            j += 1
        while j < e and value[j] not in "<;":
            j += 1
        if j < e and value[j] == "<":
            close = value.find(">", j, e)
            spans.append((j + 1, close if close >= 0 else e, True))
            continue
        end = s  # addr-spec form: the URI ends at the first ";" or whitespace
        while end < e and value[end] not in "; \t":
            end += 1
        spans.append((s, end, False))
    return spans


def _address_parser(name: str) -> AddressParser:
    """The header's registered parser through its shared value cache (a dialog's Contact and
    route set repeat in every message); the plain parser for headers not registered."""
    htype = HEADER_TYPES.get(canonical_key(name))
    if htype is not None:
        parse: AddressParser = htype.parse_cached
        return parse
    return parse_contact if name == "contact" else parse_route_list


K = TypeVar("K")
V = TypeVar("V")


def _remember(cache: dict[K, V], key: K, value: V) -> None:
    """Keys come from the wire: a cache that reaches its bound starts over."""
    if len(cache) >= _MAX_CACHED:
        cache.clear()
    cache[key] = value


def _matching_spans(
    value: str, addresses: tuple[NameAddr, ...]
) -> list[tuple[int, int, bool]] | None:
    """:func:`_address_uri_spans`, checked against what the header parser read: None when
    they disagree (the field is then left alone rather than edited in the wrong place)."""
    spans = _address_uri_spans(value)
    if len(spans) != len(addresses) or any(
        value[s:e] != a.uri_text for (s, e, _), a in zip(spans, addresses, strict=True)
    ):
        return None
    return spans


def _field_end(raw: bytes, start: int) -> int:
    """End (terminator excluded) of the header field starting at ``start``, folded lines
    included."""
    pos = start
    while True:
        newline = raw.find(b"\n", pos)
        if newline < 0:
            return len(raw)
        if raw[newline + 1 : newline + 2] in (b" ", b"\t"):
            pos = newline + 1
            continue
        return newline - 1 if raw[newline - 1 : newline] == b"\r" else newline


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class _FieldEditor:
    """Collects replacements of character spans in one header field's value and turns them
    into byte splices of just those spans - or, when the value as stored is not the text on
    the wire (folded lines are unfolded by the parser), one rewrite of the whole field."""

    def __init__(self, msg: Message, index: int) -> None:
        self.msg = msg
        self.index = index
        self.value = msg.headers.fields[index][2]
        self.replacements: list[tuple[int, int, str]] = []

    def replace(self, start: int, end: int, text: str) -> None:
        self.replacements.append((start, end, text))

    def edits(self) -> list[Edit]:
        if not self.replacements:
            return []
        msg, raw = self.msg, self.msg.raw
        start = msg.field_offset(self.index) - msg.byte_offset(0)
        end = _field_end(raw, start)
        text = raw[start:end].decode("utf-8", "surrogateescape")
        colon = text.find(":")
        after = colon + 1
        while after < len(text) and text[after] in " \t":
            after += 1
        if colon >= 0 and "\n" not in text and text[after:].rstrip(" \t") == self.value:
            base = start + len(_encode(text[:after]))
            value = self.value
            return [
                Edit(
                    base + len(_encode(value[:s])),
                    base + len(_encode(value[:s])) + len(_encode(value[s:e])),
                    _encode(new),
                )
                for s, e, new in self.replacements
            ]
        value = self.value
        for s, e, new in sorted(self.replacements, reverse=True):
            value = value[:s] + new + value[e:]
        name = msg.headers.fields[self.index][1].rstrip(" \t")
        return [Edit(start, end, _encode(f"{name}: {value}"))]


class TopologyHider:
    """Hides internal upstream addresses in messages going out and restores them in requests
    (and responses) coming back. See the module docstring for the design.

    ``secret`` is the gateway secret (any length, at least 16 bytes); ``hide_networks`` adds
    networks to hide beyond the private, loopback and link-local ranges.
    """

    def __init__(
        self,
        secret: bytes,
        hide_networks: NetworkSet | tuple[str, ...] = (),
        *,
        limits: ParseLimits = DEFAULT_LIMITS,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the topology-hiding secret must be at least 16 bytes")
        key = hashlib.blake2b(secret, digest_size=_KEY_BYTES, person=_KEY_PERSON).digest()
        self._aead = AESSIV(key)
        self.hide_networks = (
            hide_networks if isinstance(hide_networks, NetworkSet) else NetworkSet(hide_networks)
        )
        self.limits = limits
        # Bounded caches: a dialog's Contact and route set repeat in every message, and
        # retransmissions repeat whole messages; hiding is deterministic, so results are reused.
        self._verdicts: dict[str, bool] = {}
        self._hidden: dict[tuple[str, Endpoint], str | None] = {}
        self._restored: dict[str, str] = {}

    # -- which addresses -----------------------------------------------------------------------
    def is_hidden(self, host: str) -> bool:
        """True for an IP literal host (``[v6]`` accepted) that this hider hides."""
        known = self._verdicts.get(host)
        if known is None:
            known = classify(host) in INTERNAL_KINDS or host in self.hide_networks
            _remember(self._verdicts, host, known)
        return known

    # -- the token -----------------------------------------------------------------------------
    def seal(self, address: HiddenAddress) -> str:
        """The token for ``address`` (deterministic: equal addresses, equal tokens);
        ValueError unless its host is an IP literal."""
        host = address.host.strip("[]")
        ip = ipaddress.ip_address(host)
        flags = 0
        if str(ip) == host:
            flags |= _V6 if ip.version == 6 else 0
            host_bytes = ip.packed
        else:  # spelled otherwise than canonically (upper case, zeros): restore it as written
            flags |= _HOST_TEXT | (_V6 if ip.version == 6 else 0)
            host_bytes = bytes([len(host)]) + host.encode("ascii")
        plain = bytearray(host_bytes)
        if address.port is not None:
            flags |= _HAS_PORT
            plain += address.port.to_bytes(2, "big")
        if address.transport is not None:
            flags |= _HAS_TRANSPORT
            plain.append(address.transport_index)
            plain += address.transport.encode("ascii")
        sealed = self._aead.encrypt(bytes([flags]) + bytes(plain), None)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode("ascii")

    def open(self, token: str) -> HiddenAddress | None:
        """The address in ``token``, or None when it is not a token this hider sealed (forged,
        altered, truncated, another key) or carries an address it would not have hidden."""
        if not 0 < len(token) <= MAX_TOKEN_CHARS or not _TOKEN_CHARS.fullmatch(token):
            return None
        try:
            sealed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(sealed) <= _TAG_BYTES:
            return None
        try:
            plain = self._aead.decrypt(sealed, None)
        except InvalidTag:
            return None
        return self._read_plaintext(plain)

    def _read_plaintext(self, plain: bytes) -> HiddenAddress | None:
        """Parse an authenticated plaintext; checked anyway (defence in depth)."""
        flags, pos = plain[0], 1
        if flags & ~_FLAG_BITS:
            return None
        if flags & _HOST_TEXT:
            size = plain[pos] if len(plain) > pos else 0
            text = plain[pos + 1 : pos + 1 + size]
            pos += 1 + size
            try:
                host = text.decode("ascii")
                ip = ipaddress.ip_address(host)
            except ValueError:
                return None
        else:
            size = 16 if flags & _V6 else 4
            if len(plain) < pos + size:
                return None
            ip = ipaddress.ip_address(plain[pos : pos + size])
            host = str(ip)
            pos += size
        if (ip.version == 6) != bool(flags & _V6):
            return None
        port = None
        if flags & _HAS_PORT:
            if len(plain) < pos + 2:
                return None
            port = int.from_bytes(plain[pos : pos + 2], "big")
            pos += 2
        transport, transport_index = None, 0
        if flags & _HAS_TRANSPORT:
            if len(plain) < pos + 2:
                return None
            transport_index = plain[pos]
            transport = plain[pos + 1 :].decode("ascii", "replace")
            if len(transport) > _MAX_TRANSPORT_CHARS or not _TRANSPORT_VALUE.fullmatch(transport):
                return None
        elif len(plain) != pos:
            return None
        uri_host = _uri_host(host)
        if not self.is_hidden(uri_host):
            return None
        return HiddenAddress(uri_host, port, transport, transport_index)

    # -- one URI -------------------------------------------------------------------------------
    def hide_uri(self, uri_text: str, local: Endpoint) -> str | None:
        """``uri_text`` pointed at ``local`` with the original in ``swt``; None when the URI
        is not one to hide (not sip/sips, a hostname, a public address, unreadable)."""
        key = (uri_text, local)
        if key in self._hidden:
            return self._hidden[key]
        hidden = self._hide_uri(uri_text, local)
        _remember(self._hidden, key, hidden)
        return hidden

    def _hide_uri(self, uri_text: str, local: Endpoint) -> str | None:
        try:
            uri = parse_uri_cached(uri_text)
        except ValueError:
            return None
        if not uri.is_sip or not self.is_hidden(uri.host):
            return None
        if uri.has_param(TOKEN_PARAM) and _points_at(uri, local):
            return None  # hidden already (a Record-Route copied back and forth): keep one token
        parts = _split_uri(uri)
        at = [i for i, (name, _) in enumerate(parts.params) if name.lower() == "transport"]
        if len(at) > 1:
            return None  # RFC 3261 §19.1.1 forbids a repeated parameter; route it as it is
        transport = index = None
        if at:
            index = at[0]
            transport = parts.params.pop(index)[1]
            if transport is None or len(transport) > _MAX_TRANSPORT_CHARS:
                return None
        token = self.seal(HiddenAddress(uri.host, uri.port, transport, index or 0))
        params = parts.params
        if local.transport is not Transport.UDP:
            # Our own transport where the original one stood (or last): RFC 3261 §19.1.1.
            params.insert(
                len(params) if index is None else index, ("transport", str(local.transport))
            )
        params.append((TOKEN_PARAM, token))
        host_port = f"{_uri_host(local.ip)}:{local.port}"
        return _join_uri(parts.prefix, host_port, params, parts.headers)

    def restore_uri(self, uri_text: str) -> str | None:
        """The original of a hidden URI; ``uri_text`` itself when it carries no token; None when
        its token does not open (or the URI is unreadable and mentions one)."""
        restored = self._restored.get(uri_text)
        if restored is None:
            restored = self._restore_uri(uri_text)
            if restored is not None and restored != uri_text:
                # Only what authenticated is remembered: forged tokens cannot churn the cache.
                _remember(self._restored, uri_text, restored)
        return restored

    def _restore_uri(self, uri_text: str) -> str | None:
        try:
            uri = parse_uri_cached(uri_text)
        except ValueError:
            # Unreadable: fine to pass on (the policy judges it) unless it may hold a token.
            return None if TOKEN_PARAM in uri_text.lower() else uri_text
        if not uri.is_sip or not uri.has_param(TOKEN_PARAM):
            return uri_text
        parts = _split_uri(uri)
        params = parts.params
        last = max(i for i, (name, _) in enumerate(params) if name.lower() == TOKEN_PARAM)
        token = params.pop(last)[1]
        address = self.open(token) if token is not None else None
        if address is None:
            return None
        for i, (name, _) in enumerate(params):
            if name.lower() == "transport":  # ours, written by hide_uri for a non-UDP local
                del params[i]
                break
        if address.transport is not None:
            params.insert(
                min(address.transport_index, len(params)), ("transport", address.transport)
            )
        port = "" if address.port is None else f":{address.port}"
        return _join_uri(parts.prefix, address.host + port, params, parts.headers)

    # -- messages ------------------------------------------------------------------------------
    def hide(self, msg: M, local: Endpoint) -> M:
        """``msg`` (going to the untrusted side, out of ``local``) with internal addresses in
        Contact, Record-Route, Service-Route and Path replaced by ``local`` plus a token, and
        internal Warning agents replaced by ``local``'s address; the same object when nothing
        needed an edit. A message whose edit would not re-parse within the limits is returned
        unchanged (its addresses stay visible; ``sanitize.private_addresses`` counts them).
        ``local`` must be an address clients can reach (the CLI refuses wildcard listens);
        ValueError for ``0.0.0.0`` / ``::``."""
        if local.ip in _UNSPECIFIED:
            raise ValueError(f"cannot hide behind the unspecified address {local.ip}")
        edits: list[Edit] = []
        headers = ["contact", *_ROUTE_HEADERS]
        if isinstance(msg, Response) and self._answers_register(msg):
            headers.remove("contact")
        for name in headers:
            for index in msg.headers.indices(name):
                edits += self._hide_addresses(msg, index, _address_parser(name), local)
        for index in msg.headers.indices("warning"):
            edits += self._hide_warning(msg, index, local)
        if not edits:
            return msg
        try:
            return apply_edits(msg, edits, self.limits)
        except (SipParseError, ValueError):
            return msg

    @staticmethod
    def _answers_register(msg: Response) -> bool:
        try:
            cseq = msg.cseq
        except SipParseError:
            return False
        return cseq is not None and cseq.method == "REGISTER"

    def _hide_addresses(
        self,
        msg: Message,
        index: int,
        parse: AddressParser,
        local: Endpoint,
    ) -> list[Edit]:
        value = msg.headers.fields[index][2]
        try:
            addresses = parse(value)
        except ValueError:
            return []
        hidden = [None if a.wildcard else self.hide_uri(a.uri_text, local) for a in addresses]
        if not any(hidden):
            return []  # the common case: nothing internal, no span scanning
        spans = _matching_spans(value, addresses)
        if spans is None:
            return []
        editor = _FieldEditor(msg, index)
        for (start, end, angle), new in zip(spans, hidden, strict=True):
            if new is not None:
                # An addr-spec gains <>: after it, ";..." would be header parameters.
                editor.replace(start, end, new if angle else f"<{new}>")
        return editor.edits()

    @staticmethod
    def _locate(
        value: str, parse: AddressParser
    ) -> list[tuple[tuple[int, int, bool], NameAddr]] | None:
        """Each parsed address with the span of its URI in ``value``; None when the value does
        not parse or the spans do not match the parsed URIs (then the field is left alone)."""
        try:
            addresses = parse(value)
        except ValueError:
            return None
        spans = _matching_spans(value, addresses)
        return None if spans is None else list(zip(spans, addresses, strict=True))

    def _hide_warning(self, msg: Message, index: int, local: Endpoint) -> list[Edit]:
        editor = _FieldEditor(msg, index)
        for start, end, _ in _comma_parts(editor.value):
            match = _WARNING.match(editor.value, start, end)
            if match is None:
                continue
            agent = match.group("agent")
            host, port = _split_host_port(agent)
            if host is not None and self.is_hidden(host):
                ours = _uri_host(local.ip) + ("" if port is None else f":{local.port}")
                editor.replace(match.start("agent"), match.end("agent"), ours)
        return editor.edits()

    def restore(self, msg: M) -> M | None:
        """``msg`` (from the untrusted side) with hidden URIs restored: the Request-URI and
        Route entries of a request, the Record-Route entries of a response. The same object
        when nothing carries a token; None when a token does not open (drop it as malformed)."""
        if _HAS_TOKEN_PARAM.search(msg.raw) is None:
            return msg  # the common case: one scan, no parsing
        edits: list[Edit] = []
        if isinstance(msg, Request):
            uri_edit = self._restore_request_uri(msg)
            if uri_edit is None:
                return None
            edits += uri_edit
            header = "route"
        else:
            header = "record-route"
        budget = MAX_ROUTE_ENTRIES
        for index in msg.headers.indices(header):
            if budget <= 0:
                break
            editor = _FieldEditor(msg, index)
            located = self._locate(editor.value, _address_parser(header))
            if located is None:
                if TOKEN_PARAM in editor.value.lower():
                    return None  # a token we cannot read is a token we cannot trust
                continue
            for (start, end, _), address in located[:budget]:
                restored = self.restore_uri(address.uri_text)
                if restored is None:
                    return None
                if restored != address.uri_text:
                    editor.replace(start, end, restored)
            budget -= len(located)
            edits += editor.edits()
        if not edits:
            return msg
        try:
            return apply_edits(msg, edits, self.limits)
        except (SipParseError, ValueError):
            return None

    def _restore_request_uri(self, request: Request) -> list[Edit] | None:
        restored = self.restore_uri(request.uri)
        if restored is None:
            return None
        if restored == request.uri:
            return []
        start = len(_encode(request.method)) + 1  # Request-Line = Method SP Request-URI SP
        old = _encode(request.uri)
        if request.raw[start : start + len(old)] != old:
            return None
        return [Edit(start, start + len(old), _encode(restored))]


def _comma_parts(value: str) -> list[tuple[int, int, bool]]:
    """(start, end, False) of each comma-separated part of ``value``, quoted strings kept
    whole."""
    parts: list[tuple[int, int, bool]] = []
    start, i, quoted = 0, 0, False
    while i < len(value):
        ch = value[i]
        if quoted and ch == "\\":
            i += 1
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append((start, i, False))
            start = i + 1
        i += 1
    parts.append((start, len(value), False))
    return parts


def _points_at(uri: Uri, local: Endpoint) -> bool:
    return uri.host.strip("[]").lower() == local.ip.lower() and uri.port == local.port


def _split_host_port(text: str) -> tuple[str | None, str | None]:
    """``host[:port]`` / ``[v6][:port]`` -> (host, port text); (None, None) when unreadable."""
    if text.startswith("["):
        host, bracket, rest = text.partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None, None
        return host + "]", rest[1:] or None
    host, colon, port = text.partition(":")
    return host, (port if colon else None)
