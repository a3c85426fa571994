"""``stalwart-mp mail import/export``: the real CLI on a real LMDB store with fs blobs."""
from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stalwart_mp.config.loader import load_file
from stalwart_mp.directory.internal import InternalDirectory
from stalwart_mp.directory.management import DirectoryManager
from stalwart_mp.events.bus import LocalEventBus
from stalwart_mp.mail.transfer import importer as importer_mod
from stalwart_mp.mail.transfer import maildir, mbox, open_session
from stalwart_mp.mail.transfer.importer import Checkpoint, Importer, maildir_messages
from stalwart_mp.store.configured import open_data_store
from stalwart_mp.store.progress import Progress
from tests.harness import BIN, Server, base_config, cli, free_port

T0 = 1_700_000_000


def _config(tmp: Path, http_port: int | None = None) -> Path:
    text = base_config(tmp, http_port or free_port(), workers=1).replace(
        'fts = "search"', 'fts = "search"\nblob = "blobs"'
    ) + '\n[store."blobs"]\ntype = "fs"\npath = "data/blobs"\n'
    path = tmp / "config.toml"
    path.write_text(text)
    return path


async def _create_accounts(config: Path, *names: str) -> None:
    cfg = load_file(config)
    data = await open_data_store(cfg)
    try:
        manager = DirectoryManager(InternalDirectory(data))
        await manager.create_domain("example.com")
        for name in names:
            await manager.create_principal(name, emails=[f"{name}@example.com"])
    finally:
        await data.close()


@pytest.fixture
async def config(tmp_path):
    path = _config(tmp_path)
    await _create_accounts(path, "jane", "john")
    return path


async def _account(config: Path, address: str) -> dict[tuple[str, ...], list[tuple]]:
    """Mailbox name levels -> [(raw, keywords, received_at)] in UID order."""
    from stalwart_mp.mail.transfer.exporter import mailbox_names

    out = {}
    async with open_session(load_file(config), address) as s:
        boxes = await s.store.mailboxes(s.acct)
        for mid, names in mailbox_names(boxes).items():
            rows = []
            for _uid, eid in await s.store.uid_index(s.acct, mid):
                email = await s.store.email(s.acct, eid)
                rows.append((await s.blobs.get(email.blob_id), sorted(email.keywords),
                             email.received_at))
            out[names] = rows
    return out


def _message(n: int, subject: str = "", body: bytes = b"") -> bytes:
    subject = subject or f"message {n}"
    return (f"From: Sender <s{n}@example.org>\r\nTo: jane@example.com\r\n"
            f"Subject: {subject}\r\nMessage-ID: <m{n}@example.org>\r\n"
            f"Date: Tue, 14 Nov 2023 22:13:{n % 60:02d} +0000\r\n\r\n").encode() + \
        (body or f"Body {n}\r\n".encode())


def _put(folder: Path, name: str, raw: bytes, mtime: float, sub: str = "cur") -> None:
    maildir.make_maildir(folder)
    path = folder / sub / name
    path.write_bytes(raw)
    os.utime(path, (mtime, mtime))


