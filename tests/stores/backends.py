"""Settings for opening each data-store backend in tests, and cleanup of network tables.

PostgreSQL and MySQL/MariaDB are found through STALWART_TEST_PG_* / STALWART_TEST_MYSQL_*
(HOST, PORT, USER, PASSWORD, DATABASE), defaulting to the local test services. Each test
gets its own table, so tests can run in parallel (pytest-xdist).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from tests.services import require_service

ALL = ("memory", "lmdb", "sqlite", "postgresql", "mysql")
MULTI_PROCESS = ("lmdb", "sqlite", "postgresql", "mysql")
EMBEDDED = ("lmdb", "sqlite")


def _env(prefix: str, key: str, default: str) -> str:
    return os.environ.get(f"STALWART_TEST_{prefix}_{key}", default)


def pg_params() -> dict[str, Any]:
    return {
        "host": _env("PG", "HOST", "127.0.0.1"),
        "port": int(_env("PG", "PORT", "5432")),
        "user": _env("PG", "USER", "postgres"),
        "password": _env("PG", "PASSWORD", ""),
        "database": _env("PG", "DATABASE", "test"),
    }


def mysql_params() -> dict[str, Any]:
    return {
        "host": _env("MYSQL", "HOST", "127.0.0.1"),
        "port": int(_env("MYSQL", "PORT", "3306")),
        "user": _env("MYSQL", "USER", "root"),
        "password": _env("MYSQL", "PASSWORD", ""),
        "database": _env("MYSQL", "DATABASE", "test"),
    }


def _pg_connect() -> Any:
    import psycopg2

    p = pg_params()
    return psycopg2.connect(
        host=p["host"],
        port=p["port"],
        user=p["user"],
        password=p["password"],
        dbname=p["database"],
        connect_timeout=3,
    )


def _mysql_connect() -> Any:
    import pymysql

    return pymysql.connect(**mysql_params(), connect_timeout=3, autocommit=True)


def check_postgresql() -> None:
    _pg_connect().close()


def check_mysql() -> None:
    _mysql_connect().close()


def settings_for(kind: str, tmp: Path) -> dict[str, Any]:
    """Settings (as under [store."NAME"]) for a fresh store of ``kind``; skips if unreachable."""
    if kind == "memory":
        return {"type": "memory"}
    if kind == "lmdb":
        # A small map makes the large-value tests exercise growth (MapFullError -> x2).
        return {"type": "lmdb", "path": str(tmp / "lmdb"), "map-size": 1 << 20}
    if kind == "sqlite":
        return {"type": "sqlite", "path": str(tmp / "sqlite" / "data.db")}
    table = f"t_{uuid.uuid4().hex[:16]}"
    if kind == "postgresql":
        require_service("postgresql", check_postgresql)
        return {"type": "postgresql", **pg_params(), "pool-size": 8, "timeout": 5, "table": table}
    if kind == "mysql":
        require_service("mysql", check_mysql)
        return {"type": "mysql", **mysql_params(), "pool-size": 8, "timeout": 5, "table": table}
    raise ValueError(kind)


def drop_table(settings: dict[str, Any]) -> None:
    kind = settings["type"]
    if kind == "postgresql":
        conn = _pg_connect()
        conn.autocommit = True
        with conn, conn.cursor() as cur:
            cur.execute(f'DROP TABLE IF EXISTS "{settings["table"]}"')
        conn.close()
    elif kind == "mysql":
        conn = _mysql_connect()
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{settings['table']}`")
        conn.close()


def wait_for_writers(settings: dict[str, Any]) -> None:
    """Block until no transaction holds write locks on the store's table.

    After a client is killed, a database server finishes (rolls back, or commits if COMMIT
    had arrived) its transaction only when it notices the closed connection; waiting for its
    locks lets a test look at the settled state too, not only the state just after the kill.
    Embedded stores have no server: a dead writer's transaction is gone with its process.
    """
    kind = settings["type"]
    if kind == "postgresql":
        from stalwart_mp.store.backends.postgres_store import lock_id

        conn = _pg_connect()
        with conn, conn.cursor() as cur:  # one transaction, committed on exit
            cur.execute("SET LOCAL lock_timeout = '30s'")
            # Every batch of the store takes the table lock (shared or exclusive).
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (lock_id(settings["table"], b""),))
        conn.close()
    elif kind == "mysql":
        conn = _mysql_connect()
        with conn.cursor() as cur:
            cur.execute("SET SESSION innodb_lock_wait_timeout = 30")
            conn.begin()
            # A locking read of every row waits for the record and gap locks of any writer.
            cur.execute(f"SELECT COUNT(*) FROM `{settings['table']}` FOR UPDATE")
            conn.rollback()
        conn.close()
