"""``sipwarden gateway`` (the inline firewall) against Kamailio + sanity + pike, same run.

Run ``.venv/bin/python bench/gateway.py`` (2-3 minutes) or ``--quick`` (about 30 s, a smoke run
a test can call). It is a measurement, not a test: it prints tables and exits 0 (``--check``
makes a missed target exit 1; ``--json FILE`` keeps the numbers, by default
``bench/out/gateway.json``). ``bench/README.md`` has the last run's numbers.

Setup (every address on 127.0.0.0/8; every process started is killed in ``finally``)
    CPU 1 (``taskset -c 1``, ``--sut-cpu``): the system under test (SUT), one at a time, started
    fresh for each scenario:

    * **kamailio** (the peer): Kamailio 5.6 ``-x tlsf -X tlsf``, ``children=1`` (one UDP worker:
      the targets are per worker process). Per request: ``mf_process_maxfwd_header("10")``,
      ``sanity_check()`` (the module's default checks), ``pike_check_req()`` (module defaults:
      30 requests per 2 s sampling unit per source IP) unless the source is the allow-listed
      client, then stateless ``forward()`` to the responder (Via added, Max-Forwards
      decremented). Answers come back through the core's stateless reply forwarding (top Via
      checked and popped, sent to the next Via's received/rport).
    * **sipwarden**: ``sipwarden gateway --listen udp:127.0.0.1:A --upstream udp:127.0.0.1:R
      --config FILE``, one process: every detector as shipped (the engine observes requests and
      answers), the default policy, the default sanitizer on the way back; the config only adds
      the allow-listed client to ``[gateway.policy] trusted_peers``.

    CPU 0 (``--gen-cpu``): the load generator (this script, one process) and the **responder**,
    a second Kamailio (``-x tlsf``, 2 children) answering every request
    ``sl_send_reply("200", "OK")`` (ACK: nothing). The ``direct`` row sends the load straight
    to it: it answers far more than either SUT is verified at.

Load
    A phone population, one socket per source address: ``--sources`` (4,096) addresses
    127.1.x.y, each a phone sending REGISTER with digest Authorization (~760 bytes), OPTIONS
    (~500), INVITE with Proxy-Authorization and SDP (~910) and the BYE of that call (~470) in a
    fixed 3:3:2:2 mix. Every request has its own Via branch (carrying the sequence number
    answers are matched by), Call-ID, tags and CSeq. Spread over 4,096 sources, every source
    stays under pike's 15/s and the gateway's default per-source bucket (15/s) up to ~60,000
    requests/s: neither rate limit is configured away. Messages are built before the clock
    starts. Send times are ``time.time_ns()`` just before ``sendto``; receive times are the
    kernel's (``SO_TIMESTAMPNS``), so the generator's own queueing is not latency.

Scenarios
    1. **throughput**: an overload probe at ``--probe-rate``, a milder one at 1.3x what that
       answered, then steps from 95 % of it down by 15 % until at least 99 % of the requests
       are answered 200. Reported per SUT: answered/s and requests per SUT CPU-second (CPU
       time of the SUT's processes from ``/proc/PID/stat``). The machine is shared, so a SUT
       pinned to its CPU still shares it with other work and drops datagrams when descheduled:
       target 1 is judged on requests per CPU-second, answered/s shown beside it.
    2. **latency**: at half sipwarden's throughput, the round trip through the SUT minus the
       round trip straight to the responder (same load, same generator): p50 / p99 / max.
    3. **flood**: spoofed-source INVITEs without credentials from ``--flood-sources``
       addresses 127.2.x.y (sockets never read, as a spoofed source never answers) at each
       SUT's own throughput, while the allow-listed client 127.0.0.9 sends REGISTER at 20/s;
       success = the share of its REGISTERs answered 200 within 2 s, each sent once (no
       retransmission: stricter than a real UA).
    4. with ``--py-spy``: a live profile of the gateway at 90 % of its throughput.

Targets (issue 4 item 5): per worker process, sipwarden >= 0.6x the msgs/s of Kamailio +
sanity + pike; p99 added latency < 1 ms at half sipwarden's throughput; the allow-listed
client's REGISTERs >= 99 % answered under the flood. "msgs/s" counts requests answered per
second: each is two datagrams through the SUT (the request up, the answer down).

Where the time goes (on by default; ``--only-breakdown`` runs it alone): the same requests and
the responder's answers through the gateway core in this process, no sockets - CPU time per
stage (parse, engine, policy, sanitizer, routing), the engine split by tracker, detector and
``Engine.advance``, and each datagram timed alone with the garbage collector's pauses counted;
``--profile N`` adds a cProfile of that replay (``bench/out/gateway.prof``).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import gc
import io
import json
import os
import platform
import pstats
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
ROOT = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from parse import _table  # noqa: E402

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
#: The allow-listed client (sipwarden ``trusted_peers``; Kamailio skips pike for it).
TRUSTED_IP = "127.0.0.9"
#: Load sources are 127.1.x.y, flood sources 127.2.x.y.
LOAD_NET, FLOOD_NET = 1, 2
#: Marker of the generator's branches; the nine digits after it are the sequence number.
BRANCH_MARK = b"branch=z9hG4bKbn"
#: SO_TIMESTAMPNS (linux/asm-generic/socket.h); not exported by Python's socket module.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
#: Kamailio allocators: the Debian build defaults to q_malloc with memory debugging
#: (DBG_SR_MEMORY), several times slower than TLSF; named in the output.
KAMAILIO_ALLOC = ("-x", "tlsf", "-X", "tlsf")
#: Most requests one stream sends back to back when the generator is behind its schedule.
BURST = 16
#: Targets (issue 4 item 5).
TARGET_RATIO = 0.6
TARGET_P99_MS = 1.0
TARGET_CLIENT_OK = 0.99
#: A client REGISTER counts as answered within this (RFC 3261 Timer F would allow 32 s with
#: retransmissions; the client here sends each once).
CLIENT_TIMEOUT_S = 2.0


# --- messages --------------------------------------------------------------------------------

_REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {ip}:{port};rport;branch=z9hG4bKbn{seq:09d}.{h8}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:{user}@example.com>;tag={h8}\r\n"
    "To: <sip:{user}@example.com>\r\n"
    "Call-ID: {h16}-{seq}@{ip}\r\n"
    "CSeq: {cseq} REGISTER\r\n"
    'Contact: <sip:{user}@{ip}:{port};line={h8}>;+sip.instance="<urn:uuid:{uuid}>"\r\n'
    'Authorization: Digest username="{user}", realm="example.com", nonce="{h16}{h8}", '
    'uri="sip:example.com", response="{h16}{h16}", algorithm=MD5, cnonce="{h8}", qop=auth, '
    "nc=00000002\r\n"
    "Expires: 3600\r\n"
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE\r\n"
    "User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
    "Content-Length: 0\r\n\r\n"
)
_OPTIONS = (
    "OPTIONS sip:example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {ip}:{port};rport;branch=z9hG4bKbn{seq:09d}.{h8}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:{user}@example.com>;tag={h8}\r\n"
    "To: <sip:example.com>\r\n"
    "Call-ID: {h16}-{seq}@{ip}\r\n"
    "CSeq: {cseq} OPTIONS\r\n"
    "Contact: <sip:{user}@{ip}:{port}>\r\n"
    "Accept: application/sdp\r\n"
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE\r\n"
    "Supported: replaces, timer, path\r\n"
    "User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
    "Content-Length: 0\r\n\r\n"
)
_SDP = (
    "v=0\r\n"
    "o=- {cseq}{seq} {cseq}{seq} IN IP4 {ip}\r\n"
    "s=SIP Call\r\n"
    "c=IN IP4 {ip}\r\n"
    "t=0 0\r\n"
    "m=audio {rtp} RTP/AVP 8 0 101\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=sendrecv\r\n"
)
_INVITE = (
    "INVITE sip:{callee}@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {ip}:{port};rport;branch=z9hG4bKbn{seq:09d}.{h8}\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Ext {user}" <sip:{user}@example.com>;tag={h8}\r\n'
    "To: <sip:{callee}@example.com>\r\n"
    "Call-ID: {call}@{ip}\r\n"
    "CSeq: {cseq} INVITE\r\n"
    "Contact: <sip:{user}@{ip}:{port}>\r\n"
    'Proxy-Authorization: Digest username="{user}", realm="example.com", nonce="{h16}{h8}", '
    'uri="sip:{callee}@example.com", response="{h16}{h16}", algorithm=MD5\r\n'
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE\r\n"
    "Supported: replaces, timer\r\n"
    "User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n\r\n"
)
_BYE = (
    "BYE sip:{callee}@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {ip}:{port};rport;branch=z9hG4bKbn{seq:09d}.{h8}\r\n"
    "Max-Forwards: 70\r\n"
    'From: "Ext {user}" <sip:{user}@example.com>;tag={tag}\r\n'
    "To: <sip:{callee}@example.com>;tag={h8}\r\n"
    "Call-ID: {call}@{ip}\r\n"
    "CSeq: {cseq} BYE\r\n"
    'Reason: Q.850;cause=16;text="Normal call clearing"\r\n'
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, INFO, UPDATE\r\n"
    "User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
    "Content-Length: 0\r\n\r\n"
)
#: Flood requests: no credentials, random users and callees, a scanner-free User-Agent.
_FLOOD_INVITE = (
    "INVITE sip:{callee}@example.com SIP/2.0\r\n"
    "Via: SIP/2.0/UDP {ip}:{port};rport;branch=z9hG4bKfl{seq:09d}.{h8}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:{user}@example.com>;tag={h8}\r\n"
    "To: <sip:{callee}@example.com>\r\n"
    "Call-ID: {h16}{seq}@{ip}\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:{user}@{ip}:{port}>\r\n"
    "User-Agent: Linphone/5.2.0\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: {length}\r\n\r\n"
)

#: The load's mix by position in a cycle of ten requests.
_MIX: tuple[str, ...] = ("REGISTER", "OPTIONS", "INVITE", "REGISTER", "OPTIONS")
_MIX += ("BYE", "OPTIONS", "INVITE", "REGISTER", "BYE")


_MASK64 = (1 << 64) - 1


def _h(seq: int, salt: int) -> str:
    """32 deterministic pseudo-random hex digits for ``seq`` (64-bit multiply-xorshift mixes;
    cheap enough to build messages while sending)."""
    v = ((seq + 1) * (2 * salt + 1) * 0x9E3779B97F4A7C15) & _MASK64
    v ^= v >> 29
    w = (v * 0xBF58476D1CE4E5B9) & _MASK64
    v = (w ^ (w >> 32)) * 0x94D049BB133111EB & _MASK64
    return f"{w ^ (w >> 31):016x}{v ^ (v >> 29):016x}"


def _prefill(template: str, **fields: str) -> str:
    """``template`` with the per-source ``fields`` filled in, the per-message ones kept."""
    for name, value in fields.items():
        template = template.replace("{" + name + "}", value)
    return template


class Phones:
    """The load: request ``seq`` comes from source ``seq % len(addresses)``; each source is a
    phone with its own extension. BYE ends the INVITE the same phone sent before it."""

    def __init__(self, addresses: list[tuple[str, int]]) -> None:
        self.addresses = addresses
        # Per source, each kind's template with its address, port and user already in.
        self._templates: list[dict[str, str]] = []
        for index, (ip, port) in enumerate(addresses):
            uuid = _h(index, 3)
            uuid = f"{uuid[:8]}-{uuid[8:12]}-4{uuid[13:16]}-a{uuid[17:20]}-{uuid[20:]}"
            fields = {"ip": ip, "port": str(port), "user": str(2000 + index), "uuid": uuid}
            self._templates.append(
                {
                    "REGISTER": _prefill(_REGISTER, **fields),
                    "OPTIONS": _prefill(_OPTIONS, **fields),
                    "INVITE": _prefill(_INVITE, **fields),
                    "BYE": _prefill(_BYE, **fields),
                    "SDP": _prefill(_SDP, **fields),
                }
            )

    def kind(self, seq: int) -> str:
        return _MIX[(seq // len(self.addresses)) % len(_MIX)]

    def message(self, seq: int) -> bytes:
        n = len(self.addresses)
        index = seq % n
        cycle = seq // n
        position = cycle % len(_MIX)
        kind = _MIX[position]
        templates = self._templates[index]
        h = _h(seq, 1)
        h8, h16 = h[:8], h[8:24]
        if kind in ("REGISTER", "OPTIONS"):
            return templates[kind].format(seq=seq, cseq=cycle + 1, h8=h8, h16=h16).encode()
        # The INVITE of this cycle and its BYE share Call-ID, callee and From tag.
        invite_cycle = cycle if kind == "INVITE" else cycle - (3 if position == 5 else 2)
        call_seq = invite_cycle * n + index
        c = _h(call_seq, 4)
        callee = str(5550100 + (call_seq * 7919) % 100_000)
        if kind == "INVITE":
            sdp = templates["SDP"].format(seq=seq, cseq=cycle + 1, rtp=10000 + 2 * (seq % 5000))
            head = templates[kind].format(
                seq=seq,
                cseq=cycle + 1,
                h8=c[24:],
                h16=h16,
                callee=callee,
                call=c[:24],
                length=len(sdp),
            )
            return (head + sdp).encode()
        return (
            templates[kind]
            .format(seq=seq, cseq=cycle + 1, h8=h8, tag=c[24:], callee=callee, call=c[:24])
            .encode()
        )


def flood_message(seq: int, address: tuple[str, int]) -> bytes:
    ip, port = address
    h = _h(seq, 5)
    sdp = _SDP.format(ip=ip, seq=seq, cseq=1, rtp=20000 + 2 * (seq % 5000))
    return (
        _FLOOD_INVITE.format(
            ip=ip,
            port=port,
            seq=seq,
            h8=h[:8],
            h16=h[8:24],
            callee=str(5550100 + (seq * 104729) % 1_000_000),
            user=str(100 + (seq * 31) % 9000),
            length=len(sdp),
        )
        + sdp
    ).encode()


def client_message(seq: int, address: tuple[str, int]) -> bytes:
    ip, port = address
    h = _h(seq, 7)
    return _REGISTER.format(
        ip=ip,
        port=port,
        seq=seq,
        user="trunk-gw",
        cseq=seq + 1,
        h8=h[:8],
        h16=h[8:24],
        uuid="6e1d8a52-2b31-4c1e-a1f0-0b5d5c1f3e01",
    ).encode()


# --- processes -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _pin(cpu: int, cmd: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(cpu), *cmd] if taskset else cmd


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Kamailio forks its workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children.get(current, [])
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (``/proc/PID/stat`` fields 14 and 15)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


RESPONDER_CFG = """#!KAMAILIO
# bench/gateway.py upstream responder: every request answered 200 statelessly, ACK ignored.
debug=0
log_stderror=yes
fork=yes
children={children}
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
loadmodule "sl.so"
request_route {{
	if (method == "ACK") {{ exit; }}
	sl_send_reply("200", "OK");
	exit;
}}
"""

PEER_CFG = """#!KAMAILIO
# bench/gateway.py peer SUT: one worker; maxfwd, sanity (default checks), pike (defaults:
# 30 requests per 2 s per source IP) for every source but the allow-listed client, then a
# stateless forward to the responder. Replies: the core's stateless reply forwarding.
debug=0
log_stderror=yes
fork=yes
children=1
disable_tcp=yes
auto_aliases=no
listen=udp:127.0.0.1:{port}
loadmodule "sl.so"
loadmodule "maxfwd.so"
loadmodule "sanity.so"
loadmodule "pike.so"
modparam("pike", "sampling_time_unit", 2)
modparam("pike", "reqs_density_per_unit", 30)
request_route {{
	if (!mf_process_maxfwd_header("10")) {{
		sl_send_reply("483", "Too Many Hops");
		exit;
	}}
	if (!sanity_check()) {{ exit; }}
	if (src_ip != {trusted}) {{
		if (!pike_check_req()) {{ exit; }}
	}}
	forward("127.0.0.1", {upstream});
	exit;
}}
"""

GATEWAY_TOML = """# bench/gateway.py: detectors and policy as shipped; the client trusted.
[gateway.policy]
trusted_peers = ["{trusted}/32"]
"""


@dataclasses.dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def pids(self) -> list[int]:
        return _tree(self.proc.pid)


class Processes:
    """Starts the responder and the SUTs; kills every one of them on exit."""

    def __init__(self, work: Path, gen_cpu: int, sut_cpu: int, nice: int = 0) -> None:
        self.work = work
        #: ``nice -n`` for every process started (0: as inherited).
        self.nice = nice
        self.gen_cpu = gen_cpu
        self.sut_cpu = sut_cpu
        self.running: list[Process] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.running):
            self.stop(process)

    def _spawn(self, name: str, cmd: list[str], port: int, cpu: int) -> Process:
        log = self.work / f"{name}.log"
        with log.open("wb") as err:
            if self.nice:
                cmd = ["nice", "-n", str(self.nice), *cmd]
            proc = subprocess.Popen(
                _pin(cpu, cmd),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                start_new_session=True,  # its own group: the whole Kamailio tree is killed
            )
        process = Process(name, proc, port, log)
        self.running.append(process)
        return process

    def kamailio(self, name: str, config: str, port: int, cpu: int) -> Process:
        path = self.work / f"{name}.cfg"
        path.write_text(config, encoding="utf-8")
        check = subprocess.run(
            [KAMAILIO, "-c", "-f", str(path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if check.returncode != 0:
            raise RuntimeError(f"kamailio rejects {path}: {check.stderr[-1500:]}")
        cmd = [KAMAILIO, "-f", str(path), "-DD", "-E", *KAMAILIO_ALLOC, "-m", "64", "-M", "8"]
        return self._spawn(name, cmd, port, cpu)

    def responder(self, port: int, children: int) -> Process:
        cfg = RESPONDER_CFG.format(port=port, children=children)
        return self.kamailio("responder", cfg, port, self.gen_cpu)

    def peer(self, port: int, upstream: int) -> Process:
        cfg = PEER_CFG.format(port=port, upstream=upstream, trusted=TRUSTED_IP)
        return self.kamailio("kamailio", cfg, port, self.sut_cpu)

    def gateway(self, port: int, upstream: int) -> Process:
        config = self.work / "gateway.toml"
        config.write_text(GATEWAY_TOML.format(trusted=TRUSTED_IP), encoding="utf-8")
        exe = Path(sys.executable).with_name("sipwarden")
        base = [str(exe)] if exe.exists() else [sys.executable, "-m", "sipwarden"]
        cmd = [*base, "gateway", "--listen", f"udp:127.0.0.1:{port}"]
        cmd += ["--upstream", f"udp:127.0.0.1:{upstream}", "--config", str(config)]
        cmd += ["--log-format", "json"]
        return self._spawn("sipwarden", cmd, port, self.sut_cpu)

    def stop(self, process: Process) -> bytes:
        """SIGTERM the process group, SIGKILL after 10 s; its stdout (the gateway's report)."""
        if process in self.running:
            self.running.remove(process)
        proc = process.proc
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # forked workers that outlived the main one
        return out or b""


def wait_answering(port: int, process: Process, timeout: float = 20.0) -> None:
    """Send OPTIONS until one is answered 200 through ``port`` (the chain is up)."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        address = probe.getsockname()
        probe.settimeout(0.2)
        while time.monotonic() < deadline:
            if process.proc.poll() is not None:
                tail = process.log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{process.name} exited {process.proc.returncode}: {tail}")
            probe.sendto(Phones([address]).message(0), ("127.0.0.1", port))
            with contextlib.suppress(TimeoutError):
                while True:
                    data = probe.recv(65535)
                    if data.startswith(b"SIP/2.0 200"):
                        return
    raise RuntimeError(f"{process.name} on port {port} did not answer within {timeout:.0f} s")


def udp_drops(sut_port: int, responder_port: int) -> Counter[str]:
    """Datagrams the kernel dropped so far (``/proc/net/udp`` "drops": receive buffer full),
    by whose socket: the SUT's (its listen socket, and its socket connected to the responder),
    the responder's, the generator's. The flood's sinks drop by design and are left out."""
    out: Counter[str] = Counter()
    try:
        with open("/proc/net/udp", encoding="ascii") as table:
            next(table)
            for line in table:
                fields = line.split()
                local_ip, local_port = fields[1].split(":")
                remote_port = int(fields[2].split(":")[1], 16)
                drops = int(fields[-1])
                if not drops:
                    continue
                port = int(local_port, 16)
                second = int(local_ip[4:6], 16)  # 127.<second>.x.y, little-endian hex
                if port == responder_port:
                    out["responder"] += drops
                elif port == sut_port or remote_port == responder_port:
                    out["sut"] += drops
                elif second == FLOOD_NET:
                    continue
                else:
                    out["generator"] += drops
    except OSError:
        pass
    return out


# --- the load generator ----------------------------------------------------------------------


def _source_ip(net: int, i: int) -> str:
    """The ``i``-th source address of ``net``: 127.net.x.y with y in 1..254."""
    return f"127.{net}.{i // 254}.{i % 254 + 1}"


def _sockets(net: int, count: int, rcvbuf: int | None) -> list[socket.socket]:
    out = []
    for i in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((_source_ip(net, i), 0))
        sock.setblocking(False)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        out.append(sock)
    return out


@dataclasses.dataclass
class Stream:
    """Requests sent at ``rate``/s, built before the clock starts (the generator's hot loop
    is then ``sendto`` and ``recvmsg`` only): (socket, datagram) per request."""

    rate: float
    packets: list[tuple[socket.socket, bytes]]
    #: Answers to this stream are collected and matched (the load, the client).
    tracked: bool
    #: Sequence number of the stream's first request (answers are matched by it).
    base: int = 0
    sent: int = 0
    send_errors: int = 0

    @property
    def count(self) -> int:
        return len(self.packets)


@dataclasses.dataclass
class LoadResult:
    offered_rate: float
    duration_s: float
    sent: int
    send_errors: int
    answered: int
    statuses: dict[str, int]
    rtt_ns: list[int]
    sut_cpu_s: float
    sent_span_s: float
    #: From the first send to the last answer collected (the SUT's CPU time is over this).
    elapsed_s: float = 0.0
    #: Kernel receive-buffer drops during the run by socket owner (see :func:`udp_drops`).
    drops: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def sent_rate(self) -> float:
        return self.sent / self.sent_span_s if self.sent_span_s else 0.0

    @property
    def answered_rate(self) -> float:
        return self.answered / self.duration_s if self.duration_s else 0.0

    @property
    def answered_share(self) -> float:
        return self.answered / self.sent if self.sent else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self.sut_cpu_s / self.answered * 1e6 if self.answered else 0.0


class Generator:
    """One process, non-blocking sockets, epoll; paced by the clock, bursts of at most
    ``BURST``."""

    def __init__(self, sources: int, flood_sources: int) -> None:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = sources + flood_sources + 256
        if soft < need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
        self.load = _sockets(LOAD_NET, sources, None)
        # Spoofed sources never read their answers: a small buffer that the kernel drops into.
        self.flood = _sockets(FLOOD_NET, flood_sources, 4096) if flood_sources else []
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.bind((TRUSTED_IP, 0))
        client.setblocking(False)
        self.client = [client]
        for sock in [*self.load, client]:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
        self.phones = Phones([s.getsockname() for s in self.load])
        self.flood_addresses = [s.getsockname() for s in self.flood]
        self.client_address = client.getsockname()
        self.poll = select.epoll()
        self._by_fd = {s.fileno(): s for s in [*self.load, client]}
        for fd in self._by_fd:
            self.poll.register(fd, select.EPOLLIN)
        self.seq = 0  # load sequence numbers continue across runs: every message is new

    def close(self) -> None:
        self.poll.close()
        for sock in [*self.load, *self.flood, *self.client]:
            sock.close()

    def _take(self, count: int) -> int:
        base = self.seq
        self.seq += count
        return base

    def load_stream(self, rate: float, duration: float) -> Stream:
        count = int(rate * duration)
        base = self._take(count)
        socks, phones, n = self.load, self.phones, len(self.load)
        packets = [(socks[seq % n], phones.message(seq)) for seq in range(base, base + count)]
        return Stream(rate, packets, tracked=True, base=base)

    def flood_stream(self, rate: float, duration: float) -> Stream:
        count = int(rate * duration)
        base = self._take(count)
        socks, addresses, n = self.flood, self.flood_addresses, len(self.flood)
        packets = [(socks[i % n], flood_message(base + i, addresses[i % n])) for i in range(count)]
        return Stream(rate, packets, tracked=False, base=base)

    def client_stream(self, rate: float, duration: float) -> Stream:
        count = int(rate * duration)
        base = self._take(count)
        sock, address = self.client[0], self.client_address
        packets = [(sock, client_message(base + i, address)) for i in range(count)]
        return Stream(rate, packets, tracked=True, base=base)

    def run(
        self,
        dest: tuple[str, int],
        streams: list[Stream],
        duration: float,
        sut_pids: list[int],
        grace: float = CLIENT_TIMEOUT_S,
        responder_port: int = 0,
    ) -> LoadResult:
        """Send every stream for ``duration`` s; collect answers to the tracked one until
        ``grace`` s after the last send (or all answered)."""
        tracked = next(s for s in streams if s.tracked)
        base = tracked.base
        sent_ns = [0] * tracked.count
        rtt = [0] * tracked.count
        answered = bytearray(tracked.count)
        statuses: Counter[str] = Counter()
        answered_count = 0
        anc = socket.CMSG_SPACE(16)
        by_fd, poll = self._by_fd, self.poll
        time_ns, perf = time.time_ns, time.perf_counter
        unpack = struct.Struct("qq").unpack
        mark, mark_len = BRANCH_MARK, len(BRANCH_MARK)
        self._drain_all()

        def receive(timeout: float) -> None:
            nonlocal answered_count
            for fd, _ in poll.poll(timeout):
                sock = by_fd[fd]
                while True:
                    try:
                        data, ancdata, _, _ = sock.recvmsg(65535, anc)
                    except BlockingIOError:
                        break
                    at = data.find(mark)
                    if at < 0:
                        continue
                    index = int(data[at + mark_len : at + mark_len + 9]) - base
                    if not 0 <= index < len(answered) or answered[index]:
                        continue
                    status = data[8:11].decode("ascii", "replace")
                    statuses[status] += 1
                    if status != "200":
                        continue
                    answered[index] = 1
                    answered_count += 1
                    if ancdata:
                        sec, nsec = unpack(ancdata[0][2][:16])
                        rtt[index] = sec * 1_000_000_000 + nsec - sent_ns[index]

        drops_before = udp_drops(dest[1], responder_port)
        cpu_before = cpu_seconds(sut_pids)
        start = perf()
        end = start + duration
        last_send = start
        while True:
            now = perf()
            if now >= end:
                break
            elapsed = now - start
            idle = True
            for stream in streams:
                due = min(int(elapsed * stream.rate) + 1, stream.count, stream.sent + BURST)
                if stream.sent >= due:
                    continue
                idle = False
                packets, sent = stream.packets, stream.sent
                while sent < due:
                    sock, data = packets[sent]
                    if stream.tracked:
                        sent_ns[sent] = time_ns()
                    try:
                        sock.sendto(data, dest)
                    except OSError:  # ENOBUFS/EAGAIN: counted, not retried
                        stream.send_errors += 1
                    sent += 1
                stream.sent = sent
                last_send = perf()
            if idle:
                next_due = min(
                    (s.sent / s.rate for s in streams if s.sent < s.count), default=duration
                )
                receive(max(0.0, min(0.001, start + next_due - perf())))
            else:
                receive(0)
        send_end = perf()
        deadline = send_end + grace
        while answered_count < tracked.sent and perf() < deadline:
            receive(0.01)
        cpu_after = cpu_seconds(sut_pids)
        drops = udp_drops(dest[1], responder_port)
        drops.subtract(drops_before)
        rtts = [rtt[i] for i in range(tracked.sent) if answered[i] and rtt[i] > 0]
        return LoadResult(
            offered_rate=tracked.rate,
            duration_s=duration,
            sent=tracked.sent,
            send_errors=tracked.send_errors,
            answered=answered_count,
            statuses=dict(statuses),
            rtt_ns=rtts,
            sut_cpu_s=cpu_after - cpu_before,
            sent_span_s=max(1e-9, last_send - start),
            elapsed_s=perf() - start,
            drops={k: v for k, v in drops.items() if v > 0},
        )

    def _drain_all(self) -> None:
        """Throw away late answers of an earlier run."""
        for fd, _ in self.poll.poll(0):
            sock = self._by_fd[fd]
            with contextlib.suppress(BlockingIOError):
                while True:
                    sock.recv(65535)


# --- scenarios -------------------------------------------------------------------------------


def percentile(values: list[int], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))])


