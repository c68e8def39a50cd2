"""``sipwarden gateway``: the inline SIP firewall in front of an SBC or core node.

A stateless proxy (IPv4 and IPv6) between ``--listen`` endpoints (the untrusted side,
repeatable) and one ``--upstream``, each ``udp:``, ``tcp:`` or ``tls:`` (transport conversion
included); every message is inspected by the same engine and detectors as ``analyze``.
``--duration S`` stops it by itself; SIGINT/SIGTERM stop it gracefully. On exit one JSON
document goes to stdout: the counters (every drop by reason) and the findings.
``--blocklist-db`` (or ``$SIPWARDEN_DB``) names the shared SQLite blocklist that ``sipwarden
blocklist`` writes: the gateway mirrors it into memory within a second of a change and enforces
it, and writes its own bans from findings to it within a second (without it they live in the
gateway's memory only; either way the exit report lists them). ``--metrics IP:PORT``
serves Prometheus ``/metrics`` from the gateway's loop (off by default); ``--log-format
json|text`` chooses the log lines on stderr (text on a TTY, JSON otherwise).

``--config FILE`` configures the detectors and, through its ``[gateway]`` section, the policy
(``[gateway.policy]``), the sanitizing (``[gateway.sanitize]``), the TCP/TLS bounds
(``[gateway.streams]``), the addresses, the TLS files and the shared branch key
(``secret_file``); a flag given on the command line wins over the file.

TLS: a ``tls:`` listen address needs ``--tls-cert`` and ``--tls-key`` (or ``gateway.tls_cert``
/ ``gateway.tls_key``); the key must be unencrypted PEM that neither group nor other may read.
A ``tls:`` upstream is always verified, against ``--upstream-ca`` or the system's CAs, under
``--upstream-server-name`` or its IP. The files are checked before any socket is opened.

``--workers N`` runs N processes on the same listen addresses (``SO_REUSEPORT``, see
:mod:`sipwarden.gateway.workers`); they share the Via branch key (``secret_file``, else one
random key made by the parent and never written anywhere). Worker i serves ``/metrics`` on the
metrics port + i. The parent prints the one "listening on" line once every worker is bound and
one merged report at the end (counters summed, bans and findings concatenated, ``"workers":
N``); it exits 1 when a worker died. With N = 1 (the default) there is no supervisor.

SIGHUP reloads ``--config`` without dropping traffic: the policy, the sanitizing and the
detectors are rebuilt and swapped in between two messages (bans survive; the detectors' state
only when their configuration changed). Addresses, workers, metrics, TLS files, stream bounds,
``fail_open``, ``blocklist_db`` and ``secret_file`` need a restart: a change to them is logged
and the running value kept. A config that does not validate is logged (file and key) and the
old one stays. Flags still win over the re-read file.

Secure defaults: the listen addresses must be concrete (they are written into Via headers, so
``0.0.0.0`` / ``::`` are refused), and a non-loopback listen address needs ``--allow-public``:
until the enforcing policy is configured, the gateway forwards whatever the detectors do not
stop, and exposing that to a network should be a decision, not an accident. The same goes for
``--metrics``: counters and table sizes tell an attacker what the gateway sees and how full it is.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import ssl
import stat
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from sipwarden.errors import InputError, SipwardenError

if TYPE_CHECKING:
    from sipwarden.config import Settings
    from sipwarden.detect import Engine, Finding
    from sipwarden.gateway.enforcer import Enforcer, SharedBlocklist
    from sipwarden.gateway.proxy import Incoming, PathMode
    from sipwarden.gateway.sanitize import Sanitizer
    from sipwarden.gateway.server import GatewayServer, StreamOptions, TlsOptions
    from sipwarden.gateway.verdict import DropReason
    from sipwarden.gateway.workers import WorkerChannel
    from sipwarden.net import Endpoint

__all__ = ["GatewayFlags", "GatewayPlan", "LogFormat", "check_tls_files", "gateway_command"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Exit status when a worker of ``--workers N`` died (the merged report is still printed).
EXIT_WORKER_DIED = 1
#: A PEM certificate chain or CA bundle is kilobytes; a system CA bundle about 200 KiB.
MAX_PEM_BYTES = 16 << 20
#: Findings kept from detectors replaced by reloads (for the exit report); more are counted.
MAX_RETIRED_FINDINGS = 10_000


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


def gateway_command(
    listen: Annotated[
        list[str] | None,
        typer.Option(
            "--listen",
            "-l",
            metavar="ADDR",
            help=(
                "Untrusted-side address, udp|tcp|tls:IP:PORT or udp|tcp|tls:[IPv6]:PORT "
                "(repeatable; replaces gateway.listen of --config)."
            ),
        ),
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream",
            "-u",
            metavar="ADDR",
            help=(
                "The protected SBC/core, udp|tcp|tls:IP:PORT (replaces gateway.upstream of "
                "--config)."
            ),
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            help="Stop after this many seconds (default: run until SIGINT/SIGTERM).",
            min=0.0,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help=(
                "TOML config: the detectors (as for analyze) and the \\[gateway] section "
                "(policy, sanitize, streams, addresses, TLS files); flags given here win over "
                "the file. SIGHUP re-reads it."
            ),
        ),
    ] = None,
    allow_public: Annotated[
        bool | None,
        typer.Option(
            "--allow-public/--no-allow-public",
            help=(
                "Allow listening (and --metrics) on a non-loopback address "
                "(default: gateway.allow_public, else no)."
            ),
            show_default=False,
        ),
    ] = None,
    fail_open: Annotated[
        bool | None,
        typer.Option(
            "--fail-open/--no-fail-open",
            help=(
                "Forward when the engine raises (default: gateway.fail_open, else drop, counted)."
            ),
            show_default=False,
        ),
    ] = None,
    blocklist_db: Annotated[
        Path | None,
        typer.Option(
            "--blocklist-db",
            help=(
                "The shared SQLite blocklist that `sipwarden blocklist` writes; its bans apply "
                "within a second of a change (default: gateway.blocklist_db, else "
                "$SIPWARDEN_DB if set, else none)."
            ),
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            metavar="ADDR",
            help=(
                "Serve Prometheus /metrics on IP:PORT, e.g. 127.0.0.1:9464 (off by default; a "
                "non-loopback address needs --allow-public; with --workers N, worker i serves "
                "on PORT+i) (default: gateway.metrics)."
            ),
        ),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            "--log-format",
            help="Log lines on stderr as json or text (default: text on a TTY, json otherwise).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            "-w",
            min=1,
            max=64,  # config.MAX_WORKERS (not imported here: --help stays fast)
            help=(
                "Worker processes sharing the listen addresses (SO_REUSEPORT: one client stays "
                "on one worker) (default: gateway.workers, else 1)."
            ),
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            "--tls-cert",
            metavar="FILE",
            help=("Certificate chain (PEM) for tls: listen addresses (default: gateway.tls_cert)."),
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            "--tls-key",
            metavar="FILE",
            help=("Its private key (unencrypted PEM, mode 600) (default: gateway.tls_key)."),
        ),
    ] = None,
    upstream_ca: Annotated[
        Path | None,
        typer.Option(
            "--upstream-ca",
            metavar="FILE",
            help=(
                "CA bundle (PEM) a tls: upstream's certificate must chain to (default: "
                "gateway.upstream_ca, else the system's CAs)."
            ),
        ),
    ] = None,
    upstream_server_name: Annotated[
        str | None,
        typer.Option(
            "--upstream-server-name",
            metavar="NAME",
            help=(
                "Name a tls: upstream's certificate must carry, sent as SNI (default: "
                "gateway.upstream_server_name, else the upstream's IP)."
            ),
        ),
    ] = None,
) -> None:
    """Run the inline SIP firewall: a stateless proxy that inspects every message."""
    from sipwarden.config import Settings, load_settings  # noqa: PLC0415
    from sipwarden.observability import configure_logging  # noqa: PLC0415

    if log_format is None:
        log_format = LogFormat.TEXT if sys.stderr.isatty() else LogFormat.JSON
    configure_logging(json=log_format is LogFormat.JSON)
    flags = GatewayFlags(
        listen=tuple(listen) if listen else None,
        upstream=upstream,
        allow_public=allow_public,
        fail_open=fail_open,
        blocklist_db=blocklist_db,
        metrics=metrics,
        workers=workers,
        tls_cert=tls_cert,
        tls_key=tls_key,
        upstream_ca=upstream_ca,
        upstream_server_name=upstream_server_name,
    )
    settings = load_settings(config) if config is not None else Settings()
    plan = GatewayPlan.resolve(flags, settings)
    check_tls_files(plan)  # before any socket: a bad file is an error now, not at a handshake
    if plan.blocklist_db is not None:
        _open_blocklist(plan.blocklist_db)
    if plan.workers == 1:
        worker = _Worker(plan, flags, config, secret=plan.secret)
        report = worker.serve(duration, announce=True)
        report["workers"] = 1
        _print_report(report)
        return
    _supervise(plan, flags, config, duration, json_logs=log_format is LogFormat.JSON)


# -- flags + file → one validated plan ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GatewayFlags:
    """What the command line gave (None: not given, the file or the default decides)."""

    listen: tuple[str, ...] | None = None
    upstream: str | None = None
    allow_public: bool | None = None
    fail_open: bool | None = None
    blocklist_db: Path | None = None
    metrics: str | None = None
    workers: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    upstream_ca: Path | None = None
    upstream_server_name: str | None = None


#: The plan's fields that apply only at start, and how an operator names them (SIGHUP logs a
#: change to them instead of applying it).
_RESTART_ONLY = {
    "listen": "gateway.listen (--listen)",
    "upstream": "gateway.upstream (--upstream)",
    "allow_public": "gateway.allow_public (--allow-public)",
    "fail_open": "gateway.fail_open (--fail-open)",
    "metrics_address": "gateway.metrics (--metrics)",
    "blocklist_db": "gateway.blocklist_db (--blocklist-db)",
    "workers": "gateway.workers (--workers)",
    "tls": "gateway.tls_cert/tls_key/upstream_ca/upstream_server_name (--tls-*, --upstream-*)",
    "streams": "gateway.streams",
    "secret": "gateway.secret_file",
    "path": "gateway.path",
}


@dataclass(frozen=True)
class GatewayPlan:
    """Flags and file merged (a flag wins over the file, the file over the default) and
    checked; everything a gateway process needs. Only ``settings`` may change on SIGHUP."""

    settings: Settings
    listen: tuple[Endpoint, ...]
    upstream: Endpoint
    allow_public: bool
    fail_open: bool
    metrics_address: tuple[str, int] | None
    blocklist_db: Path | None
    workers: int
    tls: TlsOptions
    streams: StreamOptions
    #: When REGISTERs get our Path entry (``gateway.path``).
    path: PathMode
    #: The branch key from ``secret_file`` (None: none configured). Never printed.
    secret: bytes | None = dataclasses.field(repr=False)

    @classmethod
    def resolve(cls, flags: GatewayFlags, settings: Settings) -> GatewayPlan:
        """Merge and check; InputError naming the flag (and the key) for every problem. Reads
        no file (see :func:`check_tls_files`)."""
        from sipwarden.gateway.server import StreamOptions, TlsOptions, parse_address  # noqa: PLC0415
        from sipwarden.net import AddressKind, Transport, classify  # noqa: PLC0415
        from sipwarden.observability import parse_metrics_address  # noqa: PLC0415

        file = settings.gateway
        listen = list(flags.listen or file.listen or ())
        upstream = flags.upstream if flags.upstream is not None else file.upstream
        if not listen or upstream is None:
            missing = "--listen" if not listen else "--upstream"
            key = "gateway.listen" if not listen else "gateway.upstream"
            raise InputError(missing, f"required: give {missing} or {key} in the --config file")
        allow_public = _first(flags.allow_public, file.allow_public, default=False)
        fail_open = _first(flags.fail_open, file.fail_open, default=False)
        workers = _pick(flags.workers, file.workers, 1)
        endpoints = [parse_address(text) for text in listen]
        upstream_ep = parse_address(upstream)
        for text, endpoint in zip(listen, endpoints, strict=True):
            kind = classify(endpoint.ip)
            if kind is AddressKind.UNSPECIFIED:
                raise InputError(text, "name the address to listen on (it goes into Via headers)")
            if kind is not AddressKind.LOOPBACK and not allow_public:
                raise InputError(text, "not a loopback address: add --allow-public to listen on it")
        if len(set(endpoints)) != len(endpoints):
            raise InputError(" ".join(listen), "the same --listen address is given twice")
        metrics = _pick(flags.metrics, file.metrics, None)
        metrics_address = parse_metrics_address(metrics) if metrics is not None else None
        if metrics_address is not None:
            # Counters and state sizes tell an attacker what the gateway sees and how full it is.
            if not allow_public and classify(metrics_address[0]) is not AddressKind.LOOPBACK:
                raise InputError(
                    metrics or "",
                    "not a loopback address: add --allow-public to serve metrics on it",
                )
            if metrics_address[1] != 0 and metrics_address[1] + workers - 1 > 65535:
                raise InputError(
                    metrics or "", f"worker {workers - 1} would serve metrics above port 65535"
                )
        env_db = os.environ.get("SIPWARDEN_DB")
        blocklist_db = _pick(flags.blocklist_db, file.blocklist_db, None) or (
            Path(env_db) if env_db else None
        )
        tls = TlsOptions(
            cert=_pick(flags.tls_cert, file.tls_cert, None),
            key=_pick(flags.tls_key, file.tls_key, None),
            upstream_ca=_pick(flags.upstream_ca, file.upstream_ca, None),
            upstream_server_name=_pick(flags.upstream_server_name, file.upstream_server_name, None),
        )
        for text, endpoint in zip(listen, endpoints, strict=True):
            if endpoint.transport is Transport.TLS and (tls.cert is None or tls.key is None):
                flag = "--tls-cert" if tls.cert is None else "--tls-key"
                key = "gateway.tls_cert" if tls.cert is None else "gateway.tls_key"
                raise InputError(
                    text, f"a tls: listen address needs a certificate and key: give {flag} or {key}"
                )
        streams = settings.gateway.streams
        return cls(
            settings=settings,
            listen=tuple(endpoints),
            upstream=upstream_ep,
            allow_public=allow_public,
            fail_open=fail_open,
            metrics_address=metrics_address,
            blocklist_db=blocklist_db,
            workers=workers,
            tls=tls,
            streams=StreamOptions(
                idle_timeout_s=streams.idle_timeout_s,
                max_connections=streams.max_connections,
                max_connections_per_source=streams.max_connections_per_source,
                handshake_timeout_s=streams.handshake_timeout_s,
            ),
            path=file.path,
            secret=settings.gateway_secret,
        )

    def restart_only_changes(self, new: GatewayPlan) -> list[str]:
        """The names (as an operator writes them) of what differs in ``new`` but can only
        change with a restart."""
        return [
            label
            for name, label in _RESTART_ONLY.items()
            if getattr(self, name) != getattr(new, name)
        ]

    @property
    def uses_tls_listen(self) -> bool:
        return any(str(ep.transport) == "tls" for ep in self.listen)

    @property
    def uses_tls_upstream(self) -> bool:
        return str(self.upstream.transport) == "tls"


def _first(flag: bool | None, file: bool | None, *, default: bool) -> bool:
    """The command line's value if given, else the file's, else ``default``."""
    if flag is not None:
        return flag
    return file if file is not None else default


def _pick(flag: T | None, file: T | None, default: T) -> T:
    """As :func:`_first` for any type."""
    return flag if flag is not None else file if file is not None else default


# -- TLS files, checked before any socket ------------------------------------------------------


def check_tls_files(plan: GatewayPlan) -> None:
    """The TLS files the plan uses are regular, bounded, parse as PEM and belong together; the
    key is unencrypted and private to its owner. InputError naming the file (never its
    content). Files given but unused (no ``tls:`` address on that side) are logged, not read."""
    tls = plan.tls
    if plan.uses_tls_listen:
        assert tls.cert is not None and tls.key is not None  # GatewayPlan.resolve checked
        _check_key_file(tls.key)
        _check_certificate_chain(tls.cert, tls.key)
    elif tls.cert is not None or tls.key is not None:
        log.warning("--tls-cert/--tls-key (gateway.tls_cert/tls_key) unused: no tls: --listen")
    if plan.uses_tls_upstream:
        if tls.upstream_ca is not None:
            _check_ca_bundle(tls.upstream_ca)
    elif tls.upstream_ca is not None or tls.upstream_server_name is not None:
        log.warning(
            "--upstream-ca/--upstream-server-name (gateway.upstream_ca/upstream_server_name) "
            "unused: the upstream is not tls:"
        )


def _open_pem(path: Path, role: str) -> os.stat_result:
    """fstat of a regular file of bounded size, opened without blocking (a FIFO would wait)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(str(path), f"cannot read the {role}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(info.st_mode):
        raise InputError(str(path), f"the {role} is not a regular file")
    if info.st_size > MAX_PEM_BYTES:
        raise InputError(str(path), f"the {role} is larger than {MAX_PEM_BYTES} bytes")
    return info


def _check_key_file(path: Path) -> None:
    from sipwarden.config import private_file_problem  # noqa: PLC0415

    info = _open_pem(path, "TLS private key (--tls-key, gateway.tls_key)")
    problem = private_file_problem(info.st_mode, info.st_uid)
    if problem is not None:
        raise InputError(str(path), f"TLS private key (--tls-key, gateway.tls_key) {problem}")


def _check_certificate_chain(cert: Path, key: Path) -> None:
    _open_pem(cert, "TLS certificate (--tls-cert, gateway.tls_cert)")
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # The certificate file alone first, so a bad one is named as such.
        probe.load_verify_locations(cafile=str(cert))
    except (OSError, ssl.SSLError) as exc:
        raise InputError(
            str(cert), f"not a PEM certificate (--tls-cert, gateway.tls_cert): {_ssl_why(exc)}"
        ) from None
    asked_password = False

    def no_password() -> bytes:
        # Without a callback OpenSSL would prompt on the terminal for an encrypted key.
        nonlocal asked_password
        asked_password = True
        return b""

    try:
        probe.load_cert_chain(cert, key, password=no_password)
    except (OSError, ssl.SSLError) as exc:
        why = (
            "encrypted private keys are not supported (the gateway starts unattended)"
            if asked_password
            else f"not a PEM private key matching {cert}: {_ssl_why(exc)}"
        )
        raise InputError(str(key), f"TLS private key (--tls-key, gateway.tls_key): {why}") from None


def _check_ca_bundle(path: Path) -> None:
    _open_pem(path, "CA bundle (--upstream-ca, gateway.upstream_ca)")
    try:
        ssl.create_default_context(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise InputError(
            str(path), f"not a PEM CA bundle (--upstream-ca, gateway.upstream_ca): {_ssl_why(exc)}"
        ) from None


def _ssl_why(exc: OSError | ssl.SSLError) -> str:
    """OpenSSL's reason (``PEM_R_NO_START_LINE``…), never file content."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return exc.strerror or type(exc).__name__


# -- one gateway process -----------------------------------------------------------------------


class _Worker:
    """One gateway process: the server, and what SIGHUP swaps in it."""

    def __init__(
        self,
        plan: GatewayPlan,
        flags: GatewayFlags,
        config: Path | None,
        *,
        secret: bytes | None,
        reuse_port: bool = False,
        metrics_address: tuple[str, int] | None = None,
        channel: WorkerChannel | None = None,
    ) -> None:
        from sipwarden.detect import Engine  # noqa: PLC0415
        from sipwarden.gateway.enforcer import Enforcer, SharedBlocklist  # noqa: PLC0415
        from sipwarden.gateway.policy import Policy  # noqa: PLC0415
        from sipwarden.gateway.server import GatewayServer  # noqa: PLC0415

        self.plan = plan
        self.flags = flags
        self.config = config
        self.channel = channel
        settings = plan.settings
        # The policy's trusted peers stay out of the detectors' allow_sources on purpose: a
        # spoofed trusted source must still produce injection/malformed findings.
        self.engine: Engine = Engine(settings.build_detectors(), settings.engine)
        self.enforcer: Enforcer = Enforcer(Policy(settings.gateway.policy))
        self.shared: SharedBlocklist | None = (
            SharedBlocklist(plan.blocklist_db, self.enforcer)
            if plan.blocklist_db is not None
            else None
        )
        # One key for the Via branch and the topology tokens (the sanitizer derives its own
        # from it): random per process unless secret_file (or the supervisor) gives one.
        self.secret = secret if secret is not None else os.urandom(32)
        sanitizer = _sanitizer(settings, self.secret)
        #: Findings and evictions of engines replaced by a reload (for the exit report).
        self.retired_findings: list[Finding] = []
        self.retired_findings_dropped = 0
        self.retired_engine_findings_dropped = 0
        self.retired_evictions = 0
        self.reloads = 0
        self.reload_errors = 0
        on_tick = self._tick if self.shared is not None or channel is not None else None
        self.server: GatewayServer = GatewayServer(
            list(plan.listen),
            plan.upstream,
            self.engine,
            self.enforcer,
            sanitizer.outgoing,
            incoming=_incoming(sanitizer),
            secret=self.secret,
            fail_open=plan.fail_open,
            on_tick=on_tick,
            metrics_address=metrics_address if channel is not None else plan.metrics_address,
            reuse_port=reuse_port,
            tls=plan.tls,
            streams=plan.streams,
            path=plan.path,
            # Always set, also without --config: SIGHUP's default action would end the process.
            on_reload=self.reload,
        )

    def _tick(self, now: float) -> None:
        if self.channel is not None and not self.channel.parent_alive():
            # The supervisor is gone (PR_SET_PDEATHSIG covers Linux; this covers the rest).
            log.warning("the supervisor is gone; stopping")
            self.server.stop()
        if self.shared is not None:
            self.shared(now)

    def serve(self, duration: float | None, *, announce: bool) -> dict[str, Any]:
        """Run until stopped; the exit report."""
        from sipwarden.gateway.server import tune_gc  # noqa: PLC0415
        from sipwarden.gateway.workers import FORWARDED_SIGNALS  # noqa: PLC0415

        server = self.server

        async def run() -> None:
            await server.start()
            tune_gc()
            # Whoever reads the "listening" line may signal at once (a SIGHUP's default action
            # would end the process). So the signals wait, blocked, until the server's own
            # handlers are in place: run() below installs them before its first await, and
            # the unblock is queued for the loop's next turn. (A worker has had them blocked
            # since the fork.) They stay blocked after run(): a late signal must not cut the
            # exit report short.
            signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)
            if announce:
                _announce([self.listening_info()], self.plan)
            if self.channel is not None:
                self.channel.listening(self.listening_info())
            asyncio.get_running_loop().call_soon(
                signal.pthread_sigmask, signal.SIG_UNBLOCK, FORWARDED_SIGNALS
            )
            try:
                await server.run(duration, block_signals_after=True)
            finally:
                signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED_SIGNALS)

        try:
            asyncio.run(run())
        finally:
            if self.shared is not None:
                # Every ban not yet written is written before the file is closed.
                left = self.shared.drain(time.time())
                if left:
                    log.error("%d gateway bans could not be written to %s", left, self.shared)
                self.shared.close()
        return self.report()

    def listening_info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "listen": [_text(ep) for ep in self.server.local_endpoints],
            "metrics_port": self.server.metrics_port,
        }

    # -- SIGHUP --------------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read ``--config`` and swap what may change while running (see the module doc)."""
        from sipwarden.config import load_settings  # noqa: PLC0415
        from sipwarden.detect import Engine  # noqa: PLC0415
        from sipwarden.gateway.policy import Policy  # noqa: PLC0415

        if self.config is None:
            log.warning("SIGHUP: nothing to reload (started without --config)")
            return
        try:
            new = GatewayPlan.resolve(self.flags, load_settings(self.config))
        except SipwardenError as exc:
            self.reload_errors += 1
            log.error(
                "reload of %s failed; the previous configuration stays in force: %s",
                self.config,
                exc,
                extra={"config": str(self.config)},
            )
            return
        old = self.plan
        for label in old.restart_only_changes(new):
            log.warning(
                "%s changed in %s: needs a restart; the running value stays", label, self.config
            )
        before, after = old.settings, new.settings
        engine: Engine | None = None
        if after.engine != before.engine or dict(after.detectors) != dict(before.detectors):
            self._retire(self.engine)
            engine = self.engine = Engine(after.build_detectors(), after.engine)
            log.warning(
                "detector configuration changed in %s: the detectors' state (windows, open "
                "episodes) starts afresh; findings so far are kept for the exit report",
                self.config,
            )
        if after.gateway.policy != before.gateway.policy:
            # Same Enforcer, same store: bans survive; the rate limits' state starts afresh.
            self.retired_evictions += self.enforcer.policy.evictions()
            self.enforcer.policy = Policy(after.gateway.policy)
        sanitizer: Sanitizer | None = None
        if after.gateway.sanitize != before.gateway.sanitize:
            # Same key: topology tokens handed out before the reload still open.
            sanitizer = _sanitizer(after, self.secret)
        self.server.reconfigure(
            engine=engine,
            policy=self.enforcer,
            outgoing=sanitizer.outgoing if sanitizer is not None else None,
            incoming=_incoming(sanitizer) if sanitizer is not None else None,
        )
        # Restart-only values stay as running; the rest is what the file now says.
        self.plan = dataclasses.replace(old, settings=after)
        self.reloads += 1
        log.info("reloaded %s", self.config, extra={"config": str(self.config)})

    def _blocklist_counts(self) -> dict[str, int]:
        """What became of the gateway's bans: applied, refused (store full) and, with a shared
        store, written, write failures (retried), dropped from a full queue, still pending."""
        counts = {"applied": len(self.enforcer.recent), "refused": self.enforcer.bans_refused}
        shared = self.shared
        if shared is not None:
            counts |= {
                "written": shared.flushed,
                "write_failures": shared.flush_failures,
                "queue_overflow": shared.pending_overflow,
                "not_written": len(shared.pending),
                "refused_by_shared_store": shared.store.refusals,
            }
        return counts

    def _retire(self, engine: Engine) -> None:
        self.retired_engine_findings_dropped += engine.stats.findings_dropped
        self.retired_evictions += engine.evictions()
        findings = engine.finish()
        room = MAX_RETIRED_FINDINGS - len(self.retired_findings)
        self.retired_findings.extend(findings[: max(room, 0)])
        self.retired_findings_dropped += max(len(findings) - max(room, 0), 0)

    # -- exit report ---------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        proxy = self.server.proxy
        assert proxy is not None
        stats = proxy.stats
        engine, enforcer = self.engine, self.enforcer
        findings = [*self.retired_findings, *engine.finish()]
        return {
            "received": stats.received,
            "forwarded_requests": stats.forwarded_requests,
            "forwarded_responses": stats.forwarded_responses,
            "rejected": _rejected(stats.rejected),
            "dropped": {str(k): v for k, v in sorted(stats.dropped.items())},
            "shed": self.server.shed,
            "keepalives_answered": stats.keepalives_answered,
            "keepalives_ignored": stats.keepalives_ignored,
            "undelivered": stats.undelivered,
            "connections_refused": dict(sorted(self.server.connections_refused.items())),
            "connections_closed": dict(sorted(self.server.connections_closed.items())),
            "engine_errors": stats.engine_errors,
            "socket_errors": self.server.socket_errors,
            "internal_errors": self.server.internal_errors,
            "state_evictions": engine.evictions()
            + enforcer.policy.evictions()
            + self.retired_evictions,
            "reloads": self.reloads,
            "reload_errors": self.reload_errors,
            "bans": [
                {"ip": o.ip, "ttl_s": o.ttl_s, "reason": o.reason, "repeat": o.repeat}
                for o in enforcer.recent
            ],
            "findings": [f.to_json() for f in findings],
            "findings_dropped": self.retired_findings_dropped
            + engine.stats.findings_dropped
            + self.retired_engine_findings_dropped,
            "blocklist": self._blocklist_counts(),
        }


def _sanitizer(settings: Settings, secret: bytes) -> Sanitizer:
    """The edits of messages crossing the gateway: going out (product tokens, trust-domain
    headers, topology hidden behind tokens keyed by ``secret``) and coming in (tokens opened)."""
    from sipwarden.gateway.sanitize import Sanitizer  # noqa: PLC0415

    return Sanitizer(settings.gateway.sanitize, secret=secret)


def _incoming(sanitizer: Sanitizer) -> Incoming:
    # Sanitizer.incoming is generic over (Request, Response); the proxy's Incoming takes the
    # union. Same function, a signature mypy cannot match.
    return cast("Incoming", sanitizer.incoming)


# -- --workers N -------------------------------------------------------------------------------


def _supervise(
    plan: GatewayPlan,
    flags: GatewayFlags,
    config: Path | None,
    duration: float | None,
    *,
    json_logs: bool,
) -> None:
    from sipwarden.gateway.workers import Supervisor, merge_reports  # noqa: PLC0415
    from sipwarden.observability import configure_logging  # noqa: PLC0415

    _probe_listen(plan.listen)
    # One key for every worker: a response may come back through any of them, and each must
    # recognise the branch another one wrote. Made here, handed over by fork, never written.
    secret = plan.secret if plan.secret is not None else os.urandom(32)

    def worker_main(channel: WorkerChannel) -> int:
        configure_logging(json=json_logs, worker=channel.index)
        metrics_address = None
        if plan.metrics_address is not None:
            host, port = plan.metrics_address
            metrics_address = (host, port + channel.index if port else 0)
        try:
            worker = _Worker(
                plan,
                flags,
                config,
                secret=secret,
                reuse_port=True,
                metrics_address=metrics_address,
                channel=channel,
            )
            report = worker.serve(duration, announce=False)
        except SipwardenError as exc:
            channel.error(str(exc))
            return 2
        channel.report(report)
        return 0

    supervisor = Supervisor(plan.workers, worker_main, ends_by_itself=duration is not None)
    result = supervisor.run(lambda infos: _announce(infos, plan))
    report = merge_reports([result.reports[i] for i in sorted(result.reports)])
    report["workers"] = plan.workers
    # What each worker saw: how evenly SO_REUSEPORT spreads the flows, at a glance.
    report["per_worker"] = [
        {
            "worker": index,
            "pid": result.listening.get(index, {}).get("pid"),
            "received": result.reports[index].get("received"),
        }
        for index in sorted(result.reports)
    ]
    if result.failed:
        report["workers_failed"] = [
            {"worker": e.index, "pid": e.pid, "exit": e.describe()} for e in result.failed
        ]
    _print_report(report)
    if result.failed:
        for ended in result.failed:
            sys.stderr.write(
                f"error: worker {ended.index} (pid {ended.pid}) died: {ended.describe()}\n"
            )
        raise typer.Exit(EXIT_WORKER_DIED)


# -- output ------------------------------------------------------------------------------------


def _announce(infos: Sequence[Mapping[str, Any]], plan: GatewayPlan) -> None:
    """The one stderr line supervisors and tests wait for, once every socket is bound."""
    bound = ", ".join(infos[0]["listen"])
    line = f"sipwarden gateway: listening on {bound}; upstream {_text(plan.upstream)}"
    if len(infos) > 1:
        pids = ", ".join(str(info["pid"]) for info in infos)
        line += f"; {len(infos)} workers (pids {pids})"
    if plan.metrics_address is not None and infos[0].get("metrics_port") is not None:
        host = plan.metrics_address[0]
        host = f"[{host}]" if ":" in host else host
        urls = ", ".join(f"http://{host}:{info['metrics_port']}/metrics" for info in infos)
        line += f"; metrics on {urls}"
        if len(infos) > 1:
            line += " (one per worker, in worker order)"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _print_report(report: Mapping[str, Any]) -> None:
    # ASCII: the report carries what attackers sent (User-Agents in findings); escaped, it is
    # valid JSON and UTF-8 whatever the locale.
    try:
        sys.stdout.write(json.dumps(report, ensure_ascii=True, indent=2) + "\n")
        sys.stdout.flush()
    except OSError as exc:
        raise InputError("stdout", f"cannot write the exit report: {exc.strerror or exc}") from None


def _open_blocklist(path: Path) -> None:
    """Create (or check) the shared blocklist once, before any worker opens it: N processes
    switching a new file to WAL at once can see it locked. A file that did not exist is
    created empty, with a warning: a misspelt path would otherwise enforce nothing, silently."""
    from sipwarden.store.sqlite import SqliteBlocklistStore  # noqa: PLC0415

    existed = path.exists()
    SqliteBlocklistStore(path).close()  # InputError/StoreUnavailable name the file
    if not existed:
        log.warning("created a new, empty blocklist %s (was the path meant?)", path)


def _probe_listen(listen: Sequence[Endpoint]) -> None:
    """Fail when a listen address is already in use - by another gateway too: workers bind
    with SO_REUSEPORT, which would let them join another process's port and share its
    traffic. A bind without the option, closed at once, tells."""
    import socket  # noqa: PLC0415

    from sipwarden.net import Transport  # noqa: PLC0415

    for endpoint in listen:
        family = socket.AF_INET6 if ":" in endpoint.ip else socket.AF_INET
        kind = socket.SOCK_DGRAM if endpoint.transport is Transport.UDP else socket.SOCK_STREAM
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:  # as the server will (TIME_WAIT is no conflict)
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((endpoint.ip, endpoint.port))
            except OSError as exc:
                raise InputError(_text(endpoint), f"cannot listen: {exc.strerror or exc}") from None


def _text(endpoint: Endpoint) -> str:
    host = f"[{endpoint.ip}]" if ":" in endpoint.ip else endpoint.ip
    return f"{endpoint.transport}:{host}:{endpoint.port}"


def _rejected(counts: Mapping[tuple[int, DropReason], int]) -> dict[str, dict[str, int]]:
    """``{status: {reason: count}}`` for the exit report."""
    out: dict[str, dict[str, int]] = {}
    for (status, reason), count in sorted(counts.items()):
        out.setdefault(str(status), {})[str(reason)] = count
    return out
