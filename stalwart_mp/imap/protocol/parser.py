"""The IMAP command grammar (RFC 9051 §9, RFC 3501 §9 and the extensions' ABNF), sans-I/O.

``parse_command(data, utf8=...)`` takes one command as ``CommandReader`` assembled it
(literals inline) and returns a typed command from ``commands.py``, or raises ``ParseError``
with the tag (``"*"`` when even the tag is unreadable) and a reason a person can act on.
Grammar helpers raise at the first mismatch (mox's ``xtake…`` shape); the session turns the
error into a tagged BAD and carries on.
"""
from __future__ import annotations

import calendar
import re

from stalwart_mp.imap.protocol import commands as c
from stalwart_mp.imap.protocol import utf7

# RFC 9051 §9: atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials
# / resp-specials
_ATOM = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\\]]+")
_ASTRING = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\]+")        # ATOM-CHAR plus "]"
_LIST_CHARS = re.compile(rb"[^(){ \x00-\x1f\x7f\"\\]+")        # plus "%" "*" "]"
_TAG = re.compile(rb"[^(){ \x00-\x1f\x7f%*\"\\+]+")             # tag: no "+"
_NUMBER = re.compile(rb"\d+")
_SEQ = re.compile(rb"[0-9*:,$]+")
_LITERAL = re.compile(rb"(~?)\{(\d+)(\+?)\}\r\n")
_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_abbr) if m}
_DATE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})\Z")
_DATE_TIME = re.compile(r"([ \d]\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\Z")
MAX_NUMBER = 2**32 - 1
MAX_NUMBER64 = 2**63 - 1
MAX_DEPTH = 64


class ParseError(Exception):
    def __init__(self, tag: str, message: str, code: str | None = None):
        super().__init__(message)
        self.tag = tag
        self.message = message
        self.code = code   # response code for the BAD (e.g. "CLIENTBUG")


class _Fail(Exception):
    pass


