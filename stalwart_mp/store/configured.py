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
    from stalwart_mp.store.registry import open_data_store as open_backend

    name = cfg.get("storage.data")
    return await _maybe_await(open_backend(name, store_settings(cfg, name)))


async def _maybe_await(value):
    if hasattr(value, "__await__"):
        return await value
    return value
