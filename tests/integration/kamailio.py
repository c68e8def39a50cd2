"""A real Kamailio (Debian package) as the protected upstream of integration tests, and
``sipwarden gateway`` run in front of it as a user runs it.

:func:`kamailio_config` writes a small but realistic registrar/proxy configuration: digest
authentication against a per-test table of subscribers (``auth`` + ``pv_www_authenticate`` /
``pv_proxy_authenticate``), ``registrar``/``usrloc`` in memory, ``rr`` (``record_route()`` on
initial INVITEs, ``loose_route()`` in dialogs) and ``tm`` relaying to the callee's registered
contact. Unknown users get 404 while known ones get 401 - the classic enumeration leak svwar
reads - so a test can show that an attack works against Kamailio alone.

:func:`running_kamailio` starts it listening on 127.0.0.1 only, waits (bounded) until it
answers, yields its :class:`Kamailio` handle and kills it in ``finally``. Every request Kamailio
receives is logged as one ``e2e-rx`` line (method, source, Call-ID, To user) so that a test can tell
which hop a message came from; :meth:`Kamailio.received` reads them back.

:func:`running_gateway` runs ``python -m sipwarden gateway`` until it prints that it listens;
:meth:`Gateway.finish` stops it with SIGTERM and returns its JSON exit report.

Imports nothing from ``sipwarden``: the peers must not depend on the code under test.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest

__all__ = [
    "DOMAIN",
    "Gateway",
    "Kamailio",
    "Received",
    "free_port",
    "kamailio_config",
    "running",
    "running_gateway",
    "running_kamailio",
    "stop",
    "subscribers",
]

#: The SIP domain (and digest realm: ``$td`` / ``$fd``) every test user belongs to.
DOMAIN = "127.0.0.1"

#: How long Kamailio may take to answer its first OPTIONS (it forks, loads modules).
START_TIMEOUT_S = 10.0

#: Logged once per request: ``e2e-rx <method> <src ip>:<src port> <call-id> <To user>``.
_RX = re.compile(
    r"e2e-rx (?P<method>\S+) (?P<ip>[0-9.]+):(?P<port>\d+) (?P<call_id>\S+) (?P<to_user>\S+)"
)

_HEAD = """#!KAMAILIO
# Written by tests/integration/kamailio.py for one test; loopback only.
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
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "auth.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"

# usrloc in memory only (db_mode 0 is the default; said here because the test relies on it).
modparam("usrloc", "db_mode", 0)
# Short registrations: nothing outlives the test.
modparam("registrar", "max_expires", 300)
# RFC 3327: keep the Path a proxy (the gateway) added, and route to the binding along it
# (path_mode 0: stored, not echoed - the test clients do not announce Supported: path).
modparam("registrar", "use_path", 1)
modparam("registrar", "path_mode", 0)
"""

_ROUTES = """
request_route {{
	xlog("L_NOTICE", "e2e-rx $rm $si:$sp $ci $tU\\n");
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (has_totag()) {{
		route(WITHINDLG);
		exit;
	}}
	if (is_method("CANCEL")) {{
		if (t_check_trans()) {{
			t_relay();
		}}
		exit;
	}}
	if (is_method("ACK")) {{
		# The ACK of a non-2xx final response is absorbed by tm.
		t_check_trans();
		exit;
	}}
	# Retransmissions of a request tm already handles are absorbed here.
	t_check_trans();

	# Whose request is this? A REGISTER binds its To and an OPTIONS asks about its To;
	# an INVITE is authenticated as its From (the caller).
	if (is_method("REGISTER|OPTIONS")) {{
		$var(user) = $tU;
	}} else {{
		$var(user) = $fU;
	}}
	route(SUBSCRIBER);
	if ($var(password) == "") {{
		if (is_method("OPTIONS") && $rU == $null) {{
			sl_send_reply("200", "OK");
			exit;
		}}
		# Unknown user: a plain 404, what svwar tells apart from the 401 of a real one.
		sl_send_reply("404", "Not Found");
		exit;
	}}
	if (is_method("OPTIONS")) {{
		sl_send_reply("200", "OK");
		exit;
	}}
	if (is_method("REGISTER")) {{
		if (!pv_www_authenticate("$td", "$var(password)", "0") || $au != $var(user)) {{
			# Flags 1: qop="auth" (RFC 3261 §22.4 asks for RFC 2617 digest). SIPVicious 0.3.8's
			# svcrack writes qop=auth into every answer, so without it Kamailio rejects the
			# answers as malformed and the control run could not crack anything.
			www_challenge("$td", "1");
			exit;
		}}
		consume_credentials();
		if (!save("location")) {{
			sl_reply_error();
		}}
		exit;
	}}
	if (!is_method("INVITE")) {{
		sl_send_reply("405", "Method Not Allowed");
		exit;
	}}
	if (!pv_proxy_authenticate("$fd", "$var(password)", "0") || $au != $var(user)) {{
		proxy_challenge("$fd", "1");
		exit;
	}}
	consume_credentials();
	record_route();
	if (!lookup("location")) {{
		sl_send_reply("480", "Temporarily Unavailable");
		exit;
	}}
	if (!t_relay()) {{
		sl_reply_error();
	}}
	exit;
}}

route[WITHINDLG] {{
	if (loose_route()) {{
		if (!t_relay()) {{
			sl_reply_error();
		}}
		exit;
	}}
	if (is_method("ACK")) {{
		if (t_check_trans()) {{
			t_relay();
		}}
		exit;
	}}
	sl_send_reply("404", "Not Here");
}}

