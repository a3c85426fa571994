"""Open the stores a configuration names for each role (``[storage]`` → ``[store.NAME]``)."""
from __future__ import annotations

from stalwart_mp.store.data import DataStore

# Settings of a store that are file paths, resolved against the config file's folder.
_PATH_KEYS = ("path",)


def store_settings(cfg, name: str) -> dict:
    settings = cfg.table(("store", name))
    for key in _PATH_KEYS:
        if key in settings:
            settings[key] = str(cfg.path(("store", name, key)))
    return settings


async def open_data_store(cfg) -> DataStore:
    """The data store of ``storage.data``; call it in the process that will use it."""
    return await open_named_data_store(cfg, cfg.get("storage.data"))


async def open_named_data_store(cfg, name: str) -> DataStore:
    from stalwart_mp.store.registry import open_data_store as open_backend

    return await _maybe_await(open_backend(name, store_settings(cfg, name)))


async def _maybe_await(value):
    if hasattr(value, "__await__"):
        return await value
    return value


async def open_lookup_store(cfg, data_store: DataStore | None = None):
    """The lookup store of ``storage.lookup`` (reusing ``data_store`` when it is the same
    store, the embedded default)."""
    from stalwart_mp.store.lookup import open_lookup_store as open_backend

    name = cfg.get("storage.lookup")
    return await open_backend(name, store_settings(cfg, name), data_store)


def open_fts_store(cfg):
    """The full-text store of ``storage.fts``."""
    from stalwart_mp.store.fts import open_fts_store as open_backend

    name = cfg.get("storage.fts")
    return open_backend(name, store_settings(cfg, name))


def open_blob_store(cfg, data_store: DataStore):
    """The blob store of ``storage.blob``; links live in ``data_store``."""
    from stalwart_mp.store.blob import open_blob_store as open_backend

    name = cfg.get("storage.blob")
    return open_backend(name, store_settings(cfg, name), data_store)
