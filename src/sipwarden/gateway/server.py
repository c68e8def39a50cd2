"""The asyncio adapter of ``sipwarden gateway``: sockets around the sans-IO proxy core.

Thin by design (design.md §2.2): a message is read, handed to
:meth:`~sipwarden.gateway.proxy.StatelessProxy.on_datagram` with the wall clock as packet time,
and the returned :class:`~sipwarden.gateway.proxy.Send` actions are written. One socket per
``--listen`` endpoint (the untrusted side; UDP here, TCP/TLS in :mod:`.streams`) and one
socket *connected* to the upstream, so the kernel itself discards datagrams on it that do not
come from the upstream. A timer calls the engine's ``advance(now)`` once a second so windows
close without traffic, and closes idle TCP/TLS connections. SIGINT/SIGTERM stop the loop after
the message in hand; SIGHUP calls ``on_reload``; the sockets are closed in ``finally``.

UDP is read without asyncio's datagram transport: each readable socket is drained in bursts of
``READ_BURST`` non-blocking ``recvfrom(RECV_MAX)`` calls into two queues, and a drain callback
inspects them between reads:

* the **upstream lane** holds the upstream's datagrams (answers to calls in progress; its
  socket is connected, so they cannot be forged), all inspected first and never shed;
* the **priority lane** holds those of the policy's trusted peers (the SBC/trunk that must
  keep working), inspected next within the pass's time budget;
* the **backlog** holds everyone else's, at most ``MAX_BACKLOG``; once full, new datagrams
  are *shed* before inspection - counted as dropped ``overload``, never answered (an answer
  would cost what we are short of). Inspection takes ~0.2-0.3 ms a message in pure Python, and
  reading ~2 us, so under a spoofed-source flood the gateway reads everything, sheds the
  surplus cheaply and keeps inspecting trusted traffic instead of letting the kernel's socket
  buffer drop packets blindly (issue 4: an allow-listed client's REGISTERs still succeed under
  a flood at the saturation rate). A source address is spoofable over UDP: a flood forged from
  a trusted peer's address gets the lane too (bounded by ``MAX_PRIORITY``) and is still
  inspected; trunks that must not share that risk belong on TCP/TLS.

Receive buffer: Python 3.11's selector UDP transport calls ``recvfrom(max_size)`` with a class
default of 256 KiB, allocating that much per datagram before shrinking it (8.6-10.3 us a call
here, against 0.6-0.9 us for 64 KiB: a 256 KiB buffer is above glibc's mmap threshold). A UDP
payload is at most 65,507 bytes (IPv4) and SIP over UDP stays far below (RFC 3261 §18.1.1
moves requests over 1,300 bytes to TCP), so reads ask for 65,535 bytes (``RECV_MAX``).

Metrics (``metrics=`` / ``metrics_address=``): the proxy's counters and the state sizes are read
at scrape time (:mod:`sipwarden.observability`); the only per-message cost is the added-latency
histogram (from the read to the send, queueing included), observed for messages that caused a
send. ``/metrics`` is served on the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import signal
import socket
import ssl
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sipwarden.detect.engine import Engine
from sipwarden.errors import InputError
from sipwarden.gateway.enforcer import Enforcer
from sipwarden.gateway.proxy import (
    UPSTREAM_LIMITS,
    Incoming,
    Outgoing,
    PathMode,
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
from sipwarden.observability import (
    ConnectionCounts,
    GatewayMetrics,
    MetricsServer,
    StateHolder,
    serve_metrics,
)
from sipwarden.sip import SipParseError

__all__ = [
    "RECV_MAX",
    "GatewayServer",
    "StreamOptions",
    "TlsOptions",
    "parse_address",
    "tune_gc",
]

log = logging.getLogger(__name__)

#: Largest datagram read; above any UDP payload (see the module docstring).
RECV_MAX = 65535
#: Receive buffer asked for on listen sockets: ~4,000 typical SIP datagrams, ~0.2 s of a flood
#: at 20,000/s (the kernel's default, 208 KiB, holds ~10 ms of it).
RECV_BUFFER = 4 << 20
#: Datagrams read from one socket per readiness event (a burst; then the loop moves on).
READ_BURST = 64
#: Inspection time per pass over the backlog before the loop reads again (seconds).
DRAIN_BUDGET_S = 0.002
#: Datagrams from the upstream waiting for inspection: all are inspected on every pass, so this
#: only bounds memory if the core floods the gateway itself.
MAX_UPSTREAM_QUEUE = 16384
#: Datagrams from trusted peers waiting for inspection (a source forged from a trusted address
#: can fill it; beyond it they are shed too).
MAX_PRIORITY = 4096
#: Other datagrams waiting for inspection: about 60 ms of work at full inspection, so an
#: answer that waits in it is still useful; beyond it new datagrams are shed (``overload``).
MAX_BACKLOG = 256
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


class _Udp:
    """One UDP socket, read in bursts by :meth:`GatewayServer._read_ready`."""

    __slots__ = ("connected", "local", "received", "sock", "upstream")

    def __init__(self, sock: socket.socket, local: Endpoint, upstream: bool) -> None:
        self.sock = sock
        self.local = local
        #: The socket connected to the upstream (the kernel drops datagrams from elsewhere).
        self.upstream = upstream
        self.connected = upstream
        #: Datagrams read on this socket (for ``sipwarden_gateway_received_total``).
        self.received = 0


#: (datagram, source, local endpoint, read time from perf_counter)
_Queued = tuple[bytes, Endpoint, Endpoint, float]


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
        incoming: Incoming | None = None,
        secret: bytes | None = None,
        fail_open: bool = False,
        on_tick: Callable[[float], None] | None = None,
        metrics: GatewayMetrics | None = None,
        metrics_address: tuple[str, int] | None = None,
        reuse_port: bool = False,
        tls: TlsOptions | None = None,
        streams: StreamOptions | None = None,
        on_reload: Callable[[], None] | None = None,
        path: PathMode = "always",
    ) -> None:
        self.listen = listen
        self.upstream = upstream
        self.engine = engine
        self.policy = policy
        self.outgoing = outgoing
        self.incoming = incoming
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
        #: When REGISTERs get the gateway's Path entry (ProxyConfig.path).
        self.path: PathMode = path
        #: Called on SIGHUP (the CLI re-reads its config and calls :meth:`reconfigure`).
        self.on_reload = on_reload
        self._udp: dict[Endpoint, _Udp] = {}
        #: Read but not yet inspected, in three lanes: the upstream's (never shed), trusted
        #: peers', and the rest (bounded: beyond it datagrams are shed, see the module doc).
        self._upstream_lane: deque[_Queued] = deque()
        self._priority: deque[_Queued] = deque()
        self._backlog: deque[_Queued] = deque()
        self._drain_pending = False
        self._trusted: Callable[[str], bool] | None = None
        self.max_backlog = MAX_BACKLOG
        #: Datagrams shed unread by the inspection because the backlog was full.
        self.shed = 0
        self.proxy: StatelessProxy | None = None
        self.socket_errors = 0
        self.internal_errors = 0
        self._tick_failing = False
        self._listen_bound: list[Endpoint] = []
        self._listeners: list[asyncio.Server] = []
        self._up_stream: UpstreamStream | None = None
        #: Open TCP/TLS connections from the untrusted side, by (listen endpoint, peer IP,
        #: peer port), and how many each source holds (IPv4 address, IPv6 /64).
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
            path=self.path,
        )
        self.proxy = StatelessProxy(config, self.engine, self.policy, self.outgoing, self.incoming)
        self._trusted = _trusted_of(self.policy)
        if self.metrics is not None:
            self._attach_metrics(self.metrics)

    async def _listen_on(self, endpoint: Endpoint) -> Endpoint:
        loop = asyncio.get_running_loop()
        reuse_port = self.reuse_port or None
        try:
            if endpoint.transport is Transport.UDP:
                return self._bind_udp(endpoint)
            context = (
                server_context(self.tls, _text(endpoint))
                if endpoint.transport is Transport.TLS
                else None
            )
            local_box: list[Endpoint] = []
            # TLS is started per connection once it is admitted (see streams.StreamConnection).
            server = await loop.create_server(
                lambda: self._connection(local_box[0], context),
                endpoint.ip,
                endpoint.port,
                family=_family(endpoint),
                reuse_port=reuse_port,
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
                UPSTREAM_LIMITS,
            )
            return await self._up_stream.open()
        try:
            sock = socket.socket(_family(self.upstream), socket.SOCK_DGRAM)
        except OSError as exc:
            raise InputError(_text(self.upstream), f"cannot open a socket: {exc}") from exc
        try:
            sock.setblocking(False)
            sock.connect((self.upstream.ip, self.upstream.port))
        except OSError as exc:
            sock.close()
            raise InputError(
                _text(self.upstream), f"cannot reach the upstream: {exc.strerror or exc}"
            ) from exc
        return self._watch(sock, upstream=True)

    def _bind_udp(self, endpoint: Endpoint) -> Endpoint:
        sock = socket.socket(_family(endpoint), socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if self.reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            # Room for a burst while the loop is busy (a collection, a slow message); the
            # kernel caps it at net.core.rmem_max.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            sock.bind((endpoint.ip, endpoint.port))
        except OSError:
            sock.close()
            raise
        return self._watch(sock, upstream=False)

    def _watch(self, sock: socket.socket, *, upstream: bool) -> Endpoint:
        local = _endpoint(sock.getsockname(), Transport.UDP)
        udp = _Udp(sock, local, upstream)
        self._udp[local] = udp
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read_ready, udp)
        return local

    def _connection(self, local: Endpoint, tls: ssl.SSLContext | None) -> StreamConnection:
        return StreamConnection(
            local,
            self._on_stream_message,
            self._on_framing_error,
            self._admit,
            self._forget,
            time.monotonic,
            tls=tls,
            handshake_timeout_s=self.streams.handshake_timeout_s,
        )

    def _attach_metrics(self, metrics: GatewayMetrics) -> None:
        # Read at scrape time: the proxy's own counters, nothing counted twice.
        state: dict[str, StateHolder] = {}
        if self.proxy is not None:
            state["proxy"] = self.proxy
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
            connections=self._connection_metrics if self._has_streams() else None,
        )

    def _has_streams(self) -> bool:
        return bool(self._listeners) or self._up_stream is not None

    def _connection_metrics(self) -> ConnectionCounts:
        return ConnectionCounts(
            self.connection_counts(),
            dict(self.connections_refused),
            dict(self.connections_closed),
        )

    def received_counts(self) -> dict[str, int]:
        """Messages read, by side (datagrams and framed stream messages)."""
        udp = self._udp.values()
        return {
            "outside": sum(u.received for u in udp if not u.upstream)
            + self.stream_received["outside"],
            "upstream": sum(u.received for u in udp if u.upstream)
            + self.stream_received["upstream"],
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

    @property
    def local_endpoints(self) -> list[Endpoint]:
        """Where the listen sockets are bound (ports resolved when 0 was asked)."""
        return list(self._listen_bound)

    def close(self) -> None:
        for udp in self._udp.values():
            with contextlib.suppress(RuntimeError, ValueError):  # loop already closed
                asyncio.get_running_loop().remove_reader(udp.sock.fileno())
            udp.sock.close()
        self._udp.clear()
        self._upstream_lane.clear()
        self._priority.clear()
        self._backlog.clear()
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
        elif self._per_source[_source_key(peer.ip)] >= self.streams.max_connections_per_source:
            reason = "max_connections_per_source"
        else:
            self._conns[(conn.local, peer.ip, peer.port)] = conn
            self._per_source[_source_key(peer.ip)] += 1
            return True
        self.connections_refused[reason] += 1
        return False

    def _forget(self, conn: StreamConnection) -> None:
        peer = conn.peer
        assert peer is not None
        if self._conns.get((conn.local, peer.ip, peer.port)) is conn:
            del self._conns[(conn.local, peer.ip, peer.port)]
            key = _source_key(peer.ip)
            left = self._per_source[key] - 1
            if left > 0:
                self._per_source[key] = left
            else:
                del self._per_source[key]
        if conn.closed_by_us is not None:
            self.connections_closed[conn.closed_by_us] += 1

    def _sweep(self, now: float) -> None:
        """Close idle connections, those that said nothing SIP in time, and those that keep a
        message incomplete longer than that (slowloris, a byte at a time)."""
        idle, silent = self.streams.idle_timeout_s, self.streams.handshake_timeout_s
        for conn in list(self._conns.values()):
            if now - conn.last_active > idle:
                conn.close("idle")
            elif not conn.spoke and now - conn.opened > silent:
                conn.close("silent")
            elif conn.partial_since is not None and now - conn.partial_since > silent:
                conn.close("incomplete")

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
    def _read_ready(self, udp: _Udp) -> None:
        """Read up to ``READ_BURST`` datagrams and queue them; the upstream's and trusted
        peers' go to the priority lane, the rest to a bounded backlog that sheds under load."""
        sock = udp.sock
        local = udp.local
        trusted = self._trusted
        upstream, priority, backlog = self._upstream_lane, self._priority, self._backlog
        now = time.perf_counter
        for _ in range(READ_BURST):
            try:
                data, addr = sock.recvfrom(RECV_MAX)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ICMP port unreachable from a peer that went away
                self.socket_errors += 1
                continue
            udp.received += 1
            src = _endpoint(addr, Transport.UDP)
            if udp.upstream:
                # The core's own traffic (a connected socket: not spoofable) is never shed
                # behind a flood, whatever it claims; bounded all the same.
                if len(upstream) < MAX_UPSTREAM_QUEUE:
                    upstream.append((data, src, local, now()))
                    continue
            elif trusted is not None and trusted(src.ip):
                if len(priority) < MAX_PRIORITY:
                    priority.append((data, src, local, now()))
                    continue
            elif len(backlog) < self.max_backlog:
                backlog.append((data, src, local, now()))
                continue
            self.shed += 1
            if self.proxy is not None:
                self.proxy.stats.received += 1
                self.proxy.stats.drop(DropReason.OVERLOAD)
        if not self._drain_pending and (upstream or priority or backlog):
            self._drain_pending = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _drain(self) -> None:
        """Inspect queued datagrams: the upstream's all, then for about ``DRAIN_BUDGET_S``
        the trusted peers' and then the backlog; then let the loop read again."""
        self._drain_pending = False
        upstream, priority, backlog = self._upstream_lane, self._priority, self._backlog
        while upstream:
            self._process(*upstream.popleft())
        clock = time.perf_counter
        deadline = clock() + DRAIN_BUDGET_S
        while priority and clock() < deadline:
            self._process(*priority.popleft())
        while backlog and clock() < deadline:
            self._process(*backlog.popleft())
        if (priority or backlog) and not self._drain_pending:
            self._drain_pending = True
            asyncio.get_running_loop().call_soon(self._drain)

    def _process(self, data: bytes, src: Endpoint, local: Endpoint, read_at: float) -> None:
        if self.proxy is None:
            return
        try:
            actions = self.proxy.on_datagram(data, src, local, time.time())
        except Exception:  # a bug in the core: one datagram lost, the gateway keeps running
            self.internal_errors += 1
            self.proxy.stats.drop(DropReason.ENGINE_ERROR)
            log.exception("proxy core raised on a datagram from %s", src)
            return
        for action in actions:
            self._send(action)
        if actions and self.metrics is not None:
            # Added latency as the sender sees it: queueing included.
            self.metrics.latency.observe(time.perf_counter() - read_at)

    def on_datagram(self, data: bytes, src: Endpoint, local: Endpoint) -> None:
        """Inspect one message now (stream messages, and tests)."""
        self._process(data, src, local, time.perf_counter())

    def _send(self, action: Send) -> None:
        local = action.local
        if local.transport is Transport.UDP:
            udp = self._udp.get(local)
            if udp is None:
                return
            try:
                if udp.connected:
                    udp.sock.send(action.data)
                else:
                    udp.sock.sendto(action.data, (action.dest.ip, action.dest.port))
            except OSError:  # buffer full (EAGAIN), or ICMP unreachable reported late
                self.socket_errors += 1
                self._undelivered()
            return
        if self._up_stream is not None and action.dest == self.upstream:
            if not self._up_stream.send(action.data):
                self._undelivered()
            return
        conn = self._conns.get((local, action.dest.ip, action.dest.port))
        if conn is None or not conn.write(action.data):
            self._undelivered()

    def _undelivered(self) -> None:
        """A message the proxy counted as forwarded that could not be sent: its connection
        is gone, the peer stopped reading, or the send failed."""
        if self.proxy is not None:
            self.proxy.stats.undelivered += 1

    def reconfigure(
        self,
        *,
        engine: Engine | None = None,
        policy: PolicyFn | None = None,
        outgoing: Outgoing | None = None,
        incoming: Incoming | None = None,
    ) -> None:
        """Swap the engine, the policy and/or the outgoing/incoming edits between two
        messages (SIGHUP reload): the sockets, connections and the proxy's counters stay."""
        self.engine = engine if engine is not None else self.engine
        self.policy = policy if policy is not None else self.policy
        self.outgoing = outgoing if outgoing is not None else self.outgoing
        self.incoming = incoming if incoming is not None else self.incoming
        self._trusted = _trusted_of(self.policy)
        proxy = self.proxy
        if proxy is not None:
            proxy.engine, proxy.outgoing, proxy.incoming = self.engine, self.outgoing, self.incoming
            if self.policy is not None:
                proxy.policy = self.policy
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

    async def run(
        self, duration: float | None = None, *, block_signals_after: bool = False
    ) -> None:
        """Serve until SIGINT/SIGTERM, :meth:`stop` or ``duration`` seconds have passed.
        ``block_signals_after``: the handled signals are blocked before their handlers go and
        stay blocked (a command that still has a report to write must not be ended by a
        signal arriving while it shuts down; it exits right after)."""
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
            if block_signals_after and handled:
                signal.pthread_sigmask(signal.SIG_BLOCK, handled)
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


