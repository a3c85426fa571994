"""Maildir++ as Dovecot and Courier write it: reading a tree of folders and writing one.

Layout (Courier's Maildir++, Dovecot's default ``LAYOUT=maildir++``): the top-level
``cur/``, ``new/`` and ``tmp/`` are INBOX; every other folder is a directory ``.Name``,
nested levels joined by ``.`` (``.Parent.Child``). Folder names are IMAP modified UTF-7
(RFC 3501 §5.1.3) as Dovecot stores them; a ``.`` *inside* one name level is written as the
non-minimal but valid modified UTF-7 ``&AC4-`` so it does not read as a separator.

A message is one file whose name is ``<unique>:2,<flags>``; flags are the capital letters
``D`` (draft), ``F`` (flagged), ``R`` (replied), ``S`` (seen), ``T`` (trashed → $deleted)
and Dovecot's lower-case letters ``a``-``z`` for keywords, which ``dovecot-keywords`` in
each folder maps to names (lines ``<index> <name>``, index 0 = ``a``). The received date
(IMAP INTERNALDATE) is the file's mtime — Dovecot sets it so. ``dovecot-uidlist`` (when
present) gives the folder's UID order, which import keeps and export writes.
"""
from __future__ import annotations

import base64
import os
import re
import socket
import string
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stalwart_mp.mail.records import ANSWERED, DELETED, DRAFT, FLAGGED, SEEN

# Maildir info letters <-> system keywords (https://cr.yp.to/proto/maildir.html).
SYSTEM_FLAGS = {"D": DRAFT, "F": FLAGGED, "R": ANSWERED, "S": SEEN, "T": DELETED}
_FLAG_OF = {kw: letter for letter, kw in SYSTEM_FLAGS.items()}
KEYWORDS_FILE = "dovecot-keywords"
UIDLIST_FILE = "dovecot-uidlist"
MAX_KEYWORDS = 26  # Dovecot's letters a-z; further keywords cannot be stored in a file name
_DIGITS = re.compile(r"(\d+)")


@dataclass(slots=True)
class Folder:
    """One folder of a Maildir: its name levels (``()`` = INBOX) and directory."""

    names: tuple[str, ...]
    path: Path

    @property
    def display(self) -> str:
        return "/".join(self.names) or "INBOX"


@dataclass(slots=True)
class MaildirMessage:
    path: Path
    unique: str      # the file name without ":2,<flags>": stable while flags change
    flags: str       # the info letters after ":2,"
    mtime: float


# --- modified UTF-7 (RFC 3501 §5.1.3) ---------------------------------------------------


def mutf7_decode(name: str) -> str:
    """Decode a modified UTF-7 folder name; text that is not valid stays as written."""
    out, pos = [], 0
    while pos < len(name):
        amp = name.find("&", pos)
        if amp < 0:
            out.append(name[pos:])
            break
        out.append(name[pos:amp])
        dash = name.find("-", amp)
        if dash < 0:
            out.append(name[amp:])
            break
        chunk = name[amp + 1:dash]
        if not chunk:
            out.append("&")
        else:
            try:
                raw = base64.b64decode(chunk.replace(",", "/") + "=" * (-len(chunk) % 4))
                out.append(raw.decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError):
                out.append(name[amp:dash + 1])
        pos = dash + 1
    return "".join(out)


_DIRECT = set(string.printable[:95]) - {"&", ".", "/"}


