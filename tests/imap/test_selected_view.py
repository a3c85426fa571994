"""The selected-mailbox view without a server: sequence sets to messages, UID gaps."""
from __future__ import annotations

import pytest

from stalwart_mp.imap.protocol.parser import parse_command
from stalwart_mp.imap.selected import Selected, _gaps
from stalwart_mp.imap.session import No
from stalwart_mp.mail.records import Mailbox


class _Session:
    def __init__(self) -> None:
        self.saved_uids = [7]  # a SEARCHRES result


def view() -> Selected:
    return Selected(Mailbox(1, "INBOX", uidnext=10), False, [(2, 20), (3, 30), (7, 70)], 5)


def test_resolve_sequence_numbers_uids_and_saved():
    sel = view()
    seq = parse_command(b"a FETCH 2:* FLAGS").sequence
    assert sel.resolve(_Session(), False, seq) == [(2, 3, 30), (3, 7, 70)]
    uid = parse_command(b"a UID FETCH 4:* FLAGS").sequence
    assert sel.resolve(_Session(), True, uid) == [(3, 7, 70)]
    # RFC 9051 §6.4.9: "*" is the highest UID, so 100:* names it even above the range
    assert sel.resolve(_Session(), True, parse_command(b"a UID FETCH 100:* FLAGS").sequence) \
        == [(3, 7, 70)]
    assert sel.resolve(_Session(), True, parse_command(b"a UID FETCH 4:6 FLAGS").sequence) == []
    assert sel.resolve(_Session(), False, parse_command(b"a FETCH $ FLAGS").sequence) == \
        [(3, 7, 70)]
    with pytest.raises(No, match="beyond the last message"):
        sel.resolve(_Session(), False, parse_command(b"a FETCH 4 FLAGS").sequence)
    assert sel.seq(7) == 3 and sel.seq(5) is None


def test_uid_gaps_are_written_as_ranges():
    assert _gaps([2, 3, 7], 10) == "1,4:6,8:9"
    assert _gaps([], 1) == "" and _gaps([1, 2], 3) == ""
    assert _gaps([4_000_000], 4_000_001) == "1:3999999"
