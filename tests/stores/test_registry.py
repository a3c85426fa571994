"""open_data_store: settings parsing, clear errors, lazy backend imports; storage.data check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stalwart_mp.config.loader import ConfigInvalid, load_dict
from stalwart_mp.store.backends.memory import MemoryStore
from stalwart_mp.store.data import StoreError
from stalwart_mp.store.registry import open_data_store
from tests.stores import backends


def test_memory_store() -> None:
    assert isinstance(open_data_store("m", {"type": "memory"}), MemoryStore)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, 'store "main": "type" is required'),
        ({"type": "gopher"}, 'store "main": type = \'gopher\': expected one of "lmdb"'),
        ({"type": "redis"}, 'store "main": a redis store cannot hold data; data stores: lmdb'),
        ({"type": "lmdb"}, 'store "main": "path" is required for a lmdb store'),
        ({"type": "sqlite", "path": ""}, "store \"main\": path = '': expected a string"),
        (
            {"type": "lmdb", "path": "/tmp/x", "map-size": "lots"},
            "map-size = 'lots': expected a size",
        ),
        ({"type": "postgresql", "pool-size": 0}, "pool-size = 0: expected an integer >= 1"),
        ({"type": "mysql", "table": "kv; drop"}, "table = 'kv; drop': expected a table name"),
    ],
)
def test_invalid_settings_name_store_and_key(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(StoreError) as info:
        open_data_store("main", settings)
    assert message in str(info.value)


def test_unreachable_postgresql_is_named() -> None:
    with pytest.raises(StoreError) as info:
        open_data_store(
            "main", {"type": "postgresql", "host": "127.0.0.1", "port": 1, "timeout": 2}
        )
    assert str(info.value).startswith('store "main": cannot connect to PostgreSQL at 127.0.0.1:1: ')


def test_unreachable_mysql_is_named() -> None:
    with pytest.raises(StoreError) as info:
        open_data_store("main", {"type": "mysql", "host": "127.0.0.1", "port": 1, "timeout": 2})
    assert str(info.value).startswith('store "main": cannot connect to MySQL at 127.0.0.1:1: ')


def test_wrong_database_is_named() -> None:
    backends.settings_for("postgresql", Path("."))  # skip unless PostgreSQL is up
    params = {**backends.pg_params(), "database": "no_such_db_stalwart"}
    with pytest.raises(StoreError, match="no_such_db_stalwart"):
        open_data_store("main", {"type": "postgresql", **params})


def test_sizes_and_durations_accept_strings(tmp_path: Path) -> None:
    store = open_data_store("s", {"type": "lmdb", "path": str(tmp_path / "l"), "map-size": "2MB"})
    assert store._env.info()["map_size"] == 2 * 1024 * 1024  # type: ignore[attr-defined]


def test_registry_imports_no_driver() -> None:
    code = (
        "import sys; import stalwart_mp.store.registry, stalwart_mp.store.settings; "
        "print(sorted(m for m in ('lmdb', 'psycopg2', 'pymysql', 'sqlite3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _role_errors(stores: dict, storage: dict) -> list[str]:
    data = {"server": {"hostname": "a.example"}, "store": stores, "storage": storage}
    try:
        load_dict(data)
    except ConfigInvalid as exc:
        return [str(e) for e in exc.errors]
    return []


def test_storage_roles_must_name_fitting_stores() -> None:
    lmdb = {"type": "lmdb", "path": "x"}
    assert _role_errors({"default": lmdb, "fts": {"type": "whoosh", "path": "f"}},
                        {"fts": "fts"}) == []
    assert _role_errors({"b": lmdb, "a": {"type": "sqlite", "path": "s"}}, {"data": "x"}) == [
        f'storage.{role} = "x": no [store."x"] is defined; defined stores: a, b'
        for role in ("data", "blob", "fts", "lookup")
    ]
    assert _role_errors({"default": lmdb}, {}) == [
        'storage.fts = "default": store "default" is a lmdb store, which cannot serve as the '
        "fts store; types that can: sqlite, postgresql, mysql, whoosh"
    ]
    assert _role_errors({"default": lmdb, "r": {"type": "redis", "url": "redis://127.0.0.1"}}, {"fts": "default",
                                                                    "data": "r"})[0] == (
        'storage.data = "r": store "r" is a redis store, which cannot serve as the data store; '
        "types that can: lmdb, sqlite, postgresql, mysql, memory"
    )
