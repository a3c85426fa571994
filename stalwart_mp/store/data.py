"""The data store contract: an ordered key-value store with transactions.

Every backend (LMDB, SQLite, PostgreSQL, MySQL/MariaDB, in-memory) implements this one
interface, so the whole mail model runs on any of them (ARCHITECTURE.md, "The four stores").

Keys are bytes: a one-byte subspace tag followed by big-endian fields, so that the order of
keys is memcmp order on every backend. Values are opaque bytes (msgpack or struct above).
Counters (``WriteBatch.add``) are stored as 8-byte big-endian signed integers.
"""
from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum


class StoreError(Exception):
    """A backend failed (connection lost, disk full...). The message names the store."""


class AssertionFailed(StoreError):
    """A write batch's assertion did not hold: nothing was written; re-read and retry."""

    def __init__(self, key: bytes):
        super().__init__(f"assertion failed on key {key!r}")
        self.key = key


class Op(Enum):
    PUT = 1
    DELETE = 2
    ADD = 3        # atomic add to an 8-byte big-endian signed counter (missing = 0)
    ASSERT = 4     # the key's current value must equal `value` (None = must be absent)


@dataclass(slots=True)
class WriteBatch:
    """Operations applied atomically, in order, by ``DataStore.write``.

    Assertions are checked inside the same transaction as the writes, so a batch is a
    compare-and-set: either every assertion holds and every write lands, or nothing does
    and ``AssertionFailed`` is raised.
    """

    ops: list[tuple[Op, bytes, bytes | int | None]] = field(default_factory=list)

    def put(self, key: bytes, value: bytes) -> WriteBatch:
        self.ops.append((Op.PUT, key, value))
        return self

    def delete(self, key: bytes) -> WriteBatch:
        self.ops.append((Op.DELETE, key, None))
        return self

    def add(self, key: bytes, delta: int) -> WriteBatch:
        self.ops.append((Op.ADD, key, delta))
        return self

    def assert_value(self, key: bytes, expected: bytes | None) -> WriteBatch:
        self.ops.append((Op.ASSERT, key, expected))
        return self

    def __len__(self) -> int:
        return len(self.ops)


def encode_counter(value: int) -> bytes:
    return value.to_bytes(8, "big", signed=True)


def decode_counter(raw: bytes | None) -> int:
    return 0 if raw is None else int.from_bytes(raw, "big", signed=True)


class DataStore(abc.ABC):
    """Async ordered key-value store. Open it in the process that uses it (after fork)."""

    name: str

    @abc.abstractmethod
    async def get(self, key: bytes) -> bytes | None: ...

    @abc.abstractmethod
    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values in the order of ``keys`` (None where absent)."""

    @abc.abstractmethod
    async def range(
        self,
        start: bytes,
        end: bytes,
        *,
        reverse: bool = False,
        limit: int | None = None,
        keys_only: bool = False,
    ) -> list[tuple[bytes, bytes | None]]:
        """Pairs with ``start <= key < end`` in key order (descending if ``reverse``).

        With ``keys_only`` the values are None (backends skip reading them).
        """

    @abc.abstractmethod
    async def write(self, batch: WriteBatch) -> None:
        """Apply the batch atomically and durably; raise AssertionFailed if one fails."""

    async def counter(self, key: bytes) -> int:
        return decode_counter(await self.get(key))

    @abc.abstractmethod
    async def assign_id(self, key: bytes) -> int:
        """Allocate the next id from the sequence at ``key`` (1, 2, 3...), durably.

        Concurrent callers in any process never receive the same id.
        """

    @abc.abstractmethod
    async def close(self) -> None: ...
