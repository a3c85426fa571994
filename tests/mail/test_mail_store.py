"""The mailbox model on a real LMDB store with filesystem blobs."""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal

import pytest

from stalwart_mp.mail.commit import GroupCommitter
from stalwart_mp.mail.records import SEEN, Role
from stalwart_mp.mail.store import MailError, MailStore, NoSuchMailbox, Quota, QuotaExceeded
from stalwart_mp.store.blob import open_blob_store
from stalwart_mp.store.registry import open_data_store

ACCT = 7


def _open(path):
    data = open_data_store("data", {"type": "lmdb", "path": str(path / "lmdb")})
    blobs = open_blob_store("blobs", {"type": "fs", "path": str(path / "blobs")}, data)
    changes = []

    async def on_commit(items):
        changes.extend(items)

    committer = GroupCommitter(data, blobs, on_commit)
    return data, blobs, MailStore(data, committer), changes


@pytest.fixture
async def mail(tmp_path):
    data, blobs, store, changes = _open(tmp_path)
    store.blobs = blobs
    store.published = changes
    await store.ensure_account(ACCT)
    yield store
    await blobs.close()
    await data.close()


async def _append(store, mid, body=b"hello", **kw):
    blob = await store.blobs.put(body)
    return await store.append(ACCT, [mid], blob_id=blob, size=len(body),
                              metadata={"s": "subject"}, **kw)


async def _inbox(store):
    return (await store.mailbox_by_role(ACCT, Role.INBOX)).id


async def test_default_folders_with_roles(mail):
    boxes = await mail.mailboxes(ACCT)
    assert [(m.name, m.role) for m in boxes] == [
        ("INBOX", "inbox"), ("Drafts", "drafts"), ("Sent", "sent"), ("Junk", "junk"),
        ("Trash", "trash"), ("Archive", "archive")]
    assert all(m.uidnext == 1 and m.uidvalidity > 0 for m in boxes)
    await mail.ensure_account(ACCT)  # idempotent
    assert len(await mail.mailboxes(ACCT)) == 6


async def test_append_assigns_uids_and_counts(mail):
    inbox = await _inbox(mail)
    r1 = await _append(mail, inbox, b"one")
    r2 = await _append(mail, inbox, b"two", keywords=[SEEN])
    assert (r1.uids[inbox], r2.uids[inbox]) == (1, 2)
    assert r2.modseq > r1.modseq
    m = await mail.mailbox(ACCT, inbox)
    assert (m.total, m.unseen, m.size, m.uidnext) == (2, 1, 6, 3)
    assert await mail.uid_index(ACCT, inbox) == [(1, r1.email_id), (2, r2.email_id)]
    e = await mail.email(ACCT, r2.email_id)
    assert e.keywords == [SEEN] and e.mailboxes == {inbox: 2}
    assert await mail.metadata(ACCT, r1.email_id) == {"s": "subject"}
    state = await mail.state(ACCT)
    assert (state.used_bytes, state.used_count) == (6, 2)


async def test_keywords_copy_move_expunge(mail):
    inbox = await _inbox(mail)
    archive = (await mail.mailbox_by_role(ACCT, Role.ARCHIVE)).id
    r = await _append(mail, inbox, b"message")
    modseq, failed = await mail.set_keywords(ACCT, [r.email_id], add=[SEEN, "$Flagged"])
    assert failed == [] and (await mail.email(ACCT, r.email_id)).keywords == [
        "$flagged", SEEN]
    assert (await mail.mailbox(ACCT, inbox)).unseen == 0
    # UNCHANGEDSINCE older than the message's modseq: refused for that message
    _, failed = await mail.set_keywords(ACCT, [r.email_id], remove=[SEEN],
                                        unchanged_since=modseq - 1)
    assert failed == [r.email_id]
    copied = await mail.copy(ACCT, [r.email_id], archive)
    assert copied == {r.email_id: 1}
    assert (await mail.email(ACCT, r.email_id)).mailboxes == {inbox: 1, archive: 1}
    moved = await mail.move(ACCT, [r.email_id], archive, inbox)
    assert moved == {r.email_id: (1, 2)}, "already in INBOX: it gets a new UID there"
    assert await mail.uid_index(ACCT, inbox) == [(2, r.email_id)]
    assert await mail.uid_index(ACCT, archive) == []
    assert await mail.remove_from_mailbox(ACCT, inbox, [2, 99]) == [2]
    assert await mail.email(ACCT, r.email_id) is None, "in no mailbox: destroyed"
    assert await mail.metadata(ACCT, r.email_id) is None
    assert (await mail.state(ACCT)).used_count == 0
    assert not await mail.blobs.linked(r and (await mail.blobs.put(b"message")))


