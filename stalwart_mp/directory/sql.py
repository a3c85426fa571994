"""A read-only directory in the administrator's own SQL tables (PostgreSQL, MySQL/MariaDB,
SQLite), as Stalwart's SQL directory: the queries come from the configuration
(``directory/sql_settings.py``), so any existing user database can be used unchanged.

Failures: a database that cannot be reached, and a query that fails (a mistake in the
configured SQL), both raise ``DirectoryUnavailable`` — a temporary failure — naming the
database (``host:port`` or the SQLite file) and, for a query, its setting
(``query.recipients``). Neither may ever look like "no such user", which would bounce mail
or tell a client its account does not exist.

Concurrency: the drivers block, so every lookup runs on a small per-process thread pool,
each thread borrowing a connection from a per-process pool (open the directory after fork).
A principal lookup runs all its queries on one connection in one trip to the pool.
Connections are opened lazily: a database that is down at start makes lookups fail
temporarily rather than the server refuse to start. Sessions are read-only (PostgreSQL and
MySQL ``READ ONLY`` sessions, SQLite opened with ``mode=ro``): this directory never writes.
"""
from __future__ import annotations

import logging
import math
import sqlite3
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from stalwart_mp.directory.base import (
    Directory,
    DirectoryUnavailable,
    Principal,
    PrincipalType,
)
from stalwart_mp.directory.sql_settings import COLUMN_DEFAULTS, QUERY_DEFAULTS, SQL_STORE_TYPES
from stalwart_mp.store.backends.sqlcommon import (
    ConnectionPool,
    ExecutorMixin,
    count_qmarks,
    qmark_to_format,
)

T = TypeVar("T")
log = logging.getLogger("stalwart_mp.directory.sql")

MAX_THREADS = 4  # lookups are short and cached (directory.*.cache-ttl): a few suffice
_TYPES: dict[str, tuple[PrincipalType, tuple[str, ...]]] = {
    "individual": (PrincipalType.INDIVIDUAL, ("user",)),
    "personal": (PrincipalType.INDIVIDUAL, ("user",)),
    "person": (PrincipalType.INDIVIDUAL, ("user",)),
    "user": (PrincipalType.INDIVIDUAL, ("user",)),
    "admin": (PrincipalType.INDIVIDUAL, ("user", "admin")),
    "superuser": (PrincipalType.INDIVIDUAL, ("user", "admin")),
    "group": (PrincipalType.GROUP, ()),
    "list": (PrincipalType.LIST, ()),
}
_TRUE = {"1", "t", "true", "y", "yes", "on"}
_LIKE_SPECIALS = set("%_\\")


class _QueryFailed(Exception):
    """A configured query failed on a working connection (bad SQL, missing table...)."""

    def __init__(self, query: str, cause: BaseException) -> None:
        super().__init__(query)
        self.query = query
        self.cause = cause


@dataclass(frozen=True, slots=True)
class _Driver:
    """What differs between the three databases."""

    label: str  # "PostgreSQL"
    where: str  # "host:port" or the SQLite file, for messages
    connect: Callable[[], Any]
    close: Callable[[Any], None]
    error: type[BaseException]  # the driver's base error class
    broken: Callable[[BaseException, Any], bool]  # did this error break the connection?
    translate: Callable[[str], tuple[str, int]]  # "?" query -> driver query, placeholders
    reason: Callable[[BaseException], str]  # one line for people


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _postgres(name: str, store: Mapping[str, Any]) -> _Driver:
    import psycopg2

    host, port = store.get("host", "127.0.0.1"), store.get("port") or 5432
    timeout = float(store.get("timeout", 15))
    # Bound every query too: a stuck lookup answers "try later" instead of holding a thread.
    options = f"-c statement_timeout={max(1, int(timeout * 1000))}"
    if store.get("options"):
        options += " " + store["options"]
    params = {
        "host": host, "port": port, "dbname": store.get("database", "stalwart"),
        "user": store.get("user", "stalwart"), "password": store.get("password", ""),
        "connect_timeout": max(2, math.ceil(timeout)),  # libpq: whole seconds, >= 2
        "application_name": f"stalwart-mp:directory:{name}", "options": options,
    }

    def connect() -> Any:
        conn = psycopg2.connect(**params)
        conn.set_session(readonly=True, autocommit=True)
        return conn

    return _Driver(
        "PostgreSQL", _host_port(host, port), connect, lambda c: c.close(), psycopg2.Error,
        lambda exc, conn: conn.closed != 0 or isinstance(exc, psycopg2.InterfaceError),
        qmark_to_format, _one_line,
    )


