"""Typed IMAP commands (RFC 9051 §6, RFC 3501 §6 and the extensions), as the parser makes
them. Mailbox names are already decoded (modified UTF-7 or UTF-8) to ``str``."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, frozen=True)
class SeqSet:
    """A sequence set (RFC 9051 §9 sequence-set): ranges of numbers where ``None`` stands
    for ``*`` (the largest number in use); ``saved`` for ``$`` (RFC 5182 SEARCHRES)."""

    ranges: tuple[tuple[int | None, int | None], ...] = ()
    saved: bool = False

    def resolve(self, largest: int) -> list[int]:
        """The numbers of the set, ascending, none above ``largest``. RFC 9051 §9: "*" is the
        largest number in use; a range "a:b" is the same as "b:a"."""
        out: set[int] = set()
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            if a > b:
                a, b = b, a
            out.update(range(max(a, 1), min(b, largest) + 1))
        return sorted(out)

    def contains(self, n: int, largest: int) -> bool:
        for lo, hi in self.ranges:
            a = largest if lo is None else lo
            b = largest if hi is None else hi
            if min(a, b) <= n <= max(a, b):
                return True
        return False

    def members(self, values: list[int]) -> list[int]:
        """The members of ``values`` (ascending UIDs) that the set names; ``*`` is the
        largest value (RFC 9051 §6.4.9: a UID range includes the highest UID even when
        the range starts above it)."""
        largest = values[-1] if values else 0
        return [v for v in values if self.contains(v, largest)]


@dataclass(slots=True, frozen=True)
class SearchKey:
    """One node of a search (RFC 9051 §6.4.4). ``op`` is the upper-case key name; AND, OR
    and NOT carry ``children``; ``value`` is the argument (a string, number, date as
    (year, month, day), SeqSet, or (field name, text) for HEADER)."""

    op: str
    value: object = None
    children: tuple[SearchKey, ...] = ()


@dataclass(slots=True, frozen=True)
class Section:
    """A body section (RFC 9051 §6.4.5 section-spec): part numbers, then HEADER,
    HEADER.FIELDS[.NOT] (with ``fields``), TEXT or MIME, or nothing (the whole part)."""

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def spec(self) -> str:
        """The section as written back in the response (RFC 9051 §7.5.2)."""
        out = ".".join(str(p) for p in self.part)
        if self.text:
            out = f"{out}.{self.text}" if out else self.text
        if self.fields:
            out += " (" + " ".join(self.fields) + ")"
        return out


@dataclass(slots=True, frozen=True)
class FetchAtt:
    """A fetch item: ``name`` is FLAGS, UID, ENVELOPE, BODY, BODY.PEEK, BINARY, BINARY.PEEK,
    BINARY.SIZE, RFC822, RFC822.HEADER, RFC822.TEXT, RFC822.SIZE, INTERNALDATE, BODYSTRUCTURE,
    MODSEQ, EMAILID, THREADID, SAVEDATE, PREVIEW. ``section`` is None for BODY without
    brackets; ``partial`` is (offset, length)."""

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None


@dataclass(slots=True)
class Command:
    tag: str
    name: str                        # upper case, without "UID"
    uid: bool = False


@dataclass(slots=True)
class Simple(Command):
    """Commands without arguments: CAPABILITY NOOP LOGOUT STARTTLS CHECK CLOSE UNSELECT
    IDLE NAMESPACE EXPUNGE UNAUTHENTICATE."""


@dataclass(slots=True)
class Login(Command):
    user: str = ""
    password: str = ""


@dataclass(slots=True)
class Authenticate(Command):
    mechanism: str = ""
    initial: bytes | None = None     # SASL-IR (RFC 4959), base64 as sent, "=" for empty


@dataclass(slots=True)
class Enable(Command):
    capabilities: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Select(Command):
    """SELECT / EXAMINE, with CONDSTORE (RFC 7162 §3.1.8) and QRESYNC (§3.2.5)."""

    mailbox: str = ""
    condstore: bool = False
    qresync: tuple[int, int, SeqSet | None, tuple[SeqSet, SeqSet] | None] | None = None


@dataclass(slots=True)
class MailboxCommand(Command):
    """DELETE SUBSCRIBE UNSUBSCRIBE GETQUOTAROOT GETACL MYRIGHTS."""

    mailbox: str = ""


@dataclass(slots=True)
class Create(Command):
    mailbox: str = ""
    special_use: list[str] = field(default_factory=list)   # RFC 6154 §3 USE (...)


@dataclass(slots=True)
class Rename(Command):
    old: str = ""
    new: str = ""


@dataclass(slots=True)
class ListCmd(Command):
    """LIST (RFC 9051 §6.3.9, LIST-EXTENDED RFC 5258, LIST-STATUS RFC 5819) and LSUB."""

    reference: str = ""
    patterns: list[str] = field(default_factory=list)
    select_options: list[str] = field(default_factory=list)
    return_options: list[str] = field(default_factory=list)
    status_items: list[str] | None = None
    extended: bool = False


@dataclass(slots=True)
class Status(Command):
    mailbox: str = ""
    items: list[str] = field(default_factory=list)


@dataclass(slots=True)
class AppendMessage:
    flags: list[str]
    date: float | None
    data: bytes
    binary: bool = False            # ~{n} literal (RFC 3516 §4.4)


@dataclass(slots=True)
class Append(Command):
    """APPEND, with MULTIAPPEND (RFC 3502): one or more messages."""

    mailbox: str = ""
    messages: list[AppendMessage] = field(default_factory=list)


@dataclass(slots=True)
class Search(Command):
    """SEARCH (ESEARCH return options RFC 4731/RFC 9051 §6.4.4), SORT and THREAD (RFC 5256)."""

    key: SearchKey = SearchKey("ALL")
    charset: str | None = None
    return_options: list[str] | None = None   # None: no RETURN given
    sort: list[tuple[str, bool]] = field(default_factory=list)   # (criterion, reverse)
    algorithm: str | None = None               # THREAD


@dataclass(slots=True)
class Fetch(Command):
    sequence: SeqSet = SeqSet()
    items: list[FetchAtt] = field(default_factory=list)
    changed_since: int | None = None          # RFC 7162 §3.1.4.1
    vanished: bool = False                    # RFC 7162 §3.2.6


@dataclass(slots=True)
class Store(Command):
    sequence: SeqSet = SeqSet()
    mode: str = ""                            # "+", "-" or "" (replace)
    silent: bool = False
    flags: list[str] = field(default_factory=list)
    unchanged_since: int | None = None       # RFC 7162 §3.1.3


@dataclass(slots=True)
class CopyMove(Command):
    """COPY and MOVE (RFC 6851)."""

    sequence: SeqSet = SeqSet()
    mailbox: str = ""


@dataclass(slots=True)
class Expunge(Command):
    """EXPUNGE, and UID EXPUNGE with its set (RFC 4315 §2.1)."""

    sequence: SeqSet | None = None


@dataclass(slots=True)
class Id(Command):
    params: dict[str, str | None] | None = None   # RFC 2971


@dataclass(slots=True)
class QuotaCmd(Command):
    """GETQUOTA root / SETQUOTA root (resources) (RFC 9208)."""

    root: str = ""
    limits: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Compress(Command):
    """COMPRESS DEFLATE (RFC 4978)."""

    mechanism: str = ""


@dataclass(slots=True)
class Replace(Command):
    """REPLACE / UID REPLACE (RFC 8508 §3): append ``message`` to ``mailbox`` and expunge
    the message ``sequence`` names from the selected mailbox."""

    sequence: SeqSet = SeqSet()
    mailbox: str = ""
    message: AppendMessage | None = None


@dataclass(slots=True)
class Metadata(Command):
    """GETMETADATA / SETMETADATA (RFC 5464 §4.2, §4.3); mailbox "" is the server."""

    mailbox: str = ""
    entries: list[str] = field(default_factory=list)
    values: dict[str, bytes | None] = field(default_factory=dict)
    maxsize: int | None = None
    depth: str = "0"                          # "0", "1" or "infinity"


@dataclass(slots=True)
class Acl(Command):
    """SETACL, DELETEACL, GETACL, LISTRIGHTS, MYRIGHTS (RFC 4314 §3)."""

    mailbox: str = ""
    identifier: str = ""
    rights: str = ""
