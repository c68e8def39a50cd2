"""TCP and TLS on both sides of the gateway, over real loopback sockets: transport conversion
(TCP/TLS outside, UDP to the core and back), responses over the client's own connection,
RFC 5626 keep-alives, the connection bounds (slowloris, per-source cap, blocklist on accept,
idle timeout), framing errors, a TLS upstream verified against its CA, and re-opening the
upstream connection."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from sipwarden.errors import InputError
from sipwarden.gateway.enforcer import Enforcer
from sipwarden.gateway.policy import Policy
from sipwarden.gateway.server import GatewayServer, StreamOptions, TlsOptions, parse_address
from sipwarden.gateway.verdict import DropReason
from sipwarden.net import Endpoint, Transport
from sipwarden.sip import Request, Response, parse_message
from sipwarden.sip.framing import NEED_DATA, StreamFramer
from sipwarden.store.base import BlockEntry
from tests.gateway.test_server import echo_response, udp
from tests.tls import client_tls_context, make_test_certificate


def make_cert(tmp: Path, name: str = "gw") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and ::1 and its key; the CA that signed it is
    ``tmp/name/ca.pem`` (see :func:`ca_of`)."""
    files = make_test_certificate(_mkdir(tmp / name))
    return files.cert, files.key


def ca_of(cert: Path) -> Path:
    return cert.parent / "ca.pem"


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def request(transport: str, port: int, branch: str, method: str = "OPTIONS") -> bytes:
    return (
        f"{method} sip:alice@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={branch}\r\nMax-Forwards: 70\r\n"
        "From: <sip:bob@127.0.0.1>;tag=f1\r\nTo: <sip:alice@127.0.0.1>\r\n"
        f"Call-ID: {branch}@127.0.0.1\r\nCSeq: 1 {method}\r\nUser-Agent: tester\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def read_message(reader: asyncio.StreamReader, timeout: float = 3.0) -> bytes:
    framer = StreamFramer()
    while True:
        item = framer.next_message()
        if isinstance(item, bytes):
            return item
        if item is not NEED_DATA:
            continue
        chunk = await asyncio.wait_for(reader.read(65536), timeout)
        if not chunk:
            raise ConnectionError("closed")
        framer.feed(chunk)


async def closed(reader: asyncio.StreamReader, timeout: float = 4.0) -> bool:
    """True when the peer closed the connection within ``timeout`` (EOF or reset)."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
    except (ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return True


@asynccontextmanager
async def udp_upstream() -> AsyncIterator[tuple[socket.socket, Endpoint, list[bytes]]]:
    """A UDP upstream that answers every request 200 and remembers what it received."""
    sock = udp()
    seen: list[bytes] = []
    loop = asyncio.get_running_loop()

    async def serve() -> None:
        while True:
            data, addr = await loop.sock_recvfrom(sock, 65535)
            seen.append(data)
            if isinstance(parse_message(data), Request):
                await loop.sock_sendto(sock, echo_response(data), addr)

    task = asyncio.create_task(serve())
    try:
        yield sock, Endpoint("127.0.0.1", sock.getsockname()[1]), seen
    finally:
        task.cancel()
        sock.close()


@asynccontextmanager
async def stream_upstream(
    context: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[Endpoint, list[bytes], list[asyncio.StreamWriter]]]:
    """A TCP (or TLS) upstream answering every request 200 over the same connection."""
    seen: list[bytes] = []
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            while True:
                data = await read_message(reader, timeout=30)
                seen.append(data)
                if isinstance(parse_message(data), Request):
                    writer.write(echo_response(data))
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    transport = Transport.TLS if context is not None else Transport.TCP
    try:
        yield Endpoint("127.0.0.1", port, transport), seen, writers
    finally:
        for writer in writers:
            writer.close()
        server.close()


@asynccontextmanager
async def gateway(
    listen: list[Endpoint], upstream: Endpoint, **kwargs: object
) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(listen, upstream, **kwargs)  # type: ignore[arg-type]
    await server.start()
    task = asyncio.create_task(server.run())
    try:
        yield server
    finally:
        server.stop()
        await asyncio.wait_for(task, 5)


@asynccontextmanager
async def tcp_gateway(**kwargs: object) -> AsyncIterator[tuple[GatewayServer, int, list[bytes]]]:
    """A gateway listening on TCP in front of :func:`udp_upstream`: (server, its port, what the
    upstream received)."""
    async with udp_upstream() as (_, upstream, seen):
        listen = [Endpoint("127.0.0.1", 0, Transport.TCP)]
        async with gateway(listen, upstream, **kwargs) as server:
            yield server, server.local_endpoints[0].port, seen


def test_parse_address_transports() -> None:
    assert parse_address("tcp:127.0.0.1:5060") == Endpoint("127.0.0.1", 5060, Transport.TCP)
    assert parse_address("tls:[::1]:5061") == Endpoint("::1", 5061, Transport.TLS)
    with pytest.raises(InputError, match="udp:IP:PORT, tcp:IP:PORT or tls:IP:PORT"):
        parse_address("sctp:127.0.0.1:5060")


@pytest.mark.parametrize("transport", [Transport.TCP, Transport.TLS])
def test_stream_client_to_udp_core_and_back(transport: Transport, tmp_path: Path) -> None:
    """TCP/TLS outside, UDP to the core: our Via names UDP toward the core, the client's hop
    records its source port (rport), and the answer comes back over the client's connection."""
    cert, key = make_cert(tmp_path)

    async def scenario() -> None:
        async with udp_upstream() as (_, upstream, seen):
            listen = [Endpoint("127.0.0.1", 0, transport)]
            async with gateway(listen, upstream, tls=TlsOptions(cert, key)) as server:
                port = server.local_endpoints[0].port
                context = client_tls_context(ca_of(cert)) if transport is Transport.TLS else None
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
                local_port = writer.get_extra_info("sockname")[1]
                writer.write(request(transport.upper(), 5099, "z9hG4bKtcp1"))
                answer = parse_message(await read_message(reader))
                assert isinstance(answer, Response) and answer.status == 200
                assert [v.branch for v in answer.via] == ["z9hG4bKtcp1"]
                forwarded = parse_message(seen[0])
                assert isinstance(forwarded, Request)
                top, client = forwarded.via[0], forwarded.via[1]
                assert top.transport == "UDP"
                assert client.transport == transport.upper()
                assert client.received == "127.0.0.1"
                assert client.rport == str(local_port)
                # RFC 5626 §4.4.1: a ping is answered with a pong, a pong is ignored.
                writer.write(b"\r\n\r\n")
                assert await asyncio.wait_for(reader.readexactly(2), 3) == b"\r\n"
                assert server.connection_counts() == {"outside": 1, "upstream": 0}
                assert server.received_counts()["outside"] == 1
                writer.close()

    asyncio.run(scenario())


def test_udp_client_to_tls_core_verified_against_its_ca(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "core")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)

    async def scenario() -> None:
        async with stream_upstream(server_ctx) as (upstream, seen, _):
            listen = [Endpoint("127.0.0.1", 0)]
            async with gateway(listen, upstream, tls=TlsOptions(upstream_ca=ca_of(cert))) as server:
                sock = udp()
                port = server.local_endpoints[0].port
                loop = asyncio.get_running_loop()
                await loop.sock_sendto(
                    sock, request("UDP", sock.getsockname()[1], "z9hG4bKu1"), ("127.0.0.1", port)
                )
                data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), 3)
                answer = parse_message(data)
                assert isinstance(answer, Response) and answer.status == 200
                forwarded = parse_message(seen[0])
                assert isinstance(forwarded, Request)
                assert forwarded.via[0].transport == "TLS"
                assert server.connection_counts()["upstream"] == 1
                sock.close()

    asyncio.run(scenario())


