"""Text normalisation shared by every full-text backend: the same tokens everywhere.

Each engine (Whoosh, SQLite FTS5, PostgreSQL, MySQL FULLTEXT) has its own tokenizer, case
rules, stopwords and stemmers, and they disagree. So we never let them see raw text: this
module turns text into normalised tokens, and the backends index those tokens as opaque
words. A query is normalised the same way, so the conformance suite gets identical results
on every backend.

Normalisation of a word (index and query alike):

1. NFKD, case-fold, NFKD again (case folding can produce decomposable characters), drop
   every combining mark, then NFC (so Hangul syllables recompose). Result: matching is
   case- and accent-insensitive: "Café", "CAFE" and "cafe" are the same word, "Straße"
   equals "strasse", "Ελληνικά" equals "ελληνικα". Marks are dropped in every script
   (Japanese voicing marks too), on both sides, so this is a loss of precision, never of
   recall.
2. Words are runs of Unicode letters and digits (``_`` and punctuation separate words).
   Han, Hiragana and Katakana characters are one token each, because those scripts write
   no spaces: "東京都" is the tokens 東 京 都, and searching "東京" looks for the two
   characters side by side (see ``query_groups``).
3. Words are stemmed with the Snowball stemmer of the document's language (index) or of the
   query's language (query); default: the store's ``language`` setting ("english"), "none"
   disables stemming. No stopwords are removed: "to be or not to be" is searchable.
4. Tokens longer than ``MAX_TOKEN_CHARS`` are cut to that length (a base64 blob or a URL
   is not a word anyone types whole; the cut keeps the index small and within every
   engine's token limit).

Indexed field values are separated by ``GAP``, a token no query can produce, so a phrase
never matches across two addresses of a To list or two attachment names.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Any

MAX_TOKEN_CHARS = 64
MAX_FIELD_TOKENS = 100_000  # per field of one document: bounds index size on huge bodies
GAP = "_"  # between the values of a list field; queries never produce "_" (it is not \w-alnum)

# The Snowball stemmers we offer (snowballstemmer.algorithms(), minus aliases), plus "none".
LANGUAGES = (
    "none", "arabic", "armenian", "basque", "catalan", "czech", "danish", "dutch", "english",
    "esperanto", "estonian", "finnish", "french", "german", "greek", "hindi", "hungarian",
    "indonesian", "irish", "italian", "lithuanian", "nepali", "norwegian", "persian",
    "polish", "portuguese", "romanian", "russian", "serbian", "spanish", "swedish", "tamil",
    "turkish", "yiddish",
)
# ISO 639-1 codes (Content-Language, JMAP) for the languages above.
ISO_639_1 = {
    "ar": "arabic", "hy": "armenian", "eu": "basque", "ca": "catalan", "cs": "czech",
    "da": "danish", "nl": "dutch", "en": "english", "eo": "esperanto", "et": "estonian",
    "fi": "finnish", "fr": "french", "de": "german", "el": "greek", "hi": "hindi",
    "hu": "hungarian", "id": "indonesian", "ga": "irish", "it": "italian", "lt": "lithuanian",
    "ne": "nepali", "no": "norwegian", "nb": "norwegian", "nn": "norwegian", "fa": "persian",
    "pl": "polish", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sr": "serbian",
    "es": "spanish", "sv": "swedish", "ta": "tamil", "tr": "turkish", "yi": "yiddish",
}

_WORD = re.compile(r"[^\W_]+")
# Scripts written without spaces between words: one token per character.
_CJK = re.compile(
    "([\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0003134f])"
)
_SPACE = re.compile(r"\s+")


def language_name(language: str) -> str:
    """The stemmer name for ``language`` ("english", "en", "EN-us"); ValueError if unknown."""
    lang = language.strip().lower().replace("_", "-")
    if lang in LANGUAGES:
        return lang
    code = lang.split("-", 1)[0]
    if code in ISO_639_1:
        return ISO_639_1[code]
    raise ValueError(
        f"language {language!r}: expected one of {', '.join(LANGUAGES)} or an ISO 639-1 code"
    )


@functools.cache
def _stemmer(language: str) -> Any:  # snowballstemmer has no type stubs
    import snowballstemmer

    return snowballstemmer.stemmer(language)


@functools.lru_cache(maxsize=200_000)
def _stem(word: str, language: str) -> str:
    # Cached: word frequencies are Zipfian, so a mail corpus hits the cache almost always.
    if language == "none" or _CJK.fullmatch(word):
        return word
    return _stemmer(language).stemWord(word)[:MAX_TOKEN_CHARS] or word


@functools.cache
def _combining_marks() -> dict[int, None]:
    """Every combining character, mapped to None for ``str.translate`` (912 of them in
    Unicode 14; the scan of every code point takes ~40 ms, once per process)."""
    return {cp: None for cp in range(sys.maxunicode + 1) if unicodedata.combining(chr(cp))}


def normalise(text: str) -> str:
    """Case-folded text without accents (see the module docstring, step 1)."""
    if text.isascii():
        # NFKD leaves ASCII as it is, ASCII has no combining marks and its case folding
        # is lower(): the same result, without three passes over the text.
        return text.lower()
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    return unicodedata.normalize("NFC", text.translate(_combining_marks()))


def _words(text: str) -> Iterator[str] | list[str]:
    text = normalise(text)
    if text.isascii():  # no CJK characters to split off: one C-level pass
        return [w[:MAX_TOKEN_CHARS] for w in _WORD.findall(text)]
    return _words_any(text)


def _words_any(text: str) -> Iterator[str]:
    for match in _WORD.finditer(text):
        for part in _CJK.split(match.group()):
            if part:
                yield part[:MAX_TOKEN_CHARS]


def tokens(text: str, language: str) -> list[str]:
    """The stemmed tokens of ``text`` in order (``language`` already a stemmer name)."""
    return [_stem(w, language) for w in _words(text)]


def index_tokens(values: Iterable[str], language: str) -> list[str]:
    """Tokens of a field's values, ``GAP`` between values, at most MAX_FIELD_TOKENS."""
    out: list[str] = []
    for value in values:
        words = tokens(value, language)
        if not words:
            continue
        if out:
            out.append(GAP)
        out.extend(words)
        if len(out) >= MAX_FIELD_TOKENS:
            del out[MAX_FIELD_TOKENS:]
            break
    return out


def query_groups(text: str, language: str) -> list[tuple[str, ...]]:
    """The token groups of a search string: one group per whitespace-separated chunk.

    Tokens of one chunk must be adjacent, in order: "alice@example.com" is the group
    (alice, example, com), "example.com" finds the domain, "alice" the local part, and
    "東京" the two characters side by side. Chunks without tokens ("--") are dropped.
    """
    groups = []
    for chunk in _SPACE.split(text):
        group = tuple(tokens(chunk, language))
        if group:
            groups.append(group)
    return groups


def has_sequence(indexed: str, seq: tuple[str, ...]) -> bool:
    """True if the space-joined tokens ``indexed`` contain ``seq`` adjacent and in order."""
    return f" {' '.join(seq)} " in f" {indexed} "