def _mysql(name: str, store: Mapping[str, Any]) -> _Driver:
    import pymysql

    host, port = store.get("host", "127.0.0.1"), store.get("port") or 3306
    timeout = float(store.get("timeout", 15))
    params = {
        "host": host, "port": port, "database": store.get("database", "stalwart"),
        "user": store.get("user", "stalwart"), "password": store.get("password", ""),
        "connect_timeout": timeout, "read_timeout": timeout, "write_timeout": timeout,
        "autocommit": True, "charset": "utf8mb4", "init_command": store.get("options") or None,
    }

    def connect() -> Any:
        conn = pymysql.connect(**params)
        try:
            with conn.cursor() as cur:
                # "||" concatenates, as on the other databases (the default domains query).
                cur.execute("SET SESSION sql_mode = "
                            "CONCAT_WS(',', NULLIF(@@sql_mode, ''), 'PIPES_AS_CONCAT')")
                cur.execute("SET SESSION TRANSACTION READ ONLY")
        except BaseException:
            conn.close()
            raise
        return conn

    def broken(exc: BaseException, conn: Any) -> bool:
        # Client-side errors (2000-2999: lost connection, server gone away) break the
        # connection; server errors (syntax, unknown column...) leave it usable.
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        return isinstance(exc, pymysql.err.InterfaceError) or 2000 <= code < 3000

    def reason(exc: BaseException) -> str:
        return _one_line(Exception(exc.args[1])) if len(exc.args) > 1 else _one_line(exc)

    return _Driver(
        "MySQL", _host_port(host, port), connect, lambda c: c.close(), pymysql.err.Error,
        broken, lambda sql: qmark_to_format(sql, backslash_escapes=True), reason,
    )


