"""The selected state (RFC 9051 §6.4): the session's view of one mailbox and the commands
that work on it (SELECT/EXAMINE, CLOSE, UNSELECT, EXPUNGE, STORE, COPY, MOVE; FETCH and
SEARCH live in ``fetch.py`` and ``search.py``).

The view is the list of UIDs the client knows, in sequence-number order. Sequence numbers
change only when this session announces an EXPUNGE (RFC 9051 §7.5.1), so the view is kept
until it may tell the client. ``sync`` brings the view up to date with changes committed by
any session in any worker: the account's modseq says whether anything changed at all, the
mailbox record (UIDNEXT, message count) whether membership changed — only then is the UID
index read again — and the change log which messages' flags changed.
"""
from __future__ import annotations

import bisect
import time

from stalwart_mp.imap import flags as fl
from stalwart_mp.imap.protocol import commands as c
from stalwart_mp.imap.protocol import writer as w
from stalwart_mp.imap.session import No, State
from stalwart_mp.mail.records import DELETED, Email
from stalwart_mp.mail.store import MailError, NoSuchMailbox

_CHANGES_LIMIT = 5000
_CACHE_MAX = 200_000


class Selected:
    def __init__(self, mailbox, readonly: bool, index: list[tuple[int, int]], modseq: int,
                 acct: int = 0, rights: str = "lrswipkxtea", path: str = ""):
        self.acct = acct                      # the owner's account (shared mailboxes)
        self.rights = rights                  # RFC 4314 rights of this session here
        self.path = path
        self.mid = mailbox.id
        self.uidvalidity = mailbox.uidvalidity
        self.readonly = readonly
        self.uids = [u for u, _ in index]
        self.eids = [e for _, e in index]
        self.uid_of = {e: u for u, e in index}
        self.modseq = modseq                  # account modseq the view reflects
        self.uidnext = max(mailbox.uidnext, (self.uids[-1] + 1) if self.uids else 1)
        self.own: dict[int, int] = {}         # email id -> modseq of this session's change
        self.pending = False                  # removed messages not yet announced
        # email records of the view, kept coherent by sync (every change since the view's
        # modseq drops the entry): FETCH 1:* FLAGS reads no record twice
        self.cache: dict[int, Email] = {}

    async def emails(self, session, eids: list[int]) -> list[Email | None]:
        cache = self.cache
        missing = [e for e in eids if e not in cache]
        if missing:
            loaded = await session.services.mail.emails(self.acct, missing)
            room = len(cache) < _CACHE_MAX
            fresh = {}
            for e in loaded:
                if e is not None:
                    fresh[e.id] = e
                    if room:
                        cache[e.id] = e
            return [cache.get(e) or fresh.get(e) for e in eids]
        return [cache[e] for e in eids]

    def remember(self, emails) -> None:
        for e in emails:
            if e is not None and e.id in self.uid_of:
                self.cache[e.id] = e

    def __len__(self) -> int:
        return len(self.uids)

    def seq(self, uid: int) -> int | None:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def resolve(self, session, uid: bool, seqset: c.SeqSet) -> list[tuple[int, int, int]]:
        """(sequence number, UID, email id) of the messages a set names, ascending."""
        n = len(self.uids)
        if seqset.saved:  # RFC 5182 §2.1: "$" is the saved result, as UIDs
            wanted = set(session.saved_uids)
            return [(i + 1, u, self.eids[i]) for i, u in enumerate(self.uids) if u in wanted]
        indexes: set[int] = set()
        if uid:
            largest = self.uids[-1] if n else 0
            for lo, hi in seqset.ranges:
                a = largest if lo is None else lo
                b = largest if hi is None else hi
                if a > b:
                    a, b = b, a
                i, j = bisect.bisect_left(self.uids, a), bisect.bisect_right(self.uids, b)
                indexes.update(range(i, j))
        else:
            for lo, hi in seqset.ranges:
                for v in (lo, hi):
                    if v is not None and v > n:
                        raise No(f"Message sequence number {v} is beyond the last "
                                 f"message ({n})", status="BAD")
                a = n if lo is None else lo
                b = n if hi is None else hi
                if a > b:
                    a, b = b, a
                indexes.update(range(a - 1, b))
        return [(i + 1, self.uids[i], self.eids[i]) for i in sorted(indexes)]

    async def sync(self, session, expunges: bool) -> None:
        """Announce what other sessions changed: EXISTS for new messages, EXPUNGE (or
        VANISHED under QRESYNC, RFC 7162 §3.2.10) for removed ones when ``expunges``,
        FETCH FLAGS (with MODSEQ under CONDSTORE) for changed flags."""
        mail = session.services.mail
        acct = self.acct
        state = await mail.state(acct)
        if state is None or (state.modseq == self.modseq and not self.pending):
            return
        mailbox = await mail.mailbox(acct, self.mid)
        if mailbox is None:  # deleted by another session: nothing left to show
            return
        changes = []
        if state.modseq > self.modseq:
            changes = await mail.changes(acct, self.modseq, limit=_CHANGES_LIMIT)
        touched: set[int] = set()
        for ch in changes:
            touched.update(ch.emails_updated)
        if len(changes) >= _CHANGES_LIMIT:
            touched = set(self.eids)
        for eid in touched:
            self.cache.pop(eid, None)
        added: set[int] = set()
        if self.pending or mailbox.uidnext != self.uidnext or mailbox.total != len(self.uids):
            index = await mail.uid_index(acct, self.mid)
            current = dict(index)
            removed = [u for u in self.uids if u not in current]
            if removed and expunges:
                self._announce_removed(session, removed)
                self.pending = False
            elif removed:
                self.pending = True
            else:
                self.pending = False
            largest = self.uids[-1] if self.uids else 0
            new = [(u, e) for u, e in index if u > largest]
            if new:
                for u, e in new:
                    self.uids.append(u)
                    self.eids.append(e)
                    self.uid_of[e] = u
                    added.add(e)
                session.out(w.untagged(f"{len(self.uids)} EXISTS"))
            self.uidnext = max(mailbox.uidnext, largest + 1)
        flagged = [e for e in touched if e in self.uid_of and e not in added]
        if flagged:
            emails = await mail.emails(acct, flagged)
            self.remember(emails)
            for email in sorted((e for e in emails if e is not None),
                                key=lambda e: self.uid_of.get(e.id, 0)):
                if self.own.get(email.id) == email.modseq or email.id not in self.uid_of:
                    continue
                uid = self.uid_of[email.id]
                seq = self.seq(uid)
                if seq is None or self.mid not in email.mailboxes:
                    continue
                items = [("UID", uid), ("FLAGS", fl.flags_wire(email.keywords))]
                if session.condstore:
                    items.append(("MODSEQ", [email.modseq]))
                session.out(w.fetch(seq, items, session.utf8))
        self.own.clear()
        self.modseq = state.modseq

    def _announce_removed(self, session, removed: list[int]) -> None:
        gone = set(removed)
        if session.qresync:
            session.out(w.untagged("VANISHED " + w.sequence_set(removed)))
        else:
            # highest first: each EXPUNGE renumbers only the messages after it
            for i in range(len(self.uids) - 1, -1, -1):
                if self.uids[i] in gone:
                    session.out(w.untagged(f"{i + 1} EXPUNGE"))
        keep = [(u, e) for u, e in zip(self.uids, self.eids, strict=True) if u not in gone]
        for u, e in zip(self.uids, self.eids, strict=True):
            if u in gone:
                self.cache.pop(e, None)
        self.uids = [u for u, _ in keep]
        self.eids = [e for _, e in keep]
        self.uid_of = {e: u for u, e in keep}


