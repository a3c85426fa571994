"""Numeric account ids for every directory.

The mail model keys everything by a 32-bit account id. The internal directory's principal
id is that id; principals of SQL and LDAP directories get one on first sight, kept in the
data store (as Stalwart does), so renaming the external backend's rows does not orphan mail:
  0x16 | name (lower-case) -> id (8 bytes), from the same sequence as internal principals.
"""
from __future__ import annotations

from stalwart_mp.directory.base import Principal
from stalwart_mp.directory.internal import PRINCIPAL_SEQUENCE
from stalwart_mp.store.data import AssertionFailed, DataStore, WriteBatch

TAG_EXTERNAL_ID = 0x16


def _key(name: str) -> bytes:
    return bytes([TAG_EXTERNAL_ID]) + name.lower().encode("utf-8")


async def account_id(data: DataStore, principal: Principal) -> int:
    if principal.id:
        return principal.id
    key = _key(principal.name)
    raw = await data.get(key)
    if raw is not None:
        return int.from_bytes(raw, "big")
    new_id = await data.assign_id(PRINCIPAL_SEQUENCE)
    try:
        await data.write(WriteBatch().assert_value(key, None).put(key, new_id.to_bytes(8, "big")))
    except AssertionFailed:  # another process mapped it first: use theirs
        raw = await data.get(key)
        assert raw is not None
        return int.from_bytes(raw, "big")
    return new_id
