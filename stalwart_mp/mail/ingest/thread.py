"""Threading keys: the RFC 5256 §2.1 base subject and normalised message identifiers
(RFC 5322 §3.6.4 msg-id, with the lenient extraction of RFC 5256 §3 REFERENCES)."""

from __future__ import annotations

import re

_WSP = re.compile(r"\s+")
_TRAILER = re.compile(r"\s*\(fwd\)\s*$", re.IGNORECASE)  # RFC 5256 §5 subj-trailer
# RFC 5256 §5: subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
_LEADER = re.compile(r"^(?:\s*\[[^\[\]]*\])*\s*(?:re|fwd?)\s*(?:\[[^\[\]]*\])?\s*:\s*",
                     re.IGNORECASE)
_BLOB = re.compile(r"^\s*\[[^\[\]]*\]\s*")  # RFC 5256 §5 subj-blob
_FWD_WRAP = re.compile(r"^\[fwd:(.*)\]$", re.IGNORECASE | re.DOTALL)  # RFC 5256 §5 subj-fwd
_ANGLE_ID = re.compile(r"<([^<>]*)>")
_COMMENT = re.compile(r"\([^()]*\)")


def base_subject(subject: str) -> str:
    """RFC 5256 §2.1 base subject of a decoded subject (case kept: compare casefolded)."""
    # (1) whitespace runs to a single space
    text = _WSP.sub(" ", subject).strip()
    while True:
        # (2) remove subj-trailer "(fwd)" repeatedly
        while True:
            stripped = _TRAILER.sub("", text)
            if stripped == text:
                break
            text = stripped.strip()
        # (3)-(5) remove subj-leader and subj-blob repeatedly, never leaving nothing
        while True:
            stripped = _LEADER.sub("", text, count=1)
            if stripped == text:
                blob = _BLOB.sub("", text, count=1)
                if blob != text and blob:  # (4) a blob is removed only if text remains
                    stripped = blob
            if stripped == text:
                break
            text = stripped.strip()
        # (6) "[fwd: ... ]" wrapper: unwrap and start again at (2)
        match = _FWD_WRAP.match(text)
        if match is None:
            return text
        text = match.group(1).strip()


def normalize_id(value: str) -> str | None:
    """``" <Abc@Example.com> "`` → ``"Abc@Example.com"``: brackets, comments and whitespace
    dropped (ids are compared exactly, RFC 5322 §3.6.4)."""
    match = _ANGLE_ID.search(value)
    text = match.group(1) if match else _COMMENT.sub("", value)
    text = _WSP.sub("", text)
    return text or None


def id_list(value: str) -> list[str]:
    """All msg-ids in an In-Reply-To or References value: each ``<...>``, or, when there are
    none, each whitespace-separated word that looks like an id (RFC 5256 §3)."""
    ids = [_WSP.sub("", m) for m in _ANGLE_ID.findall(value)]
    if not ids:
        ids = [w for w in _COMMENT.sub(" ", value).split() if "@" in w]
    seen: set[str] = set()
    out: list[str] = []
    for ident in ids:
        if ident and ident not in seen:
            seen.add(ident)
            out.append(ident)
    return out
