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
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sipwarden.errors import InputError

if TYPE_CHECKING:
    from sipwarden.gateway.proxy import Enforcer
    from sipwarden.net import Endpoint

__all__ = ["LogFormat", "gateway_command"]


class LogFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


def gateway_command(
    listen: Annotated[
        list[str],
        typer.Option(
            "--listen",
            "-l",
            metavar="ADDR",
            help="Untrusted-side address, udp:IP:PORT or udp:[IPv6]:PORT (repeatable).",
        ),
    ],
    upstream: Annotated[
        str,
        typer.Option(
            "--upstream", "-u", metavar="ADDR", help="The protected SBC/core, udp:IP:PORT."
        ),
    ],
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
        typer.Option("--config", "-c", help="TOML config for the detectors (as for analyze)."),
    ] = None,
    allow_public: Annotated[
        bool,
        typer.Option(
            "--allow-public", help="Allow listening (and --metrics) on a non-loopback address."
        ),
    ] = False,
    fail_open: Annotated[
        bool,
        typer.Option(
            "--fail-open", help="Forward when the engine raises (default: drop, counted)."
        ),
    ] = False,
    blocklist_db: Annotated[
        Path | None,
        typer.Option(
            "--blocklist-db",
            help=(
                "The shared SQLite blocklist that `sipwarden blocklist` writes; its bans apply "
                "within a second of a change [default: $SIPWARDEN_DB if set, else none]."
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
                "non-loopback address needs --allow-public)."
            ),
        ),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            "--log-format",
            help="Log lines on stderr as json or text [default: text on a TTY, json otherwise].",
        ),
    ] = None,
) -> None:
    """Run the inline SIP firewall: a stateless UDP proxy that inspects every message."""
    from sipwarden.config import Settings, load_settings  # noqa: PLC0415
    from sipwarden.detect import Engine  # noqa: PLC0415
    from sipwarden.gateway.policy import Policy  # noqa: PLC0415
    from sipwarden.gateway.proxy import Enforcer  # noqa: PLC0415
    from sipwarden.gateway.sanitize import Sanitizer  # noqa: PLC0415
    from sipwarden.gateway.server import GatewayServer, parse_address  # noqa: PLC0415
    from sipwarden.net import AddressKind, classify  # noqa: PLC0415
    from sipwarden.observability import configure_logging, parse_metrics_address  # noqa: PLC0415

    if log_format is None:
        log_format = LogFormat.TEXT if sys.stderr.isatty() else LogFormat.JSON
    configure_logging(json=log_format is LogFormat.JSON)
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
    settings = load_settings(config) if config is not None else Settings()
    engine = Engine(settings.build_detectors(), settings.engine)
    # Default policy and sanitizing until the gateway's own config section exists (issue 4).
    policy = Enforcer(Policy())
    env_db = os.environ.get("SIPWARDEN_DB")
    shared_path = blocklist_db or (Path(env_db) if env_db else None)
    on_tick = _blocklist_mirror(shared_path, policy) if shared_path is not None else None
    server = GatewayServer(
        endpoints,
        upstream_ep,
        engine,
        policy,
        Sanitizer().outgoing,
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
        "rejected": {str(k): v for k, v in sorted(stats.rejected.items())},
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


def _blocklist_mirror(path: Path, enforcer: Enforcer) -> Callable[[float], None]:
    """A tick that copies the shared SQLite blocklist into the gateway's in-memory one when it
    changed (its data_version moved): one cheap query a second instead of one per message."""
    from sipwarden.store.sqlite import SqliteBlocklistStore  # noqa: PLC0415

    store = SqliteBlocklistStore(path)  # InputError/StoreUnavailable name the file
    seen: list[int | None] = [None]

    def mirror(now: float) -> None:
        version = store.data_version()
        if version != seen[0]:
            enforcer.mirror(store.list(now), now)
            seen[0] = version

    return mirror


def _text(endpoint: Endpoint) -> str:
    host = f"[{endpoint.ip}]" if ":" in endpoint.ip else endpoint.ip
    return f"udp:{host}:{endpoint.port}"
