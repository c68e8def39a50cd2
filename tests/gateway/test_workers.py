"""``sipwarden gateway --workers N``: N processes behind one address (SO_REUSEPORT), one
"listening" line, one merged report, signals forwarded, no orphans; and the pure report merge.

Each end-to-end test starts the real command (a few hundred ms per worker to import) and is
bounded by ``--duration`` and by the timeouts of :class:`Gateway`."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sipwarden.config import MAX_WORKERS
from sipwarden.gateway.workers import WorkerChannel, merge_reports
from tests.gateway import run_cli
from tests.gateway.test_server import options

pytestmark = pytest.mark.skipif(
    not hasattr(socket, "SO_REUSEPORT") or not sys.platform.startswith("linux"),
    reason="--workers relies on Linux SO_REUSEPORT load balancing",
)


# -- helpers shared with test_reload -----------------------------------------------------------


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie is gone for our purpose: whoever
    reaps it, it holds no socket and runs no code)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    """The pids still alive after ``timeout`` (bounded polling)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        time.sleep(0.02)
    return [pid for pid in pids if alive(pid)]


class Gateway:
    """``sipwarden gateway ARGS`` in the background, its stderr read line by line with
    deadlines; always killed in :meth:`close`."""

    def __init__(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "sipwarden", "gateway", "--log-format", "json", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        self.lines: list[str] = []
        self._partial = b""

    def _read(self, timeout: float) -> bool:
        """Read what stderr has within ``timeout``; False at end of file."""
        assert self.proc.stderr is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stderr, selectors.EVENT_READ)
            if not selector.select(timeout):
                return True
        data = self.proc.stderr.read()
        if not data:
            return False
        self._partial += data
        *complete, self._partial = self._partial.split(b"\n")
        self.lines.extend(line.decode() for line in complete)
        return True

    def wait_line(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for line in self.lines[seen:]:
                if predicate(line):
                    return line
            seen = len(self.lines)
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.2)):
                raise AssertionError(f"no such line on stderr; got: {self.lines}")

    def listening(self) -> str:
        # Generous: imports and detector set-up take a few seconds on a loaded machine.
        return self.wait_line(
            lambda line: line.startswith("sipwarden gateway: listening on"), timeout=30.0
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> dict[str, Any]:
        """Signal, wait, and the exit report."""
        self.proc.send_signal(sig)
        return self.finish(timeout)

    def finish(self, timeout: float = 15.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()  # until the process closes it (bounded by its duration)
        self.proc.wait(timeout)
        while self._read(0):
            pass
        self.out = out.decode()
        return json.loads(out) if out.strip() else {}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def worker_pids(line: str) -> list[int]:
    found = re.search(r"workers \(pids ([\d, ]+)\)", line)
    assert found, line
    return [int(pid) for pid in found.group(1).split(", ")]


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(child) for child in text.split()]


def upstream_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    return sock


def drain(sock: socket.socket, expected: int, timeout: float = 5.0) -> int:
    """Datagrams read until ``expected`` came or nothing came for a while (bounded)."""
    got = 0
    deadline = time.monotonic() + timeout
    while got < expected and time.monotonic() < deadline:
        try:
            sock.recvfrom(65535)
        except TimeoutError:
            continue
        got += 1
    return got


def send_from_many_ports(port: int, count: int, tag: str) -> None:
    """One OPTIONS from each of ``count`` fresh source ports: many 4-tuples for the kernel to
    spread."""
    for index in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            source_port = client.getsockname()[1]
            client.sendto(options(source_port, branch=f"z9hG4bK{tag}{index}"), ("127.0.0.1", port))


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        gateway.close()


# -- end to end --------------------------------------------------------------------------------


def test_two_workers_share_the_port_and_merge_one_report(gateways: list[Gateway]) -> None:
    port = free_udp_port()
    with upstream_socket() as upstream:
        gateway = Gateway(
            "--listen", f"udp:127.0.0.1:{port}",
            "--upstream", f"udp:127.0.0.1:{upstream.getsockname()[1]}",
            "--workers", "2", "--duration", "20",
        )  # fmt: skip
        gateways.append(gateway)
        line = gateway.listening()
        assert f"listening on udp:127.0.0.1:{port};" in line and "2 workers" in line
        pids = worker_pids(line)
        assert sorted(children(gateway.proc.pid)) == sorted(pids)
        # 24 flows: the chance that the 4-tuple hash sends all to one worker is 2^-23.
        send_from_many_ports(port, 24, "w")
        forwarded = drain(upstream, 24)
        report = gateway.stop()
    assert gateway.proc.returncode == 0, gateway.lines
    assert wait_gone(pids) == []
    assert report["workers"] == 2
    assert report["received"] == 24
    assert report["forwarded_requests"] == forwarded
    # Per-target rate limits are per worker; whatever was not forwarded is counted by reason.
    assert forwarded + sum(report["dropped"].values()) == 24
    per_worker = report["per_worker"]
    assert [w["worker"] for w in per_worker] == [0, 1]
    assert {w["pid"] for w in per_worker} == set(pids)
    assert all(w["received"] > 0 for w in per_worker), per_worker
    assert sum(w["received"] for w in per_worker) == 24
    assert isinstance(report["findings"], list) and isinstance(report["bans"], list)
    # One listening line, one report: the workers print neither.
    assert sum(line.startswith("sipwarden gateway: listening") for line in gateway.lines) == 1
    assert gateway.out.count('"workers"') == 1


def test_a_worker_killed_stops_the_others_and_exits_1(gateways: list[Gateway]) -> None:
    port = free_udp_port()
    gateway = Gateway(
        "--listen", f"udp:127.0.0.1:{port}", "--upstream", "udp:127.0.0.1:5070",
        "--workers", "2", "--duration", "20",
    )  # fmt: skip
    gateways.append(gateway)
    pids = worker_pids(gateway.listening())
    os.kill(pids[0], signal.SIGKILL)
    report = gateway.finish()
    assert gateway.proc.returncode == 1
    assert wait_gone(pids) == []
    assert report["workers"] == 2 and report["received"] == 0
    assert report["workers_failed"] == [{"worker": 0, "pid": pids[0], "exit": "killed by SIGKILL"}]
    assert any(
        f"error: worker 0 (pid {pids[0]}) died: killed by SIGKILL" in x for x in gateway.lines
    )
    assert not any("Traceback" in x for x in gateway.lines)


def test_workers_die_with_their_parent(gateways: list[Gateway]) -> None:
    """PR_SET_PDEATHSIG: a supervisor killed outright leaves no orphan serving the port."""
    port = free_udp_port()
    gateway = Gateway(
        "--listen", f"udp:127.0.0.1:{port}", "--upstream", "udp:127.0.0.1:5070",
        "--workers", "2", "--duration", "20",
    )  # fmt: skip
    gateways.append(gateway)
    pids = worker_pids(gateway.listening())
    gateway.proc.kill()
    gateway.proc.wait(5)
    assert wait_gone(pids) == []


def test_sighup_reaches_every_worker(tmp_path: Path, gateways: list[Gateway]) -> None:
    port = free_udp_port()
    config = tmp_path / "sipwarden.toml"
    config.write_text(
        f'[gateway]\nlisten = ["udp:127.0.0.1:{port}"]\nupstream = "udp:127.0.0.1:5070"\n'
    )
    gateway = Gateway("--config", str(config), "--workers", "2", "--duration", "20")
    gateways.append(gateway)
    pids = worker_pids(gateway.listening())
    gateway.proc.send_signal(signal.SIGHUP)
    for worker in ('"worker": 0', '"worker": 1'):

        def reloaded(line: str, tag: str = worker) -> bool:
            return '"reloaded ' in line and tag in line

        gateway.wait_line(reloaded)
    report = gateway.stop(signal.SIGINT)
    assert gateway.proc.returncode == 0
    assert report["reloads"] == 2 and report["reload_errors"] == 0
    assert wait_gone(pids) == []


def test_metrics_port_per_worker(gateways: list[Gateway]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    gateway = Gateway(
        "--listen", f"udp:127.0.0.1:{free_udp_port()}", "--upstream", "udp:127.0.0.1:5070",
        "--workers", "2", "--metrics", f"127.0.0.1:{metrics_port}", "--duration", "20",
    )  # fmt: skip
    gateways.append(gateway)
    line = gateway.listening()
    assert (
        f"metrics on http://127.0.0.1:{metrics_port}/metrics, "
        f"http://127.0.0.1:{metrics_port + 1}/metrics (one per worker" in line
    ), line
    for port in (metrics_port, metrics_port + 1):
        with socket.create_connection(("127.0.0.1", port), timeout=3) as scrape:
            scrape.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            assert scrape.recv(12) == b"HTTP/1.1 200"
    gateway.stop()
    assert gateway.proc.returncode == 0


@pytest.mark.parametrize("reuse_port", [False, True])
def test_a_worker_that_cannot_bind_is_an_error_before_listening(reuse_port: bool) -> None:
    """Also when the port is held with SO_REUSEPORT (another gateway's workers): joining it
    would share that gateway's traffic."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        if reuse_port:
            taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = run_cli(
            "--listen", f"udp:127.0.0.1:{port}", "--upstream", "udp:127.0.0.1:5070",
            "--workers", "2", "--duration", "5",
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"error: udp:127.0.0.1:{port}: cannot listen" in result.stderr
    assert "listening on" not in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "udp:127.0.0.1:5060", "--metrics", "127.0.0.1:65535"], "above port 65535"),
    ],
)
def test_workers_argument_errors_exit_2(args: list[str], message: str) -> None:
    result = run_cli(*args, "--upstream", "udp:127.0.0.1:5070", "--workers", "2", "--duration", "1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr


@pytest.mark.parametrize("count", ["0", str(MAX_WORKERS + 1)])
def test_workers_out_of_range_is_a_usage_error(count: str) -> None:
    result = run_cli(
        "--listen", "udp:127.0.0.1:5060", "--upstream", "udp:127.0.0.1:5070", "-w", count
    )  # fmt: skip
    assert result.returncode == 2 and "--workers" in result.stderr


def test_one_worker_is_one_process(gateways: list[Gateway]) -> None:
    """N = 1 keeps the simple path: no supervisor, no child process, the same report."""
    gateway = Gateway(
        "--listen", f"udp:127.0.0.1:{free_udp_port()}", "--upstream", "udp:127.0.0.1:5070",
        "--workers", "1", "--duration", "20",
    )  # fmt: skip
    gateways.append(gateway)
    line = gateway.listening()
    assert "workers" not in line
    assert children(gateway.proc.pid) == []
    report = gateway.stop()
    assert gateway.proc.returncode == 0
    assert report["workers"] == 1 and "per_worker" not in report
    assert set(report) >= {"received", "dropped", "rejected", "bans", "findings", "state_evictions"}


# -- the merge ---------------------------------------------------------------------------------


def test_merge_sums_counters_merges_tables_and_concatenates_lists() -> None:
    first = {
        "received": 3,
        "rejected": {"405": {"method_not_allowed": 1}},
        "dropped": {"scanner": 2},
        "bans": [{"ip": "192.0.2.1"}],
        "findings": [{"id": "a"}],
    }
    second = {
        "received": 4,
        "rejected": {"405": {"method_not_allowed": 2}, "503": {"rate_limited_target": 1}},
        "dropped": {"scanner": 1, "blocklisted": 5},
        "bans": [],
        "findings": [{"id": "b"}, {"id": "c"}],
    }
    merged = merge_reports([first, second])
    assert merged == {
        "received": 7,
        "rejected": {"405": {"method_not_allowed": 3}, "503": {"rate_limited_target": 1}},
        "dropped": {"scanner": 3, "blocklisted": 5},
        "bans": [{"ip": "192.0.2.1"}],
        "findings": [{"id": "a"}, {"id": "b"}, {"id": "c"}],
    }
    assert list(merged) == list(first)
    assert first["received"] == 3 and first["findings"] == [{"id": "a"}]  # inputs untouched


def test_merge_of_nothing_and_of_one() -> None:
    assert merge_reports([]) == {}
    assert merge_reports([{"received": 1, "flag": True}]) == {"received": 1, "flag": True}
    assert merge_reports([{"flag": True}, {"flag": False}]) == {"flag": True}


def test_a_worker_that_ends_unasked_is_a_failure() -> None:
    """Without --duration a worker has no reason to end by itself: a clean exit unasked
    leaves the gateway a worker short, so the supervisor reports it and stops the others."""
    from sipwarden.gateway.workers import Supervisor

    def worker_main(channel: WorkerChannel) -> int:
        channel.listening({"pid": os.getpid()})
        if channel.index == 0:
            return 0
        # As a gateway does once its handlers are in: SIGTERM (default action) ends it.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
        time.sleep(30)
        return 0

    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        result = Supervisor(2, worker_main, stop_timeout_s=5).run(lambda infos: None)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # run() leaves them blocked
    assert [e.index for e in result.failed] == [0]
