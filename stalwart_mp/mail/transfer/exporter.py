"""``stalwart-mp mail export``: an account's mailboxes to a Maildir++ tree or an mbox file.

Messages are written in UID order with their stored bytes exactly (blobs are content
hashed, so what is written is what was received).

Maildir: each mailbox becomes a folder (INBOX the top level, others ``.Parent.Child``);
each message ``cur/<received>.E<email id>.<host>:2,<flags>`` with its mtime set to the
received date (Dovecot reads INTERNALDATE from it), custom keywords as Dovecot letters
listed in ``dovecot-keywords``, and a ``dovecot-uidlist`` keeping the UID order and
UIDVALIDITY (written only where there is none or where it is ours, i.e. has the same
UIDVALIDITY). ``E<id>`` (a field the maildir spec leaves free) marks our files, so an
export is idempotent and resumable: a message whose file exists (by email id, whatever the
host) is not written again, only renamed if its flags changed.

mbox: one mailbox per file (``--mailbox``, default INBOX), mboxrd escaping, From_ lines
with the received date. Flags are written as Status/X-Status/X-Keywords header fields only
with ``--mbox-flags``, since that changes the message; the file is written beside the
target and renamed into place when complete, so a rerun starts over safely.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from stalwart_mp.mail.records import Email, Mailbox
from stalwart_mp.mail.transfer import Session, TransferError, maildir, mbox, open_session
from stalwart_mp.mail.transfer.importer import mailbox_path
from stalwart_mp.store.progress import Progress

READ_BATCH = 64
_OURS = re.compile(r"^\d+\.E(\d+)\.")


@dataclass(slots=True)
class ExportStats:
    written: int = 0
    unchanged: int = 0        # already exported by an earlier run
    renamed: int = 0          # flags changed since then
    mailboxes: int = 0
    bytes: int = 0
    keywords_dropped: int = 0  # beyond Dovecot's 26 keyword letters (Maildir only)


def mailbox_names(boxes: list[Mailbox]) -> dict[int, tuple[str, ...]]:
    """Each mailbox's name levels; the INBOX role is () (the Maildir top level)."""
    by_id = {m.id: m for m in boxes}
    out: dict[int, tuple[str, ...]] = {}
    for m in boxes:
        if m.role == "inbox" and not m.parent_id:
            out[m.id] = ()
            continue
        levels, cur, seen = [], m, set()
        while cur is not None and cur.id not in seen:
            seen.add(cur.id)
            levels.append(cur.name)
            cur = by_id.get(cur.parent_id) if cur.parent_id else None
        out[m.id] = tuple(reversed(levels))
    return out


def choose(boxes: list[Mailbox], wanted: str | None) -> list[tuple[Mailbox, tuple[str, ...]]]:
    names = mailbox_names(boxes)
    chosen = [(m, names[m.id]) for m in boxes]
    if wanted is not None:
        key = tuple(n.lower() for n in mailbox_path(wanted))
        chosen = [(m, n) for m, n in chosen if tuple(x.lower() for x in n) == key]
        if not chosen:
            raise TransferError(f'the account has no mailbox "{wanted}"')
    return sorted(chosen, key=lambda c: c[1])


async def messages_of(s: Session, mailbox: Mailbox):
    """(UID, email, bytes) of a mailbox in UID order, read in batches."""
    index = await s.store.uid_index(s.acct, mailbox.id)
    for start in range(0, len(index), READ_BATCH):
        chunk = index[start:start + READ_BATCH]
        emails = await s.store.emails(s.acct, [eid for _, eid in chunk])
        blobs = await asyncio.gather(*(s.blobs.get(e.blob_id) if e else _none()
                                       for e in emails))
        for (uid, eid), email, raw in zip(chunk, emails, blobs, strict=True):
            if email is None:
                continue  # expunged while we read
            if raw is None:
                raise TransferError(f"message {eid} (blob {email.blob_id}) is missing from "
                                    "the blob store")
            yield uid, email, raw


async def _none() -> None:
    return None


# --- Maildir ----------------------------------------------------------------------------


def _existing(folder: Path) -> dict[int, Path]:
    """Our files already in a folder, by email id."""
    found = {}
    for sub in ("cur", "new"):
        for entry in os.scandir(folder / sub):
            match = _OURS.match(entry.name)
            if match:
                found[int(match.group(1))] = Path(entry.path)
    return found


def _uidlist_is_ours(folder: Path, uidvalidity: int) -> bool:
    try:
        first = (folder / maildir.UIDLIST_FILE).read_text().split("\n", 1)[0].split()
    except FileNotFoundError:
        return True
    return len(first) > 1 and first[0] == "3" and first[1] == f"V{uidvalidity}"


