"""IMAP over loopback against a real ``stalwart-mp serve`` (two workers), driven by Python's
imaplib and, where exact bytes matter, a raw socket. Responses are checked against the RFCs,
not just for OK."""
from __future__ import annotations

import base64
import imaplib
import re
import smtplib
import time
import uuid

import pytest

from tests.imap.imap_env import MESSAGE, MULTIPART, Raw, connect, imap_server, tls_context


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = imap_server(tmp_path_factory.mktemp("imap"),
                         extra_imap='timeout.unauthenticated = "2s"\nmax-bad-commands = 5\n'
                                    "max-literal = 1000\nmax-message-size = 100000\n")
    yield server
    server.stop()


def box_name() -> str:
    return "t-" + uuid.uuid4().hex[:8]


def new_box(conn: imaplib.IMAP4, *messages: bytes, flags: str | None = None) -> str:
    name = box_name()
    assert conn.create(name)[0] == "OK"
    for m in messages:
        assert conn.append(name, flags, None, m)[0] == "OK"
    return name


def untagged(conn: imaplib.IMAP4, name: str) -> list:
    return conn.untagged_responses.pop(name, [])


# --- greeting, capabilities, authentication ---------------------------------------------------

def test_greeting_and_capabilities(srv):
    raw = Raw(srv.ports["imap"])
    assert raw.greeting.startswith(b"* OK [CAPABILITY IMAP4rev2 IMAP4rev1 ")
    lines = raw.cmd(b"CAPABILITY")
    caps = lines[0].split()
    assert caps[:2] == [b"*", b"CAPABILITY"]
    for cap in (b"IMAP4rev2", b"IDLE", b"UIDPLUS", b"MOVE", b"CONDSTORE", b"QRESYNC",
                b"STARTTLS", b"SASL-IR", b"AUTH=SCRAM-SHA-256", b"APPENDLIMIT=100000"):
        assert cap in caps
    assert b"LOGINDISABLED" not in caps  # loopback may log in before TLS
    assert lines[-1] == b"t OK CAPABILITY completed"
    assert raw.cmd(b"LOGOUT")[:2] == [b"* BYE mail.test.example logging out",
                                      b"t OK LOGOUT completed"]
    raw.close()


def test_login_wrong_and_right(srv):
    conn = connect(srv, None)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        conn.login("alice", "wrong")
    typ, data = conn.login("alice", "alice-pw")
    assert typ == "OK" and b"[CAPABILITY IMAP4rev2" in data[0]
    conn.logout()
    raw = Raw(srv.ports["imap"])
    raw.cmd(b"LOGIN alice alice-pw")
    # RFC 9051 §6.2.3: LOGIN is not valid once authenticated
    assert raw.cmd(b"LOGIN alice alice-pw") == [b"t BAD LOGIN: already authenticated"]
    raw.close()


def test_authenticate_plain_with_and_without_initial_response(srv):
    raw = Raw(srv.ports["imap"])
    token = base64.b64encode(b"\x00alice\x00alice-pw")
    lines = raw.cmd(b"AUTHENTICATE PLAIN " + token)  # SASL-IR, RFC 4959
    assert lines[-1].startswith(b"t OK [CAPABILITY IMAP4rev2")
    raw.close()
    raw = Raw(srv.ports["imap"])
    raw.send(b"a AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "
    raw.send(base64.b64encode(b"\x00alice\x00nope") + b"\r\n")
    assert raw.line() == b"a NO [AUTHENTICATIONFAILED] Authentication failed"
    raw.send(b"b AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "
    raw.send(b"*\r\n")  # RFC 9051 §6.2.2: the client cancels
    assert raw.line().startswith(b"b BAD")
    raw.close()


def test_authenticate_scram(srv):
    conn = connect(srv, None)
    # imaplib drives the exchange; a tiny SCRAM-SHA-256 client
    import hashlib
    import hmac
    import os

    nonce = base64.b64encode(os.urandom(18)).decode()
    state = {}

    def step(challenge: bytes) -> bytes:
        if not state:
            state["first"] = f"n=alice,r={nonce}"
            return ("n,," + state["first"]).encode()
        if "proof" not in state:
            text = challenge.decode()
            attrs = dict(kv.split("=", 1) for kv in text.split(","))
            salted = hashlib.pbkdf2_hmac("sha256", b"alice-pw", base64.b64decode(attrs["s"]),
                                         int(attrs["i"]))
            client_key = hmac.digest(salted, b"Client Key", "sha256")
            without = f"c=biws,r={attrs['r']}"
            auth_msg = f"{state['first']},{text},{without}".encode()
            sig = hmac.digest(hashlib.sha256(client_key).digest(), auth_msg, "sha256")
            state["proof"] = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig,
                                                                          strict=True)))
            return (without + ",p=" + state["proof"].decode()).encode()
        return b""

    typ, _ = conn.authenticate("SCRAM-SHA-256", step)
    assert typ == "OK"
    assert conn.select("INBOX")[0] == "OK"
    conn.logout()


def test_starttls_then_login_and_implicit_tls(srv):
    conn = connect(srv, None)
    typ, _ = conn.starttls(tls_context())
    assert typ == "OK"
    caps = conn.capability()[1][0].split()
    assert b"STARTTLS" not in caps
    assert conn.login("alice", "alice-pw")[0] == "OK"
    conn.logout()
    conn = imaplib.IMAP4_SSL("127.0.0.1", srv.ports["imaps"], ssl_context=tls_context())
    assert conn.login("alice", "alice-pw")[0] == "OK"
    conn.logout()


def test_login_disabled_before_tls_for_remote_clients(srv):
    """From an address that is not the loopback one the server trusts (127.0.0.2 stands in
    for a remote client), cleartext credentials wait for TLS (RFC 9051 §6.2.3, §11.1)."""
    import ssl

    raw = Raw(srv.ports["imap"], source="127.0.0.2")
    caps = raw.cmd(b"CAPABILITY")[0].split()
    assert b"LOGINDISABLED" in caps and b"STARTTLS" in caps
    assert b"AUTH=PLAIN" not in caps and b"AUTH=SCRAM-SHA-256" in caps
    assert raw.cmd(b"LOGIN alice alice-pw")[-1].startswith(b"t NO [PRIVACYREQUIRED]")
    assert raw.cmd(b"AUTHENTICATE PLAIN " + base64.b64encode(b"\x00alice\x00alice-pw")
                   )[-1].startswith(b"t NO [PRIVACYREQUIRED]")
    assert raw.cmd(b"STARTTLS")[-1] == b"t OK Begin TLS negotiation now"
    sock = tls_context().wrap_socket(raw.sock, server_hostname="localhost")
    sock.sendall(b"c CAPABILITY\r\nl LOGIN alice alice-pw\r\n")
    data = b""
    while b"l OK" not in data:
        data += sock.recv(4096)
    assert b"LOGINDISABLED" not in data and b"AUTH=PLAIN" in data
    sock.close()
    assert ssl


