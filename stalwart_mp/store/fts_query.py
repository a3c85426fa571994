"""Parse a user's search string into the full-text query AST (``fts``).

For the admin UI and JMAP's free-text filter. Syntax (as in webmail search boxes):

- ``budget report``: both words (implicit AND; ``AND`` may be written).
- ``"quarterly report"``: a phrase.
- ``from:alice``, ``subject:"quarterly report"``: restricted to a field (from, to, cc, bcc,
  subject, body, attachment/attachments/filename); an unknown prefix is searched as text.
- ``-spam`` or ``NOT spam``: exclusion.
- ``a OR b``: either. OR binds tighter than AND, as in Gmail:
  ``from:alice -spam OR budget`` is from:alice AND (NOT spam OR budget).
- ``( ... )``: grouping. An unclosed quote runs to the end of the string.

Operators are upper-case words; lower-case "or"/"and"/"not" are searched as words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from stalwart_mp.store.fts import FIELDS, And, Not, Or, Phrase, Query, Term

ALIASES = {**{f: f for f in FIELDS}, "attachment": "attachments", "filename": "attachments"}

# A token: parenthesis, a quoted phrase (optionally field-prefixed), or a bare word.
_LEX = re.compile(
    r'\s*(?:(?P<paren>[()])|(?P<neg>-)(?=[^\s)])'
    r'|(?:(?P<field>[A-Za-z]+):)?(?:"(?P<phrase>(?:[^"\\]|\\.)*)"?|(?P<word>[^\s()"]+)))'
)


class QuerySyntaxError(ValueError):
    """The search string is malformed; the message says where."""


@dataclass(slots=True)
class _Tok:
    kind: str  # "(", ")", "-", "AND", "OR", "NOT", "leaf"
    pos: int
    leaf: Query | None = None


def _leaf(field: str | None, phrase: str | None, word: str | None) -> Query:
    if phrase is not None:
        phrase = re.sub(r"\\(.)", r"\1", phrase)
    target = ALIASES.get(field.lower()) if field else None
    if field and target is None:  # "foo:bar" is text, not a field
        if phrase is not None:
            return Phrase(None, f"{field}: {phrase}")
        return Term(None, f"{field}:{word}")
    if phrase is not None:
        return Phrase(target, phrase)
    return Term(target, word or "")


def _lex(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _LEX.match(text, pos)
        if m is None or m.end() == pos:  # only trailing spaces are left
            break
        start = m.end() - len(m.group().lstrip())
        if m["paren"]:
            out.append(_Tok(m["paren"], start))
        elif m["neg"]:
            out.append(_Tok("-", start))
        elif m["field"] is None and m["word"] in ("AND", "OR", "NOT"):
            out.append(_Tok(m["word"], start))
        else:
            out.append(_Tok("leaf", start, _leaf(m["field"], m["phrase"], m["word"])))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, tokens: list[_Tok]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def conjunction(self) -> Query:
        items: list[Query] = []
        while (tok := self.peek()) is not None and tok.kind != ")":
            if tok.kind == "AND":
                self.take()
                continue
            items.append(self.disjunction())
        return items[0] if len(items) == 1 else And(*items)

    def disjunction(self) -> Query:
        items = [self.unary()]
        while (tok := self.peek()) is not None and tok.kind == "OR":
            self.take()
            items.append(self.unary())
        return items[0] if len(items) == 1 else Or(*items)

    def unary(self) -> Query:
        tok = self.peek()
        if tok is None:
            raise QuerySyntaxError("the search ends after an operator; expected a word")
        self.take()
        if tok.kind in ("-", "NOT"):
            return Not(self.unary())
        if tok.kind == "(":
            inner = self.conjunction()
            close = self.peek()
            if close is None:
                raise QuerySyntaxError(f"the parenthesis at position {tok.pos + 1} is not closed")
            self.take()
            return inner
        if tok.kind == "leaf" and tok.leaf is not None:
            return tok.leaf
        raise QuerySyntaxError(f'unexpected "{tok.kind}" at position {tok.pos + 1}')


def parse_query(text: str) -> Query:
    """The AST of ``text``; an empty search matches everything (``And()``)."""
    parser = _Parser(_lex(text))
    query = parser.conjunction()
    tok = parser.peek()
    if tok is not None:  # only a ")" stops conjunction() early
        raise QuerySyntaxError(f'unmatched ")" at position {tok.pos + 1}')
    return query
