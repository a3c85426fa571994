"""The query engine behind IMAP SEARCH/SORT and JMAP Email/query, on a real LMDB store with
filesystem blobs, messages parsed by the ingest parser, and a real SQLite full-text index."""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import pytest

from stalwart_mp.mail.commit import GroupCommitter
from stalwart_mp.mail.ingest import parse_message, to_record
from stalwart_mp.mail.records import FLAGGED, SEEN, Role
from stalwart_mp.mail.search import (
    After,
    All,
    And,
    Before,
    HasAttachment,
    HasKeyword,
    Header,
    IdSet,
    InMailbox,
    InMailboxOtherThan,
    Larger,
    ModSeqAtLeast,
    Not,
    NotKeyword,
    Or,
    SavedSince,
    SearchError,
    SentBefore,
    SentSince,
    Smaller,
    Sort,
    SortKey,
    Text,
    UidSet,
    highest_modseq,
    query,
    to_uids,
)
from stalwart_mp.mail.store import MailStore
from stalwart_mp.store.backends.sqlite_fts import SqliteFts
from stalwart_mp.store.blob import open_blob_store
from stalwart_mp.store.registry import open_data_store

ACCT = 3
BASE = 1_700_000_000  # 2023-11-14 22:13:20 UTC
HOUR = 3600
DAY = 24 * HOUR
ALICE = "Alice Adams <alice@example.com>"


@dataclass
class Msg:
    name: str
    frm: str
    subject: str | None
    date: str | None
    hour: int  # received_at = BASE + hour h
    to: str = ALICE
    cc: str | None = None
    bcc: str | None = None
    body: str = "Hello."
    attach: tuple[str, str] | None = None  # (filename, text)
    extra: tuple[str, ...] = ()
    kw: tuple[str, ...] = ()
    boxes: tuple[str, ...] = ("inbox",)


MESSAGES = [
    Msg("a1", ALICE, "Quarterly report", "Tue, 14 Nov 2023 10:00:00 +0000", 1,
        to="Bob Brown <bob@example.org>", body="The quarterly numbers are attached.",
        attach=("report.pdf", ""), kw=(SEEN,)),
    Msg("b1", "bob@example.org", "Re: Quarterly report", "Tue, 14 Nov 2023 12:00:00 +0000", 3,
        body="Thanks for the numbers, they look good.", kw=(SEEN, "$answered")),
    Msg("z1", "Zoë Zimmer <zoe@example.net>", "Über die Brücke",
        "Wed, 15 Nov 2023 09:00:00 +0100", 26, body="Grüße aus Berlin", kw=(FLAGGED,)),
    Msg("e1", "=?utf-8?q?=C3=89mile_Zola?= <emile@example.fr>",
        "=?utf-8?q?=C3=A9cole_d=27=C3=A9t=C3=A9?=", "Wed, 15 Nov 2023 07:30:00 +0000", 27,
        body="Bonjour"),
    Msg("c1", "carol@example.com", "[team] Fwd: Meeting notes",
        "Thu, 16 Nov 2023 09:00:00 +0000", 50, cc="Dave Davis <dave@example.com>",
        body="Agenda: budget and hiring.", extra=("X-Priority: 1 (Highest)",)),
    Msg("c2", "Carol <carol@example.com>", "meeting notes", "Thu, 16 Nov 2023 10:00:00 +0000",
        51, to="team@example.com", body="Minutes of the budget meeting.", kw=(SEEN,)),
    Msg("n1", "noreply@billing.test", "Your invoice", None, 30, body="Invoice 42 is due.",
        attach=("invoice-42.pdf", ""), kw=(SEEN,)),
    Msg("n2", "Shop <newsletter@shop.test>", "Big sale", "Fri, 17 Nov 2023 06:00:00 +0000", 70,
        body="Discounts everywhere. " * 1500, kw=("$junk",)),
    Msg("d1", "Dave Davis <dave@example.com>", "Budget", "Fri, 17 Nov 2023 08:00:00 +0000", 72,
        cc="carol@example.com", bcc="secret@example.com", body="Can we cut the budget?",
        kw=(FLAGGED, SEEN)),
    Msg("a2", ALICE, "Plan", "Sat, 18 Nov 2023 08:00:00 +0000", 96,
        to="Carol <carol@example.com>", body="The plan for next year.", boxes=("archive",)),
    Msg("a3", ALICE, "Re: Plan", "Sat, 18 Nov 2023 09:00:00 +0000", 97, body="Updated plan.",
        boxes=("inbox", "archive")),
    Msg("m1", "Märta <marta@example.se>", "ärende", "Sun, 19 Nov 2023 08:00:00 +0000", 120,
        body="Hej"),
    Msg("m2", "marta@example.se", "Apple pie", "Sun, 19 Nov 2023 09:00:00 +0000", 121,
        kw=("project-x",)),
    Msg("m3", "Xavier <xavier@example.com>", "apple crumble", "Sun, 19 Nov 2023 10:00:00 +0000",
        122, kw=("Project-X",), extra=("X-Priority: 3 (Normal)",)),
    Msg("q1", "quinn@example.com", "", "Sun, 19 Nov 2023 11:00:00 +0000", 123),
    Msg("q2", "Quinn <quinn@example.com>", None, "Sun, 19 Nov 2023 12:00:00 +0000", 124),
    Msg("r1", "Rob <rob@example.com>", "Re: Re: Fwd: Budget", "Mon, 20 Nov 2023 08:00:00 +0000",
        144, body="Re the budget: approved.", kw=("$answered",)),
    Msg("s1", "Sven <sven@example.com>", "Lunch?", "Mon, 20 Nov 2023 11:00:00 +0000", 146,
        to="Bob Brown <bob@example.org>, Alice <alice@example.com>", body="Pizza?"),
    Msg("t1", "Tina <tina@example.com>", "Zebra", "Tue, 21 Nov 2023 09:00:00 +0000", 168,
        attach=("notes.txt", "zebra stripes"), kw=("$draft",)),
    Msg("u1", "Ulla <ulla@example.com>", "émoji 🎉 party", "Tue, 21 Nov 2023 10:00:00 +0000",
        170, boxes=("archive",)),
]
INBOX_ORDER = [m.name for m in MESSAGES if "inbox" in m.boxes]  # UID order in INBOX


