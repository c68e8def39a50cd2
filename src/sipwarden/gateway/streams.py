"""TCP and TLS for ``sipwarden gateway``: connections around the same sans-IO proxy core.

A connection's bytes are cut into messages by :class:`~sipwarden.sip.framing.StreamFramer`
(RFC 3261 §18.3: Content-Length is mandatory on streams) and each message is handed to the
server exactly as a UDP datagram is, with the connection's peer (transport TCP or TLS) as its
source. RFC 5626 §4.4.1 keep-alives are answered here: a ``CRLF CRLF`` ping gets a ``CRLF``
pong; a pong is ignored.

Responses and requests for the untrusted side go back over the connection they belong to,
found by (listen endpoint, peer IP, peer port): the proxy records the peer's source port as
``rport`` in the client's Via (RFC 3581), so a response names its connection. The gateway never
opens a connection toward the untrusted side (§18.2.2 would have a server try the sent-by):
a client behind NAT could not be reached that way, and an attacker could make the gateway
connect to third parties. No connection: dropped, counted (``no_route``).

Bounds, because connections cost an attacker nothing (:class:`~sipwarden.gateway.server.
StreamOptions`): a maximum number of connections, and per source IPv4 address or IPv6 /64,
counted on accept - a TLS connection is admitted as plain TCP and only then upgraded
(``start_tls``), so handshakes in progress count and a blocklisted source never gets the
server's signature; a first message (or the TLS handshake) within ``handshake_timeout_s``, and
a message once begun finished within it too (slowloris, a byte at a time); an idle timeout
counted from SIP activity; at most ``MAX_WRITE_BUFFER`` bytes queued toward a peer that does
not read; the framer's own limits (four messages' worth at most buffered). Unframeable bytes
close the connection and are reported to the engine as a malformed message
(:meth:`~sipwarden.gateway.proxy.StatelessProxy.on_framing_error`).

The upstream side is one connection (:class:`UpstreamStream`), opened at start (a gateway that
cannot reach or verify its upstream should say so at once) and re-opened on demand after it
closes, with messages queued meanwhile (bounded). Its local endpoint as first bound is the
identity the proxy writes into Via: a re-opened connection has another port, but the upstream
answers over the connection a request came in on (§18.2.2), so the Via port is never dialled.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sipwarden.errors import InputError
from sipwarden.net import Endpoint, Transport
from sipwarden.sip import SipParseError
from sipwarden.sip.framing import NEED_DATA, FramerEvent, StreamFramer
from sipwarden.sip.limits import DEFAULT_LIMITS, ParseLimits

if TYPE_CHECKING:
    from sipwarden.gateway.server import TlsOptions

__all__ = [
    "MAX_WRITE_BUFFER",
    "StreamConnection",
    "UpstreamStream",
    "client_context",
    "endpoint_of",
    "server_context",
]

log = logging.getLogger(__name__)

#: Bytes queued toward one peer before the connection is closed as a slow reader: a few large
#: SIP messages; a peer that reads nothing must not make the gateway hold its answers (at most
#: max_connections x this in all: 512 MiB at the defaults).
MAX_WRITE_BUFFER = 256 << 10
#: Decrypted chunks kept between the end of a TLS handshake and the first use of the TLS
#: transport (one loop turn): a peer cannot have sent more than a few by then.
MAX_EARLY_CHUNKS = 64
#: Messages queued for the upstream while its connection is being re-opened.
MAX_UPSTREAM_QUEUE = 1024
#: Pause between attempts to re-open the upstream connection (seconds).
RECONNECT_DELAY_S = 0.5

#: (data, peer, local): a framed message from a connection.
OnMessage = Callable[[bytes, Endpoint, Endpoint], None]


def endpoint_of(addr: Any, transport: Transport) -> Endpoint:
    """asyncio's (host, port[, flow, scope]) as an Endpoint with canonical IP text."""
    return Endpoint(str(ipaddress.ip_address(addr[0])), int(addr[1]), transport)