def _build_maildir(root: Path) -> dict[tuple[str, ...], list[tuple[bytes, set[str], int]]]:
    """A Maildir++ tree; returns what each folder holds, in order."""
    from_lines = b"Hi,\r\nFrom the start this line needs escaping\r\n>From quoted\r\n\r\n" \
        b"From here too.\r\n"
    folders = {
        (): [(_message(1), {"$seen"}, ":2,S"),
             (_message(2, "=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?="), {"$seen", "$answered",
                                                                       "$flagged"}, ":2,FRS"),
             (_message(3, body=from_lines), {"todo", "$label1"}, ":2,ab"),
             (_message(4), set(), "")],
        ("Work",): [(_message(5), {"$draft"}, ":2,D"), (_message(6), {"$deleted", "$seen"}, ":2,ST")],
        ("Work", "Projects"): [(_message(7, "Ünïcödé in raw UTF-8"), {"todo"}, ":2,a")],
        ("Résumé",): [(_message(8), {"$seen"}, ":2,S")],
        ("Sent",): [(_message(9), {"$seen"}, ":2,S")],
    }
    (root / "Maildir").mkdir(parents=True, exist_ok=True)
    expected = {}
    for names, msgs in folders.items():
        folder = maildir.folder_dir(root / "Maildir", names)
        maildir.make_maildir(folder)
        if names == ():
            (folder / maildir.KEYWORDS_FILE).write_text("0 todo\n1 $label1\n")
        if names == ("Work", "Projects"):
            (folder / maildir.KEYWORDS_FILE).write_text("0 todo\n")
        rows = []
        for i, (raw, keywords, info) in enumerate(msgs):
            mtime = T0 + 100 * len(expected) + i
            _put(folder, f"{mtime}.M{i}P99.host{info}", raw, mtime,
                 "new" if not info else "cur")
            rows.append((raw, keywords, mtime))
        expected[names] = rows
    return expected


def _read_maildir(root: Path) -> dict[tuple[str, ...], list[tuple[bytes, set[str], int]]]:
    out = {}
    for folder in maildir.folders(root):
        letters = maildir.read_keywords(folder.path)
        out[folder.names] = [(m.path.read_bytes(), set(maildir.keywords_of(m.flags, letters)),
                              int(m.mtime)) for m in maildir.messages(folder)]
    return out


