"""SEARCH TEXT/BODY finds messages the full-text index has not taken in yet (no indexer runs
here: the whoosh index stays empty, so only the widening can find them)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from stalwart_mp.imap.search_fresh import widen
from stalwart_mp.mail import search as s
from stalwart_mp.mail.commit import GroupCommitter
from stalwart_mp.mail.ingest import parse_message, to_record
from stalwart_mp.mail.store import MailStore
from stalwart_mp.store.blob import open_blob_store
from stalwart_mp.store.fts import open_fts_store
from stalwart_mp.store.registry import open_data_store

ACCT = 7
MESSAGES = [
    b"From: Ann <ann@x.test>\r\nSubject: Quarterly figures\r\n\r\nThe budget is ready.\r\n",
    (b"From: Zed <zed@x.test>\r\nSubject: Lunch\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 at noon?\r\n"),
]


@pytest.fixture
async def env(tmp_path):
    data = open_data_store("data", {"type": "lmdb", "path": str(tmp_path / "lmdb")})
    blobs = open_blob_store("blobs", {"type": "fs", "path": str(tmp_path / "blobs")}, data)
    fts = open_fts_store("search", {"type": "whoosh", "path": str(tmp_path / "fts")})
    mail = MailStore(data, GroupCommitter(data, blobs))
    await mail.ensure_account(ACCT)
    inbox = (await mail.mailbox_by_role(ACCT, "inbox")).id
    ids = []
    for raw in MESSAGES:
        blob = await blobs.put(raw)
        res = await mail.append(ACCT, [inbox], blob_id=blob, size=len(raw),
                                metadata=to_record(parse_message(raw)))
        ids.append(res.email_id)
    yield SimpleNamespace(mail=mail, blobs=blobs, fts=fts, inbox=inbox, ids=ids)
    await blobs.close()
    await data.close()


async def run(env, node) -> list[int]:
    services = SimpleNamespace(mail=env.mail, blobs=env.blobs)
    node = await widen(services, ACCT, node)
    return await s.query(env.mail, ACCT, node, fts=env.fts, mailbox=env.inbox,
                         blob_reader=env.blobs.get)


async def test_unindexed_messages_are_found(env):
    first, second = env.ids
    assert await s.query(env.mail, ACCT, s.Text("body", "budget"), fts=env.fts,
                         mailbox=env.inbox) == []  # the index knows nothing yet
    assert await run(env, s.Text("body", "budget")) == [first]
    assert await run(env, s.Text("body", "CAFÉ")) == [second]  # decoded, case-folded
    assert await run(env, s.Text(None, "quarterly")) == [first]  # TEXT: header too
    assert await run(env, s.Text("body", "quarterly")) == []     # BODY: not the header
    assert await run(env, s.Text("from", "zed")) == [second]
    assert await run(env, s.And(s.Not(s.Text("body", "noon")), s.All())) == [first]
    assert await run(env, s.HasKeyword("$seen")) == []  # no text leaf: untouched