@dataclasses.dataclass
class Throughput:
    probe: LoadResult
    verified: list[LoadResult]
    #: Highest verified rate (answered/s) with >= 99 % answered; None: no step reached it.
    rate: float | None
    #: The generator could not overload the SUT: nearly all of its fastest offer was answered.
    generator_bound: bool

    @property
    def basis(self) -> LoadResult:
        """The run the numbers come from: the verified one, else the step with the largest
        share answered (the least overloaded), else the probe."""
        if self.rate is not None:
            return next(r for r in self.verified if r.answered_share >= 0.99)
        return max([self.probe, *self.verified], key=lambda r: r.answered_share)

    @property
    def saturation(self) -> float:
        """Requests answered per second in the basis run."""
        return self.basis.answered_rate

    @property
    def per_cpu_s(self) -> float:
        """Requests answered per CPU-second of the SUT's own processes (its throughput on a
        core of its own; when generator-bound, its capacity extrapolated)."""
        run = self.basis
        return run.answered / run.sut_cpu_s if run.sut_cpu_s > 0 else 0.0


class Bench:
    def __init__(self, args: argparse.Namespace, procs: Processes, gen: Generator) -> None:
        self.args = args
        self.procs = procs
        self.gen = gen
        self.responder_port = _free_port()
        self.responder: Process | None = None
        self.reports: dict[str, Any] = {}

    def start_responder(self) -> None:
        self.responder = self.procs.responder(self.responder_port, self.args.responder_children)
        wait_answering(self.responder_port, self.responder)

    @contextlib.contextmanager
    def sut(self, name: str) -> Iterator[Process]:
        """A fresh SUT (``kamailio`` or ``sipwarden``) for one scenario; stopped after it."""
        port = _free_port()
        if name == "kamailio":
            process = self.procs.peer(port, self.responder_port)
        elif name == "sipwarden":
            process = self.procs.gateway(port, self.responder_port)
        else:  # "direct": the responder itself
            assert self.responder is not None
            yield self.responder
            return
        try:
            wait_answering(port, process)
            time.sleep(0.2)  # the probe's answer path settles; pike forgets nothing here
            yield process
        finally:
            out = self.procs.stop(process)
            if name == "sipwarden":
                self.reports.setdefault("sipwarden", []).append(_gateway_report(out))

    def load(self, process: Process, rate: float, duration: float) -> LoadResult:
        stream = self.gen.load_stream(rate, duration)
        pids = process.pids()
        dest = ("127.0.0.1", process.port)
        return self.gen.run(dest, [stream], duration, pids, 1.0, self.responder_port)

    def throughput(self, name: str) -> Throughput:
        """Overload probes, then verification runs stepping down until >= 99 % answered.
        ``direct`` (the responder alone) gets the first probe only: it shows the responder
        answers at least what the generator can offer."""
        args = self.args
        with self.sut(name) as process:
            self.load(process, 500.0, 0.5)  # warm-up: caches, first-sight tables
            first = self.load(process, args.probe_rate, args.probe_s / 2)
            generator_bound = first.answered_share >= 0.97
            if name == "direct":
                return Throughput(first, [], None, generator_bound)
            # Far above any capacity first; then 1.3x what that answered, a milder overload
            # (a SUT may answer less under a heavy overload than at its limit).
            probe = first
            milder = max(100.0, first.answered_rate * 1.3)
            if milder < 0.8 * first.sent_rate:
                probe = self.load(process, milder, args.probe_s)
            verified: list[LoadResult] = []
            rate = 0.95 * min(probe.answered_rate, probe.sent_rate)
            found: float | None = None
            for _ in range(args.steps):
                run = self.load(process, rate, args.verify_s)
                verified.append(run)
                if run.answered_share >= 0.99 and run.sent_rate >= 0.97 * rate:
                    found = run.answered_rate
                    break
                rate *= 0.85
        if probe is not first:
            verified.insert(0, probe)
        return Throughput(first, verified, found, generator_bound)

    def latency(self, name: str, rate: float) -> LoadResult:
        with self.sut(name) as process:
            self.load(process, min(500.0, rate), 0.5)  # warm-up
            return self.load(process, rate, self.args.latency_s)

    def flood(self, name: str, rate: float) -> tuple[LoadResult, int]:
        args = self.args
        with self.sut(name) as process:
            duration = args.flood_s
            flood = self.gen.flood_stream(rate, duration)
            client = self.gen.client_stream(args.client_rate, duration)
            dest = ("127.0.0.1", process.port)
            streams = [flood, client]
            result = self.gen.run(
                dest, streams, duration, process.pids(), CLIENT_TIMEOUT_S, self.responder_port
            )
            return result, flood.sent