def test_commands_pipelined_before_starttls_are_dropped(srv):
    raw = Raw(srv.ports["imap"])
    raw.send(b"a STARTTLS\r\nb LOGIN alice alice-pw\r\n")
    assert raw.line() == b"a OK Begin TLS negotiation now"
    import ssl

    sock = tls_context().wrap_socket(raw.sock, server_hostname="localhost")
    sock.sendall(b"c NOOP\r\n")
    data = sock.recv(4096)
    assert data == b"c OK NOOP completed\r\n"  # b's LOGIN was never run
    sock.close()
    assert ssl


# --- mailboxes --------------------------------------------------------------------------------

def test_create_list_rename_delete_subscribe(srv):
    conn = connect(srv)
    top = box_name()
    assert conn.create(f"{top}/child/leaf")[0] == "OK"  # superiors created (§6.3.4)
    typ, data = conn.list(top, "*")
    assert data == [f'(\\HasChildren) "/" "{top}/child"'.encode(),
                    f'(\\HasNoChildren) "/" "{top}/child/leaf"'.encode()]
    typ, data = conn.list('""', f"{top}/%")
    assert data == [f'(\\HasChildren) "/" "{top}/child"'.encode()]
    typ, data = conn.create(top)
    assert typ == "NO" and data[0].startswith(b"[ALREADYEXISTS]")
    assert conn.rename(f"{top}/child", f"{top}/moved")[0] == "OK"
    assert [d.split(b'"/" ')[1] for d in conn.list(top, "*")[1]] == \
        [f'"{top}/moved"'.encode(), f'"{top}/moved/leaf"'.encode()]
    typ, data = conn.delete(f"{top}/moved")
    assert typ == "NO" and b"HASCHILDREN" in data[0]
    assert conn.delete(f"{top}/moved/leaf")[0] == "OK"
    assert conn.unsubscribe(f"{top}/moved")[0] == "OK"
    assert conn.lsub(top, "*")[1] == [f'() "/" "{top}"'.encode()] or \
        all(b"moved" not in d for d in conn.lsub(top, "*")[1] if d)
    typ, data = conn.select(f"{top}/gone")
    assert typ == "NO" and b"NONEXISTENT" in data[0]
    assert conn.delete("INBOX")[0] == "NO"
    conn.logout()


def test_list_root_special_use_and_status(srv):
    conn = connect(srv)
    typ, data = conn.list('""', '""')
    assert data == [b'(\\Noselect) "/" ""']
    raw_lines = conn._simple_command("LIST", "(SPECIAL-USE)", '""', "*")
    assert raw_lines[0] == "OK"
    specials = conn.untagged_responses.pop("LIST")
    assert b'(\\HasNoChildren \\Sent) "/" "Sent"' in specials
    assert all(b"INBOX" not in s for s in specials)
    name = new_box(conn, MESSAGE, MESSAGE)
    typ, data = conn.status(name, "(MESSAGES UIDNEXT UNSEEN SIZE RECENT)")
    assert data == [f'"{name}" (MESSAGES 2 UIDNEXT 3 UNSEEN 2 SIZE {2 * len(MESSAGE)} '
                    f'RECENT 0)'.encode()]
    # LIST-STATUS (RFC 5819)
    typ, _ = conn._simple_command("LIST", '""', name, "RETURN", "(CHILDREN STATUS (MESSAGES))")
    assert conn.untagged_responses.pop("STATUS") == [f'"{name}" (MESSAGES 2)'.encode()]
    # CREATE-SPECIAL-USE (RFC 6154 §3): a second \Sent is refused
    typ, data = conn._simple_command("CREATE", box_name(), "(USE (\\Sent))")
    assert typ == "NO"
    conn.logout()


def test_utf8_and_modified_utf7_names(srv):
    conn = connect(srv)
    assert conn.create('"Entw&APw-rfe-x"')[0] == "OK"
    assert b'"Entw&APw-rfe-x"' in b" ".join(conn.list('""', "Entw*")[1])
    conn.logout()
    raw = Raw(srv.ports["imap"])
    raw.cmd(b"LOGIN alice alice-pw")
    assert raw.cmd(b"ENABLE UTF8=ACCEPT")[0] == b"* ENABLED UTF8=ACCEPT"
    lines = raw.cmd(b'LIST "" "Entw*"')
    assert lines[0] == '* LIST (\\HasNoChildren) "/" "Entwürfe-x"'.encode()
    raw.close()


# --- APPEND, SELECT, FETCH --------------------------------------------------------------------

