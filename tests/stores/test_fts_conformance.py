"""One conformance suite for every full-text backend (whoosh, sqlite, postgresql, mysql):
the same documents, the same queries, the same expected document ids on each."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from stalwart_mp.store.data import StoreError
from stalwart_mp.store.fts import And, FtsStore, Not, Or, Phrase, Term, open_fts_store
from stalwart_mp.store.fts_query import QuerySyntaxError, parse_query
from tests.stores import backends

KINDS = ("whoosh", "sqlite", "postgresql", "mysql")

# Account 1.
DOCS: dict[int, dict[str, Any]] = {
    1: {
        "from": "Alice Smith <alice@example.com>",
        "to": ["bob@example.org"],
        "subject": "Quarterly report",
        "body": "Please find the quarterly report attached. Budget numbers are running late.",
        "attachments": ["report-q3.pdf"],
    },
    2: {
        "from": "bob@example.org",
        "to": ["alice@example.com", "carol@example.net"],
        "subject": "Re: budget",
        "body": "The report was quarterly, not monthly. He runs the numbers.",
    },
    3: {
        "from": "Jürgen Müller <juergen@beispiel.de>",
        "subject": "Straße und Häuser",
        "body": "Die Größe der Häuser in der Straße ist beachtlich.",
    },
    4: {
        "from": "Émilie Dubois <emilie@exemple.fr>",
        "subject": "Le café de la gare",
        "body": "Nous avons bu un café crème à Noël.",
        "attachments": ["menu.txt", "photo.jpg"],
    },
    5: {
        "from": "Dmitri <dmitri@example.ru>",
        "subject": "Привет из Москвы",
        "body": "Γειά σου κόσμε. Greek and Русский текст.",
    },
    6: {"from": "spam@junk.example", "subject": "Cheap offer", "body": "Buy now! Spam, spam."},
    7: {"subject": "東京の会議", "body": "会議は東京都で行います"},
    8: {
        "cc": ["carol@example.net"],
        "bcc": "dave@example.com",
        "subject": "Meeting notes",
        "body": "Notes from the run. To be, or not to be.",
    },
}
GERMAN_DOC = {"body": "Die Häuser am See"}  # account 1, id 9, indexed with language="german"
# Account 2: ids that also exist in account 1, and the same words.
DOCS_2: dict[int, dict[str, Any]] = {
    1: {"from": "alice@example.com", "subject": "Quarterly report", "body": "budget"},
    20: {"subject": "Other", "body": "nothing shared here"},
}
ALL_1 = set(DOCS) | {9}

# (name, account, query, expected ids)
CASES: list[tuple[str, int, Any, set[int]]] = [
    # single term, any field
    ("term any field", 1, Term(None, "budget"), {1, 2}),
    ("term any field, other account", 2, Term(None, "budget"), {1}),
    ("unknown word", 1, Term(None, "zebra"), set()),
    ("short word", 1, Term(None, "he"), {2}),
    ("stopword-like words", 1, Term(None, "to be"), {8}),
    # field restriction
    ("from", 1, Term("from", "alice"), {1}),
    ("to", 1, Term("to", "alice"), {2}),
    ("cc", 1, Term("cc", "carol"), {8}),
    ("bcc", 1, Term("bcc", "dave"), {8}),
    ("to is not cc", 1, Term("to", "carol"), {2}),
    ("subject", 1, Term("subject", "budget"), {2}),
    ("body", 1, Term("body", "budget"), {1}),
    ("attachment name", 1, Term("attachments", "report"), {1}),
    ("attachment extension", 1, Term("attachments", "jpg"), {4}),
    ("attachment full name", 1, Term("attachments", "report-q3.pdf"), {1}),
    ("words in different fields", 1, Term(None, "alice budget"), {1, 2}),
    ("all words in one field", 1, Term("body", "quarterly budget"), {1}),
    # stemming
    ("stem run", 1, Term(None, "run"), {1, 2, 8}),
    ("stem running", 1, Term("body", "running"), {1, 2, 8}),
    ("stem plural", 1, Term("subject", "reports"), {1}),
    # Unicode: case and accent insensitive
    ("accent-free query", 1, Term(None, "cafe"), {4}),
    ("accented upper-case query", 1, Term(None, "CAFÉ"), {4}),
    ("sharp s", 1, Term(None, "STRASSE"), {3}),
    ("umlaut", 1, Term("from", "muller"), {3}),
    ("diaeresis", 1, Term(None, "noel"), {4}),
    ("accented name", 1, Term("from", "emilie"), {4}),
    ("cyrillic", 1, Term(None, "ПРИВЕТ"), {5}),
    ("cyrillic lower", 1, Term("body", "русский"), {5}),
    ("greek accent", 1, Term(None, "γεια"), {5}),
    ("greek upper", 1, Term(None, "ΚΌΣΜΕ"), {5}),
    ("cjk", 1, Term(None, "東京"), {7}),
    ("cjk order", 1, Term(None, "京東"), set()),
    ("cjk subject", 1, Term("subject", "会議"), {7}),
    # phrases
    ("phrase", 1, Phrase(None, "quarterly report"), {1}),
    ("words out of order", 1, Term(None, "report quarterly"), {1, 2}),
    ("phrase out of order", 1, Phrase(None, "report quarterly"), set()),
    ("phrase in field", 1, Phrase("subject", "quarterly report"), {1}),
    ("phrase not in field", 1, Phrase("from", "quarterly report"), set()),
    ("phrase stemmed", 1, Phrase("body", "NUMBER are runs"), {1}),
    ("phrase of common words", 1, Phrase(None, "to be or not to be"), {8}),
    ("phrase not across list values", 1, Phrase("to", "com carol"), set()),
    ("words across list values", 1, Term("to", "com carol"), {2}),
    ("phrase not across fields", 1, Phrase(None, "report please"), set()),
    # e-mail addresses
    ("full address", 1, Term(None, "alice@example.com"), {1, 2}),
    ("full address in from", 1, Term("from", "Alice@Example.com"), {1}),
    ("address with other domain", 1, Term(None, "alice@example.org"), set()),
    ("domain", 1, Term(None, "example.com"), {1, 2, 8}),
    ("domain word", 1, Term(None, "example"), {1, 2, 5, 6, 8}),
    ("local part", 1, Term("to", "bob"), {1}),
    ("non-ascii address", 1, Term(None, "juergen@beispiel.de"), {3}),
    # boolean logic
    ("and not", 1, And(Term(None, "budget"), Not(Term("from", "bob"))), {1}),
    ("or", 1, Or(Term(None, "cafe"), Term(None, "strasse")), {3, 4}),
    ("not", 1, Not(Term(None, "spam")), ALL_1 - {6}),
    ("not nothing", 1, Not(Term(None, "zebra")), ALL_1),
    ("not not", 1, Not(Not(Term(None, "cafe"))), {4}),
    ("empty and", 1, And(), ALL_1),
    ("empty or", 1, Or(), set()),
    ("no words", 1, Term(None, "--"), ALL_1),
    (
        "nested",
        1,
        And(Or(Term("subject", "budget"), Term("subject", "quarterly")),
            Not(Phrase(None, "quarterly report"))),
        {2},
    ),
    (
        "nested or of ands",
        1,
        Or(And(Term(None, "cafe"), Term(None, "noel")),
           And(Term(None, "strasse"), Not(Term(None, "hauser")))),
        {4},
    ),
    ("and of ors", 1, And(Or(Term("from", "alice"), Term("from", "bob")), Term(None, "number")),
     {1, 2}),
    # isolation
    ("isolation", 2, Term(None, "cafe"), set()),
    ("isolation of not", 2, Not(Term(None, "budget")), {20}),
    ("isolation of and()", 2, And(), {1, 20}),
    ("unknown account", 3, Not(Term(None, "budget")), set()),
]


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def fts(kind: str, tmp_path: Path) -> AsyncIterator[FtsStore]:
    settings = _settings(kind, tmp_path)
    store = open_fts_store(f"fts-{kind}", settings)
    try:
        for doc_id, fields in DOCS.items():
            await store.index(1, doc_id, fields)
        await store.index(1, 9, GERMAN_DOC, language="german")
        for doc_id, fields in DOCS_2.items():
            await store.index(2, doc_id, fields)
        yield store
    finally:
        await store.close()
        _drop(settings)


def _settings(kind: str, tmp: Path) -> dict[str, Any]:
    if kind == "whoosh":
        return {"type": "whoosh", "path": str(tmp / "whoosh")}
    if kind == "sqlite":
        return {"type": "sqlite", "path": str(tmp / "fts.db")}
    settings = backends.settings_for(kind, tmp)  # skips when the service is unreachable
    settings["table"] = f"f_{uuid.uuid4().hex[:16]}"
    return settings


def _drop(settings: dict[str, Any]) -> None:
    if settings["type"] in ("postgresql", "mysql"):
        backends.drop_table({**settings, "table": settings["table"] + "_fts"})


async def test_queries(fts: FtsStore) -> None:
    wrong = []
    for name, account, q, expected in CASES:
        got = await fts.query(account, q)
        if got != expected:
            wrong.append(f"{name}: {q!r} -> {sorted(got)}, expected {sorted(expected)}")
    assert not wrong, "\n".join(wrong)


async def test_document_language(fts: FtsStore) -> None:
    # German stemming: "Häuser" and "Haus" share the stem "haus" (doc 9 only; doc 3 was
    # indexed with the English stemmer, which keeps "hauser").
    assert await fts.query(1, Term(None, "Haus"), language="de") == {9}
    assert await fts.query(1, Term(None, "häuser"), language="german") == {9}
    assert await fts.query(1, Term(None, "häuser")) == {3}


async def test_reindex_replaces(fts: FtsStore) -> None:
    await fts.index(1, 4, {"subject": "Tea time", "to": "zoe@example.com"})
    assert await fts.query(1, Term(None, "cafe")) == set()
    assert await fts.query(1, Term(None, "tea")) == {4}
    assert await fts.query(1, Term("from", "emilie")) == set()  # a field left out is gone
    assert await fts.query(1, Term("to", "zoe@example.com")) == {4}
    assert await fts.query(2, Term(None, "tea")) == set()


async def test_index_many_is_the_same_as_one_by_one(fts: FtsStore) -> None:
    await fts.index_many([
        (3, 1, {"subject": "Running late", "from": "ann@example.org"}, None),
        (3, 2, {"subject": "Quarterly numbers", "body": "the runner arrived"}, None),
        (3, 1, {"subject": "Tea time"}, None),  # a later entry for the same id replaces it
    ])
    assert await fts.query(3, Term(None, "tea")) == {1}
    assert await fts.query(3, Term(None, "run")) == set()
    assert await fts.query(3, Term("body", "runner")) == {2}
    await fts.index_many([])


async def test_unindex(fts: FtsStore) -> None:
    await fts.unindex(1, 6)
    await fts.unindex(1, 999)  # not indexed: no error
    assert await fts.query(1, Term(None, "spam")) == set()
    assert await fts.query(1, And()) == ALL_1 - {6}
    await fts.unindex(2, 1)
    assert await fts.query(1, Term(None, "budget")) == {1, 2}  # same id, other account
    assert await fts.query(2, And()) == {20}


async def test_unindex_many(fts: FtsStore) -> None:
    await fts.unindex_many([(1, 6), (1, 2), (1, 999), (2, 20)])  # 999: not indexed, no error
    assert await fts.query(1, And()) == ALL_1 - {2, 6}
    assert await fts.query(1, Term(None, "budget")) == {1}
    assert await fts.query(2, And()) == {1}  # account 2's id 1 stays: only (2, 20) went
    await fts.unindex_many([])


async def test_unindex_account(fts: FtsStore) -> None:
    await fts.unindex_account(1)
    assert await fts.query(1, And()) == set()
    assert await fts.query(1, Term(None, "budget")) == set()
    assert await fts.query(2, Term(None, "budget")) == {1}
    await fts.index(1, 5, {"body": "fresh start"})
    assert await fts.query(1, Not(Term(None, "zebra"))) == {5}


async def test_invalid_input(fts: FtsStore) -> None:
    with pytest.raises(ValueError, match="unknown full-text field"):
        await fts.index(1, 1, {"headers": "x"})
    with pytest.raises(ValueError, match="unknown full-text field"):
        await fts.query(1, Term("headers", "x"))
    with pytest.raises(ValueError, match="document id"):
        await fts.index(1, -1, {"body": "x"})
    with pytest.raises(ValueError, match="account id"):
        await fts.query(1 << 32, Term(None, "x"))


async def test_reopen_keeps_index(kind: str, tmp_path: Path) -> None:
    settings = _settings(kind, tmp_path)
    try:
        store = open_fts_store("a", settings)
        await store.index(7, 1, {"subject": "persisted words"})
        other = open_fts_store("b", settings)  # a second handle, as another process would
        assert await other.query(7, Term(None, "persisted")) == {1}
        await other.index(7, 2, {"subject": "written elsewhere"})
        assert await store.query(7, Phrase(None, "written elsewhere")) == {2}
        await store.close()
        await other.close()
    finally:
        _drop(settings)


def test_types_that_cannot_serve_fts() -> None:
    for kind in ("lmdb", "memory", "fs", "s3", "redis", "memcached"):
        with pytest.raises(StoreError) as info:
            open_fts_store("idx", {"type": kind, "path": "/nonexistent"})
        message = str(info.value)
        assert f'store "idx": a {kind} store cannot hold the full-text index' in message
        assert "whoosh, sqlite, postgresql, mysql" in message or all(
            t in message for t in ("whoosh", "sqlite", "postgresql", "mysql")
        )


def test_unknown_language_setting(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="language"):
        open_fts_store("idx", {"type": "whoosh", "path": str(tmp_path), "language": "klingon"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'from:alice subject:"quarterly report" -spam OR budget',
            And(Term("from", "alice"), Phrase("subject", "quarterly report"),
                Or(Not(Term(None, "spam")), Term(None, "budget"))),
        ),
        ("", And()),
        ("(a OR b) AND NOT c", And(Or(Term(None, "a"), Term(None, "b")), Not(Term(None, "c")))),
        ("attachment:q3.pdf FILENAME:x", And(Term("attachments", "q3.pdf"),
                                             Term("attachments", "x"))),
        ("foo:bar x-ray", And(Term(None, "foo:bar"), Term(None, "x-ray"))),
        ('to:"Bob \\"B\\"" or', And(Phrase("to", 'Bob "B"'), Term(None, "or"))),
        ('"unclosed phrase', Phrase(None, "unclosed phrase")),
    ],
)
def test_parse_query(text: str, expected: Any) -> None:
    assert parse_query(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(a", "parenthesis at position 1 is not closed"),
        ("a )", 'unmatched ")" at position 3'),
        ("a OR", "ends after an operator"),
        ("OR a", 'unexpected "OR" at position 1'),
    ],
)
def test_parse_query_errors(text: str, message: str) -> None:
    with pytest.raises(QuerySyntaxError, match=re.escape(message)):
        parse_query(text)


async def test_parsed_query_on_store(fts: FtsStore) -> None:
    q = parse_query('from:alice@example.com OR to:alice@example.com -"quarterly report"')
    assert await fts.query(1, q) == {2}
