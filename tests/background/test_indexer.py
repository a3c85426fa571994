"""The queue process's full-text indexer, and the queue child in a running server."""
from __future__ import annotations

from stalwart_mp.background.indexer import Indexer
from stalwart_mp.mail import keys
from stalwart_mp.mail.commit import GroupCommitter
from stalwart_mp.mail.records import Role
from stalwart_mp.mail.store import MailStore
from stalwart_mp.store.blob import open_blob_store
from stalwart_mp.store.fts import And, Term, open_fts_store
from stalwart_mp.store.data import WriteBatch
from stalwart_mp.store.registry import open_data_store
from tests.harness import Server, base_config, free_port

RAW = (b"From: Ana <ana@example.org>\r\nTo: team@example.com\r\nSubject: Quarterly budget\r\n"
       b"\r\nThe numbers for the running quarter are attached.\r\n")


async def test_pending_marks_are_indexed_then_cleared(tmp_path):
    from stalwart_mp.mail.ingest import parse_message, to_record

    data = open_data_store("d", {"type": "lmdb", "path": str(tmp_path / "lmdb")})
    blobs = open_blob_store("b", {"type": "fs", "path": str(tmp_path / "blobs")}, data)
    fts = open_fts_store("f", {"type": "sqlite", "path": str(tmp_path / "fts.db")})
    mail = MailStore(data, GroupCommitter(data, blobs))
    await mail.ensure_account(3)
    inbox = (await mail.mailbox_by_role(3, Role.INBOX)).id
    blob = await blobs.put(RAW)
    r = await mail.append(3, [inbox], blob_id=blob, size=len(RAW),
                          metadata=to_record(parse_message(RAW)))
    assert await data.get(keys.fts_pending(3, r.email_id)) == b"i"
    indexer = Indexer(data, blobs, fts)
    assert await indexer.run_once() == 1
    assert await data.get(keys.fts_pending(3, r.email_id)) is None
    assert await fts.query(3, And(Term("subject", "budget"), Term(None, "run"))) == {r.email_id}
    assert await fts.query(3, Term("from", "ana@example.org")) == {r.email_id}
    await mail.destroy(3, [r.email_id])
    assert await indexer.run_once() == 1
    assert await fts.query(3, Term("subject", "budget")) == set()
    assert await indexer.run_once() == 0
    await fts.close()
    await blobs.close()
    await data.close()


async def test_a_batch_is_one_index_commit_and_one_clearing_commit(tmp_path):
    """Five deliveries and two removals: the whoosh index gets one commit for each kind, the
    marks are cleared in one data-store commit, and a mark set again while the batch was
    being indexed survives it (the next round indexes the message again)."""
    from stalwart_mp.mail.ingest import parse_message, to_record
    from stalwart_mp.store.coalesce import CoalescingDataStore

    data = CoalescingDataStore(open_data_store("d", {"type": "lmdb",
                                                     "path": str(tmp_path / "lmdb")}))
    blobs = open_blob_store("b", {"type": "fs", "path": str(tmp_path / "blobs")}, data)
    fts = open_fts_store("f", {"type": "whoosh", "path": str(tmp_path / "fts")})
    mail = MailStore(data, GroupCommitter(data, blobs))
    await mail.ensure_account(3)
    inbox = (await mail.mailbox_by_role(3, Role.INBOX)).id
    ids = []
    for n in range(7):
        raw = RAW.replace(b"Quarterly budget", b"Quarterly budget %d" % n)
        blob = await blobs.put(raw)
        r = await mail.append(3, [inbox], blob_id=blob, size=len(raw),
                              metadata=to_record(parse_message(raw)))
        ids.append(r.email_id)
    indexer = Indexer(data, blobs, fts)
    assert await indexer.run_once() == 7
    await mail.destroy(3, ids[:2])

    commits = {"fts": 0}
    write = fts._write

    def counted(change):
        commits["fts"] += 1
        write(change)

    fts._write = counted
    index_many = fts.index_many

    async def index_and_remark(documents):
        await index_many(documents)
        # the message changes while its batch is in flight: its mark is set again
        await data.write(WriteBatch().put(keys.fts_pending(3, ids[2]), b"i"))

    fts.index_many = index_and_remark
    await data.write(WriteBatch().put(keys.fts_pending(3, ids[3]), b"i")
                     .put(keys.fts_pending(3, ids[4]), b"i"))
    assert await indexer.run_once() == 4  # two removals, two re-indexings
    assert commits["fts"] == 2
    # the clears: one merged commit, which failed on the re-marked key, then one by one
    assert await data.get(keys.fts_pending(3, ids[2])) == b"i"
    for eid in (ids[0], ids[1], ids[3], ids[4]):
        assert await data.get(keys.fts_pending(3, eid)) is None
    assert await fts.query(3, Term("subject", "budget")) == set(ids[2:])
    fts.index_many = index_many
    # with nothing changing meanwhile, the clears of a batch are one commit
    await data.write(WriteBatch().put(keys.fts_pending(3, ids[5]), b"i")
                     .put(keys.fts_pending(3, ids[6]), b"i"))
    before = data.commits
    assert await indexer.run_once() == 3  # ids[2] again, 5 and 6
    assert data.commits - before == 1
    assert await indexer.run_once() == 0
    await fts.close()
    await blobs.close()
    await data.close()


def test_server_runs_a_queue_process(tmp_path):
    port = free_port()
    srv = Server(tmp_path, port, base_config(tmp_path, port, workers=1)).start()
    try:
        srv.wait_for(lambda: any(p["kind"] == "queue" for p in srv.status()["processes"]),
                     "the queue process")
        # spawned first, then it opens the stores and says so (at nice 10: give it time)
        srv.wait_for(lambda: "queue process running" in srv.logs(), "the queue process to run")
    finally:
        srv.stop()
