"""Lookup keys in memcached (pymemcache): shared by every worker of every server.

pymemcache is blocking, so each call runs on a small thread pool (``pool-size`` threads, as
many pooled connections) to keep the event loop free (CONVENTIONS.md §7). One server uses a
``PooledClient``; several use a ``HashClient`` (rendezvous hashing): a key lives on one
server, and while a server is failing its keys read as missing — memcached is a cache, so
counters and locks there are best effort across server failures.

Keys: memcached takes at most 250 bytes of printable ASCII without spaces. A key that fits
is sent as ``prefix + key``; any other (binary, long, or starting with "~") is sent as
``prefix + "~" + base64url(BLAKE2b-192(key))``, the same in every process.

Values carry a one-byte tag so ``get`` can tell them from counters: ``b"v" + value`` for
``set`` and locks. Counters use memcached's own atomic ``incr``/``decr``, which work on
unsigned decimal numbers and never touch the expiry: a counter is stored as its value plus
2**63 (so negative values work), and ``get`` returns it as signed ASCII decimal like every
other backend. ``decr`` saturates at the 64-bit minimum, ``incr`` wraps past the maximum.

TTLs: memcached counts whole seconds with a clock that ticks once a second, so a key stored
for n seconds may vanish after n-1. The expiry sent is ``ceil(ttl) + 1``: a key never expires
early and may outlive its TTL by up to two seconds. Beyond 30 days memcached reads the
expiry as a Unix time, so longer TTLs are sent as one.

Atomicity: ``incr`` is memcached's ``incr``, creating a missing counter with ``add`` (if two
processes race, one ``add`` fails and that one increments). ``try_lock`` is ``add`` (stored
only if absent or expired); ``unlock`` reads the lock with ``gets`` and, if it holds the
caller's token, replaces it by an already-expired item with ``cas``, which fails if anyone
changed it in between: a compare-and-delete.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pymemcache.client.base import Client, PooledClient
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheError

from stalwart_mp.store.data import StoreError
from stalwart_mp.store.lookup import (
    COUNTER_MIN,
    LockToken,
    LookupStore,
    check_delta,
    check_key,
    check_ttl,
    check_value,
    new_token,
)
from stalwart_mp.store.lookup_settings import split_server

T = TypeVar("T")

MAX_KEY = 250
RELATIVE_LIMIT = 30 * 86400  # larger expiry values are Unix times to memcached
OFFSET = -COUNTER_MIN  # 2**63: counter value + OFFSET is memcached's unsigned number
VALUE = b"v"
_PLAIN_KEY = re.compile(rb"[!-}][!-~]*")  # printable, no space, not starting with "~"
_INCR_ATTEMPTS = 100


def memcached_key(prefix: bytes, key: bytes) -> bytes:
    if len(prefix) + len(key) <= MAX_KEY and _PLAIN_KEY.fullmatch(key):
        return prefix + key
    digest = hashlib.blake2b(key, digest_size=24).digest()
    return prefix + b"~" + base64.urlsafe_b64encode(digest)


def expire_of(ttl: float | None) -> int:
    """memcached's exptime for ``ttl`` seconds: never early (see the module docstring)."""
    if ttl is None:
        return 0
    seconds = math.ceil(ttl) + 1
    if seconds > RELATIVE_LIMIT:
        return int(time.time()) + seconds
    return seconds


def decode(raw: bytes | None) -> bytes | None:
    """A stored item as the API shows it: the value, or a counter in signed decimal."""
    if raw is None or raw[:1] == VALUE:
        return None if raw is None else raw[1:]
    if raw.isdigit():
        return b"%d" % (int(raw) - OFFSET)
    return raw  # written by something else sharing the prefix: shown as is


