"""SASLprep (RFC 4013): the stringprep profile SCRAM applies to passwords (RFC 5802 §2.2).

Built on the stdlib ``stringprep`` tables, which are those of RFC 3454 (Unicode 3.2), so the
normalisation uses the matching ``unicodedata.ucd_3_2_0``.
"""
from __future__ import annotations

import stringprep
import unicodedata

# RFC 4013 §2.3 prohibited output (C.1.2 is mapped away in §2.1 and checked anyway).
_PROHIBITED = (
    stringprep.in_table_c12,  # non-ASCII space characters
    stringprep.in_table_c21_c22,  # ASCII and non-ASCII control characters
    stringprep.in_table_c3,  # private use
    stringprep.in_table_c4,  # non-character code points
    stringprep.in_table_c5,  # surrogate codes
    stringprep.in_table_c6,  # inappropriate for plain text
    stringprep.in_table_c7,  # inappropriate for canonical representation
    stringprep.in_table_c8,  # change display properties or deprecated
    stringprep.in_table_c9,  # tagging characters
)


def saslprep(text: str, *, stored: bool = False) -> str:
    """The prepared string; ValueError when it holds a prohibited character or breaks the
    bidi rule. ``stored`` also refuses unassigned code points (RFC 4013 §2.5, RFC 3454 §7)."""
    # RFC 4013 §2.1 mapping: non-ASCII spaces → SPACE, "commonly mapped to nothing" → removed
    mapped = "".join(" " if stringprep.in_table_c12(c) else c
                     for c in text if not stringprep.in_table_b1(c))
    # RFC 4013 §2.2 normalisation: Unicode form KC
    prepared = unicodedata.ucd_3_2_0.normalize("NFKC", mapped)
    for position, char in enumerate(prepared):
        if any(check(char) for check in _PROHIBITED):  # RFC 4013 §2.3
            raise ValueError(f"SASLprep: prohibited character U+{ord(char):04X} "
                             f"at position {position}")
        if stored and stringprep.in_table_a1(char):  # RFC 4013 §2.5
            raise ValueError(f"SASLprep: unassigned code point U+{ord(char):04X}")
    # RFC 4013 §2.4 → RFC 3454 §6 bidirectional characters
    rand_al = [stringprep.in_table_d1(c) for c in prepared]
    if any(rand_al):
        if any(stringprep.in_table_d2(c) for c in prepared):
            raise ValueError("SASLprep: mixes right-to-left and left-to-right characters")
        if not (rand_al[0] and rand_al[-1]):
            raise ValueError("SASLprep: right-to-left text must start and end with a "
                             "right-to-left character")
    return prepared