def _gateway_report(out: bytes) -> dict[str, Any]:
    """The gateway's exit report, summarised: counters, drops and findings by detector."""
    try:
        report = json.loads(out)
    except ValueError:
        return {"error": out[-500:].decode("utf-8", "replace")}
    findings: Counter[str] = Counter()
    for finding in report.get("findings", []):
        findings[f"{finding['detector']} ({finding['severity']})"] += 1
    return {
        "received": report.get("received"),
        "forwarded_requests": report.get("forwarded_requests"),
        "forwarded_responses": report.get("forwarded_responses"),
        "dropped": report.get("dropped"),
        "rejected": report.get("rejected"),
        "engine_errors": report.get("engine_errors"),
        "internal_errors": report.get("internal_errors"),
        "bans": len(report.get("bans", [])),
        "findings": dict(findings),
    }


# --- where the time goes ---------------------------------------------------------------------


def _answer(request: bytes) -> bytes:
    """What the responder's ``sl_send_reply("200", "OK")`` sends back for ``request``: its
    Via, From, To (a to-tag added), Call-ID and CSeq, a Server header, no body."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    keep = (b"via:", b"from:", b"to:", b"call-id:", b"cseq:")
    lines = [b"SIP/2.0 200 OK"]
    for line in head:
        low = line.lower()
        if low.startswith(keep):
            tag = b";tag=4a0c3f7b2d1e5a6c9b8f0e1d2c3b4a59.3f2e"
            add = low.startswith(b"to:") and b";tag=" not in low
            lines.append(line + tag if add else line)
    lines += [b"Server: kamailio (5.6.3 (x86_64/linux))", b"Content-Length: 0", b"", b""]
    return b"\r\n".join(lines)


def _engine_parts(settings: Any, observations: list[Any]) -> dict[str, float]:
    """Seconds spent in the tracker, in each detector (observe, on_call, on_transaction) and
    in ``Engine.advance`` over ``observations``, with a fresh engine; the rest is the engine's
    fan-out and episode bookkeeping. Wall clock per call (``perf_counter``; the caller scales
    the parts to the pass's CPU time); the clock's own cost is measured on a no-op and taken
    off."""
    from sipwarden.detect import Engine

    perf = time.perf_counter
    engine = Engine(settings.build_detectors(), settings.engine)
    spent: dict[str, float] = {}
    calls: Counter[str] = Counter()

    def wrap(obj: Any, attr: str, label: str) -> None:
        inner = getattr(obj, attr, None)
        if inner is None:
            return

        def timed(*a: Any) -> Any:
            started = perf()
            try:
                return inner(*a)
            finally:
                spent[label] = spent.get(label, 0.0) + perf() - started
                calls[label] += 1

        with contextlib.suppress(AttributeError):  # a slotted object: left untimed
            setattr(obj, attr, timed)

    # advance() (called by observe whenever packet time moves) polls every timed detector's
    # next_deadline() and runs the due advance()s: all of that under one label.
    wrap(engine, "advance", "engine.advance (deadlines, windows)")
    wrap(engine.tracker, "observe", "tracker")
    for detector in engine.detectors:
        for attr in ("observe", "on_call", "on_transaction"):
            wrap(detector, attr, detector.id)

    class _Noop:
        def f(self) -> None:
            return None

    noop = _Noop()
    wrap(noop, "f", "clock")
    for _ in range(10_000):
        noop.f()
    clock = spent.pop("clock") / calls.pop("clock")  # what timing adds to one timed call
    start = perf()
    for obs in observations:
        engine.observe(obs)
    total = perf() - start
    out: dict[str, float] = {}
    for label, seconds in spent.items():
        out[label] = max(0.0, seconds - calls[label] * clock)
    out["engine (fan-out, episodes)"] = max(0.0, total - sum(out.values()))
    return out


def _stalls(proxy: Any, sequence: list[Any]) -> dict[str, float]:
    """Per-datagram wall time of ``proxy.on_datagram`` over ``sequence`` (p50/p99/max µs) and
    the garbage collector's pauses meanwhile (count, total and longest ms, by generation)."""
    perf = time.perf_counter_ns
    pauses: list[tuple[int, int]] = []
    began = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = perf()
        else:
            pauses.append((info["generation"], perf() - began[0]))

    each: list[int] = []
    gc.callbacks.append(on_gc)
    try:
        for data, src, local, now in sequence:
            started = perf()
            proxy.on_datagram(data, src, local, now)
            each.append(perf() - started)
    finally:
        gc.callbacks.remove(on_gc)
    gen2 = [ns for generation, ns in pauses if generation == 2]
    return {
        "p50_us": percentile(each, 0.5) / 1e3,
        "p99_us": percentile(each, 0.99) / 1e3,
        "max_us": max(each, default=0) / 1e3,
        "gc_pauses": len(pauses),
        "gc_total_ms": sum(ns for _, ns in pauses) / 1e6,
        "gc_max_ms": max((ns for _, ns in pauses), default=0) / 1e6,
        "gc_gen2": len(gen2),
        "gc_gen2_max_ms": max(gen2, default=0) / 1e6,
    }


def _keep_min(timings: dict[str, float], key: str, value: float) -> None:
    timings[key] = min(value, timings.get(key, value))


def breakdown(n_sources: int, messages: int, profile_top: int, repeat: int) -> dict[str, Any]:
    """Per-message µs of each stage of the gateway core, in this process, no sockets.

    The proxy is built as ``sipwarden gateway`` builds it (Settings from the bench's config:
    every detector, the default policy through the Enforcer, the default sanitizer); each
    request is followed by the responder's 200 coming back from the upstream. Stages are timed
    in separate passes over fresh state, so each number includes what that stage's caches do
    over the whole sequence: parse (``parse_message``, eager part only: typed headers are
    parsed on first use, so that cost lands in the stage that reads them first),
    ``engine.observe``, the policy (``Enforcer``), and the proxy's own routing and
    serialising (``on_datagram`` minus the other three)."""
    from sipwarden.config import parse_settings
    from sipwarden.detect import Engine
    from sipwarden.detect.observation import Observation
    from sipwarden.gateway.enforcer import Enforcer
    from sipwarden.gateway.policy import Policy
    from sipwarden.gateway.proxy import ProxyConfig, StatelessProxy
    from sipwarden.gateway.sanitize import Sanitizer
    from sipwarden.net import Endpoint, Transport
    from sipwarden.sip import parse_message

    settings = parse_settings(tomllib.loads(GATEWAY_TOML.format(trusted=TRUSTED_IP)), "bench")
    listen = Endpoint("127.0.0.1", 5060, Transport.UDP)
    upstream = Endpoint("127.0.0.1", 5070, Transport.UDP)
    upstream_local = Endpoint("127.0.0.1", 5061, Transport.UDP)
    addresses = [(_source_ip(LOAD_NET, i), 40000 + i) for i in range(n_sources)]
    phones = Phones(addresses)
    requests = [phones.message(seq) for seq in range(messages)]

    def build() -> StatelessProxy:
        engine = Engine(settings.build_detectors(), settings.engine)
        policy = Enforcer(Policy(settings.gateway.policy))
        config = ProxyConfig((listen,), upstream, upstream_local, b"k" * 32)
        return StatelessProxy(config, engine, policy, Sanitizer(settings.gateway.sanitize).outgoing)

    # The datagram sequence the gateway sees: request in, (forwarded), answer back.
    proxy = build()
    t0 = 1_800_000_000.0
    sequence: list[tuple[bytes, Endpoint, Endpoint, float]] = []
    forwarded = answered = 0
    for i, data in enumerate(requests):
        ip, port = addresses[i % n_sources]
        now = t0 + i * 0.0005  # 2,000 requests/s of packet time
        src = Endpoint(ip, port, Transport.UDP)
        sequence.append((data, src, listen, now))
        sends = proxy.on_datagram(data, src, listen, now)
        if sends and sends[0].dest == upstream:
            forwarded += 1
            answer = _answer(sends[0].data)
            sequence.append((answer, upstream, upstream_local, now + 0.0002))
            if proxy.on_datagram(answer, upstream, upstream_local, now + 0.0002):
                answered += 1
    stats = proxy.stats

    # CPU time of this process, not wall time: a neighbour on the core must not count.
    clock = time.process_time
    timings: dict[str, float] = {}

    # Each datagram timed on its own (wall clock) with the collector's pauses counted: a long
    # single datagram (a window closing, a full collection) is latency. The harness's own
    # objects (the datagram sequence, the modules) are frozen out of the collector's way
    # first, so its pauses are about what the gateway core allocates.
    del proxy
    gc.collect()
    gc.freeze()
    try:
        stalls = _stalls(build(), sequence)
    finally:
        gc.unfreeze()

    def observations_of(messages: list[Any]) -> list[Observation]:
        return [
            Observation(now, 0, src, local, message, None, len(data))
            for (data, src, local, now), message in zip(sequence, messages, strict=True)
        ]

    # Each pass runs ``repeat`` times over fresh state (new proxy, engine, freshly parsed
    # messages: a message caches its typed headers and defects); the fastest counts.
    for _ in range(repeat):
        # 1. the whole core; the outgoing edit (sanitizer) timed on the side
        proxy = build()
        outgoing = proxy.outgoing
        assert outgoing is not None
        spent_sanitizing = [0.0]

        def timed_outgoing(*args: Any, _inner: Any = outgoing, _acc: Any = spent_sanitizing) -> Any:
            started = clock()
            try:
                return _inner(*args)
            finally:
                _acc[0] += clock() - started

        proxy.outgoing = timed_outgoing
        start = clock()
        for data, src, local, now in sequence:
            proxy.on_datagram(data, src, local, now)
        _keep_min(timings, "all", clock() - start)
        _keep_min(timings, "sanitize", spent_sanitizing[0])

        # 2. parse only
        start = clock()
        parsed = [parse_message(data) for data, _, _, _ in sequence]
        _keep_min(timings, "parse", clock() - start)

        # 3. engine.observe over the freshly parsed messages, fresh engine
        engine = Engine(settings.build_detectors(), settings.engine)
        observations = observations_of(parsed)
        all_findings = []
        start = clock()
        for obs in observations:
            all_findings.append(engine.observe(obs))
        _keep_min(timings, "engine", clock() - start)

    # 3b. once more with the tracker's, each detector's and advance's calls timed
    by_part = _engine_parts(settings, observations_of([parse_message(d) for d, *_ in sequence]))
    scale = timings["engine"] / max(1e-9, sum(by_part.values()))

    # 4. policy on the requests (the policy judges only the untrusted side's messages)
    policy = Enforcer(Policy(settings.gateway.policy))
    judged = [
        (obs, found, data)
        for obs, found, (data, _, local, _) in zip(
            observations, all_findings, sequence, strict=True
        )
        if local == listen
    ]
    start = clock()
    for obs, found, data in judged:
        policy(obs, obs.ts, found, data)
    timings["policy"] = clock() - start  # messages warm, as in the proxy (after the engine)

    # 5. socket syscalls on loopback: one recvfrom(65535) + one sendto per datagram
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b,
    ):
        a.bind(("127.0.0.1", 0))
        b.bind(("127.0.0.1", 0))
        target = b.getsockname()
        sample = requests[: min(len(requests), 2000)]
        start = clock()
        for data in sample:
            a.sendto(data, target)
            b.recvfrom(65535)
        syscalls = (clock() - start) / len(sample)

    n = len(sequence)
    sanitize_s = timings["sanitize"]
    routing = timings["all"] - timings["parse"] - timings["engine"] - timings["policy"]
    routing -= sanitize_s
    stages = {
        "parse_message (eager part)": timings["parse"],
        "engine.observe (tracker + detectors)": timings["engine"],
        "policy (Enforcer, requests only)": timings["policy"],
        "sanitize (outgoing edit, answers)": sanitize_s,
        "routing: Via/Max-Forwards edits, re-parse": routing,
        "proxy.on_datagram (all of the above)": timings["all"],
    }
    result = {
        "datagrams": n,
        "requests": len(requests),
        "forwarded": forwarded,
        "answered": answered,
        "drops": {str(k): v for k, v in stats.dropped.items()},
        "us_per_datagram": {k: v / n * 1e6 for k, v in stages.items()}
        | {"sendto + recvfrom(65535) syscalls": syscalls * 1e6},
        "gc_enabled": gc.isenabled(),
        "per_datagram": stalls,
        "engine_us_per_datagram": {k: v * scale / n * 1e6 for k, v in by_part.items()},
    }
    if profile_top:
        proxy = build()
        prof = cProfile.Profile()
        prof.enable()
        for data, src, local, now in sequence:
            proxy.on_datagram(data, src, local, now)
        prof.disable()
        OUT.mkdir(exist_ok=True)
        prof.dump_stats(str(OUT / "gateway.prof"))
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(profile_top)
        result["profile"] = buf.getvalue()
    return result