def test_tls_upstream_with_an_unknown_certificate_is_refused_at_start(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "core")
    other, _ = make_cert(tmp_path, "other")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)

    async def scenario() -> None:
        async with stream_upstream(server_ctx) as (upstream, _, _):
            server = GatewayServer(
                [Endpoint("127.0.0.1", 0)], upstream, tls=TlsOptions(upstream_ca=ca_of(other))
            )
            with pytest.raises(InputError, match="cannot reach the upstream"):
                await server.start()

    asyncio.run(scenario())


def test_tls_listen_without_a_certificate_is_an_input_error() -> None:
    async def scenario() -> None:
        server = GatewayServer(
            [Endpoint("127.0.0.1", 0, Transport.TLS)], Endpoint("127.0.0.1", 9, Transport.UDP)
        )
        with pytest.raises(InputError, match="needs a certificate and key"):
            await server.start()

    asyncio.run(scenario())


def test_tcp_upstream_is_reopened_after_it_closes() -> None:
    async def scenario() -> None:
        async with stream_upstream() as (upstream, seen, writers):
            server = GatewayServer([Endpoint("127.0.0.1", 0)], upstream)
            await server.start()
            task = asyncio.create_task(server.run())
            sock = udp()
            loop = asyncio.get_running_loop()
            dest = ("127.0.0.1", server.local_endpoints[0].port)
            me = sock.getsockname()[1]
            for n in range(2):
                await loop.sock_sendto(sock, request("UDP", me, f"z9hG4bKre{n}"), dest)
                data, _ = await asyncio.wait_for(loop.sock_recvfrom(sock, 65535), 3)
                assert isinstance(parse_message(data), Response)
                # The core drops the connection: the gateway re-opens it on the next send.
                writers[-1].close()
                await asyncio.sleep(0.2)
            assert len(writers) == 2
            assert len(seen) == 2
            sock.close()
            server.stop()
            await asyncio.wait_for(task, 5)

    asyncio.run(scenario())


