"""Persistent single-machine blocklist: one SQLite file, shared by the gateway and the CLI.

Every :class:`SqliteBlocklistStore` owns its own connection, so the gateway reads while the CLI
writes: the database runs in WAL mode (readers never wait for the writer), every write is one
``BEGIN IMMEDIATE`` transaction, and a locked database is waited on for ``busy_timeout_s``.
Statements are constants with ``?`` parameters; no SQL is built from data.

The file is recognised as ours by the ``sipwarden_meta`` table (application and schema
version). A file that is not SQLite, that holds other tables, or whose schema is newer than this
code raises :class:`StoreUnavailable` rather than being written to.

Bounds and eviction are those of the memory store (see ``store/memory.py``).
"""

from __future__ import annotations

import builtins
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from sipwarden.store.base import (
    AddRequest,
    BanHistory,
    BlockEntry,
    BlocklistSettings,
    Origin,
    StoreFull,
    StoreUnavailable,
    check_request,
    lookup_key,
    lookup_keys,
    normalize_address,
    normalize_network,
    plan_add,
    sort_key,
)

__all__ = ["SCHEMA_VERSION", "SqliteBlocklistStore"]

APPLICATION: Final = "sipwarden"
SCHEMA_VERSION: Final = 1

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS sipwarden_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS blocklist ("
    " network TEXT PRIMARY KEY, lookup_key TEXT NOT NULL UNIQUE, prefixlen INTEGER NOT NULL,"
    " reason TEXT NOT NULL,"
    " origin TEXT NOT NULL, created REAL NOT NULL, expires REAL, ban_count INTEGER NOT NULL,"
    " ref TEXT)",
    "CREATE INDEX IF NOT EXISTS blocklist_expires ON blocklist (expires)",
    "CREATE TABLE IF NOT EXISTS ban_history ("
    " network TEXT PRIMARY KEY, ban_count INTEGER NOT NULL, ended REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ban_history_ended ON ban_history (ended)",
)
_SELECT_ONE: Final = (
    "SELECT network, reason, origin, created, expires, ban_count, ref"
    " FROM blocklist WHERE network = ?"
)
_SELECT_LIVE: Final = (
    "SELECT network, reason, origin, created, expires, ban_count, ref"
    " FROM blocklist WHERE expires IS NULL OR expires > ?"
)
# Longest prefix: the candidate networks (every prefix of the address) come as one JSON array.
_SELECT_LONGEST: Final = (
    "SELECT network, reason, origin, created, expires, ban_count, ref FROM blocklist"
    " WHERE lookup_key IN (SELECT value FROM json_each(?)) AND (expires IS NULL OR expires > ?)"
    " ORDER BY prefixlen DESC LIMIT 1"
)
_UPSERT: Final = (
    "INSERT OR REPLACE INTO blocklist"
    " (network, lookup_key, prefixlen, reason, origin, created, expires, ban_count, ref)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_EVICTABLE: Final = (
    "SELECT network, expires, ban_count FROM blocklist"
    " WHERE expires IS NOT NULL AND origin IN ('finding', 'exchange')"
    " ORDER BY expires, network LIMIT 1"
)


def _entry(row: tuple[object, ...]) -> BlockEntry:
    network, reason, origin, created, expires, ban_count, ref = row
    return BlockEntry.stored(
        network=str(network),
        reason=str(reason),
        origin=str(origin),
        created=float(created),  # type: ignore[arg-type]
        expires=None if expires is None else float(expires),  # type: ignore[arg-type]
        ban_count=int(ban_count),  # type: ignore[call-overload]
        ref=None if ref is None else str(ref),
    )


