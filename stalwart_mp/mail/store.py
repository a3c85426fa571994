"""The one mailbox model that IMAP, POP3, JMAP and SMTP delivery all use.

Reads go straight to the data store; writes go through the process's ``GroupCommitter``.
Accounts are identified by the directory's principal id (``directory/ids.py`` maps names of
external directories to ids).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import msgpack

from stalwart_mp.mail import keys
from stalwart_mp.mail.commit import AccountTx, GroupCommitter
from stalwart_mp.mail.records import (
    DEFAULT_MAILBOXES,
    SEEN,
    AccountState,
    Change,
    Email,
    Mailbox,
)
from stalwart_mp.store.data import DataStore


class MailError(Exception):
    """A request the model refuses (the message says why)."""


class QuotaExceeded(MailError):
    pass


class NoSuchMailbox(MailError):
    pass


@dataclass(slots=True)
class Quota:
    bytes: int = 0      # 0 = unlimited
    messages: int = 0


@dataclass(slots=True)
class AppendResult:
    email_id: int
    thread_id: int
    uids: dict[int, int]       # mailbox id -> UID
    modseq: int


class MailStore:
    def __init__(self, data: DataStore, committer: GroupCommitter):
        self.data = data
        self.committer = committer

    # --- accounts -------------------------------------------------------------------

    async def ensure_account(self, acct: int) -> None:
        """Create the account's state and default folders on first use (idempotent)."""
        if await self.data.get(keys.account(acct)) is not None:
            return

        async def create(tx: AccountTx) -> None:
            if tx.exists:
                return
            tx.modseq()
            for name, role in DEFAULT_MAILBOXES:
                _new_mailbox(tx, name, 0, role)

        await self.committer.run(acct, create, create=True)

    async def state(self, acct: int) -> AccountState | None:
        return AccountState.unpack(await self.data.get(keys.account(acct)))

    # --- mailboxes ------------------------------------------------------------------

    async def mailboxes(self, acct: int) -> list[Mailbox]:
        prefix = keys.mailbox_prefix(acct)
        return [Mailbox.unpack(keys.tail_u32(k), v)
                for k, v in await self.data.range(prefix, keys.end_of(prefix))]

    async def mailbox(self, acct: int, mid: int) -> Mailbox | None:
        raw = await self.data.get(keys.mailbox(acct, mid))
        return Mailbox.unpack(mid, raw) if raw else None

    async def mailbox_by_role(self, acct: int, role: str) -> Mailbox | None:
        return next((m for m in await self.mailboxes(acct) if m.role == role), None)

    async def create_mailbox(self, acct: int, name: str, parent_id: int = 0,
                             role: str | None = None) -> Mailbox:
        name = name.strip()
        if not name or "/" in name and parent_id:
            raise MailError(f'"{name}" is not a valid mailbox name')

        async def create(tx: AccountTx) -> Mailbox:
            await _check_name_free(self, tx, name, parent_id)
            if role and any(m.role == role for m in await self.mailboxes(acct)):
                raise MailError(f'a mailbox with role "{role}" already exists')
            return _new_mailbox(tx, name, parent_id, role)

        return await self.committer.run(acct, create)

    async def update_mailbox(self, acct: int, mid: int, *, name: str | None = None,
                             parent_id: int | None = None, subscribed: bool | None = None,
                             sort_order: int | None = None, role: str | None = None
                             ) -> Mailbox:
        async def update(tx: AccountTx) -> Mailbox:
            m = await tx.mailbox(mid)
            if m is None:
                raise NoSuchMailbox(f"no mailbox {mid}")
            if name is not None or parent_id is not None:
                new_parent = m.parent_id if parent_id is None else parent_id
                new_name = m.name if name is None else name.strip()
                if (new_name, new_parent) != (m.name, m.parent_id):
                    if new_parent == mid or await _is_descendant(self, acct, new_parent, mid):
                        raise MailError("a mailbox cannot be moved under itself")
                    await _check_name_free(self, tx, new_name, new_parent)
                m.name, m.parent_id = new_name, new_parent
            if subscribed is not None:
                m.subscribed = subscribed
            if sort_order is not None:
                m.sort_order = sort_order
            if role is not None:
                m.role = role or None
            tx.put_mailbox(m)
            return m

        return await self.committer.run(acct, update)

    async def delete_mailbox(self, acct: int, mid: int, *, remove_emails: bool = False) -> None:
        """Delete a mailbox; its messages go with it (those in no other mailbox are
        destroyed) when ``remove_emails``, else it must be empty. Children block it."""
        async def delete(tx: AccountTx) -> None:
            m = await tx.mailbox(mid)
            if m is None:
                raise NoSuchMailbox(f"no mailbox {mid}")
            if any(c.parent_id == mid for c in await self.mailboxes(acct)):
                raise MailError(f'mailbox "{m.name}" has child mailboxes')
            entries = await self.uid_index(acct, mid)
            if entries and not remove_emails:
                raise MailError(f'mailbox "{m.name}" is not empty')
            for uid_, eid in entries:
                await _remove_from_mailbox(tx, mid, uid_, eid)
            prefix = keys.annotation_prefix(acct, mid)  # its METADATA entries go too
            for key, _ in await self.data.range(prefix, keys.end_of(prefix), keys_only=True):
                tx.put(key, None)
            prefix = keys.shared_by_prefix(acct, mid)  # and its sharing index entries
            for key, _ in await self.data.range(prefix, keys.end_of(prefix), keys_only=True):
                tx.put(key, None)
                tx.put(keys.shared(keys.tail_u32(key), acct, mid), None)
            tx.delete_mailbox(mid)

        await self.committer.run(acct, delete)

    # --- emails ---------------------------------------------------------------------

    async def append(self, acct: int, mailbox_ids: list[int], *, blob_id: str, size: int,
                     metadata: dict, keywords: Iterable[str] = (),
                     received_at: float | None = None, quota: Quota | None = None,
                     message_id: str | None = None, references: list[str] = (),
                     expect: Callable[[Mailbox], bool] | None = None) -> AppendResult:
        """Store a message (its blob already put) in the given mailboxes.

        ``expect``: checked against each mailbox inside the transaction; NoSuchMailbox if it
        says no (delivery chose the mailbox from a cache and must choose again).
        """
        received_at = received_at if received_at is not None else time.time()
        keywords = sorted({k.lower() for k in keywords})
        meta_raw = msgpack.packb(metadata)

        async def append(tx: AccountTx) -> AppendResult:
            state = tx.state
            if quota is not None:
                if quota.bytes and state.used_bytes + size > quota.bytes:
                    raise QuotaExceeded(
                        f"over quota: {state.used_bytes + size} of {quota.bytes} bytes")
                if quota.messages and state.used_count + 1 > quota.messages:
                    raise QuotaExceeded(f"over quota: {quota.messages} messages")
            eid = state.next_email_id
            state.next_email_id += 1
            thread_id = await _thread_for(tx, acct, eid, message_id, references)
            email = Email(eid, blob_id, thread_id, received_at, size, list(keywords))
            now = time.time()
            for mid in dict.fromkeys(mailbox_ids):
                m = await tx.mailbox(mid)
                if m is None or (expect is not None and not expect(m)):
                    raise NoSuchMailbox(f"no mailbox {mid}")
                email.mailboxes[mid] = m.uidnext
                email.saved_at[mid] = now
                tx.put(keys.uid(acct, mid, m.uidnext), keys.u32(eid))
                m.uidnext += 1
                _count(m, email, +1)
                tx.put_mailbox(m)
            state.used_bytes += size
            state.used_count += 1
            tx.put_email(email, created=True)
            tx.put(keys.metadata(acct, eid), meta_raw)
            tx.put(keys.fts_pending(acct, eid), b"i")
            tx.link_blob(blob_id, eid)
            return AppendResult(eid, thread_id, dict(email.mailboxes), tx.modseq())

        return await self.committer.run(acct, append)

    async def set_keywords(self, acct: int, email_ids: Iterable[int], *,
                           add: Iterable[str] = (), remove: Iterable[str] = (),
                           replace: Iterable[str] | None = None,
                           unchanged_since: int | None = None) -> tuple[int, list[int]]:
        """Change keywords; returns (modseq, ids not changed because modified after
        ``unchanged_since`` — RFC 7162 §3.1.3 UNCHANGEDSINCE)."""
        add_set = {k.lower() for k in add}
        remove_set = {k.lower() for k in remove}
        replace_set = None if replace is None else {k.lower() for k in replace}
        ids = list(email_ids)

        async def update(tx: AccountTx) -> tuple[int, list[int]]:
            failed = []
            for eid in ids:
                email = await tx.email(eid)
                if email is None:
                    continue
                if unchanged_since is not None and email.modseq > unchanged_since:
                    failed.append(eid)
                    continue
                old = set(email.keywords)
                new = set(replace_set) if replace_set is not None else (old | add_set) - \
                    remove_set
                if new == old:
                    continue
                was_seen = SEEN in old
                email.keywords = sorted(new)
                for mid in email.mailboxes:
                    m = await tx.mailbox(mid)
                    if m is not None and was_seen != (SEEN in new):
                        m.unseen += 1 if was_seen else -1
                    if m is not None:
                        tx.put_mailbox(m)
                tx.put_email(email)
            return (tx.modseq() if tx.change.emails_updated else tx.state.modseq), failed

        return await self.committer.run(acct, update)

    async def copy(self, acct: int, email_ids: Iterable[int], dest: int,
                   quota: Quota | None = None) -> dict[int, int]:
        """Add emails to mailbox ``dest`` (one stored message, one more membership; the
        model is JMAP-native). Returns email id -> new UID."""
        ids = list(email_ids)

        async def copy_(tx: AccountTx) -> dict[int, int]:
            m = await tx.mailbox(dest)
            if m is None:
                raise NoSuchMailbox(f"no mailbox {dest}")
            out = {}
            now = time.time()
            for eid in ids:
                email = await tx.email(eid)
                if email is None:
                    continue
                if dest in email.mailboxes:
                    # already there: IMAP COPY still creates a new UID (RFC 9051 §6.4.7)
                    tx.put(keys.uid(acct, dest, email.mailboxes[dest]), None)
                    _count(m, email, -1)
                email.mailboxes[dest] = m.uidnext
                email.saved_at[dest] = now
                tx.put(keys.uid(acct, dest, m.uidnext), keys.u32(eid))
                out[eid] = m.uidnext
                m.uidnext += 1
                _count(m, email, +1)
                tx.put_email(email)
            tx.put_mailbox(m)
            return out

        return await self.committer.run(acct, copy_)

    async def move(self, acct: int, email_ids: Iterable[int], source: int, dest: int
                   ) -> dict[int, tuple[int, int]]:
        """Move emails from ``source`` to ``dest`` atomically (RFC 6851).
        Returns email id -> (old UID, new UID)."""
        ids = list(email_ids)

        async def move_(tx: AccountTx) -> dict[int, tuple[int, int]]:
            src, dst = await tx.mailbox(source), await tx.mailbox(dest)
            if src is None or dst is None:
                raise NoSuchMailbox(f"no mailbox {source if src is None else dest}")
            out = {}
            now = time.time()
            for eid in ids:
                email = await tx.email(eid)
                if email is None or source not in email.mailboxes:
                    continue
                old_uid = email.mailboxes.pop(source)
                email.saved_at.pop(source, None)
                tx.put(keys.uid(acct, source, old_uid), None)
                _count(src, email, -1)
                if dest in email.mailboxes:
                    tx.put(keys.uid(acct, dest, email.mailboxes[dest]), None)
                    _count(dst, email, -1)
                email.mailboxes[dest] = dst.uidnext
                email.saved_at[dest] = now
                tx.put(keys.uid(acct, dest, dst.uidnext), keys.u32(eid))
                out[eid] = (old_uid, dst.uidnext)
                dst.uidnext += 1
                _count(dst, email, +1)
                tx.put_email(email)
            tx.put_mailbox(src)
            tx.put_mailbox(dst)
            return out

        return await self.committer.run(acct, move_)

    async def remove_from_mailbox(self, acct: int, mid: int, uids: Iterable[int]) -> list[int]:
        """Expunge: take messages out of a mailbox; a message in no mailbox any more is
        destroyed (its blob unlinked, collected later). Returns the UIDs removed."""
        wanted = list(uids)

        async def expunge(tx: AccountTx) -> list[int]:
            if await tx.mailbox(mid) is None:
                raise NoSuchMailbox(f"no mailbox {mid}")
            removed = []
            for uid_ in wanted:
                raw = await tx.get(keys.uid(acct, mid, uid_))
                if raw is None:
                    continue
                await _remove_from_mailbox(tx, mid, uid_, int.from_bytes(raw, "big"))
                removed.append(uid_)
            return removed

        return await self.committer.run(acct, expunge)

    async def destroy(self, acct: int, email_ids: Iterable[int]) -> list[int]:
        ids = list(email_ids)

        async def destroy_(tx: AccountTx) -> list[int]:
            done = []
            for eid in ids:
                email = await tx.email(eid)
                if email is None:
                    continue
                for mid, uid_ in list(email.mailboxes.items()):
                    await _remove_from_mailbox(tx, mid, uid_, eid)
                done.append(eid)
            return done

        return await self.committer.run(acct, destroy_)

    # --- reads ----------------------------------------------------------------------

    async def uid_index(self, acct: int, mid: int) -> list[tuple[int, int]]:
        """(UID, email id) of a mailbox's messages in UID order."""
        prefix = keys.uid_prefix(acct, mid)
        rows = await self.data.range(prefix, keys.end_of(prefix))
        return [(keys.tail_u32(k), int.from_bytes(v, "big")) for k, v in rows]

    async def emails(self, acct: int, email_ids: list[int]) -> list[Email | None]:
        raws = await self.data.get_many([keys.email(acct, e) for e in email_ids])
        return [Email.unpack(e, r) if r else None for e, r in zip(email_ids, raws,
                                                                   strict=True)]

    async def email(self, acct: int, eid: int) -> Email | None:
        return (await self.emails(acct, [eid]))[0]

    async def metadata(self, acct: int, eid: int) -> dict | None:
        raw = await self.data.get(keys.metadata(acct, eid))
        return msgpack.unpackb(raw, strict_map_key=False) if raw else None

    async def all_email_ids(self, acct: int) -> list[int]:
        prefix = keys.email_prefix(acct)
        rows = await self.data.range(prefix, keys.end_of(prefix), keys_only=True)
        return [keys.tail_u32(k) for k, _ in rows]

    # --- annotations (RFC 5464 METADATA) -----------------------------------------------

    async def annotations(self, acct: int, mid: int) -> dict[str, bytes]:
        """Every METADATA entry of mailbox ``mid`` (0: the account's server entries)."""
        prefix = keys.annotation_prefix(acct, mid)
        rows = await self.data.range(prefix, keys.end_of(prefix))
        return {k[len(prefix):].decode("utf-8"): v for k, v in rows}

    async def set_annotations(self, acct: int, mid: int, values: dict[str, bytes | None],
                              max_entries: int = 0) -> None:
        """Set (None: remove) entries; refused when the mailbox would hold more than
        ``max_entries`` (0 = no limit) or does not exist."""
        async def update(tx: AccountTx) -> None:
            if mid and await tx.mailbox(mid) is None:
                raise NoSuchMailbox(f"no mailbox {mid}")
            current = await self.annotations(acct, mid)
            after = set(current) | {k for k, v in values.items() if v is not None}
            after -= {k for k, v in values.items() if v is None}
            if max_entries and len(after) > max_entries:
                raise MailError(f"too many annotations: {len(after)} of {max_entries}")
            for entry, value in values.items():
                tx.put(keys.annotation(acct, mid, entry), value)

        await self.committer.run(acct, update)

    # --- sharing (RFC 4314 ACL) --------------------------------------------------------

    async def set_acl(self, acct: int, mid: int, grantee: str, grantee_id: int,
                      rights: str | None, owner_name: str = "") -> Mailbox:
        """Grant ``rights`` on mailbox ``mid`` to account ``grantee`` (None or "": revoke),
        in the mailbox record and in the grantee's index of shared mailboxes (which keeps
        the owner's name, for the grantee's listing)."""
        async def update(tx: AccountTx) -> Mailbox:
            m = await tx.mailbox(mid)
            if m is None:
                raise NoSuchMailbox(f"no mailbox {mid}")
            if rights:
                m.acl[grantee] = rights
                tx.put(keys.shared(grantee_id, acct, mid),
                       f"{rights}\x00{owner_name}".encode())
                tx.put(keys.shared_by(acct, mid, grantee_id), b"")
            else:
                m.acl.pop(grantee, None)
                tx.put(keys.shared(grantee_id, acct, mid), None)
                tx.put(keys.shared_by(acct, mid, grantee_id), None)
            tx.put_mailbox(m)
            return m

        return await self.committer.run(acct, update)

    async def shared_with(self, grantee_id: int) -> list[tuple[int, int, str, str]]:
        """(owner account, mailbox id, rights, owner name) of every mailbox shared with an
        account."""
        prefix = keys.shared_prefix(grantee_id)
        rows = await self.data.range(prefix, keys.end_of(prefix))
        out = []
        for k, v in rows:
            rights, _, owner = v.decode().partition("\x00")
            out.append((int.from_bytes(k[5:9], "big"), keys.tail_u32(k), rights, owner))
        return out

    async def changes(self, acct: int, since: int, limit: int | None = None) -> list[Change]:
        """Changes after modseq ``since``, oldest first."""
        prefix = keys.change_prefix(acct)
        rows = await self.data.range(keys.change(acct, since + 1), keys.end_of(prefix),
                                     limit=limit)
        return [Change.unpack(keys.tail_u64(k), v) for k, v in rows]


