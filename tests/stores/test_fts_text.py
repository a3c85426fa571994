"""fts_text's fast paths (ASCII text, str.translate) against the definitions they replace:
the tokens must be the same for any text, or old indexes stop matching new queries."""
from __future__ import annotations

import re
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from stalwart_mp.store import fts_text

_WORD = re.compile(r"[^\W_]+")


def reference_normalise(text: str) -> str:
    """The module docstring's step 1, written out character by character."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKD", text).casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", text)


def reference_words(text: str) -> list[str]:
    out = []
    for match in _WORD.finditer(reference_normalise(text)):
        for part in fts_text._CJK.split(match.group()):
            if part:
                out.append(part[: fts_text.MAX_TOKEN_CHARS])
    return out


ASCII = st.text(st.characters(max_codepoint=127), max_size=300)
# Latin with accents, Greek, Cyrillic, CJK, combining marks, ligatures and full-width forms
MIXED = st.text(st.one_of(
    st.characters(max_codepoint=0x24F), st.characters(min_codepoint=0x300, max_codepoint=0x36F),
    st.characters(min_codepoint=0x370, max_codepoint=0x4FF),
    st.characters(min_codepoint=0x3040, max_codepoint=0x30FF),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF),
    st.characters(min_codepoint=0xFB00, max_codepoint=0xFB06),
    st.characters(min_codepoint=0xFF01, max_codepoint=0xFF5E), st.characters()), max_size=200)


@settings(max_examples=300, deadline=None)
@given(st.one_of(ASCII, MIXED))
def test_normalise_and_words_match_their_definitions(text: str) -> None:
    assert fts_text.normalise(text) == reference_normalise(text)
    assert list(fts_text._words(text)) == reference_words(text)


def test_known_words() -> None:
    assert fts_text.tokens("Café CAFE cafe, Straße — 東京都 e\u0301te", "none") == [
        "cafe", "cafe", "cafe", "strasse", "東", "京", "都", "ete"]
    long_word = "x" * 100
    assert fts_text.tokens(f"{long_word} ok", "none") == ["x" * fts_text.MAX_TOKEN_CHARS, "ok"]
    assert fts_text.tokens("Running runs", "english") == ["run", "run"]