class SqliteBlocklistStore:
    """A :class:`~sipwarden.store.base.BlocklistStore` in an SQLite file (or ``":memory:"``)."""

    def __init__(
        self,
        path: str | Path,
        settings: BlocklistSettings | None = None,
        *,
        busy_timeout_s: float = 5.0,
    ) -> None:
        self.settings = settings or BlocklistSettings()
        self.path = str(path)
        self._evictions = 0
        self.history_evictions = 0
        self.refusals = 0
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=True
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.path, f"cannot open: {exc}") from None
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def set_busy_timeout(self, seconds: float) -> None:
        """How long a write waits for another connection's lock before StoreUnavailable (e.g.
        short for the gateway, whose event loop must not wait behind a CLI transaction)."""
        with self._errors("cannot set up"):
            # A PRAGMA takes no parameters; the value is an int computed here, not text.
            self._db.execute(f"PRAGMA busy_timeout = {int(max(0.0, seconds) * 1000)}")

    def close(self) -> None:
        """Close the connection (the store is unusable afterwards)."""
        self._db.close()

    def __enter__(self) -> SqliteBlocklistStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreUnavailable(self.path, f"{doing}: {exc}") from None

    @contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._errors(doing):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT (busy): an open transaction would make every later
                # BEGIN fail with "cannot start a transaction within a transaction".
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _open(self) -> None:
        with self._errors("cannot read"):
            tables = {
                str(name)
                for (name,) in self._db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
        if tables and "sipwarden_meta" not in tables:
            raise StoreUnavailable(self.path, "not a sipwarden database (unknown tables)")
        with self._errors("cannot set up"):
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()
            if self.path != ":memory:" and mode is not None and str(mode[0]).lower() != "wal":
                raise StoreUnavailable(self.path, f"cannot use WAL journal mode ({mode[0]})")
            self._db.execute("PRAGMA synchronous = NORMAL")  # durable enough under WAL
        with self._write("cannot create the schema") as db:
            for statement in _SCHEMA:
                db.execute(statement)
            meta = dict(db.execute("SELECT key, value FROM sipwarden_meta").fetchall())
            if not meta:
                db.executemany(
                    "INSERT INTO sipwarden_meta (key, value) VALUES (?, ?)",
                    [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION))],
                )
            elif meta.get("application") != APPLICATION:
                raise StoreUnavailable(self.path, "not a sipwarden database")
            elif int(meta.get("schema_version", "0")) > SCHEMA_VERSION:
                raise StoreUnavailable(
                    self.path,
                    f"schema version {meta['schema_version']} is newer than this sipwarden "
                    f"({SCHEMA_VERSION}); upgrade sipwarden",
                )

    # -- reads -------------------------------------------------------------------------------

    def get(self, ip: str, now: float) -> BlockEntry | None:
        address = normalize_address(ip)
        if address is None:
            return None
        candidates = json.dumps(lookup_keys(address))
        with self._errors("cannot read"):
            row = self._db.execute(_SELECT_LONGEST, (candidates, now)).fetchone()
        return None if row is None else _entry(row)

    def list(self, now: float) -> builtins.list[BlockEntry]:
        return sorted(self.live(now), key=sort_key)

    def live(self, now: float) -> builtins.list[BlockEntry]:
        """:meth:`list` in no particular order: for a replica reloading the whole store, which
        needs no order and should not pay for parsing every network to sort it."""
        with self._errors("cannot read"):
            rows = self._db.execute(_SELECT_LIVE, (now,)).fetchall()
        return [_entry(row) for row in rows]

    def state_size(self) -> int:
        with self._errors("cannot read"):
            (entries,) = self._db.execute("SELECT count(*) FROM blocklist").fetchone()
            (history,) = self._db.execute("SELECT count(*) FROM ban_history").fetchone()
        return int(entries) + int(history)

    def evictions(self) -> int:
        return self._evictions

    def data_version(self) -> int:
        """A number that changes whenever *another* connection commits to the file (SQLite's
        ``PRAGMA data_version``; this connection's own writes do not change it). A reader that
        keeps a :class:`~sipwarden.store.memory.MemoryBlocklistStore` copy polls it (~1 µs)
        and reloads with ``list(now)`` + ``put`` when it moves."""
        with self._errors("cannot read"):
            (version,) = self._db.execute("PRAGMA data_version").fetchone()
        return int(version)

    def history(self, network: str) -> BanHistory | None:
        """The remembered end of ``network``'s last ban."""
        with self._errors("cannot read"):
            row = self._db.execute(
                "SELECT ban_count, ended FROM ban_history WHERE network = ?",
                (normalize_network(network),),
            ).fetchone()
        return None if row is None else BanHistory(int(row[0]), float(row[1]))

    # -- writes ------------------------------------------------------------------------------

    def add(
        self,
        network: str,
        now: float,
        *,
        ttl_s: float | None,
        reason: str,
        origin: Origin,
        ref: str | None = None,
    ) -> BlockEntry:
        canonical = normalize_network(network)
        with self._write("cannot write") as db:
            return self._add(db, AddRequest(canonical, now, ttl_s, reason, origin, ref))

    def add_many(self, requests: Iterable[AddRequest]) -> builtins.list[BlockEntry | None]:
        checked = [check_request(request) for request in requests]
        stored: builtins.list[BlockEntry | None] = []
        if not checked:
            return stored
        with self._write("cannot write") as db:
            for request in checked:
                try:
                    stored.append(self._add(db, request))
                except StoreFull:  # counted in refusals; the rest of the batch still lands
                    stored.append(None)
        return stored

    def remove(self, network: str) -> bool:
        canonical = normalize_network(network)
        with self._write("cannot write") as db:
            db.execute("DELETE FROM ban_history WHERE network = ?", (canonical,))
            cursor = db.execute("DELETE FROM blocklist WHERE network = ?", (canonical,))
            return cursor.rowcount > 0

    def expire(self, now: float) -> int:
        with self._write("cannot write") as db:
            removed = self._expire(db, now)
        return removed

    # -- internals ---------------------------------------------------------------------------

    def _add(self, db: sqlite3.Connection, request: AddRequest) -> BlockEntry:
        """One add inside the caller's transaction; ``request.network`` is canonical."""
        canonical = request.network
        row = db.execute(_SELECT_ONE, (canonical,)).fetchone()
        existing = None if row is None else _entry(row)
        past = db.execute(
            "SELECT ban_count, ended FROM ban_history WHERE network = ?", (canonical,)
        ).fetchone()
        history = None if past is None else BanHistory(int(past[0]), float(past[1]))
        entry = plan_add(
            existing,
            history,
            network=canonical,
            now=request.now,
            ttl_s=request.ttl_s,
            reason=request.reason,
            origin=request.origin,
            ref=request.ref,
            settings=self.settings,
        )
        if existing is None:
            self._make_room(db, canonical, request.now)
        db.execute("DELETE FROM ban_history WHERE network = ?", (canonical,))
        key = lookup_key(entry.network)
        db.execute(
            _UPSERT,
            (
                entry.network,
                key,
                int(key.split("/")[1]),
                entry.reason,
                entry.origin,
                entry.created,
                entry.expires,
                entry.ban_count,
                entry.ref,
            ),
        )
        return entry

    def _expire(self, db: sqlite3.Connection, now: float) -> int:
        ended = db.execute(
            "SELECT network, ban_count, expires FROM blocklist"
            " WHERE expires IS NOT NULL AND expires <= ?",
            (now,),
        ).fetchall()
        for network, ban_count, expires in ended:
            self._remember(db, str(network), int(ban_count), float(expires))
        db.execute("DELETE FROM blocklist WHERE expires IS NOT NULL AND expires <= ?", (now,))
        db.execute(
            "DELETE FROM ban_history WHERE ended < ?", (now - self.settings.escalation_memory_s,)
        )
        return len(ended)

    def _make_room(self, db: sqlite3.Connection, network: str, now: float) -> None:
        (count,) = db.execute("SELECT count(*) FROM blocklist").fetchone()
        if count < self.settings.max_entries:
            return
        self._expire(db, now)
        (count,) = db.execute("SELECT count(*) FROM blocklist").fetchone()
        if count < self.settings.max_entries:
            return
        victim = db.execute(_EVICTABLE).fetchone()
        if victim is None:
            self.refusals += 1
            raise StoreFull(network, self.settings.max_entries)
        db.execute("DELETE FROM blocklist WHERE network = ?", (victim[0],))
        self._remember(db, str(victim[0]), int(victim[2]), now)  # the ban ended now
        self._evictions += 1

    def _remember(self, db: sqlite3.Connection, network: str, ban_count: int, ended: float) -> None:
        if self.settings.max_history == 0:
            return
        db.execute(
            "INSERT OR REPLACE INTO ban_history (network, ban_count, ended) VALUES (?, ?, ?)",
            (network, ban_count, ended),
        )
        (count,) = db.execute("SELECT count(*) FROM ban_history").fetchone()
        if count > self.settings.max_history:
            db.execute(
                "DELETE FROM ban_history WHERE network IN"
                " (SELECT network FROM ban_history ORDER BY ended LIMIT ?)",
                (count - self.settings.max_history,),
            )
            self.history_evictions += count - self.settings.max_history
