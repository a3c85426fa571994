"""open_data_store: settings parsing, clear errors, lazy backend imports; storage.data check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stalwart_mp.store.backends.memory import MemoryStore
from stalwart_mp.store.data import StoreError
from stalwart_mp.store.registry import open_data_store
from stalwart_mp.store.settings import _storage_data_is_defined
from tests.store import backends


def test_memory_store() -> None:
    assert isinstance(open_data_store("m", {"type": "memory"}), MemoryStore)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, 'store "main": "type" is required'),
        ({"type": "redis"}, 'store "main": type = \'redis\': expected one of "lmdb"'),
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


class FakeConfig:
    def __init__(self, data: str, stores: dict[str, str]) -> None:
        self.data, self.stores = data, stores

    def get(self, key: Any) -> Any:
        if key == "storage.data":
            return self.data
        return self.stores[key[1]]

    def names(self, section: str) -> list[str]:
        assert section == "store"
        return list(self.stores)


def test_storage_data_must_name_a_store() -> None:
    assert list(_storage_data_is_defined(FakeConfig("default", {"default": "lmdb"}))) == []
    (error,) = _storage_data_is_defined(FakeConfig("x", {"b": "lmdb", "a": "sqlite"}))
    assert error.key == "storage.data" and error.value == "x" and error.has_value
    assert error.message == 'no [store."x"] is defined; defined stores: a, b'
    (error,) = _storage_data_is_defined(FakeConfig("x", {}))
    assert error.message == 'no [store."x"] is defined; defined stores: none'
