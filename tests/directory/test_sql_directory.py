"""The SQL directory on SQLite, PostgreSQL and MariaDB/MySQL: what is specific to reading
principals with configured queries (the shared behaviour is in test_directory_behaviour.py).
"""
from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from stalwart_mp.config.loader import ConfigInvalid, load_dict
from stalwart_mp.directory.base import DirectoryUnavailable, PrincipalType
from stalwart_mp.directory.recipients import Outcome, resolve
from stalwart_mp.directory.sql import SqlDirectory
from stalwart_mp.directory.sql_settings import COLUMN_DEFAULTS, QUERY_DEFAULTS
from stalwart_mp.store.backends.sqlcommon import count_qmarks, qmark_to_format
from tests.directory.backend_sql import (
    KINDS,
    QUERIES,
    create_tables,
    drop_tables,
    make_sql_directory,
)
from tests.directory.dataset import entry


@pytest.fixture(params=KINDS)
async def directory(request):
    d = await make_sql_directory(request.param)
    yield d
    await d.close()


@pytest.fixture(params=KINDS)
async def tables(request):
    """Loaded tables of each kind, for tests that build their own SqlDirectory on them."""
    settings = await create_tables(request.param)
    yield {k: v for k, v in settings.items() if k != "_place"}
    await drop_tables(settings)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- principals --------------------------------------------------------------------------


async def test_individual_with_every_column(directory):
    alice = await directory.principal("alice")
    assert alice.name == "alice" and alice.type == PrincipalType.INDIVIDUAL
    assert alice.description == "Alice Smith"
    assert alice.quota_bytes == 1 << 30
    # The default emails query: primary first ("primary" > "alias"), then aliases A-Z.
    assert alice.emails == ["alice@example.org", "a.smith@example.org", "alice@example.net"]
    assert alice.primary_email == "alice@example.org"
    assert alice.member_of == ["sales"]
    assert alice.roles == ["user"] and not alice.is_admin
    assert len(alice.secrets) == 1 and alice.secrets[0].startswith("{SSHA}")
    assert not alice.disabled and alice.members == []
    bob = await directory.principal("bob")
    assert bob.emails == ["bob@example.org", "@example.net"] and bob.quota_bytes == 0
    assert bob.secrets[0].startswith("$6$")


async def test_groups_and_lists_carry_their_members(directory):
    sales = await directory.principal("sales")
    assert sales.type == PrincipalType.GROUP and sales.description == "Sales team"
    assert sales.members == ["alice", "bob"] and sales.secrets == []
    assert sales.emails == ["sales@example.org"] and sales.roles == []
    everyone = await directory.principal("everyone")
    assert everyone.type == PrincipalType.LIST
    assert everyone.members == ["alice@example.org", "bob@example.org", "external@other.test"]


async def test_lookup_is_case_insensitive_and_unknown_is_none(directory):
    assert (await directory.principal("ALICE")).name == "alice"
    assert (await directory.principal(" Bob ")).name == "bob"
    assert await directory.principal("nobody") is None
    assert await directory.principal("") is None


async def test_passwords_in_every_scheme(directory):
    cases = {"alice": "{SSHA}", "bob": "$6$", "carol": "{PLAIN}", "dave": "$6$"}
    for name, scheme in cases.items():
        p = await directory.principal(name)
        assert p.secrets[0].startswith(scheme), (name, p.secrets)
        password = entry(name).password
        assert await directory.verify_password(p, password), name
        assert not await directory.verify_password(p, password[:-1]), name
        assert not await directory.verify_password(p, password.upper()), name
        assert not await directory.verify_password(p, ""), name


async def test_unicode_password(directory):
    dave = await directory.principal("dave")
    assert await directory.verify_password(dave, "dävé-ünïcödé-4")
    assert not await directory.verify_password(dave, "dave-unicode-4")
    assert not await directory.verify_password(dave, "dävé-ünïcödé-4".encode().decode("latin-1"))