def _require_writable(session) -> None:
    if session.selected.readonly:
        raise No("Mailbox is read-only (EXAMINE)", "READ-ONLY")


# --- SELECT / EXAMINE (RFC 9051 §6.3.2, §6.3.3; RFC 7162 §3.1.8, §3.2.5) --------------------

async def cmd_select(session, cmd: c.Select):
    mail = session.services.mail
    previous = session.selected
    session.saved_uids = []  # RFC 5182 §2.1: SELECT/EXAMINE reset the saved result
    if session.selected is not None:
        session.selected = None
        session.state = State.AUTHENTICATED
        if session.rev2 or session.qresync:  # RFC 9051 §7.1, RFC 7162 §3.2.11
            session.out(w.status("OK", "Previous mailbox closed", "CLOSED"))
    if cmd.qresync and not session.qresync:
        raise No("QRESYNC must be enabled first (RFC 7162 §3.2.5)", status="BAD")
    if cmd.condstore:
        session.enabled.add("CONDSTORE")
    from stalwart_mp.imap.access import resolve

    target = await resolve(session, cmd.mailbox)
    if target is None:
        raise No(f'No mailbox "{cmd.mailbox}"', "NONEXISTENT")
    if not target.may("r"):
        raise No(f'No right to read "{cmd.mailbox}"', "NOPERM")
    box, acct = target.box, target.acct
    state = await mail.state(acct)
    carried = None
    if previous is not None and previous.mid == box.id and previous.acct == acct and \
            previous.cache:
        # re-selecting: keep the records no change touched since the old view's modseq
        changes = await mail.changes(acct, previous.modseq, limit=_CHANGES_LIMIT)
        if len(changes) < _CHANGES_LIMIT:
            carried = previous.cache
            for ch in changes:
                for eid in (*ch.emails_updated, *ch.emails_destroyed):
                    carried.pop(eid, None)
    index = None
    if carried is not None and not previous.pending:
        # membership unchanged since the old view (no new UID, same count; the record is
        # read after the state, so a later change is caught by the next sync): reuse it
        fresh = await mail.mailbox(acct, box.id)
        if fresh is not None and fresh.uidnext == previous.uidnext and \
                fresh.total == len(previous.uids):
            index = list(zip(previous.uids, previous.eids, strict=True))
            box = fresh
    if index is None:
        index = await mail.uid_index(acct, box.id)
    writable = cmd.name == "SELECT" and any(target.may(r) for r in "swite")
    sel = Selected(box, not writable, index, state.modseq, acct, target.rights, target.path)
    out = session.out
    out(w.untagged("FLAGS (" + " ".join(fl.FLAGS) + ")"))
    out(w.untagged(f"{len(sel)} EXISTS"))
    if carried:
        sel.cache = {e: rec for e, rec in carried.items() if e in sel.uid_of}
    if not session.rev2:
        out(w.untagged("0 RECENT"))
        if box.unseen:
            emails = await sel.emails(session, sel.eids)
            first = next((i + 1 for i, e in enumerate(emails) if e is not None and not e.seen),
                         None)
            if first:
                out(w.status("OK", f"First unseen: {first}", f"UNSEEN {first}"))
    out(w.status("OK", "UIDs valid", f"UIDVALIDITY {sel.uidvalidity}"))
    out(w.status("OK", "Predicted next UID", f"UIDNEXT {sel.uidnext}"))
    permanent = "" if sel.readonly else " " + " ".join(fl.FLAGS) + " \\*"
    out(w.status("OK", "Flags permitted" if permanent else "No permanent flags permitted",
                 f"PERMANENTFLAGS ({permanent.strip()})"))
    if session.rev2:
        out(w.untagged(b"LIST () \"/\" " + w.mailbox_name(target.path, True)))
    if session.condstore:
        out(w.status("OK", "Highest", f"HIGHESTMODSEQ {max(state.modseq, 1)}"))
    out(w.status("OK", "Mailbox id", f"MAILBOXID (M{box.id})"))  # RFC 8474 §4.1
    if cmd.qresync:
        await _qresync(session, sel, cmd.qresync)
    session.selected = sel
    session.state = State.SELECTED
    return (f"{cmd.name} completed", "READ-ONLY" if sel.readonly else "READ-WRITE")


