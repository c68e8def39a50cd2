"""``sipwarden blocklist add|remove|list|export``: the blocklist the gateway enforces.

The database is an SQLite file (``store/sqlite.py``), found in this order: ``--db PATH``, the
``SIPWARDEN_DB`` environment variable, ``./sipwarden.db``. ``list`` and ``export`` of a file that
does not exist print an empty blocklist and create nothing. The CLI reads the wall clock; the
store never does.

Running gateways (``--blocklist-db``) write their bans from findings to the same file once a
second: origin ``finding``, the detector id as reason and the finding id as ``ref``. ``remove``
lifts such a ban in every gateway on the file within a tick.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from sipwarden.store.base import BlockEntry

__all__ = ["DEFAULT_DB", "app"]

DEFAULT_DB = "sipwarden.db"
EXIT_NOT_FOUND = 1

app = typer.Typer(
    help="The blocklist the gateway enforces: add, remove, list, export.", no_args_is_help=True
)

DbOption = Annotated[
    Path | None,
    typer.Option(
        "--db",
        help="SQLite blocklist database [default: $SIPWARDEN_DB, else ./sipwarden.db].",
        dir_okay=False,
    ),
]


class ListFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


class ExportFormat(StrEnum):
    PLAIN = "plain"
    IPSET = "ipset"
    NFTABLES = "nftables"


def _db_path(db: Path | None) -> Path:
    if db is not None:
        return db
    return Path(os.environ.get("SIPWARDEN_DB") or DEFAULT_DB)


def _live_entries(db: Path | None, now: float) -> list[BlockEntry]:
    from sipwarden.store.sqlite import SqliteBlocklistStore  # noqa: PLC0415 - keep --version cheap

    path = _db_path(db)
    if not path.exists():
        return []
    with SqliteBlocklistStore(path) as store:
        return store.list(now)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@app.command("add")
def add(
    network: Annotated[str, typer.Argument(metavar="NET", help="IP address or CIDR network.")],
    ttl: Annotated[
        float | None,
        typer.Option("--ttl", help="Seconds until the ban is lifted [default: until removed]."),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (shown in list).")] = "operator",
    db: DbOption = None,
) -> None:
    """Block NET (an operator ban: exactly --ttl, no escalation)."""
    from sipwarden.store.sqlite import SqliteBlocklistStore  # noqa: PLC0415

    now = time.time()
    with SqliteBlocklistStore(_db_path(db)) as store:
        store.expire(now)
        entry = store.add(network, now, ttl_s=ttl, reason=reason, origin="cli")
    typer.echo(f"blocked {entry.network} until {_when(entry.expires)}")


@app.command("remove")
def remove(
    network: Annotated[str, typer.Argument(metavar="NET", help="Exactly as listed.")],
    db: DbOption = None,
) -> None:
    """Unblock NET (exactly that network, whoever added it: gateways on the file lift it within a
    second) and forget its ban history. Exit 1 if not listed."""
    from sipwarden.store.base import normalize_network  # noqa: PLC0415
    from sipwarden.store.sqlite import SqliteBlocklistStore  # noqa: PLC0415

    canonical = normalize_network(network)
    path = _db_path(db)
    removed = False
    if path.exists():
        with SqliteBlocklistStore(path) as store:
            removed = store.remove(canonical)
    if not removed:
        typer.echo(f"{canonical} is not on the blocklist", err=True)
        raise typer.Exit(EXIT_NOT_FOUND)
    typer.echo(f"unblocked {canonical}")


@app.command("list")
def list_entries(
    output_format: Annotated[
        ListFormat, typer.Option("--format", help="table for people, json for scripts.")
    ] = ListFormat.TABLE,
    db: DbOption = None,
) -> None:
    """Every live ban: network, origin, expiry, ban count, reason."""
    entries = _live_entries(db, time.time())
    if output_format is ListFormat.JSON:
        typer.echo(json.dumps([entry.to_json() for entry in entries], indent=2))
        return
    if not entries:
        typer.echo("the blocklist is empty")
        return
    rows = [
        (e.network, e.origin, _when(e.expires), str(e.ban_count), e.reason.replace("\n", " "))
        for e in entries
    ]
    header = ("NETWORK", "ORIGIN", "EXPIRES (UTC)", "BANS", "REASON")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        typer.echo("  ".join([*cells, row[4]]))


@app.command("export")
def export(
    output_format: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="plain: one network a line; ipset: for `ipset -exist restore`; "
            "nftables: for `nft -f`.",
        ),
    ],
    name: Annotated[
        str, typer.Option("--name", help="Set name (-v4/-v6 or _v4/_v6 is appended).")
    ] = "sipwarden",
    table: Annotated[
        str, typer.Option("--table", help="nftables: FAMILY NAME of the table.")
    ] = "inet filter",
    db: DbOption = None,
) -> None:
    """Print the live blocklist for the host firewall (replaces the set's content)."""
    from sipwarden.output.blocklist import to_ipset, to_nftables, to_plain  # noqa: PLC0415

    now = time.time()
    entries = _live_entries(db, now)
    if output_format is ExportFormat.PLAIN:
        text = to_plain(entries, now)
    elif output_format is ExportFormat.IPSET:
        text = to_ipset(entries, now, name)
    else:
        text = to_nftables(entries, now, name, table)
    typer.echo(text, nl=False)
