"""Real IMAP client programs from Debian against a real server: isync (mbsync) syncing a
mailbox both ways, offlineimap3 and fetchmail. Each test is skipped when its program is
not installed (apt-get install isync offlineimap3 fetchmail); under REQUIRE_SERVICES=1
(CI) a missing program fails the test."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.imap.imap_env import MESSAGE, connect, imap_server
from tests.services import require_service


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = imap_server(tmp_path_factory.mktemp("imapclients"))
    yield server
    server.stop()


def need(program: str) -> str:
    """The program's path; skipped (failed under REQUIRE_SERVICES=1) when not installed."""
    def check() -> None:
        if shutil.which(program) is None:
            raise FileNotFoundError(f"{program} is not installed")

    require_service(program, check)
    return shutil.which(program)


def run(args: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, **kw)
    assert res.returncode == 0, f"{args[0]} failed ({res.returncode}):\n{res.stdout}\n" \
                                f"{res.stderr}"
    return res


def maildir_files(path) -> list:
    return sorted(p for sub in ("cur", "new") for p in (path / sub).glob("*")
                  if (path / sub).exists())


def test_mbsync_both_ways(srv, tmp_path):
    mbsync = need("mbsync")
    conn = connect(srv, "alice")
    conn.create("Projects")
    conn.append("INBOX", None, None, MESSAGE)
    conn.append("Projects", "(\\Flagged)", None, MESSAGE.replace(b"Hello there", b"Plan"))
    local = tmp_path / "mail"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""
IMAPAccount stalwart
Host 127.0.0.1
Port {srv.ports["imap"]}
User alice
Pass alice-pw
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account stalwart

MaildirStore local
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel sync
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
""")
    run([mbsync, "-c", str(rc), "-a"])
    inbox = maildir_files(local / "INBOX")
    # mbsync stores messages with LF line ends (and sends CRLF back)
    lf = MESSAGE.replace(b"\r\n", b"\n")
    assert len(inbox) == 1 and inbox[0].read_bytes().startswith(lf.split(b"\n\n")[0])
    assert inbox[0].read_bytes().endswith(b"\n\nHello Alice.\n")
    projects = maildir_files(local / "Projects")
    assert len(projects) == 1 and projects[0].name.endswith(",F")  # \Flagged -> F
    assert (local / "Sent").is_dir()  # every folder came down
    # the other way: a new local message, a local flag change and a new local folder
    new = MESSAGE.replace(b"Hello there", b"Written offline")
    (local / "INBOX" / "new" / "1700000000.local.test").write_bytes(new)
    inbox[0].rename(inbox[0].with_name(inbox[0].name.split(":2,")[0] + ":2,S"))
    for sub in ("cur", "new", "tmp"):
        (local / "Offline" / sub).mkdir(parents=True)
    (local / "Offline" / "new" / "1700000001.local.test").write_bytes(new)
    run([mbsync, "-c", str(rc), "-a"])
    conn.select("INBOX")
    _, data = conn.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    subjects_flags = [(d[0], d[1]) for d in data if isinstance(d, tuple)]
    assert len(subjects_flags) == 2
    assert b"\\Seen" in subjects_flags[0][0]
    assert subjects_flags[1][1] == b"Subject: Written offline\r\n\r\n"
    assert conn.status("Offline", "(MESSAGES)")[1] == [b'"Offline" (MESSAGES 1)']
    # a message expunged on the server disappears locally
    conn.store("1", "+FLAGS", "(\\Deleted)")
    conn.expunge()
    run([mbsync, "-c", str(rc), "-a"])
    assert len(maildir_files(local / "INBOX")) == 1
    conn.logout()


def test_offlineimap(srv, tmp_path):
    offlineimap = need("offlineimap")
    conn = connect(srv, "carol")
    conn.append("INBOX", "(\\Seen)", None, MESSAGE)
    conn.append("Drafts", "(\\Draft)", None, MESSAGE.replace(b"Hello there", b"Draft"))
    rc = tmp_path / "offlineimaprc"
    rc.write_text(f"""
[general]
accounts = test
metadata = {tmp_path}/meta
ui = quiet

[Account test]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {tmp_path}/oi

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {srv.ports["imap"]}
remoteuser = carol
remotepass = carol-pw
ssl = no
starttls = no
""")
    run([offlineimap, "-c", str(rc), "-o", "-u", "quiet"])
    inbox = maildir_files(tmp_path / "oi" / "INBOX")
    assert len(inbox) == 1 and inbox[0].name.endswith("S")
    assert inbox[0].read_bytes() == MESSAGE.replace(b"\r\n", b"\n")  # stored with LF
    drafts = maildir_files(tmp_path / "oi" / "Drafts")
    assert len(drafts) == 1 and drafts[0].name.endswith("D")
    # upload a local message
    (tmp_path / "oi" / "INBOX" / "new" / "1700000002_0.host,FMD5=x:2,").write_bytes(
        MESSAGE.replace(b"Hello there", b"From offlineimap"))
    run([offlineimap, "-c", str(rc), "-o", "-u", "quiet"])
    assert conn.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 2)']
    conn.logout()


def test_fetchmail(srv, tmp_path):
    fetchmail = need("fetchmail")
    conn = connect(srv, "bob")
    small = b"From: a@b.test\r\nSubject: fm\r\n\r\nhi\r\n"
    conn.append("INBOX", None, None, small)
    out = tmp_path / "delivered"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f"""
poll 127.0.0.1 service {srv.ports["imap"]} protocol IMAP auth password
    user "bob" password "bob-pw" is "bob" here
    sslproto '' no sslcertck
    mda "/bin/sh -c 'cat >> {out}'"
""")
    os.chmod(rc, 0o600)
    run([fetchmail, "-f", str(rc), "--nosyslog", "-v"], env={**os.environ, "HOME": str(tmp_path)})
    assert b"Subject: fm\r\n\r\nhi" in out.read_bytes().replace(b"\r\n", b"\n").replace(
        b"\n", b"\r\n")
    # fetchmail marks it seen and deletes it (no "keep"): the mailbox is empty afterwards
    assert conn.status("INBOX", "(MESSAGES)")[1] == [b'"INBOX" (MESSAGES 0)']
    conn.logout()


def test_curl(srv, tmp_path):
    """curl's IMAP client: LIST, upload (APPEND), fetch by UID, EXAMINE + SEARCH, over
    STARTTLS with --ssl-reqd."""
    curl = need("curl")
    base = f"imap://127.0.0.1:{srv.ports['imap']}"
    auth = ["-u", "erin:erin-pw", "--ssl-reqd", "-k", "-s", "-S"]
    listing = run([curl, *auth, base + "/"]).stdout
    assert '* LIST (\\HasNoChildren) "/" "INBOX"' in listing
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    run([curl, *auth, "-T", str(tmp_path / "m.eml"), base + "/Drafts"])
    fetched = run([curl, *auth, base + "/Drafts;UID=1"]).stdout
    assert fetched.replace("\r\n", "\n") == MESSAGE.decode().replace("\r\n", "\n")
    found = run([curl, *auth, base + "/Drafts?SUBJECT%20hello"]).stdout
    assert found.strip() == "* SEARCH 1"