def test_request_from_core_reaches_a_tcp_client_over_its_connection() -> None:
    async def scenario() -> None:
        async with udp_upstream() as (up_sock, upstream, seen):
            listen = [Endpoint("127.0.0.1", 0, Transport.TCP)]
            async with gateway(listen, upstream) as server:
                port = server.local_endpoints[0].port
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                client_port = writer.get_extra_info("sockname")[1]
                writer.write(request("TCP", 5099, "z9hG4bKreg"))
                await read_message(reader)
                gw_up = parse_message(seen[0])
                assert isinstance(gw_up, Request)
                bye = (
                    f"BYE sip:bob@127.0.0.1:{client_port};transport=tcp SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{upstream.port};branch=z9hG4bKcore1\r\n"
                    "Max-Forwards: 70\r\nFrom: <sip:alice@127.0.0.1>;tag=a\r\n"
                    "To: <sip:bob@127.0.0.1>;tag=b\r\nCall-ID: dialog1\r\nCSeq: 2 BYE\r\n"
                    "Content-Length: 0\r\n\r\n"
                ).encode()
                dest = (gw_up.via[0].host, gw_up.via[0].port)
                await asyncio.get_running_loop().sock_sendto(up_sock, bye, dest)
                got = parse_message(await read_message(reader))
                assert isinstance(got, Request) and got.method == "BYE"
                assert got.via[0].transport == "TCP"
                # A client with no connection cannot be reached: counted as undelivered.
                lost = bye.replace(f":{client_port};".encode(), b":1;")
                await asyncio.get_running_loop().sock_sendto(up_sock, lost, dest)
                await asyncio.sleep(0.2)
                assert server.proxy is not None
                assert server.proxy.stats.undelivered == 1
                writer.close()

    asyncio.run(scenario())


def test_connection_bounds_slowloris_per_source_and_framing() -> None:
    options = StreamOptions(handshake_timeout_s=0.3, max_connections_per_source=2)

    async def scenario() -> None:
        async with tcp_gateway(streams=options) as (server, port, _):
            conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            # The third from the same IP is closed at once.
            assert await closed(conns[2][0], timeout=2)
            assert server.connections_refused["max_connections_per_source"] == 1
            # The two that say nothing are closed by the next sweep (slowloris).
            assert await closed(conns[0][0]) and await closed(conns[1][0])
            assert server.connections_closed["silent"] == 2
            # Bytes that cannot start a SIP message: closed, seen by the engine as malformed.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\x16\x03\x01 not sip\r\n\r\n")
            assert await closed(reader)
            assert server.connections_closed["framing"] == 1
            assert server.proxy is not None
            assert server.proxy.stats.dropped[DropReason.MALFORMED] == 1
            assert server.connection_counts()["outside"] == 0
            for _, w in [*conns, (reader, writer)]:
                w.close()

    asyncio.run(scenario())