# --- helpers used inside transactions ------------------------------------------------


def _new_mailbox(tx: AccountTx, name: str, parent_id: int, role: str | None) -> Mailbox:
    state = tx.state
    mid = state.next_mailbox_id
    state.next_mailbox_id += 1
    # UIDVALIDITY must change if a name is ever reused for a new mailbox (RFC 9051 §2.3.1.1):
    # derive it from time and the id, so a recreated mailbox gets a new one.
    uidvalidity = (int(time.time()) + mid) & 0x7FFFFFFF or 1
    m = Mailbox(mid, name, parent_id, role, uidvalidity=uidvalidity)
    tx.put_mailbox(m, created=True)
    return m


async def _check_name_free(store: MailStore, tx: AccountTx, name: str, parent_id: int) -> None:
    current = {m.id: m for m in await store.mailboxes(tx.acct)}
    current.update(tx.staged_mailboxes())  # including mailboxes made earlier in this round
    for m in current.values():
        if m.parent_id == parent_id and m.name.lower() == name.lower():
            raise MailError(f'a mailbox named "{name}" already exists there')
    if parent_id and await tx.mailbox(parent_id) is None:
        raise NoSuchMailbox(f"no parent mailbox {parent_id}")


async def _is_descendant(store: MailStore, acct: int, mid: int, ancestor: int) -> bool:
    by_id = {m.id: m for m in await store.mailboxes(acct)}
    seen = set()
    while mid and mid not in seen:
        if mid == ancestor:
            return True
        seen.add(mid)
        mid = by_id[mid].parent_id if mid in by_id else 0
    return False