async def test_no_secret_column_value_means_no_password(directory):
    sales = await directory.principal("sales")
    assert not await directory.verify_password(sales, "")
    assert not await directory.verify_password(sales, "anything")


async def test_disabled_account(directory):
    carol = await directory.principal("carol")
    assert carol is not None and carol.disabled
    assert await directory.names_by_email("carol@example.org") == ["carol"]
    assert (await resolve(directory, "carol@example.org")).outcome == Outcome.DISABLED


async def test_default_name_query_hides_inactive_accounts(tables):
    """Stalwart's default query filters ``active = true``: carol is unknown, not disabled."""
    d = SqlDirectory("defaults", tables)
    try:
        assert d.queries == QUERY_DEFAULTS and d.columns == COLUMN_DEFAULTS
        assert await d.principal("carol") is None
        assert (await resolve(d, "carol@example.org")).outcome == Outcome.DISABLED
        alice = await d.principal("alice")
        assert not alice.disabled and alice.quota_bytes == 1 << 30
        assert await d.is_local_domain("example.net")  # "||" on MySQL: PIPES_AS_CONCAT
    finally:
        await d.close()


async def test_admin_type_and_unknown_columns(tables):
    d = SqlDirectory("admins", tables, queries={
        "name": "SELECT name, 'admin' AS kind, secret FROM accounts WHERE name = ?"},
        columns={"type": "kind", "description": "nosuch", "quota": ""})
    try:
        alice = await d.principal("alice")
        assert alice.type == PrincipalType.INDIVIDUAL and alice.is_admin
        assert alice.description == "" and alice.quota_bytes == 0
    finally:
        await d.close()


# --- addresses, domains, members -------------------------------------------------------


async def test_names_by_email(directory):
    for address, names in [
        ("alice@example.org", ["alice"]),
        ("a.smith@example.org", ["alice"]),
        ("alice@example.net", ["alice"]),
        ("Alice@EXAMPLE.org", ["alice"]),
        ("@example.net", ["bob"]),
        ("sales@example.org", ["sales"]),
        ("everyone@example.org", ["everyone"]),
        ("nobody@example.org", []),
        ("@example.org", []),
        ("", []),
    ]:
        assert await directory.names_by_email(address) == names, address


async def test_is_local_domain(directory):
    for domain in ("example.org", "example.net", "EXAMPLE.ORG", "example.org."):
        assert await directory.is_local_domain(domain), domain
    for domain in ("other.test", "example", "org", "", "%", "example.%", "exampl_.org"):
        assert not await directory.is_local_domain(domain), domain


async def test_members(directory):
    assert await directory.members("sales") == ["alice", "bob"]
    assert await directory.members("SALES") == ["alice", "bob"]
    assert await directory.members("everyone") == [
        "alice@example.org", "bob@example.org", "external@other.test"]
    assert await directory.members("alice") == []
    assert await directory.members("nobody") == []


async def test_recipient_resolution(directory):
    r = await resolve(directory, "everyone@example.org")
    assert (sorted(r.accounts), r.external) == (["alice", "bob"], ["external@other.test"])
    r = await resolve(directory, "whoever@example.net")
    assert (r.outcome, r.accounts) == (Outcome.LOCAL, ["bob"])
    assert (await resolve(directory, "x@other.test")).outcome == Outcome.NOT_LOCAL


@pytest.mark.parametrize("evil", [
    "alice' OR '1'='1",
    "x' OR 1=1 --",
    "alice'; DROP TABLE accounts; --",
    'alice" OR "1"="1',
    "alice\\' OR 1=1 -- ",
    "%", "_", "?", "%s", "%(name)s", "alice%",
])
async def test_sql_injection_finds_nothing(directory, evil):
    assert await directory.principal(evil) is None
    assert await directory.names_by_email(evil) == []
    assert await directory.names_by_email(f"{evil}@example.org") == []
    assert await directory.members(evil) == []
    assert not await directory.is_local_domain(evil)
    assert (await directory.principal("alice")).name == "alice"  # tables intact


