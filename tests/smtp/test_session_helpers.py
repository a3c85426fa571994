"""Small pure helpers of the SMTP session (smtp/session.py)."""
from __future__ import annotations

import email.utils
import time
from datetime import UTC, datetime

from stalwart_mp.smtp import session


def test_received_date_is_rfc5322_utc_and_formatted_once_per_second() -> None:
    before = int(time.time())
    date = session._received_date()
    after = int(time.time())
    assert date in {email.utils.format_datetime(datetime.fromtimestamp(t, UTC))
                    for t in range(before, after + 1)}
    assert date.endswith(" +0000")  # RFC 5322 §3.3: UTC, and known to be
    assert session._received_date() is session._date_cache[1]  # the cached text
    session._date_cache = (before - 10, "stale")
    assert session._received_date() != "stale", "a new second gives a new date"


def test_received_count_reads_the_header_block_only() -> None:
    content = (b"Received: a\r\nreceived: b\r\nSubject: x\r\n\r\n"
               b"Received: in the body\r\n")
    assert session._received_count(content) == 2
