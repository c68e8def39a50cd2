"""What only the SQLite store promises: persistence, WAL readers beside a writer, refusing files
that are not ours."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from sipwarden.store import SqliteBlocklistStore, StoreUnavailable
from sipwarden.store.sqlite import SCHEMA_VERSION

T0 = 1_700_000_000.0


def test_entries_and_history_survive_reopening(tmp_path: Path) -> None:
    db = tmp_path / "bl.db"
    with SqliteBlocklistStore(db) as writer:
        writer.add("192.0.2.1", T0, ttl_s=300, reason="scan", origin="finding", ref="f-1")
        writer.add("2001:db8::/32", T0, ttl_s=None, reason="op", origin="cli")
        writer.add("198.51.100.7", T0, ttl_s=10, reason="old", origin="finding")
        writer.expire(T0 + 10)
    with SqliteBlocklistStore(db) as reader:
        assert [e.network for e in reader.list(T0 + 20)] == ["192.0.2.1", "2001:db8::/32"]
        entry = reader.get("192.0.2.1", T0 + 20)
        assert entry is not None and entry.ref == "f-1" and entry.expires == T0 + 300
        again = reader.add("198.51.100.7", T0 + 30, ttl_s=10, reason="again", origin="finding")
        assert again.ban_count == 1 and again.expires == T0 + 50  # history persisted too


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    db = tmp_path / "bl.db"
    SqliteBlocklistStore(db).close()
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        meta = dict(raw.execute("SELECT key, value FROM sipwarden_meta").fetchall())
    finally:
        raw.close()
    assert meta == {"application": "sipwarden", "schema_version": str(SCHEMA_VERSION)}


def test_a_reader_sees_a_writers_commits(tmp_path: Path) -> None:
    db = tmp_path / "bl.db"
    with SqliteBlocklistStore(db) as gateway, SqliteBlocklistStore(db) as cli:
        assert gateway.get("192.0.2.1", T0) is None
        cli.add("192.0.2.1", T0, ttl_s=None, reason="op", origin="cli")
        assert gateway.get("192.0.2.1", T0) is not None
        assert cli.remove("192.0.2.1")
        assert gateway.get("192.0.2.1", T0) is None


def test_concurrent_reader_and_writers(tmp_path: Path) -> None:
    """The gateway reads in a loop while two writers add and remove: no reader error, no lost
    write, every read sees a consistent entry."""
    db = tmp_path / "bl.db"
    SqliteBlocklistStore(db).close()
    errors: list[BaseException] = []
    done = threading.Event()
    reading = threading.Event()
    reads = 0

    def writer(third: int) -> None:
        try:
            reading.wait(timeout=30)  # overlap with the reader for sure
            with SqliteBlocklistStore(db) as store:
                for i in range(100):
                    store.add(f"10.{third}.0.{i}", T0, ttl_s=None, reason="w", origin="cli")
                    if i % 3 == 0:
                        store.remove(f"10.{third}.0.{i}")
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        nonlocal reads
        try:
            with SqliteBlocklistStore(db) as store:
                while not done.is_set() and reads < 100_000:
                    entry = store.get("10.1.0.50", T0)
                    assert entry is None or entry.network == "10.1.0.50"
                    store.list(T0)
                    reads += 1
                    reading.set()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in (1, 2)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    done.set()
    watcher.join(timeout=60)
    assert not errors, errors
    assert reads > 0
    with SqliteBlocklistStore(db) as store:
        assert len(store.list(T0)) == 2 * (100 - 34)


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "notes.txt"
    db.write_text("not a database, just some text that is long enough to have a header\n" * 20)
    with pytest.raises(StoreUnavailable, match="not a database"):
        SqliteBlocklistStore(db)


def test_someone_elses_database_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    raw = sqlite3.connect(db)
    raw.execute("CREATE TABLE users (name TEXT)")
    raw.commit()
    raw.close()
    with pytest.raises(StoreUnavailable, match="not a sipwarden database"):
        SqliteBlocklistStore(db)
    raw = sqlite3.connect(db)
    try:
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        raw.close()
    assert tables == {"users"}


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "bl.db"
    SqliteBlocklistStore(db).close()
    raw = sqlite3.connect(db)
    raw.execute("UPDATE sipwarden_meta SET value = '99' WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(StoreUnavailable, match="newer"):
        SqliteBlocklistStore(db)


def test_an_unwritable_place_is_store_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        SqliteBlocklistStore(tmp_path / "missing-dir" / "bl.db")


def test_hostile_text_is_stored_as_data(tmp_path: Path) -> None:
    with SqliteBlocklistStore(tmp_path / "bl.db") as store:
        reason = "x'); DROP TABLE blocklist; --"
        store.add("192.0.2.1", T0, ttl_s=None, reason=reason, origin="finding", ref="'\"")
        entry = store.get("192.0.2.1", T0)
        assert entry is not None and entry.reason == reason and entry.ref == "'\""


def test_a_memory_replica_follows_data_version(tmp_path: Path) -> None:
    """The gateway's pattern: hold a memory copy, reload it when another connection wrote."""
    from sipwarden.store import MemoryBlocklistStore

    db = tmp_path / "bl.db"
    with SqliteBlocklistStore(db) as gateway_db, SqliteBlocklistStore(db) as cli:
        seen = gateway_db.data_version()
        cli.add("192.0.2.0/24", T0, ttl_s=300, reason="op", origin="finding")
        cli.add("192.0.2.9", T0 + 10, ttl_s=300, reason="op", origin="finding")
        assert gateway_db.data_version() != seen
        replica = MemoryBlocklistStore()
        for entry in gateway_db.list(T0 + 20):
            replica.put(entry, T0 + 20)
        assert replica.list(T0 + 20) == gateway_db.list(T0 + 20)
        assert replica.get("192.0.2.9", T0 + 20) == gateway_db.get("192.0.2.9", T0 + 20)
        assert replica.get("192.0.2.9", T0 + 305) == gateway_db.get("192.0.2.9", T0 + 305)
        seen = gateway_db.data_version()
        assert gateway_db.data_version() == seen  # nothing new: no reload


