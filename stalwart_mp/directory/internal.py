"""The internal directory: principals kept in the data store.

Key layout (one-byte subspace tag + fields; ARCHITECTURE.md "The four stores"):
  0x01 | b"principal"              -> id sequence (DataStore.assign_id)
  0x10 | name (lower-case UTF-8)   -> principal id (8 bytes, big-endian)
  0x11 | id (8 bytes)              -> principal record (msgpack map)
  0x12 | address (lower-case)      -> id of its owner (one owner per address; "@dom" = catch-all)
  0x13 | domain (lower-case)       -> id of the domain principal
  0x14 | domain | 0x00 | pattern   -> id (wildcard aliases such as "sales-*@example.com")
  0x17 | id (8 bytes)             -> name: a deleted principal whose data (mail) is still to
                                     be purged by the queue process
Reads are here; writes (which keep these indexes consistent in one batch) are in
``directory/management.py``.
"""
from __future__ import annotations

import fnmatch

import msgpack

from stalwart_mp.directory.base import (
    AppPassword,
    Directory,
    Principal,
    PrincipalType,
    ScramSecret,
)
from stalwart_mp.store.data import DataStore

TAG_SEQUENCE = 0x01
TAG_NAME = 0x10
TAG_RECORD = 0x11
TAG_EMAIL = 0x12
TAG_DOMAIN = 0x13
TAG_WILDCARD = 0x14
TAG_DELETED = 0x17
PRINCIPAL_SEQUENCE = bytes([TAG_SEQUENCE]) + b"principal"


def deleted_key(pid: int) -> bytes:
    return bytes([TAG_DELETED]) + pid.to_bytes(8, "big")


def name_key(name: str) -> bytes:
    return bytes([TAG_NAME]) + name.lower().encode("utf-8")


def record_key(pid: int) -> bytes:
    return bytes([TAG_RECORD]) + pid.to_bytes(8, "big")


def email_key(address: str) -> bytes:
    return bytes([TAG_EMAIL]) + address.lower().encode("utf-8")


def domain_key(domain: str) -> bytes:
    return bytes([TAG_DOMAIN]) + domain.lower().encode("utf-8")


def wildcard_key(pattern: str) -> bytes:
    domain = pattern.rsplit("@", 1)[1]
    return wildcard_prefix(domain) + pattern.lower().encode("utf-8")


def wildcard_prefix(domain: str) -> bytes:
    return bytes([TAG_WILDCARD]) + domain.lower().encode("utf-8") + b"\x00"


def is_wildcard(address: str) -> bool:
    return "*" in address.split("@", 1)[0] or "?" in address.split("@", 1)[0]


# --- records -----------------------------------------------------------------------------


def encode(p: Principal) -> bytes:
    return msgpack.packb({
        "name": p.name, "type": p.type.value, "description": p.description,
        "secrets": p.secrets,
        "app_passwords": [[a.name, a.secret, a.created_at] for a in p.app_passwords],
        "scram": [[s.mechanism, s.salt, s.iterations, s.stored_key, s.server_key]
                  for s in p.scram],
        "emails": p.emails, "quota_bytes": p.quota_bytes, "quota_messages": p.quota_messages,
        "roles": p.roles, "member_of": p.member_of, "members": p.members,
        "disabled": p.disabled, "created_at": p.created_at, "updated_at": p.updated_at,
    })


def decode(pid: int, raw: bytes) -> Principal:
    d = msgpack.unpackb(raw)
    return Principal(
        id=pid, name=d["name"], type=PrincipalType(d["type"]),
        description=d.get("description", ""), secrets=d.get("secrets", []),
        app_passwords=[AppPassword(*a) for a in d.get("app_passwords", [])],
        scram=[ScramSecret(*s) for s in d.get("scram", [])],
        emails=d.get("emails", []), quota_bytes=d.get("quota_bytes", 0),
        quota_messages=d.get("quota_messages", 0), roles=d.get("roles", []),
        member_of=d.get("member_of", []), members=d.get("members", []),
        disabled=d.get("disabled", False), created_at=d.get("created_at", 0.0),
        updated_at=d.get("updated_at", 0.0),
    )


# --- the directory -----------------------------------------------------------------------


class InternalDirectory(Directory):
    read_only = False

    def __init__(self, store: DataStore, name: str = "internal"):
        self.store = store
        self.name = name

    async def principal_by_id(self, pid: int) -> Principal | None:
        raw = await self.store.get(record_key(pid))
        return decode(pid, raw) if raw is not None else None

    async def id_of(self, name: str) -> int | None:
        raw = await self.store.get(name_key(name))
        return int.from_bytes(raw, "big") if raw is not None else None

    async def principal(self, name: str) -> Principal | None:
        pid = await self.id_of(name)
        return await self.principal_by_id(pid) if pid is not None else None

    async def names_by_email(self, address: str) -> list[str]:
        raw = await self.store.get(email_key(address))
        if raw is None:
            return []
        p = await self.principal_by_id(int.from_bytes(raw, "big"))
        return [p.name] if p else []

    async def wildcard_names(self, address: str) -> list[str]:
        _, _, domain = address.lower().rpartition("@")
        prefix = wildcard_prefix(domain)
        names = []
        for key, value in await self.store.range(prefix, prefix + b"\xff"):
            pattern = key[len(prefix):].decode("utf-8")
            if fnmatch.fnmatchcase(address.lower(), pattern):
                p = await self.principal_by_id(int.from_bytes(value, "big"))
                if p:
                    names.append(p.name)
        return names

    async def is_local_domain(self, domain: str) -> bool:
        return await self.store.get(domain_key(domain)) is not None

    async def members(self, name: str) -> list[str]:
        p = await self.principal(name)
        return list(p.members) if p and p.type in (PrincipalType.GROUP,
                                                   PrincipalType.LIST) else []

    async def list_principals(self, *, type: PrincipalType | None = None, search: str = "",
                              after: str = "", limit: int = 100) -> list[Principal]:
        """Principals in name order, optionally of one type and containing ``search`` in
        their name, description or addresses; page with ``after`` (the last name seen)."""
        start = name_key(after) + b"\x00" if after else bytes([TAG_NAME])
        end = bytes([TAG_NAME + 1])
        out: list[Principal] = []
        needle = search.lower()
        while len(out) < limit:
            rows = await self.store.range(start, end, limit=200)
            if not rows:
                break
            for key, value in rows:
                p = await self.principal_by_id(int.from_bytes(value, "big"))
                if p is None or (type is not None and p.type != type):
                    continue
                if needle and needle not in " ".join(
                        [p.name, p.description, *p.emails]).lower():
                    continue
                out.append(p)
                if len(out) == limit:
                    break
            start = rows[-1][0] + b"\x00"
        return out
