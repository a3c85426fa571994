"""The same server driven by imapclient (IMAPClient 4), whose response parser is strict:
every response it turns into Python values is checked against what RFC 9051 says it holds."""
from __future__ import annotations

import datetime
import time

import pytest
from imapclient import IMAPClient
from imapclient.response_types import Envelope

from tests.imap.imap_env import MESSAGE, MULTIPART, imap_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = imap_server(tmp_path_factory.mktemp("imapclient"))
    yield server
    server.stop()


@pytest.fixture
def client(srv):
    c = IMAPClient("127.0.0.1", port=srv.ports["imap"], ssl=False, timeout=10)
    c.login("alice", "alice-pw")
    yield c
    c.logout()


def test_capabilities_namespace_id(client):
    assert b"IMAP4REV1" in client.capabilities()
    for cap in (b"IMAP4REV2", b"IDLE", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"QRESYNC", b"ACL",
                b"ESEARCH", b"SORT", b"THREAD=REFERENCES", b"QUOTA", b"MULTIAPPEND"):
        assert client.has_capability(cap.decode()), cap
    ns = client.namespace()
    assert ns.personal == (("", "/"),) and ns.other == (("Shared Folders/", "/"),)
    ident = client.id_({"name": "test"})[0]  # the parenthesized list of field, value
    assert dict(zip(ident[::2], ident[1::2], strict=True))[b"name"] == b"stalwart-mp"


def test_folders(client):
    folders = {name: flags for flags, _, name in client.list_folders()}
    assert folders["Sent"] == (b"\\HasNoChildren", b"\\Sent")
    client.create_folder("IC/Sub")
    assert client.folder_exists("IC/Sub") and client.folder_exists("IC")
    client.rename_folder("IC/Sub", "IC/Renamed")
    assert [n for _, _, n in client.list_folders("IC")] == ["IC/Renamed"]
    status = client.folder_status("IC/Renamed", ["MESSAGES", "UIDNEXT", "SIZE"])
    assert status == {b"MESSAGES": 0, b"UIDNEXT": 1, b"SIZE": 0}
    client.unsubscribe_folder("IC/Renamed")
    assert "IC/Renamed" not in [n for _, _, n in client.list_sub_folders("IC")]
    client.delete_folder("IC/Renamed")
    assert not client.folder_exists("IC/Renamed")


def test_append_select_fetch_parsed(client):
    client.create_folder("ICfetch")
    when = datetime.datetime(2024, 2, 1, 10, 0, tzinfo=datetime.UTC)
    result = client.append("ICfetch", MULTIPART, flags=[b"\\Flagged"], msg_time=when)
    assert b"APPENDUID" in result
    info = client.select_folder("ICfetch")
    assert info[b"EXISTS"] == 1 and info[b"UIDNEXT"] == 2 and info[b"READ-WRITE"]
    data = client.fetch([1], ["ENVELOPE", "BODYSTRUCTURE", "FLAGS", "RFC822.SIZE",
                              "INTERNALDATE", "BODY.PEEK[1]", "BINARY.SIZE[2]"])[1]
    env = data[b"ENVELOPE"]
    assert isinstance(env, Envelope) and env.subject == b"Parts"
    assert env.from_[0].mailbox == b"bob" and env.from_[0].host == b"remote.test"
    assert data[b"FLAGS"] == (b"\\Flagged",)
    assert data[b"RFC822.SIZE"] == len(MULTIPART)
    assert data[b"INTERNALDATE"].replace(tzinfo=None) == datetime.datetime(2024, 2, 1, 10, 0) \
        or data[b"INTERNALDATE"].astimezone(datetime.UTC) == when
    bs = data[b"BODYSTRUCTURE"]
    assert bs.is_multipart and bs[1] == b"mixed"
    assert data[b"BODY[1]"] == b"First part."
    assert data[b"BINARY.SIZE[2]"] == 5  # the content has NUL: sent as literal8, not here


def test_flags_search_sort_thread(client):
    client.create_folder("ICsearch")
    for subject in (b"Alpha", b"Beta", b"Re: Alpha"):
        client.append("ICsearch", MESSAGE.replace(b"Hello there", subject))
    client.select_folder("ICsearch")
    # keywords are case-insensitive (RFC 9051 §2.3.2); the model keeps them in lower case
    assert client.add_flags([2], [b"\\Seen", b"$Label"])[2] == (b"$label", b"\\Seen")
    assert client.remove_flags([2], [b"$Label"])[2] == (b"\\Seen",)
    assert client.set_flags([3], [b"\\Answered"])[3] == (b"\\Answered",)
    assert client.get_flags([1, 2, 3]) == {1: (), 2: (b"\\Seen",), 3: (b"\\Answered",)}
    assert client.search(["UNSEEN"]) == [1, 3]
    assert client.search(["SUBJECT", "alpha"]) == [1, 3]
    assert client.search(["OR", "ANSWERED", "SEEN"]) == [2, 3]
    assert client.sort(["SUBJECT"]) == [1, 3, 2]
    assert client.sort(["REVERSE", "ARRIVAL"]) == [3, 2, 1]
    assert client.thread("ORDEREDSUBJECT") == ((1, 3), (2,))


def test_copy_move_expunge_uidplus(client):
    client.create_folder("ICsrc")
    client.create_folder("ICdst")
    for _ in range(3):
        client.append("ICsrc", MESSAGE)
    client.select_folder("ICsrc")
    client.copy([1], "ICdst")
    client.move([2], "ICdst")
    assert client.search() == [1, 3]
    client.add_flags([1, 3], [b"\\Deleted"])
    client.uid_expunge([3])
    assert client.search() == [1]
    client.expunge()
    assert client.search() == []
    assert client.folder_status("ICdst", ["MESSAGES"])[b"MESSAGES"] == 2
    client.unselect_folder()


def test_condstore_and_multiappend(client):
    client.create_folder("ICcond")
    client.multiappend("ICcond", [MESSAGE, {"msg": MESSAGE, "flags": [b"\\Seen"]}])
    client.enable("CONDSTORE")
    info = client.select_folder("ICcond")
    highest = info[b"HIGHESTMODSEQ"]
    client.add_flags([1], [b"\\Flagged"])
    changed = client.fetch([1, 2], ["FLAGS"], modifiers=[f"CHANGEDSINCE {highest}"])
    assert list(changed) == [1] and changed[1][b"FLAGS"] == (b"\\Flagged",)
    assert changed[1][b"MODSEQ"][0] > highest
    assert client.get_flags([2])[2] == (b"\\Seen",)


def test_idle_quota_acl(srv, client):
    client.select_folder("INBOX")
    client.idle()
    other = IMAPClient("127.0.0.1", port=srv.ports["imap"], ssl=False, timeout=10)
    other.login("alice", "alice-pw")
    other.append("INBOX", MESSAGE)
    started = time.monotonic()
    responses = client.idle_check(timeout=2)
    client.idle_done()
    assert any(r[1] == b"EXISTS" for r in responses) and time.monotonic() - started < 1.5
    assert client.get_quota_root("INBOX")[0].quota_roots == []
    client.create_folder("ICacl")
    client.setacl("ICacl", "carol", "lr")
    assert client.getacl("ICacl") == [(b"alice", b"lrswipkxtea"), (b"carol", b"lr")]
    other.logout()
