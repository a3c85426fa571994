"""Open a data store by name from its ``[store."NAME"]`` settings.

Backends are imported lazily, in the process that opens the store: the master process must
never import a database driver (ARCHITECTURE.md, "Processes": fork safety), and a server
using LMDB needs neither psycopg2 nor PyMySQL installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stalwart_mp.config.schema import SCHEMA, Invalid
from stalwart_mp.store import settings as _declares_store_settings  # noqa: F401 - fills SCHEMA
from stalwart_mp.store.data import DataStore, StoreError
from stalwart_mp.store.types import store_kind

_STANDARD_PORTS = {"postgresql": 5432, "mysql": 3306}


def parse_store_options(name: str, kind: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """The store's settings for its type, parsed and with defaults, by kebab-case key."""
    out: dict[str, Any] = {}
    for path, setting in SCHEMA.settings.items():
        if len(path) != 3 or path[:2] != ("store", "*") or path[2] == "type":
            continue
        if setting.when is not None and kind not in setting.when[1]:
            continue
        key = path[2]
        if key not in raw:
            if setting.required:
                raise StoreError(f'store "{name}": "{key}" is required for a {kind} store')
            value = setting.default
        else:
            value = raw[key]
        try:
            out[key] = setting.type.parse(value)
        except Invalid as exc:
            raise StoreError(f'store "{name}": {key} = {value!r}: {exc}') from None
    return out


def _network(name: str, kind: str, o: dict[str, Any]) -> dict[str, Any]:
    return {
        "host": o["host"],
        "port": o["port"] or _STANDARD_PORTS[kind],
        "database": o["database"],
        "user": o["user"],
        "password": o["password"],
        "pool_size": o["pool-size"],
        "timeout": o["timeout"],
        "options": o["options"],
        "table": o["table"],
    }


def open_data_store(name: str, settings: Mapping[str, Any]) -> DataStore:
    """Open the data store ``name``; raises StoreError naming the store and the problem.

    Call it in the process that will use the store (a worker, after fork). Network stores
    connect here, so a wrong address or password is reported at start-up.
    """
    kind = store_kind(name, settings, "data")
    o = parse_store_options(name, kind, settings)
    try:
        if kind == "lmdb":
            from stalwart_mp.store.backends.lmdb_store import LmdbStore

            return LmdbStore(name, o["path"], map_size=o["map-size"], max_readers=o["max-readers"])
        if kind == "sqlite":
            from stalwart_mp.store.backends.sqlite_store import SqliteStore

            return SqliteStore(name, o["path"])
        if kind == "postgresql":
            from stalwart_mp.store.backends.postgres_store import PostgresStore

            return PostgresStore(name, **_network(name, kind, o))
        if kind == "mysql":
            from stalwart_mp.store.backends.mysql_store import MysqlStore

            return MysqlStore(name, **_network(name, kind, o))
        from stalwart_mp.store.backends.memory import MemoryStore

        return MemoryStore(name)
    except ImportError as exc:
        raise StoreError(
            f'store "{name}": the {kind} backend needs the Python package "{exc.name}"; '
            "install stalwart-mp[backends]"
        ) from exc
