"""The ``--workers N`` supervisor: N gateway processes behind the same listen addresses.

Theory of operation. Every worker binds the same listen addresses with ``SO_REUSEPORT``; the
kernel (Linux >= 3.9) hashes each datagram's or connection's address 4-tuple to one of the
sockets, so one client stays on one worker and its rate limits and detector windows see all of
its traffic. Linux only lets sockets of the same effective user share a port this way. Each
worker has its own upstream socket, so the upstream's answers come back to the worker that
forwarded the request; requests the upstream sends out are routed by the Via branch, whose key
all workers share (the parent hands the same key to every child).

The parent (:class:`Supervisor`) opens no socket and runs no event loop: it forks the workers,
waits until each has said it is listening, forwards SIGTERM/SIGINT/SIGHUP to them, collects one
report from each and notices a worker that dies. A worker talks to it over a pipe
(:class:`WorkerChannel`), one JSON object per line: ``listening``, ``error`` (it could not
start) or ``report`` (its exit report).

Why ``fork`` (not ``spawn``): the parent has resolved and validated the whole configuration,
including the branch key, before the first fork, and a forked child starts from that state at
once, with nothing pickled or re-imported (spawn re-imports sipwarden and its dependencies in
each child: importing the gateway's modules and building the default detectors took 0.75-0.85 s
of a fresh interpreter here, and the key would have to pass through a pipe). Forking is safe
because the parent has no event loop, no thread and no open database or socket at that point
(asyncio + fork is only a problem once a loop exists; each child creates its own with
``asyncio.run``). A child leaves with ``os._exit`` so it never runs
the parent's atexit handlers or flushes the parent's copied stdout buffer.

Signals in a child: they stay blocked from the fork until the child's gateway has installed
its own handlers (the worker unblocks them then), so a SIGHUP or SIGTERM forwarded during
start-up is delivered late rather than killing the child with the default action.

No orphans: each child asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``,
Linux), and the gateway also polls ``getppid()`` once a second (other systems, and the gap
before ``prctl``). A child that ends abnormally makes the parent stop the others.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import selectors
import signal
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sipwarden.errors import SipwardenError

__all__ = [
    "FORWARDED_SIGNALS",
    "Supervisor",
    "SupervisorResult",
    "WorkerChannel",
    "WorkerError",
    "WorkerExit",
    "merge_reports",
]

log = logging.getLogger(__name__)

#: Signals the parent passes on to every worker.
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Signals that stop the gateway (SIGHUP reloads).
_STOPPING = (signal.SIGTERM, signal.SIGINT)
#: Exit status of a worker whose gateway could not start (as the CLI's usage error).
EXIT_START_FAILED = 2
#: Exit status of a worker that hit a bug (EX_SOFTWARE, as the CLI).
EXIT_BUG = 70
#: ``prctl`` option: the signal a process gets when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
#: Most bytes a worker's messages may take before the parent stops reading it: far above a
#: report (its findings are bounded by the engine), far below what would hurt the parent.
MAX_CHANNEL_BYTES = 256 << 20


class WorkerError(SipwardenError):
    """A worker could not start (its message, e.g. an address that cannot be bound), or died."""


class WorkerChannel:
    """A worker's end of the pipe to the supervisor."""

    def __init__(self, index: int, fd: int, parent_pid: int) -> None:
        self.index = index
        self.fd = fd
        #: The supervisor's pid; the worker stops when its parent is no longer this one.
        self.parent_pid = parent_pid

    def send(self, kind: str, data: Any) -> None:
        """One message to the supervisor; a supervisor that is gone is ignored (the worker is
        being stopped by PR_SET_PDEATHSIG or its own parent check anyway)."""
        line = json.dumps({"kind": kind, "data": data}, ensure_ascii=True).encode() + b"\n"
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except BrokenPipeError:
            pass

    def listening(self, info: Mapping[str, Any]) -> None:
        self.send("listening", dict(info))

    def report(self, report: Mapping[str, Any]) -> None:
        self.send("report", dict(report))

    def error(self, message: str) -> None:
        self.send("error", message)

    def parent_alive(self) -> bool:
        return os.getppid() == self.parent_pid


#: What runs in a worker: builds and runs its gateway, returns the exit status. It calls
#: ``channel.listening`` once bound and ``channel.report`` at the end.
WorkerMain = Callable[[WorkerChannel], int]


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """How one worker ended."""

    index: int
    pid: int
    #: Exit status, or minus the signal number that killed it (as ``subprocess``).
    returncode: int

    def describe(self) -> str:
        if self.returncode < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-self.returncode).name}"
        return f"exit status {self.returncode}"