def _count(m: Mailbox, email: Email, sign: int) -> None:
    m.total += sign
    m.size += sign * email.size
    if not email.seen:
        m.unseen += sign


async def _remove_from_mailbox(tx: AccountTx, mid: int, uid_: int, eid: int) -> None:
    acct = tx.acct
    tx.put(keys.uid(acct, mid, uid_), None)
    email = await tx.email(eid)
    m = await tx.mailbox(mid)
    if email is None:
        return
    email.mailboxes.pop(mid, None)
    email.saved_at.pop(mid, None)
    if m is not None:
        _count(m, email, -1)
        tx.put_mailbox(m)
    if email.mailboxes:
        tx.put_email(email)
    else:
        tx.state.used_bytes -= email.size
        tx.state.used_count -= 1
        tx.destroy_email(email)


async def _thread_for(tx: AccountTx, acct: int, eid: int, message_id: str | None,
                      references: list[str]) -> int:
    """Thread by references (JMAP threads, RFC 8621 §3): the thread of any referenced
    message, else a new thread named after this email."""
    thread_id = None
    for ref in reversed(list(references)):
        raw = await tx.get(keys.thread(acct, ref))
        if raw is not None:
            thread_id = int.from_bytes(raw, "big")
            break
    if thread_id is None and message_id:
        raw = await tx.get(keys.thread(acct, message_id))  # a reply stored before us
        thread_id = int.from_bytes(raw, "big") if raw is not None else None
    thread_id = thread_id or eid
    for mid_ in [message_id, *references]:
        if mid_ and await tx.get(keys.thread(acct, mid_)) is None:
            tx.put(keys.thread(acct, mid_), keys.u32(thread_id))
    return thread_id


async def delete_account(mail: MailStore, acct: int, chunk: int = 500) -> int:
    """Remove everything an account owns: its messages (blobs unlinked for collection,
    full-text entries removed by the indexer), mailboxes, change log and thread index.
    Returns the number of messages destroyed."""
    destroyed = 0
    while ids := await mail.all_email_ids(acct):
        for i in range(0, len(ids), chunk):
            destroyed += len(await mail.destroy(acct, ids[i:i + chunk]))
    from stalwart_mp.store.data import WriteBatch

    batch = WriteBatch()
    for prefix in (keys.mailbox_prefix(acct), keys.change_prefix(acct),
                   bytes([keys.THREAD]) + keys.u32(acct),
                   bytes([keys.ANNOTATION]) + keys.u32(acct),
                   bytes([keys.SHARED]) + keys.u32(acct),
                   bytes([keys.SHARED_BY]) + keys.u32(acct),
                   bytes([keys.UID]) + keys.u32(acct)):
        for key, _ in await mail.data.range(prefix, keys.end_of(prefix), keys_only=True):
            batch.delete(key)
    batch.delete(keys.account(acct))
    await mail.data.write(batch)
    return destroyed
