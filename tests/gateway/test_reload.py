"""SIGHUP reload of ``sipwarden gateway --config``: what may change while running is swapped
between two messages (bans and unchanged state kept), what needs a restart is logged and kept,
and a config that does not validate leaves the running one in force."""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path

import pytest

from sipwarden.cli.gateway import GatewayFlags, GatewayPlan, _Worker
from sipwarden.config import Settings, load_settings
from sipwarden.sip import Response, parse_message
from sipwarden.store.base import BlockEntry
from tests.gateway.test_workers import Gateway, free_udp_port

NOW = 1_700_000_000.0


def request(port: int, branch: str, method: str = "OPTIONS") -> bytes:
    """A request from 127.0.0.1:``port``; the padding keeps a 405 smaller than the request (the
    proxy never answers with more bytes than it received)."""
    return (
        f"{method} sip:alice@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch};rport\r\nMax-Forwards: 70\r\n"
        "From: <sip:bob@127.0.0.1>;tag=f1\r\nTo: <sip:alice@127.0.0.1>\r\n"
        f"Call-ID: {branch}@127.0.0.1\r\nCSeq: 1 {method}\r\n"
        f"Contact: <sip:bob@127.0.0.1:{port}>\r\nUser-Agent: Softphone 1.0\r\n"
        "Accept: application/sdp\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(3.0)
    return sock


# -- end to end --------------------------------------------------------------------------------


def test_sighup_applies_a_new_policy_and_survives_a_broken_config(tmp_path: Path) -> None:
    port = free_udp_port()
    config = tmp_path / "sipwarden.toml"
    with udp_socket() as upstream, udp_socket() as client:
        head = (
            f'[gateway]\nlisten = ["udp:127.0.0.1:{port}"]\n'
            f'upstream = "udp:127.0.0.1:{upstream.getsockname()[1]}"\n'
        )
        config.write_text(head)
        client_port = client.getsockname()[1]
        gateway = Gateway("--config", str(config), "--duration", "20")
        try:
            gateway.listening()
            client.sendto(request(client_port, "z9hG4bKr1"), ("127.0.0.1", port))
            upstream.recvfrom(65535)  # the default policy forwards OPTIONS

            config.write_text(head + "[gateway.policy]\nallowed_methods = 5\n")
            gateway.proc.send_signal(signal.SIGHUP)
            error = gateway.wait_line(lambda line: "reload of" in line)
            assert '"level": "ERROR"' in error and str(config) in error
            assert "gateway.policy.allowed_methods" in error and "Traceback" not in error
            client.sendto(request(client_port, "z9hG4bKr2"), ("127.0.0.1", port))
            upstream.recvfrom(65535)  # still the old policy

            config.write_text(
                head + 'fail_open = true\n[gateway.policy]\nallowed_methods = ["INVITE", "ACK"]\n'
            )
            gateway.proc.send_signal(signal.SIGHUP)
            gateway.wait_line(lambda line: f'"reloaded {config}"' in line)
            warning = next(x for x in gateway.lines if "needs a restart" in x)
            assert "gateway.fail_open" in warning
            client.sendto(request(client_port, "z9hG4bKr3"), ("127.0.0.1", port))
            data, _ = client.recvfrom(65535)
            answer = parse_message(data)
            assert isinstance(answer, Response) and answer.status == 405
            report = gateway.stop()
        finally:
            gateway.close()
    assert gateway.proc.returncode == 0, gateway.lines
    assert report["reloads"] == 1 and report["reload_errors"] == 1
    assert report["forwarded_requests"] == 2
    assert report["rejected"] == {"405": {"method_not_allowed": 1}}


def test_traffic_keeps_flowing_through_reloads(tmp_path: Path) -> None:
    """Requests sent while SIGHUPs arrive are all forwarded: the sockets stay and the swap
    happens between two messages."""
    port = free_udp_port()
    config = tmp_path / "sipwarden.toml"
    with udp_socket() as upstream, udp_socket() as client:
        head = (
            f'[gateway]\nlisten = ["udp:127.0.0.1:{port}"]\n'
            f'upstream = "udp:127.0.0.1:{upstream.getsockname()[1]}"\n'
            '[gateway.policy]\ntrusted_peers = ["127.0.0.1/32"]\n'  # no rate limit here
        )
        config.write_text(head)
        client_port = client.getsockname()[1]
        gateway = Gateway("--config", str(config), "--duration", "20")
        try:
            gateway.listening()
            for n in range(60):
                if n % 10 == 5:
                    sanitize = "strip_versions" if n % 20 == 5 else "remove"
                    config.write_text(head + f'[gateway.sanitize]\nproduct_mode = "{sanitize}"\n')
                    gateway.proc.send_signal(signal.SIGHUP)
                client.sendto(request(client_port, f"z9hG4bKflow{n}"), ("127.0.0.1", port))
                upstream.recvfrom(65535)  # every one arrives (3 s timeout each)
            report = gateway.stop()
        finally:
            gateway.close()
    assert gateway.proc.returncode == 0, gateway.lines
    assert report["forwarded_requests"] == 60
    assert report["reloads"] >= 1 and report["reload_errors"] == 0


def test_sighup_without_config_is_logged_and_harmless() -> None:
    gateway = Gateway(
        "--listen", f"udp:127.0.0.1:{free_udp_port()}", "--upstream", "udp:127.0.0.1:5070",
        "--duration", "20",
    )  # fmt: skip
    try:
        gateway.listening()
        gateway.proc.send_signal(signal.SIGHUP)
        gateway.wait_line(lambda line: "nothing to reload" in line)
        report = gateway.stop()
    finally:
        gateway.close()
    assert gateway.proc.returncode == 0
    assert report["reloads"] == 0


# -- what a reload swaps (no sockets: the server is built, never started) ----------------------


def worker_for(config: Path, flags: GatewayFlags | None = None) -> _Worker:
    flags = flags if flags is not None else GatewayFlags()
    plan = GatewayPlan.resolve(flags, load_settings(config))
    return _Worker(plan, flags, config, secret=b"k" * 32)


BASE = '[gateway]\nlisten = ["udp:127.0.0.1:5060"]\nupstream = "udp:127.0.0.1:5070"\n'


def test_policy_change_keeps_the_engine_and_the_bans(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "sipwarden.toml"
    config.write_text(BASE)
    worker = worker_for(config)
    engine, enforcer, store, old_policy = (
        worker.engine,
        worker.enforcer,
        worker.enforcer.store,
        worker.enforcer.policy,
    )
    store.put(BlockEntry("192.0.2.66", "test", "finding", NOW, NOW + 600), NOW)
    config.write_text(BASE + '[gateway.policy]\nallowed_methods = ["INVITE", "ACK"]\n')
    with caplog.at_level(logging.INFO):
        worker.reload()
    assert worker.engine is engine and worker.server.engine is engine
    assert worker.enforcer is enforcer and worker.server.policy is enforcer
    assert enforcer.store is store and enforcer.is_blocked("192.0.2.66", NOW + 1)
    assert enforcer.policy is not old_policy
    assert "OPTIONS" not in enforcer.policy.allow_header
    assert f"reloaded {config}" in caplog.messages
    assert not any("starts afresh" in m or "needs a restart" in m for m in caplog.messages)
    assert worker.reloads == 1


def test_unchanged_policy_keeps_its_state(tmp_path: Path) -> None:
    config = tmp_path / "sipwarden.toml"
    config.write_text(BASE)
    worker = worker_for(config)
    policy = worker.enforcer.policy
    config.write_text(BASE + '[gateway.sanitize]\nproduct_mode = "remove"\n')
    outgoing = worker.server.outgoing
    worker.reload()
    assert worker.enforcer.policy is policy
    assert worker.server.outgoing is not outgoing  # the sanitizing did change


def test_detector_change_rebuilds_the_engine_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "sipwarden.toml"
    config.write_text(BASE)
    worker = worker_for(config)
    engine = worker.engine
    config.write_text(BASE + '[detectors."tdos.request_flood"]\nenabled = false\n')
    with caplog.at_level(logging.INFO):
        worker.reload()
    assert worker.engine is not engine and worker.server.engine is worker.engine
    assert not any(d.id == "tdos.request_flood" for d in worker.engine.detectors)
    assert any("starts afresh" in m for m in caplog.messages)


def test_invalid_config_keeps_everything_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "sipwarden.toml"
    config.write_text(BASE)
    worker = worker_for(config)
    before = (worker.engine, worker.enforcer.policy, worker.server.outgoing, worker.plan)
    config.write_text(BASE + "[gateway.policy]\nmax_body_bytes = -1\n")
    with caplog.at_level(logging.INFO):
        worker.reload()
    after = (worker.engine, worker.enforcer.policy, worker.server.outgoing, worker.plan)
    assert after == before
    assert (worker.reloads, worker.reload_errors) == (0, 1)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert str(config) in record.getMessage()
    assert "gateway.policy.max_body_bytes" in record.getMessage()
    assert record.exc_info is None  # a config error is a line, not a traceback


@pytest.mark.parametrize(
    ("change", "label"),
    [
        ('listen = ["udp:127.0.0.1:5062"]', "gateway.listen"),
        ('upstream = "udp:127.0.0.1:5072"', "gateway.upstream"),
        ('metrics = "127.0.0.1:9464"', "gateway.metrics"),
        ("workers = 2", "gateway.workers"),
        ('tls_cert = "c.pem"', "gateway.tls_cert"),
        ("[gateway.streams]\nmax_connections = 10", "gateway.streams"),
    ],
)
def test_restart_only_changes_are_logged_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: str, label: str
) -> None:
    config = tmp_path / "sipwarden.toml"
    config.write_text(BASE)
    worker = worker_for(config)
    plan = worker.plan
    config.write_text(
        BASE.replace('listen = ["udp:127.0.0.1:5060"]\n', "").replace(
            'upstream = "udp:127.0.0.1:5070"\n', ""
        )
        + ('listen = ["udp:127.0.0.1:5060"]\n' if "listen" not in change else "")
        + ('upstream = "udp:127.0.0.1:5070"\n' if "upstream" not in change else "")
        + change
        + "\n"
    )
    with caplog.at_level(logging.INFO):
        worker.reload()
    [warning] = [m for m in caplog.messages if "needs a restart" in m]
    assert label in warning and str(config) in warning
    for name in ("listen", "upstream", "metrics_address", "workers", "tls", "streams"):
        assert getattr(worker.plan, name) == getattr(plan, name)
    assert worker.reloads == 1


def test_flags_still_win_over_the_reread_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "sipwarden.toml"
    config.write_text(BASE)
    flags = GatewayFlags(listen=("udp:127.0.0.1:5099",), allow_public=False)
    worker = worker_for(config, flags)
    assert [ep.port for ep in worker.plan.listen] == [5099]
    config.write_text(BASE.replace("5060", "5061") + "allow_public = true\n")
    with caplog.at_level(logging.INFO):
        worker.reload()
    assert not any("needs a restart" in m for m in caplog.messages)
    assert [ep.port for ep in worker.plan.listen] == [5099] and not worker.plan.allow_public


def test_sighup_without_config_changes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    flags = GatewayFlags(listen=("udp:127.0.0.1:5060",), upstream="udp:127.0.0.1:5070")
    worker = _Worker(GatewayPlan.resolve(flags, Settings()), flags, None, secret=None)
    engine = worker.engine
    worker.reload()
    assert worker.engine is engine and worker.reloads == 0
    assert any("nothing to reload" in m for m in caplog.messages)