def tune_gc() -> None:
    """Make the garbage collector's pauses rarer for a long-running gateway (call once the
    server has started). A full collection walks every tracked object - the detectors' tables
    hold hundreds of thousands - and stops the loop for 80-120 ms here (bench/gateway.py), which
    is the added-latency tail. What start-up made (modules, configs, detectors) is frozen out
    of every collection (``gc.freeze``, as CPython's docs advise for long-lived servers), and a
    young collection runs every 20,000 allocations instead of 700 (the per-message state is
    mostly acyclic tuples and strings; reference cycles are still collected)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _endpoint(addr: Any, transport: Transport) -> Endpoint:
    """A socket address as an Endpoint. The kernel's text (inet_ntop) is already canonical
    (RFC 5952 for IPv6); only a scope id is cut."""
    return Endpoint(addr[0].partition("%")[0], int(addr[1]), transport)


def _source_key(ip: str) -> str:
    """What the per-source connection bound counts by: the IPv4 address, or the IPv6 /64 (one
    subscriber gets a whole /64, RFC 6177; counting addresses would give it every slot)."""
    if ":" not in ip:
        return ip
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def _trusted_of(policy: PolicyFn | None) -> Callable[[str], bool] | None:
    """The policy's trusted-peer test (for the priority lane), None without one."""
    if isinstance(policy, Enforcer):
        return policy.policy.trusted
    return None


def _text(endpoint: Endpoint) -> str:
    host = f"[{endpoint.ip}]" if ":" in endpoint.ip else endpoint.ip
    return f"{endpoint.transport}:{host}:{endpoint.port}"
