"""Prometheus ``/metrics`` served from the gateway's loop, the JSON log formatter, and the
``--metrics`` / ``--log-format`` options."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipwarden import observability
from sipwarden.detect import DETECTORS, Engine
from sipwarden.errors import InputError
from sipwarden.gateway.enforcer import Enforcer
from sipwarden.gateway.policy import Policy
from sipwarden.gateway.proxy import ProxyStats
from sipwarden.gateway.server import GatewayServer
from sipwarden.gateway.verdict import DropReason
from sipwarden.net import Endpoint
from sipwarden.observability import (
    ConnectionCounts,
    GatewayMetrics,
    JsonFormatter,
    configure_logging,
    parse_metrics_address,
)
from tests.gateway import run_cli
from tests.gateway.test_server import options, recv, udp


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def http(port: int, request: bytes, timeout: float = 3.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return samples(body.decode())


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def started_gateway(upstream_port: int) -> tuple[GatewayServer, asyncio.Task[None]]:
    server = GatewayServer(
        [Endpoint("127.0.0.1", 0)],
        Endpoint("127.0.0.1", upstream_port),
        Engine([cls() for cls in DETECTORS.values()]),
        Enforcer(Policy()),
        metrics_address=("127.0.0.1", 0),
    )
    await server.start()
    return server, asyncio.create_task(server.run(duration=20))


async def stopped(server: GatewayServer, task: asyncio.Task[None]) -> None:
    server.stop()
    await asyncio.wait_for(task, 5)


def test_scrape_counts_forwarded_scanner_drop_and_latency() -> None:
    async def scenario() -> None:
        upstream, client = udp(), udp()
        server, task = await started_gateway(upstream.getsockname()[1])
        try:
            port = server.metrics_port
            assert port is not None
            listen = server.local_endpoints[0]
            loop = asyncio.get_running_loop()
            client_port = client.getsockname()[1]
            # The normal probe first: the scanner's finding bans its source IP (127.0.0.1 too).
            await loop.sock_sendto(client, options(client_port), (listen.ip, listen.port))
            await recv(upstream)
            scanner = options(client_port, branch="z9hG4bKscan", ua="friendly-scanner")
            await loop.sock_sendto(client, scanner, (listen.ip, listen.port))
            deadline = time.monotonic() + 3
            while True:
                got = await scrape(port)
                dropped = got[("sipwarden_gateway_dropped_total", (("reason", "scanner"),))]
                if dropped >= 1 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            assert dropped == 1
            assert got[("sipwarden_gateway_forwarded_total", (("kind", "request"),))] == 1
            assert got[("sipwarden_gateway_received_total", (("direction", "outside"),))] == 2
            assert got[("sipwarden_gateway_added_latency_seconds_count", ())] >= 1
            # Every reason of the closed set is exported, zeros included.
            for reason in DropReason:
                assert ("sipwarden_gateway_dropped_total", (("reason", reason.value),)) in got
            for component in ("engine", "tracker", "policy", "blocklist"):
                key = (("component", component),)
                assert got[("sipwarden_gateway_state_entries", key)] >= 0
                assert ("sipwarden_gateway_state_evictions_total", key) in got
            assert got[("sipwarden_gateway_state_entries", (("component", "blocklist"),))] == 1
        finally:
            await stopped(server, task)
            upstream.close()
            client.close()

    asyncio.run(scenario())


def test_hostile_http_gets_4xx_and_does_not_stall_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(observability, "HTTP_READ_TIMEOUT_S", 1.0)

    async def scenario() -> None:
        upstream, client = udp(), udp()
        server, task = await started_gateway(upstream.getsockname()[1])
        try:
            port = server.metrics_port
            assert port is not None
            # Slowloris: half a request line, held open; the gateway keeps serving meanwhile.
            slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
            slow_writer.write(b"GET /met")
            await slow_writer.drain()
            listen = server.local_endpoints[0]
            loop = asyncio.get_running_loop()
            started = time.monotonic()
            await loop.sock_sendto(
                client, options(client.getsockname()[1]), (listen.ip, listen.port)
            )
            await recv(upstream, timeout=1.0)
            got = await scrape(port)
            assert got[("sipwarden_gateway_forwarded_total", (("kind", "request"),))] == 1
            assert time.monotonic() - started < 0.8  # neither waited for the slow client
            assert status(await asyncio.wait_for(slow_reader.read(), 3)) == 408
            slow_writer.close()

            assert status(await http(port, b"GET / HTTP/1.1\r\n\r\n")) == 404
            assert status(await http(port, b"GET /metricsx HTTP/1.1\r\n\r\n")) == 404
            assert status(await http(port, b"POST /metrics HTTP/1.1\r\n\r\n")) == 405
            assert status(await http(port, b"DELETE /metrics HTTP/1.0\r\n\r\n")) == 405
            assert status(await http(port, b"\x16\x03\x01garbage\r\n\r\n")) == 400
            huge = b"GET /" + b"a" * 9000  # no end of line: over the 8 KiB head bound
            assert status(await http(port, huge)) == 431
            head = await http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
            assert status(head) == 200 and head.endswith(b"\r\n\r\n")
            answer = await http(port, b"GET /metrics?x=1 HTTP/1.1\r\n\r\n")
            assert status(answer) == 200 and b"text/plain; version=" in answer
        finally:
            await stopped(server, task)
            upstream.close()
            client.close()

    asyncio.run(scenario())


def test_connections_over_the_cap_are_closed_at_once() -> None:
    async def scenario() -> None:
        metrics = GatewayMetrics()
        served = await observability.serve_metrics(metrics, "127.0.0.1", 0)
        idle = []
        try:
            for _ in range(observability.HTTP_MAX_CONNECTIONS):
                idle.append(await asyncio.open_connection("127.0.0.1", served.port))
            await asyncio.sleep(0.05)
            assert len(served.http.active) == observability.HTTP_MAX_CONNECTIONS
            # One more: closed without an answer, immediately (not after the read timeout);
            # the request it sent unread, the close may reach it as a reset.
            try:
                answer = await http(served.port, b"GET /metrics HTTP/1.1\r\n\r\n", 1)
            except ConnectionResetError:
                answer = b""
            assert answer == b""
        finally:
            for _, writer in idle:
                writer.close()
            served.close()
            await served.wait_closed()
        assert not served.http.active

    asyncio.run(scenario())


def test_metrics_without_attach_and_with_fake_stats() -> None:
    metrics = GatewayMetrics()
    assert b"sipwarden_gateway_added_latency_seconds_bucket" in metrics.exposition()
    stats = ProxyStats(received=5, forwarded_requests=2, forwarded_responses=1, engine_errors=1)
    stats.rejected[405, DropReason.METHOD_NOT_ALLOWED] += 1
    stats.drop(DropReason.METHOD_NOT_ALLOWED)
    stats.drop(DropReason.BLOCKLISTED)
    stats.drop(DropReason.BLOCKLISTED)

    class Holder:
        def state_size(self) -> int:
            return 7

        def evictions(self) -> int:
            return 3

    metrics.attach(
        stats=lambda: stats,
        received=lambda: {"outside": 4, "upstream": 1},
        errors=lambda: {"socket": 2, "internal": 0},
        state={"policy": Holder()},
    )
    metrics.latency.observe(0.0003)
    got = samples(metrics.exposition().decode())
    assert got[("sipwarden_gateway_dropped_total", (("reason", "blocklisted"),))] == 2
    assert got[("sipwarden_gateway_dropped_total", (("reason", "overload"),))] == 0
    assert (
        got[
            (
                "sipwarden_gateway_rejected_total",
                (("reason", "method_not_allowed"), ("status", "405")),
            )
        ]
        == 1
    )
    assert got[("sipwarden_gateway_forwarded_total", (("kind", "response"),))] == 1
    assert got[("sipwarden_gateway_engine_errors_total", ())] == 1
    assert got[("sipwarden_gateway_socket_errors_total", ())] == 2
    assert got[("sipwarden_gateway_state_entries", (("component", "policy"),))] == 7
    assert got[("sipwarden_gateway_state_evictions_total", (("component", "policy"),))] == 3
    assert got[("sipwarden_gateway_added_latency_seconds_bucket", (("le", "0.0005"),))] == 1
    assert got[("sipwarden_gateway_added_latency_seconds_bucket", (("le", "0.0002"),))] == 0


def test_connection_families_only_when_the_server_gives_them() -> None:
    metrics = GatewayMetrics()
    metrics.attach(stats=lambda: None, received=dict, errors=dict, state={})
    assert b"sipwarden_gateway_connections" not in metrics.exposition()
    counts = ConnectionCounts(
        open={"outside": 12, "upstream": 1},
        refused={"max_connections": 3, "handshake_timeout": 2},
    )
    metrics.attach(
        stats=lambda: None, received=dict, errors=dict, state={}, connections=lambda: counts
    )
    got = samples(metrics.exposition().decode())
    assert got[("sipwarden_gateway_connections", (("side", "outside"),))] == 12
    assert got[("sipwarden_gateway_connections", (("side", "upstream"),))] == 1
    refused = "sipwarden_gateway_connections_refused_total"
    assert got[(refused, (("reason", "max_connections"),))] == 3
    assert got[(refused, (("reason", "handshake_timeout"),))] == 2


def test_two_metrics_objects_do_not_collide() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.latency.observe(0.001)
    got = samples(second.exposition().decode())
    assert got[("sipwarden_gateway_added_latency_seconds_count", ())] == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        ("[0:0::1]:0", ("::1", 0)),
    ],
)
def test_parse_metrics_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_metrics_address(text) == expected


@pytest.mark.parametrize(
    "text", ["9464", "localhost:9464", "::1:9464", "[::1]9464", "127.0.0.1:x", "1.2.3.4:70000"]
)
def test_parse_metrics_address_rejects(text: str) -> None:
    with pytest.raises(InputError):
        parse_metrics_address(text)


# -- logs --------------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_json_log_lines_parse_and_carry_no_secrets(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging(json=True, level="INFO")
    configure_logging(json=True, level="INFO")  # idempotent: one line per record, not two
    log = logging.getLogger("sipwarden.test")
    log.debug("not shown")
    log.info(
        "banned %s\nforged: line",
        "192.0.2.7",
        extra={
            "src": "192.0.2.7",
            "ttl_s": 600,
            "authorization": 'Digest username="alice", response="abc"',
            "raw": b"INVITE sip:bob@example.com SIP/2.0\r\n",
        },
    )
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("proxy core raised")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert RFC3339_UTC.match(first["ts"])
    assert first["level"] == "INFO" and first["logger"] == "sipwarden.test"
    assert first["msg"] == "banned 192.0.2.7\nforged: line"  # escaped: still one line
    assert first["src"] == "192.0.2.7" and first["ttl_s"] == 600
    assert first["authorization"] == "<redacted>"
    assert first["raw"] == "<36 bytes>"
    assert "alice" not in lines[0] and "INVITE" not in lines[0]
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]


def test_json_formatter_cuts_long_messages() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "a" * 10_000, None, None)
    doc = json.loads(JsonFormatter().format(record))
    assert len(doc["msg"]) == observability.LOG_MSG_MAX


def test_text_logging(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    configure_logging(json=False, level=logging.WARNING)
    logging.getLogger("sipwarden.t").warning("hello %s", "there")
    err = capsys.readouterr().err
    assert "WARNING sipwarden.t: hello there" in err


def test_worker_index_on_every_line(
    capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    configure_logging(json=True, worker=3)
    logging.getLogger("sipwarden.t").info("reloaded %s", "x.toml")
    assert json.loads(capsys.readouterr().err)["worker"] == 3
    configure_logging(json=False, worker=1)
    logging.getLogger("sipwarden.t").warning("hello")
    assert "WARNING [worker 1] sipwarden.t: hello" in capsys.readouterr().err
    configure_logging(json=True)
    logging.getLogger("sipwarden.t").info("plain")
    assert "worker" not in json.loads(capsys.readouterr().err)


# -- CLI ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metrics", "message"),
    [("192.0.2.1:9464", "allow-public"), ("0.0.0.0:9464", "allow-public"), ("9464", "IP:PORT")],
)
def test_cli_metrics_address_errors_exit_2(metrics: str, message: str) -> None:
    result = run_cli(
        "--listen", "udp:127.0.0.1:5060", "--upstream", "udp:127.0.0.1:5070",
        "--metrics", metrics, "--duration", "1",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr


def test_cli_serves_metrics_and_logs_json() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [
        sys.executable, "-m", "sipwarden", "gateway", "--listen", f"udp:127.0.0.1:{port}",
        "--upstream", "udp:127.0.0.1:5070", "--metrics", "127.0.0.1:0",
        "--log-format", "json", "--duration", "5",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        found = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", line)
        assert found, line
        got = asyncio.run(scrape(int(found.group(1))))
        assert got[("sipwarden_gateway_received_total", (("direction", "outside"),))] == 0
        proc.send_signal(2)  # SIGINT: graceful stop, the report still written
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out)["received"] == 0
    for text in err.decode().splitlines():
        json.loads(text)  # whatever was logged is JSON


def test_cli_metrics_port_in_use_exits_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            sip_port = probe.getsockname()[1]
        result = run_cli(
            "--listen", f"udp:127.0.0.1:{sip_port}", "--upstream", "udp:127.0.0.1:5070",
            "--metrics", f"127.0.0.1:{port}", "--duration", "1",
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: 127.0.0.1:{port}: cannot serve metrics")