#: py-spy's sampling rate: each sample pauses the gateway (blocking mode; non-blocking
#: sampling truncated about a fifth of the stacks here), so kept low.
SPY_HZ = 100
#: Live-profile stages: the first of these found walking a sampled stack from its leaf up
#: names the sample's stage (so a parse inside the routing counts as parsing).
_SPY_STAGES = (
    ("parse_message", "parse_message (also the re-parse after edits)"),
    ("Engine.advance", "engine.advance (deadline polling, windows)"),
    ("Tracker.observe", "engine: tracker"),
    ("Engine.observe", "engine: fan-out, episodes"),
    ("Enforcer.__call__", "policy (Enforcer)"),
    ("Sanitizer.outgoing", "sanitize (outgoing edit)"),
    ("StatelessProxy.advance", "periodic tick (advance, expiry)"),
    ("_advance_forever", "periodic tick (advance, expiry)"),
    ("StatelessProxy.on_datagram", "routing: Via/Max-Forwards edits"),
    ("GatewayServer._send", "send (sendto)"),
    ("GatewayServer._read_ready", "read (recvfrom, queueing)"),
    ("GatewayServer._process", "per-datagram glue (time, metrics)"),
    ("EpollSelector.select", "idle (waiting in epoll)"),
)


def summarize_spy(raw: Path) -> dict[str, Any]:
    """py-spy's raw (collapsed) stacks → share of samples per stage and per detector."""
    stages: Counter[str] = Counter()
    detectors: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame.split(" (", 1)[0] for frame in stack.split(";")]
        label = "event loop, other"
        for depth in range(len(frames) - 1, -1, -1):
            name = frames[depth]
            parent = frames[depth - 1] if depth else ""
            if parent in ("Engine.observe", "Engine._dispatch") and name not in (
                "Engine.advance",
                "Tracker.observe",
                "Engine._dispatch",
                "Engine._merge",
            ):
                label = "engine: detectors"
                detectors[name.split(".", 1)[0]] += n
                break
            stage = next((lab for marker, lab in _SPY_STAGES if name == marker), None)
            if stage is not None:
                label = stage
                break
        stages[label] += n
    return {"samples": total, "stages": dict(stages), "detectors": dict(detectors)}


