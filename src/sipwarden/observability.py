"""Prometheus metrics and JSON logs for the long-running commands (design.md §1: adapters call
this module, the sans-IO core never does).

Metrics cost nothing per packet except the latency histogram: the counters the proxy core
already keeps (:class:`~sipwarden.gateway.proxy.ProxyStats`) and the state sizes are read at
scrape time by a custom collector, so nothing is counted twice. Each :class:`GatewayMetrics`
owns its own ``CollectorRegistry`` (never the global one): several servers in one process, and
the tests, do not collide.

``/metrics`` is served by a tiny asyncio responder (:func:`serve_metrics`) on the gateway's own
loop rather than ``prometheus_client.start_http_server`` (a thread that a clean shutdown cannot
join). Hostile input on that port must not hurt the gateway: connections are capped, the request
head is read with a size bound and a deadline, anything but ``GET``/``HEAD /metrics`` gets a 4xx.

Logs: :class:`JsonFormatter` writes one JSON object per line. No secrets or subscriber data:
extra fields whose name looks like a credential are redacted, bytes values (raw SIP) are
replaced by their length, and the message is cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as _json
import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sipwarden.errors import InputError
from sipwarden.gateway.verdict import DropReason
from sipwarden.net import parse_host_port

__all__ = [
    "LATENCY_BUCKETS_S",
    "ConnectionCounts",
    "GatewayMetrics",
    "JsonFormatter",
    "StateHolder",
    "configure_logging",
    "parse_metrics_address",
    "serve_metrics",
]

#: Added-latency buckets (seconds), 50 us .. 50 ms: the benchmark's target is p99 < 1 ms
#: (issue 4), so the buckets are densest around it.
LATENCY_BUCKETS_S = (
    0.00005, 0.0001, 0.0002, 0.0005, 0.00075, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
)  # fmt: skip


class StateHolder(Protocol):
    """Anything with bounded tables: the engine, the tracker, the policy, the blocklist."""

    def state_size(self) -> int: ...

    def evictions(self) -> int: ...


class _Stats(Protocol):
    # The fields of ProxyStats the collector reads (a Protocol: no import of the proxy here;
    # read-only properties so ProxyStats' Counter fields match Mapping).
    @property
    def forwarded_requests(self) -> int: ...
    @property
    def forwarded_responses(self) -> int: ...
    @property
    def engine_errors(self) -> int: ...
    @property
    def answers_suppressed(self) -> int: ...
    @property
    def undelivered(self) -> int: ...
    @property
    def keepalives_answered(self) -> int: ...
    @property
    def keepalives_ignored(self) -> int: ...
    @property
    def rejected(self) -> Mapping[tuple[int, DropReason], int]: ...
    @property
    def dropped(self) -> Mapping[DropReason, int]: ...


@dataclass(frozen=True, slots=True)
class ConnectionCounts:
    """The stream (TCP/TLS) side at scrape time, for :meth:`GatewayMetrics.attach`."""

    #: Connections open now, by side (``outside``: accepted on the listen addresses;
    #: ``upstream``: to the protected node).
    open: Mapping[str, int]
    #: Connections refused on accept since start, by reason (``blocklisted``,
    #: ``max_connections``, ``max_connections_per_source``).
    refused: Mapping[str, int]
    #: Connections the gateway closed since start, by reason (``idle``, ``silent`` - no SIP
    #: within the handshake timeout -, ``framing``, ``slow_reader``, ``shutdown``).
    closed: Mapping[str, int] = field(default_factory=dict)


@dataclass
class _Sources:
    stats: Callable[[], _Stats | None] = lambda: None
    received: Callable[[], Mapping[str, int]] = dict
    errors: Callable[[], Mapping[str, int]] = dict
    state: Mapping[str, StateHolder] = field(default_factory=dict)
    connections: Callable[[], ConnectionCounts] | None = None


class GatewayMetrics:
    """The gateway's metrics: call :meth:`attach` once the proxy exists, observe
    :attr:`latency` per datagram, and serve :meth:`exposition`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.latency = Histogram(
            "sipwarden_gateway_added_latency_seconds",
            "Time from a datagram received to the sends it caused issued (datagrams that "
            "caused at least one send).",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self._sources = _Sources()
        self.registry.register(_GatewayCollector(self._sources))

    def attach(
        self,
        *,
        stats: Callable[[], _Stats | None],
        received: Callable[[], Mapping[str, int]],
        errors: Callable[[], Mapping[str, int]],
        state: Mapping[str, StateHolder],
        connections: Callable[[], ConnectionCounts] | None = None,
    ) -> None:
        """Where the collector reads at scrape time: the proxy's counters, datagrams received
        by direction, the adapter's error counters (name → count, exported as
        ``sipwarden_gateway_<name>_errors_total``), the components with bounded state and,
        when the gateway has a TCP/TLS side, its connections (``connections``; without it the
        two connection families are not exported at all)."""
        self._sources.stats = stats
        self._sources.received = received
        self._sources.errors = errors
        self._sources.state = dict(state)
        self._sources.connections = connections

    def exposition(self) -> bytes:
        """The text exposition format (what ``/metrics`` returns)."""
        return generate_latest(self.registry)


class _GatewayCollector(Collector):
    def __init__(self, sources: _Sources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        src = self.sources
        received = CounterMetricFamily(
            "sipwarden_gateway_received",
            "Datagrams received, by the side they came from (outside = the listen sockets).",
            labels=["direction"],
        )
        for direction, count in sorted(src.received().items()):
            received.add_metric([direction], count)
        yield received
        stats = src.stats()
        forwarded = CounterMetricFamily(
            "sipwarden_gateway_forwarded", "Messages forwarded, by kind.", labels=["kind"]
        )
        rejected = CounterMetricFamily(
            "sipwarden_gateway_rejected",
            "Requests answered with an error status instead of being forwarded (also counted "
            "in sipwarden_gateway_dropped_total under their reason).",
            labels=["status", "reason"],
        )
        dropped = CounterMetricFamily(
            "sipwarden_gateway_dropped",
            "Messages not forwarded (silently dropped, rejected or tarpitted), by reason.",
            labels=["reason"],
        )
        engine_errors = CounterMetricFamily(
            "sipwarden_gateway_engine_errors", "Times the engine or the policy raised."
        )
        suppressed = CounterMetricFamily(
            "sipwarden_gateway_answers_suppressed",
            "Rejections not sent because the answer would be larger than the request.",
        )
        undelivered = CounterMetricFamily(
            "sipwarden_gateway_undelivered",
            "Messages forwarded that could not be sent (connection gone, slow reader, send "
            "error); also counted in sipwarden_gateway_forwarded_total.",
        )
        keepalives = CounterMetricFamily(
            "sipwarden_gateway_keepalives",
            "RFC 5626 keep-alives over UDP: STUN answered, CRLF ignored.",
            labels=["kind"],
        )
        if stats is not None:
            undelivered.add_metric([], stats.undelivered)
            keepalives.add_metric(["stun_answered"], stats.keepalives_answered)
            keepalives.add_metric(["crlf"], stats.keepalives_ignored)
            forwarded.add_metric(["request"], stats.forwarded_requests)
            forwarded.add_metric(["response"], stats.forwarded_responses)
            for (status, reason), count in sorted(stats.rejected.items()):
                rejected.add_metric([str(status), str(reason)], count)
            # The whole closed set, zeros included: dashboards and alerts see every reason.
            for reason in DropReason:
                dropped.add_metric([reason.value], stats.dropped.get(reason, 0))
            engine_errors.add_metric([], stats.engine_errors)
            suppressed.add_metric([], stats.answers_suppressed)
        yield from (forwarded, rejected, dropped, engine_errors, suppressed, undelivered)
        yield keepalives
        for name, count in sorted(src.errors().items()):
            errors = CounterMetricFamily(
                f"sipwarden_gateway_{name}_errors", f"Errors of the gateway's {name} layer."
            )
            errors.add_metric([], count)
            yield errors
        sizes = GaugeMetricFamily(
            "sipwarden_gateway_state_entries",
            "Entries held in bounded tables, by component.",
            labels=["component"],
        )
        evictions = CounterMetricFamily(
            "sipwarden_gateway_state_evictions",
            "Entries evicted from full bounded tables, by component.",
            labels=["component"],
        )
        for component, holder in sorted(src.state.items()):
            sizes.add_metric([component], holder.state_size())
            evictions.add_metric([component], holder.evictions())
        yield sizes
        yield evictions
        if src.connections is not None:
            yield from _connection_families(src.connections())


def _connection_families(counts: ConnectionCounts) -> Iterator[Metric]:
    open_now = GaugeMetricFamily(
        "sipwarden_gateway_connections",
        "TCP/TLS connections open now, by side (outside = accepted on the listen addresses).",
        labels=["side"],
    )
    for side, count in sorted(counts.open.items()):
        open_now.add_metric([side], count)
    yield open_now
    for name, text, counts_by_reason in (
        ("refused", "TCP/TLS connections refused on accept, by reason.", counts.refused),
        ("closed", "TCP/TLS connections the gateway closed, by reason.", counts.closed),
    ):
        family = CounterMetricFamily(
            f"sipwarden_gateway_connections_{name}", text, labels=["reason"]
        )
        for reason, count in sorted(counts_by_reason.items()):
            family.add_metric([reason], count)
        yield family


# -- /metrics over HTTP ------------------------------------------------------------------------

#: Largest request head read (request line + headers); larger gets 431.
HTTP_HEAD_MAX = 8192
#: The whole request head must arrive within this (slowloris).
HTTP_READ_TIMEOUT_S = 5.0
#: Connections served at once; more are closed at once (a scraper needs one).
HTTP_MAX_CONNECTIONS = 16


def parse_metrics_address(text: str) -> tuple[str, int]:
    """``IP:PORT`` or ``[IPv6]:PORT`` → (ip, port); port 0 binds any free port."""
    return parse_host_port(text, min_port=0)


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if status.startswith("405"):
        head += "Allow: GET, HEAD\r\n"
    return head.encode("ascii") + b"\r\n" + body


class _MetricsHttp:
    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics
        self.active: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self.active) >= HTTP_MAX_CONNECTIONS or task is None:
            writer.close()
            return
        self.active.add(task)
        try:
            answer = await self._answer(reader)
            if answer is not None:
                writer.write(answer)
                await asyncio.wait_for(writer.drain(), HTTP_READ_TIMEOUT_S)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the scraper went away or reads too slowly: nothing to do
        except asyncio.CancelledError:
            # Only MetricsServer.close() cancels a handler. Ending normally: Python 3.11's
            # start_server logs a traceback for every handler task that ends cancelled.
            pass
        finally:
            self.active.discard(task)
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            async with asyncio.timeout(HTTP_READ_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            return _response("431 Request Header Fields Too Large", b"request head too large\n")
        except TimeoutError:
            return _response("408 Request Timeout", b"request head too slow\n")
        except asyncio.IncompleteReadError:
            return None  # closed before a full head: nobody to answer
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return _response("400 Bad Request", b"bad request line\n")
        method, target = parts[0], parts[1]
        path = target.split(b"?", 1)[0]
        if path != b"/metrics":
            return _response("404 Not Found", b"only /metrics here\n")
        if method not in (b"GET", b"HEAD"):
            return _response("405 Method Not Allowed", b"GET or HEAD\n")
        body = self.metrics.exposition()
        answer = _response("200 OK", body, CONTENT_TYPE_LATEST)
        if method == b"HEAD":
            answer = answer[: len(answer) - len(body)]
        return answer

    def cancel(self) -> None:
        for task in list(self.active):
            task.cancel()


@dataclass
class MetricsServer:
    """A running ``/metrics`` responder; :meth:`close` stops it and its open connections."""

    server: asyncio.Server
    http: _MetricsHttp

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    def close(self) -> None:
        self.server.close()
        self.http.cancel()

    async def wait_closed(self) -> None:
        """After :meth:`close`: the cancelled connection handlers have finished."""
        tasks = list(self.http.active)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def serve_metrics(metrics: GatewayMetrics, host: str, port: int) -> MetricsServer:
    """Listen on ``host:port`` for scrapes; InputError when the address cannot be bound."""
    http = _MetricsHttp(metrics)
    try:
        server = await asyncio.start_server(http.handle, host, port, limit=HTTP_HEAD_MAX)
    except OSError as exc:
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise InputError(shown, f"cannot serve metrics: {exc.strerror or exc}") from exc
    return MetricsServer(server, http)


# -- logs --------------------------------------------------------------------------------------

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
#: Extra fields whose names contain one of these are redacted (credentials, digest answers).
_SECRET_MARKERS = ("authorization", "password", "secret", "token", "nonce", "response", "ha1")
#: Longest message kept: a log line is no place for a SIP message someone passed by mistake.
LOG_MSG_MAX = 2000


def _safe(name: str, value: Any) -> Any:
    if any(marker in name.lower() for marker in _SECRET_MARKERS):
        return "<redacted>"
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, str | int | float | bool) or value is None:
        return value[:LOG_MSG_MAX] if isinstance(value, str) else value
    return str(value)[:LOG_MSG_MAX]


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (RFC 3339 UTC), ``level``, ``logger``, ``msg``, the
    ``extra=`` fields (secrets redacted, bytes as lengths) and ``exc`` for tracebacks."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        doc: dict[str, Any] = {
            "ts": ts.replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage()[:LOG_MSG_MAX],
        }
        for name, value in record.__dict__.items():
            if name not in _RECORD_FIELDS and name not in doc:
                doc[name] = _safe(name, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        # ensure_ascii: control characters and odd bytes from attackers stay escaped.
        return _json.dumps(doc, ensure_ascii=True)


class _WorkerTag(logging.Filter):
    """Adds ``worker`` (the ``--workers`` index) to every record of a worker process."""

    def __init__(self, worker: int) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.worker
        return True


def configure_logging(
    json: bool, level: int | str = logging.INFO, worker: int | None = None
) -> None:
    """Send the root logger to stderr, as JSON lines or as text; replaces earlier handlers
    (calling it twice does not duplicate lines). ``worker``: the index of a ``--workers``
    process, added to every line (a ``worker`` field in JSON, ``[worker N]`` in text) so the
    interleaved lines of several processes can be told apart."""
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        tag = f" [worker {worker}]" if worker is not None else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s{tag} %(name)s: %(message)s")
        )
    if worker is not None:
        handler.addFilter(_WorkerTag(worker))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        with contextlib.suppress(Exception):
            old.close()
    root.addHandler(handler)
    root.setLevel(level)