async def _qresync(session, sel: Selected, params) -> None:
    """RFC 7162 §3.2.5.2: VANISHED (EARLIER) for known UIDs that are gone, FETCH for the
    messages changed since the client's modseq."""
    validity, modseq, known, _match = params
    if validity != sel.uidvalidity:
        return
    present = set(sel.uids)
    if known is not None:
        vanished = w.sequence_set([u for u in known.resolve(sel.uidnext - 1)
                                   if u not in present])
    else:
        vanished = _gaps(sel.uids, sel.uidnext)
    if vanished:
        session.out(w.untagged("VANISHED (EARLIER) " + vanished))
    from stalwart_mp.imap.fetch import fetch_messages

    items = [c.FetchAtt("UID"), c.FetchAtt("FLAGS"), c.FetchAtt("MODSEQ")]
    targets = [(i + 1, u, e) for i, (u, e) in enumerate(zip(sel.uids, sel.eids, strict=True))]
    await fetch_messages(session, sel, targets, items, changed_since=modseq, mark_seen=False)


def _gaps(uids: list[int], uidnext: int) -> str:
    """The UIDs below UIDNEXT that are not in the mailbox, as a sequence set (ranges are
    written, never enumerated: a gap may hold millions of UIDs)."""
    out: list[str] = []
    prev = 0
    for u in [*uids, uidnext]:
        if u - prev == 2:
            out.append(str(prev + 1))
        elif u - prev > 2:
            out.append(f"{prev + 1}:{u - 1}")
        prev = u
    return ",".join(out)