def test_lookup_is_fast_enough_to_read_per_message(tmp_path: Path) -> None:
    with SqliteBlocklistStore(tmp_path / "bl.db") as store:
        for i in range(500):
            store.add(f"2001:db8:{i:x}::/48", T0, ttl_s=None, reason="r", origin="cli")
        import time

        start = time.perf_counter()
        for _ in range(200):
            assert store.get("2001:db8:1f3::1", T0) is not None
            assert store.get("2001:db9::1", T0) is None
        assert (time.perf_counter() - start) / 400 < 0.005  # generous: ~0.2 ms measured


def test_a_locked_database_fails_fast_and_the_connection_recovers(tmp_path: Path) -> None:
    """The gateway's short busy timeout: a write behind another connection's lock is
    StoreUnavailable (no transaction left open), reads go on (WAL), the batch lands later."""
    from sipwarden.store import AddRequest

    db = tmp_path / "bl.db"
    with SqliteBlocklistStore(db) as gateway:
        gateway.set_busy_timeout(0.01)
        gateway.add("192.0.2.9", T0, ttl_s=None, reason="op", origin="cli")
        holder = sqlite3.connect(db, isolation_level=None)
        batch = [AddRequest("192.0.2.1", T0, 300.0, "scan", "finding", "f-1")]
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable, match="locked"):
                gateway.add_many(batch)
            assert [e.network for e in gateway.list(T0)] == ["192.0.2.9"]
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        [entry] = gateway.add_many(batch)
        assert entry is not None and entry.ref == "f-1"
        assert [e.network for e in gateway.list(T0)] == ["192.0.2.1", "192.0.2.9"]
