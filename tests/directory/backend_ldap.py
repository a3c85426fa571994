"""The LDAP directory on a real slapd (``tests/directory/ldap_server.py``), loaded with the
shared dataset; used by the behavioural suite and by ``test_ldap.py``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from stalwart_mp.config.loader import validate
from stalwart_mp.config.registry import load_settings_modules
from stalwart_mp.config.schema import SCHEMA
from stalwart_mp.directory.ldap import LdapDirectory
from tests.directory.ldap_server import BASE_DN, SERVICE_DN, SERVICE_SECRET, shared_server


def ldap_table(url: str | list[str], mode: str = "bind", **extra: Any) -> dict[str, Any]:
    """A ``[directory."ldap"]`` table for the test tree (slapd has no memberOf overlay, so
    groups are found with filter.groups)."""
    return {
        "type": "ldap", "url": url, "base-dn": BASE_DN,
        "bind": {"dn": SERVICE_DN, "secret": SERVICE_SECRET, "auth": mode},
        "filter": {"groups": "(&(objectClass=groupOfNames)(member=?))"},
        "timeout": "3s", "pool": {"size": 2},
        **extra,
    }


def directory_from_table(table: dict[str, Any]) -> LdapDirectory:
    """Validate the table with the config loader's own validation (errors about other
    sections, such as missing stores, are not this test's business), then open the
    directory from the parsed table, as ``directory/configured.py`` does."""
    load_settings_modules()
    cfg, errors = validate({"directory": {"ldap": table}}, SCHEMA, "<test>", Path.cwd())
    errors = [e for e in errors if e.key.startswith("directory.")]
    if errors:
        raise ValueError("; ".join(map(str, errors)))
    return LdapDirectory.from_settings("ldap", cfg.table(("directory", "ldap")))


async def make_ldap_directory(mode: str = "bind") -> LdapDirectory:
    """An LDAP directory on the session's slapd; ``mode`` is bind.auth ("bind" | "hash")."""
    return directory_from_table(ldap_table(shared_server().url, mode))
