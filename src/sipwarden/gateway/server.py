"""The asyncio adapter of ``sipwarden gateway``: UDP sockets around the sans-IO proxy core.

Thin by design (design.md §2.2): a datagram is read, handed to
:meth:`~sipwarden.gateway.proxy.StatelessProxy.on_datagram` with the wall clock as packet time,
and the returned :class:`~sipwarden.gateway.proxy.Send` actions are written. One socket per
``--listen`` endpoint (the untrusted side) and one socket *connected* to the upstream, so the
kernel itself discards datagrams on it that do not come from the upstream. A timer calls the
engine's ``advance(now)`` once a second so windows close without traffic. SIGINT/SIGTERM stop
the loop after the datagram in hand; the sockets are closed in ``finally``.

Metrics (``metrics=`` / ``metrics_address=``): the proxy's counters and the state sizes are read
at scrape time (:mod:`sipwarden.observability`); the only per-datagram cost is the added-latency
histogram, observed for datagrams that caused a send (~0.65 us here: two ``perf_counter`` calls
and ``Histogram.observe``). ``/metrics`` is served on the same loop.

Receive buffer: Python 3.11's selector UDP transport calls ``recvfrom(max_size)`` with a class
default of 256 KiB, allocating that much per datagram before shrinking it. A UDP payload is at
most 65,507 bytes (IPv4) and SIP over UDP stays far below (RFC 3261 §18.1.1 moves requests over
1,300 bytes to TCP), so each transport's ``max_size`` is lowered to 65,535 bytes
(``RECV_MAX``). Measured here (Python 3.11.7, loopback, 500-byte datagrams, 50,000 reads):
``recvfrom(262144)`` 8.6-10.3 us per call, ``recvfrom(65535)`` 0.6-0.9 us - over ten times
cheaper (a 256 KiB buffer is above glibc's mmap threshold, so each read maps and unmaps it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sipwarden.detect.engine import Engine
from sipwarden.errors import InputError
from sipwarden.gateway.enforcer import Enforcer
from sipwarden.gateway.proxy import (
    Outgoing,
    PolicyFn,
    ProxyConfig,
    Send,
    StatelessProxy,
)
from sipwarden.gateway.streams import (
    StreamConnection,
    UpstreamStream,
    endpoint_of,
    server_context,
)
from sipwarden.gateway.verdict import DropReason
from sipwarden.net import Endpoint, Transport, parse_host_port
from sipwarden.observability import GatewayMetrics, MetricsServer, StateHolder, serve_metrics
from sipwarden.sip import SipParseError

__all__ = ["RECV_MAX", "GatewayServer", "StreamOptions", "TlsOptions", "parse_address"]

log = logging.getLogger(__name__)

#: Largest datagram read; above any UDP payload (see the module docstring).
RECV_MAX = 65535
#: How often the engine is told that time passed (seconds).
ADVANCE_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """TLS on either side (``tls:`` addresses). TLS 1.2 is the floor (RFC 8996, FS.38)."""

    #: Certificate chain and private key (PEM) the gateway presents on its ``tls:`` listen
    #: endpoints; required when one is configured.
    cert: Path | None = None
    key: Path | None = None
    #: CA bundle (PEM) the upstream's certificate must chain to for a ``tls:`` upstream; None:
    #: the system's CAs. The certificate is always verified.
    upstream_ca: Path | None = None
    #: Name checked against the upstream's certificate (and sent as SNI); None: the upstream IP.
    upstream_server_name: str | None = None


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """Bounds of the TCP/TLS side: an attacker opens connections for free."""

    #: Close a connection idle this long, seconds (Kamailio ``tcp_connection_lifetime`` 120 s;
    #: RFC 5626 §4.4.1 clients send keep-alives every 95-120 s, so a flow that keeps itself
    #: alive stays open).
    idle_timeout_s: float = 300.0
    #: Most concurrent connections from the untrusted side (Kamailio ``tcp_max_connections``
    #: 2048); above it new ones are closed at once and counted.
    max_connections: int = 2048
    #: Most concurrent connections from one source IP (a NAT shares one IP among many phones;
    #: one attacker must not take every slot).
    max_connections_per_source: int = 64
    #: A TLS handshake, and the first SIP message (or keep-alive) of a connection, must
    #: complete within this (slowloris).
    handshake_timeout_s: float = 5.0


_TRANSPORTS = {"udp": Transport.UDP, "tcp": Transport.TCP, "tls": Transport.TLS}


def parse_address(text: str) -> Endpoint:
    """``udp|tcp|tls:IP:PORT`` (IPv6 in brackets) → Endpoint; InputError naming the text."""
    scheme, sep, rest = text.partition(":")
    transport = _TRANSPORTS.get(scheme.lower()) if sep else None
    if transport is None:
        raise InputError(text, "expected udp:IP:PORT, tcp:IP:PORT or tls:IP:PORT (IPv6 in [])")
    ip, port = parse_host_port(rest, scheme=f"{transport}:", source=text)
    return Endpoint(ip, port, transport)


def _endpoint(addr: Any) -> Endpoint:
    """asyncio's (host, port[, flow, scope]) as an Endpoint with canonical IP text."""
    return Endpoint(str(ipaddress.ip_address(addr[0])), int(addr[1]), Transport.UDP)


