"""The internal directory's records in the data store (principals by id and by name).

Key layout (one-byte subspace tag + big-endian fields, see ARCHITECTURE.md):
  0x10 | name (UTF-8)        -> principal id (8 bytes, big-endian)
  0x11 | id (8 bytes)        -> principal record (msgpack map)
  0x01 | b"principal"        -> id sequence (DataStore.assign_id)
The directory issue extends the record (emails, quotas, app passwords, members...); the
fields written here are the ones every principal has.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgpack

from stalwart_mp.store.data import AssertionFailed, DataStore, WriteBatch

TAG_SEQUENCE = 0x01
TAG_PRINCIPAL_BY_NAME = 0x10
TAG_PRINCIPAL = 0x11
PRINCIPAL_SEQUENCE = bytes([TAG_SEQUENCE]) + b"principal"


class PrincipalExists(Exception):
    pass


@dataclass(slots=True)
class Principal:
    name: str
    type: str = "individual"          # individual | group | list | domain
    secrets: list[str] = field(default_factory=list)   # password hashes ({ARGON2ID}...)
    roles: list[str] = field(default_factory=list)     # "admin", "user"
    emails: list[str] = field(default_factory=list)
    description: str = ""
    created_at: float = field(default_factory=time.time)
    id: int = 0

    def to_record(self) -> bytes:
        return msgpack.packb({
            "name": self.name, "type": self.type, "secrets": self.secrets,
            "roles": self.roles, "emails": self.emails, "description": self.description,
            "created_at": self.created_at,
        })

    @classmethod
    def from_record(cls, pid: int, raw: bytes) -> Principal:
        data = msgpack.unpackb(raw)
        return cls(id=pid, **{k: data[k] for k in (
            "name", "type", "secrets", "roles", "emails", "description", "created_at")})


def name_key(name: str) -> bytes:
    return bytes([TAG_PRINCIPAL_BY_NAME]) + name.lower().encode("utf-8")


def record_key(pid: int) -> bytes:
    return bytes([TAG_PRINCIPAL]) + pid.to_bytes(8, "big")


async def get_by_name(store: DataStore, name: str) -> Principal | None:
    raw_id = await store.get(name_key(name))
    if raw_id is None:
        return None
    pid = int.from_bytes(raw_id, "big")
    raw = await store.get(record_key(pid))
    return Principal.from_record(pid, raw) if raw is not None else None


async def create(store: DataStore, principal: Principal) -> Principal:
    """Store a new principal; PrincipalExists if the name is taken (atomic check)."""
    pid = await store.assign_id(PRINCIPAL_SEQUENCE)
    batch = WriteBatch()
    batch.assert_value(name_key(principal.name), None)
    batch.put(name_key(principal.name), pid.to_bytes(8, "big"))
    batch.put(record_key(pid), principal.to_record())
    try:
        await store.write(batch)
    except AssertionFailed:
        raise PrincipalExists(f'a principal named "{principal.name}" already exists') from None
    principal.id = pid
    return principal
