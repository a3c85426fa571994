"""The queue process's full-text indexer, and the queue child in a running server."""
from __future__ import annotations

from stalwart_mp.background.indexer import Indexer
from stalwart_mp.mail import keys
from stalwart_mp.mail.commit import GroupCommitter
from stalwart_mp.mail.records import Role
from stalwart_mp.mail.store import MailStore
from stalwart_mp.store.blob import open_blob_store
from stalwart_mp.store.fts import And, Term, open_fts_store
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
