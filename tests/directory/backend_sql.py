"""The test directory (``tests/directory/dataset.py``) in SQL tables, for every SQL database.

``make_sql_directory(kind)`` creates the tables in a place of their own — a fresh SQLite
file, a PostgreSQL schema or a MySQL database named for this call — loads the dataset and
returns an ``SqlDirectory`` on it; closing the directory drops that place again (and any
left open are dropped when the test process exits).

The schema is the example of Stalwart's SQL directory documentation, with list members
(addresses, which may be external) kept in ``group_members`` like group members:

    accounts(name, secret, description, type, quota, active)
    emails(name, address, type)      -- 'primary' (first address) or 'alias'
    group_members(name, member_of)   -- a group member's name, or a list member's address

Passwords are stored in several schemes, so that reading each from SQL is tested:
{SSHA} (alice), SHA-512 crypt "$6$" (bob, and dave's non-ASCII one), {PLAIN} (carol).
The directory uses the default queries but for ``query.name``, which returns disabled
accounts too (``columns.disabled``), so they behave as in the internal directory.
"""
from __future__ import annotations

import asyncio
import atexit
import base64
import contextlib
import hashlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from typing import Any

from stalwart_mp.directory.base import Directory
from stalwart_mp.directory.sql import SqlDirectory
from tests.directory.dataset import ENTRIES, Entry
from tests.services import require_service
from tests.stores.backends import check_mysql, check_postgresql, mysql_params, pg_params

KINDS = ("sqlite", "postgresql", "mysql")

NAME_QUERY = (
    "SELECT name, type, secret, description, quota, NOT active AS disabled "
    "FROM accounts WHERE name = ?"
)
QUERIES = {"name": NAME_QUERY}
COLUMNS = {"disabled": "disabled"}

_cleanups: dict[str, Callable[[], None]] = {}  # place -> drop it


# --- password hashes ---------------------------------------------------------------------


def ssha(password: str) -> str:
    """{SSHA}: base64(SHA1(password + salt) + salt), as OpenLDAP's slappasswd writes it."""
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def sha512_crypt(password: str) -> str:
    """"$6$salt$hash" (SHA-512 crypt), made by ``openssl passwd -6``."""
    salt = base64.b64encode(os.urandom(12), b"./").decode()[:16]
    out = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, password],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


HASHERS: dict[str, Callable[[str], str]] = {
    "alice": ssha,
    "bob": sha512_crypt,
    "carol": lambda password: "{PLAIN}" + password,
    "dave": sha512_crypt,
}


# --- schema and rows ---------------------------------------------------------------------


def schema(kind: str) -> list[str]:
    """CREATE TABLE statements; C collation on PostgreSQL so ORDER BY is bytewise there too
    (a locale collation ignores punctuation: "alice@" would sort before "a.smith@")."""
    text = {"sqlite": "TEXT", "postgresql": 'VARCHAR(255) COLLATE "C"',
            "mysql": "VARCHAR(255)"}[kind]
    return [
        (f"CREATE TABLE accounts (name {text} PRIMARY KEY, secret {text}, "
         f"description {text}, type {text} NOT NULL, quota BIGINT DEFAULT 0, "
         "active BOOLEAN DEFAULT TRUE)"),
        (f"CREATE TABLE group_members (name {text} NOT NULL, member_of {text} NOT NULL, "
         "PRIMARY KEY (name, member_of))"),
        (f"CREATE TABLE emails (name {text} NOT NULL, address {text} NOT NULL, type {text}, "
         "PRIMARY KEY (name, address))"),
    ]


def rows(entries: list[Entry]) -> dict[str, list[tuple[Any, ...]]]:
    accounts, emails, members = [], [], set()
    for e in entries:
        secret = HASHERS[e.name](e.password) if e.password else None
        accounts.append((e.name, secret, e.description, e.type, e.quota_bytes, not e.disabled))
        for i, address in enumerate(e.emails):
            emails.append((e.name, address, "primary" if i == 0 else "alias"))
        members.update((m, e.name) for m in e.members)  # group: names; list: addresses
        members.update((e.name, g) for g in e.member_of)
    return {
        "INSERT INTO accounts (name, secret, description, type, quota, active) "
        "VALUES (?, ?, ?, ?, ?, ?)": accounts,
        "INSERT INTO emails (name, address, type) VALUES (?, ?, ?)": emails,
        "INSERT INTO group_members (name, member_of) VALUES (?, ?)": sorted(members),
    }