def test_select_responses(srv):
    conn = connect(srv)
    name = new_box(conn, MESSAGE, MESSAGE)
    raw = Raw(srv.ports["imap"])
    raw.cmd(b"LOGIN alice alice-pw")
    lines = raw.cmd(b"SELECT " + name.encode())
    assert lines[0].startswith(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft")
    assert b"* 2 EXISTS" in lines and b"* 0 RECENT" in lines
    assert any(re.fullmatch(rb"\* OK \[UIDVALIDITY \d+\] .*", x) for x in lines)
    assert any(x.startswith(b"* OK [UIDNEXT 3]") for x in lines)
    assert any(x.startswith(b"* OK [UNSEEN 1]") for x in lines)
    assert any(x.startswith(b"* OK [PERMANENTFLAGS (") and b"\\*" in x for x in lines)
    assert lines[-1] == b"t OK [READ-WRITE] SELECT completed"
    raw.cmd(b"ENABLE IMAP4rev2")
    lines = raw.cmd(b"EXAMINE " + name.encode())
    assert lines[0] == b"* OK [CLOSED] Previous mailbox closed"
    assert f'* LIST () "/" "{name}"'.encode() in lines
    assert lines[-1] == b"t OK [READ-ONLY] EXAMINE completed"
    assert raw.cmd(b"STORE 1 +FLAGS (\\Seen)")[-1].startswith(b"t NO [READ-ONLY]")
    raw.close()
    conn.logout()


def test_append_fetch_body_sections_byte_exact(srv):
    conn = connect(srv)
    name = new_box(conn)
    typ, data = conn.append(name, "(\\Flagged $Forwarded)", '"07-Feb-1994 21:52:25 -0800"',
                            MULTIPART)
    assert typ == "OK" and re.match(rb"\[APPENDUID \d+ 1\]", data[0])
    conn.select(name)
    typ, data = conn.fetch("1", "(FLAGS INTERNALDATE RFC822.SIZE)")
    assert data == [f'1 (FLAGS (\\Flagged $Forwarded) INTERNALDATE "08-Feb-1994 05:52:25 '
                    f'+0000" RFC822.SIZE {len(MULTIPART)})'.encode()]

    def body(item: str) -> bytes:
        typ, data = conn.fetch("1", f"({item})")
        assert typ == "OK", data
        return data[0][1]

    assert body("BODY.PEEK[]") == MULTIPART
    head_end = MULTIPART.index(b"\r\n\r\n") + 4
    assert body("BODY.PEEK[HEADER]") == MULTIPART[:head_end]
    assert body("BODY.PEEK[TEXT]") == MULTIPART[head_end:]
    assert body("BODY.PEEK[1]") == b"First part."
    assert body("BODY.PEEK[1.MIME]") == b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    assert body("BODY.PEEK[2]") == b"AAECAwQ="
    assert body("BODY.PEEK[HEADER.FIELDS (subject from)]") == \
        b"From: Bob <bob@remote.test>\r\nSubject: Parts\r\n\r\n"
    assert b"Subject" not in body("BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]")
    typ, data = conn.fetch("1", "(BODY.PEEK[]<6.4>)")
    assert data[0][0].endswith(b"BODY[]<6> {4}") and data[0][1] == MULTIPART[6:10]
    typ, data = conn.fetch("1", "(BINARY.PEEK[2] BINARY.SIZE[2])")
    assert b"BINARY.SIZE[2] 5" in b"".join(x if isinstance(x, bytes) else b"".join(x)
                                           for x in data)
    typ, data = conn.fetch("1", "(BODYSTRUCTURE)")
    assert b'("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 11 1 NIL NIL NIL NIL)' in \
        data[0]
    assert b'"mixed" ("boundary" "XX")' in data[0]
    # none of the PEEKs set \Seen; BODY[] does, and says so with FLAGS (RFC 9051 §6.4.5)
    typ, data = conn.fetch("1", "(BODY[1])")
    assert b"FLAGS (\\Flagged $Forwarded \\Seen)" in data[0][0] + (data[1] if len(data) > 1
                                                                     else b"")
    conn.logout()


def test_fetch_envelope_and_macros(srv):
    conn = connect(srv)
    name = new_box(conn, MESSAGE)
    conn.select(name)
    # BODY[] (not a PEEK) of the whole message: the bytes, and \\Seen set and reported
    _, data = conn.fetch("1", "(BODY[])")
    assert data[0][0] == b"1 (BODY[] {%d}" % len(MESSAGE) and data[0][1] == MESSAGE
    assert data[1] == b" FLAGS (\\Seen))"
    _typ, data = conn.fetch("1", "ALL")
    assert b'ENVELOPE ("Mon, 7 Feb 1994 21:52:25 -0800" "Hello there" (("Ann Example" NIL ' \
           b'"ann" "remote.test")) (("Ann Example" NIL "ann" "remote.test")) (("Ann Example" ' \
           b'NIL "ann" "remote.test")) ((NIL NIL "alice" "example.org")) NIL NIL NIL ' \
           b'"<m1@remote.test>")' in data[0]
    _, data = conn.uid("FETCH", "1:*", "(EMAILID THREADID SAVEDATE PREVIEW)")
    assert re.search(rb"UID 1 EMAILID \(M\d+\) THREADID \(T\d+\) SAVEDATE \"\d\d-\w{3}-\d{4} "
                     rb"[\d:]{8} \+0000\" PREVIEW \"Hello Alice.\"", data[0]), data
    # OBJECTID (RFC 8474 §6) and SAVEDATE (RFC 8514) search keys
    emailid, threadid = re.search(rb"EMAILID \((M\d+)\) THREADID \((T\d+)\)", data[0]).groups()
    assert conn.search(None, "EMAILID", emailid.decode())[1] == [b"1"]
    assert conn.search(None, "THREADID", threadid.decode())[1] == [b"1"]
    assert conn.search(None, "THREADID", "T999999")[1] == [b""]
    today = time.strftime("%d-%b-%Y", time.gmtime())
    assert conn.search(None, "SAVEDSINCE", today)[1] == [b"1"]
    assert conn.search(None, "SAVEDBEFORE", today)[1] == [b""]
    assert conn.search(None, "SAVEDATESUPPORTED")[1] == [b"1"]
    with pytest.raises(imaplib.IMAP4.error, match="beyond the last message"):
        conn.fetch("5", "FLAGS")
    conn.logout()


# --- STORE, SEARCH, SORT, COPY, MOVE, EXPUNGE --------------------------------------------------

def test_store_flags(srv):
    conn = connect(srv)
    name = new_box(conn, MESSAGE, MESSAGE, MESSAGE)
    conn.select(name)
    _, data = conn.store("1:2", "+FLAGS", "(\\Deleted $Junk)")
    assert data == [b"1 (FLAGS (\\Deleted $Junk))", b"2 (FLAGS (\\Deleted $Junk))"]
    _typ, data = conn.store("2", "-FLAGS", "($Junk)")
    assert data == [b"2 (FLAGS (\\Deleted))"]
    _, data = conn.store("3", "FLAGS.SILENT", "(\\Answered)")
    assert data == [None]
    _, data = conn.uid("STORE", "3", "FLAGS", "(\\Seen)")
    assert data == [b"3 (UID 3 FLAGS (\\Seen))"]
    with pytest.raises(imaplib.IMAP4.error, match="not a flag"):
        conn.store("1", "+FLAGS", "(\\Recentx)")
    conn.logout()


def test_search_and_sort(srv):
    conn = connect(srv)
    other = MESSAGE.replace(b"Subject: Hello there", b"Subject: Another topic").replace(
        b"Ann Example <ann", b"Zed <zed")
    name = new_box(conn, MESSAGE, other, MESSAGE)
    conn.select(name)
    conn.store("2", "+FLAGS", "(\\Flagged)")
    assert conn.search(None, "ALL")[1] == [b"1 2 3"]
    assert conn.search(None, "FLAGGED")[1] == [b"2"]
    assert conn.search(None, "UNFLAGGED SUBJECT hello")[1] == [b"1 3"]
    assert conn.search(None, "FROM", "zed")[1] == [b"2"]
    assert conn.search(None, "OR 1 FLAGGED")[1] == [b"1 2"]
    assert conn.search(None, "NOT 2:3")[1] == [b"1"]
    assert conn.search(None, "SENTBEFORE 1-Jan-1995 SENTSINCE 7-Feb-1994")[1] == [b"1 2 3"]
    assert conn.search(None, f"LARGER {len(MESSAGE) - 1} SMALLER {len(MESSAGE) + 1}")[1] == \
        [b"1 3"]
    assert conn.search(None, "HEADER Message-ID m1@remote")[1] == [b"1 2 3"]
    assert conn.search(None, "YOUNGER 3600")[1] == [b"1 2 3"]  # WITHIN (RFC 5032)
    # full text, right after APPEND (indexed or not yet)
    assert conn.search(None, "BODY", "alice")[1] == [b"1 2 3"]
    assert conn.search(None, "TEXT", "topic")[1] == [b"2"]
    assert conn.uid("SEARCH", "UID 2:*")[1] == [b"2 3"]
    typ, data = conn.search("KOI8-R", "ALL")
    assert typ == "NO" and data[0].startswith(b"[BADCHARSET (UTF-8 US-ASCII)]")
    # ESEARCH (RFC 4731) and SEARCHRES (RFC 5182)
    typ, _ = conn._simple_command("SEARCH", "RETURN (MIN MAX COUNT ALL) SUBJECT hello")
    assert re.fullmatch(rb'\(TAG "\w+"\) MIN 1 MAX 3 ALL 1,3 COUNT 2',
                        conn.untagged_responses.pop("ESEARCH")[0])
    typ, _ = conn._simple_command("SEARCH", "RETURN (SAVE) FLAGGED")
    assert typ == "OK" and "ESEARCH" not in conn.untagged_responses
    typ, data = conn.fetch("$", "(UID)")
    assert data == [b"2 (UID 2)"]
    # SORT (RFC 5256), REVERSE, SORT=DISPLAY
    typ, data = conn.sort("(SUBJECT)", "UTF-8", "ALL")
    assert data == [b"2 1 3"]
    typ, data = conn.sort("(REVERSE DISPLAYFROM)", "UTF-8", "ALL")
    assert data == [b"2 1 3"]
    conn.logout()


def test_copy_move_expunge_with_uidplus(srv):
    conn = connect(srv)
    src = new_box(conn, MESSAGE, MESSAGE, MESSAGE, MESSAGE)
    dst = new_box(conn)
    conn.select(src)
    typ, data = conn.copy("1:2", dst)
    assert re.fullmatch(rb"\[COPYUID \d+ 1:2 1:2\] COPY completed", data[0])
    typ, data = conn.copy("1", box_name())
    assert typ == "NO" and b"TRYCREATE" in data[0]
    typ, data = conn._simple_command("MOVE", "3", dst)
    assert typ == "OK"
    assert re.fullmatch(rb"\[COPYUID \d+ 3 3\] Moved", conn.untagged_responses.pop("OK")[-1])
    assert conn.untagged_responses.pop("EXPUNGE") == [b"3"]
    conn.store("1", "+FLAGS", "(\\Deleted)")
    conn.store("3", "+FLAGS", "(\\Deleted)")
    typ, data = conn.uid("EXPUNGE", "4")  # RFC 4315 §2.1: only UID 4 (now seq 3)
    assert conn.untagged_responses.pop("EXPUNGE") == [b"3"]
    typ, data = conn.expunge()
    assert data == [b"1"]
    assert conn.search(None, "ALL")[1] == [b"1"]
    assert conn.status(dst, "(MESSAGES)")[1] == [f'"{dst}" (MESSAGES 3)'.encode()]
    conn.store("1", "+FLAGS", "(\\Deleted)")
    assert conn.close()[0] == "OK"  # silent expunge
    assert conn.status(src, "(MESSAGES)")[1] == [f'"{src}" (MESSAGES 0)'.encode()]
    conn.logout()


def test_multiappend_and_quota(srv):
    raw = Raw(srv.ports["imap"])
    raw.cmd(b"LOGIN alice alice-pw")
    name = box_name().encode()
    raw.cmd(b"CREATE " + name)
    raw.send(b"t APPEND " + name + b" {5+}\r\nHi!\r\n (\\Seen) {5+}\r\nYo!\r\n\r\n")
    assert re.fullmatch(rb"t OK \[APPENDUID \d+ 1:2\] APPEND completed", raw.line())
    raw.close()
    # bob's quota is 300 bytes (RFC 9208 §4.1: NO [OVERQUOTA]); MULTIAPPEND is all or nothing
    raw = Raw(srv.ports["imap"])
    raw.cmd(b"LOGIN bob bob-pw")
    msg = b"Subject: q\r\n\r\n" + b"x" * 200
    raw.send(b"t APPEND INBOX {%d+}\r\n" % len(msg) + msg + b" {%d+}\r\n" % len(msg) + msg +
             b"\r\n")
    assert raw.line().startswith(b"t NO [OVERQUOTA]")
    assert raw.cmd(b"STATUS INBOX (MESSAGES)")[0] == b'* STATUS "INBOX" (MESSAGES 0)'
    # a message that cannot fit is refused before its literal is read: no continuation
    raw.send(b"s APPEND INBOX {400}\r\n")
    assert raw.line() == b"s NO [OVERQUOTA] Message would exceed the mailbox quota"
    lines = raw.cmd(b"GETQUOTAROOT INBOX")
    assert lines[:2] == [b'* QUOTAROOT "INBOX" ""', b'* QUOTA "" (STORAGE 0 0)']
    assert raw.cmd(b'SETQUOTA "" (STORAGE 1)')[-1].startswith(b"t NO [NOPERM]")
    raw.close()


# --- two sessions: changes by others (RFC 9051 §7.5.1) ------------------------------------------

def test_other_sessions_changes_on_noop(srv):
    a = connect(srv)
    name = new_box(a, MESSAGE, MESSAGE, MESSAGE)
    b = connect(srv)
    a.select(name)
    b.select(name)
    a.untagged_responses.clear()
    b.store("2", "+FLAGS", "(\\Flagged)")
    b.append(name, None, None, MESSAGE)
    b.store("1", "+FLAGS", "(\\Deleted)")
    b.expunge()
    # FETCH does not announce expunges (stable sequence numbers) but does announce new flags
    _, data = a.fetch("3", "(UID)")  # sequence numbers unchanged until announced
    assert b"3 (UID 3)" in data and b"2 (UID 2 FLAGS (\\Flagged))" in data
    assert "EXPUNGE" not in a.untagged_responses
    assert untagged(a, "EXISTS") == [b"4"]  # EXISTS may come with any response
    a.noop()
    assert untagged(a, "EXPUNGE") == [b"1"]
    b.store("1", "-FLAGS", "(\\Flagged)")  # UID 2 is now seq 1 in both sessions
    a.noop()
    assert untagged(a, "FETCH") == [b"1 (UID 2 FLAGS ())"]
    assert a.fetch("1:*", "(UID)")[1] == [b"1 (UID 2)", b"2 (UID 3)", b"3 (UID 4)"]
    a.logout()
    b.logout()


def _login_workers(srv, user: str) -> set[str]:
    """Worker pids that logged ``user`` in, from the server log."""
    text = (srv.folder / "server.log").read_text(errors="replace")
    return set(re.findall(rf"proc=worker pid=(\d+) .*msg=authenticated user={user}\b", text))


def test_idle_sees_smtp_delivery_within_a_second(srv):
    """IDLE sessions spread over both workers (checked in the log) all see a message
    delivered over SMTP, by whichever worker, within a second: the event bus carries it."""
    idlers: list[Raw] = []
    before = 0
    for _ in range(40):  # until both workers hold one (the kernel picks the worker)
        raw = Raw(srv.ports["imap"])
        raw.cmd(b"LOGIN dave dave-pw")
        before = int(raw.cmd(b"SELECT INBOX")[1].split()[1])
        idlers.append(raw)
        if len(idlers) >= 3 and len(_login_workers(srv, "dave")) >= 2:
            break
    assert len(_login_workers(srv, "dave")) == 2, "sessions did not spread over workers"
    for raw in idlers:
        raw.send(b"i IDLE\r\n")
        assert raw.line() == b"+ idling"
    with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], timeout=10) as smtp:
        smtp.sendmail("ann@remote.test", ["dave@example.org"], MESSAGE)
    sent = time.monotonic()
    for raw in idlers:
        raw.sock.settimeout(max(0.05, 1.0 - (time.monotonic() - sent)))
        assert raw.line() == f"* {before + 1} EXISTS".encode()
    assert time.monotonic() - sent < 1.0
    for raw in idlers:
        raw.send(b"DONE\r\n")
        assert raw.line() == b"i OK IDLE terminated"
        raw.close()


