"""A per-worker cache of directory answers, dropped when the directory changes.

Principal lookups happen on every RCPT and login; a short TTL keeps them in memory. The
internal directory's management publishes ``directory.changed`` on the event bus; every
worker clears its cache on that event, so a changed password or removed address takes
effect at once everywhere. External directories (SQL, LDAP) change outside our sight: the
TTL bounds how stale an answer can be.
"""
from __future__ import annotations

import time
from typing import Any

from stalwart_mp.directory.base import Directory, Principal

TOPIC = "directory.changed"


class CachedDirectory(Directory):
    def __init__(self, inner: Directory, ttl: float = 30.0, max_entries: int = 50_000):
        self.inner = inner
        self.name = inner.name
        self.read_only = inner.read_only
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[tuple, tuple[float, Any]] = {}

    def attach(self, events) -> None:
        """Clear on every change published by any process."""
        events.subscribe(TOPIC, lambda _topic, _data: self.clear())

    def clear(self) -> None:
        self._entries.clear()

    async def _cached(self, key: tuple, fetch):
        hit = self._entries.get(key)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await fetch()
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (now + self.ttl, value)
        return value

    async def principal(self, name: str) -> Principal | None:
        return await self._cached(("p", name.lower()), lambda: self.inner.principal(name))

    async def names_by_email(self, address: str) -> list[str]:
        return await self._cached(("e", address), lambda: self.inner.names_by_email(address))

    async def wildcard_names(self, address: str) -> list[str]:
        return await self._cached(("w", address), lambda: self.inner.wildcard_names(address))

    async def is_local_domain(self, domain: str) -> bool:
        return await self._cached(("d", domain), lambda: self.inner.is_local_domain(domain))

    async def members(self, name: str) -> list[str]:
        return await self._cached(("m", name.lower()), lambda: self.inner.members(name))

    async def verify_password(self, principal: Principal, password: str) -> bool:
        return await self.inner.verify_password(principal, password)

    async def close(self) -> None:
        await self.inner.close()
