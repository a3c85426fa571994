"""Group commit: many sessions' mail writes in one durable transaction.

Callers hand an operation (an async function of an ``AccountTx``) to ``GroupCommitter.run``.
While one commit is being made durable, new operations queue up; the next round runs them
all, in arrival order, against one transaction view per account, writes everything as one
batch (one fsync) and only then resolves every caller's future. So 50 concurrent deliveries
cost a handful of fsyncs, not 50 — without acknowledging anything before it is durable
(ARCHITECTURE.md, "Durability promise"; Postfix and Dovecot reach the same by other means).

Consistency: each account's state record (modseq, id counters, usage) is read first and
asserted at commit, and every write bumps the modseq, so writers in other processes
serialize per account by compare-and-set; on a conflict the whole round is re-run on fresh
reads. An operation that raises is rolled back alone; the others of its round still commit.
"""
from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from stalwart_mp.mail import keys
from stalwart_mp.mail.records import AccountState, Change, Email, Mailbox
from stalwart_mp.store.data import AssertionFailed, DataStore, WriteBatch

log = logging.getLogger("stalwart_mp.mail")
T = TypeVar("T")
MAX_ROUND = 512          # operations merged into one commit at most
MAX_CONFLICT_RETRIES = 50


class AccountMissing(Exception):
    """The account has no mail state yet (``MailStore.ensure_account`` creates it)."""


@dataclass(slots=True)
class _Staged:
    state: AccountState
    mailboxes: dict[int, Mailbox] = field(default_factory=dict)
    emails: dict[int, Email | None] = field(default_factory=dict)   # None = destroyed
    puts: dict[bytes, bytes | None] = field(default_factory=dict)    # raw writes (None = delete)
    links: list[tuple[str, bytes, bool]] = field(default_factory=list)  # (blob, owner, link?)
    change: Change = field(default_factory=lambda: Change(0))
    touched: bool = False

    def clone(self) -> _Staged:
        """A copy for rollback. The record dicts are copied shallow: the records themselves
        stay shared until the next operation touches one, which gets its own copy then
        (``AccountTx.mailbox``/``email``), so a snapshot costs O(1) Python work per
        operation instead of cloning everything the round staged so far. Raw bytes and
        link tuples are immutable."""
        c = self.change
        return _Staged(
            state=copy.copy(self.state),
            mailboxes=dict(self.mailboxes),
            emails=dict(self.emails),
            puts=dict(self.puts),
            links=list(self.links),
            change=Change(c.modseq, list(c.emails_created), list(c.emails_updated),
                          list(c.emails_destroyed), list(c.mailboxes_created),
                          list(c.mailboxes_updated), list(c.mailboxes_destroyed)),
            touched=self.touched,
        )


