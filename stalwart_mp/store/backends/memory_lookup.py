"""In-memory lookup store: a dict of (value, expiry) in this process only.

Each worker has its own: a rate limit or ban recorded by one worker is unknown to the
others, and everything is lost on restart. Use it for tests, tools and single-process
setups; a prefork server shares lookup keys through the data store, Redis or memcached.

Every method runs to completion without awaiting, so each operation (an increment, taking a
lock) is atomic with respect to the other coroutines of the event loop. Expiry uses the
monotonic clock: a wall-clock jump neither frees nor extends a key.
"""

from __future__ import annotations

import time

from stalwart_mp.store.data import StoreError
from stalwart_mp.store.lookup import (
    LockToken,
    LookupStore,
    add_counter,
    check_delta,
    check_key,
    check_ttl,
    check_value,
    new_token,
    parse_counter,
)


class MemoryLookup(LookupStore):
    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self._items: dict[bytes, tuple[bytes, float | None]] = {}  # key -> (value, expires)
        self._closed = False

    def _live(self, key: bytes) -> bytes | None:
        if self._closed:
            raise StoreError(f'store "{self.name}" is closed')
        check_key(key)
        item = self._items.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and expires <= time.monotonic():
            del self._items[key]
            return None
        return value

    def _put(self, key: bytes, value: bytes, ttl: float | None) -> None:
        self._items[key] = (value, None if ttl is None else time.monotonic() + ttl)

    async def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        check_value(value)
        check_ttl(ttl)
        self._live(key)
        self._put(key, value, ttl)

    async def get(self, key: bytes) -> bytes | None:
        return self._live(key)

    async def delete(self, key: bytes) -> bool:
        if self._live(key) is None:
            return False
        del self._items[key]
        return True

    async def incr(self, key: bytes, delta: int = 1, ttl: float | None = None) -> int:
        check_delta(delta)
        check_ttl(ttl)
        raw = self._live(key)
        total = add_counter(key, parse_counter(key, raw), delta)
        if raw is None:
            self._put(key, b"%d" % total, ttl)
        else:
            self._items[key] = (b"%d" % total, self._items[key][1])
        return total

    async def try_lock(self, key: bytes, ttl: float) -> LockToken | None:
        check_ttl(ttl, required=True)
        if self._live(key) is not None:
            return None
        token = new_token()
        self._put(key, token, ttl)
        return token

    async def unlock(self, key: bytes, token: LockToken) -> bool:
        if self._live(key) != token:
            return False
        del self._items[key]
        return True

    async def purge_expired(self) -> int:
        """Drop expired keys (memory is only freed here or when an expired key is read)."""
        now = time.monotonic()
        expired = [k for k, (_, exp) in self._items.items() if exp is not None and exp <= now]
        for key in expired:
            del self._items[key]
        return len(expired)

    async def close(self) -> None:
        self._closed = True
        self._items.clear()
