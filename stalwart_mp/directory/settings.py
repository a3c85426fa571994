"""Settings of the directories (``[directory."NAME"]``, ``storage.directory``) and of
authentication (``[auth]``: bans, throttles, rehash, plain-text auth)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stalwart_mp.config.schema import (
    REQUIRED,
    SCHEMA,
    Bool,
    Choice,
    ConfigError,
    Duration,
    Int,
    IpNetwork,
    ListOf,
    Setting,
    Str,
)

DIRECTORY_TYPES = ("internal", "sql", "ldap")

SCHEMA.add(
    Setting(
        "directory.*.type", Choice(*DIRECTORY_TYPES), REQUIRED,
        'Where accounts live. "internal": in the data store, managed with stalwart-mp-admin '
        'and the web admin; "sql": your own tables (read-only here); "ldap": an LDAP server '
        "(read-only here).",
    ),
    Setting(
        "directory.*.store", Str(nonempty=True), REQUIRED,
        'internal: the [store.NAME] holding the accounts (normally the data store); sql: the '
        "[store.NAME] (postgresql, mysql or sqlite) whose connection settings are used.",
        when=("type", ("internal", "sql")),
    ),
    Setting(
        "directory.*.cache-ttl", Duration(), 30.0,
        "How long a worker keeps a directory answer. The internal directory's changes clear "
        "the caches at once; for sql and ldap this bounds how stale an answer can be.",
    ),
    Setting(
        "storage.directory", Str(nonempty=True), "internal",
        'Name of the [directory.NAME] used for logins and recipients. "internal" needs no '
        "table of its own: it is the internal directory on the data store.",
    ),
    Setting(
        "auth.ban.failures", Int(min=1), 10,
        "Failed authentications from one IP address, within auth.ban.window, that ban it.",
    ),
    Setting("auth.ban.window", Duration(), 600.0, "Window of auth.ban.failures."),
    Setting(
        "auth.ban.duration", Duration(), 3600.0,
        "How long a banned address is refused (its connections are dropped at once).",
    ),
    Setting(
        "auth.ban.allowed-networks", ListOf(IpNetwork()), ["127.0.0.0/8", "::1/128"],
        "Networks never banned (your own hosts, monitoring).",
    ),
    Setting(
        "auth.account.failures", Int(min=1), 20,
        "Failed authentications against one account, within auth.account.window and from "
        "any address, after which that account refuses logins until the window passes "
        "(slows distributed guessing).",
    ),
    Setting("auth.account.window", Duration(), 600.0, "Window of auth.account.failures."),
    Setting(
        "auth.rehash", Bool(), True,
        "After a successful login with an old password hash (imported bcrypt, SHA-crypt, "
        "SSHA...), store it again as argon2id (internal directory only).",
    ),
    Setting(
        "auth.allow-plain-text", Bool(), False,
        "Offer PLAIN and LOGIN (and IMAP LOGIN, POP3 USER/PASS) on connections without TLS. "
        "Off: only over TLS, or from loopback.",
    ),
)


@SCHEMA.check
def _directory_defined(cfg: Any) -> Iterator[ConfigError]:
    name = cfg.get("storage.directory")
    names = cfg.names("directory")
    if name not in names and name != "internal":
        yield ConfigError("storage.directory",
                          f'no [directory."{name}"] is defined; defined: '
                          + (", ".join(names) or "none"), name, True)
    stores = cfg.names("store")
    for dname in names:
        store = cfg.get(("directory", dname, "store"))
        if store is not None and store not in stores:
            yield ConfigError(f"directory.{dname}.store",
                              f'no [store."{store}"] is defined', store, True)