async def export_maildir(s: Session, root: Path, chosen, progress: Progress,
                         stats: ExportStats) -> None:
    host = maildir.hostname()
    for mailbox, names in chosen:
        folder = maildir.folder_dir(root, names)
        maildir.make_maildir(folder)
        letters = maildir.KeywordLetters(folder)
        existing = _existing(folder)
        uidlist: list[tuple[int, str]] = []
        async for uid, email, raw in messages_of(s, mailbox):
            name = _write_maildir_message(folder, email, raw, letters, existing, host, stats)
            uidlist.append((uid, name))
            progress.advance(1, len(raw))
        letters.save()
        stats.keywords_dropped += len(letters.dropped)
        if _uidlist_is_ours(folder, mailbox.uidvalidity):
            maildir.write_uidlist(folder, mailbox.uidvalidity, mailbox.uidnext, uidlist)
        stats.mailboxes += 1


def _write_maildir_message(folder: Path, email: Email, raw: bytes,
                           letters: maildir.KeywordLetters, existing: dict[int, Path],
                           host: str, stats: ExportStats) -> str:
    """Write (or keep, or re-flag) one message; returns its unique name."""
    flags = letters.flags(email.keywords)
    present = existing.get(email.id)
    if present is not None:
        unique = present.name.split(":", 1)[0]
        target = folder / "cur" / f"{unique}:2,{flags}"
        if present != target:
            os.replace(present, target)
            stats.renamed += 1
        else:
            stats.unchanged += 1
        return unique
    unique = f"{int(email.received_at)}.E{email.id}.{host}"
    maildir.write_atomic(folder / "cur" / f"{unique}:2,{flags}", raw,
                         mtime=email.received_at, tmp_dir=folder / "tmp")
    stats.written += 1
    stats.bytes += len(raw)
    return unique


# --- mbox ---------------------------------------------------------------------------------


async def export_mbox(s: Session, path: Path, chosen, flags: bool, progress: Progress,
                      stats: ExportStats) -> None:
    if len(chosen) != 1:
        raise TransferError("an mbox file holds one mailbox: pass --mailbox NAME (or export "
                            "every mailbox with --maildir)")
    mailbox, _ = chosen[0]
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as f:  # noqa: ASYNC230 - a CLI process: nothing else on its loop
        async for _, email, raw in messages_of(s, mailbox):
            body = mbox.with_flag_headers(raw, email.keywords) if flags else raw
            f.write(mbox.entry(body, email.received_at))
            stats.written += 1
            stats.bytes += len(raw)
            progress.advance(1, len(raw))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    stats.mailboxes = 1


async def run(cfg: Any, account: str, target: Path, fmt: str, mailbox: str | None,
              mbox_flags: bool, out: TextIO, err: TextIO) -> int:
    async with open_session(cfg, account) as session:
        boxes = await session.store.mailboxes(session.acct)
        if fmt == "mbox" and mailbox is None:
            mailbox = "INBOX"
        chosen = choose(boxes, mailbox)
        total = sum(m.total for m, _ in chosen)
        progress = Progress(f"exporting {session.principal}", total, unit="messages",
                            stream=err)
        stats = ExportStats()
        if fmt == "maildir":
            target.mkdir(parents=True, exist_ok=True)
            await export_maildir(session, target, chosen, progress, stats)
        else:
            await export_mbox(session, target, chosen, mbox_flags, progress, stats)
        progress.finish()
    print(f"{session.principal} (account {session.acct}) -> {target}: "
          f"{stats.written:,} messages written ({stats.bytes:,} bytes), "
          f"{stats.unchanged:,} already there, {stats.renamed:,} with new flags, "
          f"{stats.mailboxes:,} mailboxes", file=out)
    if stats.keywords_dropped:
        print(f"warning: {stats.keywords_dropped} keywords not written (a Maildir folder "
              f"holds at most {maildir.MAX_KEYWORDS})", file=err)
    return 0


def main(args: argparse.Namespace) -> int:
    from stalwart_mp.config.loader import ConfigInvalid, load_file

    try:
        cfg = load_file(args.config)
    except ConfigInvalid as exc:
        print(exc, file=sys.stderr)
        return 1
    fmt, target = ("maildir", args.maildir) if args.maildir else ("mbox", args.mbox)
    try:
        return asyncio.run(run(cfg, args.account, target, fmt, args.mailbox,
                               args.mbox_flags, sys.stdout, sys.stderr))
    except (TransferError, OSError) as exc:
        print(f"stalwart-mp mail export: {exc}", file=sys.stderr)
        return 1