async def test_changes_log(mail):
    inbox = await _inbox(mail)
    start = (await mail.state(ACCT)).modseq
    r = await _append(mail, inbox)
    await mail.set_keywords(ACCT, [r.email_id], add=[SEEN])
    await mail.destroy(ACCT, [r.email_id])
    changes = await mail.changes(ACCT, start)
    assert [c.emails_created for c in changes] == [[r.email_id], [], []]
    assert [c.emails_updated for c in changes] == [[], [r.email_id], []]
    assert [c.emails_destroyed for c in changes] == [[], [], [r.email_id]]
    assert all(inbox in c.mailboxes_updated for c in changes)
    assert [c.modseq for c in changes] == [start + 1, start + 2, start + 3]
    assert [acct for acct, _ in mail.published][-3:] == [ACCT] * 3


async def test_mailbox_management(mail):
    work = await mail.create_mailbox(ACCT, "Work")
    child = await mail.create_mailbox(ACCT, "Projects", work.id)
    with pytest.raises(MailError, match="already exists"):
        await mail.create_mailbox(ACCT, "work")
    with pytest.raises(MailError, match="cannot be moved under itself"):
        await mail.update_mailbox(ACCT, work.id, parent_id=child.id)
    with pytest.raises(MailError, match="has child mailboxes"):
        await mail.delete_mailbox(ACCT, work.id)
    await _append(mail, child.id)
    with pytest.raises(MailError, match="is not empty"):
        await mail.delete_mailbox(ACCT, child.id)
    await mail.delete_mailbox(ACCT, child.id, remove_emails=True)
    renamed = await mail.update_mailbox(ACCT, work.id, name="Job", subscribed=False)
    assert (renamed.name, renamed.subscribed) == ("Job", False)
    with pytest.raises(NoSuchMailbox):
        await _append(mail, 999)


async def test_quota(mail):
    inbox = await _inbox(mail)
    await _append(mail, inbox, b"x" * 100, quota=Quota(bytes=150))
    with pytest.raises(QuotaExceeded, match="over quota"):
        await _append(mail, inbox, b"y" * 100, quota=Quota(bytes=150))
    with pytest.raises(QuotaExceeded):
        await _append(mail, inbox, b"z", quota=Quota(messages=1))
    assert (await mail.mailbox(ACCT, inbox)).total == 1, "the refused ones left nothing"


async def test_threads_follow_references(mail):
    inbox = await _inbox(mail)
    a = await _append(mail, inbox, b"a", message_id="a@x")
    b = await _append(mail, inbox, b"b", message_id="b@x", references=["a@x"])
    c = await _append(mail, inbox, b"c", message_id="c@x", references=["a@x", "b@x"])
    other = await _append(mail, inbox, b"d", message_id="d@x")
    assert a.thread_id == b.thread_id == c.thread_id == a.email_id
    assert other.thread_id == other.email_id


async def test_group_commit_merges_concurrent_appends(mail):
    inbox = await _inbox(mail)
    before = mail.committer.rounds
    results = await asyncio.gather(*(_append(mail, inbox, f"m{i}".encode())
                                     for i in range(50)))
    uids = sorted(r.uids[inbox] for r in results)
    assert uids == list(range(1, 51))
    rounds = mail.committer.rounds - before
    assert rounds <= 5, f"50 concurrent appends took {rounds} commits"


