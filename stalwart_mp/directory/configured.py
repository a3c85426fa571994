"""Open the directory a configuration names (``storage.directory``), in the process that
uses it (after fork), wrapped in the per-worker cache."""
from __future__ import annotations

from stalwart_mp.directory.base import Directory
from stalwart_mp.directory.cache import CachedDirectory
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.store.configured import store_settings
from stalwart_mp.store.data import DataStore


def _directory_table(cfg, name: str) -> dict:
    return cfg.table(("directory", name))


async def open_directory(cfg, data_store: DataStore) -> CachedDirectory:
    """``data_store`` is the already-open data store (reused by the internal directory)."""
    name = cfg.get("storage.directory")
    table = _directory_table(cfg, name)
    kind = table.get("type", "internal")
    inner: Directory
    if kind == "internal":
        store_name = table.get("store", cfg.get("storage.data"))
        if store_name != cfg.get("storage.data"):
            from stalwart_mp.store.configured import open_named_data_store

            data_store = await open_named_data_store(cfg, store_name)
        inner = InternalDirectory(data_store, name)
    elif kind == "sql":
        from stalwart_mp.directory.sql import SqlDirectory

        inner = SqlDirectory.from_settings(name, table, store_settings(cfg, table["store"]))
    else:
        from stalwart_mp.directory.ldap import LdapDirectory

        inner = LdapDirectory.from_settings(name, table)
    return CachedDirectory(inner, ttl=table.get("cache-ttl", 30.0))