def live_profile(bench: Bench, spy: str, rate: float, seconds: float) -> dict[str, Any] | None:
    """Sample the running gateway with py-spy at ``rate`` requests/s for ``seconds``."""
    raw = OUT / "gateway-pyspy.txt"
    OUT.mkdir(exist_ok=True)
    with bench.sut("sipwarden") as process:
        bench.load(process, min(500.0, rate), 0.5)
        cmd = [spy, "record", "--pid", str(process.proc.pid), "--duration", str(int(seconds))]
        cmd += ["--rate", str(SPY_HZ), "--format", "raw", "--output", str(raw)]
        recorder = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            run = bench.load(process, rate, seconds + 1.0)
            _, err = recorder.communicate(timeout=seconds + 30)
        finally:
            if recorder.poll() is None:
                os.killpg(recorder.pid, signal.SIGKILL)
                recorder.wait()
    if recorder.returncode != 0 or not raw.exists():
        print(f"   py-spy failed ({recorder.returncode}): {err[-300:]!r}")
        return None
    summary = summarize_spy(raw)
    summary["run"] = _result_json(run)
    return summary


def print_live_profile(prof: dict[str, Any]) -> None:
    run = prof["run"]
    per_request = run["cpu_us_per_request"]
    busy = prof["samples"] - prof["stages"].get("idle (waiting in epoll)", 0)
    print(
        f"   {prof['samples']:,} samples at {SPY_HZ} Hz (each pauses the gateway); "
        f"{run['answered_rate']:,.0f} requests/s answered ({run['answered_share']:.1%}), "
        f"SUT CPU {per_request:,.0f} µs per request"
    )
    rows: list[list[str] | str] = [["stage (live, py-spy)", "share of busy", "µs/request"]]
    for label, n in sorted(prof["stages"].items(), key=lambda kv: -kv[1]):
        if label.startswith("idle"):
            continue
        rows.append([label, f"{n / busy:.1%}", f"{n / busy * per_request:,.0f}"])
    rows.append(
        [
            "idle (waiting in epoll)",
            f"({prof['stages'].get('idle (waiting in epoll)', 0) / prof['samples']:.1%} of all)",
            "-",
        ]
    )
    print("\n".join(_table(rows, [False, True, True])))
    top = sorted(prof["detectors"].items(), key=lambda kv: -kv[1])[:10]
    if top:
        print(
            "   detectors (share of busy): "
            + ", ".join(f"{name} {n / busy:.1%}" for name, n in top)
        )