def _sqlite(store: Mapping[str, Any]) -> _Driver:
    path = str(store["path"])
    uri = "file:" + urllib.parse.quote(path) + "?mode=ro"

    def connect() -> Any:
        # mode=ro: never creates a missing file (a wrong path fails, naming it) nor writes.
        # Pooled connections move between threads, one thread at a time.
        return sqlite3.connect(uri, uri=True, timeout=float(store.get("timeout", 15)),
                               check_same_thread=False)

    return _Driver(
        "SQLite", path, connect, lambda c: c.close(), sqlite3.Error,
        lambda exc, conn: False, lambda sql: (sql, count_qmarks(sql)), _one_line,
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _truthy(value: Any) -> bool:
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("ascii", "replace")
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return bool(value)


class _Session:
    """The configured queries, run on one borrowed connection."""

    def __init__(self, directory: SqlDirectory, conn: Any) -> None:
        self.directory = directory
        self.conn = conn

    def execute(self, query: str, value: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names (lower case) and rows of ``query.<query>`` for the value."""
        sql, marks = self.directory._sql[query]
        driver = self.directory._driver
        cur = self.conn.cursor()
        try:
            cur.execute(sql, (value,) * marks)
            names = [d[0].lower() for d in cur.description or ()]
            return names, list(cur.fetchall())
        except driver.error as exc:
            if driver.broken(exc, self.conn):
                raise
            raise _QueryFailed(query, exc) from exc
        finally:
            try:
                cur.close()
            except driver.error:
                pass

    def rows(self, query: str, value: str) -> list[dict[str, Any]]:
        """Rows keyed by column name (the configured ``columns.*`` pick from them)."""
        names, rows = self.execute(query, value)
        return [dict(zip(names, row, strict=False)) for row in rows]

    def column(self, query: str, value: str) -> list[str]:
        """The first column of each row (names, addresses), without empties or repeats."""
        out: list[str] = []
        for row in self.execute(query, value)[1]:
            item = _text(row[0] if row else None).strip()
            if item and item not in out:
                out.append(item)
        return out


class SqlDirectory(ExecutorMixin, Directory):
    """Principals, addresses and domains read from SQL tables with configured queries."""

    read_only = True

    def __init__(
        self,
        name: str,
        store: Mapping[str, Any],
        *,
        queries: Mapping[str, str] | None = None,
        columns: Mapping[str, str] | None = None,
    ) -> None:
        """``store``: the settings of the ``[store."X"]`` table named by ``directory.NAME.
        store`` (type, host, port... or path); ``queries`` and ``columns``: the ``query.*``
        and ``columns.*`` settings by their last key, defaults for the ones not given."""
        self.name = name
        kind = store.get("type")
        if kind not in SQL_STORE_TYPES:
            raise ValueError(
                f'directory "{name}": a {kind} store cannot hold an SQL directory; expected a '
                "store of type " + ", ".join(SQL_STORE_TYPES)
            )
        self.queries = _merged(name, "query", QUERY_DEFAULTS, queries)
        self.columns = {k: v.strip().lower() for k, v in
                        _merged(name, "columns", COLUMN_DEFAULTS, columns).items()}
        if kind == "postgresql":
            self._driver = _postgres(name, store)
        elif kind == "mysql":
            self._driver = _mysql(name, store)
        else:
            self._driver = _sqlite(store)
        self._sql = {key: self._driver.translate(sql) for key, sql in self.queries.items()}
        self._pool: ConnectionPool[Any] = ConnectionPool(self._driver.connect,
                                                         self._driver.close)
        threads = min(MAX_THREADS, int(store.get("pool-size", MAX_THREADS)))
        self._start_executor(max(1, threads), f"sqldir-{kind}")

    @classmethod
    def from_settings(cls, name: str, directory: Mapping[str, Any],
                      store: Mapping[str, Any]) -> SqlDirectory:
        """From ``cfg.table(("directory", NAME))`` (a flat dict with dotted keys:
        ``"query.name"``, ``"columns.secret"``) and the settings of its store."""
        def section(prefix: str) -> dict[str, str]:
            return {k[len(prefix):]: v for k, v in directory.items() if k.startswith(prefix)}

        return cls(name, store, queries=section("query."), columns=section("columns."))

    # --- running queries -----------------------------------------------------------------

    def _with_session(self, fn: Callable[[_Session], T]) -> T:
        """Run ``fn`` on a pooled connection; every failure becomes DirectoryUnavailable.

        A reused connection that turns out broken (dropped by the server while idle) is
        replaced and the lookup tried once more: lookups are reads, safe to repeat.
        """
        driver = self._driver
        for attempt in range(2):
            try:
                conn, fresh = self._pool.get()
            except driver.error as exc:
                log.warning('directory "%s": cannot connect to %s at %s: %s',
                            self.name, driver.label, driver.where, driver.reason(exc))
                raise DirectoryUnavailable(
                    f'directory "{self.name}": cannot connect to {driver.label} at '
                    f"{driver.where}: {driver.reason(exc)}"
                ) from exc
            try:
                result = fn(_Session(self, conn))
            except _QueryFailed as exc:
                self._pool.put(conn)
                log.error('directory "%s": query.%s failed on %s at %s: %s', self.name,
                          exc.query, driver.label, driver.where, driver.reason(exc.cause))
                raise DirectoryUnavailable(
                    f'directory "{self.name}": query.{exc.query} failed on {driver.label} at '
                    f"{driver.where}: {driver.reason(exc.cause)}"
                ) from exc.cause
            except driver.error as exc:
                self._pool.put(conn, broken=True)
                if not fresh and attempt == 0:
                    continue
                log.warning('directory "%s": lost the connection to %s at %s: %s',
                            self.name, driver.label, driver.where, driver.reason(exc))
                raise DirectoryUnavailable(
                    f'directory "{self.name}": lost the connection to {driver.label} at '
                    f"{driver.where}: {driver.reason(exc)}"
                ) from exc
            except BaseException:
                self._pool.put(conn, broken=True)
                raise
            self._pool.put(conn)
            return result
        raise AssertionError("unreachable")

    async def _run(self, fn: Callable[[_Session], T]) -> T:
        if self._closed:
            raise DirectoryUnavailable(f'directory "{self.name}" is closed')
        return await self._in_thread(self._with_session, fn)

    # --- principals ----------------------------------------------------------------------

    def _value(self, row: Mapping[str, Any], column: str) -> Any:
        key = self.columns[column]
        return row.get(key) if key else None

    def _principal(self, session: _Session, name: str) -> Principal | None:
        rows = session.rows("name", name)
        if not rows:
            return None
        row = rows[0]
        type_, roles = self._type(self._value(row, "type"), name)
        p = Principal(
            name=_text(self._value(row, "name")).strip() or name,
            type=type_,
            description=_text(self._value(row, "description")),
            quota_bytes=self._quota(self._value(row, "quota"), name),
            roles=list(roles),
            disabled=bool(self.columns["disabled"]) and _truthy(self._value(row, "disabled")),
        )
        for r in rows:  # several rows: several accepted secrets
            secret = _text(self._value(r, "secret"))
            if secret and secret not in p.secrets:
                p.secrets.append(secret)
        p.emails = [e.lower() for e in session.column("emails", p.name)]
        p.member_of = session.column("member-of", p.name)
        if p.type == PrincipalType.GROUP:
            p.members = session.column("members", p.name)
        elif p.type == PrincipalType.LIST:
            p.members = session.column("list-members", p.name)
        return p

    def _type(self, value: Any, name: str) -> tuple[PrincipalType, tuple[str, ...]]:
        text = _text(value).strip().lower()
        if not text:
            return PrincipalType.INDIVIDUAL, ("user",)
        known = _TYPES.get(text)
        if known is None:
            log.warning('directory "%s": principal "%s" has type "%s"; expected one of %s; '
                        "taken as individual", self.name, name, text, ", ".join(_TYPES))
            return PrincipalType.INDIVIDUAL, ("user",)
        return known

    def _quota(self, value: Any, name: str) -> int:
        if value is None or _text(value).strip() == "":
            return 0
        try:
            return max(0, int(value if not isinstance(value, str | bytes) else _text(value)))
        except (TypeError, ValueError):
            log.warning('directory "%s": principal "%s" has quota %r, not a number of bytes; '
                        "taken as unlimited", self.name, name, value)
            return 0

    async def principal(self, name: str) -> Principal | None:
        name = name.strip().lower()
        if not name:
            return None
        return await self._run(lambda s: self._principal(s, name))

    # --- addresses and domains -----------------------------------------------------------

    async def names_by_email(self, address: str) -> list[str]:
        address = address.strip().lower()
        if not address:
            return []
        return await self._run(lambda s: s.column("recipients", address))

    async def is_local_domain(self, domain: str) -> bool:
        domain = domain.strip().lower().rstrip(".")
        # The default query matches with LIKE: a domain holding its wildcards ("%") would
        # match every address. No mail domain contains them (RFC 5321 §4.1.2 Domain).
        if not domain or _LIKE_SPECIALS & set(domain):
            return False
        return bool(await self._run(lambda s: s.rows("domains", domain)))

    async def members(self, name: str) -> list[str]:
        name = name.strip().lower()
        if not name:
            return []

        def run(s: _Session) -> list[str]:
            rows = s.rows("name", name)
            if not rows:
                return []
            type_, _ = self._type(self._value(rows[0], "type"), name)
            stored = _text(self._value(rows[0], "name")).strip() or name
            if type_ == PrincipalType.GROUP:
                return s.column("members", stored)
            if type_ == PrincipalType.LIST:
                return s.column("list-members", stored)
            return []

        return await self._run(run)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True)
        self._pool.close()


def _merged(name: str, section: str, defaults: Mapping[str, str],
            given: Mapping[str, str] | None) -> dict[str, str]:
    """Defaults overridden by the given values; an unknown key is a mistake to report."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f'directory "{name}": unknown {section} key(s) ' + ", ".join(unknown)
            + "; expected " + ", ".join(defaults)
        )
    return {**defaults, **{k: v for k, v in given.items() if v is not None}}
