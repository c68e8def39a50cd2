"""``sipwarden gateway``: the inline SIP firewall in front of an SBC or core node.

First slice of issue 4: a stateless UDP proxy (IPv4 and IPv6) between ``--listen`` endpoints
(the untrusted side, repeatable) and one ``--upstream``; every message is inspected by the same
engine and detectors as ``analyze``. ``--duration S`` stops it by itself; SIGINT/SIGTERM stop it
gracefully. On exit one JSON document goes to stdout: the counters (every drop by reason) and
the findings. ``--blocklist-db`` (or ``$SIPWARDEN_DB``) names the shared SQLite blocklist that
``sipwarden blocklist`` writes: the gateway mirrors it into memory within a second of a change
and enforces it; its own bans from findings stay in memory (listed in the exit report).
``--metrics IP:PORT`` serves Prometheus ``/metrics`` from the gateway's loop (off by default);
``--log-format json|text`` chooses the log lines on stderr (text on a TTY, JSON otherwise).

``--config FILE`` configures the detectors and, through its ``[gateway]`` section, the policy
(``[gateway.policy]``), the sanitizing (``[gateway.sanitize]``), the addresses and the shared
branch key (``secret_file``); a flag given on the command line wins over the file.

Secure defaults: the listen addresses must be concrete (they are written into Via headers, so
``0.0.0.0`` / ``::`` are refused), and a non-loopback listen address needs ``--allow-public``:
until the enforcing policy is configured, the gateway forwards whatever the detectors do not
stop, and exposing that to a network should be a decision, not an accident. The same goes for
``--metrics``: counters and table sizes tell an attacker what the gateway sees and how full it is.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sipwarden.errors import InputError

if TYPE_CHECKING:
    from sipwarden.gateway.verdict import DropReason
    from sipwarden.net import Endpoint

__all__ = ["LogFormat", "gateway_command"]


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
                "Untrusted-side address, udp:IP:PORT or udp:[IPv6]:PORT (repeatable; replaces "
                "gateway.listen of --config)."
            ),
        ),
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(
            "--upstream",
            "-u",
            metavar="ADDR",
            help="The protected SBC/core, udp:IP:PORT (replaces gateway.upstream of --config).",
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
                "TOML config: the detectors (as for analyze) and the [gateway] section "
                "(policy, sanitize, addresses); flags given here win over the file."
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
                "non-loopback address needs --allow-public) (default: gateway.metrics)."
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
) -> None:
    """Run the inline SIP firewall: a stateless UDP proxy that inspects every message."""
    from sipwarden.config import Settings, load_settings  # noqa: PLC0415
    from sipwarden.detect import Engine  # noqa: PLC0415
    from sipwarden.gateway.enforcer import Enforcer, SharedBlocklist  # noqa: PLC0415
    from sipwarden.gateway.policy import Policy  # noqa: PLC0415
    from sipwarden.gateway.sanitize import Sanitizer  # noqa: PLC0415
    from sipwarden.gateway.server import GatewayServer, parse_address  # noqa: PLC0415
    from sipwarden.net import AddressKind, classify  # noqa: PLC0415
    from sipwarden.observability import configure_logging, parse_metrics_address  # noqa: PLC0415

    if log_format is None:
        log_format = LogFormat.TEXT if sys.stderr.isatty() else LogFormat.JSON
    configure_logging(json=log_format is LogFormat.JSON)
    settings = load_settings(config) if config is not None else Settings()
    file = settings.gateway
    # A flag given on the command line wins over the file; the file over the built-in default.
    listen = listen or list(file.listen or ())
    upstream = upstream if upstream is not None else file.upstream
    if not listen or upstream is None:
        missing = "--listen" if not listen else "--upstream"
        key = "gateway.listen" if not listen else "gateway.upstream"
        raise InputError(missing, f"required: give {missing} or {key} in the --config file")
    allow_public = _first(allow_public, file.allow_public, default=False)
    fail_open = _first(fail_open, file.fail_open, default=False)
    metrics = metrics if metrics is not None else file.metrics
    blocklist_db = blocklist_db if blocklist_db is not None else file.blocklist_db
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
    metrics_address = parse_metrics_address(metrics) if metrics is not None else None
    if metrics_address is not None and not allow_public:
        # Counters and state sizes tell an attacker what the gateway sees and how full it is.
        if classify(metrics_address[0]) is not AddressKind.LOOPBACK:
            raise InputError(
                metrics or "", "not a loopback address: add --allow-public to serve metrics on it"
            )
    # The policy's trusted peers stay out of the detectors' allow_sources on purpose: a spoofed
    # trusted source must still produce injection/malformed findings.
    engine = Engine(settings.build_detectors(), settings.engine)
    policy = Enforcer(Policy(file.policy))
    env_db = os.environ.get("SIPWARDEN_DB")
    shared_path = blocklist_db or (Path(env_db) if env_db else None)
    on_tick = SharedBlocklist(shared_path, policy) if shared_path is not None else None
    server = GatewayServer(
        endpoints,
        upstream_ep,
        engine,
        policy,
        Sanitizer(file.sanitize).outgoing,
        secret=settings.gateway_secret,
        fail_open=fail_open,
        on_tick=on_tick,
        metrics_address=metrics_address,
    )

    async def serve() -> None:
        await server.start()
        bound = ", ".join(_text(ep) for ep in server.local_endpoints)
        line = f"sipwarden gateway: listening on {bound}; upstream {upstream}"
        if server.metrics_server is not None and metrics_address is not None:
            host = metrics_address[0]
            host = f"[{host}]" if ":" in host else host
            line += f"; metrics on http://{host}:{server.metrics_port}/metrics"
        # One line on stderr once the sockets are bound: supervisors and tests wait for it.
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        await server.run(duration)

    asyncio.run(serve())
    proxy = server.proxy
    assert proxy is not None
    stats = proxy.stats
    report = {
        "received": stats.received,
        "forwarded_requests": stats.forwarded_requests,
        "forwarded_responses": stats.forwarded_responses,
        "rejected": _rejected(stats.rejected),
        "dropped": {str(k): v for k, v in sorted(stats.dropped.items())},
        "engine_errors": stats.engine_errors,
        "socket_errors": server.socket_errors,
        "internal_errors": server.internal_errors,
        "state_evictions": engine.evictions() + policy.policy.evictions(),
        "bans": [
            {"ip": o.ip, "ttl_s": o.ttl_s, "reason": o.reason, "repeat": o.repeat}
            for o in policy.recent
        ],
        "findings": [f.to_json() for f in engine.finish()],
    }
    sys.stdout.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")


def _first(flag: bool | None, file: bool | None, *, default: bool) -> bool:
    """The command line's value if given, else the file's, else ``default``."""
    if flag is not None:
        return flag
    return file if file is not None else default


def _text(endpoint: Endpoint) -> str:
    host = f"[{endpoint.ip}]" if ":" in endpoint.ip else endpoint.ip
    return f"udp:{host}:{endpoint.port}"


def _rejected(counts: Mapping[tuple[int, DropReason], int]) -> dict[str, dict[str, int]]:
    """``{status: {reason: count}}`` for the exit report."""
    out: dict[str, dict[str, int]] = {}
    for (status, reason), count in sorted(counts.items()):
        out.setdefault(str(status), {})[str(reason)] = count
    return out
