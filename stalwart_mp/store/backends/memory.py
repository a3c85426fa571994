"""In-memory data store: a dict plus a sorted key list (bisect) for ordered ranges.

One process only (each process would see its own copy): for tests and offline tools, never
for a prefork server. Nothing is durable. Every method runs to completion without awaiting
in between, so a batch is atomic with respect to every other coroutine of the event loop.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence

from stalwart_mp.store.backends.batch import (
    check_range,
    id_batch,
    keys_to_read,
    resolve,
    validate,
)
from stalwart_mp.store.data import DataStore, StoreError, WriteBatch, decode_counter


class MemoryStore(DataStore):
    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._values: dict[bytes, bytes] = {}
        self._keys: list[bytes] = []  # sorted, memcmp order (bytes compare like memcmp)
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f'store "{self.name}" is closed')

    async def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self._values.get(key)

    async def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        self._check_open()
        return [self._values.get(k) for k in keys]

    async def range(
        self,
        start: bytes,
        end: bytes,
        *,
        reverse: bool = False,
        limit: int | None = None,
        keys_only: bool = False,
    ) -> list[tuple[bytes, bytes | None]]:
        self._check_open()
        if not check_range(start, end, limit):
            return []
        lo = bisect_left(self._keys, start)
        hi = bisect_left(self._keys, end)
        if reverse:
            stop = lo if limit is None else max(lo, hi - limit)
            keys = self._keys[stop:hi][::-1]
        else:
            keys = self._keys[lo : hi if limit is None else min(hi, lo + limit)]
        if keys_only:
            return [(k, None) for k in keys]
        return [(k, self._values[k]) for k in keys]

    def _apply(self, batch: WriteBatch) -> dict[bytes, bytes | None]:
        self._check_open()
        validate(batch)
        current = {k: self._values.get(k) for k in keys_to_read(batch)}
        final = resolve(batch, current)  # raises before anything is changed
        for key, value in final.items():
            if value is None:
                if self._values.pop(key, None) is not None:
                    del self._keys[bisect_left(self._keys, key)]
            else:
                if key not in self._values:
                    insort(self._keys, key)
                self._values[key] = value
        return final

    async def write(self, batch: WriteBatch) -> None:
        self._apply(batch)

    async def assign_id(self, key: bytes) -> int:
        return decode_counter(self._apply(id_batch(key))[key])

    async def close(self) -> None:
        self._closed = True
        self._values.clear()
        self._keys.clear()
