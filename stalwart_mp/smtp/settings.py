"""Settings of the SMTP, submission and LMTP listeners."""
from __future__ import annotations

from stalwart_mp.config.schema import SCHEMA, Bool, Int, Setting, Size

SCHEMA.add(
    Setting("smtp.max-message-size", Size(), 50 * 1024 * 1024,
            "Largest message accepted (announced in EHLO as SIZE, RFC 1870)."),
    Setting("smtp.max-recipients", Int(min=1, max=100_000), 100,
            "Most recipients per message (announced as LIMITS RCPTMAX, RFC 9422)."),
    Setting("smtp.checks.spf", Bool(), True,
            "Check SPF (RFC 7208) of the MAIL FROM (or HELO) on the smtp listeners."),
    Setting("smtp.checks.dkim", Bool(), True,
            "Verify DKIM signatures (RFC 6376, RFC 8463) and ARC chains of inbound mail."),
    Setting("smtp.checks.iprev", Bool(), True,
            "Check that the client IP's PTR name resolves back to it (RFC 8601 iprev)."),
    Setting("smtp.checks.dmarc", Bool(), True,
            "Evaluate DMARC (RFC 7489) from the SPF and DKIM results."),
    Setting("smtp.dmarc.enforce", Bool(), True,
            "Apply the sender domain's DMARC policy: p=reject is refused with 550 5.7.1, "
            "p=quarantine is delivered into Junk. Off: only record the result."),
)