async def cmd_examine(session, cmd: c.Select):
    return await cmd_select(session, cmd)


# --- CLOSE, UNSELECT, EXPUNGE (RFC 9051 §6.4.1, §6.4.2, §6.4.3; RFC 4315 §2.1) ------------

async def _deleted_uids(session, targets: list[tuple[int, int, int]]) -> list[int]:
    emails = await session.services.mail.emails(session.selected.acct,
                                                [e for _, _, e in targets])
    session.selected.remember(emails)
    return [u for (_, u, _), e in zip(targets, emails, strict=True)
            if e is not None and DELETED in e.keywords]


async def cmd_close(session, cmd: c.Command):
    sel = session.selected
    if not sel.readonly and "e" in sel.rights:  # silent expunge (RFC 9051 §6.4.1)
        targets = [(i + 1, u, e) for i, (u, e) in enumerate(zip(sel.uids, sel.eids,
                                                                 strict=True))]
        uids = await _deleted_uids(session, targets)
        if uids:
            await session.services.mail.remove_from_mailbox(sel.acct, sel.mid, uids)
    session.selected = None
    session.state = State.AUTHENTICATED
    return "CLOSE completed"


async def cmd_unselect(session, cmd: c.Command):
    session.selected = None
    session.state = State.AUTHENTICATED
    return "UNSELECT completed"


async def cmd_expunge(session, cmd: c.Expunge):
    sel = session.selected
    _require_writable(session)
    if cmd.sequence is not None:
        targets = sel.resolve(session, True, cmd.sequence)
    else:
        targets = [(i + 1, u, e) for i, (u, e) in enumerate(zip(sel.uids, sel.eids,
                                                                 strict=True))]
    if not sel.rights or "e" not in sel.rights:
        raise No("No right to expunge here", "NOPERM")
    uids = await _deleted_uids(session, targets)
    if uids:
        await session.services.mail.remove_from_mailbox(sel.acct, sel.mid, uids)
    await sel.sync(session, expunges=True)
    if session.condstore:  # RFC 7162 §3.1.11: HIGHESTMODSEQ after EXPUNGE
        return "EXPUNGE completed", f"HIGHESTMODSEQ {sel.modseq}"
    return "EXPUNGE completed"


