"""Settings of the SMTP, submission and LMTP listeners."""
from __future__ import annotations

from stalwart_mp.config.schema import SCHEMA, Bool, Duration, Int, ListOf, Setting, Size, Str

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
    Setting("smtp.dnsbl.zones", ListOf(Str(nonempty=True)), [],
            'DNS blocklists (RFC 5782) checked for every MX client, e.g. ["zen.spamhaus.org"]; '
            "a listed client is refused at MAIL FROM with 554 5.7.1. Unreachable zones are "
            "skipped (logged)."),
    Setting("smtp.greylist.enabled", Bool(), False,
            "Greylisting on the MX: defer (451 4.7.1) the first attempt of an unknown "
            "(client network, sender, recipient) triplet."),
    Setting("smtp.greylist.delay", Duration(), 300.0,
            "How long a new triplet is deferred before a retry is accepted."),
    Setting("smtp.greylist.ttl", Duration(), 30 * 86400.0,
            "How long an accepted triplet is remembered (refreshed by every delivery)."),
    Setting("smtp.rate-limit.ip", Int(min=0), 0,
            "Messages one client address may send per smtp.rate-limit.window on the MX "
            "(0 = no limit). Beyond it: 451 4.7.1 with the seconds to wait."),
    Setting("smtp.rate-limit.sender", Int(min=0), 500,
            "Messages one authenticated account may submit per smtp.rate-limit.window "
            "(0 = no limit)."),
    Setting("smtp.rate-limit.window", Duration(), 3600.0,
            "Window of the rate limits (counted in the lookup store, shared by all workers)."),
    Setting("smtp.greeting-delay", Duration(), 0.0,
            'Wait this long before the greeting on the MX; a client that talks first (an '
            '"early talker", typical of spam engines) is refused with 554 5.5.1 and dropped. '
            'Postfix\'s postscreen uses a few seconds; 0 = greet at once.'),
    Setting("smtp.max-received", Int(min=1, max=1000), 50,
            "A message with more Received fields than this is looping: refused with 554 5.4.6 "
            "(RFC 5321 §6.3)."),
)
