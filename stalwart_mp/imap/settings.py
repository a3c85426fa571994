"""Settings of the IMAP listeners (``protocol = "imap"``)."""
from __future__ import annotations

from stalwart_mp.config.schema import SCHEMA, Bool, Duration, Int, Setting, Size

SCHEMA.add(
    Setting("imap.max-message-size", Size(), 50 * 1024 * 1024,
            "Largest message APPEND accepts (announced as APPENDLIMIT, RFC 7889); a bigger "
            "literal is refused before it is read."),
    Setting("imap.max-literal", Size(), 64 * 1024,
            "Largest literal in any command other than APPEND (login names, search strings)."),
    Setting("imap.max-line", Size(), 64 * 1024,
            "Longest command line (without literals)."),
    Setting("imap.max-bad-commands", Int(min=1, max=1000), 20,
            "Malformed commands (tagged BAD) a session may send before it is disconnected."),
    Setting("imap.timeout.unauthenticated", Duration(), 60.0,
            "A session that has not logged in is closed (BYE) after this long without a "
            "command."),
    Setting("imap.timeout.authenticated", Duration(), 1800.0,
            "Idle timeout of a logged-in session (RFC 9051 §5.4: at least 30 minutes); IDLE "
            "sessions are kept as long."),
    Setting("imap.allow-plain-text", Bool(), False,
            "Allow LOGIN and cleartext SASL before STARTTLS from non-loopback clients "
            "(LOGINDISABLED is announced otherwise)."),
    Setting("imap.max-search-results-saved", Int(min=0), 100_000,
            "Most UIDs SEARCH RETURN (SAVE) keeps for $ (RFC 5182)."),
)
