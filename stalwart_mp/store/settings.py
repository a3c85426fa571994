"""Settings of the stores: ``[store."NAME"]`` tables and the ``[storage]`` roles.

A store is declared once under a name of the administrator's choosing and then referred to
by role (``storage.data = "NAME"``), so moving the data from LMDB to PostgreSQL is a change
of one table, not of every component (ARCHITECTURE.md, "The four stores").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stalwart_mp.config.schema import (
    REQUIRED,
    SCHEMA,
    Choice,
    ConfigError,
    Duration,
    Int,
    Setting,
    Size,
    Str,
)
from stalwart_mp.store.types import (
    PATH_TYPES,
    POOL_TYPES,
    ROLES,
    STORE_TYPES,
    TIMEOUT_TYPES,
    serving,
)
from stalwart_mp.store.types import SQL as NETWORK

SCHEMA.add(
    Setting(
        "store.*.type",
        Choice(*STORE_TYPES),
        REQUIRED,
        help=(
            'Backend of this store. Data (and blobs, lookup keys): "lmdb" (embedded default: '
            'one directory, shared safely by every worker process), "sqlite" (one file), '
            '"postgresql" or "mysql" (MySQL or MariaDB; needed when several servers share the '
            'data), "memory" (one process, nothing kept on disk: tests and tools only). '
            'Blobs only: "fs" (a folder), "s3" (any S3-compatible service). Full-text: '
            '"whoosh" (embedded), or sqlite, postgresql, mysql. Lookup: "redis", "memcached".'
        ),
    ),
    Setting(
        "store.*.path",
        Str(nonempty=True),
        REQUIRED,
        help=(
            "Where the store lives on disk: a directory for lmdb, fs and whoosh (created if "
            "missing), a database file for sqlite. Put it on a local file system, not NFS: "
            "they rely on file locks and fsync for safety across processes."
        ),
        when=("type", PATH_TYPES),
    ),
    Setting(
        "store.*.map-size",
        Size(),
        1 << 30,
        help=(
            "Initial size of the LMDB memory map (the most the database can hold before it "
            "grows). When a write finds the map full the map is doubled and the write "
            'retried, so this is a starting point, not a limit. Example: "4GB".'
        ),
        when=("type", ("lmdb",)),
    ),
    Setting(
        "store.*.max-readers",
        Int(min=1, max=1 << 20),
        512,
        help=(
            "Most LMDB read transactions open at once, over all processes together. Raise it "
            "when running many workers."
        ),
        when=("type", ("lmdb",)),
    ),
    Setting(
        "store.*.host",
        Str(nonempty=True),
        "127.0.0.1",
        help="Host name or IP address of the database server (or a unix socket directory "
        "for postgresql).",
        when=("type", NETWORK),
    ),
    Setting(
        "store.*.port",
        Int(min=0, max=65535),
        0,
        help="TCP port of the database server; 0 = the standard port (5432 for postgresql, "
        "3306 for mysql).",
        when=("type", NETWORK),
    ),
    Setting(
        "store.*.database",
        Str(nonempty=True),
        "stalwart",
        help="Name of the database; it must exist (the table is created on first start).",
        when=("type", NETWORK),
    ),
    Setting(
        "store.*.user",
        Str(nonempty=True),
        "stalwart",
        help="User to connect as; it needs to create the table on first start, then only "
        "SELECT, INSERT, UPDATE and DELETE on it.",
        when=("type", NETWORK),
    ),
    Setting(
        "store.*.password",
        Str(),
        "",
        help="Password of the user (empty: none, e.g. with peer or trust authentication).",
        when=("type", NETWORK),
        secret=True,
    ),
    Setting(
        "store.*.pool-size",
        Int(min=1, max=1000),
        10,
        help=(
            "Connections each process keeps to the database at most (and threads running "
            "queries for it). The server total is this times the number of processes; keep it "
            "under the server's connection limit."
        ),
        when=("type", POOL_TYPES),
    ),
    Setting(
        "store.*.timeout",
        Duration(),
        15,
        help='How long to wait when connecting to (or for an answer from) the server, e.g. '
        '"10s".',
        when=("type", TIMEOUT_TYPES),
    ),
    Setting(
        "store.*.options",
        Str(),
        "",
        help=(
            'Extra connection options. postgresql: libpq "options", e.g. '
            '"-c statement_timeout=30000"; mysql: an SQL statement run on each new connection, '
            'e.g. "SET SESSION innodb_lock_wait_timeout = 20".'
        ),
        when=("type", NETWORK),
    ),
    Setting(
        "store.*.table",
        Str(pattern=r"[A-Za-z_][A-Za-z0-9_]{0,62}", label="a table name (letters, digits, _)"),
        "kv",
        help="Table holding the keys and values; several stores may share a database by "
        "using different tables.",
        when=("type", NETWORK),
    ),
    Setting(
        "storage.data",
        Str(nonempty=True),
        "default",
        help=(
            "Name of the [store.NAME] holding all data but blobs: accounts, mailboxes, "
            "message metadata, the queue, settings."
        ),
    ),
    Setting(
        "storage.blob",
        Str(nonempty=True),
        lambda cfg: cfg.get("storage.data"),
        help="Name of the store holding raw messages, Sieve scripts and uploads "
        "(default: the data store, in chunks).",
    ),
    Setting(
        "storage.fts",
        Str(nonempty=True),
        lambda cfg: cfg.get("storage.data"),
        help="Name of the store holding the full-text search index (whoosh, sqlite, "
        "postgresql or mysql; default: the data store).",
    ),
    Setting(
        "storage.lookup",
        Str(nonempty=True),
        lambda cfg: cfg.get("storage.data"),
        help="Name of the store holding expiring keys and counters: rate limits, greylist, "
        "bans, locks (default: the data store, shared by every worker; redis or memcached "
        "for several servers).",
    ),
)


@SCHEMA.check
def _roles_point_at_fitting_stores(cfg: Any) -> Iterator[ConfigError]:
    names = list(cfg.names("store"))
    defined = ", ".join(sorted(names)) if names else "none"
    for role in ROLES:
        name = cfg.get(("storage", role))
        if name not in names:
            yield ConfigError(f"storage.{role}",
                              f'no [store."{name}"] is defined; defined stores: {defined}',
                              name, True)
            continue
        kind = cfg.get(("store", name, "type"))
        if role not in STORE_TYPES[kind]:
            yield ConfigError(
                f"storage.{role}",
                f'store "{name}" is a {kind} store, which cannot serve as the {role} store; '
                "types that can: " + ", ".join(serving(role)),
                name, True,
            )
