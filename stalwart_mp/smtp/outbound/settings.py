"""Settings of outbound delivery: the queue's schedule, routing, the SMTP client.

Defaults follow mature MTAs (Postfix: maximal_queue_lifetime 5d, delay_warning_time 4h,
smtp_connect_timeout 30s, smtp_data_done_timeout 600s).
"""
from __future__ import annotations

from stalwart_mp.config.schema import (
    REQUIRED,
    SCHEMA,
    Bool,
    Choice,
    Duration,
    Int,
    ListOf,
    Setting,
    Str,
)

TLS_MODES = ("opportunistic", "starttls", "implicit", "none")

SCHEMA.add(
    Setting("outbound.enabled", Bool(), True,
            "Run the delivery runner in this node's queue process. Nodes sharing one store "
            "may all deliver (leases keep them apart); off: this node only queues."),
    Setting("outbound.retry", ListOf(Duration(), min_items=1),
            [60.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0],
            "Waits between delivery attempts of a message with recipients left; after the "
            "last one it repeats until outbound.expire."),
    Setting("outbound.expire", Duration(), 5 * 86400.0,
            "How long a message is retried; then its remaining recipients fail (4.4.7) and a "
            "failure DSN goes to the sender."),
    Setting("outbound.notify", ListOf(Duration()), [4 * 3600.0],
            'When (after queueing) a delay DSN is sent for recipients still not delivered '
            '(RFC 3464 "delayed"); [] = never.'),
    Setting("outbound.lease", Duration(), 900.0,
            "How long a queue process holds a message it is delivering. A process that dies "
            "mid-delivery leaves the message to any queue process after this time."),
    Setting("outbound.concurrency", Int(min=1, max=10_000), 100,
            "Messages delivered at once by one queue process."),
    Setting("outbound.concurrency-per-domain", Int(min=1, max=1000), 10,
            "Connections at once to one recipient domain."),
    Setting("outbound.rate-per-domain", Int(min=0), 0,
            "Delivery attempts (transactions) per recipient domain per "
            "outbound.rate-window, counted in the lookup store over every queue process "
            "(0 = no limit). Beyond it the domain's recipients wait for the next window."),
    Setting("outbound.rate-window", Duration(), 60.0, "Window of outbound.rate-per-domain."),
    Setting("outbound.scan-interval", Duration(), 1.0,
            "Longest wait between two scans of the due index (new messages wake the runner "
            "at once through the event bus)."),
    Setting("outbound.port", Int(min=1, max=65535), 25,
            "Port of the remote MX hosts (25; tests point it at a loopback sink)."),
    Setting("outbound.hostname", Str(), "",
            "Name given in EHLO and in DSNs; empty = server.hostname."),
    Setting("outbound.tls", Choice(*TLS_MODES), "opportunistic",
            'TLS towards MX hosts: "opportunistic" (STARTTLS when offered, certificate not '
            'checked, RFC 7435), "starttls" (required and verified), "none".'),
    Setting("outbound.timeout.connect", Duration(), 30.0, "Connecting to a remote host."),
    Setting("outbound.timeout.command", Duration(), 300.0,
            "Waiting for the greeting or a reply to a command."),
    Setting("outbound.timeout.data", Duration(), 600.0,
            "Waiting for the reply to the end of the message data."),
    Setting("outbound.idle", Duration(), 5.0,
            "How long an open connection is kept for the next message to the same host."),
    Setting("outbound.relay.host", Str(), "",
            "Send everything through this smarthost instead of the recipients' MX hosts "
            "(empty = direct delivery)."),
    Setting("outbound.relay.port", Int(min=1, max=65535), 587, "Port of the smarthost."),
    Setting("outbound.relay.tls", Choice(*TLS_MODES), "starttls",
            'TLS to the smarthost: "starttls", "implicit" (TLS from the first byte, port '
            '465), "opportunistic" or "none".'),
    Setting("outbound.relay.ca-file", Str(), "",
            "PEM file of the CA certificates that verify the smarthost (empty: the system's)."),
    Setting("outbound.relay.username", Str(), "", "AUTH user at the smarthost (empty: none)."),
    Setting("outbound.relay.password", Str(), "", "AUTH password at the smarthost.",
            secret=True),
    Setting("outbound.route.*.host", Str(nonempty=True), REQUIRED,
            'Per-domain route: deliver mail for this recipient domain (the table\'s name, '
            'e.g. [outbound.route."partner.example"]) to this host.'),
    Setting("outbound.route.*.port", Int(min=1, max=65535), 25, "Port of the route's host."),
    Setting("outbound.route.*.tls", Choice(*TLS_MODES), "opportunistic",
            "TLS to the route's host (as outbound.relay.tls)."),
    Setting("outbound.route.*.ca-file", Str(), "",
            "PEM file of the CA certificates that verify the route's host."),
    Setting("outbound.route.*.username", Str(), "", "AUTH user at the route's host."),
    Setting("outbound.route.*.password", Str(), "", "AUTH password at the route's host.",
            secret=True),
    Setting("outbound.ca-file", Str(), "",
            "PEM file of the CA certificates that verify MX hosts (MTA-STS, REQUIRETLS) and "
            "MTA-STS policy hosts (empty: the system's)."),
    Setting("outbound.mta-sts.enabled", Bool(), True,
            "Apply recipient domains' MTA-STS policies (RFC 8461) to direct MX delivery."),
    Setting("outbound.mta-sts.port", Int(min=1, max=65535), 443,
            "HTTPS port of the mta-sts.<domain> policy hosts (443; tests use a loopback one)."),
    Setting("outbound.mta-sts.timeout", Duration(), 30.0,
            "Time limit of one MTA-STS policy fetch (RFC 8461 §3.3)."),
    Setting("outbound.tls-reports.enabled", Bool(), True,
            "Count TLS sessions to MTA-STS domains and send the daily TLS reports "
            "(RFC 8460) to the rua of their _smtp._tls record."),
    Setting("outbound.tls-reports.from", Str(), "",
            "Sender of the TLS reports; empty = postmaster@<server.hostname>. The reports "
            "are DKIM-signed when the address's domain has keys."),
    Setting("outbound.dmarc-reports.enabled", Bool(), True,
            "Record the DMARC results of mail received on the MX and send the daily "
            "aggregate reports (RFC 7489 §7.2) to the rua of the sender domains' records."),
    Setting("outbound.dkim.sign", Bool(), True,
            "DKIM-sign mail submitted by our users with every key of the sender's domain "
            "(ed25519-sha256 and rsa-sha256)."),
)
