"""Deleting an account removes its mail (through the queue process's purge)."""
from __future__ import annotations

from stalwart_mp.background.purge import purge_deleted_accounts
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.mail import keys
from stalwart_mp.mail.commit import GroupCommitter
from stalwart_mp.mail.delivery import Delivery
from stalwart_mp.mail.store import MailStore
from stalwart_mp.store.blob import open_blob_store
from stalwart_mp.store.registry import open_data_store

RAW = b"From: a@remote.test\r\nSubject: hi\r\n\r\nhello\r\n"


async def test_deleted_account_mail_is_purged(tmp_path):
    data = open_data_store("d", {"type": "lmdb", "path": str(tmp_path / "lmdb")})
    blobs = open_blob_store("b", {"type": "fs", "path": str(tmp_path / "blobs")}, data)
    directory = InternalDirectory(data)
    manager = DirectoryManager(directory)
    await manager.create_domain("example.com")
    jane = await manager.create_principal("jane", emails=["jane@example.com"])
    await manager.create_principal("joe", emails=["joe@example.com"])
    mail = MailStore(data, GroupCommitter(data, blobs))
    delivery = Delivery(mail, blobs, directory)
    await delivery.deliver(RAW, "a@remote.test", ["jane@example.com", "joe@example.com"])
    await delivery.deliver(RAW + b"2", "a@remote.test", ["jane@example.com"])
    blob_id = (await mail.email(jane.id, (await mail.all_email_ids(jane.id))[0])).blob_id
    await manager.delete("jane")
    assert await purge_deleted_accounts(mail) == 1
    assert await mail.all_email_ids(jane.id) == []
    assert await mail.mailboxes(jane.id) == []
    assert await mail.state(jane.id) is None
    prefix = bytes([keys.CHANGE]) + keys.u32(jane.id)
    assert await data.range(prefix, keys.end_of(prefix)) == []
    joe = await directory.principal("joe")
    assert len(await mail.all_email_ids(joe.id)) == 1, "other accounts untouched"
    assert await blobs.linked(blob_id), "joe still references the shared blob"
    assert await purge_deleted_accounts(mail) == 0, "the tombstone is gone"
    await blobs.close()
    await data.close()