def _run(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = cli(*args, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc


async def test_maildir_round_trip(tmp_path, config):
    expected = _build_maildir(tmp_path)
    first = _run("mail", "import", "--config", str(config), "--account", "jane@example.com",
                 "--maildir", str(tmp_path / "Maildir"))
    assert "9 messages imported" in first.stdout
    assert "3 mailboxes created" in first.stdout  # Work, Work/Projects, Résumé; Sent exists
    stored = await _account(config, "jane@example.com")
    assert stored[("Work", "Projects")][0][1] == ["todo"]
    assert stored[()][1][1] == ["$answered", "$flagged", "$seen"]
    assert [r[2] for r in stored[()]] == [r[2] for r in expected[()]]

    _run("mail", "export", "--config", str(config), "--account", "jane",
         "--maildir", str(tmp_path / "out1"))
    exported = _read_maildir(tmp_path / "out1")
    for names, rows in expected.items():
        assert exported[names] == rows, names
    assert set(exported) - set(expected) == {("Drafts",), ("Junk",), ("Trash",),
                                             ("Archive",)}
    assert (tmp_path / "out1" / ".R&AOk-sum&AOk-").is_dir()  # Dovecot's modified UTF-7

    again = _run("mail", "export", "--config", str(config), "--account", "jane",
                 "--maildir", str(tmp_path / "out1"))
    assert "0 messages written" in again.stdout and "9 already there" in again.stdout

    # export -> import into another account -> same order, flags, bytes, dates
    _run("mail", "import", "--config", str(config), "--account", "john@example.com",
         "--maildir", str(tmp_path / "out1"))
    assert await _account(config, "john@example.com") == stored
    _run("mail", "export", "--config", str(config), "--account", "john",
         "--maildir", str(tmp_path / "out2"))
    assert _read_maildir(tmp_path / "out2") == exported

    rerun = _run("mail", "import", "--config", str(config), "--account", "jane@example.com",
                 "--maildir", str(tmp_path / "Maildir"))
    assert "0 messages imported" in rerun.stdout and "9 already imported" in rerun.stdout


MBOX = (
    b"From MAILER-DAEMON Tue Nov 14 22:13:20 2023\n"
    b"From: a@example.org\nSubject: one\nStatus: RO\nX-Status: AF\nX-Keywords: todo\n\n"
    b">From the body, escaped\n>>From twice escaped\nplain >From mid-line\n\n"
    b"From MAILER-DAEMON Wed Nov 15 08:00:00 2023\n"
    b"From: b@example.org\nSubject: two\n\nsecond\n\n"
    b"From MAILER-DAEMON Thu Nov 16 09:30:00 2023\n"
    b"From: c@example.org\r\nSubject: crlf\r\n\r\nthird\r\n\n"
)


async def test_mbox_round_trip(tmp_path, config):
    source = tmp_path / "in.mbox"
    source.write_bytes(MBOX)
    _run("mail", "import", "--config", str(config), "--account", "jane@example.com",
         "--mbox", str(source), "--mailbox", "Archive/2023")
    stored = (await _account(config, "jane@example.com"))[("Archive", "2023")]
    assert stored[0][0] == (b"From: a@example.org\nSubject: one\nStatus: RO\nX-Status: AF\n"
                            b"X-Keywords: todo\n\nFrom the body, escaped\n>From twice escaped"
                            b"\nplain >From mid-line\n")
    assert stored[0][1] == ["$answered", "$flagged", "$seen", "todo"]
    assert stored[2][0] == b"From: c@example.org\r\nSubject: crlf\r\n\r\nthird\r\n"
    assert [r[2] for r in stored] == [T0, 1700035200, 1700127000]

    out = tmp_path / "out.mbox"
    _run("mail", "export", "--config", str(config), "--account", "jane",
         "--mbox", str(out), "--mailbox", "archive/2023")
    assert out.read_bytes() == MBOX  # byte-exact, escaping included

    flagged = tmp_path / "flags.mbox"
    _run("mail", "export", "--config", str(config), "--account", "jane",
         "--mbox", str(flagged), "--mailbox", "Archive/2023", "--mbox-flags")
    _run("mail", "import", "--config", str(config), "--account", "john",
         "--mbox", str(flagged))
    inbox = (await _account(config, "john@example.com"))[()]
    assert [r[1] for r in inbox] == [r[1] for r in stored]
    assert inbox[0][0] == stored[0][0]  # the fields were replaced, not added
    assert b"Status: O\n" in inbox[1][0]


def test_mbox_reader_and_flag_headers(tmp_path):
    path = tmp_path / "x.mbox"
    path.write_bytes(MBOX)
    messages = list(mbox.read(path))
    assert [m.offset for m in messages] == [0, MBOX.index(b"From MAILER-DAEMON Wed"),
                                            MBOX.index(b"From MAILER-DAEMON Thu")]
    assert next(mbox.read(path, messages[1].offset)).raw == messages[1].raw
    assert mbox.count(path) == 3
    raw = messages[1].raw
    flagged = mbox.with_flag_headers(raw, ["$seen", "$draft", "custom"])
    assert flagged == (b"From: b@example.org\nSubject: two\nStatus: RO\nX-Status: T\n"
                       b"X-Keywords: custom\n\nsecond\n")
    assert mbox.flag_keywords(flagged) == ["$draft", "$seen", "custom"]


def test_modified_utf7_names():
    for name in ("Résumé", "a.b", "x&y", "日本語", "plain"):
        encoded = maildir.mutf7_encode(name)
        assert "." not in encoded and maildir.mutf7_decode(encoded) == name
    assert maildir.mutf7_encode("Résumé") == "R&AOk-sum&AOk-"


async def _used_count(config: Path, address: str) -> int:
    async with open_session(load_file(config), address) as s:
        return (await s.store.state(s.acct)).used_count


async def test_resume_after_sigkill(tmp_path, config):
    folder = tmp_path / "Big"
    count = 300
    for n in range(count):
        _put(folder, f"{T0 + n}.M{n}P1.host:2,S", _message(n, body=os.urandom(3000).hex()
                                                        .encode()), T0 + n)
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "stalwart-mp"), "mail", "import", "--config", str(config), "--account",
        "jane@example.com", "--maildir", str(folder),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.returncode is None:
        if await _used_count(config, "jane@example.com") >= 40:
            break
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    partial = await _used_count(config, "jane@example.com")
    assert 0 < partial < count, "the import was not interrupted midway"
    done = _run("mail", "import", "--config", str(config), "--account", "jane@example.com",
                "--maildir", str(folder))
    assert "already imported by an earlier run" in done.stdout
    inbox = (await _account(config, "jane@example.com"))[()]
    assert len(inbox) == count
    assert [r[2] for r in inbox] == [T0 + n for n in range(count)]  # once each, in order


async def test_crash_between_append_and_record_is_reconciled(tmp_path, config, monkeypatch):
    """A run dying after its appends committed but before it recorded them (the pending
    batch): the next run recognises them from the change log and imports nothing twice."""
    folder = tmp_path / "Small"
    for n in range(5):
        _put(folder, f"{T0 + n}.M{n}P1.host:2,", _message(n), T0 + n)
    real_save = Checkpoint.save

    async def save_then_die(self, data, done=None):
        if done:
            raise RuntimeError("killed")
        await real_save(self, data, done)

    cfg = load_file(config)
    async with open_session(cfg, "jane") as s:
        source = folder.resolve()
        cp = await Checkpoint.load(s.data, source, s.acct)
        monkeypatch.setattr(Checkpoint, "save", save_then_die)
        with pytest.raises(RuntimeError):
            await Importer(s, cp, Progress("t", stream=io.StringIO())).run(
                maildir_messages(source, None)[1])
        monkeypatch.setattr(Checkpoint, "save", real_save)
        assert (await s.store.state(s.acct)).used_count == 5
        cp = await Checkpoint.load(s.data, source, s.acct)
        assert cp.pending is not None
        again = Importer(s, cp, Progress("t", stream=io.StringIO()))
        await again.reconcile()
        stats = await again.run(maildir_messages(source, None)[1])
        assert (stats.imported, stats.skipped) == (0, 5)
        assert (await s.store.state(s.acct)).used_count == 5
    assert importer_mod.BATCH >= 5


async def test_import_while_server_runs(tmp_path):
    port = free_port()
    config = _config(tmp_path, port)
    await _create_accounts(config, "jane")
    server = Server(tmp_path, port, config.read_text()).start()
    events = []
    try:
        _build_maildir(tmp_path)
        async with LocalEventBus(server.run_dir / "events.sock") as bus:
            bus.subscribe("mail.", lambda topic, data: events.append({"account": int(topic.split(".")[1]), **data}))
            await bus.sync()
            result = await asyncio.to_thread(
                _run, "mail", "import", "--config", str(config), "--account",
                "jane@example.com", "--maildir", str(tmp_path / "Maildir"))
            for _ in range(100):
                if events and events[-1]["modseq"] >= 12:
                    break
                await asyncio.sleep(0.05)
        assert "9 messages imported" in result.stdout
        assert server.proc.poll() is None
        # IDLE sessions hear of the imported mail: one event per commit, modseq rising
        assert events and {e["account"] for e in events} == {events[0]["account"]}
        assert [e["modseq"] for e in events] == sorted(e["modseq"] for e in events)
    finally:
        assert server.stop() == 0
    assert sum(len(v) for v in (await _account(config, "jane")).values()) == 9


def test_cli_errors(tmp_path, config):
    bad = _run("mail", "import", "--config", str(config), "--account", "nobody@example.com",
               "--mbox", str(tmp_path / "missing"), ok=False)
    assert bad.returncode == 1 and 'no account has the address or name' in bad.stderr
    no_box = _run("mail", "export", "--config", str(config), "--account", "jane",
                  "--mbox", str(tmp_path / "x.mbox"), "--mailbox", "Nope", ok=False)
    assert no_box.returncode == 1 and 'no mailbox "Nope"' in no_box.stderr