# --- STORE (RFC 9051 §6.4.6, RFC 7162 §3.1.3) ---------------------------------------------

async def cmd_store(session, cmd: c.Store):
    sel = session.selected
    _require_writable(session)
    try:
        keywords = fl.to_keywords(cmd.flags)
    except fl.FlagError as exc:
        raise No(str(exc), status="BAD") from None
    targets = sel.resolve(session, cmd.uid, cmd.sequence)
    if cmd.unchanged_since is not None:
        session.enabled.add("CONDSTORE")  # RFC 7162 §3.1: a CONDSTORE-enabling command
    eids = [e for _, _, e in targets]
    mail = session.services.mail
    kwargs = {"add": keywords} if cmd.mode == "+" else {"remove": keywords} \
        if cmd.mode == "-" else {"replace": keywords}
    _check_flag_rights(sel, keywords, cmd.mode)
    _, failed = await mail.set_keywords(sel.acct, eids, unchanged_since=cmd.unchanged_since,
                                        **kwargs)
    failed_set = set(failed)
    emails = await mail.emails(sel.acct, eids)
    sel.remember(emails)
    for (seq, uid, eid), email in zip(targets, emails, strict=True):
        if email is None or eid in failed_set:
            continue
        sel.own[eid] = email.modseq
        if cmd.silent and cmd.unchanged_since is None:
            continue
        items: list[tuple[str, object]] = []
        if cmd.uid:
            items.append(("UID", uid))
        if not cmd.silent:
            items.append(("FLAGS", fl.flags_wire(email.keywords)))
        if session.condstore:
            items.append(("MODSEQ", [email.modseq]))
        if items:
            session.out(w.fetch(seq, items, session.utf8))
    if failed:
        numbers = [u if cmd.uid else s for s, u, e in targets if e in failed_set]
        return "Conditional STORE failed for some messages", \
            "MODIFIED " + w.sequence_set(numbers)
    return "STORE completed"


# --- COPY / MOVE (RFC 9051 §6.4.7, §6.4.8; RFC 4315 COPYUID; RFC 6851) ------------------------

async def cmd_copy(session, cmd: c.CopyMove):
    from stalwart_mp.imap.access import resolve

    sel = session.selected
    if cmd.name == "MOVE":
        _require_writable(session)
        if not ("t" in sel.rights and "e" in sel.rights):
            raise No("No right to move messages out of this mailbox", "NOPERM")
    targets = sel.resolve(session, cmd.uid, cmd.sequence)
    dest = await resolve(session, cmd.mailbox)
    if dest is None:
        raise No(f'No mailbox "{cmd.mailbox}"', "TRYCREATE")
    if not dest.may("i"):
        raise No(f'No right to add messages to "{cmd.mailbox}"', "NOPERM")
    if not targets:
        return f"{cmd.name} completed (nothing to do)"
    mail = session.services.mail
    eids = [e for _, _, e in targets]
    try:
        if dest.acct != sel.acct:  # another account: a new message there, same blob
            new_uids = await _copy_across(session, sel.acct, eids, dest)
            pairs = [(u, new_uids[e]) for _, u, e in targets if e in new_uids]
            if cmd.name == "MOVE":
                await mail.remove_from_mailbox(sel.acct, sel.mid, [p[0] for p in pairs])
        elif cmd.name == "MOVE":
            moved = await mail.move(sel.acct, eids, sel.mid, dest.box.id)
            pairs = [(moved[e][0], moved[e][1]) for e in eids if e in moved]
        else:
            copied = await mail.copy(sel.acct, eids, dest.box.id)
            pairs = [(u, copied[e]) for _, u, e in targets if e in copied]
    except NoSuchMailbox:
        raise No(f'No mailbox "{cmd.mailbox}"', "TRYCREATE") from None
    except MailError as exc:
        raise No(str(exc), "OVERQUOTA" if "quota" in str(exc) else None) from None
    code = None
    if pairs:
        code = (f"COPYUID {dest.box.uidvalidity} {w.sequence_set([p[0] for p in pairs])} "
                f"{w.sequence_set([p[1] for p in pairs])}")
    if cmd.name == "MOVE":
        if code:  # RFC 6851 §4.3: COPYUID in an untagged OK before the expunges
            session.out(w.status("OK", "Moved", code))
        return "MOVE completed"
    return "COPY completed", code