def raw_message(m: Msg) -> bytes:
    lines = [f"From: {m.frm}", f"To: {m.to}"]
    if m.cc:
        lines.append(f"Cc: {m.cc}")
    if m.bcc:
        lines.append(f"Bcc: {m.bcc}")
    if m.subject is not None:
        lines.append(f"Subject: {m.subject}")
    if m.date is not None:
        lines.append(f"Date: {m.date}")
    lines += [f"Message-ID: <{m.name}@test>", *m.extra, "MIME-Version: 1.0"]
    if m.attach is None:
        lines += ["Content-Type: text/plain; charset=utf-8", "", m.body]
    else:
        filename, text = m.attach
        ctype = "text/plain" if filename.endswith(".txt") else "application/pdf"
        lines += ['Content-Type: multipart/mixed; boundary="b"', "", "--b",
                  "Content-Type: text/plain; charset=utf-8", "", m.body, "--b",
                  f"Content-Type: {ctype}",
                  f'Content-Disposition: attachment; filename="{filename}"', "",
                  text or "JVBERi0xLjQK", "--b--"]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class Env:
    mail: MailStore
    fts: SqliteFts
    blobs: object
    inbox: int
    archive: int
    ids: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def names(self, ids: list[int]) -> list[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return [by_id[e] for e in ids]

    async def find(self, flt, **kw) -> list[str]:
        kw.setdefault("fts", self.fts)
        kw.setdefault("blob_reader", self.blobs.get)
        return self.names(await query(self.mail, ACCT, flt, **kw))

    async def inbox_find(self, flt, **kw) -> list[str]:
        return await self.find(flt, mailbox=self.inbox, **kw)


def _open_mail(path):
    data = open_data_store("data", {"type": "lmdb", "path": str(path / "lmdb")})
    blobs = open_blob_store("blobs", {"type": "fs", "path": str(path / "blobs")}, data)

    async def on_commit(items):
        pass

    return data, blobs, MailStore(data, GroupCommitter(data, blobs, on_commit))


async def _store(env: Env, raw: bytes, boxes: list[int], keywords, received_at: float) -> int:
    parsed = parse_message(raw)
    blob = await env.blobs.put(raw)
    r = await env.mail.append(ACCT, boxes, blob_id=blob, size=len(raw),
                              metadata=to_record(parsed), keywords=keywords,
                              received_at=received_at)
    await env.fts.index(ACCT, r.email_id, parsed.text_for_search)
    return r.email_id


@pytest.fixture
async def env(tmp_path):
    data, blobs, mail = _open_mail(tmp_path)
    fts = SqliteFts("fts", tmp_path / "fts.sqlite")
    await mail.ensure_account(ACCT)
    inbox = (await mail.mailbox_by_role(ACCT, Role.INBOX)).id
    archive = (await mail.mailbox_by_role(ACCT, Role.ARCHIVE)).id
    e = Env(mail, fts, blobs, inbox, archive)
    for m in MESSAGES:
        raw = raw_message(m)
        boxes = [inbox if b == "inbox" else archive for b in m.boxes]
        e.ids[m.name] = await _store(e, raw, boxes, m.kw, BASE + m.hour * HOUR)
        e.sizes[m.name] = len(raw)
    yield e
    await fts.close()
    await blobs.close()
    await data.close()


def _without(*names: str) -> list[str]:
    return [n for n in INBOX_ORDER if n not in names]


# --- scope and mailboxes ------------------------------------------------------------------


async def test_scope_is_mailbox_or_account(env):
    assert await env.inbox_find(All()) == INBOX_ORDER
    assert await env.find(All()) == [m.name for m in MESSAGES]  # account: id order
    assert await env.find(InMailbox(env.archive)) == ["a2", "a3", "u1"]
    assert await env.inbox_find(InMailbox(env.archive)) == ["a3"]
    assert await env.find(Not(InMailbox(env.inbox))) == ["a2", "u1"]
    # RFC 8621 §4.4.1 inMailboxOtherThan: in some mailbox outside the list
    assert await env.find(InMailboxOtherThan([env.inbox])) == ["a2", "a3", "u1"]
    assert await env.find(InMailboxOtherThan([env.inbox, env.archive])) == []
    assert await env.find(And()) == [m.name for m in MESSAGES]
    assert await env.find(Or()) == []


async def test_uid_and_id_sets(env):
    assert await env.inbox_find(UidSet([1, 3, 5, 99])) == [INBOX_ORDER[0], INBOX_ORDER[2],
                                                           INBOX_ORDER[4]]
    ids = [env.ids["u1"], env.ids["a1"], env.ids["m2"]]
    assert await env.find(IdSet(ids)) == ["a1", "m2", "u1"]
    assert await env.inbox_find(IdSet(ids)) == ["a1", "m2"]
    with pytest.raises(SearchError, match="needs a mailbox"):
        await env.find(UidSet([1]))


async def test_to_uids_maps_ids_in_order(env):
    ids = await query(env.mail, ACCT, Header("from", "alice"), mailbox=env.archive,
                      sort=[Sort(SortKey.ARRIVAL, reverse=True)])
    assert env.names(ids) == ["a3", "a2"]
    assert await to_uids(env.mail, ACCT, env.archive, ids) == [2, 1]
    assert await to_uids(env.mail, ACCT, env.inbox, ids) == [INBOX_ORDER.index("a3") + 1]


# --- email record predicates --------------------------------------------------------------


async def test_keywords(env):
    assert await env.inbox_find(HasKeyword(SEEN)) == ["a1", "b1", "c2", "n1", "d1"]
    assert await env.inbox_find(NotKeyword(SEEN)) == _without("a1", "b1", "c2", "n1", "d1")
    assert await env.find(HasKeyword("PROJECT-X")) == ["m2", "m3"], "keywords ignore case"
    assert await env.find(HasKeyword("$nothing")) == []
    assert await env.inbox_find(And(HasKeyword(FLAGGED), NotKeyword(SEEN))) == ["z1"]


async def test_received_dates(env):
    day3 = BASE + 2 * DAY  # received hours 48..71: c1, c2, n2
    assert await env.find(And(After(day3), Before(day3 + DAY))) == ["c1", "c2", "n2"]
    assert await env.find(Before(BASE + 3 * HOUR)) == ["a1"], "BEFORE is strict"
    assert await env.find(After(BASE + 168 * HOUR)) == ["t1", "u1"], "SINCE includes"
    assert await env.find(SavedSince(0), mailbox=env.inbox) == INBOX_ORDER
    assert await env.find(SavedSince(time.time() + 60), mailbox=env.inbox) == []


async def test_sent_dates(env):
    nov15 = 1_700_006_400  # 2023-11-15 00:00 UTC
    # z1's Date is 09:00 +0100 = 08:00 UTC; e1 07:30 UTC; n1 has no Date and never matches
    assert await env.find(And(SentSince(nov15), SentBefore(nov15 + DAY))) == ["z1", "e1"]
    assert await env.find(SentBefore(nov15)) == ["a1", "b1"]
    assert "n1" not in await env.find(Or(SentBefore(nov15), SentSince(nov15)))


async def test_sizes(env):
    assert await env.find(Larger(20_000)) == ["n2"]
    assert await env.inbox_find(Smaller(20_000)) == _without("n2")
    size = env.sizes["a1"]
    assert "a1" not in await env.find(Larger(size)), "LARGER is strict (RFC 9051 §6.4.4)"
    assert "a1" in await env.find(Larger(size - 1))
    assert "a1" not in await env.find(Smaller(size))
    assert "a1" in await env.find(Smaller(size + 1))


async def test_modseq(env):
    state = await env.mail.state(ACCT)
    since = state.modseq + 1
    await env.mail.set_keywords(ACCT, [env.ids["q1"], env.ids["a2"]], add=[FLAGGED])
    ids = await query(env.mail, ACCT, ModSeqAtLeast(since))
    assert env.names(ids) == ["a2", "q1"]
    assert await env.inbox_find(ModSeqAtLeast(since)) == ["q1"]
    assert await env.find(ModSeqAtLeast(since + 10)) == []
    assert await highest_modseq(env.mail, ACCT, ids) == (await env.mail.state(ACCT)).modseq
    assert await highest_modseq(env.mail, ACCT, []) == 0


# --- parsed-message predicates ------------------------------------------------------------


async def test_envelope_headers(env):
    assert await env.inbox_find(Header("From", "ALICE")) == ["a1", "a3"]
    assert await env.find(Header("from", "émile zola")) == ["e1"], "decoded, Unicode fold"
    assert await env.find(Header("from", "Zola <emile@")) == ["e1"]
    assert await env.find(Header("to", "bob@example")) == ["a1", "s1"]
    assert await env.find(Header("cc", "dave")) == ["c1"]
    assert await env.find(Header("bcc", "secret")) == ["d1"]
    assert await env.find(Header("subject", "NOTES")) == ["c1", "c2"]
    assert await env.find(Header("subject", "brücke")) == ["z1"]
    assert await env.find(Header("message-id", "<m3@")) == ["m3"]
    assert await env.find(Header("date", "19 Nov 2023 08:")) == ["m1"]
    # RFC 9051 §6.4.4: an empty string matches every message that has the field
    assert await env.inbox_find(Header("subject", "")) == _without("q2")
    assert await env.find(Header("cc")) == ["c1", "d1"]
    assert await env.find(Header("date")) == [m.name for m in MESSAGES if m.name != "n1"]


async def test_other_headers_read_from_the_message(env):
    reads = []

    async def reader(blob_id, start, end):
        reads.append((start, end))
        return await env.blobs.get(blob_id, start, end)

    assert await env.find(Header("X-Priority", "highest"), blob_reader=reader) == ["c1"]
    assert await env.find(Header("x-priority", "(")) == ["c1", "m3"]
    assert len(reads) == 2, "only messages that have the field are read"
    assert all(end - start < 40 for start, end in reads), "and only that field"
    assert await env.find(Header("x-priority"), blob_reader=None) == ["c1", "m3"]
    assert await env.find(Header("x-missing", "1")) == []
    with pytest.raises(SearchError, match='header "x-priority" needs the message store'):
        await env.find(Header("x-priority", "1"), blob_reader=None)
    with pytest.raises(SearchError, match="header name"):
        Header("bad:name", "x")


async def test_has_attachment(env):
    assert await env.find(HasAttachment()) == ["a1", "n1", "t1"]
    assert await env.inbox_find(Not(HasAttachment())) == _without("a1", "n1", "t1")


# --- full text ------------------------------------------------------------------------------


async def test_full_text(env):
    assert await env.inbox_find(Text(None, "budget")) == ["c1", "c2", "d1", "r1"]
    assert await env.find(Text("subject", "budget")) == ["d1", "r1"]
    assert await env.find(Text("body", "numbers")) == ["a1", "b1"]
    assert await env.find(Text("attachments", "invoice")) == ["n1"]
    assert await env.find(Text("attachments", "stripes")) == ["t1"], "text attachment content"
    assert await env.find(Text("from", "alice")) == ["a1", "a2", "a3"]
    assert await env.find(Text("to", "carol")) == ["a2"]
    assert await env.find(Text("cc", "dave")) == ["c1"]
    assert await env.find(Text("bcc", "secret")) == ["d1"]
    assert await env.find(Text("body", "meeting budget")) == ["c2"]
    assert await env.find(Text("body", "budget meeting", phrase=True)) == ["c2"]
    assert await env.find(Text("body", "meeting budget", phrase=True)) == []


async def test_full_text_errors(env):
    with pytest.raises(SearchError, match="no full-text store is configured"):
        await query(env.mail, ACCT, And(HasKeyword(SEEN), Text(None, "x")))
    with pytest.raises(SearchError, match="full-text field 'header'"):
        Text("header", "x")


async def test_each_text_node_queries_the_index_once(env):
    calls = []
    real = env.fts.query

    async def counting(acct, q, language=None):
        calls.append(q)
        return await real(acct, q, language)

    env.fts.query = counting
    leaf = Text(None, "budget")
    got = await env.find(Or(And(leaf, HasKeyword(SEEN)), And(leaf, HasKeyword("$answered")),
                            Not(leaf)))
    assert got == [m.name for m in MESSAGES if m.name != "c1"]  # budget, neither keyword
    assert len(calls) == 1


# --- boolean logic --------------------------------------------------------------------------


async def test_nested_boolean_logic(env):
    budget = Text(None, "budget")
    alice = Header("from", "alice")
    assert await env.inbox_find(And(HasKeyword(SEEN), Or(budget, alice))) == ["a1", "c2", "d1"]
    assert await env.inbox_find(Not(Or(HasKeyword(SEEN), budget, alice))) == _without(
        "a1", "b1", "c2", "n1", "d1", "c1", "r1", "a3")
    # De Morgan: NOT (a AND b) == NOT a OR NOT b
    left = await env.find(Not(And(HasKeyword(SEEN), budget)))
    right = await env.find(Or(Not(HasKeyword(SEEN)), Not(budget)))
    assert left == right == [m.name for m in MESSAGES if m.name not in ("c2", "d1")]
    # flagged or with an attachment: a1, z1, n1, d1, t1; seen: a1, n1, d1; "Berlin": z1
    assert await env.find(And(Or(HasKeyword(FLAGGED), HasAttachment()),
                              Not(Or(HasKeyword(SEEN), Text("body", "berlin"))))) == ["t1"]
    assert await env.find(And(Or(HasKeyword(FLAGGED), HasAttachment()),
                              Not(Larger(env.sizes["d1"])))) == ["z1", "d1"]
    assert await env.find(Not(Not(InMailbox(env.archive)))) == ["a2", "a3", "u1"]


async def test_bad_filter_node(env):
    with pytest.raises(SearchError, match="is not a search filter"):
        await env.find(And(HasKeyword(SEEN), "seen"))


# --- sorting --------------------------------------------------------------------------------


async def test_sort_by_arrival_and_date(env):
    by_hour = sorted((m for m in MESSAGES if "inbox" in m.boxes), key=lambda m: m.hour)
    assert await env.inbox_find(All(), sort=[Sort(SortKey.ARRIVAL)]) == [m.name for m in by_hour]
    assert await env.inbox_find(All(), sort=[Sort(SortKey.ARRIVAL, reverse=True)]) == [
        m.name for m in reversed(by_hour)]
    # RFC 5256 §3 DATE: sent date in UTC (z1 is 08:00Z, after e1's 07:30Z); n1 has no Date
    # and sorts by its INTERNALDATE (16 Nov 04:13Z)
    assert (await env.inbox_find(All(), sort=[Sort(SortKey.DATE)]))[:6] == [
        "a1", "b1", "e1", "z1", "n1", "c1"]


async def test_sort_by_subject_unicode_casemap(env):
    got = await env.inbox_find(All(), sort=[Sort(SortKey.SUBJECT)])
    assert got == ["q1", "q2", "m3", "m2", "m1", "n2", "d1", "r1", "e1", "s1", "c1", "c2",
                   "a3", "a1", "b1", "z1", "n1", "t1"]
    # i;octet: capitals first, then lower case, then non-ASCII by UTF-8 bytes ("Ü" < "ä" <
    # "é"); c1's base subject is "Meeting notes", c2's "meeting notes"
    got = await env.inbox_find(All(), sort=[Sort(SortKey.SUBJECT, collation="i;octet")])
    assert got == ["q1", "q2", "m2", "n2", "d1", "r1", "s1", "c1", "a3", "a1", "b1", "n1",
                   "t1", "m3", "c2", "z1", "m1", "e1"]


async def test_sort_reverse_keeps_ties_in_uid_order(env):
    got = await env.inbox_find(Text(None, "budget"), sort=[Sort(SortKey.SUBJECT, reverse=True)])
    # "meeting notes" (c1, c2) > "budget" (d1, r1); ties stay in ascending UID order
    assert got == ["c1", "c2", "d1", "r1"]


async def test_multiple_sort_keys(env):
    got = await env.inbox_find(
        Or(Header("subject", "budget"), Header("subject", "notes"),
           Header("subject", "quarterly")),
        sort=[Sort(SortKey.SUBJECT), Sort(SortKey.DATE, reverse=True)])
    assert got == ["r1", "d1", "c2", "c1", "b1", "a1"]
    got = await env.find(All(), sort=[Sort(SortKey.KEYWORD, reverse=True, keyword="$Flagged"),
                                      Sort(SortKey.SIZE)])
    assert got[:2] == ["z1", "d1"] and env.sizes["z1"] < env.sizes["d1"]
    sizes = [env.sizes[n] for n in got[2:]]
    assert sizes == sorted(sizes) and got[-1] == "n2"


async def test_sort_by_addresses(env):
    scope = IdSet(env.ids[n] for n in ("a1", "b1", "e1", "c1", "c2", "m1", "m2", "z1"))
    # RFC 5256 FROM: the local part of the first From address
    assert await env.find(scope, sort=[Sort(SortKey.FROM)]) == [
        "a1", "b1", "c1", "c2", "e1", "m1", "m2", "z1"]
    # RFC 5957 DISPLAYFROM / JMAP "from": display name, else the address
    assert await env.find(scope, sort=[Sort(SortKey.DISPLAY_FROM)]) == [
        "a1", "b1", "c2", "c1", "e1", "m2", "m1", "z1"]
    scope = IdSet(env.ids[n] for n in ("a1", "c2", "s1", "b1"))
    assert await env.find(scope, sort=[Sort(SortKey.TO)]) == ["b1", "a1", "s1", "c2"]
    assert await env.find(scope, sort=[Sort(SortKey.DISPLAY_TO)]) == ["b1", "a1", "s1", "c2"]
    # CC by local part: c1 "dave" > d1 "carol" > the rest ("", in UID order)
    got = await env.inbox_find(All(), sort=[Sort(SortKey.CC, reverse=True)])
    assert got == ["c1", "d1", *_without("c1", "d1")]
    assert await env.find(IdSet([env.ids["a1"], env.ids["b1"]]),
                          sort=[Sort(SortKey.ID, reverse=True)]) == ["b1", "a1"]


async def test_sort_errors(env):
    with pytest.raises(SearchError, match="sort by uid needs a mailbox"):
        await env.find(All(), sort=[Sort(SortKey.UID)])
    assert await env.inbox_find(All(), sort=[Sort(SortKey.UID, reverse=True)]) == \
        INBOX_ORDER[::-1]
    with pytest.raises(SearchError, match="collation 'i;basic' is not supported"):
        Sort(SortKey.SUBJECT, collation="i;basic")
    with pytest.raises(SearchError, match="keyword is needed"):
        Sort(SortKey.KEYWORD)


async def test_destroyed_messages_drop_out(env):
    await env.mail.destroy(ACCT, [env.ids["d1"]])
    assert await env.inbox_find(Text(None, "budget"), sort=[Sort(SortKey.SUBJECT)]) == [
        "r1", "c1", "c2"]
    assert await env.find(IdSet([env.ids["d1"]]), sort=[Sort(SortKey.ARRIVAL)]) == []


# --- a large mailbox --------------------------------------------------------------------------


async def test_large_mailbox(tmp_path):
    data, blobs, mail = _open_mail(tmp_path)
    fts = SqliteFts("fts", tmp_path / "fts.sqlite")
    try:
        await mail.ensure_account(ACCT)
        inbox = (await mail.mailbox_by_role(ACCT, Role.INBOX)).id
        env = Env(mail, fts, blobs, inbox, 0)
        words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
        n = 5000
        subjects = {}

        async def one(i: int) -> None:
            m = Msg(f"x{i}", f"User {i % 97} <u{i % 97}@example.com>",
                    f"{'Re: ' * (i % 3)}{words[i % 8]} {i % 50}",
                    f"Mon, 20 Nov 2023 {i % 24:02d}:{i % 60:02d}:00 +0000", i,
                    body="x" * (i % 400), kw=(SEEN,) if i % 3 else ())
            raw = raw_message(m)
            env.ids[m.name] = await _store(env, raw, [inbox], m.kw, BASE + i * 60)
            env.sizes[m.name] = len(raw)
            subjects[m.name] = f"{words[i % 8]} {i % 50}"

        t0 = time.perf_counter()
        for start in range(0, n, 250):
            await asyncio.gather(*(one(i) for i in range(start, min(n, start + 250))))
        print(f"\nappended {n} messages in {time.perf_counter() - t0:.1f} s")

        flt = And(NotKeyword(SEEN), Larger(400))
        sort = [Sort(SortKey.SUBJECT), Sort(SortKey.ARRIVAL, reverse=True)]
        timings = []
        for _ in range(3):
            t0 = time.perf_counter()
            ids = await query(mail, ACCT, flt, sort=sort, mailbox=inbox)
            timings.append(time.perf_counter() - t0)
        hits = [f"x{i}" for i in range(n) if i % 3 == 0 and env.sizes[f"x{i}"] > 400]
        # subject ascending, then arrival descending (x{i} arrived at BASE + i minutes)
        hits.sort(key=lambda name: (subjects[name], -int(name[1:])))
        assert env.names(ids) == hits
        print(f"\n5,000-message mailbox: NOT $seen AND LARGER 400, sorted by subject then "
              f"arrival: {len(ids)} hits in {min(timings) * 1000:.1f} ms "
              f"(first run {timings[0] * 1000:.1f} ms)")

        t0 = time.perf_counter()
        ids = await query(mail, ACCT, And(Text("subject", "alpha"), HasKeyword(SEEN)),
                          sort=[Sort(SortKey.DISPLAY_FROM), Sort(SortKey.DATE)], fts=fts)
        elapsed = time.perf_counter() - t0
        assert len(ids) == len([i for i in range(n) if i % 8 == 0 and i % 3])
        print(f"5,000-message account: subject:alpha (full text) AND $seen, sorted by from "
              f"then date: {len(ids)} hits in {elapsed * 1000:.1f} ms")
    finally:
        await fts.close()
        await blobs.close()
        await data.close()