@dataclass
class SupervisorResult:
    """What the workers said and how they ended."""

    #: The ``listening`` message of each worker, by index.
    listening: dict[int, dict[str, Any]] = field(default_factory=dict)
    #: The exit report of each worker that sent one, by index.
    reports: dict[int, dict[str, Any]] = field(default_factory=dict)
    exits: list[WorkerExit] = field(default_factory=list)
    #: Workers that ended abnormally while nobody asked them to stop (the others were then
    #: stopped), or did not stop in time when asked.
    failed: list[WorkerExit] = field(default_factory=list)


@dataclass
class _Child:
    index: int
    pid: int
    fd: int
    buffer: bytearray = field(default_factory=bytearray)
    received: int = 0
    error: str | None = None
    done: bool = False


class Supervisor:
    """Forks ``count`` workers, each running ``worker_main``; see the module docstring."""

    def __init__(
        self,
        count: int,
        worker_main: WorkerMain,
        *,
        startup_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
        ends_by_itself: bool = False,
    ) -> None:
        if count < 1:
            raise ValueError("count must be >= 1")
        self.count = count
        self.worker_main = worker_main
        #: Every worker must be listening within this, or all are stopped (a bind that hangs,
        #: a database that stays locked).
        self.startup_timeout_s = startup_timeout_s
        #: Workers asked to stop that are still running after this are killed (SIGKILL).
        self.stop_timeout_s = stop_timeout_s
        #: Workers end on their own (``--duration``): a clean exit unasked is then expected;
        #: otherwise it leaves the gateway a worker short, and counts as a failure.
        self.ends_by_itself = ends_by_itself
        self._children: dict[int, _Child] = {}
        self._stop_requested_at: float | None = None
        self._killed = False

    # -- parent --------------------------------------------------------------------------------
    def run(self, on_listening: Callable[[list[dict[str, Any]]], None]) -> SupervisorResult:
        """Start the workers, call ``on_listening`` (with each worker's ``listening`` message,
        in index order) once all are bound, and return when every worker has ended.
        :class:`WorkerError` when a worker could not start (the others are stopped first)."""
        result = SupervisorResult()
        previous = {sig: signal.getsignal(sig) for sig in FORWARDED_SIGNALS}
        # Flushed now, or each child would inherit (and could write) the unwritten bytes.
        sys.stdout.flush()
        sys.stderr.flush()
        # Blocked across the forks: a signal arriving now is delivered once every child exists
        # (and forwarded to all), and each child starts with it blocked (see the module doc).
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
        try:
            for sig in FORWARDED_SIGNALS:
                signal.signal(sig, self._forward)
            try:
                for index in range(self.count):
                    self._fork(index)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            self._wait(result, on_listening)
        except BaseException:
            self._stop_all(signal.SIGKILL)
            self._reap_all(result)
            raise
        finally:
            # Blocked before the handlers are restored, and left blocked: a signal from now on
            # must not end the parent before it has printed the merged report (the process
            # exits right after; a caller that goes on restores its own mask).
            signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        return result

    def _fork(self, index: int) -> None:
        read_fd, write_fd = os.pipe()
        parent_pid = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:  # EAGAIN/ENOMEM: a process limit, not a bug
            os.close(read_fd)
            os.close(write_fd)
            raise WorkerError(f"--workers: cannot start worker {index}: {exc.strerror}") from exc
        if pid == 0:  # the worker
            os.close(read_fd)
            self._child(WorkerChannel(index, write_fd, parent_pid))
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._children[read_fd] = _Child(index, pid, read_fd)

    def _forward(self, signum: int, _frame: object) -> None:
        if signum in _STOPPING and self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        for child in self._children.values():
            if not child.done:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signum)

    def _stop_all(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        for child in self._children.values():
            if not child.done:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, sig)

    def _wait(
        self, result: SupervisorResult, on_listening: Callable[[list[dict[str, Any]]], None]
    ) -> None:
        started = time.monotonic()
        announced = False
        with selectors.DefaultSelector() as selector:
            for child in self._children.values():
                selector.register(child.fd, selectors.EVENT_READ, child)
            while any(not c.done for c in self._children.values()):
                now = time.monotonic()
                if not announced and now - started > self.startup_timeout_s:
                    self._stop_all()
                    raise WorkerError(
                        f"--workers: not every worker was listening after "
                        f"{self.startup_timeout_s:g} s; all stopped"
                    )
                if self._stop_requested_at is not None and not self._killed:
                    if now - self._stop_requested_at > self.stop_timeout_s:
                        # Asked to stop and still running: counted as failed, then killed.
                        self._killed = True
                        self._stop_all(signal.SIGKILL)
                # A bounded wait so the deadlines above are checked without traffic.
                for key, _ in selector.select(timeout=0.5):
                    child = key.data
                    assert isinstance(child, _Child)
                    if not self._read(child, result):
                        selector.unregister(child.fd)
                        self._reap(child, result)
                if not announced and len(result.listening) == self.count:
                    announced = True
                    on_listening([result.listening[i] for i in range(self.count)])
        if not announced:
            errors = [c.error for c in sorted(self._children.values(), key=lambda c: c.index)]
            first_error = next((e for e in errors if e is not None), None)
            if first_error is not None:
                raise WorkerError(first_error)
            ended = ", ".join(
                f"worker {e.index} (pid {e.pid}) {e.describe()}" for e in result.failed
            )
            raise WorkerError(f"--workers: ended before listening: {ended or 'stopped'}")

    def _read(self, child: _Child, result: SupervisorResult) -> bool:
        """Read what the worker wrote; False at end of file (it exited or closed the pipe)."""
        try:
            data = os.read(child.fd, 1 << 16)
        except BlockingIOError:
            return True
        except OSError as exc:
            if exc.errno == errno.EINTR:
                return True
            data = b""
        if not data:
            return False
        child.received += len(data)
        if child.received > MAX_CHANNEL_BYTES:
            log.error("worker %d sent more than %d bytes; stopping it", child.index, child.received)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
            return False
        child.buffer += data
        while (end := child.buffer.find(b"\n")) >= 0:
            line = bytes(child.buffer[:end])
            del child.buffer[: end + 1]
            self._message(child, line, result)
        return True

    def _message(self, child: _Child, line: bytes, result: SupervisorResult) -> None:
        try:
            message = json.loads(line)
            kind, data = message["kind"], message["data"]
        except (ValueError, KeyError, TypeError):
            log.error("worker %d sent an unreadable message; ignored", child.index)
            return
        if kind == "listening" and isinstance(data, dict):
            result.listening[child.index] = data
        elif kind == "report" and isinstance(data, dict):
            result.reports[child.index] = data
        elif kind == "error" and isinstance(data, str):
            child.error = data
            if child.index in result.listening:  # failed after starting: a failure like a crash
                log.error("worker %d failed: %s", child.index, data)
            # One worker cannot start (or run): neither can the gateway; stop the others.
            self._stop_all()

    def _reap(self, child: _Child, result: SupervisorResult) -> None:
        child.done = True
        os.close(child.fd)
        deadline = time.monotonic() + self.stop_timeout_s
        while True:
            pid, status = os.waitpid(child.pid, os.WNOHANG)
            if pid != 0:
                break
            if time.monotonic() > deadline:
                # The pipe closed but the process lives on: it is no use to anyone.
                os.kill(child.pid, signal.SIGKILL)
                deadline = float("inf")
            time.sleep(0.01)
        code = os.waitstatus_to_exitcode(status)
        ended = WorkerExit(child.index, child.pid, code)
        result.exits.append(ended)
        stopped_by_us = self._stop_requested_at is not None and code in (
            -signal.SIGTERM,
            -signal.SIGINT,
        )
        unasked = code == 0 and self._stop_requested_at is None and not self.ends_by_itself
        if child.error is not None and child.index not in result.listening:
            return  # could not start: reported by _wait
        if not unasked and (code == 0 or (stopped_by_us and not self._killed)):
            return
        result.failed.append(ended)
        log.error("worker %d (pid %d) ended: %s", child.index, child.pid, ended.describe())
        self._stop_all()

    def _reap_all(self, result: SupervisorResult) -> None:
        for child in self._children.values():
            if not child.done:
                self._reap(child, result)

    # -- child ---------------------------------------------------------------------------------
    def _child(self, channel: WorkerChannel) -> None:
        """Runs in the forked worker; never returns."""
        code = EXIT_BUG
        try:
            for fd in self._children:  # the earlier workers' pipes
                os.close(fd)
            for sig in FORWARDED_SIGNALS:  # still blocked; the gateway installs its own
                signal.signal(sig, signal.SIG_DFL)
            _die_with_parent()
            # The parent may have died between fork and prctl: then nobody would stop us.
            code = self.worker_main(channel) if channel.parent_alive() else 1
        except BaseException:  # whatever it is, the worker must end here, not return
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os._exit(code)


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux; elsewhere the worker polls)."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def merge_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One report from the workers' reports: numbers summed, tables merged key by key (so
    ``dropped`` and ``rejected`` add up per reason), lists concatenated in worker order, and
    anything else taken from the first worker that has it. Keys keep the first report's order."""
    merged: dict[str, Any] = {}
    for report in reports:
        for key, value in report.items():
            merged[key] = _merge(merged[key], value) if key in merged else _copy(value)
    return merged


def _merge(into: Any, value: Any) -> Any:
    if isinstance(into, bool) or isinstance(value, bool):
        return into
    if isinstance(into, int | float) and isinstance(value, int | float):
        return into + value
    if isinstance(into, dict) and isinstance(value, dict):
        for key, item in value.items():
            into[key] = _merge(into[key], item) if key in into else _copy(item)
        return into
    if isinstance(into, list) and isinstance(value, list):
        return into + value
    return into


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value