def test_qresync_across_workers(srv):
    """A QRESYNC session sees another session's expunge as VANISHED and its flag change as
    FETCH with MODSEQ, whichever worker each is in."""
    conn = connect(srv, "erin")
    name = new_box(conn, MESSAGE, MESSAGE, MESSAGE)
    sessions = []
    for _ in range(40):  # until both workers hold one (the kernel picks the worker)
        raw = Raw(srv.ports["imap"])
        raw.cmd(b"LOGIN erin erin-pw")
        raw.cmd(b"ENABLE QRESYNC")
        raw.cmd(b"SELECT " + name.encode())
        sessions.append(raw)
        if len(sessions) >= 3 and len(_login_workers(srv, "erin")) >= 2:
            break
    conn.select(name)
    conn.store("2", "+FLAGS", "(\\Answered)")
    conn.store("1", "+FLAGS", "(\\Deleted)")
    conn.expunge()
    for raw in sessions:
        lines = raw.cmd(b"NOOP")
        assert lines[0] == b"* VANISHED 1", lines
        assert re.fullmatch(rb"\* 1 FETCH \(UID 2 FLAGS \(\\Answered\) MODSEQ \(\d+\)\)",
                            lines[1]), lines
        raw.close()
    assert len(_login_workers(srv, "erin")) == 2
    conn.logout()


