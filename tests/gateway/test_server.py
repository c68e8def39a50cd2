"""The asyncio adapter over real loopback UDP sockets, and the ``sipwarden gateway`` command's
address handling and errors (subprocess, bounded by ``--duration``)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from sipwarden.detect import DETECTORS, Engine
from sipwarden.errors import InputError
from sipwarden.gateway.server import GatewayServer, parse_address
from sipwarden.net import Endpoint
from sipwarden.sip import Request, Response, parse_message
from tests.gateway import run_cli


def options(port: int, branch: str = "z9hG4bKsrv1", ua: str = "sipsak 0.9.8") -> bytes:
    return (
        f"OPTIONS sip:alice@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\nMax-Forwards: 70\r\n"
        "From: <sip:bob@127.0.0.1>;tag=f1\r\nTo: <sip:alice@127.0.0.1>\r\n"
        f"Call-ID: {branch}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nUser-Agent: {ua}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def udp(family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind(("::1" if family == socket.AF_INET6 else "127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def recv(sock: socket.socket, timeout: float = 3.0) -> tuple[bytes, tuple[str, int]]:
    loop = asyncio.get_running_loop()
    data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), timeout)
    return data, addr


def echo_response(data: bytes) -> bytes:
    req = parse_message(data)
    assert isinstance(req, Request)
    vias = "".join(f"Via: {v}\r\n" for v in req.headers.get_all("via"))
    return (
        f"SIP/2.0 200 OK\r\n{vias}From: {req.headers.get('from')}\r\n"
        f"To: {req.headers.get('to')};tag=up\r\nCall-ID: {req.call_id}\r\n"
        f"CSeq: {req.headers.get('cseq')}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_round_trip_through_real_sockets(family: socket.AddressFamily) -> None:
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")
    loopback = "::1" if family == socket.AF_INET6 else "127.0.0.1"

    async def scenario() -> None:
        upstream, client = udp(family), udp(family)
        up_port, client_port = upstream.getsockname()[1], client.getsockname()[1]
        server = GatewayServer(
            [Endpoint(loopback, 0)],
            Endpoint(loopback, up_port),
            Engine([cls() for cls in DETECTORS.values()]),
        )
        await server.start()
        task = asyncio.create_task(server.run(duration=10))
        try:
            listen = server.local_endpoints[0]
            loop = asyncio.get_running_loop()
            await loop.sock_sendto(client, options(client_port), (listen.ip, listen.port))
            data, gw_addr = await recv(upstream)
            forwarded = parse_message(data)
            assert isinstance(forwarded, Request) and len(forwarded.via) == 2
            await loop.sock_sendto(upstream, echo_response(data), gw_addr)
            data, addr = await recv(client)
            response = parse_message(data)
            assert isinstance(response, Response) and response.status == 200
            assert len(response.via) == 1
            assert (addr[0], addr[1]) == (listen.ip, listen.port)
            # A datagram to the upstream-side socket from anyone else never arrives: the socket
            # is connected to the upstream.
            await loop.sock_sendto(client, echo_response(forwarded.raw), gw_addr)
            await asyncio.sleep(0.1)
            assert server.proxy is not None
            assert server.proxy.stats.received == 2
        finally:
            server.stop()
            await asyncio.wait_for(task, 5)
            upstream.close()
            client.close()

    asyncio.run(scenario())


def test_flood_is_shed_and_trusted_peers_keep_their_lane() -> None:
    """More datagrams than the backlog holds arrive at once: the untrusted surplus is shed
    (counted as dropped ``overload``) while every trusted peer's request is inspected and
    forwarded."""
    from sipwarden.gateway.enforcer import Enforcer
    from sipwarden.gateway.policy import Policy, PolicyConfig
    from sipwarden.gateway.verdict import DropReason

    policy = Enforcer(Policy(PolicyConfig(trusted_peers=("127.0.0.1/32",))))

    async def scenario() -> None:
        upstream = udp()
        up = Endpoint("127.0.0.1", upstream.getsockname()[1])
        server = GatewayServer([Endpoint("127.0.0.1", 0)], up, policy=policy)
        server.max_backlog = 4
        await server.start()
        task = asyncio.create_task(server.run())
        flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        flood.bind(("127.0.0.2", 0))
        trusted = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        trusted.bind(("127.0.0.1", 0))
        try:
            dest = ("127.0.0.1", server.local_endpoints[0].port)
            fport, tport = flood.getsockname()[1], trusted.getsockname()[1]
            # Sent without yielding to the loop: all queued in the socket before one is read.
            for n in range(150):
                flood.sendto(options(fport, f"z9hG4bKfl{n}"), dest)
                if n % 30 == 0:
                    trusted.sendto(options(tport, f"z9hG4bKtr{n}"), dest)
            forwarded = []
            while True:
                try:
                    data, _ = await recv(upstream, timeout=1.0)
                except TimeoutError:
                    break
                forwarded.append(data)
            assert server.proxy is not None
            stats = server.proxy.stats
            branches = [parse_message(d).via[1].branch or "" for d in forwarded]  # type: ignore[union-attr]
            assert sum(b.startswith("z9hG4bKtr") for b in branches) == 5
            assert server.shed > 0
            assert stats.dropped[DropReason.OVERLOAD] == server.shed
            assert stats.received == 155
        finally:
            server.stop()
            await asyncio.wait_for(task, 5)
            for sock in (upstream, flood, trusted):
                sock.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp:127.0.0.1:5060", Endpoint("127.0.0.1", 5060)),
        ("UDP:[::1]:5070", Endpoint("::1", 5070)),
        ("udp:[2001:DB8::1]:5060", Endpoint("2001:db8::1", 5060)),
    ],
)
def test_parse_address(text: str, expected: Endpoint) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "127.0.0.1:5060",
        "sctp:127.0.0.1:5060",
        "ws:127.0.0.1:5060",
        "udp:127.0.0.1",
        "udp:::1:5060",
        "udp:[::1]5060",
        "udp:host.example:5060",
        "udp:127.0.0.1:0",
        "udp:127.0.0.1:70000",
        "udp:127.0.0.1:x",
    ],
)
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(InputError):
        parse_address(text)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "udp:127.0.0.1", "--upstream", "udp:127.0.0.1:5070"], "udp:IP:PORT"),
        (["--listen", "udp:0.0.0.0:5060", "--upstream", "udp:127.0.0.1:5070"], "name the"),
        (["--listen", "udp:192.0.2.1:5060", "--upstream", "udp:127.0.0.1:5070"], "allow-public"),
    ],
)
def test_cli_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = run_cli(*args, "--duration", "1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr


def test_cli_port_in_use_exits_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_cli(
            "--listen", f"udp:127.0.0.1:{port}", "--upstream", "udp:127.0.0.1:5070",
            "--duration", "1",
        )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: udp:127.0.0.1:{port}: cannot listen")


def test_cli_runs_for_duration_and_reports_json() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli(
        "--listen", f"udp:127.0.0.1:{port}", "--upstream", "udp:127.0.0.1:5070",
        "--duration", "0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["received"] == 0 and report["findings"] == [] and report["dropped"] == {}


def test_shared_blocklist_is_enforced_and_followed(tmp_path: Path) -> None:
    """`sipwarden blocklist` writes a SQLite store; the gateway mirrors it within a tick: a
    listed source is dropped, and once removed it is forwarded again."""

    from sipwarden.gateway.enforcer import Enforcer, SharedBlocklist
    from sipwarden.gateway.policy import Policy
    from sipwarden.store.sqlite import SqliteBlocklistStore

    db = tmp_path / "blocklist.db"
    with SqliteBlocklistStore(db) as cli_store:
        cli_store.add("127.0.0.3", 0.0, ttl_s=None, reason="operator", origin="cli")

    async def scenario() -> None:
        upstream = udp()
        blocked = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        blocked.bind(("127.0.0.3", 0))
        blocked.setblocking(False)
        enforcer = Enforcer(Policy())
        server = GatewayServer(
            [Endpoint("127.0.0.1", 0)],
            Endpoint("127.0.0.1", upstream.getsockname()[1]),
            Engine([cls() for cls in DETECTORS.values()]),
            enforcer,
            on_tick=SharedBlocklist(db, enforcer),
        )
        await server.start()
        task = asyncio.create_task(server.run(duration=10))
        loop = asyncio.get_running_loop()
        listen = server.local_endpoints[0]
        port = blocked.getsockname()[1]
        try:
            await loop.sock_sendto(blocked, options(port, "z9hG4bKb1", "phone/1.0"), listen[:2])
            with pytest.raises(TimeoutError):
                await recv(upstream, timeout=0.5)
            assert server.proxy is not None
            assert server.proxy.stats.dropped.get("blocklisted") == 1
            with SqliteBlocklistStore(db) as cli_store:
                assert cli_store.remove("127.0.0.3")
            await asyncio.sleep(1.5)  # one tick mirrors the change
            await loop.sock_sendto(blocked, options(port, "z9hG4bKb2", "phone/1.0"), listen[:2])
            data, _ = await recv(upstream)
            assert isinstance(parse_message(data), Request)
        finally:
            server.stop()
            await asyncio.wait_for(task, 5)
            upstream.close()
            blocked.close()

    asyncio.run(scenario())


def test_upstream_port_unreachable_is_counted_and_traffic_continues() -> None:
    """ICMP port unreachable on the connected upstream socket surfaces as ConnectionRefusedError
    in error_received: counted in socket_errors, never fatal; the next request still goes out."""

    async def scenario() -> None:
        gone = udp()
        up_port = gone.getsockname()[1]
        gone.close()  # nothing listens there: the kernel answers ICMP port unreachable
        client = udp()
        client_port = client.getsockname()[1]
        server = GatewayServer([Endpoint("127.0.0.1", 0)], Endpoint("127.0.0.1", up_port))
        await server.start()
        task = asyncio.create_task(server.run(duration=10))
        loop = asyncio.get_running_loop()
        listen = server.local_endpoints[0]
        upstream: socket.socket | None = None
        try:
            for i in range(3):
                branch = f"z9hG4bKgone{i}"
                await loop.sock_sendto(client, options(client_port, branch), listen[:2])
                await asyncio.sleep(0.1)
            assert server.socket_errors >= 1
            assert server.internal_errors == 0
            upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            upstream.bind(("127.0.0.1", up_port))
            upstream.setblocking(False)
            await loop.sock_sendto(client, options(client_port, "z9hG4bKback"), listen[:2])
            data, _ = await recv(upstream)
            assert isinstance(parse_message(data), Request)
        finally:
            server.stop()
            await asyncio.wait_for(task, 5)
            client.close()
            if upstream is not None:
                upstream.close()

    asyncio.run(scenario())


def test_shared_blocklist_unreadable_mid_run_keeps_the_last_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sipwarden.gateway.enforcer import Enforcer, SharedBlocklist
    from sipwarden.gateway.policy import Policy
    from sipwarden.store.sqlite import SqliteBlocklistStore

    db = tmp_path / "blocklist.db"
    with SqliteBlocklistStore(db) as cli_store:
        cli_store.add("192.0.2.5", 0.0, ttl_s=None, reason="operator", origin="cli")
    enforcer = Enforcer(Policy())
    server = GatewayServer(
        [Endpoint("127.0.0.1", 0)],
        Endpoint("127.0.0.1", 5070),
        policy=enforcer,
        on_tick=SharedBlocklist(db, enforcer),
    )
    server._tick(1.0)
    assert enforcer.is_blocked("192.0.2.5", 1.0)
    with SqliteBlocklistStore(db) as cli_store:  # a change, so the next tick reads the file
        cli_store.add("192.0.2.6", 0.0, ttl_s=None, reason="operator", origin="cli")
    with db.open("r+b") as f:
        f.write(b"\xff" * 4096)  # the file is no longer a database
    server._tick(2.0)
    server._tick(3.0)
    assert server.internal_errors == 2  # counted each tick, not raised
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1  # logged once
    assert enforcer.is_blocked("192.0.2.5", 3.0)  # the last good copy still applies


def test_the_upstreams_datagrams_are_never_shed() -> None:
    """A flood forged from a trusted address fills the trusted lane; the upstream's own
    datagrams (its connected socket) have a lane of their own and are all inspected."""
    from sipwarden.gateway import server as server_module
    from sipwarden.gateway.enforcer import Enforcer
    from sipwarden.gateway.policy import Policy, PolicyConfig

    policy = Enforcer(Policy(PolicyConfig(trusted_peers=("127.0.0.0/8",))))

    async def scenario() -> None:
        upstream = udp()
        up = Endpoint("127.0.0.1", upstream.getsockname()[1])
        server = GatewayServer([Endpoint("127.0.0.1", 0)], up, policy=policy)
        await server.start()
        task = asyncio.create_task(server.run())
        forged = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        forged.bind(("127.0.0.3", 0))
        old = server_module.MAX_PRIORITY
        server_module.MAX_PRIORITY = 4
        try:
            dest = ("127.0.0.1", server.local_endpoints[0].port)
            assert server.proxy is not None
            gw_up = (server.proxy.config.upstream_local.ip, server.proxy.config.upstream_local.port)
            for n in range(100):
                forged.sendto(options(forged.getsockname()[1], f"z9hG4bKfg{n}"), dest)
                if n % 10 == 0:  # answers the core sends: not ours, counted no_route
                    upstream.sendto(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4\r\n\r\n", gw_up)
            await asyncio.sleep(1.0)
            received = server.received_counts()
            assert received["upstream"] == 10
            assert server.proxy is not None
            assert server.shed > 0  # the forged trusted flood was shed
            assert server.proxy.stats.received == 110  # every upstream datagram inspected
        finally:
            server_module.MAX_PRIORITY = old
            server.stop()
            await asyncio.wait_for(task, 5)
            upstream.close()
            forged.close()

    asyncio.run(scenario())
