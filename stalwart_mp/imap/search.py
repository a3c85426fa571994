"""SEARCH (RFC 9051 §6.4.4) with ESEARCH return options (RFC 4731), SEARCHRES (RFC 5182),
WITHIN (RFC 5032), CONDSTORE's MODSEQ key (RFC 7162 §3.1.5) and SORT/ESORT (RFC 5256,
RFC 5267, RFC 5957 SORT=DISPLAY): IMAP search keys become the mail model's filters, and
``mail.search.query`` — the one engine JMAP uses as well — evaluates them.
"""
from __future__ import annotations

import calendar
import time

from stalwart_mp.imap import flags as fl
from stalwart_mp.imap.protocol import commands as c
from stalwart_mp.imap.protocol import writer as w
from stalwart_mp.imap.session import No
from stalwart_mp.mail import search as s

_DAY = 86400
_CHARSETS = {None, "UTF-8", "US-ASCII"}
_FLAG_KEYS = {"ANSWERED": "$answered", "DELETED": "$deleted", "DRAFT": "$draft",
              "FLAGGED": "$flagged", "SEEN": "$seen"}
_ADDRESS_KEYS = {"BCC", "CC", "FROM", "TO", "SUBJECT"}
_SORT_KEYS = {"ARRIVAL": s.SortKey.ARRIVAL, "CC": s.SortKey.CC, "DATE": s.SortKey.DATE,
              "FROM": s.SortKey.FROM, "SIZE": s.SortKey.SIZE, "SUBJECT": s.SortKey.SUBJECT,
              "TO": s.SortKey.TO, "DISPLAYFROM": s.SortKey.DISPLAY_FROM,
              "DISPLAYTO": s.SortKey.DISPLAY_TO}


def _day(date: tuple[int, int, int]) -> float:
    """An IMAP date is a day (RFC 9051 §6.4.4: "disregarding time and timezone"): its
    start, UTC."""
    return float(calendar.timegm((*date, 0, 0, 0)))


class _Builder:
    def __init__(self, session, sel):
        self.session = session
        self.sel = sel
        self.uses_modseq = False
        self.threads: dict[int, list[int]] = {}   # thread id -> email ids (THREADID)

    async def prepare(self, key: c.SearchKey) -> None:
        """THREADID (RFC 8474 §6.3) needs the view's thread ids, read before building."""
        if _uses(key, "THREADID"):
            emails = await self.sel.emails(self.session, list(self.sel.eids))
            for e in emails:
                if e is not None:
                    self.threads.setdefault(e.thread_id, []).append(e.id)

    def build(self, key: c.SearchKey) -> s.Filter:
        op = key.op
        v = key.value
        if op == "AND":
            return s.And(*(self.build(k) for k in key.children))
        if op == "OR":
            return s.Or(*(self.build(k) for k in key.children))
        if op == "NOT":
            return s.Not(self.build(key.children[0]))
        if op in ("ALL", "OLD", "SAVEDATESUPPORTED"):
            return s.All()
        if op in ("NEW", "RECENT"):  # this server keeps no \Recent (removed in IMAP4rev2)
            return s.Or()
        if op in _FLAG_KEYS:
            return s.HasKeyword(_FLAG_KEYS[op])
        if op.startswith("UN") and op[2:] in _FLAG_KEYS:
            return s.NotKeyword(_FLAG_KEYS[op[2:]])
        if op in ("KEYWORD", "UNKEYWORD"):
            kw = fl.to_keywords([v]) or [v.lower()]
            return s.HasKeyword(kw[0]) if op == "KEYWORD" else s.NotKeyword(kw[0])
        if op == "SEQ":
            return s.UidSet(u for _, u, _ in self.sel.resolve(self.session, False, v))
        if op == "UID":
            return s.UidSet(u for _, u, _ in self.sel.resolve(self.session, True, v))
        if op in _ADDRESS_KEYS:
            return s.Header(op.lower(), v)
        if op == "HEADER":
            name, text = v
            return s.Header(name, text)
        if op == "BODY":
            return s.Text("body", v)
        if op == "TEXT":
            return s.Text(None, v)
        if op in ("BEFORE", "ON", "SINCE"):
            return _dated(op, _day(v), s.Before, s.After)
        if op in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            return _dated(op[4:], _day(v), s.SentBefore, s.SentSince)
        if op in ("SAVEDBEFORE", "SAVEDON", "SAVEDSINCE"):
            return _dated(op[5:], _day(v), s.SavedBefore, s.SavedSince)
        if op == "LARGER":
            return s.Larger(v)
        if op == "SMALLER":
            return s.Smaller(v)
        if op == "OLDER":  # RFC 5032 §3: older than n seconds
            return s.Before(time.time() - v + 1)
        if op == "YOUNGER":
            return s.After(time.time() - v)
        if op == "MODSEQ":
            self.uses_modseq = True
            return s.ModSeqAtLeast(v)
        if op == "EMAILID":
            return s.IdSet([int(v[1:])] if v[:1] == "M" and v[1:].isdigit() else [])
        if op == "THREADID":
            tid = int(v[1:]) if v[:1] == "T" and v[1:].isdigit() else -1
            return s.IdSet(self.threads.get(tid, []))
        raise No(f"Search key {op} is not supported", "CANNOT")


