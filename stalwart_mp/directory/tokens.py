"""Bearer tokens issued by the server for an account (OAUTHBEARER / XOAUTH2, JMAP).

A token is 32 random bytes (URL-safe base64); the data store keeps only its SHA-256, under
  0x15 | sha256(token) -> msgpack {"name", "expires", "label", "issued"}
so a leaked database does not leak usable tokens. The OAuth web flow that hands tokens to
clients comes with the JMAP/web issues; this is the token API it will call.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import msgpack

from stalwart_mp.store.data import DataStore, WriteBatch

TAG_TOKEN = 0x15


def _key(token: str) -> bytes:
    return bytes([TAG_TOKEN]) + hashlib.sha256(token.encode()).digest()


@dataclass(slots=True)
class TokenInfo:
    name: str
    expires: float
    label: str
    issued: float


class TokenStore:
    def __init__(self, store: DataStore):
        self.store = store

    async def issue(self, name: str, ttl: float = 3600.0, label: str = "") -> str:
        token = secrets.token_urlsafe(32)
        now = time.time()
        record = msgpack.packb({"name": name, "expires": now + ttl, "label": label,
                                "issued": now})
        await self.store.write(WriteBatch().put(_key(token), record))
        return token

    async def verify(self, token: str) -> TokenInfo | None:
        """The token's account if it exists and has not expired."""
        if not token or len(token) > 512:
            return None
        raw = await self.store.get(_key(token))
        if raw is None:
            return None
        d = msgpack.unpackb(raw)
        if d["expires"] < time.time():
            await self.store.write(WriteBatch().delete(_key(token)))
            return None
        return TokenInfo(d["name"], d["expires"], d.get("label", ""), d.get("issued", 0.0))

    async def revoke(self, token: str) -> None:
        await self.store.write(WriteBatch().delete(_key(token)))

    async def purge_expired(self) -> int:
        start, end = bytes([TAG_TOKEN]), bytes([TAG_TOKEN + 1])
        now, removed = time.time(), 0
        batch = WriteBatch()
        for key, raw in await self.store.range(start, end):
            if msgpack.unpackb(raw)["expires"] < now:
                batch.delete(key)
                removed += 1
        if removed:
            await self.store.write(batch)
        return removed