def mutf7_encode(name: str) -> str:
    """Encode one name level; ``.`` and ``/`` are base64-encoded so they are not separators."""
    out, pending = [], []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if ch == "&":
            flush()
            out.append("&-")
        elif ch in _DIRECT:
            flush()
            out.append(ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


# --- reading ------------------------------------------------------------------------------


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()


def folders(root: Path) -> list[Folder]:
    """INBOX (if the root is a maildir) and every ``.Name`` subfolder, parents first."""
    found = [Folder((), root)] if is_maildir(root) else []
    subs = []
    for entry in os.scandir(root):
        if entry.name.startswith(".") and entry.name not in (".", "..") and entry.is_dir() \
                and is_maildir(Path(entry.path)):
            levels = tuple(mutf7_decode(part) for part in entry.name[1:].split("."))
            if all(levels):
                subs.append(Folder(levels, Path(entry.path)))
    return found + sorted(subs, key=lambda f: f.names)


def read_keywords(folder: Path) -> dict[str, str]:
    """``dovecot-keywords``: letter (``a``...) -> keyword name."""
    letters: dict[str, str] = {}
    try:
        text = (folder / KEYWORDS_FILE).read_text("utf-8", "replace")
    except FileNotFoundError:
        return letters
    for line in text.splitlines():
        index, _, name = line.strip().partition(" ")
        if index.isdigit() and int(index) < MAX_KEYWORDS and name.strip():
            letters[chr(ord("a") + int(index))] = name.strip()
    return letters


def keywords_of(flags: str, letters: dict[str, str]) -> list[str]:
    """Keywords of a message from its info letters."""
    out = [SYSTEM_FLAGS[c] for c in flags if c in SYSTEM_FLAGS]
    out += [letters[c] for c in flags if c in letters]
    return sorted(set(out))


def _uid_order(folder: Path) -> dict[str, int]:
    """Base name -> UID from ``dovecot-uidlist`` (versions 1 and 3), if there is one."""
    try:
        lines = (folder / UIDLIST_FILE).read_text("utf-8", "replace").splitlines()[1:]
    except FileNotFoundError:
        return {}
    order = {}
    for line in lines:
        uid, _, rest = line.partition(" ")
        if not uid.isdigit():
            continue
        # v3: "<uid> [<ext>...] :<basename>"; v1: "<uid> <basename>"
        if rest.startswith(":"):
            name = rest[1:]
        elif " :" in rest:
            name = rest.split(" :", 1)[1]
        else:
            name = rest.strip()
        order[name.strip().split(":2,", 1)[0]] = int(uid)
    return order


def natural_key(name: str) -> tuple:
    """Order unique names by their numbers (``9.x`` before ``10.x``), as they were made."""
    return tuple(int(p) if p.isdigit() else p for p in _DIGITS.split(name))


def messages(folder: Folder) -> list[MaildirMessage]:
    """A folder's messages in ``dovecot-uidlist`` order, then by mtime and name."""
    found = []
    for sub in ("new", "cur"):
        try:
            entries = list(os.scandir(folder.path / sub))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file():
                continue
            unique, _, info = entry.name.partition(":2,")
            if sub == "new" or ":" not in entry.name:
                unique = entry.name.split(":", 1)[0]
            found.append(MaildirMessage(Path(entry.path), unique, info,
                                        entry.stat().st_mtime))
    uids = _uid_order(folder.path)
    big = 1 << 62
    found.sort(key=lambda m: (uids.get(m.unique, big), m.mtime, natural_key(m.unique)))
    return found


# --- writing ------------------------------------------------------------------------------


def folder_dir(root: Path, names: tuple[str, ...]) -> Path:
    return root / ("." + ".".join(mutf7_encode(n) for n in names)) if names else root


def make_maildir(path: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)


def hostname() -> str:
    """This host's name made safe for a unique name (maildir spec: ``/`` and ``:`` escaped)."""
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072") or "localhost"


class KeywordLetters:
    """Allocates Dovecot keyword letters for one exported folder; writes dovecot-keywords."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.by_name = {name.lower(): letter for letter, name in read_keywords(folder).items()}
        self.dropped: set[str] = set()

    def flags(self, keywords: Iterable[str]) -> str:
        """Info letters for a message's keywords: system letters sorted, then keyword ones."""
        system, custom = [], []
        for kw in keywords:
            if kw in _FLAG_OF:
                system.append(_FLAG_OF[kw])
            elif kw.lower() in self.by_name:
                custom.append(self.by_name[kw.lower()])
            elif len(self.by_name) < MAX_KEYWORDS:
                letter = chr(ord("a") + len(self.by_name))
                self.by_name[kw.lower()] = letter
                custom.append(letter)
            else:
                self.dropped.add(kw)
        return "".join(sorted(system)) + "".join(sorted(custom))

    def save(self) -> None:
        if not self.by_name:
            return
        lines = [f"{ord(letter) - ord('a')} {name}"
                 for name, letter in sorted(self.by_name.items(), key=lambda i: i[1])]
        write_atomic(self.folder / KEYWORDS_FILE, ("\n".join(lines) + "\n").encode())


def write_uidlist(folder: Path, uidvalidity: int, uidnext: int,
                  entries: list[tuple[int, str]]) -> None:
    """A version-3 ``dovecot-uidlist`` (``3 V<uidvalidity> N<uidnext>`` then
    ``<uid> :<basename>``), so Dovecot, and our import, keep the UIDs' order."""
    lines = [f"3 V{uidvalidity} N{uidnext}"] + [f"{uid} :{name}" for uid, name in entries]
    write_atomic(folder / UIDLIST_FILE, ("\n".join(lines) + "\n").encode())


def write_atomic(path: Path, data: bytes, mtime: float | None = None,
                 tmp_dir: Path | None = None) -> None:
    """Write to a temporary name (in ``tmp_dir``: a maildir's ``tmp/``), fsync, set the
    mtime, rename (the maildir delivery way): a reader never sees a half-written file."""
    tmp = (tmp_dir or path.parent) / f".{path.name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)