class _Side(asyncio.DatagramProtocol):
    def __init__(self, server: GatewayServer) -> None:
        self.server = server
        self.local: Endpoint | None = None
        #: Datagrams read on this socket (for ``sipwarden_gateway_received_total``).
        self.received = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1
        if self.local is not None:
            self.server.on_datagram(data, _endpoint(addr), self.local)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that went away: counted, never fatal.
        self.server.socket_errors += 1


@dataclass
class _Bound:
    transport: asyncio.DatagramTransport
    connected: bool


class GatewayServer:
    """Binds the sockets, runs the proxy core, stops on a signal or after ``duration``."""

    def __init__(
        self,
        listen: list[Endpoint],
        upstream: Endpoint,
        engine: Engine | None = None,
        policy: PolicyFn | None = None,
        outgoing: Outgoing | None = None,
        *,
        secret: bytes | None = None,
        fail_open: bool = False,
        on_tick: Callable[[float], None] | None = None,
        metrics: GatewayMetrics | None = None,
        metrics_address: tuple[str, int] | None = None,
        reuse_port: bool = False,
        tls: TlsOptions | None = None,
        streams: StreamOptions | None = None,
        on_reload: Callable[[], None] | None = None,
    ) -> None:
        self.listen = listen
        self.upstream = upstream
        self.engine = engine
        self.policy = policy
        self.outgoing = outgoing
        self.secret = secret if secret is not None else os.urandom(32)
        self.fail_open = fail_open
        #: Called with the wall clock at start and every tick (the CLI mirrors the shared
        #: blocklist through it).
        self.on_tick = on_tick
        #: Prometheus metrics (None: nothing observed per datagram); served on
        #: ``metrics_address`` when that is given.
        if metrics is None and metrics_address is not None:
            metrics = GatewayMetrics()
        self.metrics = metrics
        self.metrics_address = metrics_address
        self.metrics_server: MetricsServer | None = None
        #: SO_REUSEPORT on every listen socket, so ``--workers N`` processes share the port.
        self.reuse_port = reuse_port
        self.tls = tls if tls is not None else TlsOptions()
        self.streams = streams if streams is not None else StreamOptions()
        #: Called on SIGHUP (the CLI re-reads its config and calls :meth:`reconfigure`).
        self.on_reload = on_reload
        self._sides: list[_Side] = []
        self.proxy: StatelessProxy | None = None
        self.socket_errors = 0
        self.internal_errors = 0
        self._tick_failing = False
        self._bound: dict[Endpoint, _Bound] = {}
        self._up_side: _Side | None = None
        self._listen_bound: list[Endpoint] = []
        self._listeners: list[asyncio.Server] = []
        self._up_stream: UpstreamStream | None = None
        #: Open TCP/TLS connections from the untrusted side, by (listen endpoint, peer IP,
        #: peer port), and how many each source IP holds.
        self._conns: dict[tuple[Endpoint, str, int], StreamConnection] = {}
        self._per_source: Counter[str] = Counter()
        #: Framed stream messages read, by side.
        self.stream_received: Counter[str] = Counter()
        #: Connections refused on accept, and closed by the gateway, by reason.
        self.connections_refused: Counter[str] = Counter()
        self.connections_closed: Counter[str] = Counter()
        self._stop: asyncio.Event | None = None

    # -- sockets -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind every socket, reach the upstream and build the proxy; InputError when one
        cannot be bound or reached (or a TLS certificate cannot be loaded)."""
        try:
            listen = [await self._listen_on(endpoint) for endpoint in self.listen]
            upstream_local = await self._reach_upstream()
            if self.metrics is not None and self.metrics_address is not None:
                host, port = self.metrics_address
                self.metrics_server = await serve_metrics(self.metrics, host, port)
        except BaseException:
            self.close()
            raise
        self._listen_bound = listen
        config = ProxyConfig(
            listen=tuple(listen),
            upstream=self.upstream,
            upstream_local=upstream_local,
            secret=self.secret,
            fail_open=self.fail_open,
        )
        self.proxy = StatelessProxy(config, self.engine, self.policy, self.outgoing)
        if self.metrics is not None:
            self._attach_metrics(self.metrics)

    async def _listen_on(self, endpoint: Endpoint) -> Endpoint:
        loop = asyncio.get_running_loop()
        reuse_port = self.reuse_port or None
        try:
            if endpoint.transport is Transport.UDP:
                side = _Side(self)
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: side,
                    local_addr=(endpoint.ip, endpoint.port),
                    family=_family(endpoint),
                    reuse_port=reuse_port,
                )
                side.local = _bound_endpoint(transport)
                self._sides.append(side)
                self._add(side.local, transport, connected=False)
                return side.local
            context = (
                server_context(self.tls, _text(endpoint))
                if endpoint.transport is Transport.TLS
                else None
            )
            local_box: list[Endpoint] = []
            server = await loop.create_server(
                lambda: self._connection(local_box[0]),
                endpoint.ip,
                endpoint.port,
                family=_family(endpoint),
                reuse_port=reuse_port,
                ssl=context,
                ssl_handshake_timeout=self.streams.handshake_timeout_s if context else None,
                backlog=min(self.streams.max_connections, 4096),
            )
        except OSError as exc:
            raise InputError(_text(endpoint), f"cannot listen: {exc.strerror or exc}") from exc
        bound = endpoint_of(server.sockets[0].getsockname(), endpoint.transport)
        local_box.append(bound)
        self._listeners.append(server)
        return bound

    async def _reach_upstream(self) -> Endpoint:
        if self.upstream.transport is not Transport.UDP:
            self._up_stream = UpstreamStream(
                self.upstream,
                self._on_stream_message,
                self._on_framing_error,
                self.tls,
                self.streams.handshake_timeout_s,
                time.monotonic,
            )
            return await self._up_stream.open()
        loop = asyncio.get_running_loop()
        up_side = _Side(self)
        try:
            up_transport, _ = await loop.create_datagram_endpoint(
                lambda: up_side,
                remote_addr=(self.upstream.ip, self.upstream.port),
                family=_family(self.upstream),
            )
        except OSError as exc:
            raise InputError(
                _text(self.upstream), f"cannot reach the upstream: {exc.strerror or exc}"
            ) from exc
        assert up_side.local is None
        up_side.local = _bound_endpoint(up_transport)
        self._sides.append(up_side)
        self._add(up_side.local, up_transport, connected=True)
        self._up_side = up_side
        return up_side.local

    def _connection(self, local: Endpoint) -> StreamConnection:
        return StreamConnection(
            local,
            self._on_stream_message,
            self._on_framing_error,
            self._admit,
            self._forget,
            time.monotonic,
        )

    def _attach_metrics(self, metrics: GatewayMetrics) -> None:
        # Read at scrape time: the proxy's own counters, nothing counted twice.
        state: dict[str, StateHolder] = {}
        if self.engine is not None:
            state["engine"] = _EngineOwn(self.engine)
            state["tracker"] = self.engine.tracker
        if isinstance(self.policy, Enforcer):
            state["policy"] = self.policy.policy
            state["blocklist"] = self.policy.store
        metrics.attach(
            stats=lambda: self.proxy.stats if self.proxy is not None else None,
            received=self.received_counts,
            errors=lambda: {"socket": self.socket_errors, "internal": self.internal_errors},
            state=state,
        )

    def received_counts(self) -> dict[str, int]:
        """Messages read, by side (datagrams and framed stream messages)."""
        up = self._up_side
        return {
            "outside": sum(s.received for s in self._sides if s is not up)
            + self.stream_received["outside"],
            "upstream": (up.received if up is not None else 0) + self.stream_received["upstream"],
        }

    def connection_counts(self) -> dict[str, int]:
        """Open TCP/TLS connections, by side."""
        up = self._up_stream
        return {
            "outside": len(self._conns),
            "upstream": int(up is not None and up.connection is not None),
        }

    @property
    def metrics_port(self) -> int | None:
        """The port ``/metrics`` is served on (resolved when 0 was asked), None when off."""
        return self.metrics_server.port if self.metrics_server is not None else None

    def _add(self, local: Endpoint, transport: asyncio.BaseTransport, connected: bool) -> None:
        # Python 3.11's selector transport is not a DatagramTransport subclass; it has sendto.
        datagram = cast(asyncio.DatagramTransport, transport)
        # See the module docstring: 256 KiB per recvfrom otherwise.
        if hasattr(datagram, "max_size"):
            datagram.max_size = RECV_MAX
        self._bound[local] = _Bound(datagram, connected)

    @property
    def local_endpoints(self) -> list[Endpoint]:
        """Where the listen sockets are bound (ports resolved when 0 was asked)."""
        return list(self._listen_bound)

    def close(self) -> None:
        for bound in self._bound.values():
            bound.transport.close()
        for listener in self._listeners:
            listener.close()
        for conn in list(self._conns.values()):
            conn.close("shutdown")
        if self._up_stream is not None:
            self._up_stream.close()
        if self.metrics_server is not None:
            self.metrics_server.close()

    # -- connections ---------------------------------------------------------------------------
    def _admit(self, conn: StreamConnection) -> bool:
        """Whether a new connection from the untrusted side may stay (bounds, blocklist)."""
        peer = conn.peer
        assert peer is not None
        is_blocked = getattr(self.policy, "is_blocked", None)
        if callable(is_blocked) and is_blocked(peer.ip, time.time()):
            reason = "blocklisted"
        elif len(self._conns) >= self.streams.max_connections:
            reason = "max_connections"
        elif self._per_source[peer.ip] >= self.streams.max_connections_per_source:
            reason = "max_connections_per_source"
        else:
            self._conns[(conn.local, peer.ip, peer.port)] = conn
            self._per_source[peer.ip] += 1
            return True
        self.connections_refused[reason] += 1
        return False

    def _forget(self, conn: StreamConnection) -> None:
        peer = conn.peer
        assert peer is not None
        if self._conns.get((conn.local, peer.ip, peer.port)) is conn:
            del self._conns[(conn.local, peer.ip, peer.port)]
            left = self._per_source[peer.ip] - 1
            if left > 0:
                self._per_source[peer.ip] = left
            else:
                del self._per_source[peer.ip]
        if conn.closed_by_us is not None:
            self.connections_closed[conn.closed_by_us] += 1

    def _sweep(self, now: float) -> None:
        """Close idle connections, and those that said nothing SIP in time (slowloris)."""
        idle, silent = self.streams.idle_timeout_s, self.streams.handshake_timeout_s
        for conn in list(self._conns.values()):
            if now - conn.last_active > idle:
                conn.close("idle")
            elif not conn.spoke and now - conn.opened > silent:
                conn.close("silent")

    def _on_stream_message(self, data: bytes, src: Endpoint, local: Endpoint) -> None:
        side = "upstream" if src == self.upstream else "outside"
        self.stream_received[side] += 1
        self.on_datagram(data, src, local)

    def _on_framing_error(
        self, error: SipParseError, src: Endpoint, local: Endpoint, size: int
    ) -> None:
        if self.proxy is None:
            return
        try:
            self.proxy.on_framing_error(error, src, local, time.time(), size)
        except Exception:
            self.internal_errors += 1
            log.exception("proxy core raised on a framing error from %s", src)

    # -- traffic -------------------------------------------------------------------------------
    def on_datagram(self, data: bytes, src: Endpoint, local: Endpoint) -> None:
        if self.proxy is None:
            return
        started = time.perf_counter()
        try:
            actions = self.proxy.on_datagram(data, src, local, time.time())
        except Exception:  # a bug in the core: one datagram lost, the gateway keeps running
            self.internal_errors += 1
            log.exception("proxy core raised on a datagram from %s", src)
            return
        for action in actions:
            self._send(action)
        if actions and self.metrics is not None:
            self.metrics.latency.observe(time.perf_counter() - started)

    def _send(self, action: Send) -> None:
        local = action.local
        if local.transport is Transport.UDP:
            bound = self._bound.get(local)
            if bound is None:
                return
            if bound.connected:
                bound.transport.sendto(action.data)
            else:
                bound.transport.sendto(action.data, (action.dest.ip, action.dest.port))
            return
        if self._up_stream is not None and action.dest == self.upstream:
            if not self._up_stream.send(action.data):
                self._undelivered()
            return
        conn = self._conns.get((local, action.dest.ip, action.dest.port))
        if conn is None or not conn.write(action.data):
            self._undelivered()

    def _undelivered(self) -> None:
        """A message for a connection that is gone (or a peer that stopped reading): the
        proxy counted it forwarded; it is counted again as dropped, no route."""
        if self.proxy is not None:
            self.proxy.stats.drop(DropReason.NO_ROUTE)

    def reconfigure(
        self,
        *,
        engine: Engine | None = None,
        policy: PolicyFn | None = None,
        outgoing: Outgoing | None = None,
    ) -> None:
        """Swap the engine, the policy and/or the outgoing edit between two messages (SIGHUP
        reload): the sockets, connections and the proxy's counters stay."""
        if engine is not None:
            self.engine = engine
        if policy is not None:
            self.policy = policy
        if outgoing is not None:
            self.outgoing = outgoing
        if self.proxy is not None:
            if engine is not None:
                self.proxy.engine = engine
            if policy is not None:
                self.proxy.policy = policy
            if outgoing is not None:
                self.proxy.outgoing = outgoing
        if self.metrics is not None and self.proxy is not None:
            self._attach_metrics(self.metrics)

    def _reload(self) -> None:
        if self.on_reload is None:
            return
        try:
            self.on_reload()
        except Exception:  # a bad new config: keep serving with the old one
            self.internal_errors += 1
            log.exception("reload failed; the previous configuration stays in force")

    # -- lifecycle -----------------------------------------------------------------------------
    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    async def run(self, duration: float | None = None) -> None:
        """Serve until SIGINT/SIGTERM, :meth:`stop` or ``duration`` seconds have passed."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self.proxy is None:
            await self.start()
        handled: list[signal.Signals] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
                handled.append(sig)
        if self.on_reload is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGHUP, self._reload)
                handled.append(signal.SIGHUP)
        self._tick(time.time())
        ticker = asyncio.create_task(self._advance_forever())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), duration)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            for sig in handled:
                loop.remove_signal_handler(sig)
            self.close()
            if self.metrics_server is not None:
                await self.metrics_server.wait_closed()

    async def _advance_forever(self) -> None:
        while True:
            await asyncio.sleep(ADVANCE_EVERY_S)
            now = time.time()
            self._sweep(time.monotonic())
            if self.proxy is not None:
                try:
                    self.proxy.advance(now)
                except Exception:
                    self.internal_errors += 1
                    log.exception("advancing the engine or the policy raised")
            self._tick(now)

    def _tick(self, now: float) -> None:
        if self.on_tick is None:
            return
        try:
            self.on_tick(now)
        except Exception:  # e.g. the shared blocklist is locked or gone: keep serving
            # Counted every tick, logged once per episode: a broken database file would
            # otherwise write a traceback a second. The last good copy keeps applying.
            self.internal_errors += 1
            if not self._tick_failing:
                log.exception("the periodic task raised (logged once until it recovers)")
            self._tick_failing = True
        else:
            if self._tick_failing:
                log.warning("the periodic task recovered")
            self._tick_failing = False


class _EngineOwn:
    """The engine's state without its tracker's (exported separately, so sums do not count the
    tracker twice)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def state_size(self) -> int:
        return self.engine.state_size() - self.engine.tracker.state_size()

    def evictions(self) -> int:
        return self.engine.evictions() - self.engine.tracker.evictions()


def _family(endpoint: Endpoint) -> socket.AddressFamily:
    version = ipaddress.ip_address(endpoint.ip).version
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def _bound_endpoint(transport: asyncio.BaseTransport) -> Endpoint:
    return _endpoint(transport.get_extra_info("sockname"))


def _text(endpoint: Endpoint) -> str:
    host = f"[{endpoint.ip}]" if ":" in endpoint.ip else endpoint.ip
    return f"{endpoint.transport}:{host}:{endpoint.port}"
