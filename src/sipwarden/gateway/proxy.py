"""The sans-IO stateless proxy core (RFC 3261 §16.11) of ``sipwarden gateway``.

Bytes in, actions out: :meth:`StatelessProxy.on_datagram` takes one message (a UDP datagram,
or one framed from a TCP/TLS stream), the endpoint it came from, the local endpoint it arrived
on (each carries its transport) and the time, and returns the messages to send.

Transports: our Via names the transport of the side it is written for, so a request that came
in over TLS leaves toward a UDP core with ``SIP/2.0/UDP`` on top (transport conversion), and
its answer goes back over TLS. For a client on TCP/TLS the packet's source port is recorded as
``rport`` even when the client did not ask (RFC 3581): it names the client's connection, over
which the answer must go (RFC 3261 §18.2.2); the adapter finds the connection by it.
No sockets, no clock, no asyncio: the adapter (``gateway/server.py``) owns those, and a test or
a pcap replay drives this exact code.

Two sides. The *untrusted* side is every ``listen`` endpoint; the *upstream* side is one local
endpoint (``upstream_local``) that talks only to ``upstream`` (the operator's SBC or core).

- A request from the untrusted side is observed by the engine, judged by the policy, then
  forwarded to the upstream with our Via on top (stateless branch, below), Max-Forwards
  decremented (483 at 0), ``received``/``rport`` added to the client's Via (RFC 3261 §18.2.1,
  RFC 3581) and a loop check (a Via of ours already in the request: 482).
- A response from the upstream must carry our Via on top (else dropped, ``NO_ROUTE``); it is
  popped and the response sent to the next Via (``received``/``rport`` when present, else the
  sent-by), out of the listen endpoint the request came in on.
- A request from the upstream (an in-dialog BYE, an INVITE to a registered client) whose top
  Route is our own entry goes to the flow that entry names (below); otherwise to its
  Request-URI host:port over the URI's transport (``sips:`` or ``;transport=tls`` → TLS,
  ``;transport=tcp`` → TCP, else UDP), out of a listen endpoint of that transport and IP
  version; the Request-URI must then be an IP literal (no DNS in a sans-IO core), else
  ``NO_ROUTE``. Only the upstream can make the gateway send a request, so it is never an open
  relay for the untrusted side.
- Staying on the path: a REGISTER gets a Path entry of ours (RFC 3327) and a dialog-creating
  request (INVITE, SUBSCRIBE, REFER) a Record-Route entry (RFC 3261 §16.6 step 4), each naming
  the client's *flow* in an authenticated token (``swf``: listen index, address, port - RFC
  5626 §5.2 in spirit). The core's later requests for that binding or dialog come back along
  them and leave over that flow - the client's TCP/TLS connection or its NAT binding -
  whatever its Contact says. The entry is written for the side the request leaves on, and
  swapped for the other side's address as the answer passes back (double record-routing), so
  each side sees an address of ours it can reach. Our own entry on top of a Route is removed
  (§16.4).
- A response from the untrusted side (to such a request) must carry our Via; it goes to the
  upstream only.

Stateless branch (§16.11): ``z9hG4bKsw<listen index>x<digest>.<loop>``, the digest a keyed
BLAKE2s of the previous hop's branch (or, for an RFC 2543 peer without the magic cookie, of its
sent-by, Call-ID, CSeq number and From tag). Retransmissions, the non-2xx ACK and the CANCEL of
an INVITE therefore get the same branch, as §16.11 requires, and a response that did not go
through us cannot forge it: the digest is checked on the way back. The listen index in the
branch says which local endpoint the response leaves from (the one the client sent to, so a NAT
lets it in).

Loops (§16.3 step 4, §16.6 step 8): ``<loop>`` is a keyed digest of the fields a loop leaves
unchanged and a spiral changes - Request-URI, Call-ID, From tag, CSeq number and Route. A
request carrying a Via of ours whose ``<loop>`` matches the request as received now is a loop
(482); a different value is a spiral (the core retargeted the request back through us) and is
forwarded. The To tag is left out although §16.6 lists it: the non-2xx ACK carries the to-tag
its INVITE lacked and must keep the INVITE's branch (§17.2.3 matches it by branch).

Inspection: the engine observes every message, both directions (credential detectors need the
upstream's 401/403 answers). A request is observed as it arrived; a response as it leaves -
our Via popped, addressed to the party whose request it answers - so the tracker matches it to
that request by branch and address, as in a capture taken beside a proxy. The policy judges
only what comes from the untrusted side, with the findings this very message raised or
extended; findings raised by the upstream's traffic (the tenth 401 to a guesser) go to the
policy's ``ban``. When the engine or the policy raises, the message is dropped
(``ENGINE_ERROR``) unless ``fail_open``; the upstream's own traffic is never held up by an
engine error. :class:`~sipwarden.gateway.enforcer.Enforcer` adapts ``gateway/policy.py`` (a
bounded in-memory blocklist fed by the bans the policy orders). Messages leaving toward the
untrusted side go through the ``outgoing`` edit (``gateway/sanitize.py``: versions, topology
hidden) and messages arriving from it through ``incoming`` (hidden addresses restored). Every
message that is not forwarded is counted once, under its
:class:`~sipwarden.gateway.verdict.DropReason`.

Keep-alives: a CRLF over UDP is ignored; a STUN Binding request (RFC 5626 §4.4.2) is answered
for a flow that recently sent a request we forwarded, at most once a second (the answer is
larger than the request); over TCP/TLS the adapter answers the CRLF CRLF ping.

Rejections go to the packet's source address (not the Via), so a spoofed Via cannot turn the
gateway into a reflector. ACKs are never answered. For UDP a ``Tarpit`` verdict is a silent drop:
nothing would be sent either way and holding a datagram costs memory, not the scanner's time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, TypeVar

from sipwarden.detect.engine import Engine
from sipwarden.detect.finding import Finding
from sipwarden.detect.observation import Observation
from sipwarden.detect.tables import TtlMap
from sipwarden.gateway.verdict import Drop, DropReason, Forward, Reject, Tarpit, Verdict
from sipwarden.net import AddressKind, Endpoint, Transport, classify
from sipwarden.sip import Request, Response, SipParseError, Via, parse_message
from sipwarden.sip.hdr.params import parse_params, split_commas
from sipwarden.sip.hdr.via import BRANCH_COOKIE
from sipwarden.sip.limits import DEFAULT_LIMITS, ParseLimits
from sipwarden.sip.serialize import (
    Edit,
    apply_edits,
    decrement_max_forwards_edit,
    pop_value_edit,
    pop_via,
    push_field_edit,
    push_via_edit,
    replace_field_edit,
    splice,
)

__all__ = [
    "BRANCH_PREFIX",
    "Incoming",
    "Outgoing",
    "PathMode",
    "PolicyFn",
    "ProxyConfig",
    "ProxyStats",
    "Send",
    "StatelessProxy",
    "build_response",
    "stun_binding_response",
]

M = TypeVar("M", Request, Response)

#: An edit of messages leaving toward the untrusted side (gateway/sanitize.py
#: ``Sanitizer.outgoing``: product versions, trust-domain headers, topology hiding), given the
#: local endpoint the message leaves from (what hidden addresses are replaced by).
Outgoing = Callable[[Request | Response, Endpoint], Request | Response]
#: The inverse edit of messages arriving from the untrusted side (``Sanitizer.incoming``:
#: hidden addresses restored); None when a token does not authenticate (dropped).
Incoming = Callable[[Request | Response], Request | Response | None]

#: Limits for what the upstream sends: the core adds its own Via, Record-Route and more to what
#: the gateway let through under the default limits, and its messages must not be refused (or
#: counted against it) for that.
UPSTREAM_LIMITS = ParseLimits(
    max_message_bytes=2 * DEFAULT_LIMITS.max_message_bytes,
    max_header_bytes=2 * DEFAULT_LIMITS.max_header_bytes,
    max_headers=2 * DEFAULT_LIMITS.max_headers,
    max_via_hops=2 * DEFAULT_LIMITS.max_via_hops,
)

#: Set in a flow token's first byte (above the listen index, at most 127) for a SIPS dialog.
_SIPS_FLAG = 0x80

#: When a REGISTER gets the gateway's Path entry (see ``ProxyConfig.path``).
PathMode = Literal["always", "if_supported", "never"]

#: URI parameter carrying the flow token in the gateway's Record-Route and Path entries.
FLOW_PARAM = "swf"
#: Requests that create a dialog (RFC 3261 §12.1, RFC 6665 §4.1.1, RFC 3515 §2.4.7): the
#: gateway Record-Routes them, so the dialog's later requests pass through it both ways.
_DIALOG_METHODS = frozenset({"INVITE", "SUBSCRIBE", "REFER"})

#: Every branch this gateway writes starts with this (the RFC 3261 magic cookie + "sw").
BRANCH_PREFIX = BRANCH_COOKIE + "sw"
#: Longest attacker-chosen key kept in a table (as gateway/policy.py cuts them).
_DIGEST_SIZE = 8  # 64 bits: a forged response has a 2**-64 chance per try

#: A policy: the observation, the time, the findings this message raised or extended, the raw
#: bytes (to judge whether an unparsable message could be answered).
PolicyFn = Callable[[Observation, float, Sequence[Finding], bytes], Verdict]

_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    413: "Request Entity Too Large",
    482: "Loop Detected",
    483: "Too Many Hops",
    503: "Service Unavailable",
}


def forward_all(
    obs: Observation, now: float, findings: Sequence[Finding], raw: bytes = b""
) -> Verdict:
    """The policy used when none is given: forward everything (the engine still observes)."""
    return Forward()


class _Routed(NamedTuple):
    """A response on its way: ``out`` (our Via popped) to ``dest`` from ``local``."""

    out: Response
    dest: Endpoint
    local: Endpoint


class Send(NamedTuple):
    """Send ``data`` to ``dest`` from the local endpoint ``local``."""

    data: bytes
    dest: Endpoint
    local: Endpoint


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Where the gateway listens, where the upstream is, and the key of its branches."""

    #: The untrusted-side local endpoints (concrete addresses: they are written into Vias).
    listen: tuple[Endpoint, ...]
    #: The protected upstream (SBC or core).
    upstream: Endpoint
    #: The local endpoint the gateway talks to the upstream from.
    upstream_local: Endpoint
    #: Key of the branch digest; random per process is fine for one worker (bytes, ≤ 32).
    secret: bytes
    #: When the engine or the policy raises: forward anyway (True) or drop (False, the default:
    #: a firewall that fails open is bypassed by whoever finds the crashing input).
    fail_open: bool = False
    #: UDP flows (source address and port of a request forwarded) whose RFC 5626 §4.4.2 STUN
    #: keep-alives are answered, and for how long after their last request: a registration
    #: refreshes well within 300 s (RFC 5626 §4.4.1: keep-alives every 95-120 s).
    max_flows: int = 100_000
    flow_ttl_s: float = 300.0
    #: When a REGISTER gets our Path entry: always, if_supported (the UA sent
    #: ``Supported: path``, RFC 3327 §5.2) or never (config ``gateway.path``).
    path: PathMode = "always"