# --- CONDSTORE / QRESYNC (RFC 7162) ------------------------------------------------------------

def test_condstore_and_qresync(srv):
    raw = Raw(srv.ports["imap"])
    raw.cmd(b"LOGIN alice alice-pw")
    conn = connect(srv)
    name = new_box(conn, MESSAGE, MESSAGE, MESSAGE)
    lines = raw.cmd(b"SELECT " + name.encode() + b" (CONDSTORE)")
    highest = int(next(x for x in lines if b"HIGHESTMODSEQ" in x).split()[3].rstrip(b"]"))
    validity = int(next(x for x in lines if b"UIDVALIDITY" in x).split()[3].rstrip(b"]"))
    lines = raw.cmd(b"STORE 2 +FLAGS (\\Seen)")
    m = re.fullmatch(rb"\* 2 FETCH \(FLAGS \(\\Seen\) MODSEQ \((\d+)\)\)", lines[0])
    assert m and int(m.group(1)) > highest
    lines = raw.cmd(b"FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % highest)
    assert len(lines) == 2 and lines[0].startswith(b"* 2 FETCH (FLAGS (\\Seen) MODSEQ")
    lines = raw.cmd(b"STORE 2 (UNCHANGEDSINCE %d) +FLAGS (\\Flagged)" % highest)
    assert lines[-1] == b"t OK [MODIFIED 2] Conditional STORE failed for some messages"
    assert raw.cmd(b"SEARCH MODSEQ %d" % (highest + 1))[0] == \
        b"* SEARCH 2 (MODSEQ %d)" % int(m.group(1))
    # QRESYNC: another session expunges UID 1; a resync reports it as VANISHED (EARLIER)
    conn.select(name)
    conn.store("1", "+FLAGS", "(\\Deleted)")
    conn.expunge()
    raw.cmd(b"ENABLE QRESYNC")
    lines = raw.cmd(b"SELECT %s (QRESYNC (%d %d 1:3))" % (name.encode(), validity, highest))
    assert b"* VANISHED (EARLIER) 1" in lines
    assert any(re.fullmatch(rb"\* 1 FETCH \(UID 2 FLAGS \(\\Seen\) MODSEQ \(\d+\)\)", x)
               for x in lines), lines
    conn.store("1", "+FLAGS", "(\\Deleted)")
    conn.expunge()
    assert raw.cmd(b"NOOP")[0] == b"* VANISHED 2"
    raw.close()
    conn.logout()


# --- extensions of any state ------------------------------------------------------------------

def test_enable_id_namespace_unauthenticate(srv):
    raw = Raw(srv.ports["imap"])
    assert raw.cmd(b'ID ("name" "test")')[0] == \
        b'* ID ("name" "stalwart-mp" "vendor" "stalwart-mp" "support-url" "https://stalw.art")'
    raw.cmd(b"LOGIN alice alice-pw")
    assert raw.cmd(b"ENABLE CONDSTORE X-UNKNOWN")[0] == b"* ENABLED CONDSTORE"
    assert raw.cmd(b"NAMESPACE")[0] == b'* NAMESPACE (("" "/")) (("Shared Folders/" "/")) NIL'
    assert raw.cmd(b"UNAUTHENTICATE")[-1] == b"t OK UNAUTHENTICATE completed"
    assert raw.cmd(b"SELECT INBOX")[-1].startswith(b"t BAD")
    raw.close()


# --- bad input and faults -----------------------------------------------------------------------

def test_malformed_commands_get_bad_and_session_continues(srv):
    raw = Raw(srv.ports["imap"])
    for line, reason in [(b"a1 FROB", b"unknown command FROB"),
                         (b"a2 LOGIN", b"expected a space"),
                         (b"a3 SELECT INBOX", b"not authenticated")]:
        raw.send(line + b"\r\n")
        reply = raw.line()
        assert reply.startswith(line.split()[0] + b" BAD") and reason in reply
    assert raw.cmd(b"NOOP") == [b"t OK NOOP completed"]
    raw.close()


def test_too_many_bad_commands_disconnect(srv):
    raw = Raw(srv.ports["imap"])
    for i in range(4):
        assert raw.cmd(b"FROB", b"x%d" % i)[0].startswith(b"x%d BAD" % i)
    raw.send(b"x5 FROB\r\n")
    assert raw.line().startswith(b"x5 BAD")
    assert raw.line() == b"* BYE Too many invalid commands"
    assert raw.closed()


def test_oversized_literal_refused_before_reading(srv):
    raw = Raw(srv.ports["imap"])
    raw.send(b"a LOGIN {5000}\r\n")  # max-literal = 1000: no continuation is sent
    assert raw.line() == b"a BAD [TOOBIG] Literal of 5000 octets is over the limit of 1000"
    raw.cmd(b"LOGIN alice alice-pw")
    raw.send(b"b APPEND INBOX {200000}\r\n")  # over APPENDLIMIT
    assert raw.line().startswith(b"b NO [TOOBIG]")
    assert raw.cmd(b"NOOP")[-1] == b"t OK NOOP completed"
    raw.close()


def test_unauthenticated_idle_timeout(srv):
    raw = Raw(srv.ports["imap"])
    raw.sock.settimeout(6)
    assert raw.line() == b"* BYE Idle timeout, closing connection"
    assert raw.closed()


def test_client_vanishing_mid_append_leaves_nothing(srv):
    conn = connect(srv)
    name = new_box(conn)
    raw = Raw(srv.ports["imap"])
    raw.cmd(b"LOGIN alice alice-pw")
    raw.send(b"a APPEND " + name.encode() + b" {1000}\r\n")
    assert raw.line().startswith(b"+ ")
    raw.send(b"Subject: half\r\n\r\n" + b"x" * 300)
    raw.close()
    time.sleep(0.5)
    assert conn.status(name, "(MESSAGES UIDNEXT)")[1] == \
        [f'"{name}" (MESSAGES 0 UIDNEXT 1)'.encode()]
    conn.logout()


# --- THREAD, REPLACE, COMPRESS -------------------------------------------------------------------

def _msg(subject: str, mid: str, refs: str = "", date: str = "Mon, 7 Feb 1994 21:52:25 -0800"
         ) -> bytes:
    head = f"From: a@b.test\r\nSubject: {subject}\r\nMessage-ID: <{mid}>\r\nDate: {date}\r\n"
    if refs:
        head += f"References: {refs}\r\n"
    return (head + "\r\nbody\r\n").encode()


def test_thread_orderedsubject_and_references(srv):
    conn = connect(srv)
    name = new_box(conn,
                   _msg("Topic", "a@x", date="Mon, 7 Feb 1994 10:00:00 +0000"),
                   _msg("Other", "b@x", date="Mon, 7 Feb 1994 11:00:00 +0000"),
                   _msg("Re: Topic", "c@x", "<a@x>", date="Mon, 7 Feb 1994 12:00:00 +0000"),
                   _msg("Re: Topic", "d@x", "<a@x> <c@x>",
                        date="Mon, 7 Feb 1994 13:00:00 +0000"),
                   _msg("Re: Topic", "e@x", "<a@x>", date="Mon, 7 Feb 1994 14:00:00 +0000"))
    conn.select(name)
    conn._simple_command("THREAD", "ORDEREDSUBJECT", "UTF-8", "ALL")
    assert conn.untagged_responses.pop("THREAD") == [b"(1 (3)(4)(5))(2)"]
    conn._simple_command("THREAD", "REFERENCES", "UTF-8", "ALL")
    assert conn.untagged_responses.pop("THREAD") == [b"(1 (3 4)(5))(2)"]
    _, data = conn.uid("THREAD", "REFERENCES", "UTF-8", "NOT 2")
    assert data == [b"(1 (3 4)(5))"]
    conn.logout()


def test_replace(srv):
    conn = connect(srv)
    name = new_box(conn, MESSAGE, MESSAGE)
    dst = new_box(conn)
    raw = Raw(srv.ports["imap"])
    raw.cmd(b"LOGIN alice alice-pw")
    raw.cmd(b"SELECT " + name.encode())
    new = b"Subject: draft v2\r\n\r\nv2\r\n"
    lines = raw.cmd(b"REPLACE 1 %s (\\Draft) {%d+}\r\n" % (name.encode(), len(new)) + new)
    assert re.fullmatch(rb"\* OK \[APPENDUID \d+ 3\] Replacement appended", lines[0])
    # RFC 8508 §3.3: the old message's EXPUNGE, the new one's EXISTS (it is in this mailbox)
    assert lines[1:] == [b"* 1 EXPUNGE", b"* 2 EXISTS", b"t OK REPLACE completed"]
    lines = raw.cmd(b"UID REPLACE 2 %s {%d+}\r\n" % (dst.encode(), len(new)) + new)
    assert re.fullmatch(rb"\* OK \[APPENDUID \d+ 1\] Replacement appended", lines[0])
    assert raw.cmd(b"UID SEARCH ALL")[0] == b"* SEARCH 3"
    raw.close()
    conn.logout()


def test_compress_deflate(srv):
    import zlib

    raw = Raw(srv.ports["imap"])
    raw.cmd(b"LOGIN alice alice-pw")
    raw.send(b"c COMPRESS DEFLATE\r\n")
    assert raw.line() == b"c OK DEFLATE active"
    out = zlib.compressobj(6, zlib.DEFLATED, -15)
    inflate = zlib.decompressobj(-15)
    raw.send(out.compress(b"n NOOP\r\nl LIST \"\" INBOX\r\n") + out.flush(zlib.Z_SYNC_FLUSH))
    data = b""
    while b"l OK" not in data:
        data += inflate.decompress(raw.sock.recv(4096))
    assert data == (b"n OK NOOP completed\r\n* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n"
                    b"l OK LIST completed\r\n")
    raw.send(out.compress(b"c2 COMPRESS DEFLATE\r\n") + out.flush(zlib.Z_SYNC_FLUSH))
    data = b""
    while b"\r\n" not in data:
        data += inflate.decompress(raw.sock.recv(4096))
    assert data.startswith(b"c2 NO [COMPRESSIONACTIVE]")
    raw.close()


def test_metadata(srv):
    """RFC 5464: server and mailbox entries, DEPTH, MAXSIZE, removal with NIL, limits;
    a deleted mailbox's entries go with it."""
    raw = Raw(srv.ports["imap"])
    raw.cmd(b"LOGIN alice alice-pw")
    name = box_name().encode()
    raw.cmd(b"CREATE " + name)
    value = b"line one\r\nline two"
    lines = raw.cmd(b'SETMETADATA %s (/private/comment "Team box" /shared/vendor/x/a "1" '
                    b"/shared/vendor/x/a/b {%d+}\r\n%s)" % (name, len(value), value))
    assert lines == [b"t OK SETMETADATA completed"]
    assert raw.cmd(b'SETMETADATA "" (/private/comment "server note")')[-1].startswith(b"t OK")
    assert raw.cmd(b'GETMETADATA "" /private/comment') == [
        b'* METADATA "" (/private/comment "server note")', b"t OK GETMETADATA completed"]
    lines = raw.cmd(b"GETMETADATA %s (/private/comment /shared/vendor)" % name)
    assert lines == [b'* METADATA "%s" (/private/comment "Team box")' % name,
                     b"t OK GETMETADATA completed"]
    lines = raw.cmd(b"GETMETADATA (DEPTH infinity) %s /shared/vendor" % name)
    assert lines[0] == (b'* METADATA "%s" (/shared/vendor/x/a "1" /shared/vendor/x/a/b '
                        b"{%d}" % (name, len(value)))
    lines = raw.cmd(b"GETMETADATA (DEPTH infinity MAXSIZE 5) %s /shared" % name)
    assert lines == [b'* METADATA "%s" (/shared/vendor/x/a "1")' % name,
                     b"t OK [METADATA LONGENTRIES %d] GETMETADATA completed" % len(value)]
    assert raw.cmd(b"SETMETADATA %s (/private/comment NIL)" % name)[-1].startswith(b"t OK")
    assert raw.cmd(b"GETMETADATA %s /private/comment" % name) == [
        b"t OK GETMETADATA completed"]
    assert raw.cmd(b"SETMETADATA %s (/bogus/x 1)" % name)[-1].startswith(b"t BAD")
    assert raw.cmd(b"GETMETADATA nosuchbox /private/x")[-1].startswith(b"t NO [NONEXISTENT]")
    raw.cmd(b"DELETE " + name)
    raw.cmd(b"CREATE " + name)
    assert raw.cmd(b"GETMETADATA (DEPTH infinity) %s /shared" % name) == [
        b"t OK GETMETADATA completed"]
    raw.close()


def test_acl_shared_mailboxes_between_accounts(srv):
    """RFC 4314: alice shares a mailbox with carol, who finds it in the other users'
    namespace with exactly the rights granted; COPY crosses accounts; IDLE on the shared
    mailbox hears alice's changes; revoking hides it again."""
    alice = Raw(srv.ports["imap"])
    alice.cmd(b"LOGIN alice alice-pw")
    team = box_name().encode()
    alice.cmd(b"CREATE " + team)
    alice.send(b"a APPEND %s {%d+}\r\n%s\r\n" % (team, len(MESSAGE), MESSAGE))
    assert alice.line().startswith(b"a OK")
    assert alice.cmd(b"SETACL %s carol lr" % team) == [b"t OK SETACL completed"]
    assert alice.cmd(b"GETACL " + team)[0] == b'* ACL "%s" alice lrswipkxtea carol lr' % team
    assert alice.cmd(b"LISTRIGHTS %s carol" % team)[0] == \
        b'* LISTRIGHTS "%s" carol "" l r s w i p k x t e a' % team
    carol = Raw(srv.ports["imap"])
    carol.cmd(b"LOGIN carol carol-pw")
    assert carol.cmd(b"NAMESPACE")[0] == b'* NAMESPACE (("" "/")) (("Shared Folders/" "/")) NIL'
    shared = b"Shared Folders/alice/" + team
    lines = carol.cmd(b'LIST "" "Shared*"')
    assert b'* LIST (\\Noselect \\HasChildren) "/" "Shared Folders"' in lines
    assert b'* LIST (\\Noselect \\HasChildren) "/" "Shared Folders/alice"' in lines
    assert b'* LIST (\\HasNoChildren) "/" "%s"' % shared in lines
    assert carol.cmd(b'MYRIGHTS "%s"' % shared)[0] == b'* MYRIGHTS "%s" lr' % shared
    assert carol.cmd(b'GETACL "%s"' % shared)[-1].startswith(b"t NO [NOPERM]")
    lines = carol.cmd(b'SELECT "%s"' % shared)
    assert b"* 1 EXISTS" in lines and lines[-1] == b"t OK [READ-ONLY] SELECT completed"
    lines = carol.cmd(b"FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert lines[0] == b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {24}"
    assert carol.cmd(b"STORE 1 +FLAGS (\\Flagged)")[-1].startswith(b"t NO [READ-ONLY]")
    carol.send(b"p APPEND \"%s\" {%d+}\r\n%s\r\n" % (shared, len(MESSAGE), MESSAGE))
    assert carol.line().startswith(b"p NO [NOPERM]")
    # more rights: insert and write; COPY from carol's INBOX crosses accounts
    assert alice.cmd(b"SETACL %s carol +iws" % team)[-1] == b"t OK SETACL completed"
    assert carol.cmd(b'MYRIGHTS "%s"' % shared)[0] == b'* MYRIGHTS "%s" lrswi' % shared
    carol.send(b"q APPEND INBOX {%d+}\r\n%s\r\n" % (len(MESSAGE), MESSAGE))
    assert carol.line().startswith(b"q OK")
    carol.cmd(b"SELECT INBOX")
    lines = carol.cmd(b'UID COPY 1:* "%s"' % shared)
    assert re.fullmatch(rb"t OK \[COPYUID \d+ [\d:,]+ 2(:\d+)?\] COPY completed", lines[-1]), lines
    lines = carol.cmd(b'SELECT "%s"' % shared)
    assert lines[-1] == b"t OK [READ-WRITE] SELECT completed"
    assert carol.cmd(b"STORE 1 +FLAGS (\\Flagged)")[0] == b"* 1 FETCH (FLAGS (\\Flagged))"
    assert carol.cmd(b"STORE 1 +FLAGS (\\Deleted)")[-1].startswith(b"t NO [NOPERM]")
    # carol idles on alice's mailbox and hears alice's append (alice's account topic)
    carol.send(b"i IDLE\r\n")
    assert carol.line() == b"+ idling"
    alice.send(b"b APPEND %s {%d+}\r\n%s\r\n" % (team, len(MESSAGE), MESSAGE))
    assert alice.line().startswith(b"b OK")
    carol.sock.settimeout(2)
    assert re.fullmatch(rb"\* \d+ EXISTS", carol.line())
    carol.send(b"DONE\r\n")
    assert carol.until(b"i")[-1] == b"i OK IDLE terminated"
    # revoked: gone from carol's view
    assert alice.cmd(b"DELETEACL %s carol" % team)[-1] == b"t OK DELETEACL completed"
    assert carol.cmd(b'LIST "" "Shared Folders/*"') == [b"t OK LIST completed"]
    assert carol.cmd(b'STATUS "%s" (MESSAGES)' % shared)[-1].startswith(b"t NO [NONEXISTENT]")
    assert carol.cmd(b'DELETE "%s"' % shared)[-1].startswith(b"t NO [NOPERM]")
    alice.close()
    carol.close()


def _alice_box_with_a_message(srv) -> tuple[Raw, bytes]:
    alice = Raw(srv.ports["imap"])
    alice.cmd(b"LOGIN alice alice-pw")
    box = box_name().encode()
    alice.cmd(b"CREATE " + box)
    alice.send(b"a APPEND %s {%d+}\r\n%s\r\n" % (box, len(MESSAGE), MESSAGE))
    assert alice.line().startswith(b"a OK")
    return alice, box


def _assert_shared_view(srv, user: bytes, shared: bytes, rights: bytes | None) -> None:
    """``user`` lists, and may examine, the shared mailbox with exactly ``rights``; or,
    with None, neither sees nor opens it."""
    other = Raw(srv.ports["imap"])
    other.cmd(b"LOGIN %s %s-pw" % (user, user))
    listed = other.cmd(b'LIST "" "Shared Folders/alice/*"')
    examined = other.cmd(b'EXAMINE "%s"' % shared)
    if rights is None:
        assert listed == [b"t OK LIST completed"], user
        assert examined[-1].startswith(b"t NO [NONEXISTENT]"), user
    else:
        assert b'* LIST (\\HasNoChildren) "/" "%s"' % shared in listed, user
        assert b"* 1 EXISTS" in examined, user
        assert other.cmd(b'MYRIGHTS "%s"' % shared)[0] == \
            b'* MYRIGHTS "%s" %s' % (shared, rights)
    other.close()


def test_acl_anyone_shares_with_every_user(srv):
    """RFC 4314 §2: rights granted to "anyone" apply to every user, united with what is
    granted to the user by name; revoking "anyone" hides the mailbox again."""
    alice, notice = _alice_box_with_a_message(srv)
    assert alice.cmd(b"SETACL %s anyone lr" % notice) == [b"t OK SETACL completed"]
    assert alice.cmd(b"SETACL %s dave w" % notice) == [b"t OK SETACL completed"]
    assert alice.cmd(b"GETACL " + notice)[0] == \
        b'* ACL "%s" alice lrswipkxtea anyone lr dave w' % notice
    assert alice.cmd(b"SETACL %s authenticated lr" % notice)[-1].startswith(b"t NO [CANNOT]")
    shared = b"Shared Folders/alice/" + notice
    _assert_shared_view(srv, b"erin", shared, b"lr")
    _assert_shared_view(srv, b"dave", shared, b"lrw")
    assert alice.cmd(b"DELETEACL %s anyone" % notice)[-1] == b"t OK DELETEACL completed"
    _assert_shared_view(srv, b"erin", shared, None)
    alice.close()


def test_acl_granted_to_a_group(srv):
    """RFC 4314 §2 leaves group identifiers to the server: a grant to the directory group
    "team" applies to its members (dave, carol), united with their own grants, and to no
    one else; an unknown name is refused as a grantee."""
    alice, box = _alice_box_with_a_message(srv)
    assert alice.cmd(b"SETACL %s team lr" % box) == [b"t OK SETACL completed"]
    assert alice.cmd(b"SETACL %s dave +w" % box) == [b"t OK SETACL completed"]
    assert alice.cmd(b"GETACL " + box)[0] == b'* ACL "%s" alice lrswipkxtea dave w team lr' % box
    assert alice.cmd(b"SETACL %s nobody-here lr" % box)[-1].startswith(b"t NO [NONEXISTENT]")
    shared = b"Shared Folders/alice/" + box
    _assert_shared_view(srv, b"carol", shared, b"lr")
    _assert_shared_view(srv, b"dave", shared, b"lrw")
    _assert_shared_view(srv, b"erin", shared, None)   # not a member
    assert alice.cmd(b"DELETEACL %s team" % box)[-1] == b"t OK DELETEACL completed"
    _assert_shared_view(srv, b"carol", shared, None)
    _assert_shared_view(srv, b"dave", shared, None)    # "w" alone does not show it
    alice.close()


def test_registered_keywords_keep_their_spelling(srv):
    """Keywords are case-insensitive (stored in lower case, as JMAP has them); the
    registered ones and those clients compare case-sensitively (Apple Mail's flag colours,
    Thunderbird's NonJunk) come back in their usual spelling."""
    conn = connect(srv)
    name = new_box(conn, MESSAGE)
    conn.select(name)
    typ, data = conn.store("1", "+FLAGS", "($MailFlagBit0 NonJunk $Forwarded $label1)")
    assert typ == "OK"
    typ, data = conn.fetch("1", "(FLAGS)")
    flags = re.search(rb"FLAGS \(([^)]*)\)", data[0])[1].split()
    assert set(flags) >= {b"$MailFlagBit0", b"NonJunk", b"$Forwarded", b"$label1"}
    typ, data = conn.search(None, "KEYWORD", "$mailflagbit0")   # case-insensitive
    assert data[0] == b"1"
    conn.logout()


def test_imap4rev2_search_answers_with_esearch(srv):
    conn = connect(srv)
    name = new_box(conn, MESSAGE, MESSAGE)
    conn.logout()
    raw = Raw(srv.ports["imap"])
    raw.cmd(b"LOGIN alice alice-pw")
    raw.cmd(b"ENABLE IMAP4rev2")
    raw.cmd(b"SELECT " + name.encode())
    assert raw.cmd(b"SEARCH ALL", b"s1")[0] == b'* ESEARCH (TAG "s1") ALL 1:2'
    assert raw.cmd(b"UID SEARCH 2", b"s2")[0] == b'* ESEARCH (TAG "s2") UID ALL 2'
    assert raw.cmd(b"SEARCH DELETED", b"s3") == [b'* ESEARCH (TAG "s3")',
                                                  b"s3 OK SEARCH completed"]
    raw.close()


def test_binary_literal8_for_content_with_nul(srv):
    """RFC 3516 §4.2: decoded content with NUL goes as a literal8 ``~{n}``."""
    conn = connect(srv)
    name = new_box(conn, MULTIPART)
    conn.logout()
    raw = Raw(srv.ports["imap"])
    raw.cmd(b"LOGIN alice alice-pw")
    raw.cmd(b"SELECT " + name.encode())
    raw.send(b"b FETCH 1 (BINARY.PEEK[2] BINARY.PEEK[1])\r\n")
    data = b""
    while b"b OK" not in data:
        data += raw.sock.recv(4096)
    assert data.startswith(b"* 1 FETCH (BINARY[2] ~{5}\r\n\x00\x01\x02\x03\x04 "
                           b"BINARY[1] {11}\r\nFirst part.)\r\n")
    raw.close()


def test_graceful_stop_says_bye(tmp_path):
    """On SIGTERM the worker lets the running command finish, then every session gets
    ``* BYE [UNAVAILABLE]`` (RFC 9051 §7.1.5) before the connection closes."""
    import signal

    server = imap_server(tmp_path, workers=1)
    try:
        raw = Raw(server.ports["imap"])
        raw.cmd(b"LOGIN alice alice-pw")
        raw.cmd(b"SELECT INBOX")
        server.signal(signal.SIGTERM)
        raw.sock.settimeout(15)
        assert raw.line() == b"* BYE [UNAVAILABLE] Server shutting down"
        assert raw.closed()
    finally:
        server.stop()


def test_list_extended_subscriptions_and_status_items(srv):
    """LIST-EXTENDED (RFC 5258) selection and return options; STATUS items of RFC 9051,
    RFC 7162, RFC 8474 and RFC 7889."""
    raw = Raw(srv.ports["imap"])
    raw.cmd(b"LOGIN alice alice-pw")
    name = box_name().encode()
    raw.cmd(b"CREATE %s/a" % name)
    raw.cmd(b"UNSUBSCRIBE %s/a" % name)
    lines = raw.cmd(b'LIST (SUBSCRIBED) "" "%s*"' % name)
    assert lines == [b'* LIST (\\HasChildren \\Subscribed) "/" "%s"' % name,
                     b"t OK LIST completed"]
    lines = raw.cmd(b'LIST "" "%s*" RETURN (SUBSCRIBED)' % name)
    assert lines[:2] == [b'* LIST (\\HasChildren \\Subscribed) "/" "%s"' % name,
                         b'* LIST (\\HasNoChildren) "/" "%s/a"' % name]
    assert raw.cmd(b'LSUB "" "%s*"' % name)[:-1] == [
        b'* LSUB (\\HasChildren) "/" "%s"' % name]
    assert raw.cmd(b'LIST (RECURSIVEMATCH) "" "*"')[-1].startswith(b"t BAD")
    msg = b"Subject: s\r\n\r\nx\r\n"
    raw.send(b"a APPEND %s (\\Deleted) {%d+}\r\n%s\r\n" % (name, len(msg), msg))
    assert raw.line().startswith(b"a OK")
    lines = raw.cmd(b"STATUS %s (MESSAGES DELETED DELETED-STORAGE HIGHESTMODSEQ MAILBOXID "
                    b"APPENDLIMIT)" % name)
    assert re.fullmatch(rb'\* STATUS "%s" \(MESSAGES 1 DELETED 1 DELETED-STORAGE %d '
                        rb"HIGHESTMODSEQ \d+ MAILBOXID \(M\d+\) APPENDLIMIT 100000\)"
                        % (name, len(msg)), lines[0]), lines
    raw.close()
