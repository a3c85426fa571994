"""The lookup store: expiring key-values and counters shared by the workers.

Greylisting, rate limits, reputation, bans, reply tracking and short locks all need the same
few operations on small keys that live for seconds to weeks (ARCHITECTURE.md, "The four
stores"). They are kept apart from the data store's model so a busy server can move them to
Redis or memcached without touching the mail data, while a single-machine server keeps them
in the data store it already has (LMDB by default: shared by every worker process).

Semantics shared by every backend (the conformance suite asserts them):

* Keys and values are bytes; keys are non-empty. Each backend maps long or binary keys onto
  what it can store (hashing them where it must), consistently across processes.
* ``ttl`` is in seconds (fractions allowed, > 0); ``None`` means the key never expires.
  Redis, the data store and memory keep milliseconds; memcached keeps whole seconds and rounds
  up, so a key there may outlive its TTL by up to two seconds but never expires early.
  An expired key is invisible at once (``get`` returns None), whenever it is actually freed.
* Counters (``incr``) are 64-bit signed integers; ``get`` reads one as its ASCII decimal
  form (b"42"), like Redis does. ``incr`` on a missing or expired key starts from 0 and sets
  ``ttl``; later increments keep the expiry the counter was created with, so a counter
  counts events within one period instead of living forever while it keeps being hit.
  Increments are atomic: concurrent processes never lose one.
* ``rate_limit`` is a fixed-window counter (see its docstring).
* Locks (``try_lock``/``unlock``) hold a random token under the key for ``ttl`` seconds: only
  the holder of that token can release it, and a lock whose holder died frees itself when its
  TTL runs out. Taking and releasing are atomic on every backend.
"""

from __future__ import annotations

import abc
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NewType

from stalwart_mp.store import lookup_settings  # noqa: F401 - declares url, servers, prefix
from stalwart_mp.store.data import DataStore, StoreError
from stalwart_mp.store.registry import open_data_store, parse_store_options
from stalwart_mp.store.types import store_kind

LockToken = NewType("LockToken", bytes)

COUNTER_MIN = -(2**63)
COUNTER_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class RateLimitResult:
    """Outcome of one ``rate_limit`` call.

    ``count`` is the number of calls in the current window including this one (denied calls
    count too); ``retry_after`` is the seconds until the window ends (0.0 when allowed).
    """

    allowed: bool
    count: int
    retry_after: float


