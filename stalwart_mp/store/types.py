"""Store types and the roles each can serve (as Stalwart: one store, several roles).

``[store."NAME"] type = ...`` picks a backend; ``[storage] data|blob|fts|lookup = "NAME"``
assigns roles. Backends that are data stores can also hold blobs (chunked values) and
lookup keys (TTL kept and purged), so a single PostgreSQL or LMDB store can run everything
but full-text search, which needs a real index (whoosh, SQLite FTS5, PostgreSQL, MySQL).
"""
from __future__ import annotations

ROLES = ("data", "blob", "fts", "lookup")

STORE_TYPES: dict[str, frozenset[str]] = {
    "lmdb": frozenset({"data", "blob", "lookup"}),
    "sqlite": frozenset({"data", "blob", "fts", "lookup"}),
    "postgresql": frozenset({"data", "blob", "fts", "lookup"}),
    "mysql": frozenset({"data", "blob", "fts", "lookup"}),
    "memory": frozenset({"data", "blob", "lookup"}),  # one process only: tests and tools
    "fs": frozenset({"blob"}),
    "s3": frozenset({"blob"}),
    "whoosh": frozenset({"fts"}),
    "redis": frozenset({"lookup"}),
    "memcached": frozenset({"lookup"}),
}

DATA_TYPES = tuple(t for t, roles in STORE_TYPES.items() if "data" in roles)
EMBEDDED = ("lmdb", "sqlite")
SQL = ("postgresql", "mysql")
# Settings shared by several types (each type's own keys are declared with its backend).
PATH_TYPES = ("lmdb", "sqlite", "fs", "whoosh")
TIMEOUT_TYPES = ("postgresql", "mysql", "s3", "redis", "memcached")
POOL_TYPES = ("postgresql", "mysql", "redis", "memcached")


def serving(role: str) -> list[str]:
    return [t for t, roles in STORE_TYPES.items() if role in roles]


_HOLDS = {"data": "data", "blob": "blobs", "fts": "the full-text index", "lookup": "lookup keys"}


def store_kind(name: str, settings, role: str) -> str:
    """The ``type`` of store ``name``, checked for ``role``; StoreError naming the store."""
    from stalwart_mp.store.data import StoreError

    kind = settings.get("type")
    if kind is None:
        raise StoreError(f'store "{name}": "type" is required (one of {", ".join(serving(role))})')
    if kind not in STORE_TYPES:
        raise StoreError(f'store "{name}": type = {kind!r}: expected one of '
                         + ", ".join(f'"{t}"' for t in STORE_TYPES))
    if role not in STORE_TYPES[kind]:
        raise StoreError(f'store "{name}": a {kind} store cannot hold {_HOLDS[role]}; '
                         f'{role} stores: ' + ", ".join(serving(role)))
    return kind
