"""``sipwarden gateway`` between real peers on loopback: Kamailio (Debian package) as the
protected upstream, sipsak as the legitimate client (allow-listed as a monitoring probe, as an
operator would), a SIPVicious-style OPTIONS as the scanner.

Everything binds 127.0.0.x, every wait is bounded, and every process is killed in ``finally``.
The scanner sends from 127.0.0.2 so that the ban it earns does not hit the legitimate client
(127.0.0.1); Linux routes the whole of 127.0.0.0/8 to the loopback interface.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sipwarden.sip import Response, parse_message
from tests.conftest import need_tool

pytestmark = pytest.mark.integration

KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
fork=yes
children=1
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
alias="127.0.0.1:{port}"

loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"

request_route {{
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (is_method("ACK")) {{
		exit;
	}}
	if ($tU != "alice") {{
		if (is_method("OPTIONS") && $rU == $null) {{
			sl_send_reply("200", "OK");
			exit;
		}}
		sl_send_reply("404", "Not Found");
		exit;
	}}
	$var(password) = "{password}";
	if (is_method("REGISTER")) {{
		if (!pv_www_authenticate("$td", "$var(password)", "0")) {{
			www_challenge("$td", "0");
			exit;
		}}
		save("location");
		exit;
	}}
	if (is_method("OPTIONS")) {{
		sl_send_reply("200", "OK");
		exit;
	}}
	sl_send_reply("480", "Temporarily Unavailable");
	exit;
}}
"""


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def options(port: int, ua: str, branch: str, local: tuple[str, int]) -> bytes:
    host, lport = local
    return (
        f"OPTIONS sip:100@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{lport};branch={branch};rport\r\nMax-Forwards: 70\r\n"
        f'From: "sipvicious"<sip:100@1.1.1.1>;tag={branch[-8:]}\r\n'
        f'To: "sipvicious"<sip:100@1.1.1.1>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n'
        f"Contact: <sip:100@{host}:{lport}>\r\nUser-Agent: friendly-scanner\r\n"
        "Accept: application/sdp\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def ask(sock: socket.socket, data: bytes, dest: tuple[str, int], wait_s: float) -> bytes | None:
    sock.settimeout(wait_s)
    sock.sendto(data, dest)
    try:
        return sock.recvfrom(65535)[0]
    except TimeoutError:
        return None


def wait_for_kamailio(port: int, log: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        probe = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{sock.getsockname()[1]};branch=z9hG4bKprobe\r\n"
            "From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: probe\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        for _ in range(50):
            if ask(sock, probe, ("127.0.0.1", port), 0.2) is not None:
                return
    pytest.fail(f"kamailio did not answer on 127.0.0.1:{port}: {log.read_text()[-2000:]}")


@contextlib.contextmanager
def running(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def sipsak(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=30, check=False)


def test_gateway_in_front_of_kamailio(tmp_path: Path) -> None:
    kamailio = need_tool("kamailio", "kamailio")
    sipsak_bin = need_tool("sipsak", "sipsak")
    password = secrets.token_hex(8)
    up_port, gw_port = free_udp_port(), free_udp_port()
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(port=up_port, password=password))
    kam_cmd = [kamailio, "-f", str(cfg), "-DD", "-E", "-m", "32", "-M", "4",
               "-P", str(tmp_path / "kamailio.pid")]  # fmt: skip
    # sipsak's From user ("sipsak") is a scanner fingerprint (ET lists the tool): an operator
    # allow-lists their own monitoring probe, as examples/sipwarden.toml shows.
    settings = tmp_path / "sipwarden.toml"
    settings.write_text(
        '[detectors."recon.scanner_fingerprint"]\nallow_sources = ["127.0.0.1/32"]\n'
    )
    gw_cmd = [sys.executable, "-m", "sipwarden", "gateway", "--config", str(settings),
              "--listen", f"udp:127.0.0.1:{gw_port}", "--upstream", f"udp:127.0.0.1:{up_port}",
              "--duration", "60"]  # fmt: skip
    gw_err = tmp_path / "gateway.err"
    with running(kam_cmd, tmp_path / "kamailio.log"):
        wait_for_kamailio(up_port, tmp_path / "kamailio.log")
        with gw_err.open("wb") as err:
            gateway = subprocess.Popen(gw_cmd, stdout=subprocess.PIPE, stderr=err)
        try:
            deadline = time.monotonic() + 15
            while b"listening on" not in gw_err.read_bytes():
                assert gateway.poll() is None, gw_err.read_text()
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.05)

            # 1. A digest REGISTER through the gateway succeeds (401, then 200 from Kamailio).
            register = sipsak(
                sipsak_bin, "-U", "-s", f"sip:alice@127.0.0.1:{gw_port}", "-a", password,
                "-H", "127.0.0.1", "-i", "--timer-t1", "100", "-vv",
            )  # fmt: skip
            assert register.returncode == 0, register.stdout + register.stderr

            # 2. OPTIONS through the gateway gets Kamailio's 200.
            ping = sipsak(
                sipsak_bin, "-s", f"sip:alice@127.0.0.1:{gw_port}", "-u", "alice",
                "-H", "127.0.0.1", "--timer-t1", "100", "-vv",
            )  # fmt: skip
            assert ping.returncode == 0, ping.stdout + ping.stderr
            assert "200 OK" in ping.stdout
            # Kamailio's Server header reached the client without its version (sanitize.py).
            server_lines = [ln for ln in ping.stdout.splitlines() if ln.startswith("Server:")]
            assert server_lines and all(
                not any(ch.isdigit() for ch in ln) for ln in server_lines
            ), server_lines

            # 3. A SIPVicious-style OPTIONS gets nothing back, and neither does its retry.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as scanner:
                scanner.bind(("127.0.0.2", 0))
                local = scanner.getsockname()
                answers = [
                    ask(scanner, options(gw_port, "friendly-scanner", f"z9hG4bKsv{i}", local),
                        ("127.0.0.1", gw_port), 1.0)
                    for i in range(2)
                ]  # fmt: skip
            assert answers == [None, None]
            # The same scanner straight at Kamailio is answered: the gateway made the difference.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as direct:
                direct.bind(("127.0.0.2", 0))
                reply = ask(
                    direct, options(up_port, "friendly-scanner", "z9hG4bKd1", direct.getsockname()),
                    ("127.0.0.1", up_port), 2.0,
                )  # fmt: skip
            assert reply is not None and isinstance(parse_message(reply), Response)

            gateway.send_signal(signal.SIGTERM)  # graceful shutdown prints the report
            out, _ = gateway.communicate(timeout=15)
        finally:
            if gateway.poll() is None:
                gateway.kill()
                gateway.wait(timeout=5)
    assert gateway.returncode == 0, gw_err.read_text()
    report: dict[str, Any] = json.loads(out)
    assert report["dropped"] == {"blocklisted": 1, "scanner": 1}, report
    assert report["forwarded_requests"] >= 3  # REGISTER, its authorised retry, OPTIONS
    assert report["forwarded_responses"] == report["forwarded_requests"]
    assert [b["ip"] for b in report["bans"]] == ["127.0.0.2"]
    scanners = [f for f in report["findings"] if f["detector"].startswith("recon.scanner")]
    assert scanners and all(f["source"]["ip"] == "127.0.0.2" for f in scanners), scanners
