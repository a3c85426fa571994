"""Managing the internal directory: the Python API the control plane and admin UI call.

Every change is one write batch that updates the record and its indexes together, guarded
by assertions (compare-and-set): two admins editing at once retry instead of corrupting.
Rules enforced here: a domain exists before its addresses; an address has one owner;
group members exist; names are unique (case-insensitively).
"""
from __future__ import annotations

import re
import secrets as secrets_module
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields

from stalwart_mp.auth import totp
from stalwart_mp.directory import internal
from stalwart_mp.directory.base import (
    AppPassword,
    DirectoryError,
    Principal,
    PrincipalType,
)
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.passwords import hash_password
from stalwart_mp.store.data import AssertionFailed, WriteBatch

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,254}")
_DOMAIN = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_LOCAL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")
_ROLE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_RETRIES = 20
_UPDATABLE = {"description", "quota_bytes", "quota_messages", "roles", "disabled", "members",
              "member_of", "emails"}

Notify = Callable[[str, dict], Awaitable[None]]


def normalize_address(address: str) -> str:
    """Lower-case and check an address ("@domain" = catch-all, "*" allowed as wildcard)."""
    address = address.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not _DOMAIN.fullmatch(domain):
        raise DirectoryError(f'"{address}" is not an e-mail address')
    if local and not _LOCAL.fullmatch(local.replace("*", "x").replace("?", "x")):
        raise DirectoryError(f'"{address}" is not an e-mail address')
    return address


