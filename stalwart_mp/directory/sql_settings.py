"""Settings of SQL directories: ``[directory."NAME"] type = "sql"``.

As in Stalwart, the administrator writes the queries against their own tables, so an
existing user database can be used as it is. Each query takes one value, written ``?``
whatever the database (translated for the driver), and may use it more than once. The
defaults fit the example schema of Stalwart's documentation, extended for lists:

    accounts(name PRIMARY KEY, secret, description, type, quota, active)
    emails(name, address, type)          -- type: 'primary' | 'alias' | 'list'
    group_members(name, member_of)       -- name: a principal, or an address (list members)

Settings here only declare keys; the directory itself is ``directory/sql.py`` (this module
is imported by the master before forking, so it imports no database driver).

The keys live in sub-tables (``columns.*``, ``query.*``), which a ``when`` restriction cannot
reach (it looks at a sibling key), so their defaults are filled in for every directory;
only a directory of type "sql" reads them.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stalwart_mp.config.schema import SCHEMA, ConfigError, Setting, Str

SQL_STORE_TYPES = ("postgresql", "mysql", "sqlite")

COLUMN_DEFAULTS: dict[str, str] = {
    "name": "name",
    "type": "type",
    "secret": "secret",
    "description": "description",
    "quota": "quota",
    "disabled": "",
}

QUERY_DEFAULTS: dict[str, str] = {
    "name": "SELECT name, type, secret, description, quota FROM accounts "
            "WHERE name = ? AND active = true",
    "member-of": "SELECT member_of FROM group_members WHERE name = ?",
    "members": "SELECT name FROM group_members WHERE member_of = ? ORDER BY name ASC",
    "list-members": "SELECT name FROM group_members WHERE member_of = ? ORDER BY name ASC",
    "recipients": "SELECT name FROM emails WHERE address = ? ORDER BY name ASC",
    "emails": "SELECT address FROM emails WHERE name = ? AND type != 'list' "
              "ORDER BY type DESC, address ASC",
    "domains": "SELECT 1 FROM emails WHERE address LIKE '%@' || ? LIMIT 1",
}

_COLUMN_HELP = {
    "name": "Column of the name query holding the login name (absent: the name asked for).",
    "type": 'Column holding the principal\'s type: "individual" (also "personal", "person", '
            '"user"), "admin" (an individual with the admin role), "group" or "list". '
            "Absent or empty: individual.",
    "secret": "Column holding the password hash: {SSHA}, {SHA512}, $6$ and other crypt "
              "formats, bcrypt, argon2, {PLAIN}... If the name query returns several rows, "
              "each row's secret is accepted (e.g. application passwords).",
    "description": "Column holding the display name or description.",
    "quota": "Column holding the storage quota in bytes (absent, empty or 0: unlimited).",
    "disabled": 'Column that is true (1, "t", "true", "yes") for a disabled account, which '
                "exists but may neither log in nor receive mail. Empty: no such column; "
                "accounts the name query does not return (the default query filters "
                "active = true) are unknown instead.",
}

_QUERY_HELP = {
    "name": "Returns the principal named ? (lower case: write lower(name) = ? if your table "
            "holds mixed case) with the columns above; no row: no such principal.",
    "member-of": "Returns the groups the principal named ? is a member of (Stalwart calls "
                 "this query \"members\").",
    "members": "Returns the names of the members of the group named ?.",
    "list-members": "Returns the member addresses of the mailing list named ? (local or "
                    "external).",
    "recipients": "Returns the names of the principals receiving mail for the address ? "
                  "(lower case; \"@domain\" asks for the domain's catch-all).",
    "emails": "Returns the addresses of the principal named ?, the primary one first "
              "(\"@domain\" makes it the catch-all of that domain).",
    "domains": "Returns a row when mail for the domain ? (lower case) is delivered here. On "
               "MySQL/MariaDB the session runs with PIPES_AS_CONCAT, so || concatenates "
               "strings on every database.",
}

SCHEMA.add(
    *(
        Setting(f"directory.*.columns.{key}", Str(), default, _COLUMN_HELP[key],
                when=("type", ("sql",)))
        for key, default in COLUMN_DEFAULTS.items()
    ),
    *(
        Setting(f"directory.*.query.{key}", Str(nonempty=True), default, _QUERY_HELP[key],
                when=("type", ("sql",)))
        for key, default in QUERY_DEFAULTS.items()
    ),
)


@SCHEMA.check
def _sql_directory_store_type(cfg: Any) -> Iterator[ConfigError]:
    """An SQL directory borrows a store's connection settings: it must be an SQL store."""
    for name in cfg.names("directory"):
        if cfg.get(("directory", name, "type")) != "sql":
            continue
        store = cfg.get(("directory", name, "store"))
        kind = cfg.get(("store", store, "type"))
        if kind is not None and kind not in SQL_STORE_TYPES:
            yield ConfigError(
                f"directory.{name}.store",
                f'store "{store}" is a {kind} store; an SQL directory needs a store of type '
                + ", ".join(f'"{t}"' for t in SQL_STORE_TYPES),
                store, True,
            )