@dataclass
class ProxyStats:
    """Counters for ``/metrics``; every message that is not forwarded counts under a reason."""

    received: int = 0
    forwarded_requests: int = 0
    forwarded_responses: int = 0
    #: Times the engine or the policy raised (the message then counts as dropped ENGINE_ERROR
    #: when failing closed, or goes through when failing open or coming from the upstream).
    engine_errors: int = 0
    #: Rejections not sent because the answer would be larger than the request: a spoofed
    #: source must not get more bytes from us than it (or its forger) sent. Also under dropped.
    answers_suppressed: int = 0
    #: Answers sent, by (status, reason).
    rejected: Counter[tuple[int, DropReason]] = field(default_factory=Counter)
    #: STUN keep-alives (RFC 5626 §4.4.2) answered with a Binding response.
    keepalives_answered: int = 0
    #: CRLF keep-alives over UDP (not messages: neither forwarded nor dropped).
    keepalives_ignored: int = 0
    #: Messages forwarded (so counted there) that the adapter could not deliver: the client's
    #: connection was gone, the peer stopped reading, a send failed.
    undelivered: int = 0
    dropped: Counter[DropReason] = field(default_factory=Counter)

    def drop(self, reason: DropReason) -> None:
        self.dropped[reason] += 1


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def _ip_literal(host: str) -> str | None:
    """Canonical text of an IP literal (brackets allowed), None for a hostname."""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