class AccountTx:
    """One account inside a commit round: cached reads, staged writes, one modseq."""

    def __init__(self, data: DataStore, acct: int):
        self.data = data
        self.acct = acct
        self._orig_state: bytes | None = None
        self._s: _Staged | None = None
        self._loaded_mailboxes: dict[int, Mailbox | None] = {}
        self._loaded_emails: dict[int, Email | None] = {}
        # records the running operation has its own copy of (not shared with its snapshot)
        self._own_mailboxes: set[int] = set()
        self._own_emails: set[int] = set()

    async def load(self, create: bool = False) -> None:
        raw = await self.data.get(keys.account(self.acct))
        self._orig_state = raw
        state = AccountState.unpack(raw)
        if state is None:
            if not create:
                raise AccountMissing(self.acct)
            state = AccountState()
        self._s = _Staged(state=state)

    @property
    def exists(self) -> bool:
        return self._orig_state is not None

    @property
    def state(self) -> AccountState:
        assert self._s is not None
        return self._s.state

    def modseq(self) -> int:
        """The modseq of this round's changes (the account's next one)."""
        s = self._s
        assert s is not None
        if not s.touched:
            s.touched = True
            s.state.modseq += 1
            s.change.modseq = s.state.modseq
        return s.state.modseq

    @property
    def change(self) -> Change:
        assert self._s is not None
        return self._s.change

    # --- reads (cached for the round) ----------------------------------------------

    async def mailbox(self, mid: int) -> Mailbox | None:
        s = self._s
        if mid in s.mailboxes:
            m = s.mailboxes[mid]
            if mid not in self._own_mailboxes:   # shared with the snapshot: copy on access
                m = s.mailboxes[mid] = m.clone()
                self._own_mailboxes.add(mid)
            return m
        if mid not in self._loaded_mailboxes:
            raw = await self.data.get(keys.mailbox(self.acct, mid))
            self._loaded_mailboxes[mid] = Mailbox.unpack(mid, raw) if raw else None
        cached = self._loaded_mailboxes[mid]
        if cached is None:
            return None
        s.mailboxes[mid] = cached.clone()
        self._own_mailboxes.add(mid)
        return s.mailboxes[mid]

    async def email(self, eid: int) -> Email | None:
        s = self._s
        if eid in s.emails:
            e = s.emails[eid]
            if e is not None and eid not in self._own_emails:   # copy on access, as above
                e = s.emails[eid] = e.clone()
                self._own_emails.add(eid)
            return e
        if eid not in self._loaded_emails:
            raw = await self.data.get(keys.email(self.acct, eid))
            self._loaded_emails[eid] = Email.unpack(eid, raw) if raw else None
        cached = self._loaded_emails[eid]
        if cached is None:
            return None
        s.emails[eid] = cached.clone()
        self._own_emails.add(eid)
        return s.emails[eid]

    def staged_mailboxes(self) -> dict[int, Mailbox]:
        return dict(self._s.mailboxes)

    async def get(self, key: bytes) -> bytes | None:
        if key in self._s.puts:
            return self._s.puts[key]
        return await self.data.get(key)

    # --- staged writes --------------------------------------------------------------

    def put_mailbox(self, mailbox: Mailbox, created: bool = False) -> None:
        modseq = self.modseq()
        mailbox.modseq = modseq
        self._s.mailboxes[mailbox.id] = mailbox
        self._own_mailboxes.add(mailbox.id)
        target = self.change.mailboxes_created if created else self.change.mailboxes_updated
        if mailbox.id not in target and mailbox.id not in self.change.mailboxes_created:
            target.append(mailbox.id)

    def delete_mailbox(self, mid: int) -> None:
        self.modseq()
        self._s.mailboxes.pop(mid, None)
        self._s.puts[keys.mailbox(self.acct, mid)] = None
        if mid in self.change.mailboxes_created:
            self.change.mailboxes_created.remove(mid)
        else:
            self.change.mailboxes_destroyed.append(mid)

    def put_email(self, email: Email, created: bool = False) -> None:
        email.modseq = self.modseq()
        self._s.emails[email.id] = email
        self._own_emails.add(email.id)
        target = self.change.emails_created if created else self.change.emails_updated
        if email.id not in target and email.id not in self.change.emails_created:
            target.append(email.id)

    def destroy_email(self, email: Email) -> None:
        self.modseq()
        self._s.emails[email.id] = None
        self._s.puts[keys.metadata(self.acct, email.id)] = None
        self._s.puts[keys.fts_pending(self.acct, email.id)] = b"u"
        self._s.links.append((email.blob_id, _owner(self.acct, email.id), False))
        if email.id in self.change.emails_created:
            self.change.emails_created.remove(email.id)
        else:
            self.change.emails_destroyed.append(email.id)
        if email.id in self.change.emails_updated:
            self.change.emails_updated.remove(email.id)

    def put(self, key: bytes, value: bytes | None) -> None:
        self.modseq()
        self._s.puts[key] = value

    def link_blob(self, blob_id: str, eid: int) -> None:
        self._s.links.append((blob_id, _owner(self.acct, eid), True))

    # --- round mechanics ------------------------------------------------------------

    def snapshot(self) -> _Staged:
        """Taken before each operation: what ``restore`` rolls back to if it raises."""
        self._own_mailboxes.clear()
        self._own_emails.clear()
        return self._s.clone()

    def restore(self, snapshot: _Staged) -> None:
        self._s = snapshot

    async def write_into(self, batch: WriteBatch, blobs) -> Change | None:
        """Add this account's staged changes to the round's batch."""
        s = self._s
        if not s.touched:
            return None
        batch.assert_value(keys.account(self.acct), self._orig_state)
        batch.put(keys.account(self.acct), s.state.pack())
        for mid, mailbox in s.mailboxes.items():
            batch.put(keys.mailbox(self.acct, mid), mailbox.pack())
        for eid, email in s.emails.items():
            if email is None:
                batch.delete(keys.email(self.acct, eid))
            else:
                batch.put(keys.email(self.acct, eid), email.pack())
        for key, value in s.puts.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        if blobs is not None:
            for blob_id, owner, link in s.links:
                if link:
                    await blobs.link_into(batch, blob_id, owner)
                else:
                    blobs.unlink_into(batch, blob_id, owner)
        if not s.change.empty():
            batch.put(keys.change(self.acct, s.change.modseq), s.change.pack())
        return s.change


