"""Directories opened from a configuration file, as the server opens them."""
from __future__ import annotations

import sqlite3

import pytest

from stalwart_mp.config.loader import load_dict
from stalwart_mp.directory.base import DirectoryUnavailable
from stalwart_mp.directory.configured import open_directory
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.store.configured import open_data_store
from tests.directory.backend_sql import load

BASE = {"server": {"hostname": "mail.example.org"},
        "store": {"default": {"type": "lmdb", "path": "lmdb"},
                  "fts": {"type": "whoosh", "path": "fts"}},
        "storage": {"data": "default", "fts": "fts"}}


def _cfg(tmp_path, **extra):
    data = {**BASE, **extra}
    data["store"] = {**BASE["store"], **extra.get("store", {})}
    data["storage"] = {**BASE["storage"], **extra.get("storage", {})}
    return load_dict(data, base_dir=tmp_path)


async def test_internal_directory_is_the_default(tmp_path):
    cfg = _cfg(tmp_path)
    data = await open_data_store(cfg)
    directory = await open_directory(cfg, data)
    assert isinstance(directory.inner, InternalDirectory)
    await data.close()


async def test_sql_directory_from_config(tmp_path):
    db = tmp_path / "users.db"
    con = sqlite3.connect(db)
    load(con.cursor(), "sqlite")  # Stalwart's example schema + the shared test dataset
    con.commit()
    con.close()
    cfg = _cfg(tmp_path, store={"users": {"type": "sqlite", "path": "users.db"}},
               directory={"sql": {"type": "sql", "store": "users"}},
               storage={"directory": "sql"})
    data = await open_data_store(cfg)
    directory = await open_directory(cfg, data)
    alice = await directory.principal("alice")
    assert alice is not None and await directory.verify_password(alice, "alice-secret-1")
    assert await directory.names_by_email("a.smith@example.org") == ["alice"]
    await directory.close()
    await data.close()


async def test_ldap_directory_down_is_a_temporary_failure(tmp_path):
    cfg = _cfg(tmp_path, directory={"ldap": {"type": "ldap", "url": "ldap://127.0.0.1:9",
                                             "base-dn": "dc=example,dc=org", "timeout": 1}},
               storage={"directory": "ldap"})
    data = await open_data_store(cfg)
    directory = await open_directory(cfg, data)
    with pytest.raises(DirectoryUnavailable, match="ldap://127.0.0.1:9"):
        await directory.principal("alice")
    await directory.close()
    await data.close()