def _uses(key: c.SearchKey, op: str) -> bool:
    return key.op == op or any(_uses(k, op) for k in key.children)


def _dated(op: str, day: float, before, since) -> s.Filter:
    if op == "BEFORE":
        return before(day)
    if op == "SINCE":
        return since(day)
    return s.And(since(day), before(day + _DAY))


async def cmd_search(session, cmd: c.Search):
    sel = session.selected
    if cmd.charset not in _CHARSETS:  # RFC 9051 §6.4.4: BADCHARSET lists the supported ones
        raise No(f"Charset {cmd.charset} is not supported", "BADCHARSET (UTF-8 US-ASCII)")
    builder = _Builder(session, sel)
    await builder.prepare(cmd.key)
    filt = builder.build(cmd.key)
    if builder.uses_modseq:
        session.enabled.add("CONDSTORE")
    sort = []
    for key, reverse in cmd.sort:
        sort.append(s.Sort(_SORT_KEYS[key], reverse=reverse))
    services = session.services
    from stalwart_mp.imap.search_fresh import widen

    filt = await widen(services, sel.acct, filt)
    try:
        ids = await s.query(services.mail, sel.acct, filt, sort=sort,
                            fts=session.server.fts(), mailbox=sel.mid,
                            blob_reader=services.blobs.get)
    except s.SearchError as exc:
        raise No(str(exc), "CANNOT") from None
    ids = [e for e in ids if e in sel.uid_of]  # only messages this session knows
    uids = [sel.uid_of[e] for e in ids]
    numbers = uids if cmd.uid else [sel.seq(u) for u in uids]
    modseq = None
    if builder.uses_modseq and ids:
        modseq = await s.highest_modseq(services.mail, sel.acct, ids)
    opts = cmd.return_options
    if opts is None and session.rev2 and cmd.name == "SEARCH":
        opts = ["ALL"]  # RFC 9051 §6.4.4: IMAP4rev2 answers SEARCH with ESEARCH only
    if opts is not None and "SAVE" in opts:  # RFC 5182 §2.1
        saved = uids
        # with MIN and/or MAX as the only other options, only those are saved (§2.1)
        if uids and set(opts) - {"SAVE"} and set(opts) <= {"SAVE", "MIN", "MAX"}:
            ordered = sorted(uids)
            saved = ([ordered[0]] if "MIN" in opts else []) + \
                ([ordered[-1]] if "MAX" in opts else [])
        session.saved_uids = sorted(set(saved))[:session.server.max_saved]
        if opts == ["SAVE"]:
            return f"{cmd.name} completed, result saved"
    if opts is None:
        word = "SORT" if cmd.name == "SORT" else "SEARCH"
        line = " ".join([word, *map(str, numbers)])
        if modseq is not None:
            line += f" (MODSEQ {modseq})"
        session.out(w.untagged(line))
        return f"{cmd.name} completed"
    # ESEARCH (RFC 4731 §3.1; RFC 9051 §7.3.4); ESORT keeps the sort order in ALL
    parts = [f'ESEARCH (TAG "{cmd.tag}")']
    if cmd.uid:
        parts.append("UID")
    wanted = [o for o in opts if o != "SAVE"] or ["ALL"]
    if numbers:
        if "MIN" in wanted:
            parts.append(f"MIN {min(numbers)}")
        if "MAX" in wanted:
            parts.append(f"MAX {max(numbers)}")
        if "ALL" in wanted:
            if cmd.name == "SORT":
                parts.append("ALL " + ",".join(map(str, numbers)))
            else:
                parts.append("ALL " + w.sequence_set(numbers))
    if "COUNT" in wanted:
        parts.append(f"COUNT {len(numbers)}")
    if modseq is not None:
        parts.append(f"MODSEQ {modseq}")
    session.out(w.untagged(" ".join(parts)))
    return f"{cmd.name} completed"