def _owner(acct: int, eid: int) -> bytes:
    return b"m" + keys.u32(acct) + keys.u32(eid)


@dataclass(slots=True)
class _Pending:
    acct: int
    op: Callable[[AccountTx], Awaitable[Any]]
    future: asyncio.Future
    create: bool


OnCommit = Callable[[list[tuple[int, Change]]], Awaitable[None]]


class GroupCommitter:
    """One per process (per data store). ``run`` returns after the durable commit."""

    def __init__(self, data: DataStore, blobs=None, on_commit: OnCommit | None = None):
        self.data = data
        self.blobs = blobs
        self.on_commit = on_commit
        self._pending: list[_Pending] = []
        self._worker: asyncio.Task | None = None
        self.rounds = 0      # commits made (for tests and metrics)
        self.operations = 0  # operations committed
        self.conflicts = 0   # rounds re-run because another process committed first

    async def run(self, acct: int, op: Callable[[AccountTx], Awaitable[T]],
                  *, create: bool = False) -> T:
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(acct, op, future, create))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._pending:
            group, self._pending = self._pending[:MAX_ROUND], self._pending[MAX_ROUND:]
            try:
                await self._commit_round(group)
            except Exception as exc:  # noqa: BLE001 - a store failure fails the round
                for item in group:
                    if not item.future.done():
                        item.future.set_exception(exc)

    async def _commit_round(self, group: list[_Pending]) -> None:
        for _ in range(MAX_CONFLICT_RETRIES):
            txs: dict[int, AccountTx] = {}
            outcomes: list[tuple[bool, Any]] = []
            for item in group:
                tx = txs.get(item.acct)
                if tx is None:
                    tx = txs[item.acct] = AccountTx(self.data, item.acct)
                    try:
                        await tx.load(create=True)
                    except Exception as exc:  # noqa: BLE001 - reported to its caller
                        outcomes.append((False, exc))
                        continue
                if not tx.exists and not item.create:
                    outcomes.append((False, AccountMissing(item.acct)))
                    continue
                snapshot = tx.snapshot()
                try:
                    outcomes.append((True, await item.op(tx)))
                except Exception as exc:  # noqa: BLE001 - rolled back, reported to its caller
                    tx.restore(snapshot)
                    outcomes.append((False, exc))
            batch = WriteBatch()
            changes = []
            for acct, tx in txs.items():
                change = await tx.write_into(batch, self.blobs)
                if change is not None:
                    changes.append((acct, change))
            try:
                if len(batch):
                    await self.data.write(batch)
            except AssertionFailed:
                self.conflicts += 1
                await asyncio.sleep(0)  # another process committed first: re-read, re-run
                continue
            self.rounds += 1
            self.operations += len(group)
            for item, (ok, value) in zip(group, outcomes, strict=True):
                if item.future.done():
                    continue
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(value)
            if changes and self.on_commit is not None:
                try:
                    await self.on_commit(changes)
                except Exception:
                    log.exception("change notification failed")
            return
        raise AssertionFailed(b"mail commit kept conflicting with other writers")