async def test_a_failing_operation_rolls_back_alone_within_its_round(mail):
    """Operations of one round share staged records; one that changes a record staged by
    an earlier operation and then raises leaves that earlier change intact."""
    inbox = await _inbox(mail)
    first = await _append(mail, inbox, b"first")
    blob = await mail.blobs.put(b"second")

    async def breaks_after_touching(tx):
        m = await tx.mailbox(inbox)
        m.uidnext += 100                     # the staged mailbox the append changed ...
        (await tx.email(first.email_id)).keywords.append("$broken")
        tx.put_mailbox(m)
        raise RuntimeError("refused")        # ... and then this operation fails

    results = await asyncio.gather(
        mail.append(ACCT, [inbox], blob_id=blob, size=6, metadata={}),
        mail.committer.run(ACCT, breaks_after_touching),
        mail.set_keywords(ACCT, [first.email_id], add=["$ok"]),
        return_exceptions=True)
    assert isinstance(results[1], RuntimeError)
    assert results[0].uids[inbox] == 2
    box = await mail.mailbox(ACCT, inbox)
    assert (box.uidnext, box.total) == (3, 2)
    assert (await mail.email(ACCT, first.email_id)).keywords == ["$ok"]


def _appender(path: str, count: int, queue) -> None:
    async def run():
        from pathlib import Path

        data, blobs, store, _ = _open(Path(path))
        inbox = (await store.mailbox_by_role(ACCT, Role.INBOX)).id
        out = []
        for i in range(count):
            blob = await blobs.put(f"{os.getpid()}-{i}".encode())
            r = await store.append(ACCT, [inbox], blob_id=blob, size=5, metadata={})
            out.append((r.uids[inbox], r.modseq))
        await blobs.close()
        await data.close()
        return out

    queue.put(asyncio.run(run()))


async def test_two_processes_append_to_one_mailbox(tmp_path):
    data, blobs, store, _ = _open(tmp_path)
    await store.ensure_account(ACCT)
    await blobs.close()
    await data.close()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_appender, args=(str(tmp_path), 40, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    for seq in results:  # each process sees its own UIDs and modseqs strictly increasing
        assert [u for u, _ in seq] == sorted(u for u, _ in seq)
        assert [m for _, m in seq] == sorted(m for _, m in seq)
    all_uids = [u for seq in results for u, _ in seq]
    assert sorted(all_uids) == list(range(1, 81)), "no duplicate, no gap"
    data, blobs, store, _ = _open(tmp_path)
    inbox = (await store.mailbox_by_role(ACCT, Role.INBOX)).id
    assert [u for u, _ in await store.uid_index(ACCT, inbox)] == list(range(1, 81))
    assert (await store.mailbox(ACCT, inbox)).total == 80
    await blobs.close()
    await data.close()


def _append_then_die(path: str, ready) -> None:
    async def run():
        from pathlib import Path

        data, blobs, store, _ = _open(Path(path))
        inbox = (await store.mailbox_by_role(ACCT, Role.INBOX)).id
        blob = await blobs.put(b"durable message")
        r = await store.append(ACCT, [inbox], blob_id=blob, size=15, metadata={"k": 1})
        ready.send(r.email_id)  # acknowledged: now die without any cleanup
        os.kill(os.getpid(), signal.SIGKILL)

    asyncio.run(run())


async def test_acknowledged_append_survives_kill_9(tmp_path):
    data, blobs, store, _ = _open(tmp_path)
    await store.ensure_account(ACCT)
    await blobs.close()
    await data.close()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_append_then_die, args=(str(tmp_path), child))
    proc.start()
    eid = parent.recv()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    data, blobs, store, _ = _open(tmp_path)
    email = await store.email(ACCT, eid)
    assert email is not None and await blobs.get(email.blob_id) == b"durable message"
    assert await store.metadata(ACCT, eid) == {"k": 1}
    await blobs.close()
    await data.close()