# --- main ------------------------------------------------------------------------------------


def _load_avg() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} (1/5 min) on {os.cpu_count()} CPUs"


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.3f}"


def _version(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout or done.stderr).splitlines()[0] if (done.stdout or done.stderr) else "?"


def _run_row(label: str, run: LoadResult) -> list[str]:
    return [
        label,
        f"{run.offered_rate:,.0f}",
        f"{run.sent_rate:,.0f}",
        f"{run.answered_rate:,.0f}",
        f"{run.answered_share:.1%}",
        f"{run.sut_cpu_s / run.elapsed_s:.0%}" if run.elapsed_s else "-",
        f"{run.cpu_us_per_request:,.1f}",
        "/".join(str(run.drops.get(k, 0)) for k in ("sut", "responder", "generator")),
    ]


def _result_json(run: LoadResult) -> dict[str, Any]:
    data = dataclasses.asdict(run)
    rtts = data.pop("rtt_ns")
    data.update(
        sent_rate=run.sent_rate,
        answered_rate=run.answered_rate,
        answered_share=run.answered_share,
        cpu_us_per_request=run.cpu_us_per_request,
        rtt_ms={
            "p50": percentile(rtts, 0.5) / 1e6,
            "p99": percentile(rtts, 0.99) / 1e6,
            "max": max(rtts, default=0) / 1e6,
            "n": len(rtts),
        },
    )
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="~30 s smoke run (short runs)")
    parser.add_argument("--sources", type=int, default=4096, help="load source addresses")
    parser.add_argument("--flood-sources", type=int, default=4096, help="spoofed addresses")
    parser.add_argument("--probe-rate", type=float, default=60_000.0, help="first overload")
    parser.add_argument("--probe-s", type=float, default=3.0)
    parser.add_argument("--verify-s", type=float, default=4.0)
    parser.add_argument("--steps", type=int, default=3, help="verification steps at most")
    parser.add_argument("--latency-s", type=float, default=5.0)
    parser.add_argument("--flood-s", type=float, default=10.0)
    parser.add_argument("--client-rate", type=float, default=20.0, help="client REGISTERs/s")
    parser.add_argument(
        "--flood-factor",
        type=float,
        default=1.0,
        help="flood at this multiple of each SUT's throughput (issue 4: 1)",
    )
    parser.add_argument("--responder-children", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="throughput runs per SUT")
    parser.add_argument("--breakdown-messages", type=int, default=5_000)
    parser.add_argument("--breakdown-repeat", type=int, default=3, help="fastest of N passes")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument(
        "--only-breakdown", action="store_true", help="skip the load runs (no Kamailio needed)"
    )
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile top N")
    parser.add_argument("--gen-cpu", type=int, default=0, help="CPU of generator + responder")
    parser.add_argument("--sut-cpu", type=int, default=1, help="CPU of the system under test")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness of the SUT, responder and generator (e.g. -10 on a shared machine; "
        "below 0 needs root)",
    )
    parser.add_argument(
        "--py-spy",
        metavar="PATH",
        nargs="?",
        const="py-spy",
        help="sample the live gateway with py-spy (pip install py-spy) at 90 %% of its "
        "throughput; PATH defaults to py-spy on $PATH",
    )
    parser.add_argument("--spy-s", type=float, default=8.0, help="seconds sampled")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    parser.add_argument("--json", type=Path, default=OUT / "gateway.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.sources = min(args.sources, 1024)
        args.flood_sources = min(args.flood_sources, 1024)
        args.probe_s, args.verify_s, args.steps = 1.0, 1.0, 2
        args.latency_s, args.flood_s = 1.5, 2.0
        args.breakdown_messages = min(args.breakdown_messages, 1000)
        args.breakdown_repeat = 1
        args.probe_rate = min(args.probe_rate, 30_000.0)
    if not Path(KAMAILIO).exists() and not args.only_breakdown:
        print(f"kamailio not found ({KAMAILIO}): apt-get install kamailio; skipped")
        return 0

    started = time.perf_counter()
    record: dict[str, Any] = {"load_before": os.getloadavg(), "args": vars(args) | {"json": ""}}
    print("sipwarden gateway benchmark (bench/gateway.py)")
    print(f"python:   {platform.python_version()} ({sys.executable})")
    print(f"machine:  {platform.processor() or platform.machine()}, {platform.platform()}")
    print(f"kamailio: {_version([KAMAILIO, '-v'])}; allocators {' '.join(KAMAILIO_ALLOC)}")
    print(
        f"pinning:  SUT on CPU {args.sut_cpu}, generator + responder on CPU {args.gen_cpu} "
        f"({'taskset' if shutil.which('taskset') else 'no taskset: not pinned'}); "
        f"nproc {os.cpu_count()}"
    )
    print(
        f"load:     {args.sources:,} sources 127.{LOAD_NET}.x.y; flood {args.flood_sources:,} "
        f"spoofed 127.{FLOOD_NET}.x.y; client {TRUSTED_IP} at {args.client_rate:g}/s"
    )
    if args.nice:
        print(f"priority: nice {args.nice} for the SUT, the responder and the generator")
    print(f"before:   {_load_avg()}")
    ok = True
    if args.gen_cpu >= (os.cpu_count() or 1) or args.sut_cpu >= (os.cpu_count() or 1):
        print("not enough CPUs for the pinning asked; use --gen-cpu/--sut-cpu")
        return 0
    if not args.only_breakdown:
        os.sched_setaffinity(0, {args.gen_cpu})
        with (
            tempfile.TemporaryDirectory(prefix="sipwarden-bench-gw-") as tmp,
            Processes(Path(tmp), args.gen_cpu, args.sut_cpu, args.nice) as procs,
        ):
            if args.nice:
                os.setpriority(os.PRIO_PROCESS, 0, args.nice)
            try:
                gen = Generator(args.sources, args.flood_sources)
            except OSError as exc:
                print(f"error: cannot open the generator's sockets: {exc} (try fewer --sources)")
                return 2
            bench = Bench(args, procs, gen)
            try:
                bench.start_responder()
                ok = run_scenarios(bench, record)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                # A SUT or the responder would not start or answer: say which and why.
                print(f"error: {exc}")
                return 2
            finally:
                gen.close()
                record["sipwarden_reports"] = bench.reports.get("sipwarden", [])
    if not args.no_breakdown:
        os.sched_setaffinity(0, {args.sut_cpu})
        print()
        print(f"where the time goes (gateway core in-process, {_load_avg()}):")
        bd = breakdown(args.sources, args.breakdown_messages, args.profile, args.breakdown_repeat)
        record["breakdown"] = bd
        print_breakdown(bd, record)
    record["load_after"] = os.getloadavg()
    record["wall_s"] = time.perf_counter() - started
    print(f"\nafter:    {_load_avg()}; {record['wall_s']:.0f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=1, default=str))
    print(f"numbers:  {args.json}")
    return 1 if args.check and not ok else 0


def run_scenarios(bench: Bench, record: dict[str, Any]) -> bool:
    args = bench.args
    header = ["run", "offered/s", "sent/s", "answered/s", "answered", "SUT CPU", "CPU µs/req"]
    header.append("drops s/r/g")
    right = [False, True, True, True, True, True, True, True]

    # 1. throughput
    print("\n1. throughput (requests answered 200 per second; each is 2 datagrams through the SUT)")
    results: dict[str, list[Throughput]] = {"direct": [], "kamailio": [], "sipwarden": []}
    for _ in range(args.repeat):
        for name, runs in results.items():
            runs.append(bench.throughput(name))
            print(f"   {name} done, {_load_avg()}", flush=True)
    rows: list[list[str] | str] = [header]
    best: dict[str, Throughput] = {}
    for name, runs in results.items():
        for i, tp in enumerate(runs):
            tag = f"{name}#{i + 1}" if len(runs) > 1 else name
            rows.append(_run_row(f"{tag} probe", tp.probe))
            for run in tp.verified:
                rows.append(_run_row(f"{tag} step", run))
        best[name] = max(runs, key=lambda t: t.per_cpu_s)
    print("\n".join(_table(rows, right)))
    print(
        "   drops = kernel receive-buffer drops during the run (s: SUT sockets, r: responder, "
        "g: generator)"
    )
    summary: list[list[str] | str] = [
        ["SUT", "answered/s", "requests per SUT CPU-s", "spread (CPU-s)", "note"]
    ]
    for name, tp in best.items():
        spread = [t.per_cpu_s for t in results[name]]
        if name == "direct":
            note = "the responder alone, probe only: it answers at least this"
        elif tp.generator_bound:
            note = "generator-bound: answered/s is a lower bound"
        elif tp.rate is None:
            note = f"no step reached 99 % answered: the best step ({tp.basis.answered_share:.1%})"
        else:
            note = "highest verified rate with >= 99 % answered"
        summary.append(
            [
                name,
                f"{tp.saturation:,.0f}",
                f"{tp.per_cpu_s:,.0f}",
                f"{min(spread):,.0f}-{max(spread):,.0f}" if len(spread) > 1 else "-",
                note,
            ]
        )
    print("\n".join(_table(summary, [False, True, True, True, False])))
    kam, sw = best["kamailio"], best["sipwarden"]
    ratio = sw.per_cpu_s / kam.per_cpu_s if kam.per_cpu_s else 0.0
    wall_ratio = sw.saturation / kam.saturation if kam.saturation else 0.0
    t1 = ratio >= TARGET_RATIO
    print(
        f"target 1 (sipwarden >= {TARGET_RATIO}x Kamailio+sanity+pike, per worker): "
        f"{'PASS' if t1 else 'FAIL'}: {ratio:.3f}x by requests per SUT CPU-second "
        f"({sw.per_cpu_s:,.0f} vs {kam.per_cpu_s:,.0f}); by answered/s {wall_ratio:.3f}x "
        f"({sw.saturation:,.0f} vs {kam.saturation:,.0f}"
        f"{', Kamailio not saturated' if kam.generator_bound else ''})"
    )
    print(f"   {_load_avg()}")
    record["throughput"] = {
        name: [
            {
                "probe": _result_json(t.probe),
                "steps": [_result_json(r) for r in t.verified],
                "verified_rate": t.rate,
                "answered_per_s": t.saturation,
                "generator_bound": t.generator_bound,
                "requests_per_cpu_s": t.per_cpu_s,
            }
            for t in runs
        ]
        for name, runs in results.items()
    }
    record["ratio_by_cpu"] = ratio
    record["ratio_by_answered_per_s"] = wall_ratio

    # 2. added latency at half sipwarden's throughput
    half = max(50.0, sw.saturation / 2)
    print(f"\n2. added latency at {half:,.0f} requests/s (half sipwarden's throughput)")
    lat = {name: bench.latency(name, half) for name in ("direct", "kamailio", "sipwarden")}
    base = lat["direct"].rtt_ns
    d50, d99 = percentile(base, 0.5), percentile(base, 0.99)
    rows = [["SUT", "answered", "RTT p50 ms", "RTT p99 ms", "RTT max ms", "added p50", "added p99"]]
    for name, run in lat.items():
        r = run.rtt_ns
        rows.append(
            [
                name,
                f"{run.answered_share:.1%}",
                _ms(percentile(r, 0.5)),
                _ms(percentile(r, 0.99)),
                _ms(max(r, default=0)),
                "-" if name == "direct" else _ms(percentile(r, 0.5) - d50),
                "-" if name == "direct" else _ms(percentile(r, 0.99) - d99),
            ]
        )
    print("\n".join(_table(rows, [False, True, True, True, True, True, True])))
    added99 = (percentile(lat["sipwarden"].rtt_ns, 0.99) - d99) / 1e6
    t2 = added99 < TARGET_P99_MS and lat["sipwarden"].answered_share >= 0.99
    print(
        f"target 2 (sipwarden p99 added latency < {TARGET_P99_MS} ms at half its throughput): "
        f"{'PASS' if t2 else 'FAIL'} ({added99:.3f} ms; added = p99 through the SUT minus p99 "
        f"direct to the responder)"
    )
    print(f"   {_load_avg()}")
    record["latency"] = {"rate": half, **{k: _result_json(v) for k, v in lat.items()}}

    # 3. spoofed-source flood at each SUT's own throughput, allow-listed client at 20/s
    print(
        f"\n3. spoofed-source flood at {args.flood_factor:g}x each SUT's throughput; client "
        f"{TRUSTED_IP} REGISTER at "
        f"{args.client_rate:g}/s for {args.flood_s:g} s"
    )
    flood_header = ["SUT", "flood offered/s", "flood sent/s", "client sent", "client 200"]
    rows = [[*flood_header, "success", "client p99 ms", "drops s/r/g"]]
    flood: dict[str, dict[str, Any]] = {}
    for name in ("kamailio", "sipwarden"):
        tp = best[name]
        # Its saturation rate; for a generator-bound SUT, as much as the generator can send.
        rate = tp.probe.sent_rate if tp.generator_bound else tp.saturation
        # Never above the probe rate: beyond it the generator cannot send anyway.
        rate = min(rate * args.flood_factor, args.probe_rate)
        run, flood_sent = bench.flood(name, rate)
        flood[name] = {
            "flood_rate": rate,
            "flood_sent": flood_sent,
            "client": _result_json(run),
        }
        rows.append(
            [
                name,
                f"{rate:,.0f}",
                f"{flood_sent / args.flood_s:,.0f}",
                f"{run.sent}",
                f"{run.answered}",
                f"{run.answered_share:.1%}",
                _ms(percentile(run.rtt_ns, 0.99)),
                "/".join(str(run.drops.get(k, 0)) for k in ("sut", "responder", "generator")),
            ]
        )
    print("\n".join(_table(rows, [False, True, True, True, True, True, True, True])))
    share = flood["sipwarden"]["client"]["answered_share"]
    t3 = share >= TARGET_CLIENT_OK
    print(
        f"target 3 (allow-listed client's REGISTERs >= {TARGET_CLIENT_OK:.0%} answered under "
        f"the flood): {'PASS' if t3 else 'FAIL'} ({share:.1%})"
    )
    print(f"   {_load_avg()}")
    record["flood"] = flood
    record["targets"] = {"ratio": t1, "p99": t2, "flood": t3}
    if args.py_spy:
        spy = shutil.which(args.py_spy) or (args.py_spy if Path(args.py_spy).exists() else None)
        if spy is None:
            print(f"\npy-spy not found ({args.py_spy}): live profile skipped")
        else:
            rate = 0.9 * sw.saturation
            print(f"\n4. live profile: py-spy on the gateway at {rate:,.0f} requests/s")
            prof = live_profile(bench, spy, rate, args.spy_s)
            if prof is not None:
                print_live_profile(prof)
                record["live_profile"] = prof
    reports = bench.reports.get("sipwarden", [])
    if reports:
        print("\nsipwarden gateway exit reports (per scenario run: drops, findings):")
        for report in reports:
            print(
                f"   received {report.get('received')}, dropped {report.get('dropped')}, "
                f"bans {report.get('bans')}, findings {report.get('findings')}"
            )
    return t1 and t2 and t3


def print_breakdown(bd: dict[str, Any], record: dict[str, Any]) -> None:
    rows: list[list[str] | str] = [["stage (CPU time, in-process)", "µs/datagram", "µs/request"]]
    for stage, us in bd["us_per_datagram"].items():
        rows.append([stage, f"{us:,.1f}", f"{2 * us:,.1f}"])
    sw = record.get("throughput", {}).get("sipwarden")
    if sw:
        best = max(sw, key=lambda t: t["requests_per_cpu_s"])
        if best["requests_per_cpu_s"]:
            per_request = 1e6 / best["requests_per_cpu_s"]
            core = bd["us_per_datagram"]["proxy.on_datagram (all of the above)"] * 2
            rows.append(
                ["measured under load: SUT CPU", f"{per_request / 2:,.1f}", f"{per_request:,.1f}"]
            )
            rows.append(
                [
                    "  of which outside the core (loop, syscalls, ...)",
                    f"{(per_request - core) / 2:,.1f}",
                    f"{per_request - core:,.1f}",
                ]
            )
    print("\n".join(_table(rows, [False, True, True])))
    total = sum(bd["engine_us_per_datagram"].values())
    parts = sorted(bd["engine_us_per_datagram"].items(), key=lambda kv: -kv[1])
    rows = [["engine.observe by part", "µs/datagram", "share"]]
    rows += [[label, f"{us:,.1f}", f"{us / total:.0%}"] for label, us in parts[:15]]
    if len(parts) > 15:
        more = sum(us for _, us in parts[15:])
        rows.append([f"{len(parts) - 15} more detectors", f"{more:,.1f}", f"{more / total:.0%}"])
    print("\n".join(_table(rows, [False, True, True])))
    print(
        "   a detector's share includes the typed headers it is the first to read (parsed "
        "lazily, then cached)"
    )
    st = bd["per_datagram"]
    print(
        f"   one datagram through the core: p50 {st['p50_us']:,.0f} µs, p99 {st['p99_us']:,.0f} "
        f"µs, max {st['max_us']:,.0f} µs; garbage collector: {st['gc_pauses']} pauses, "
        f"{st['gc_total_ms']:,.1f} ms in all, longest {st['gc_max_ms']:,.1f} ms "
        f"({st['gc_gen2']} full collections, longest {st['gc_gen2_max_ms']:,.1f} ms)"
    )
    print(
        f"   {bd['datagrams']:,} datagrams ({bd['requests']:,} requests, {bd['forwarded']:,} "
        f"forwarded, {bd['answered']:,} answers routed back); drops {bd['drops']}"
    )
    if "profile" in bd:
        print(bd["profile"])


if __name__ == "__main__":
    raise SystemExit(main())