class MemcachedLookup(LookupStore):
    def __init__(
        self,
        name: str,
        servers: list[str],
        *,
        prefix: str = "",
        timeout: float = 15.0,
        pool_size: int = 10,
    ) -> None:
        self.name = name
        self._prefix = prefix.encode("ascii")
        if len(self._prefix) > 100 or not re.fullmatch(rb"[!-~]*", self._prefix):
            raise StoreError(f'store "{name}": prefix = {prefix!r}: expected at most 100 '
                             "printable ASCII characters without spaces")
        try:
            self._servers = [split_server(s) for s in servers]
        except ValueError as exc:
            raise StoreError(f'store "{name}": servers: bad address {exc}') from None
        if not self._servers:
            raise StoreError(f'store "{name}": servers: at least one server is required')
        self._timeout = timeout
        common: dict[str, Any] = {
            "connect_timeout": timeout,
            "timeout": timeout,
            "no_delay": True,
            "max_pool_size": pool_size,
            "default_noreply": False,
        }
        self._client: PooledClient | HashClient
        if len(self._servers) == 1:
            self._client = PooledClient(self._servers[0], **common)
        else:
            self._client = HashClient(self._servers, use_pooling=True, **common)
        self._executor = ThreadPoolExecutor(pool_size, thread_name_prefix=f"memcached-{name}")

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (MemcacheError, OSError) as exc:
            raise StoreError(f'store "{self.name}": memcached failed on {what}: {exc}') from None
        except RuntimeError as exc:  # the executor was shut down
            raise StoreError(f'store "{self.name}" is closed ({exc})') from None

    def _key(self, key: bytes) -> bytes:
        check_key(key)
        return memcached_key(self._prefix, key)

    def _ping_sync(self) -> None:
        for host, port in self._servers:
            client = Client((host, port), connect_timeout=self._timeout, timeout=self._timeout)
            try:
                client.version()
            except (MemcacheError, OSError) as exc:
                raise StoreError(
                    f'store "{self.name}": cannot connect to memcached at {host}:{port}: {exc}'
                ) from None
            finally:
                client.close()

    async def ping(self) -> None:
        await self._run("ping", self._ping_sync)

    async def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        check_value(value)
        check_ttl(ttl)
        k = self._key(key)
        stored = await self._run("set", self._client.set, k, VALUE + value, expire_of(ttl))
        if not stored:
            raise StoreError(f'store "{self.name}": memcached did not store {key!r}')

    async def get(self, key: bytes) -> bytes | None:
        return decode(await self._run("get", self._client.get, self._key(key)))

    async def delete(self, key: bytes) -> bool:
        return bool(await self._run("delete", self._client.delete, self._key(key)))

    def _incr_sync(self, key: bytes, k: bytes, delta: int, expire: int) -> int:
        for _ in range(_INCR_ATTEMPTS):
            if delta >= 0:
                total = self._client.incr(k, delta)
            else:
                total = self._client.decr(k, -delta)
            if total is not None:
                return int(total) - OFFSET
            # Missing: create it; if another process created it first, increment theirs.
            if self._client.add(k, b"%d" % (OFFSET + delta), expire):
                return delta
        raise StoreError(f'store "{self.name}": counter {key!r} keeps disappearing')

    async def incr(self, key: bytes, delta: int = 1, ttl: float | None = None) -> int:
        check_delta(delta)
        check_ttl(ttl)
        if not COUNTER_MIN <= delta < OFFSET:
            raise StoreError(f"counter {key!r}: delta {delta} is outside the 64-bit range")
        try:
            return await self._run(
                "incr", self._incr_sync, key, self._key(key), delta, expire_of(ttl)
            )
        except StoreError as exc:
            if "non-numeric" in str(exc):
                raise StoreError(
                    f'store "{self.name}": lookup key {key!r} holds a value, not a counter'
                ) from None
            raise

    async def try_lock(self, key: bytes, ttl: float) -> LockToken | None:
        check_ttl(ttl, required=True)
        token = new_token()
        k = self._key(key)
        taken = await self._run("lock", self._client.add, k, VALUE + token, expire_of(ttl))
        return token if taken else None

    def _unlock_sync(self, k: bytes, token: LockToken) -> bool:
        value, cas = self._client.gets(k)
        if value != VALUE + token:
            return False
        # exptime -1: stored already expired, i.e. deleted, but only if ``cas`` still matches.
        return bool(self._client.cas(k, b"", cas, -1))

    async def unlock(self, key: bytes, token: LockToken) -> bool:
        return await self._run("unlock", self._unlock_sync, self._key(key), token)

    async def close(self) -> None:
        # Let running calls finish before their connections are closed under them.
        await asyncio.to_thread(self._executor.shutdown, True, cancel_futures=True)
        self._client.close()