class LookupStore(abc.ABC):
    """Async TTL key-value store with atomic counters and locks. Open it after fork."""

    name: str

    @abc.abstractmethod
    async def set(self, key: bytes, value: bytes, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` (replacing it and its expiry)."""

    @abc.abstractmethod
    async def get(self, key: bytes) -> bytes | None:
        """The value, or None when the key is missing or expired."""

    @abc.abstractmethod
    async def delete(self, key: bytes) -> bool:
        """Remove the key; True if it existed (and had not expired)."""

    @abc.abstractmethod
    async def incr(self, key: bytes, delta: int = 1, ttl: float | None = None) -> int:
        """Add ``delta`` atomically and return the new value.

        A missing or expired key starts at 0 and gets ``ttl``; an existing counter keeps its
        expiry (``ttl`` is ignored then). Raises StoreError if the key holds a non-counter
        value or the sum leaves the 64-bit signed range.
        """

    @abc.abstractmethod
    async def try_lock(self, key: bytes, ttl: float) -> LockToken | None:
        """Take the lock ``key`` for ``ttl`` seconds; its token, or None if someone holds it."""

    @abc.abstractmethod
    async def unlock(self, key: bytes, token: LockToken) -> bool:
        """Release the lock if ``token`` still holds it; False if it expired or is another's."""

    async def rate_limit(self, key: bytes, limit: int, window: float) -> RateLimitResult:
        """Count one event against ``limit`` events per ``window`` seconds.

        Algorithm: a fixed window aligned on the wall clock (window number =
        ``floor(now / window)``), counted with ``incr`` under ``key + b"\\x00" + number``.
        One atomic increment per call on every backend and no clock stored in the value,
        so all processes and servers (with synchronised clocks) agree on the window. The
        known cost of fixed windows: a client can pass ``limit`` calls at the end of one
        window and ``limit`` more at the start of the next (at most 2x the rate, briefly).
        Stalwart counts the same way.
        """
        check_key(key)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"rate limit must be a positive integer, got {limit!r}")
        check_ttl(window)
        now = time.time()
        number = int(now // window)
        ends = (number + 1) * window
        # Kept one second past the window's end to absorb clock skew between servers.
        count = await self.incr(
            key + b"\x00" + number.to_bytes(8, "big"), 1, ttl=ends - now + 1.0
        )
        if count <= limit:
            return RateLimitResult(True, count, 0.0)
        return RateLimitResult(False, count, max(ends - time.time(), 0.001))

    async def purge_expired(self) -> int:
        """Free the space of expired keys; the number removed.

        Only backends that keep expired keys until swept do work here (the data store,
        memory); Redis and memcached expire keys themselves and return 0.
        """
        return 0

    async def ping(self) -> None:
        """Raise StoreError naming the store if its server cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None: ...


# --- argument checks and encodings shared by the backends -------------------------------


def check_key(key: bytes) -> None:
    if not isinstance(key, bytes):
        raise TypeError(f"lookup key must be bytes, got {type(key).__name__}")
    if not key:
        raise ValueError("lookup key must not be empty")


def check_value(value: bytes) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"lookup value must be bytes, got {type(value).__name__}")


def check_ttl(ttl: float | None, *, required: bool = False) -> None:
    if ttl is None and not required:
        return
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")


def check_delta(delta: int) -> None:
    if isinstance(delta, bool) or not isinstance(delta, int):
        raise TypeError(f"incr delta must be an int, got {delta!r}")


def new_token() -> LockToken:
    """A lock token: 128 random bits, so two holders never share one."""
    return LockToken(os.urandom(16))


def parse_counter(key: bytes, raw: bytes | None) -> int:
    """The counter stored as ASCII decimal (0 when absent); StoreError if it is not one."""
    if raw is None:
        return 0
    try:
        return int(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise StoreError(f"lookup key {key!r} holds a value, not a counter") from None


def add_counter(key: bytes, current: int, delta: int) -> int:
    total = current + delta
    if not COUNTER_MIN <= total <= COUNTER_MAX:
        raise StoreError(f"counter {key!r} would overflow 64 bits ({total})")
    return total


# --- opening by name -----------------------------------------------------------------------


async def open_lookup_store(
    name: str, settings: Mapping[str, Any], data_store: DataStore | None = None
) -> LookupStore:
    """Open the lookup store ``name`` from its ``[store."NAME"]`` settings.

    ``memory``, ``redis`` and ``memcached`` get their own backend; a data-store type keeps
    the keys in that data store, reusing ``data_store`` when it is the same store (one LMDB
    environment, one connection pool) and opening it otherwise. Network backends are pinged
    here so a wrong address is reported at start-up. Call it in the process that uses the
    store (a worker, after fork): drivers are imported here, never in the master.
    """
    kind = store_kind(name, settings, "lookup")
    store: LookupStore
    try:
        if kind == "memory":
            from stalwart_mp.store.backends.memory_lookup import MemoryLookup

            return MemoryLookup(name)
        if kind == "redis":
            from stalwart_mp.store.backends.redis_lookup import RedisLookup

            o = parse_store_options(name, kind, settings)
            store = RedisLookup(
                name,
                o["url"],
                prefix=o["prefix"],
                timeout=o["timeout"],
                pool_size=o["pool-size"],
            )
        elif kind == "memcached":
            from stalwart_mp.store.backends.memcached_lookup import MemcachedLookup

            o = parse_store_options(name, kind, settings)
            store = MemcachedLookup(
                name,
                o["servers"],
                prefix=o["prefix"],
                timeout=o["timeout"],
                pool_size=o["pool-size"],
            )
        else:
            from stalwart_mp.store.backends.data_lookup import DataLookup

            if data_store is not None and data_store.name == name:
                return DataLookup(data_store, owns_store=False)
            return DataLookup(open_data_store(name, settings), owns_store=True)
    except ImportError as exc:
        raise StoreError(
            f'store "{name}": the {kind} backend needs the Python package "{exc.name}"; '
            "install stalwart-mp[backends]"
        ) from exc
    try:
        await store.ping()
    except BaseException:
        await store.close()
        raise
    return store