def _hop_key(hop: Via, msg: Request | Response, received: str | None) -> bytes:
    """What the stateless branch is derived from (RFC 3261 §16.11): the previous hop's branch
    *and* sent-by and ``received`` as the hop reads once marked (what its responses carry).
    A server matches transactions by branch and sent-by (§17.2.3), and our sent-by is the
    same for every client, so two phones whose branch generators collide (``z9hG4bK1``) must
    not get one branch from us - the upstream would take the second for a retransmission."""
    where = (hop.sent_by.lower() + "\x00" + (received or "")).encode("utf-8", "surrogateescape")
    if hop.branch and hop.branch.startswith(BRANCH_COOKIE):
        return b"b\x00" + hop.branch.encode("utf-8", "surrogateescape") + b"\x00" + where
    cseq = msg.cseq
    from_ = msg.from_
    parts = (
        (received or "").lower(),
        hop.sent_by.lower(),
        msg.call_id or "",
        str(cseq.number) if cseq is not None else "",
        (from_.tag or "") if from_ is not None else "",
    )
    return b"k\x00" + "\x00".join(parts).encode("utf-8", "surrogateescape")


def build_response(
    request: Request,
    status: int,
    reason: str | None = None,
    retry_after: int | None = None,
    to_tag: str | None = None,
    allow: str | None = None,
) -> bytes:
    """A response to ``request`` (RFC 3261 §8.2.6): Via, From, Call-ID and CSeq copied, To with
    a tag added when it has none, ``Retry-After`` and ``Allow`` when given, no body."""
    headers = request.headers
    lines = [f"SIP/2.0 {status} {reason or _REASONS.get(status, 'Error')}"]
    lines += [f"Via: {value}" for value in headers.get_all("via")]
    from_ = headers.get("from")
    if from_ is not None:
        lines.append(f"From: {from_}")
    to = headers.get("to")
    if to is not None:
        has_tag = request.to is not None and request.to.tag is not None
        lines.append(f"To: {to}" if has_tag or to_tag is None else f"To: {to};tag={to_tag}")
    for name in ("call-id", "cseq"):
        value = headers.get(name)
        if value is not None:
            lines.append(f"{'Call-ID' if name == 'call-id' else 'CSeq'}: {value}")
    if retry_after is not None:
        lines.append(f"Retry-After: {retry_after}")
    if allow is not None:
        lines.append(f"Allow: {allow}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


class StatelessProxy:
    """The gateway's forwarding logic; see the module docstring for the routing rules."""

    def __init__(
        self,
        config: ProxyConfig,
        engine: Engine | None = None,
        policy: PolicyFn | None = None,
        outgoing: Outgoing | None = None,
        incoming: Incoming | None = None,
    ) -> None:
        if not config.listen:
            raise ValueError("the gateway needs at least one listen endpoint")
        if len(config.listen) > 127:  # a flow token keeps the index in 7 bits
            raise ValueError("the gateway takes at most 127 listen endpoints")
        self.config = config
        self.engine = engine
        self.policy: PolicyFn = policy if policy is not None else forward_all
        self.outgoing = outgoing
        self.incoming = incoming
        self.stats = ProxyStats()
        self._listen_index = {ep: i for i, ep in enumerate(config.listen)}
        #: UDP flows that may be kept alive: (ip, port) -> when their last STUN answer went.
        self._flows: TtlMap[tuple[str, int], float] = TtlMap(config.max_flows, config.flow_ttl_s)
        self._own = {
            (_host(ep.ip).lower(), ep.port) for ep in (*config.listen, config.upstream_local)
        }
        #: Addresses the gateway must never send a request to: its own and the upstream's.
        self._own_endpoints = {
            (ep.ip, ep.port) for ep in (*config.listen, config.upstream_local, config.upstream)
        }
        #: The same, hosts as canonical IP text (for Route URIs).
        self._own_hosts = {
            (_host(ep.ip), ep.port) for ep in (*config.listen, config.upstream_local)
        }

    # -- branches ------------------------------------------------------------------------------
    def _digest(self, key: bytes, index: int) -> str:
        h = hashlib.blake2s(
            key + b"\x00" + str(index).encode(), key=self.config.secret, digest_size=_DIGEST_SIZE
        )
        return h.hexdigest()

    def branch(self, hop: Via, request: Request, index: int, received: str | None) -> str:
        """Our branch for ``request`` whose top hop is ``hop`` (``received``: that hop's
        received parameter as forwarded, see :func:`_hop_key`)."""
        digest = self._digest(_hop_key(hop, request, received), index)
        return f"{BRANCH_PREFIX}{index}x{digest}.{self._loop_digest(request)}"

    def _loop_digest(self, request: Request) -> str:
        """§16.6 step 8: what a loop keeps and a spiral changes (see the module docstring)."""
        cseq = request.cseq
        from_ = request.from_
        parts = (
            request.uri,
            request.call_id or "",
            str(cseq.number) if cseq is not None else "",
            (from_.tag or "") if from_ is not None else "",
            "\x00".join(request.headers.get_all("route")),
        )
        return self._digest(b"l\x00" + "\x01".join(parts).encode("utf-8", "surrogateescape"), 0)

    def _our_index(
        self, top: Via, local: Endpoint, next_hop: Via | None, msg: Response
    ) -> int | None:
        """The listen index encoded in our top Via, or None if the Via is not ours (or forged)."""
        if (top.host.lower(), top.port) != (_host(local.ip).lower(), local.port):
            return None
        branch = top.branch or ""
        if not branch.startswith(BRANCH_PREFIX) or next_hop is None:
            return None
        index_text, sep, rest = branch[len(BRANCH_PREFIX) :].partition("x")
        digest = rest.partition(".")[0]
        if not sep or not index_text.isdigit() or len(index_text) > 4:
            return None
        index = int(index_text)
        if index >= len(self.config.listen):
            return None
        if digest != self._digest(_hop_key(next_hop, msg, next_hop.received), index):
            return None
        return index

    def _via(self, local: Endpoint, branch: str) -> str:
        return f"SIP/2.0/{local.transport.upper()} {_host(local.ip)}:{local.port};branch={branch}"

    def advance(self, now: float) -> None:
        """Let time pass without traffic: the engine closes windows, the policy forgets."""
        if self.engine is not None:
            self.engine.advance(now)
        advance = getattr(self.policy, "advance", None)
        if callable(advance):
            advance(now)

    # -- entry point ---------------------------------------------------------------------------
    def on_datagram(self, data: bytes, src: Endpoint, local: Endpoint, now: float) -> list[Send]:
        """One datagram in; what to send out (possibly nothing)."""
        if data.strip(b"\r\n") == b"":
            # RFC 5626 §4.4.1 keep-alive (CRLF): nothing to do over UDP; not a message.
            self.stats.keepalives_ignored += 1
            return []
        self.stats.received += 1
        from_upstream = local == self.config.upstream_local
        if from_upstream and (src.ip, src.port) != (
            self.config.upstream.ip,
            self.config.upstream.port,
        ):
            self.stats.drop(DropReason.NO_ROUTE)
            return []
        if data[4:8] == STUN_COOKIE and not from_upstream:
            return self._stun(data, src, local, now)
        try:
            message: Request | Response | None = parse_message(
                data, UPSTREAM_LIMITS if from_upstream else DEFAULT_LIMITS
            )
            error: SipParseError | None = None
        except SipParseError as exc:
            message, error = None, exc
        obs = Observation(now, 0, src, local, message, error, len(data))
        routed: _Routed | DropReason = DropReason.NO_ROUTE
        if isinstance(message, Response):
            try:
                routed = self._route_response(message, src, local, from_upstream) or routed
            except (SipParseError, ValueError):
                routed = DropReason.MALFORMED  # a Via the routing reads is malformed
            if isinstance(routed, _Routed):
                # The engine sees a response as it leaves - our Via popped, toward the party
                # whose request it answers - so the tracker matches it to that request by its
                # branch and address (credential, enumeration and call detectors need that).
                obs = obs._replace(message=routed.out, dst=routed.dest)
        findings = self._observe(obs, now, judged=not from_upstream)
        if findings is None:
            return []
        if from_upstream and findings:
            # E.g. the upstream's tenth 401 to one guesser: its finding bans the guesser.
            self._ban(findings, now)
        try:
            return self._route(obs, findings, data, message, routed, src, local, from_upstream)
        except (SipParseError, ValueError):
            # A header the routing reads (Via, Max-Forwards, To, Request-URI) is malformed:
            # parsed lazily, so it surfaces here. Nowhere safe to answer: dropped, counted.
            self.stats.drop(DropReason.MALFORMED)
            return []

    def _ban(self, findings: Sequence[Finding], now: float) -> None:
        """Bans ordered by findings the upstream's traffic raised (the policy's ``ban``)."""
        ban = getattr(self.policy, "ban", None)
        if not callable(ban):
            return
        # Never the upstream itself (a malformed relay it sent is the gateway's problem, not
        # an attack): banning it would cut every call.
        upstream = self.config.upstream.ip
        findings = [f for f in findings if f.source is None or f.source.ip != upstream]
        if not findings:
            return
        try:
            ban(findings, now)
        except Exception:  # a policy bug must not hold up the upstream's traffic
            self.stats.engine_errors += 1

    def on_framing_error(
        self, error: SipParseError, src: Endpoint, local: Endpoint, now: float, size: int
    ) -> None:
        """A stream from ``src`` carried bytes that cannot be framed (the adapter closes the
        connection): the engine sees a malformed message, as ``analyze`` does for a capture,
        so repeat offenders are found and banned. Nothing is forwarded or answered."""
        self.stats.received += 1
        judged = local != self.config.upstream_local  # the upstream is never judged or banned
        obs = Observation(now, 0, src, local, None, error, size)
        findings = self._observe(obs, now, judged=judged)
        if findings is None:
            return  # the engine raised: counted as engine_error
        if judged:
            self._judge(obs, now, findings, b"")
        self.stats.drop(DropReason.MALFORMED)

    def _stun(self, data: bytes, src: Endpoint, local: Endpoint, now: float) -> list[Send]:
        """RFC 5626 §4.4.2: a STUN Binding request on a UDP flow gets a Binding response
        (RFC 5389) saying where the flow comes from. Answered only for a flow that sent a
        request we forwarded within ``flow_ttl_s``, and at most once a second per flow: the
        answer (32 or 44 bytes) is larger than the request (20), so an open answer would be
        an amplifier for spoofed sources."""
        flow = (src.ip, src.port)
        last = self._flows.get(flow, now)
        answer = None if last is None or now - last < 1.0 else stun_binding_response(data, src)
        if answer is None:
            self.stats.drop(DropReason.NO_ROUTE)
            return []
        self._flows.set(flow, now, now)
        self.stats.keepalives_answered += 1
        return [Send(answer, src, local)]

    # -- Record-Route, Path and flow tokens ------------------------------------------------------
    def _flow_token(self, index: int, peer: Endpoint, sips: bool = False) -> str:
        """The flow to ``peer`` through listen endpoint ``index``, authenticated (RFC 5626
        §5.2 style): what our Record-Route and Path entries carry, so a request the upstream
        sends back along them reaches that peer over that flow - its TCP/TLS connection, or
        its NAT binding - whatever its Contact says. ``sips``: the dialog is for a SIPS URI
        (the client's side of our entry must then be SIPS, §16.6 step 4)."""
        address = ipaddress.ip_address(peer.ip)
        body = bytes([index | (_SIPS_FLAG if sips else 0)])
        body += address.packed + peer.port.to_bytes(2, "big")
        mac = hashlib.blake2s(
            b"f\x00" + body, key=self.config.secret, digest_size=_DIGEST_SIZE
        ).digest()
        return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode("ascii")

    def _open_flow(self, token: str) -> tuple[int, Endpoint, bool] | None:
        """(listen index, peer, sips) of a flow token of ours; None when it does not
        authenticate."""
        if len(token) > 48:
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            return None
        body, mac = raw[:-_DIGEST_SIZE], raw[-_DIGEST_SIZE:]
        if len(body) not in (7, 19):  # index + IPv4/IPv6 + port
            return None
        expected = hashlib.blake2s(
            b"f\x00" + body, key=self.config.secret, digest_size=_DIGEST_SIZE
        ).digest()
        index = body[0] & ~_SIPS_FLAG
        if not hmac.compare_digest(mac, expected) or index >= len(self.config.listen):
            return None
        ip = str(ipaddress.ip_address(body[1:-2]))
        peer = Endpoint(ip, int.from_bytes(body[-2:], "big"), self.config.listen[index].transport)
        return index, peer, bool(body[0] & _SIPS_FLAG)

    def _own_entry(self, local: Endpoint, token: str, sips: bool = False) -> str:
        """Our Record-Route / Path entry on the side of ``local`` (loose routing, RFC 3261
        §16.6 step 4), naming the flow ``token``: a SIPS URI on a TLS side when the dialog is
        for a SIPS URI (§16.6 step 4: the entry must then be SIPS too)."""
        scheme = "sips" if sips and local.transport is Transport.TLS else "sip"
        transport = "" if local.transport is Transport.UDP else f";transport={local.transport}"
        return f"<{scheme}:{_host(local.ip)}:{local.port}{transport};lr;{FLOW_PARAM}={token}>"

    def _stay_on_path(
        self, request: Request, side: Endpoint, index: int, peer: Endpoint
    ) -> tuple[str, str] | None:
        """The entry that keeps the gateway on the path of what ``request`` starts: a Path for
        a REGISTER (RFC 3327: the registrar routes requests for the binding through us), a
        Record-Route for a dialog-creating request (RFC 3261 §16.6 step 4), written for the
        ``side`` the request leaves on; the other side's copy is swapped in as the answer
        passes back (:meth:`_swap_own_entries`)."""
        if request.method == "REGISTER":
            mode = self.config.path
            if mode == "never" or (mode == "if_supported" and not _supports_path(request)):
                return None
            sips = _is_sips(request)
            return ("Path", self._own_entry(side, self._flow_token(index, peer, sips), sips))
        to = request.to
        if request.method in _DIALOG_METHODS and (to is None or to.tag is None):
            sips = _is_sips(request)
            token = self._flow_token(index, peer, sips)
            return ("Record-Route", self._own_entry(side, token, sips))
        return None

    def _reachable(self, dest: Endpoint, local: Endpoint) -> bool:
        """Whether a Request-URI destination is a unicast host on the untrusted side: not one
        of the gateway's own addresses or the upstream, not multicast/broadcast/unspecified/
        reserved, and loopback or link-local only for a gateway listening there itself. The
        untrusted side chooses the Contacts the core later sends to; without this it could aim
        the gateway at its own host's services or at a broadcast address."""
        if (dest.ip, dest.port) in self._own_endpoints:
            return False
        kind = classify(dest.ip)
        if kind in (AddressKind.PUBLIC, AddressKind.PRIVATE, AddressKind.DOCUMENTATION):
            return dest.ip != "255.255.255.255"
        return kind in (AddressKind.LOOPBACK, AddressKind.LINK_LOCAL) and kind is classify(local.ip)

    def _own_route(self, request: Request) -> bool:
        """Whether the top Route names this gateway (RFC 3261 §16.4: then it is removed)."""
        routes = request.route
        if not routes:
            return False
        uri = routes[0].uri
        host = _ip_literal(uri.host)
        return host is not None and (_host(host), uri.port or 5060) in self._own_hosts

    def _swap_own_entries(
        self, msg: M, side: Endpoint, other: Endpoint, peer: Endpoint, exact: bool = True
    ) -> M:
        """``msg`` (a response crossing the gateway) with our Record-Route/Path entries for the
        flow to ``peer`` rewritten from ``side`` to ``other``, the side it now leaves on: each
        side must see an address of ours it can reach (double record-routing). Only that
        flow's entries: a dialog through the gateway twice (caller and callee both behind it)
        carries one entry per leg, and the other leg's must keep pointing where it was.
        ``exact=False`` matches the flow by IP alone (a UDP client without ``rport``, whose
        answers go to its Via port, not the source port its flow was recorded with)."""
        base = self._own_entry(side, "")[1:-1]  # "sip:host:port[;transport=x];lr;swf="
        if base[4:].encode("ascii") not in msg.raw:
            return msg
        edits = []
        for name in ("record-route", "path"):
            for index in msg.headers.indices(name):
                entries = split_commas(msg.headers.fields[index][2])
                changed = [self._swap_entry(e, base, other, peer, exact) for e in entries]
                if changed != entries:
                    edits.append(replace_field_edit(msg, index, ", ".join(changed)))
        return apply_edits(msg, edits) if edits else msg

    def _swap_entry(
        self, entry: str, base: str, other: Endpoint, peer: Endpoint, exact: bool
    ) -> str:
        scheme = "sips" if entry.startswith("<sips:") else "sip"
        prefix = "<" + scheme + base[3:]
        if not entry.startswith(prefix) or not entry.endswith(">"):
            return entry
        token = entry[len(prefix) : -1]
        flow = self._open_flow(token)
        if flow is None or flow[1].ip != peer.ip or (exact and flow[1].port != peer.port):
            return entry
        return self._own_entry(other, token, sips=flow[2])

    def state_size(self) -> int:
        """Entries in the proxy's own table (UDP flows kept alive)."""
        return self._flows.state_size()

    def evictions(self) -> int:
        return self._flows.evictions

    def _route(
        self,
        obs: Observation,
        findings: list[Finding],
        data: bytes,
        message: Request | Response | None,
        routed: _Routed | DropReason,
        src: Endpoint,
        local: Endpoint,
        from_upstream: bool,
    ) -> list[Send]:
        if not from_upstream:
            verdict = self._judge(obs, obs.ts, findings, data)
            if not isinstance(verdict, Forward):
                return self._refuse(verdict, message, src, local)
        if message is None:
            # Not answered: without a parsed Via there is nowhere safe to send a response.
            self.stats.drop(DropReason.MALFORMED)
            return []
        if isinstance(message, Response):
            return self._response(routed, from_upstream)
        if from_upstream:
            return self._request_downstream(message)
        return self._request_upstream(message, src, local, obs.ts)

    def _observe(self, obs: Observation, now: float, judged: bool) -> list[Finding] | None:
        """Feed the engine; the findings this message raised or extended. None = fail closed
        (only for a message the policy judges: the upstream's own traffic is not held up)."""
        if self.engine is None:
            return []
        try:
            return self.engine.observe(obs)
        except Exception:  # the engine must never take the gateway down
            self.stats.engine_errors += 1
            if self.config.fail_open or not judged:
                return []
            self.stats.drop(DropReason.ENGINE_ERROR)
            return None

    def _judge(
        self, obs: Observation, now: float, findings: Sequence[Finding], raw: bytes
    ) -> Verdict:
        try:
            return self.policy(obs, now, findings, raw)
        except Exception:  # a policy bug: fail as configured, counted either way
            self.stats.engine_errors += 1
            return Forward() if self.config.fail_open else Drop(DropReason.ENGINE_ERROR)

    def _refuse(
        self,
        verdict: Reject | Drop | Tarpit,
        message: Request | Response | None,
        src: Endpoint,
        local: Endpoint,
    ) -> list[Send]:
        self.stats.drop(verdict.reason)
        if not isinstance(verdict, Reject):
            return []
        if not isinstance(message, Request) or message.method == "ACK":
            return []  # responses and ACKs are never answered
        try:
            send = self._reject(message, verdict, src, local)
        except (SipParseError, ValueError):
            return []  # unanswerable (a malformed To or Via): still counted once, above
        if send is None:
            self.stats.answers_suppressed += 1
            return []
        return [send]

    def _reject(
        self,
        request: Request,
        verdict: Reject,
        src: Endpoint,
        local: Endpoint,
    ) -> Send | None:
        """The answer, or None when it would be larger than the request (no amplification:
        compact headers expanded, a To tag, Allow and Retry-After added can outgrow it)."""
        status, retry_after = verdict.status, verdict.retry_after
        tag = self._digest(
            (request.call_id or "").encode("utf-8", "surrogateescape") + b"\x00tag", 0
        )
        allow = getattr(self.policy, "allow_header", None) if status == 405 else None
        data = build_response(
            request,
            status,
            retry_after=retry_after,
            to_tag=tag,
            allow=allow if isinstance(allow, str) else None,
        )
        if len(data) > len(request.raw):
            return None
        self.stats.rejected[status, verdict.reason] += 1
        return Send(data, src, local)  # to the packet's source: no reflection via a forged Via

    # -- requests ------------------------------------------------------------------------------
    def _is_loop(self, request: Request) -> bool:
        loop: str | None = None  # computed only when a Via of ours is present
        for hop in request.via:
            branch = hop.branch or ""
            if (
                not branch.startswith(BRANCH_PREFIX)
                or (hop.host.lower(), hop.port) not in self._own
            ):
                continue
            if loop is None:
                loop = self._loop_digest(request)
            if branch.rpartition(".")[2] == loop:
                return True
        return False

    def _request_upstream(
        self, arrived: Request, src: Endpoint, local: Endpoint, now: float
    ) -> list[Send]:
        request = self._restore(arrived)
        if request is None:
            return []
        vias = request.via
        if not vias:
            self.stats.drop(DropReason.MALFORMED)
            return []  # nowhere to send a response to either
        if request.max_forwards is not None and request.max_forwards <= 0:
            return self._refuse(Reject(483, DropReason.TOO_MANY_HOPS), request, src, local)
        if self._is_loop(request):
            return self._refuse(Reject(482, DropReason.LOOP), request, src, local)
        top = vias[0]
        index = self._listen_index.get(local, 0)
        marked = _mark_received(top, src)
        received = src.ip if marked is not None else top.received
        our_via = self._via(self.config.upstream_local, self.branch(top, request, index, received))
        out = _forwarded(
            request,
            our_via,
            marked,
            self._stay_on_path(request, self.config.upstream_local, index, src),
            pop_route=self._own_route(request),
        )
        if src.transport is Transport.UDP:
            flow = (src.ip, src.port)
            if not self._flows.touch(flow, now):
                self._flows.set(flow, 0.0, now)
        self.stats.forwarded_requests += 1
        return [Send(out, self.config.upstream, self.config.upstream_local)]

    def _request_downstream(self, request: Request) -> list[Send]:
        own_route = self._own_route(request)
        routed = self._downstream_flow(request, own_route)
        if routed is None:
            self.stats.drop(DropReason.NO_ROUTE)
            return []
        index, dest = routed
        local = self.config.listen[index]
        if not request.via:
            self.stats.drop(DropReason.MALFORMED)
            return []
        if request.max_forwards is not None and request.max_forwards <= 0:
            upstream, upstream_local = self.config.upstream, self.config.upstream_local
            return self._refuse(
                Reject(483, DropReason.TOO_MANY_HOPS), request, upstream, upstream_local
            )
        top = request.via[0]
        our_via = self._via(local, self.branch(top, request, index, top.received))
        edits = [push_via_edit(request, our_via), decrement_max_forwards_edit(request)]
        if own_route:
            edits.append(pop_value_edit(request, "route"))
        entry = self._stay_on_path(request, local, index, dest)
        if entry is not None and entry[0] == "Record-Route":
            edits.append(push_field_edit(request, *entry))
        out = apply_edits(request, edits)
        data = out.raw if self.outgoing is None else self.outgoing(out, local).raw
        self.stats.forwarded_requests += 1
        return [Send(data, dest, local)]

    def _downstream_flow(self, request: Request, own_route: bool) -> tuple[int, Endpoint] | None:
        """(listen index, destination) of a request from the upstream: the flow named by our
        Record-Route/Path entry on top of its Route (the client's connection or NAT binding),
        else its Request-URI (an IP literal; no DNS in a sans-IO core) over the URI's transport
        (``sips:``/``;transport=tls`` → TLS, ``;transport=tcp`` → TCP, else UDP), out of a
        listen endpoint of that transport and IP version."""
        if own_route:
            # Our own entry: its flow or nowhere (a bare entry of ours, e.g. one a client put
            # in its answer's Record-Route, must not make us follow a Request-URI it chose).
            token = request.route[0].uri.param(FLOW_PARAM)
            flow = self._open_flow(token) if token is not None else None
            return flow[:2] if flow is not None else None
        try:
            uri = request.request_uri
        except ValueError:
            return None
        transport = _uri_transport(uri.scheme, uri.param("transport"))
        ip = _ip_literal(uri.host)
        if transport is None or ip is None:
            return None
        default_port = 5061 if transport is Transport.TLS else 5060
        dest = Endpoint(ip, uri.port or default_port, transport)
        version = ipaddress.ip_address(ip).version
        # Out of a listen endpoint of the same transport and IP version (the flow to a client
        # over TCP/TLS is the connection it opened to that endpoint).
        index = next(
            (
                i
                for i, ep in enumerate(self.config.listen)
                if ep.transport is transport and ipaddress.ip_address(ep.ip).version == version
            ),
            None,
        )
        if index is None or not self._reachable(dest, self.config.listen[index]):
            return None
        return index, dest

    # -- responses -----------------------------------------------------------------------------
    def _route_response(
        self, response: Response, src: Endpoint, local: Endpoint, from_upstream: bool
    ) -> _Routed | DropReason | None:
        """Where a response goes: our Via (checked) popped, to the next hop - the client
        named by its Via for the upstream's answers, the upstream for a client's - or None."""
        vias = response.via
        next_hop = vias[1] if len(vias) > 1 else None
        index = self._our_index(vias[0], local, next_hop, response) if vias else None
        if index is None or next_hop is None:
            return None
        out = pop_via(response)
        listen, upstream_local = self.config.listen[index], self.config.upstream_local
        if not from_upstream:
            # Hidden addresses restored before our own entries are swapped back (a hidden
            # entry of ours would otherwise be restored over the swap).
            restored = self.incoming(out) if self.incoming is not None else out
            if not isinstance(restored, Response):
                return DropReason.TOPOLOGY_TOKEN
            out = self._swap_own_entries(restored, listen, upstream_local, src)
            return _Routed(out, self.config.upstream, upstream_local)
        dest = _response_destination(next_hop, listen.transport)
        if dest is None:
            return None
        exact = listen.transport is not Transport.UDP or next_hop.rport is not None
        out = self._swap_own_entries(out, upstream_local, listen, dest, exact)
        return _Routed(out, dest, listen)

    def _response(self, routed: _Routed | DropReason, from_upstream: bool) -> list[Send]:
        if isinstance(routed, DropReason):
            self.stats.drop(routed)
            return []
        out = routed.out
        if not from_upstream:
            self.stats.forwarded_responses += 1
            return [Send(out.raw, routed.dest, routed.local)]
        data = out.raw if self.outgoing is None else self.outgoing(out, routed.local).raw
        self.stats.forwarded_responses += 1
        return [Send(data, routed.dest, routed.local)]

    def _restore(self, msg: M) -> M | None:
        """``msg`` from the untrusted side with hidden addresses restored (the ``incoming``
        edit); None, counted, when a topology token does not authenticate."""
        if self.incoming is None:
            return msg
        restored = self.incoming(msg)
        if restored is None:
            self.stats.drop(DropReason.TOPOLOGY_TOKEN)
            return None
        return restored  # type: ignore[return-value]


#: RFC 5389 §6: every STUN message carries this at offset 4.
STUN_COOKIE = b"\x21\x12\xa4\x42"
_STUN_BINDING_REQUEST = b"\x00\x01"
_STUN_BINDING_RESPONSE = b"\x01\x01"
_XOR_MAPPED_ADDRESS = b"\x00\x20"


def stun_binding_response(data: bytes, src: Endpoint) -> bytes | None:
    """The Binding success response to a STUN Binding request from ``src`` (RFC 5389 §7.3.1:
    the transaction id echoed, one XOR-MAPPED-ADDRESS, §15.2); None for anything else (other
    methods, classes, a length that does not match, over 548 bytes)."""
    if not 20 <= len(data) <= 548 or data[:2] != _STUN_BINDING_REQUEST:
        return None
    length = int.from_bytes(data[2:4], "big")
    if data[4:8] != STUN_COOKIE or length != len(data) - 20 or length % 4:
        return None
    transaction = data[8:20]
    try:
        address = ipaddress.ip_address(src.ip)
    except ValueError:
        return None
    key = STUN_COOKIE if address.version == 4 else STUN_COOKIE + transaction
    xored = bytes(a ^ b for a, b in zip(address.packed, key, strict=True))
    family = b"\x01" if address.version == 4 else b"\x02"
    port = (src.port ^ 0x2112).to_bytes(2, "big")
    value = b"\x00" + family + port + xored
    attribute = _XOR_MAPPED_ADDRESS + len(value).to_bytes(2, "big") + value
    return (
        _STUN_BINDING_RESPONSE
        + len(attribute).to_bytes(2, "big")
        + STUN_COOKIE
        + transaction
        + attribute
    )


def _response_destination(hop: Via, transport: Transport) -> Endpoint | None:
    """RFC 3261 §18.2.2 / RFC 3581 §4: received and rport when present, else the sent-by.
    The response leaves over ``transport``, the one its request came in on (the listen endpoint
    named in our branch): over TCP/TLS that is the client's connection, which ``rport``
    names (:func:`_mark_received` always records it for streams)."""
    ip = _ip_literal(hop.received or hop.host)
    if ip is None or hop.transport.lower() != transport.value:
        return None
    rport = hop.rport
    default = 5061 if transport is Transport.TLS else 5060
    port = int(rport) if rport and rport.isdigit() else (hop.port or default)
    return Endpoint(ip, port, transport)


def _is_sips(request: Request) -> bool:
    """A request for a SIPS URI (its Request-URI, or its first Route when it has one)."""
    routes = request.headers.get_all("route")
    target = routes[0].lstrip() if routes else request.uri
    return target.lower().lstrip("<").startswith("sips:")


def _supports_path(request: Request) -> bool:
    """Whether the UA announced ``Supported: path`` (RFC 3327 §5.1)."""
    tags = (t.strip().lower() for v in request.headers.get_all("supported") for t in v.split(","))
    return "path" in tags


def _uri_transport(scheme: str, param: str | None) -> Transport | None:
    """How to reach a SIP URI (RFC 3261 §19.1.2, §26.2): sips → TLS; else its ``transport``
    parameter, UDP when absent. None for what the gateway does not speak (SCTP, WS)."""
    if scheme == "sips":
        return Transport.TLS if param is None or param.lower() in ("tcp", "tls") else None
    if scheme != "sip":
        return None
    name = (param or "udp").lower()
    return {"udp": Transport.UDP, "tcp": Transport.TCP, "tls": Transport.TLS}.get(name)


def _mark_received(hop: Via, src: Endpoint) -> str | None:
    """The top hop with ``received``/``rport`` set from the packet's source (RFC 3261 §18.2.1:
    received when the sent-by host differs; RFC 3581 §4: rport filled when asked, and then
    received always); None when the hop needs no change. A ``received`` the sender wrote
    itself is always replaced: responses go to it, so keeping it would let a client aim the
    upstream's answers at a third party (reflection)."""
    # Over TCP/TLS the response must find the client's connection, named by its source port
    # (RFC 3261 §18.2.2), not by the port in its Via: rport is recorded as if asked.
    asked_rport = hop.rport is not None or src.transport is not Transport.UDP
    direct = hop.host == src.ip or _ip_literal(hop.host) == src.ip
    if not asked_rport and direct and hop.received is None:
        return None
    params = [
        (name, value)
        for name, value in parse_params(hop.params_text, allow_duplicates=True)
        if name.lower() not in ("received", "rport")
    ]
    params.append(("received", src.ip))
    if asked_rport:
        params.append(("rport", str(src.port)))
    text = "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)
    return f"{hop.protocol}/{hop.version}/{hop.transport} {hop.sent_by}{text}"


def _forwarded(
    request: Request,
    our_via: str,
    marked: str | None,
    push: tuple[str, str] | None = None,
    pop_route: bool = False,
) -> bytes:
    """Our Via on top, the client's top hop replaced by ``marked`` (when given), Max-Forwards
    decremented, ``push`` (name, value) added as the top value of its header and the top Route
    value removed when ``pop_route`` - spliced into bytes, not parsed again (nothing here reads
    it). The top Via field (folded lines included) is rewritten whole: the bytes from its start
    to the next field's start; other hops on its line are kept."""
    first = request.headers.indices("via")[0]
    fields = request.headers.fields
    if marked is not None and first + 1 >= len(fields):
        # Via is the last field (no From/To/Call-ID/CSeq after it): rare, done in two steps.
        popped = pop_via(request)
        request = apply_edits(popped, [push_via_edit(popped, marked)])
        marked = None
    via = push_via_edit(request, our_via)
    edits = [decrement_max_forwards_edit(request)]
    if push is not None:
        edits.append(push_field_edit(request, *push))
    if pop_route:
        edits.append(pop_value_edit(request, "route"))
    if marked is None:
        return splice(request.raw, [via, *edits])
    end = via.start + request.field_offset(first + 1) - request.field_offset(first)
    sep = "\r\n" if request.raw[end - 2 : end] == b"\r\n" else "\n"
    hops = ", ".join([marked, *split_commas(fields[first][2])[1:]])
    line = f"Via: {hops}{sep}".encode("utf-8", "surrogateescape")
    return splice(request.raw, [Edit(via.start, end, via.data + line), *edits])
