"""Lookup keys in Redis (redis-py's asyncio client): shared by every worker of every server.

The asyncio client speaks to Redis without blocking the event loop, so no thread pool is
needed. Connections come from a blocking pool of ``pool-size`` per process: a burst waits up
to ``timeout`` for a free connection instead of failing with "too many connections".

Keys are ``prefix + key`` (Redis keys are binary-safe, any length). TTLs are kept in
milliseconds (``SET ... PX``). Atomicity is Redis's own: each operation is one command or one
Lua script, which Redis runs without interleaving others.

* ``incr``: a script checks whether the key exists, ``INCRBY``s it and sets ``PEXPIRE`` only
  when it created the counter, so later increments keep the original expiry.
* ``try_lock``: ``SET key token NX PX ttl``; ``unlock``: a script deleting the key only if
  it still holds the token (compare-and-delete), so a holder whose lock expired and was
  taken by another can never release the new holder's lock.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from stalwart_mp.store.data import StoreError
from stalwart_mp.store.lookup import (
    LockToken,
    LookupStore,
    check_delta,
    check_key,
    check_ttl,
    check_value,
    new_token,
)

T = TypeVar("T")

_INCR = """
local created = redis.call('EXISTS', KEYS[1]) == 0
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if created and ARGV[2] ~= '0' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return total
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def ttl_ms(ttl: float) -> int:
    """Milliseconds for ``ttl`` seconds, rounded up so a key never expires early."""
    return max(1, math.ceil(ttl * 1000))


class RedisLookup(LookupStore):
    def __init__(
        self,
        name: str,
        url: str,
        *,
        prefix: str = "",
        timeout: float = 15.0,
        pool_size: int = 10,
    ) -> None:
        self.name = name
        self._prefix = prefix.encode()
        try:
            self._pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=pool_size,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
        except ValueError as exc:
            raise StoreError(f'store "{name}": url: {exc}') from None
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._incr = self._redis.register_script(_INCR)
        self._unlock = self._redis.register_script(_UNLOCK)

    def _where(self) -> str:
        """The server address for messages, without the credentials the URL may carry."""
        kw = self._pool.connection_kwargs
        if "path" in kw:
            return str(kw["path"])
        return f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"

    async def _call(self, what: str, key: bytes, op: Awaitable[T]) -> T:
        try:
            return await op
        except ResponseError as exc:
            if "not an integer" in str(exc) or "overflow" in str(exc):
                raise StoreError(
                    f'store "{self.name}": {what} {key!r}: the key holds no counter, or the '
                    f"sum leaves the 64-bit range ({exc})"
                ) from None
            raise StoreError(f'store "{self.name}": {what} {key!r}: {exc}') from None
        except RedisError as exc:
            raise StoreError(
                f'store "{self.name}": Redis at {self._where()} failed on {what}: {exc}'
            ) from None

    def _key(self, key: bytes) -> bytes:
        check_key(key)
        return self._prefix + key

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise StoreError(
                f'store "{self.name}": cannot connect to Redis at {self._where()}: {exc}'
            ) from None

    async def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        check_value(value)
        check_ttl(ttl)
        px = None if ttl is None else ttl_ms(ttl)
        await self._call("set", key, self._redis.set(self._key(key), value, px=px))

    async def get(self, key: bytes) -> bytes | None:
        value: Any = await self._call("get", key, self._redis.get(self._key(key)))
        return value

    async def delete(self, key: bytes) -> bool:
        return bool(await self._call("delete", key, self._redis.delete(self._key(key))))

    async def incr(self, key: bytes, delta: int = 1, ttl: float | None = None) -> int:
        check_delta(delta)
        check_ttl(ttl)
        px = 0 if ttl is None else ttl_ms(ttl)
        total = await self._call(
            "incr", key, self._incr(keys=[self._key(key)], args=[delta, px])
        )
        return int(total)

    async def try_lock(self, key: bytes, ttl: float) -> LockToken | None:
        check_ttl(ttl, required=True)
        token = new_token()
        taken = await self._call(
            "lock", key, self._redis.set(self._key(key), token, nx=True, px=ttl_ms(ttl))
        )
        return token if taken else None

    async def unlock(self, key: bytes, token: LockToken) -> bool:
        released = await self._call(
            "unlock", key, self._unlock(keys=[self._key(key)], args=[token])
        )
        return bool(released)

    async def close(self) -> None:
        await self._redis.aclose()
        await self._pool.disconnect()
