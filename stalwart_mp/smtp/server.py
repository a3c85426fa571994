"""The SMTP, submission and LMTP protocol servers of a worker (one per listener).

``protocol = "smtp"``: the MX on port 25 — no AUTH, relaying denied, SPF/DKIM/ARC/DMARC/
iprev checked and recorded in Authentication-Results. ``protocol = "submission"``: clients
on 587 (STARTTLS) and 465 (``tls.implicit = true``, RFC 8314) — AUTH required before MAIL.
``protocol = "lmtp"``: RFC 2033, behind another MTA, one reply per recipient.
"""
from __future__ import annotations

import asyncio

from stalwart_mp.smtp.session import SmtpSession


class SmtpProtocolServer:
    kind = "smtp"

    def __init__(self, listener, worker):
        self.listener = listener
        self.worker = worker
        cfg = worker.cfg
        self.hostname = cfg.get("server.hostname")
        self.max_message_size = cfg.get("smtp.max-message-size")
        self.max_recipients = cfg.get("smtp.max-recipients")
        self.timeout = listener.settings.get("timeout", 300.0)
        self.handshake_timeout = cfg.get("tls.handshake-timeout")
        self.allow_plain_text = cfg.get("auth.allow-plain-text")
        self.checks = {name: cfg.get(f"smtp.checks.{name}")
                       for name in ("spf", "dkim", "iprev", "dmarc")}
        self.enforce_dmarc = cfg.get("smtp.dmarc.enforce")
        self.dnsbl_zones = cfg.get("smtp.dnsbl.zones")
        self.greylist = cfg.get("smtp.greylist.enabled")
        self.greylist_delay = cfg.get("smtp.greylist.delay")
        self.greylist_ttl = cfg.get("smtp.greylist.ttl")
        self.rate_ip = cfg.get("smtp.rate-limit.ip")
        self.rate_sender = cfg.get("smtp.rate-limit.sender")
        self.rate_window = cfg.get("smtp.rate-limit.window")
        self.greeting_delay = cfg.get("smtp.greeting-delay") if self.kind == "smtp" else 0.0
        self.max_received = cfg.get("smtp.max-received")
        self.sessions: set[SmtpSession] = set()
        self.resolver = None

    @property
    def services(self):
        return self.worker.services

    @property
    def tls(self):
        return self.worker.tls

    async def start(self) -> None:
        if self.kind == "smtp":
            from stalwart_mp.dns.resolver import Resolver

            self.resolver = Resolver.from_config(self.worker.cfg)

    def protocol_factory(self, info) -> asyncio.Protocol:
        session = SmtpSession(self, info)
        self.sessions.add(session)
        return session

    async def shutdown(self) -> None:
        """Let sessions finish their current transaction, then close them (421)."""
        for _ in range(50):
            if not any(s._task and not s._task.done() for s in self.sessions):
                break
            await asyncio.sleep(0.1)
        for session in list(self.sessions):
            session.shutting_down()


class SubmissionProtocolServer(SmtpProtocolServer):
    kind = "submission"


class LmtpProtocolServer(SmtpProtocolServer):
    kind = "lmtp"