def load(cur: Any, kind: str) -> None:
    for statement in schema(kind):
        cur.execute(statement)
    for sql, values in rows(ENTRIES).items():
        if kind != "sqlite":
            sql = sql.replace("?", "%s")
        cur.executemany(sql, values)


# --- one place per directory -------------------------------------------------------------


def _create_sqlite() -> tuple[dict[str, Any], Callable[[], None]]:
    folder = tempfile.mkdtemp(prefix="stalwart-sqldir-")
    path = os.path.join(folder, "directory.db")
    conn = sqlite3.connect(path)
    with conn:
        load(conn.cursor(), "sqlite")
    conn.close()
    return {"type": "sqlite", "path": path}, lambda: shutil.rmtree(folder, True)


def _pg_admin() -> Any:
    import psycopg2

    p = pg_params()
    conn = psycopg2.connect(host=p["host"], port=p["port"], user=p["user"],
                            password=p["password"], dbname=p["database"], connect_timeout=3)
    conn.autocommit = True
    return conn


def _create_postgresql() -> tuple[dict[str, Any], Callable[[], None]]:
    require_service("postgresql", check_postgresql)
    name = f"sqldir_{uuid.uuid4().hex[:12]}"
    conn = _pg_admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{name}"')
        cur.execute(f'SET search_path TO "{name}"')
        load(cur, "postgresql")
    conn.close()

    def drop() -> None:
        admin = _pg_admin()
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        admin.close()

    settings = {"type": "postgresql", **pg_params(), "pool-size": 4, "timeout": 5,
                "options": f"-c search_path={name}"}
    return settings, drop


def _mysql_admin(database: str | None = None) -> Any:
    import pymysql

    params = {**mysql_params(), "database": database}
    return pymysql.connect(**params, connect_timeout=3, autocommit=True, charset="utf8mb4")


def _create_mysql() -> tuple[dict[str, Any], Callable[[], None]]:
    require_service("mysql", check_mysql)
    name = f"sqldir_{uuid.uuid4().hex[:12]}"
    conn = _mysql_admin()
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        cur.execute(f"USE `{name}`")
        load(cur, "mysql")
    conn.close()

    def drop() -> None:
        admin = _mysql_admin()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()

    settings = {"type": "mysql", **mysql_params(), "database": name, "pool-size": 4,
                "timeout": 5}
    return settings, drop


_CREATORS = {"sqlite": _create_sqlite, "postgresql": _create_postgresql,
             "mysql": _create_mysql}


class _TestSqlDirectory(SqlDirectory):
    """An SqlDirectory that drops its test tables when closed."""

    def __init__(self, *args: Any, place: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._place = place

    async def close(self) -> None:
        await super().close()
        drop = _cleanups.pop(self._place, None)
        if drop is not None:
            await asyncio.to_thread(drop)


async def create_tables(kind: str) -> dict[str, Any]:
    """Create and load the tables; returns the store settings (as under [store."X"]).
    The tables are dropped by ``drop_tables(settings)`` or at exit."""
    if kind not in _CREATORS:
        raise ValueError(f"unknown SQL directory kind {kind!r}; expected one of {KINDS}")
    settings, drop = await asyncio.to_thread(_CREATORS[kind])
    place = settings.get("path") or settings.get("options") or settings["database"]
    settings["_place"] = place
    _cleanups[place] = drop
    return settings


async def drop_tables(settings: dict[str, Any]) -> None:
    drop = _cleanups.pop(settings["_place"], None)
    if drop is not None:
        await asyncio.to_thread(drop)


async def make_sql_directory(kind: str, *, queries: dict[str, str] | None = None,
                             columns: dict[str, str] | None = None) -> Directory:
    """The dataset in fresh tables of ``kind`` ("sqlite", "postgresql" or "mysql"), behind
    an SqlDirectory; skips the test (fails under REQUIRE_SERVICES=1) when the server is
    not running. ``queries``/``columns`` override the test configuration."""
    settings = await create_tables(kind)
    store = {k: v for k, v in settings.items() if k != "_place"}
    return _TestSqlDirectory(
        f"sql-{kind}", store, queries={**QUERIES, **(queries or {})},
        columns={**COLUMNS, **(columns or {})}, place=settings["_place"],
    )


@atexit.register
def _drop_leftovers() -> None:
    for drop in list(_cleanups.values()):
        with contextlib.suppress(Exception):  # best effort at exit; the server may be gone
            drop()
    _cleanups.clear()
