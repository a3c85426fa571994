"""IMAP flags ↔ the model's keywords (RFC 8621 §4.1.1: \\Seen is "$seen"...).

The model keeps keywords in lower case (IMAP keywords are case-insensitive, RFC 9051
§2.3.2); the well-known ones are written back in their registered spelling.
"""
from __future__ import annotations

from stalwart_mp.imap.protocol.writer import Atom, Raw

SYSTEM = {"\\seen": "$seen", "\\answered": "$answered", "\\flagged": "$flagged",
          "\\draft": "$draft", "\\deleted": "$deleted"}
_BACK = {"$seen": "\\Seen", "$answered": "\\Answered", "$flagged": "\\Flagged",
         "$draft": "\\Draft", "$deleted": "\\Deleted", "$forwarded": "$Forwarded",
         "$mdnsent": "$MDNSent", "$junk": "$Junk", "$notjunk": "$NotJunk",
         "$phishing": "$Phishing", "$important": "$Important",
         # IANA "IMAP and JMAP Keywords" registry (RFC 9051 §2.3.2, RFC 5788) spellings
         "$submitpending": "$SubmitPending", "$submitted": "$Submitted",
         "$notphishing": "$NotPhishing", "$autosent": "$AutoSent",
         "$hasattachment": "$HasAttachment", "$hasnoattachment": "$HasNoAttachment",
         "$muted": "$Muted", "$followed": "$Followed", "$memo": "$Memo",
         "$hasmemo": "$HasMemo", "$unsubscribed": "$Unsubscribed",
         "$canunsubscribe": "$CanUnsubscribe", "$isnotification": "$IsNotification",
         "$istrusted": "$IsTrusted", "$imported": "$Imported",
         # clients that compare case-sensitively: Apple Mail's flag colours, Thunderbird's
         # pre-$ junk keywords
         "$mailflagbit0": "$MailFlagBit0", "$mailflagbit1": "$MailFlagBit1",
         "$mailflagbit2": "$MailFlagBit2", "junk": "Junk", "nonjunk": "NonJunk"}
FLAGS = ["\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "$Forwarded",
         "$MDNSent", "$Junk", "$NotJunk", "$Phishing"]


class FlagError(ValueError):
    pass


def to_keywords(flags: list[str]) -> list[str]:
    out = []
    for flag in flags:
        low = flag.lower()
        if low == "\\recent":   # RFC 3501 §2.3.2: cannot be set by a client; ignored
            continue
        if low.startswith("\\"):
            if low not in SYSTEM:
                raise FlagError(f"{flag} is not a flag a client may set")
            out.append(SYSTEM[low])
        else:
            out.append(low)
    return out


def to_flags(keywords: list[str]) -> list[Atom]:
    return [Atom(_BACK.get(k, k)) for k in keywords]


_WIRE: dict[tuple[str, ...], Raw] = {}


def flags_wire(keywords: list[str]) -> Raw:
    """``(\\Seen $Junk)`` as bytes, memoized: FETCH 1:* FLAGS writes the same few flag
    combinations thousands of times."""
    key = tuple(keywords)
    out = _WIRE.get(key)
    if out is None:
        out = Raw(b"(" + " ".join(_BACK.get(k, k) for k in keywords).encode("utf-8") + b")")
        if len(_WIRE) < 4096:
            _WIRE[key] = out
    return out