route[SUBSCRIBER] {{
	$var(password) = "";
{subscribers}
}}
"""

_USER = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_PASSWORD = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def subscribers(*, weak_extension: str = "103", weak_password: str = "1066") -> dict[str, str]:
    """Users and passwords of one test: ``alice`` (caller), ``bob`` (callee) and extensions
    100-105, every password random except ``weak_extension``'s (for the svcrack control)."""
    users = {"alice": secrets.token_hex(8), "bob": secrets.token_hex(8)}
    users.update({str(ext): secrets.token_hex(8) for ext in range(100, 106)})
    users[weak_extension] = weak_password
    return users


def kamailio_config(port: int, users: Mapping[str, str]) -> str:
    """The configuration text for Kamailio on ``udp:127.0.0.1:port`` with these subscribers."""
    lines = []
    for user, password in users.items():
        # Both end up inside a Kamailio string literal: keep them to a quoting-free alphabet.
        if not _USER.fullmatch(user) or not _PASSWORD.fullmatch(password):
            raise ValueError(f"subscriber {user!r}: user or password outside [A-Za-z0-9_.-]")
        lines.append(f'\tif ($var(user) == "{user}") {{ $var(password) = "{password}"; }}')
    return _HEAD.format(port=port) + _ROUTES.format(subscribers="\n".join(lines))


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM, host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out on ``host`` (free for UDP or TCP, as asked)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Received(NamedTuple):
    """One request as Kamailio logged it."""

    method: str
    source: tuple[str, int]
    call_id: str
    #: ``<null>`` when the To URI has no user part.
    to_user: str


@dataclass
class Kamailio:
    """A running Kamailio: where it listens, who its subscribers are, and its log."""

    port: int
    users: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def received(self, call_id: str | None = None) -> list[Received]:
        """Requests Kamailio logged so far (of one Call-ID when given), oldest first."""
        found = []
        for match in _RX.finditer(self.log.read_text(errors="replace")):
            if call_id is None or match["call_id"] == call_id:
                source = (match["ip"], int(match["port"]))
                found.append(Received(match["method"], source, match["call_id"], match["to_user"]))
        return found


def _options_probe(port: int, local_port: int) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:127.0.0.1>\r\n"
        f"Call-ID: probe-{secrets.token_hex(6)}\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def wait_until_answering(port: int, log: Path, process: subprocess.Popen[bytes]) -> None:
    """Bounded wait for Kamailio's first answer to an OPTIONS; fails with its log otherwise."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.2)
        while time.monotonic() < deadline and process.poll() is None:
            sock.sendto(_options_probe(port, sock.getsockname()[1]), ("127.0.0.1", port))
            try:
                sock.recvfrom(65535)
            except TimeoutError:
                continue
            return
    pytest.fail(
        f"kamailio did not answer on udp:127.0.0.1:{port} within {START_TIMEOUT_S} s "
        f"(exit status {process.poll()}):\n{log.read_text(errors='replace')[-3000:]}"
    )


@contextlib.contextmanager
def running(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` with stdout+stderr into ``log``; terminated (then killed) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 5 s: every process a test started ends here."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def running_kamailio(
    binary: str, workdir: Path, users: Mapping[str, str] | None = None
) -> Iterator[Kamailio]:
    """Kamailio on a free 127.0.0.1 UDP port with ``users`` (default :func:`subscribers`).

    The configuration is checked first (``-c``) so that a syntax error shows Kamailio's own
    message rather than a start timeout.
    """
    table = dict(users) if users is not None else subscribers()
    port = free_port()
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(kamailio_config(port, table))
    check = subprocess.run(
        [binary, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30, check=False
    )
    if check.returncode != 0:
        pytest.fail(f"kamailio rejected its test config:\n{check.stdout}{check.stderr}")
    log = workdir / "kamailio.log"
    # -DD: no daemon, but keep the worker processes; -E: log to stderr; small shared and
    # private memory (-m/-M, MB) since a test needs little.
    cmd = [binary, "-f", str(cfg), "-DD", "-E", "-m", "32", "-M", "4",
           "-P", str(workdir / "kamailio.pid")]  # fmt: skip
    with running(cmd, log) as proc:
        wait_until_answering(port, log, proc)
        yield Kamailio(port=port, users=table, log=log, process=proc)


# -- the gateway in front of it ----------------------------------------------------------------

#: How long ``sipwarden gateway`` may take to print that it listens (imports, binding).
GATEWAY_START_TIMEOUT_S = 15.0


@dataclass
class Gateway:
    """A running ``sipwarden gateway`` (``python -m sipwarden gateway``)."""

    process: subprocess.Popen[str]
    stderr: Path

    def stderr_text(self) -> str:
        return self.stderr.read_text(errors="replace")

    def finish(self) -> dict[str, Any]:
        """SIGTERM (a graceful stop), then the JSON report it prints on stdout."""
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=15)
        assert self.process.returncode == 0, self.stderr_text()[-3000:]
        report: dict[str, Any] = json.loads(out)
        return report


@contextlib.contextmanager
def running_gateway(args: list[str], workdir: Path, name: str = "gateway") -> Iterator[Gateway]:
    """``sipwarden gateway ARGS`` (give it ``--duration`` as a backstop), once it listens.

    Killed in ``finally`` if the test did not :meth:`Gateway.finish` it.
    """
    err_path = workdir / f"{name}.err"
    cmd = [sys.executable, "-m", "sipwarden", "gateway", *args]
    with err_path.open("wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        deadline = time.monotonic() + GATEWAY_START_TIMEOUT_S
        while b"listening on" not in err_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"gateway did not start (exit status {proc.poll()}): {' '.join(args)}\n"
                    + err_path.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.05)
        yield Gateway(proc, err_path)
    finally:
        stop(proc)