async def test_concurrent_lookups_share_the_pool(directory):
    names = ["alice", "bob", "carol", "dave", "sales", "everyone"] * 8
    found = await asyncio.gather(*(directory.principal(n) for n in names))
    assert [p.name for p in found] == names


# --- failures: temporary, and saying where ---------------------------------------------


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
async def test_database_down_is_unavailable_naming_host_port(kind):
    port = free_port()
    store = {"type": kind, "host": "127.0.0.1", "port": port, "database": "test",
             "user": "nobody", "password": "", "timeout": 3}
    d = SqlDirectory("down", store)  # connections are opened lazily: no error at start
    try:
        for call in (d.principal("alice"), d.names_by_email("alice@example.org"),
                     d.is_local_domain("example.org"), d.members("sales")):
            with pytest.raises(DirectoryUnavailable, match=f"127.0.0.1:{port}") as info:
                await call
            assert "down" in str(info.value) and "unknown" not in str(info.value).lower()
    finally:
        await d.close()


async def test_sqlite_file_missing_is_unavailable_naming_the_file(tmp_path):
    path = tmp_path / "absent" / "directory.db"
    d = SqlDirectory("gone", {"type": "sqlite", "path": str(path)})
    try:
        with pytest.raises(DirectoryUnavailable, match=str(path)):
            await d.principal("alice")
        assert not path.exists()  # read-only: never created
    finally:
        await d.close()


@pytest.mark.parametrize("query, sql", [
    ("recipients", "SELEKT name FROM emails WHERE address = ?"),
    ("recipients", "SELECT name FROM no_such_table WHERE address = ?"),
    ("recipients", "SELECT no_such_column FROM emails WHERE address = ?"),
])
async def test_bad_query_is_unavailable_and_logged_with_its_name(tables, query, sql, caplog):
    d = SqlDirectory("badsql", tables, queries={query: sql})
    try:
        with (caplog.at_level(logging.ERROR, logger="stalwart_mp.directory.sql"),
              pytest.raises(DirectoryUnavailable, match=f"query.{query}") as info):
            await d.names_by_email("alice@example.org")
        assert ("127.0.0.1:" in str(info.value)) or tables["type"] == "sqlite"
        assert any(f"query.{query}" in r.getMessage() for r in caplog.records)
        # The connection survived the failed query: the other queries still answer.
        assert (await d.principal("alice")).name == "alice"
        with pytest.raises(DirectoryUnavailable, match=f"query.{query}"):
            await d.names_by_email("alice@example.org")
    finally:
        await d.close()


async def test_bad_name_query_fails_principal_and_members(tables):
    d = SqlDirectory("badname", tables, queries={"name": "SELECT * FROM accounts WHERE"})
    try:
        with pytest.raises(DirectoryUnavailable, match="query.name"):
            await d.principal("alice")
        with pytest.raises(DirectoryUnavailable, match="query.name"):
            await d.members("sales")
    finally:
        await d.close()


@pytest.mark.parametrize("kind", ["postgresql", "mysql"])
async def test_connection_dropped_by_server_is_replaced(kind):
    """A pooled connection the server closed while idle costs one retry, not an error."""
    settings = await create_tables(kind)
    tables = {k: v for k, v in settings.items() if k != "_place"}
    d = SqlDirectory("dropped", tables, queries=QUERIES, columns={"disabled": "disabled"})
    try:
        assert (await d.principal("alice")).name == "alice"
        conn, fresh = d._pool.get()
        assert not fresh
        with conn.cursor() as cur:  # end this very session from the server side
            if kind == "postgresql":
                cur.execute("SELECT pg_backend_pid()")
                pid = cur.fetchone()[0]
                killer = d._driver.connect()
                with killer.cursor() as k:
                    k.execute("SELECT pg_terminate_backend(%s)", (pid,))
            else:
                cur.execute("SELECT CONNECTION_ID()")
                pid = cur.fetchone()[0]
                killer = d._driver.connect()
                with killer.cursor() as k:
                    k.execute(f"KILL {int(pid)}")
            killer.close()
        d._pool.put(conn)
        assert (await d.principal("bob")).name == "bob"
        assert conn not in d._pool._idle.queue  # found broken and thrown away
    finally:
        await d.close()
        await drop_tables(settings)


