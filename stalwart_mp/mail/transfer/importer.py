"""``stalwart-mp mail import``: a Maildir++ tree or an mbox file into an account, resumably.

Messages are imported in their source order (``dovecot-uidlist`` / mtime order per Maildir
folder, file order for mbox), in batches of ``BATCH`` whose appends run concurrently so
the group committer makes each batch one or two durable commits.

Resuming without duplicates. A checkpoint per source (the absolute source path and the
account, hashed) lives in the data store's reserved tools subspace::

    0xFF | "import:" | digest(16)               -> checkpoint (msgpack, below)
    0xFF | "import:" | digest(16) | "/" | id     -> email id (4 bytes): source message done

where ``id`` names a source message: ``<folder>\\0<unique name>`` for a Maildir (the name
without its ``:2,`` flags, which may change between runs), the byte offset of its From_
line for an mbox. Before a batch's appends, the checkpoint records the batch as *pending*
(its ids, blob ids and the account's modseq); after them, one write stores the ids done and
clears the pending batch. A run killed between the two finds the pending batch and asks the
account's change log which emails were created since that modseq: a pending message whose
blob (its content hash) is among them was imported and is recorded, the others are
imported again. So each message is imported exactly once however the run is stopped.
Both checkpoint writes compare-and-set the previous value: two imports of the same source
at once stop with an error instead of interleaving.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import msgpack

from stalwart_mp.mail.store import MailError, MailStore
from stalwart_mp.mail.transfer import Session, TransferError, maildir, mbox, open_session
from stalwart_mp.store.data import AssertionFailed, DataStore, WriteBatch
from stalwart_mp.store.progress import Progress

BATCH = 32
TOOLS_PREFIX = b"\xffimport:"


@dataclass(slots=True)
class SourceMessage:
    """One message to import, read from the source."""

    source_id: str
    mailbox: tuple[str, ...]       # name levels; () = INBOX
    raw: bytes
    keywords: list[str]
    received_at: float | None
    end: int = 0                   # mbox: offset after the message (the resume point)


@dataclass(slots=True)
class Checkpoint:
    """Progress of one import source into one account (see the module docstring)."""

    key: bytes
    source: str
    account: int
    imported: int = 0
    offset: int = 0                                  # mbox: everything before is done
    pending: dict[str, Any] | None = None
    raw: bytes | None = field(default=None, repr=False)  # as last read or written (for CAS)

    @classmethod
    def key_for(cls, source: Path, acct: int) -> bytes:
        digest = hashlib.blake2b(f"{source}\0{acct}".encode(), digest_size=16).digest()
        return TOOLS_PREFIX + digest

    @classmethod
    async def load(cls, data: DataStore, source: Path, acct: int) -> Checkpoint:
        key = cls.key_for(source, acct)
        raw = await data.get(key)
        if raw is None:
            return cls(key, str(source), acct)
        rec = msgpack.unpackb(raw)
        return cls(key, rec["source"], rec["account"], rec["imported"], rec["offset"],
                   rec["pending"], raw)

    def done_key(self, source_id: str) -> bytes:
        return self.key + b"/" + source_id.encode("utf-8", "surrogateescape")

    async def save(self, data: DataStore, done: dict[str, int] | None = None) -> None:
        encoded = msgpack.packb({"source": self.source, "account": self.account,
                                 "imported": self.imported, "offset": self.offset,
                                 "pending": self.pending})
        batch = WriteBatch().assert_value(self.key, self.raw).put(self.key, encoded)
        for source_id, eid in (done or {}).items():
            batch.put(self.done_key(source_id), eid.to_bytes(4, "big"))
        try:
            await data.write(batch)
        except AssertionFailed:
            raise TransferError(
                f"another import of {self.source} into this account is running (its "
                "checkpoint changed under this one); let it finish, then run again") from None
        self.raw = encoded


@dataclass(slots=True)
class ImportStats:
    imported: int = 0
    skipped: int = 0      # already imported by an earlier run
    mailboxes_created: int = 0
    bytes: int = 0


class MailboxPaths:
    """Maps name paths to mailbox ids, creating missing levels (nested names)."""

    def __init__(self, store: MailStore, acct: int, stats: ImportStats):
        self.store, self.acct, self.stats = store, acct, stats
        self._ids: dict[tuple[str, ...], int] = {}

    async def resolve(self, names: tuple[str, ...]) -> int:
        key = tuple(n.lower() for n in names)
        if key in self._ids:
            return self._ids[key]
        boxes = await self.store.mailboxes(self.acct)
        if not names:
            inbox = next((m for m in boxes if m.role == "inbox"), None)
            if inbox is None:
                raise TransferError("the account has no INBOX (no mailbox with role inbox)")
            mid = inbox.id
        else:
            parent = await self.resolve(names[:-1]) if len(names) > 1 else 0
            mid = next((m.id for m in boxes
                        if m.parent_id == parent and m.name.lower() == key[-1]), 0)
            if not mid:
                try:
                    mid = (await self.store.create_mailbox(self.acct, names[-1], parent)).id
                except MailError as exc:
                    raise TransferError(f'cannot create mailbox "{"/".join(names)}": {exc}'
                                        ) from None
                self.stats.mailboxes_created += 1
        self._ids[key] = mid
        return mid


# --- sources ------------------------------------------------------------------------------


def maildir_messages(root: Path, only: tuple[str, ...] | None) -> tuple[int, Iterator[
        SourceMessage]]:
    """(count, messages) of a Maildir++ tree, or of its folder ``only``."""
    chosen = [f for f in maildir.folders(root)
              if only is None or tuple(n.lower() for n in f.names) == only_key(only)]
    if not chosen:
        what = f'folder "{"/".join(only or ())}" in ' if only is not None else ""
        raise TransferError(f"no maildir {what}{root} (expected cur/ and new/ folders)")
    listed = [(f, maildir.messages(f), maildir.read_keywords(f.path)) for f in chosen]

    def generate() -> Iterator[SourceMessage]:
        for folder, msgs, letters in listed:
            for m in msgs:
                try:
                    raw = m.path.read_bytes()
                except FileNotFoundError:  # moved by a mail client meanwhile (flags changed)
                    continue
                yield SourceMessage(f"{folder.display}\0{m.unique}", folder.names, raw,
                                    maildir.keywords_of(m.flags, letters),
                                    m.mtime if m.mtime > 0 else None)

    return sum(len(m) for _, m, _ in listed), generate()


def only_key(names: tuple[str, ...]) -> tuple[str, ...]:
    """INBOX (any case) is the top level of a Maildir."""
    key = tuple(n.lower() for n in names)
    return () if key == ("inbox",) else key


def mbox_messages(path: Path, target: tuple[str, ...], start: int
                  ) -> tuple[int, Iterator[SourceMessage]]:
    if not path.is_file():
        raise TransferError(f"{path} is not an mbox file")

    def generate() -> Iterator[SourceMessage]:
        for m in mbox.read(path, start):
            yield SourceMessage(str(m.offset), target, m.raw, m.keywords(), m.received_at,
                                m.end)

    return mbox.count(path, start), generate()


def mailbox_path(name: str | None) -> tuple[str, ...]:
    """``--mailbox`` as name levels ("/" separates them); INBOX is ()."""
    if name is None:
        return ()
    levels = tuple(p for p in name.split("/") if p.strip())
    return () if tuple(n.lower() for n in levels) == ("inbox",) else levels


# --- the import -------------------------------------------------------------------------


class Importer:
    def __init__(self, session: Session, checkpoint: Checkpoint, progress: Progress):
        self.s = session
        self.cp = checkpoint
        self.progress = progress
        self.stats = ImportStats()
        self.paths = MailboxPaths(session.store, session.acct, self.stats)

    async def reconcile(self) -> None:
        """Settle a batch left pending by a run that stopped between append and record."""
        pending = self.cp.pending
        if not pending:
            return
        created: list[int] = []
        for change in await self.s.store.changes(self.s.acct, pending["since"]):
            created += change.emails_created
        existing = [e for e in await self.s.store.emails(self.s.acct, created) if e]
        available = Counter(e.blob_id for e in existing)
        by_blob: dict[str, list[int]] = {}
        for e in existing:
            by_blob.setdefault(e.blob_id, []).append(e.id)
        done = {}
        for source_id, blob_id in pending["items"]:
            if available[blob_id] > 0:
                available[blob_id] -= 1
                done[source_id] = by_blob[blob_id].pop(0)
        self.cp.pending = None
        self.cp.imported += len(done)
        await self.cp.save(self.s.data, done)

    async def run(self, messages: Iterator[SourceMessage]) -> ImportStats:
        batch: list[SourceMessage] = []
        for message in messages:
            batch.append(message)
            if len(batch) == BATCH:
                await self._batch(batch)
                batch = []
        if batch:
            await self._batch(batch)
        return self.stats

    async def _batch(self, batch: list[SourceMessage]) -> None:
        known = await self.s.data.get_many([self.cp.done_key(m.source_id) for m in batch])
        todo = [m for m, done in zip(batch, known, strict=True) if done is None]
        self.stats.skipped += len(batch) - len(todo)
        end = max(self.cp.offset, batch[-1].end)
        if todo:
            await self._import(todo, end)
        elif end != self.cp.offset:
            self.cp.offset = end
            await self.cp.save(self.s.data)
        self.progress.advance(len(batch), sum(len(m.raw) for m in todo))

    async def _import(self, todo: list[SourceMessage], end: int) -> None:
        """Import ``todo``; ``end`` is the mbox offset the checkpoint may move to once done."""
        from stalwart_mp.mail.ingest.message import parse_message
        from stalwart_mp.mail.ingest.serialize import to_record

        mailbox_ids = [await self.paths.resolve(m.mailbox) for m in todo]
        blob_ids = await asyncio.gather(*(self.s.blobs.put(m.raw) for m in todo))
        state = await self.s.store.state(self.s.acct)
        self.cp.pending = {"since": state.modseq if state else 0,
                           "items": [[m.source_id, b] for m, b in zip(todo, blob_ids,
                                                                      strict=True)]}
        await self.cp.save(self.s.data)

        async def append(m: SourceMessage, mid: int, blob_id: str) -> int:
            parsed = parse_message(m.raw, search_text=False)   # the indexer makes the text
            received = m.received_at or parsed.sent_at or time.time()
            result = await self.s.store.append(
                self.s.acct, [mid], blob_id=blob_id, size=len(m.raw),
                metadata=to_record(parsed), keywords=m.keywords, received_at=received,
                message_id=parsed.message_id, references=list(parsed.references))
            return result.email_id

        results = await asyncio.gather(
            *(append(m, mid, b) for m, mid, b in zip(todo, mailbox_ids, blob_ids, strict=True)),
            return_exceptions=True)
        done = {m.source_id: r for m, r in zip(todo, results, strict=True)
                if isinstance(r, int)}
        self.cp.pending = None
        self.cp.imported += len(done)
        if len(done) == len(todo):
            self.cp.offset = end
        await self.cp.save(self.s.data, done)
        self.stats.imported += len(done)
        self.stats.bytes += sum(len(m.raw) for m in todo if m.source_id in done)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise TransferError(f"import stopped: {failure}") from failure


async def run(cfg: Any, account: str, source: Path, fmt: str, mailbox: str | None,
              out: TextIO, err: TextIO) -> int:
    source = source.resolve()
    async with open_session(cfg, account) as session:
        cp = await Checkpoint.load(session.data, source, session.acct)
        if fmt == "maildir":
            if not source.is_dir():
                raise TransferError(f"{source} is not a directory")
            total, messages = maildir_messages(
                source, None if mailbox is None else mailbox_path(mailbox))
        else:
            total, messages = mbox_messages(source, mailbox_path(mailbox), cp.offset)
        resumed = cp.raw is not None
        progress = Progress(f"importing into {session.principal}", total, unit="messages",
                            stream=err)
        importer = Importer(session, cp, progress)
        await importer.reconcile()
        stats = await importer.run(messages)
        progress.finish()
    print(f"{source} -> {session.principal} (account {session.acct}): "
          f"{stats.imported:,} messages imported ({stats.bytes:,} bytes), "
          f"{stats.skipped:,} already imported{' by an earlier run' if resumed else ''}, "
          f"{stats.mailboxes_created:,} mailboxes created", file=out)
    return 0


def main(args: argparse.Namespace) -> int:
    from stalwart_mp.config.loader import ConfigInvalid, load_file

    try:
        cfg = load_file(args.config)
    except ConfigInvalid as exc:
        print(exc, file=sys.stderr)
        return 1
    fmt, source = ("maildir", args.maildir) if args.maildir else ("mbox", args.mbox)
    try:
        return asyncio.run(run(cfg, args.account, source, fmt, args.mailbox,
                               sys.stdout, sys.stderr))
    except (TransferError, OSError) as exc:
        print(f"stalwart-mp mail import: {exc}", file=sys.stderr)
        return 1

