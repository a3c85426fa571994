"""A random secret shared by every process and node of the server, kept in the data store.

Used where all workers must derive the same value without storing it per user: the
made-up SCRAM salts answered for unknown users (RFC 5802 §5.1) must be the same whichever
worker answers, or comparing salts across connections would reveal which users exist.
  0x18 | b"server-secret" -> 32 random bytes (created once, compare-and-set)
"""
from __future__ import annotations

import secrets

from stalwart_mp.store.data import AssertionFailed, DataStore, WriteBatch

KEY = bytes([0x18]) + b"server-secret"


async def server_secret(data: DataStore) -> bytes:
    value = await data.get(KEY)
    if value is not None:
        return value
    value = secrets.token_bytes(32)
    try:
        await data.write(WriteBatch().assert_value(KEY, None).put(KEY, value))
    except AssertionFailed:  # another process made it first: use theirs
        stored = await data.get(KEY)
        assert stored is not None
        return stored
    return value
