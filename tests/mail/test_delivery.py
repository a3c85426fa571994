"""Local delivery through the directory into the mail model (real LMDB and fs blobs)."""
from __future__ import annotations

import asyncio

import pytest

from stalwart_mp.directory.ids import account_id
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.mail.commit import GroupCommitter
from stalwart_mp.mail.delivery import Delivery, DeliverySettings, Status
from stalwart_mp.mail.records import Role
from stalwart_mp.mail.store import MailStore
from stalwart_mp.store.blob import open_blob_store
from stalwart_mp.store.registry import open_data_store

MESSAGE = (b"From: Sender <sender@remote.test>\r\nTo: alice@example.com\r\n"
           b"Subject: Hello there\r\nMessage-ID: <m1@remote.test>\r\n"
           b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nBody text.\r\n")


@pytest.fixture
async def env(tmp_path):
    data = open_data_store("data", {"type": "lmdb", "path": str(tmp_path / "lmdb")})
    blobs = open_blob_store("blobs", {"type": "fs", "path": str(tmp_path / "blobs")}, data)
    directory = InternalDirectory(data)
    manager = DirectoryManager(directory)
    await manager.create_domain("example.com")
    await manager.create_principal("alice", emails=["alice@example.com"])
    await manager.create_principal("bob", emails=["bob@example.com", "@example.com"],
                                   quota_bytes=800)
    await manager.create_principal("off", emails=["off@example.com"], disabled=True)
    await manager.create_principal("team", type="list", emails=["team@example.com"],
                                   members=["alice@example.com", "bob@example.com",
                                            "friend@remote.test"])
    mail = MailStore(data, GroupCommitter(data, blobs))
    yield Delivery(mail, blobs, directory, DeliverySettings(plus_folder=True)), mail, directory
    await blobs.close()
    await data.close()


async def _inbox_messages(mail, directory, name, role=Role.INBOX):
    acct = await account_id(mail.data, await directory.principal(name))
    box = await mail.mailbox_by_role(acct, role)
    return acct, [eid for _, eid in await mail.uid_index(acct, box.id)]


async def test_per_recipient_results(env):
    delivery, mail, directory = env
    results = await delivery.deliver(MESSAGE, "sender@remote.test", [
        "alice@example.com", "nobody@nowhere.test", "off@example.com", "whoever@example.com"])
    assert [r.status for r in results] == [Status.DELIVERED, Status.NOT_LOCAL,
                                           Status.DISABLED, Status.DELIVERED]
    assert results[3].accounts == ["bob"], "the catch-all"
    acct, ids = await _inbox_messages(mail, directory, "alice")
    assert len(ids) == 1
    email = await mail.email(acct, ids[0])
    assert await delivery.blobs.get(email.blob_id) == MESSAGE, "byte-exact"
    meta = await mail.metadata(acct, ids[0])
    assert meta, "parsed once at delivery and kept for FETCH"
    _, bob_ids = await _inbox_messages(mail, directory, "bob")
    bob_email = await mail.email(await account_id(mail.data, await directory.principal("bob")),
                                 bob_ids[0])
    assert bob_email.blob_id == email.blob_id, "one blob for every recipient"


async def test_list_expansion_and_external_members(env):
    delivery, mail, directory = env
    (result,) = await delivery.deliver(MESSAGE, "sender@remote.test", ["team@example.com"])
    assert sorted(result.accounts) == ["alice", "bob"]
    assert result.external == ["friend@remote.test"]
    assert len((await _inbox_messages(mail, directory, "alice"))[1]) == 1


async def test_plus_addressing_into_folder(env):
    delivery, mail, directory = env
    acct = await account_id(mail.data, await directory.principal("alice"))
    await mail.ensure_account(acct)
    folder = await mail.create_mailbox(acct, "Receipts")
    await delivery.deliver(MESSAGE, "s@remote.test", ["alice+receipts@example.com"])
    assert len(await mail.uid_index(acct, folder.id)) == 1
    await delivery.deliver(MESSAGE, "s@remote.test", ["alice+nosuchfolder@example.com"])
    assert len((await _inbox_messages(mail, directory, "alice"))[1]) == 1


async def test_over_quota_is_temporary_by_default(env):
    delivery, mail, directory = env
    big = MESSAGE + b"x" * 300
    assert (await delivery.deliver(big, "s@remote.test", ["bob@example.com"]))[0].status == \
        Status.DELIVERED
    (result,) = await delivery.deliver(big, "s@remote.test", ["bob@example.com"])
    assert result.status == Status.OVER_QUOTA and result.message.startswith("452 4.2.2")
    assert not result.permanent


async def test_concurrent_deliveries_share_commits(env):
    delivery, mail, directory = env
    before = mail.committer.rounds
    await asyncio.gather(*(delivery.deliver(MESSAGE + str(i).encode(), "s@remote.test",
                                            ["alice@example.com"]) for i in range(30)))
    assert len((await _inbox_messages(mail, directory, "alice"))[1]) == 30
    assert mail.committer.rounds - before < 30


async def test_malformed_message_is_stored_byte_exact(env):
    delivery, mail, directory = env
    raw = (b"Subject: =?bogus?Q?broken?=\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n"
           b"\r\n--b\r\nContent-Type: text/plain; charset=no-such-charset\r\n\r\n\xff\xfe"
           b"\x00 bytes\r\n--b\r\n")  # no closing boundary
    (result,) = await delivery.deliver(raw, "s@remote.test", ["alice@example.com"])
    assert result.status == Status.DELIVERED
    acct, ids = await _inbox_messages(mail, directory, "alice")
    assert await delivery.blobs.get((await mail.email(acct, ids[0])).blob_id) == raw


async def test_folder_choices_cached_per_process_are_rechecked(env):
    """Delivery remembers an account's folders, but a renamed or deleted folder is never
    delivered into: the choice is checked again inside the append transaction."""
    delivery, mail, directory = env
    acct = await account_id(mail.data, await directory.principal("alice"))
    await mail.ensure_account(acct)
    folder = await mail.create_mailbox(acct, "Receipts")
    await delivery.deliver(MESSAGE, "s@remote.test", ["alice+receipts@example.com"])
    assert len(await mail.uid_index(acct, folder.id)) == 1
    await mail.update_mailbox(acct, folder.id, name="Old receipts")   # cache now stale
    await delivery.deliver(MESSAGE, "s@remote.test", ["alice+receipts@example.com"])
    assert len(await mail.uid_index(acct, folder.id)) == 1, "not into the renamed folder"
    _, inbox = await _inbox_messages(mail, directory, "alice")
    assert len(inbox) == 1, "no folder of that name any more: the inbox"
    inbox_box = await mail.mailbox_by_role(acct, Role.INBOX)
    await mail.update_mailbox(acct, inbox_box.id, role="")            # no inbox role
    await mail.update_mailbox(acct, folder.id, role=Role.INBOX)       # the other one is now
    (r,) = await delivery.deliver(MESSAGE, "s@remote.test", ["alice@example.com"])
    assert r.status == Status.DELIVERED
    assert len(await mail.uid_index(acct, folder.id)) == 2, "follows the role, not the id"