def test_idle_connection_is_closed() -> None:
    options = StreamOptions(idle_timeout_s=0.3)

    async def scenario() -> None:
        async with tcp_gateway(streams=options) as (server, port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request("TCP", 5099, "z9hG4bKidle"))
            await read_message(reader)
            assert await closed(reader)
            assert server.connections_closed["idle"] == 1
            writer.close()

    asyncio.run(scenario())


def test_blocklisted_source_is_closed_on_accept() -> None:
    enforcer = Enforcer(Policy())
    enforcer.store.put(BlockEntry("127.0.0.1/32", "test", "cli", 0.0, None), 0.0)

    async def scenario() -> None:
        async with tcp_gateway(policy=enforcer) as (server, port, seen):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request("TCP", 5099, "z9hG4bKblk"))
            assert await closed(reader, timeout=2)
            assert server.connections_refused["blocklisted"] == 1
            assert not seen
            writer.close()

    asyncio.run(scenario())


def test_ipv6_tcp_listen() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")

    async def scenario() -> None:
        async with udp_upstream() as (_, upstream, _):
            listen = [Endpoint("::1", 0, Transport.TCP)]
            async with gateway(listen, upstream) as server:
                port = server.local_endpoints[0].port
                reader, writer = await asyncio.open_connection("::1", port)
                writer.write(request("TCP", 5099, "z9hG4bKv6").replace(b"127.0.0.1:", b"[::1]:"))
                answer = parse_message(await read_message(reader))
                assert isinstance(answer, Response) and answer.status == 200
                writer.close()

    asyncio.run(scenario())


def test_tls_connections_count_before_their_handshake(tmp_path: Path) -> None:
    """A TLS listener admits (bounds, blocklist) on accept, before the handshake: connections
    that never send a ClientHello hold slots only until the handshake timeout."""
    cert, key = make_cert(tmp_path)
    options = StreamOptions(handshake_timeout_s=0.3, max_connections_per_source=2)

    async def scenario() -> None:
        async with udp_upstream() as (_, upstream, _):
            listen = [Endpoint("127.0.0.1", 0, Transport.TLS)]
            async with gateway(
                listen, upstream, tls=TlsOptions(cert, key), streams=options
            ) as server:
                port = server.local_endpoints[0].port
                conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
                assert await closed(conns[2][0], timeout=2)
                assert server.connections_refused["max_connections_per_source"] == 1
                assert await closed(conns[0][0]) and await closed(conns[1][0])
                for _ in range(40):  # the slots are freed as the loop reports the closes
                    if server.connection_counts()["outside"] == 0:
                        break
                    await asyncio.sleep(0.05)
                assert server.connection_counts()["outside"] == 0
                for _, writer in conns:
                    writer.close()

    asyncio.run(scenario())


def test_a_message_trickled_a_byte_at_a_time_is_cut_off() -> None:
    options = StreamOptions(handshake_timeout_s=0.3, idle_timeout_s=60)

    async def scenario() -> None:
        async with tcp_gateway(streams=options) as (server, port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"\r\n\r\n")  # a keep-alive: the peer "speaks SIP"
            assert await asyncio.wait_for(reader.readexactly(2), 3) == b"\r\n"
            for byte in request("TCP", 5099, "z9hG4bKslow")[:12]:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.2)
                if writer.is_closing() or reader.at_eof():
                    break
            assert await closed(reader)
            assert server.connections_closed["incomplete"] == 1
            writer.close()

    asyncio.run(scenario())


def test_ipv6_sources_are_bounded_per_64() -> None:
    from sipwarden.gateway.server import _source_key

    assert _source_key("2001:db8:1:2::5") == _source_key("2001:db8:1:2:ffff::1")
    assert _source_key("2001:db8:1:2::5") != _source_key("2001:db8:1:3::5")
    assert _source_key("192.0.2.1") == "192.0.2.1"