async def _copy_across(session, src_acct: int, eids: list[int], dest) -> dict[int, int]:
    """Copy messages into another account's mailbox: new records there sharing the blob
    and the parsed metadata. Returns source email id -> new UID."""
    import msgpack

    from stalwart_mp.mail import keys

    mail = session.services.mail
    emails = await mail.emails(src_acct, eids)
    raws = await mail.data.get_many([keys.metadata(src_acct, e) for e in eids])
    out = {}
    for eid, email, raw in zip(eids, emails, raws, strict=True):
        if email is None or raw is None:
            continue
        meta = msgpack.unpackb(raw, strict_map_key=False)
        result = await mail.append(
            dest.acct, [dest.box.id], blob_id=email.blob_id, size=email.size, metadata=meta,
            keywords=email.keywords, received_at=email.received_at,
            message_id=meta.get("m"), references=[*meta.get("r", []), *meta.get("i", [])])
        out[eid] = result.uids[dest.box.id]
    return out


def _check_flag_rights(sel, keywords: list[str], mode: str) -> None:
    """RFC 4314 §4: \\Seen needs "s", \\Deleted "t", other flags "w"."""
    from stalwart_mp.mail.records import SEEN

    needed = {"s" if k == SEEN else "t" if k == DELETED else "w" for k in keywords}
    if mode == "":  # replacing may clear any flag
        needed.add("w")
    missing = needed - set(sel.rights)
    if missing:
        raise No(f"No right to change these flags (needs {''.join(sorted(missing))})",
                 "NOPERM")


async def cmd_move(session, cmd: c.CopyMove):
    return await cmd_copy(session, cmd)


async def cmd_fetch(session, cmd: c.Fetch):
    from stalwart_mp.imap.fetch import cmd_fetch as run

    return await run(session, cmd)


async def cmd_search(session, cmd: c.Search):
    from stalwart_mp.imap.search import cmd_search as run

    return await run(session, cmd)


async def cmd_sort(session, cmd: c.Search):
    return await cmd_search(session, cmd)


async def cmd_thread(session, cmd: c.Search):
    from stalwart_mp.imap.thread import cmd_thread as run

    return await run(session, cmd)


async def cmd_replace(session, cmd: c.Replace):
    """RFC 8508 §3: APPEND the new message, then expunge the old one (§3.3: the APPENDUID
    goes in an untagged OK, the EXPUNGE follows, the tagged OK has no code)."""
    from stalwart_mp.imap.mailbox_cmds import append_messages

    sel = session.selected
    _require_writable(session)
    targets = sel.resolve(session, cmd.uid, cmd.sequence)
    if not targets:
        raise No("No such message to replace", status="BAD" if not cmd.uid else "NO")
    box, uids = await append_messages(session, cmd.mailbox, [cmd.message])
    session.out(w.status("OK", "Replacement appended",
                         f"APPENDUID {box.uidvalidity} {uids[0]}"))
    await session.services.mail.remove_from_mailbox(sel.acct, sel.mid, [targets[0][1]])
    return "REPLACE completed"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def internal_date(ts: float) -> str:
    """RFC 9051 §9 date-time: "dd-Mon-yyyy hh:mm:ss +0000" (months in English whatever
    the locale)."""
    t = time.gmtime(ts)
    return (f"{t.tm_mday:02d}-{_MONTHS[t.tm_mon - 1]}-{t.tm_year:04d} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")
