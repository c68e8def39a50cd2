"""State backends behind Protocols: the blocklist store (memory and SQLite)."""

from __future__ import annotations

from sipwarden.store.base import (
    AddRequest,
    BanHistory,
    BlockEntry,
    BlocklistSettings,
    BlocklistStore,
    Origin,
    StoreFull,
    StoreUnavailable,
    normalize_network,
)
from sipwarden.store.memory import MemoryBlocklistStore
from sipwarden.store.sqlite import SqliteBlocklistStore

__all__ = [
    "AddRequest",
    "BanHistory",
    "BlockEntry",
    "BlocklistSettings",
    "BlocklistStore",
    "MemoryBlocklistStore",
    "Origin",
    "SqliteBlocklistStore",
    "StoreFull",
    "StoreUnavailable",
    "normalize_network",
]