class DirectoryManager:
    def __init__(self, directory: InternalDirectory, notify: Notify | None = None):
        self.directory = directory
        self.store = directory.store
        self._notify = notify

    async def _changed(self, event: str, name: str) -> None:
        if self._notify is not None:
            await self._notify("directory.changed", {"event": event, "name": name})

    # --- create ---------------------------------------------------------------------

    async def create_domain(self, domain: str, description: str = "") -> Principal:
        domain = domain.strip().lower().rstrip(".")
        if not _DOMAIN.fullmatch(domain):
            raise DirectoryError(f'"{domain}" is not a domain name')
        p = Principal(name=domain, type=PrincipalType.DOMAIN, description=description)
        return await self._create(p, extra_keys=[internal.domain_key(domain)])

    async def create_principal(
        self, name: str, type: PrincipalType = PrincipalType.INDIVIDUAL, *,
        password: str | None = None, emails: list[str] = (), description: str = "",
        quota_bytes: int = 0, quota_messages: int = 0, roles: list[str] | None = None,
        members: list[str] = (), member_of: list[str] = (), disabled: bool = False,
    ) -> Principal:
        try:
            type = PrincipalType(type)
        except ValueError:
            raise DirectoryError(f'"{type}" is not a principal type (individual, group, list, '
                                 "domain)") from None
        if type == PrincipalType.DOMAIN:
            return await self.create_domain(name, description)
        if not _NAME.fullmatch(name):
            raise DirectoryError(
                f'"{name}" is not a valid name (letters, digits and . _ @ + -, at most 255)')
        p = Principal(
            name=name, type=type, description=description, quota_bytes=quota_bytes,
            quota_messages=quota_messages,
            roles=list(roles if roles is not None else
                       (["user"] if type == PrincipalType.INDIVIDUAL else [])),
            disabled=disabled,
        )
        p.emails = [await self._checked_address(a) for a in emails]
        p.members = await self._checked_members(p, list(members))
        if password:
            self._set_secret(p, password)
        created = await self._create(p, extra_keys=[])
        if type == PrincipalType.GROUP:  # each member names its groups in member_of
            for member in p.members:
                await self._modify(member, lambda m: m.member_of.append(created.name)
                                   if created.name not in m.member_of else None)
        for group in member_of:
            await self.add_member(group, created.name)
        return await self.directory.principal(created.name) or created

    async def _create(self, p: Principal, extra_keys: list[bytes]) -> Principal:
        pid = await self.store.assign_id(internal.PRINCIPAL_SEQUENCE)
        p.id = pid
        p.created_at = p.updated_at = time.time()
        batch = WriteBatch()
        for key in extra_keys:  # checked first: "domain exists" says more than "name taken"
            batch.assert_value(key, None).put(key, pid.to_bytes(8, "big"))
        batch.assert_value(internal.name_key(p.name), None)
        batch.put(internal.name_key(p.name), pid.to_bytes(8, "big"))
        self._index_addresses(batch, p, p.emails)
        batch.put(internal.record_key(pid), internal.encode(p))
        try:
            await self.store.write(batch)
        except AssertionFailed as exc:
            raise DirectoryError(self._conflict(exc.key, p.name)) from None
        await self._changed("created", p.name)
        return p

    # --- update ---------------------------------------------------------------------

    async def update_principal(self, name: str, **changes) -> Principal:
        """Change fields (description, quotas, roles, disabled, emails, members)."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise DirectoryError("cannot change: " + ", ".join(sorted(unknown)))
        if "emails" in changes:
            changes["emails"] = [await self._checked_address(a) for a in changes["emails"]]
        if "members" in changes:
            current = await self._get(name)
            changes["members"] = await self._checked_members(current, list(changes["members"]))
        return await self._modify(name, lambda p: _apply(p, changes))

    async def update(
        self, name: str, *, description: str | None = None, add_emails: list[str] = (),
        remove_emails: list[str] = (), quota_bytes: int | None = None,
        quota_messages: int | None = None, roles: list[str] | None = None,
        disabled: bool | None = None, add_members: list[str] = (),
        remove_members: list[str] = (),
    ) -> Principal:
        """Several changes checked together first (addresses, members, roles), then written:
        the principal's record and its address index in one batch, then the ``member_of``
        of the group members added or removed."""
        p = await self._get(name)
        added = [await self._checked_address(a) for a in add_emails]
        removed = [a.strip().lower() for a in remove_emails]
        for address in removed:
            if address not in p.emails:
                raise DirectoryError(f'"{p.name}" has no address {address}')
        if roles is not None:
            bad = [r for r in roles if not _ROLE.fullmatch(r)]
            if bad:
                raise DirectoryError(f'role "{bad[0]}" is not a role name (letters, digits, '
                                     "_ and -)")
        if (add_members or remove_members) and p.type not in (PrincipalType.GROUP,
                                                              PrincipalType.LIST):
            raise DirectoryError(f'"{p.name}" is not a group or a list: it has no members')
        if p.type == PrincipalType.LIST:
            new_members = [normalize_address(m) for m in add_members]
            gone = [m.strip().lower() for m in remove_members]
        else:
            new_members, gone = list(add_members), list(remove_members)
            for m in new_members:
                if m == p.name:
                    raise DirectoryError(f'member "{m}" is the group itself')
                if await self.directory.principal(m) is None:
                    raise DirectoryError(f'member "{m}" is not a principal')
        for m in gone:
            if m not in p.members:
                raise DirectoryError(f'member "{m}" is not a member of "{p.name}"')

        def change(q: Principal) -> None:
            if description is not None:
                q.description = description
            if quota_bytes is not None:
                q.quota_bytes = quota_bytes
            if quota_messages is not None:
                q.quota_messages = quota_messages
            if roles is not None:
                q.roles = list(dict.fromkeys(roles))
            if disabled is not None:
                q.disabled = disabled
            q.emails = [a for a in q.emails if a not in removed]
            q.emails += [a for a in dict.fromkeys(added) if a not in q.emails]
            q.members = [m for m in q.members if m not in gone]
            q.members += [m for m in dict.fromkeys(new_members) if m not in q.members]

        await self._modify(name, change)
        if p.type == PrincipalType.GROUP:
            for m in new_members:
                await self._modify(m, lambda q: q.member_of.append(p.name)
                                   if p.name not in q.member_of else None)
            for m in gone:
                if await self.directory.principal(m) is not None:
                    await self._modify(m, lambda q: _drop(q.member_of, p.name))
        return await self._get(name)

    async def set_password(self, name: str, password: str) -> None:
        if not password:
            raise DirectoryError("the password must not be empty")
        await self._modify(name, lambda p: self._set_secret(p, password))

    async def replace_secret(self, name: str, old: str, new: str) -> None:
        """Swap one stored hash for another (rehash to argon2id after a login)."""
        def swap(p: Principal) -> None:
            p.secrets = [new if s == old else s for s in p.secrets]
        await self._modify(name, swap)

    def _set_secret(self, p: Principal, password: str) -> None:
        from stalwart_mp.auth.sasl import make_scram_secrets

        totp = p.totp_uri  # a new password keeps the second factor
        p.secrets = [hash_password(password)] + ([totp] if totp else [])
        p.scram = make_scram_secrets(password)

    async def enable_totp(self, name: str, issuer: str) -> str:
        """Give an account a new TOTP secret (replacing any previous one) and return its
        otpauth:// URI, to be shown once. From then on a password login needs
        ``password$code`` (directory/auth.py); app passwords keep working alone."""
        secret = totp.new_secret()
        uris: list[str] = []

        def enable(p: Principal) -> None:
            if p.type != PrincipalType.INDIVIDUAL:
                raise DirectoryError(f'"{p.name}" is a {p.type.value}, not an account')
            # labelled with the stored name (its case), which is what the user logs in with
            uris[:] = [totp.TotpKey(secret=secret, account=p.name,
                                    issuer=issuer.strip() or "stalwart-mp").uri()]
            p.secrets = [s for s in p.secrets if not totp.is_totp_uri(s)] + uris
        await self._modify(name, enable)
        return uris[0]

    async def disable_totp(self, name: str) -> None:
        """Remove the account's TOTP secret: its password alone logs in again."""
        def disable(p: Principal) -> None:
            if not p.has_totp:
                raise DirectoryError(f'"{p.name}" has no two-factor authentication')
            p.secrets = [s for s in p.secrets if not totp.is_totp_uri(s)]
        await self._modify(name, disable)

    async def add_app_password(self, name: str, label: str) -> str:
        """Create an app password; the generated secret is returned once, then only its
        hash is kept."""
        label = label.strip()
        if not label:
            raise DirectoryError("an app password needs a name")
        secret = "-".join(secrets_module.token_hex(2) for _ in range(4))  # 16 hex, grouped

        def add(p: Principal) -> None:
            if any(a.name == label for a in p.app_passwords):
                raise DirectoryError(f'"{p.name}" already has an app password named "{label}"')
            p.app_passwords.append(AppPassword(label, hash_password(secret)))
        await self._modify(name, add)
        return secret

    async def remove_app_password(self, name: str, label: str) -> None:
        def remove(p: Principal) -> None:
            before = len(p.app_passwords)
            p.app_passwords = [a for a in p.app_passwords if a.name != label]
            if len(p.app_passwords) == before:
                raise DirectoryError(f'"{p.name}" has no app password named "{label}"')
        await self._modify(name, remove)

    async def add_email(self, name: str, address: str) -> None:
        address = await self._checked_address(address)

        def add(p: Principal) -> None:
            if address not in p.emails:
                p.emails.append(address)
        await self._modify(name, add)

    async def remove_email(self, name: str, address: str) -> None:
        address = address.strip().lower()

        def remove(p: Principal) -> None:
            if address not in p.emails:
                raise DirectoryError(f'"{p.name}" has no address {address}')
            p.emails.remove(address)
        await self._modify(name, remove)

    async def add_member(self, group: str, member: str) -> None:
        g = await self._get(group)
        if g.type not in (PrincipalType.GROUP, PrincipalType.LIST):
            raise DirectoryError(f'"{group}" is not a group or a list')
        if g.type == PrincipalType.GROUP:
            if await self.directory.principal(member) is None:
                raise DirectoryError(f'no principal named "{member}"')
            await self._modify(member, lambda p: p.member_of.append(g.name)
                               if g.name not in p.member_of else None)
        await self._modify(group, lambda p: p.members.append(member)
                           if member not in p.members else None)

    async def remove_member(self, group: str, member: str) -> None:
        await self._modify(group, lambda p: _drop(p.members, member))
        if await self.directory.principal(member) is not None:
            await self._modify(member, lambda p: _drop(p.member_of, group))

    async def rename(self, old: str, new: str) -> Principal:
        if not _NAME.fullmatch(new):
            raise DirectoryError(f'"{new}" is not a valid name')
        for _ in range(_RETRIES):
            p = await self._get(old)
            raw = await self.store.get(internal.record_key(p.id))
            if p.type == PrincipalType.DOMAIN:
                raise DirectoryError("a domain cannot be renamed: create the new one")
            p.name = new
            p.updated_at = time.time()
            batch = WriteBatch()
            batch.assert_value(internal.record_key(p.id), raw)
            batch.assert_value(internal.name_key(new), None)
            batch.delete(internal.name_key(old))
            batch.put(internal.name_key(new), p.id.to_bytes(8, "big"))
            batch.put(internal.record_key(p.id), internal.encode(p))
            try:
                await self.store.write(batch)
            except AssertionFailed as exc:
                if exc.key == internal.name_key(new):
                    raise DirectoryError(f'a principal named "{new}" already exists') from None
                continue
            for group in p.member_of:
                await self._modify(group, lambda g: _replace(g.members, old, new))
            if p.type == PrincipalType.GROUP:  # its members name it in their member_of
                for member in p.members:
                    if await self.directory.principal(member) is not None:
                        await self._modify(member, lambda m: _replace(m.member_of, old, new))
            await self._changed("renamed", old)
            return p
        raise DirectoryError(f'"{old}" kept changing; try again')

    async def delete(self, name: str) -> None:
        """Delete a principal and its index entries (subscribers of the
        ``directory.changed`` event remove what belongs to it elsewhere, such as its mail)."""
        p = await self._get(name)
        if p.type == PrincipalType.DOMAIN:
            used = await self._addresses_in_domain(p.name)
            if used:
                raise DirectoryError(f'domain "{p.name}" still has addresses: '
                                     + ", ".join(used[:5]) + ("..." if len(used) > 5 else ""))
        for group in list(p.member_of):
            await self._modify(group, lambda g: _drop(g.members, p.name))
        if p.type == PrincipalType.GROUP:  # its members no longer belong to it
            for member in list(p.members):
                if await self.directory.principal(member) is not None:
                    await self._modify(member, lambda m: _drop(m.member_of, p.name))
        batch = WriteBatch()
        batch.delete(internal.name_key(p.name)).delete(internal.record_key(p.id))
        # the tombstone tells the queue process to purge what the principal owned (its mail)
        batch.put(internal.deleted_key(p.id), p.name.encode("utf-8"))
        if p.type == PrincipalType.DOMAIN:
            batch.delete(internal.domain_key(p.name))
        self._unindex_addresses(batch, p, p.emails)
        await self.store.write(batch)
        await self._changed("deleted", p.name)

    # --- helpers --------------------------------------------------------------------

    async def _get(self, name: str) -> Principal:
        p = await self.directory.principal(name)
        if p is None:
            raise DirectoryError(f'no principal named "{name}"')
        return p

    async def _modify(self, name: str, change: Callable[[Principal], object]) -> Principal:
        """Read-modify-write with a compare-and-set on the record, retried on conflict."""
        for _ in range(_RETRIES):
            pid = await self.directory.id_of(name)
            if pid is None:
                raise DirectoryError(f'no principal named "{name}"')
            raw = await self.store.get(internal.record_key(pid))
            if raw is None:
                continue
            p = internal.decode(pid, raw)
            old_emails = list(p.emails)
            change(p)
            p.updated_at = time.time()
            batch = WriteBatch().assert_value(internal.record_key(pid), raw)
            removed = [a for a in old_emails if a not in p.emails]
            added = [a for a in p.emails if a not in old_emails]
            self._unindex_addresses(batch, p, removed)
            self._index_addresses(batch, p, added)
            batch.put(internal.record_key(pid), internal.encode(p))
            try:
                await self.store.write(batch)
            except AssertionFailed as exc:
                if exc.key.startswith(bytes([internal.TAG_EMAIL])) or exc.key.startswith(
                        bytes([internal.TAG_WILDCARD])):
                    raise DirectoryError(self._conflict(exc.key, name)) from None
                continue
            await self._changed("updated", p.name)
            return p
        raise DirectoryError(f'"{name}" kept changing; try again')

    def _index_addresses(self, batch: WriteBatch, p: Principal, addresses) -> None:
        for address in addresses:
            key = (internal.wildcard_key(address) if internal.is_wildcard(address)
                   else internal.email_key(address))
            batch.assert_value(key, None).put(key, p.id.to_bytes(8, "big"))

    def _unindex_addresses(self, batch: WriteBatch, p: Principal, addresses) -> None:
        for address in addresses:
            batch.delete(internal.wildcard_key(address) if internal.is_wildcard(address)
                         else internal.email_key(address))

    async def _checked_address(self, address: str) -> str:
        address = normalize_address(address)
        domain = address.rsplit("@", 1)[1]
        if not await self.directory.is_local_domain(domain):
            raise DirectoryError(f'domain "{domain}" does not exist: create it first')
        return address

    async def _checked_members(self, p: Principal, members: list[str]) -> list[str]:
        if p.type == PrincipalType.LIST:
            return [normalize_address(m) for m in members]
        if members and p.type != PrincipalType.GROUP:
            raise DirectoryError(f'"{p.name}" is not a group or a list: it has no members')
        for m in members:
            if await self.directory.principal(m) is None:
                raise DirectoryError(f'member "{m}" is not a principal')
        return members

    async def _addresses_in_domain(self, domain: str) -> list[str]:
        suffix = "@" + domain
        rows = await self.store.range(bytes([internal.TAG_EMAIL]),
                                      bytes([internal.TAG_EMAIL + 1]), keys_only=True)
        found = [k[1:].decode() for k, _ in rows if k[1:].decode().endswith(suffix)]
        rows = await self.store.range(internal.wildcard_prefix(domain),
                                      internal.wildcard_prefix(domain) + b"\xff",
                                      keys_only=True)
        return found + [k[len(internal.wildcard_prefix(domain)):].decode() for k, _ in rows]

    def _conflict(self, key: bytes, name: str) -> str:
        tag, rest = key[0], key[1:].decode("utf-8", "replace")
        if tag == internal.TAG_NAME:
            return f'a principal named "{name}" already exists'
        if tag == internal.TAG_DOMAIN:
            return f'domain "{rest}" already exists'
        if tag == internal.TAG_EMAIL:
            return f"address {rest} already belongs to another principal"
        if tag == internal.TAG_WILDCARD:
            return f"address pattern {rest.split(chr(0))[-1]} already belongs to another principal"
        return f'"{name}" changed while being written; try again'


def _apply(p: Principal, changes: dict) -> None:
    valid = {f.name for f in fields(Principal)}
    for key, value in changes.items():
        assert key in valid
        setattr(p, key, list(value) if isinstance(value, list | tuple) else value)


def _drop(items: list[str], value: str) -> None:
    if value in items:
        items.remove(value)


def _replace(items: list[str], old: str, new: str) -> None:
    for i, v in enumerate(items):
        if v == old:
            items[i] = new