class Parser:
    """Cursor over one command's bytes."""

    def __init__(self, data: bytes, utf8: bool = False):
        self.data = data
        self.pos = 0
        self.utf8 = utf8

    # --- primitives ----------------------------------------------------------------

    def fail(self, what: str) -> _Fail:
        near = self.data[self.pos:self.pos + 20].decode("utf-8", "replace")
        return _Fail(f"expected {what} at offset {self.pos}" + (f' near "{near}"' if near else
                                                                   " (end of command)"))

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self, n: int = 1) -> bytes:
        return self.data[self.pos:self.pos + n]

    def take(self, s: bytes) -> bool:
        if self.data[self.pos:self.pos + len(s)].upper() == s.upper():
            self.pos += len(s)
            return True
        return False

    def expect(self, s: bytes) -> None:
        if not self.take(s):
            raise self.fail(f'"{s.decode()}"')

    def sp(self) -> None:
        if self.peek() != b" ":
            raise self.fail("a space")
        self.pos += 1

    def end(self) -> None:
        if not self.at_end():
            raise self.fail("the end of the command")

    def _match(self, rx: re.Pattern, what: str) -> bytes:
        m = rx.match(self.data, self.pos)
        if not m:
            raise self.fail(what)
        self.pos = m.end()
        return m.group()

    def atom(self) -> str:
        return self._match(_ATOM, "an atom").decode("ascii", "replace")

    def number(self, limit: int = MAX_NUMBER) -> int:
        n = int(self._match(_NUMBER, "a number"))
        if n > limit:
            raise _Fail(f"number {n} is larger than {limit}")
        return n

    def nz_number(self) -> int:
        n = self.number()
        if n == 0:
            raise _Fail("expected a non-zero number")
        return n

    def literal(self) -> tuple[bytes, bool] | None:
        m = _LITERAL.match(self.data, self.pos)
        if not m:
            return None
        size = int(m.group(2))
        start = m.end()
        if start + size > len(self.data):
            raise _Fail("literal shorter than announced")
        self.pos = start + size
        return self.data[start:start + size], bool(m.group(1))

    def quoted(self) -> bytes | None:
        if self.peek() != b'"':
            return None
        self.pos += 1
        out = bytearray()
        while True:
            ch = self.data[self.pos:self.pos + 1]
            if not ch or ch in b"\r\n":
                raise _Fail("unterminated quoted string")
            self.pos += 1
            if ch == b'"':
                return bytes(out)
            if ch == b"\\":
                nxt = self.data[self.pos:self.pos + 1]
                if nxt not in (b'"', b"\\"):
                    raise _Fail('in a quoted string, "\\" may only escape "\\" or \'"\'')
                self.pos += 1
                ch = nxt
            elif ch == b"\x00":
                raise _Fail("NUL in a quoted string")
            out += ch

    def string_bytes(self) -> bytes:
        q = self.quoted()
        if q is not None:
            return q
        lit = self.literal()
        if lit is None:
            raise self.fail("a string")
        return lit[0]

    def string(self) -> str:
        return self._text(self.string_bytes())

    def _text(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("latin-1")

    def astring_bytes(self) -> bytes:
        if self.peek() in (b'"', b"{") or self.peek(2) == b"~{":
            return self.string_bytes()
        return self._match(_ASTRING, "an atom or a string")

    def astring(self) -> str:
        return self._text(self.astring_bytes())

    def nstring(self) -> str | None:
        if self.take(b"NIL"):
            return None
        return self.string()

    def mailbox(self) -> str:
        """RFC 9051 §9 mailbox: "INBOX" in any case is the inbox; rev1 names are modified
        UTF-7 (RFC 3501 §5.1.3), UTF-8 once enabled (RFC 9051 §5.1)."""
        return self._mailbox_name(self.astring_bytes())

    def list_mailbox(self) -> str:
        if self.peek() in (b'"', b"{"):
            raw = self.string_bytes()
        else:
            raw = self._match(_LIST_CHARS, "a mailbox pattern")
        return self._mailbox_name(raw, pattern=True)

    def _mailbox_name(self, raw: bytes, pattern: bool = False) -> str:
        if raw.upper() == b"INBOX":
            return "INBOX"
        if self.utf8 or any(b > 0x7F for b in raw):
            return self._text(raw)
        try:
            return utf7.decode(raw.decode("ascii"))
        except utf7.Utf7Error:
            return raw.decode("ascii")

    def flag(self) -> str:
        if self.take(b"\\"):
            if self.take(b"*"):
                return "\\*"
            return "\\" + self.atom()
        return self.atom()

    def flag_list(self) -> list[str]:
        self.expect(b"(")
        flags: list[str] = []
        while not self.take(b")"):
            if flags:
                self.sp()
            flags.append(self.flag())
        return flags

    def paren_list(self, item) -> list:
        """``"(" item *(SP item) ")"``; an empty list is allowed."""
        self.expect(b"(")
        out: list = []
        while not self.take(b")"):
            if out:
                self.sp()
            out.append(item())
        return out

    def seq_set(self) -> c.SeqSet:
        """RFC 9051 §9 sequence-set, or "$" (RFC 5182 §2)."""
        raw = self._match(_SEQ, "a sequence set").decode()
        if raw == "$":
            return c.SeqSet(saved=True)
        ranges = []
        for item in raw.split(","):
            lo, sep, hi = item.partition(":")
            a = self._seq_number(lo)
            b = self._seq_number(hi) if sep else a
            ranges.append((a, b))
        return c.SeqSet(tuple(ranges))

    def _seq_number(self, text: str) -> int | None:
        if text == "*":
            return None
        if not text.isdigit() or text.startswith("0") or int(text) > MAX_NUMBER:
            raise _Fail(f'"{text}" is not a valid sequence number (1..4294967295 or *)')
        return int(text)

    def date(self) -> tuple[int, int, int]:
        """RFC 9051 §9 date: date-text or DQUOTE date-text DQUOTE."""
        quoted = self.take(b'"')
        text = self._match(re.compile(rb"[0-9A-Za-z-]+"), "a date (d-Mon-yyyy)").decode()
        if quoted:
            self.expect(b'"')
        m = _DATE.match(text)
        if not m or m.group(2).lower() not in _MONTHS:
            raise _Fail(f'"{text}" is not a date like 1-Feb-2024')
        return int(m.group(3)), _MONTHS[m.group(2).lower()], int(m.group(1))

    def date_time(self) -> float:
        """RFC 9051 §9 date-time: DQUOTE date-day-fixed "-" date-month "-" date-year SP time
        SP zone DQUOTE; seconds since the epoch."""
        raw = self.quoted()
        if raw is None:
            raise self.fail("a quoted date-time")
        m = _DATE_TIME.match(raw.decode("ascii", "replace"))
        if not m or m.group(2).lower() not in _MONTHS:
            raise _Fail(f'"{raw.decode(errors="replace")}" is not a date-time like '
                        '"01-Feb-2024 10:00:00 +0000"')
        day, mon, year = int(m.group(1)), _MONTHS[m.group(2).lower()], int(m.group(3))
        hh, mm, ss = int(m.group(4)), int(m.group(5)), int(m.group(6))
        if not (1 <= day <= 31 and hh < 24 and mm < 60 and ss < 61):
            raise _Fail(f'"{raw.decode()}" is out of range')
        offset = (int(m.group(8)) * 3600 + int(m.group(9)) * 60) * (1 if m.group(7) == "+"
                                                                     else -1)
        return float(calendar.timegm((year, mon, day, hh, mm, ss)) - offset)


# --- commands ------------------------------------------------------------------------

_SIMPLE = {"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT", "IDLE",
           "NAMESPACE", "UNAUTHENTICATE"}
_MAILBOX_ONLY = {"DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "GETQUOTAROOT"}
_UID_COMMANDS = {"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "SORT", "THREAD", "EXPUNGE",
                 "REPLACE"}


def parse_command(data: bytes, *, utf8: bool = False) -> c.Command:
    p = Parser(data, utf8)
    m = _TAG.match(data)
    if not m:
        raise ParseError("*", "expected a tag at the start of the command")
    tag = m.group().decode("ascii", "replace")
    p.pos = m.end()
    try:
        p.sp()
        name = p.atom().upper()
        uid = False
        if name == "UID":
            p.sp()
            name = p.atom().upper()
            uid = True
            if name not in _UID_COMMANDS:
                raise _Fail(f"UID {name} is not a command (UID works with "
                            f"{', '.join(sorted(_UID_COMMANDS))})")
        handler = _HANDLERS.get(name)
        if handler is None:
            raise ParseError(tag, f"unknown command {name}")
        cmd = handler(p, tag, name, uid)
        p.end()
        return cmd
    except _Fail as exc:
        raise ParseError(tag, str(exc)) from None
    except RecursionError:
        raise ParseError(tag, "nesting too deep") from None


def append_target(first_line: bytes, utf8: bool = False) -> str | None:
    """The mailbox of an APPEND from its first line, before its literal is read (to refuse
    a message over quota without reading it); None if it cannot be told."""
    p = Parser(first_line, utf8)
    try:
        p._match(_TAG, "a tag")
        p.sp()
        if p.atom().upper() != "APPEND":
            return None
        p.sp()
        return p.mailbox()
    except _Fail:
        return None


def _simple(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    if name == "EXPUNGE":
        seq = None
        if uid:
            p.sp()
            seq = p.seq_set()
        return c.Expunge(tag, name, uid, seq)
    return c.Simple(tag, name, uid)


def _login(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    user = p.astring()
    p.sp()
    return c.Login(tag, name, uid, user, p.astring())


def _authenticate(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    mech = p.atom().upper()
    initial = None
    if p.take(b" "):  # RFC 4959 §3: base64 or "="
        initial = p._match(re.compile(rb"[A-Za-z0-9+/]*=*"), "a base64 initial response")
        if not initial:
            raise p.fail("a base64 initial response")
    return c.Authenticate(tag, name, uid, mech, initial)


def _enable(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    caps = []
    while p.take(b" "):
        caps.append(p.atom().upper())
    if not caps:
        raise p.fail("a capability to enable")
    return c.Enable(tag, name, uid, caps)


def _select(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    cmd = c.Select(tag, name, uid, p.mailbox())
    if p.take(b" "):  # RFC 4466 §2.1 select-params
        p.expect(b"(")
        first = True
        while not p.take(b")"):
            if not first:
                p.sp()
            first = False
            param = p.atom().upper()
            if param == "CONDSTORE":
                cmd.condstore = True
            elif param == "QRESYNC":  # RFC 7162 §3.2.5
                p.sp()
                p.expect(b"(")
                validity = p.nz_number()
                p.sp()
                modseq = p.number(MAX_NUMBER64)
                known = match = None
                if p.take(b" "):
                    if p.peek() != b"(":
                        known = p.seq_set()
                        p.take(b" ")
                    if p.peek() == b"(":
                        p.expect(b"(")
                        seqs = p.seq_set()
                        p.sp()
                        uids = p.seq_set()
                        p.expect(b")")
                        match = (seqs, uids)
                p.expect(b")")
                cmd.qresync = (validity, modseq, known, match)
            else:
                raise _Fail(f"unknown SELECT parameter {param}")
    return cmd


def _mailbox_only(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    return c.MailboxCommand(tag, name, uid, p.mailbox())


def _create(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    cmd = c.Create(tag, name, uid, p.mailbox())
    if p.take(b" "):  # RFC 6154 §3 create-param USE (...)
        p.expect(b"(")
        while not p.take(b")"):
            param = p.atom().upper()
            if param != "USE":
                raise _Fail(f"unknown CREATE parameter {param}")
            p.sp()
            cmd.special_use += p.flag_list()
            p.take(b" ")
    return cmd


def _rename(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    old = p.mailbox()
    p.sp()
    return c.Rename(tag, name, uid, old, p.mailbox())


def _list(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    cmd = c.ListCmd(tag, name, uid)
    p.sp()
    if name == "LIST" and p.peek() == b"(":  # RFC 5258 §3 list-select-opts
        cmd.select_options = [o.upper() for o in p.paren_list(p.atom)]
        cmd.extended = True
        p.sp()
    cmd.reference = p.mailbox()
    p.sp()
    if name == "LIST" and p.peek() == b"(":
        cmd.patterns = p.paren_list(p.list_mailbox)
        cmd.extended = True
    else:
        cmd.patterns = [p.list_mailbox()]
    if name == "LIST" and p.take(b" "):  # list-return-opts
        p.expect(b"RETURN ")
        p.expect(b"(")
        first = True
        while not p.take(b")"):
            if not first:
                p.sp()
            first = False
            opt = p.atom().upper()
            if opt == "STATUS":  # RFC 5819 §2
                p.sp()
                cmd.status_items = [i.upper() for i in p.paren_list(p.atom)]
            cmd.return_options.append(opt)
        cmd.extended = True
    return cmd


_STATUS_ITEMS = {"MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT",
                 "HIGHESTMODSEQ", "APPENDLIMIT", "MAILBOXID", "DELETED-STORAGE"}


def _status(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    mailbox = p.mailbox()
    p.sp()
    items = [i.upper() for i in p.paren_list(p.atom)]
    if not items:
        raise _Fail("STATUS needs at least one item")
    for item in items:
        if item not in _STATUS_ITEMS:
            raise _Fail(f"unknown STATUS item {item}")
    return c.Status(tag, name, uid, mailbox, items)


def _append_message(p: Parser) -> c.AppendMessage:
    """RFC 9051 §9 append-message: [flag-list SP] [date-time SP] literal (or literal8,
    RFC 3516 §4.4; UTF8 (literal8), RFC 6855 §4)."""
    flags: list[str] = []
    date = None
    if p.peek() == b"(":
        flags = p.flag_list()
        p.sp()
    if p.peek() == b'"':
        date = p.date_time()
        p.sp()
    if p.take(b"UTF8 "):
        p.expect(b"(")
        lit = p.literal()
        if lit is None:
            raise p.fail("a literal")
        p.expect(b")")
    else:
        lit = p.literal()
    if lit is None:
        raise p.fail("the message as a literal {n}")
    return c.AppendMessage(flags, date, lit[0], lit[1])


def _append(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    cmd = c.Append(tag, name, uid, p.mailbox())
    while p.take(b" "):  # RFC 3502 §6.3.11: one or more append-message
        cmd.messages.append(_append_message(p))
    if not cmd.messages:
        raise p.fail("a message literal")
    return cmd


def _replace(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    seq = p.seq_set()
    if seq.saved or len(seq.ranges) != 1 or seq.ranges[0][0] != seq.ranges[0][1] or \
            seq.ranges[0][0] is None:
        raise _Fail("REPLACE names exactly one message (RFC 8508 §3)")
    p.sp()
    mailbox = p.mailbox()
    p.sp()
    return c.Replace(tag, name, uid, seq, mailbox, _append_message(p))


def _entry(p: Parser) -> str:
    """RFC 5464 §5 entry: an astring naming /private/... or /shared/..."""
    return p.astring()


def _getmetadata(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    cmd = c.Metadata(tag, name, uid)
    p.sp()
    if p.peek() == b"(":  # options: MAXSIZE n, DEPTH 0 / 1 / infinity
        p.pos += 1
        while not p.take(b")"):
            opt = p.atom().upper()
            p.sp()
            if opt == "MAXSIZE":
                cmd.maxsize = p.number()
            elif opt == "DEPTH":
                depth = p.atom().lower()
                if depth not in ("0", "1", "infinity"):
                    raise _Fail(f"DEPTH must be 0, 1 or infinity, not {depth}")
                cmd.depth = depth
            else:
                raise _Fail(f"unknown GETMETADATA option {opt}")
            p.take(b" ")
        p.sp()
    cmd.mailbox = p.mailbox()
    p.sp()
    cmd.entries = p.paren_list(lambda: _entry(p)) if p.peek() == b"(" else [_entry(p)]
    if not cmd.entries:
        raise _Fail("GETMETADATA needs at least one entry")
    return cmd


def _setmetadata(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    cmd = c.Metadata(tag, name, uid)
    p.sp()
    cmd.mailbox = p.mailbox()
    p.sp()
    p.expect(b"(")
    while True:
        entry = _entry(p)
        p.sp()
        if p.take(b"NIL"):
            cmd.values[entry] = None
        else:
            cmd.values[entry] = p.string_bytes()
        if p.take(b")"):
            break
        p.sp()
    return cmd


def _acl(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    cmd = c.Acl(tag, name, uid, p.mailbox())
    if name in ("SETACL", "DELETEACL", "LISTRIGHTS"):
        p.sp()
        cmd.identifier = p.astring()
    if name == "SETACL":
        p.sp()
        cmd.rights = p.astring()
    return cmd


def _compress(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    return c.Compress(tag, name, uid, p.atom().upper())


# --- SEARCH (RFC 9051 §6.4.4), SORT and THREAD (RFC 5256) ---------------------------------

_SEARCH_FLAGS = {"ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft",
                 "FLAGGED": "\\Flagged", "SEEN": "\\Seen"}
_SEARCH_NOARG = {"ALL", "NEW", "OLD", "RECENT", *_SEARCH_FLAGS, *("UN" + f for f in
                                                                 _SEARCH_FLAGS)}
_SEARCH_STRING = {"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"}
_SEARCH_DATE = {"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE",
                "SAVEDBEFORE", "SAVEDON", "SAVEDSINCE"}
_SEARCH_NUMBER = {"LARGER", "SMALLER", "OLDER", "YOUNGER"}


def _search_key(p: Parser, depth: int = 0) -> c.SearchKey:
    if depth > MAX_DEPTH:
        raise _Fail("search keys nested too deep")
    if p.peek() == b"(":
        p.pos += 1
        items = [_search_key(p, depth + 1)]
        while p.take(b" "):
            items.append(_search_key(p, depth + 1))
        p.expect(b")")
        return items[0] if len(items) == 1 else c.SearchKey("AND", children=tuple(items))
    if p.peek() in (b"*", b"$") or p.peek().isdigit():
        return c.SearchKey("SEQ", p.seq_set())
    key = p.atom().upper()
    if key in _SEARCH_NOARG or key == "SAVEDATESUPPORTED":
        return c.SearchKey(key)
    p.sp()
    if key in _SEARCH_STRING:
        return c.SearchKey(key, p.astring())
    if key in _SEARCH_DATE:
        return c.SearchKey(key, p.date())
    if key in _SEARCH_NUMBER:
        return c.SearchKey(key, p.number(MAX_NUMBER64))
    if key in ("KEYWORD", "UNKEYWORD"):
        return c.SearchKey(key, p.atom())
    if key == "HEADER":
        field = p.astring()
        p.sp()
        return c.SearchKey(key, (field, p.astring()))
    if key == "UID":
        return c.SearchKey(key, p.seq_set())
    if key == "NOT":
        return c.SearchKey(key, children=(_search_key(p, depth + 1),))
    if key == "OR":
        a = _search_key(p, depth + 1)
        p.sp()
        return c.SearchKey(key, children=(a, _search_key(p, depth + 1)))
    if key == "MODSEQ":  # RFC 7162 §3.1.5: [entry-name entry-type] mod-sequence-valzer
        if p.peek() == b'"':
            p.quoted()
            p.sp()
            p.atom()
            p.sp()
        return c.SearchKey(key, p.number(MAX_NUMBER64))
    if key in ("EMAILID", "THREADID"):  # RFC 8474 §6
        return c.SearchKey(key, p.atom())
    raise _Fail(f"unknown search key {key}")


def _search_program(p: Parser, cmd: c.Search) -> None:
    if p.take(b"CHARSET "):
        cmd.charset = p.astring().upper()
        p.sp()
    items = [_search_key(p)]
    while p.take(b" "):
        items.append(_search_key(p))
    cmd.key = items[0] if len(items) == 1 else c.SearchKey("AND", children=tuple(items))


_RETURN_OPTS = {"MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL"}


def _return_options(p: Parser) -> list[str]:
    p.expect(b"(")
    opts: list[str] = []
    while not p.take(b")"):
        if opts:
            p.sp()
        opt = p.atom().upper()
        if opt not in _RETURN_OPTS - {"PARTIAL"}:
            raise _Fail(f"unknown RETURN option {opt}")
        opts.append(opt)
    return opts


def _search(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    cmd = c.Search(tag, name, uid)
    p.sp()
    if p.take(b"RETURN "):  # RFC 4731 §3 / RFC 9051 §6.4.4.1
        cmd.return_options = _return_options(p)
        p.sp()
    _search_program(p, cmd)
    return cmd


_SORT_KEYS = {"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM",
              "DISPLAYTO"}


def _sort(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    cmd = c.Search(tag, name, uid)
    p.sp()
    if p.take(b"RETURN "):  # RFC 5267 §3 ESORT
        cmd.return_options = _return_options(p)
        p.sp()
    p.expect(b"(")
    reverse = False
    while True:
        key = p.atom().upper()
        if key == "REVERSE":
            reverse = True
        elif key in _SORT_KEYS:
            cmd.sort.append((key, reverse))
            reverse = False
        else:
            raise _Fail(f"unknown sort key {key}")
        if p.take(b")"):
            break
        p.sp()
    if reverse or not cmd.sort:
        raise _Fail("REVERSE must be followed by a sort key")
    p.sp()
    cmd.charset = p.astring().upper()
    p.sp()
    items = [_search_key(p)]
    while p.take(b" "):
        items.append(_search_key(p))
    cmd.key = items[0] if len(items) == 1 else c.SearchKey("AND", children=tuple(items))
    return cmd


def _thread(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    cmd = c.Search(tag, name, uid)
    p.sp()
    cmd.algorithm = p.atom().upper()
    p.sp()
    cmd.charset = p.astring().upper()
    p.sp()
    items = [_search_key(p)]
    while p.take(b" "):
        items.append(_search_key(p))
    cmd.key = items[0] if len(items) == 1 else c.SearchKey("AND", children=tuple(items))
    return cmd


# --- FETCH (RFC 9051 §6.4.5) ----------------------------------------------------------------

_MACROS = {"ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
           "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
           "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]}
_PLAIN_ATTS = {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
               "RFC822.TEXT", "BODYSTRUCTURE", "UID", "MODSEQ", "EMAILID", "THREADID",
               "SAVEDATE", "PREVIEW"}
_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")


def _section(p: Parser, binary: bool) -> c.Section:
    p.expect(b"[")
    part: list[int] = []
    text = None
    fields: tuple[str, ...] = ()
    while p.peek().isdigit():
        part.append(p.nz_number())
        if not p.take(b"."):
            break
    if not p.take(b"]"):
        if binary:
            raise p.fail("a part number and ]")
        text = p._match(re.compile(rb"[A-Za-z.]+"), "a section name").decode().upper()
        if text not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
            raise _Fail(f"unknown section {text}")
        if text == "MIME" and not part:
            raise _Fail("MIME needs a part number")
        if text.startswith("HEADER.FIELDS"):
            p.sp()
            fields = tuple(f.upper() for f in p.paren_list(p.astring))
            if not fields:
                raise _Fail("HEADER.FIELDS needs at least one field name")
        p.expect(b"]")
    return c.Section(tuple(part), text, fields)


def _fetch_att(p: Parser) -> c.FetchAtt:
    name = p._match(_FETCH_NAME, "a fetch item").decode().upper()
    if name in _PLAIN_ATTS:
        if name == "PREVIEW" and p.take(b" (LAZY)"):
            pass
        return c.FetchAtt(name)
    if name in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        if name == "BODY" and p.peek() != b"[":
            return c.FetchAtt(name)
        section = _section(p, name.startswith("BINARY"))
        partial = None
        if name != "BINARY.SIZE" and p.take(b"<"):
            start = p.number()
            p.expect(b".")
            length = p.nz_number()
            p.expect(b">")
            partial = (start, length)
        return c.FetchAtt(name, section, partial)
    raise _Fail(f"unknown fetch item {name}")


def _fetch(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    cmd = c.Fetch(tag, name, uid, p.seq_set())
    p.sp()
    if p.peek() == b"(":
        cmd.items = p.paren_list(lambda: _fetch_att(p))
        if not cmd.items:
            raise _Fail("FETCH needs at least one item")
    else:
        word = p.peek(4).upper()
        macro = next((m for m in _MACROS if word.startswith(m.encode())), None)
        if macro and (p.peek(len(macro) + 1)[len(macro):] in (b"", b" ")):
            p.pos += len(macro)
            cmd.items = [c.FetchAtt(n) for n in _MACROS[macro]]
        else:
            cmd.items = [_fetch_att(p)]
    if p.take(b" "):  # RFC 4466 fetch-modifiers: CHANGEDSINCE, VANISHED (RFC 7162)
        p.expect(b"(")
        first = True
        while not p.take(b")"):
            if not first:
                p.sp()
            first = False
            mod = p.atom().upper()
            if mod == "CHANGEDSINCE":
                p.sp()
                cmd.changed_since = p.number(MAX_NUMBER64)
            elif mod == "VANISHED":
                cmd.vanished = True
            else:
                raise _Fail(f"unknown FETCH modifier {mod}")
    return cmd


def _store(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    cmd = c.Store(tag, name, uid, p.seq_set())
    p.sp()
    if p.take(b"(UNCHANGEDSINCE "):  # RFC 7162 §3.1.3
        cmd.unchanged_since = p.number(MAX_NUMBER64)
        p.expect(b")")
        p.sp()
    if p.peek() in (b"+", b"-"):
        cmd.mode = p.peek().decode()
        p.pos += 1
    p.expect(b"FLAGS")
    cmd.silent = p.take(b".SILENT")
    p.sp()
    if p.peek() == b"(":
        cmd.flags = p.flag_list()
    else:
        cmd.flags = [p.flag()]
        while p.take(b" "):
            cmd.flags.append(p.flag())
    return cmd


def _copy(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    seq = p.seq_set()
    p.sp()
    return c.CopyMove(tag, name, uid, seq, p.mailbox())


def _id(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    if p.take(b"NIL"):
        return c.Id(tag, name, uid, None)
    p.expect(b"(")
    params: dict[str, str | None] = {}
    while not p.take(b")"):
        if params:
            p.sp()
        key = p.string()
        p.sp()
        params[key] = p.nstring()
        if len(params) > 30:  # RFC 2971 §3.3
            raise _Fail("ID allows at most 30 field-value pairs")
    return c.Id(tag, name, uid, params)


def _getquota(p: Parser, tag: str, name: str, uid: bool) -> c.Command:
    p.sp()
    cmd = c.QuotaCmd(tag, name, uid, p.astring())
    if name == "SETQUOTA":
        p.sp()
        p.expect(b"(")
        while not p.take(b")"):
            res = p.atom().upper()
            p.sp()
            cmd.limits[res] = p.number(MAX_NUMBER64)
            p.take(b" ")
    return cmd


_HANDLERS = {
    **{n: _simple for n in _SIMPLE | {"EXPUNGE"}},
    **{n: _mailbox_only for n in _MAILBOX_ONLY},
    "LOGIN": _login, "AUTHENTICATE": _authenticate, "ENABLE": _enable,
    "SELECT": _select, "EXAMINE": _select, "CREATE": _create, "RENAME": _rename,
    "LIST": _list, "LSUB": _list, "STATUS": _status, "APPEND": _append,
    "SEARCH": _search, "SORT": _sort, "THREAD": _thread, "FETCH": _fetch, "STORE": _store,
    "COPY": _copy, "MOVE": _copy, "ID": _id, "GETQUOTA": _getquota, "SETQUOTA": _getquota,
    "REPLACE": _replace, "COMPRESS": _compress, "GETMETADATA": _getmetadata,
    "SETMETADATA": _setmetadata, "SETACL": _acl, "DELETEACL": _acl, "GETACL": _acl,
    "LISTRIGHTS": _acl, "MYRIGHTS": _acl,
}