async def test_closed_directory_is_unavailable(tables):
    d = SqlDirectory("closing", tables)
    await d.close()
    with pytest.raises(DirectoryUnavailable, match="closed"):
        await d.principal("alice")


def test_constructor_rejects_other_stores_and_unknown_keys():
    with pytest.raises(ValueError, match="lmdb store cannot hold an SQL directory"):
        SqlDirectory("x", {"type": "lmdb", "path": "/tmp/x"})
    with pytest.raises(ValueError, match="unknown query key.*membres"):
        SqlDirectory("x", {"type": "sqlite", "path": "/tmp/x.db"}, queries={"membres": "x"})


# --- settings and query translation ----------------------------------------------------


def _config(directory: dict):
    return load_dict({
        "server": {"hostname": "mail.example.org"},
        "store": {"db": {"type": "sqlite", "path": "/tmp/stalwart-test-dir.db"},
                  "kv": {"type": "lmdb", "path": "/tmp/stalwart-test-kv"}},
        "storage": {"data": "db", "directory": "users"},
        "directory": {"users": {"type": "sql", "store": "db", **directory}},
    })


def test_settings_defaults_and_overrides():
    cfg = _config({"query": {"recipients": "SELECT login FROM aliases WHERE addr = ?"},
                   "columns": {"secret": "password_hash"}})
    table = cfg.table(("directory", "users"))
    assert table["query.name"] == QUERY_DEFAULTS["name"]
    assert table["query.recipients"] == "SELECT login FROM aliases WHERE addr = ?"
    assert table["columns.secret"] == "password_hash"
    assert table["columns.disabled"] == ""
    d = SqlDirectory.from_settings("users", table, cfg.table(("store", "db")))
    try:
        assert d.queries["recipients"] == "SELECT login FROM aliases WHERE addr = ?"
        assert d.queries["member-of"] == QUERY_DEFAULTS["member-of"]
        assert d.columns["secret"] == "password_hash"
    finally:
        asyncio.run(d.close())


def test_settings_reject_a_non_sql_store_and_empty_queries():
    with pytest.raises(ConfigInvalid, match='store "kv" is a lmdb store; an SQL directory'):
        _config({"store": "kv"})
    with pytest.raises(ConfigInvalid, match="query.members"):
        _config({"query": {"members": "  "}})


def test_placeholders_translated_outside_literals():
    assert qmark_to_format(QUERY_DEFAULTS["domains"]) == (
        "SELECT 1 FROM emails WHERE address LIKE '%%@' || %s LIMIT 1", 1)
    sql = "SELECT '?', \"a?\" FROM t WHERE x = ? -- why?\n OR y = ? /* ? */"
    assert qmark_to_format(sql) == (
        "SELECT '?', \"a?\" FROM t WHERE x = %s -- why?\n OR y = %s /* ? */", 2)
    assert count_qmarks(sql) == 2
    assert qmark_to_format("SELECT 'it''s ?' WHERE a = ?") == (
        "SELECT 'it''s ?' WHERE a = %s", 1)
    # MySQL: a backslash escapes the quote, which then does not end the literal.
    assert qmark_to_format(r"SELECT 'a\'?' WHERE b = ?", backslash_escapes=True) == (
        r"SELECT 'a\'?' WHERE b = %s", 1)


async def test_a_value_used_twice_is_passed_twice(tables):
    d = SqlDirectory("twice", tables, queries={
        "recipients": "SELECT name FROM emails WHERE address = ? OR name = ? ORDER BY name"})
    try:
        assert await d.names_by_email("alice") == ["alice"]
        assert await d.names_by_email("bob@example.org") == ["bob"]
    finally:
        await d.close()