def server_context(tls: TlsOptions, where: str) -> ssl.SSLContext:
    """The context of ``tls:`` listen endpoints: TLS 1.2+ (RFC 8996), the configured chain."""
    if tls.cert is None or tls.key is None:
        raise InputError(
            where,
            "a tls: listen address needs a certificate and key (--tls-cert, "
            "--tls-key or gateway.tls_cert, gateway.tls_key)",
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # An encrypted key fails here instead of prompting for a password on a terminal.
        context.load_cert_chain(tls.cert, tls.key, password=lambda: b"")
    except (OSError, ssl.SSLError) as exc:
        raise InputError(str(tls.cert), f"cannot load the certificate and key: {exc}") from None
    return context


def client_context(tls: TlsOptions) -> ssl.SSLContext:
    """The context of a ``tls:`` upstream: TLS 1.2+, the certificate always verified (against
    ``upstream_ca`` when given, else the system's CAs) and its name (or IP) checked."""
    try:
        context = ssl.create_default_context(
            cafile=str(tls.upstream_ca) if tls.upstream_ca is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise InputError(str(tls.upstream_ca), f"cannot load the CA bundle: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class StreamConnection(asyncio.Protocol):
    """One TCP/TLS connection: frames its bytes, answers keep-alives, hands messages on.

    A TLS connection is accepted as plain TCP, admitted (bounds, blocklist) and only then
    upgraded with ``loop.start_tls``: connections still in their handshake count against the
    bounds, and a blocklisted source never gets the server's signature operation."""

    def __init__(
        self,
        local: Endpoint,
        on_message: OnMessage,
        on_framing_error: Callable[[SipParseError, Endpoint, Endpoint, int], None],
        admit: Callable[[StreamConnection], bool],
        forget: Callable[[StreamConnection], None],
        now: Callable[[], float],
        *,
        tls: ssl.SSLContext | None = None,
        handshake_timeout_s: float = 5.0,
        limits: ParseLimits = DEFAULT_LIMITS,
    ) -> None:
        self.local = local
        self.peer: Endpoint | None = None
        self.transport: asyncio.Transport | None = None
        self._on_message = on_message
        self._on_framing_error = on_framing_error
        self._admit = admit
        self._forget = forget
        self._now = now
        self._tls = tls
        self._handshake_timeout_s = handshake_timeout_s
        #: True while the TLS handshake runs: nothing may be written in the clear.
        self.upgrading = False
        self._early: list[bytes] = []
        self._upgrade_task: asyncio.Task[None] | None = None
        self.framer = StreamFramer(limits)
        self.opened = now()
        #: Last SIP activity (a message or a keep-alive), for the idle timeout: bytes that do
        #: not complete a message do not count, or one byte a minute would hold a slot.
        self.last_active = self.opened
        #: Since when an incomplete message has been buffered (None: nothing is).
        self.partial_since: float | None = None
        #: A complete message (or keep-alive) was seen: the peer speaks SIP.
        self.spoke = False
        self.admitted = False

    # -- asyncio callbacks ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        if not peername:  # the peer is already gone
            transport.abort()  # type: ignore[attr-defined]
            return
        self.peer = endpoint_of(peername, self.local.transport)
        self.admitted = self._admit(self)
        if not self.admitted:
            transport.abort()  # type: ignore[attr-defined]
            return
        if self._tls is not None:
            # No byte is read in the clear: start_tls resumes reading through TLS.
            transport.pause_reading()  # type: ignore[attr-defined]
            self.upgrading = True
            # Kept: the loop holds only a weak reference to a task.
            self._upgrade_task = asyncio.get_running_loop().create_task(self._upgrade(self._tls))

    async def _upgrade(self, context: ssl.SSLContext) -> None:
        raw = self.transport
        assert raw is not None
        try:
            upgraded = await asyncio.get_running_loop().start_tls(
                raw,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._handshake_timeout_s,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError, RuntimeError):
            upgraded = None
        self.upgrading = False
        if upgraded is None:
            self.closed_by_us = "handshake_failed"
            raw.abort()
            self.connection_lost(None)  # idempotent: the slot is freed now, whoever reports
            return
        self.transport = upgraded
        # Plaintext TLS delivered before this coroutine resumed (see data_received).
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self.upgrading:
            # Decrypted bytes can arrive between the end of the handshake and the moment
            # _upgrade has the TLS transport to answer on: kept (the framer's bound applies
            # when they are replayed; a handshake leaves little room for more).
            self._early.append(data)
            if len(self._early) > MAX_EARLY_CHUNKS:
                self.close("framing", abort=True)
            return
        if self.transport is None or self.peer is None or not self.admitted:
            return
        framer = self.framer
        try:
            framer.feed(data)
            while not self.transport.is_closing():
                item = framer.next_message()
                if item is NEED_DATA:
                    break
                self.spoke = True
                self.last_active = self._now()
                if item is FramerEvent.PING:
                    self.write(b"\r\n")  # RFC 5626 §4.4.1: a pong answers a ping
                elif item is FramerEvent.PONG:
                    continue
                elif isinstance(item, bytes):
                    self._on_message(item, self.peer, self.local)
        except SipParseError as exc:
            size = framer.buffered
            self.close("framing")
            self._on_framing_error(exc, self.peer, self.local, size)
            return
        if framer.buffered == 0:
            self.partial_since = None
        elif self.partial_since is None:
            self.partial_since = self._now()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted:
            self._forget(self)
        self.admitted = False

    # -- used by the server --------------------------------------------------------------------
    #: Why the gateway closed this connection (None: the peer did, or still open).
    closed_by_us: str | None = None

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False (and the connection closed) when the peer stopped reading."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.upgrading:
            return False
        if transport.get_write_buffer_size() + len(data) > MAX_WRITE_BUFFER:
            self.close("slow_reader", abort=True)
            return False
        transport.write(data)
        return True

    def close(self, reason: str, *, abort: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.closed_by_us = reason
        if abort:
            self.transport.abort()
        else:
            self.transport.close()


class UpstreamStream:
    """The one TCP/TLS connection to the upstream, re-opened on demand."""

    def __init__(
        self,
        upstream: Endpoint,
        on_message: OnMessage,
        on_framing_error: Callable[[SipParseError, Endpoint, Endpoint, int], None],
        tls: TlsOptions,
        handshake_timeout_s: float,
        now: Callable[[], float],
        limits: ParseLimits = DEFAULT_LIMITS,
    ) -> None:
        self.upstream = upstream
        self._limits = limits
        self._on_message = on_message
        self._on_framing_error = on_framing_error
        self._context = client_context(tls) if upstream.transport is Transport.TLS else None
        self._server_name = tls.upstream_server_name or upstream.ip
        self._handshake_timeout_s = handshake_timeout_s
        self._now = now
        #: What the proxy writes into Via (the first connection's local address).
        self.identity: Endpoint | None = None
        self.connection: StreamConnection | None = None
        self._queue: deque[bytes] = deque()
        self._connecting: asyncio.Task[None] | None = None
        self._closed = False
        self.counts: Counter[str] = Counter()

    async def open(self) -> Endpoint:
        """Open the first connection; InputError naming the upstream when it cannot."""
        try:
            await self._connect()
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            where = f"{self.upstream.transport}:{_host(self.upstream.ip)}:{self.upstream.port}"
            raise InputError(where, f"cannot reach the upstream: {exc}") from None
        assert self.identity is not None
        return self.identity

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        identity = self.identity

        def factory() -> StreamConnection:
            return StreamConnection(
                identity or Endpoint("0.0.0.0", 0, self.upstream.transport),
                self._on_message,
                self._on_framing_error,
                lambda conn: True,
                self._lost,
                self._now,
                limits=self._limits,
            )

        kwargs: dict[str, Any] = {}
        if self._context is not None:
            kwargs = {
                "ssl": self._context,
                "server_hostname": self._server_name,
                "ssl_handshake_timeout": self._handshake_timeout_s,
            }
        transport, conn = await asyncio.wait_for(
            loop.create_connection(factory, self.upstream.ip, self.upstream.port, **kwargs),
            self._handshake_timeout_s * 2,
        )
        if self.identity is None:
            self.identity = endpoint_of(
                transport.get_extra_info("sockname"), self.upstream.transport
            )
        # Messages from the upstream carry the identity as their local endpoint.
        conn.local = self.identity
        self.connection = conn
        self.counts["opened"] += 1
        while self._queue and conn.write(self._queue.popleft()):
            pass

    def _lost(self, conn: StreamConnection) -> None:
        if conn is self.connection:
            self.connection = None
            self.counts["lost"] += 1

    def send(self, data: bytes) -> bool:
        """Write to the upstream, or queue while the connection is re-opened; False when the
        message had to be dropped (queue full, or the gateway is closing)."""
        conn = self.connection
        if conn is not None and conn.transport is not None and not conn.transport.is_closing():
            return conn.write(data)
        if self._closed or len(self._queue) >= MAX_UPSTREAM_QUEUE:
            return False
        self._queue.append(data)
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._reconnect())
        return True

    async def _reconnect(self) -> None:
        while not self._closed and self._queue:
            try:
                await self._connect()
                return
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                self.counts["connect_failed"] += 1
                log.warning("cannot re-open the upstream connection: %s", exc)
                await asyncio.sleep(RECONNECT_DELAY_S)

    def close(self) -> None:
        self._closed = True
        self._queue.clear()
        if self._connecting is not None:
            self._connecting.cancel()
        if self.connection is not None:
            self.connection.close("shutdown")


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip
