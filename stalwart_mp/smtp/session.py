"""An SMTP / submission / LMTP session: the sans-I/O protocol glued to the transport.

``SmtpProtocol`` (protocol.py) parses bytes into events and decides state; this module
answers each event — directory lookups at RCPT, SASL for AUTH, delivery or queueing at the
end of the data — and writes the reply. Events are handled one at a time in arrival order,
so pipelined commands (RFC 2920) are answered in order.
"""
from __future__ import annotations

import asyncio
import base64
import email.utils
import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from stalwart_mp import logs, metrics
from stalwart_mp.smtp import protocol as p
from stalwart_mp.smtp.replies import Reply, ehlo_reply, reply
from stalwart_mp.worker.connection import upgrade_to_tls

log = logging.getLogger("stalwart_mp.smtp")

MAX_ERRORS = 20  # protocol errors before the session is dropped (421)

# the replies of every transaction, built once
_MAIL_OK = reply(250, "2.1.0", "OK")
_RCPT_OK = reply(250, "2.1.5", "OK")
_DATA_GO = reply(354, None, "Start mail input; end with <CRLF>.<CRLF>")
_ACCEPTED = reply(250, "2.0.0", "Message accepted")


@dataclass(slots=True)
class Transaction:
    mail_from: str | None = None
    params: p.MailParams | None = None
    local: list[str] = field(default_factory=list)      # accepted local recipients
    local_params: dict[str, p.RcptParams] = field(default_factory=dict)  # their DSN asks
    remote: list[tuple[str, p.RcptParams]] = field(default_factory=list)


class SmtpSession(asyncio.Protocol):
    def __init__(self, server, info):
        self.server = server
        self.info = info
        self.kind = server.kind            # "smtp" | "submission" | "lmtp"
        self.transport: asyncio.Transport | None = None
        # Python 3.11's asyncio.get_running_loop() makes a getpid() system call each time
        # (a fork check, gone in 3.12): looked up once, not on every read
        self._loop = asyncio.get_running_loop()
        self.proto = p.SmtpProtocol(
            lmtp=self.kind == "lmtp", max_message_size=server.max_message_size,
            max_recipients=server.max_recipients, tls=info.tls)
        self.tx = Transaction()
        self.principal = None              # the authenticated account
        self.errors = 0
        self._task: asyncio.Task | None = None
        self._sasl = None
        self._idle: asyncio.TimerHandle | None = None
        self._last_active = 0.0  # loop time of the last bytes received (idle timeout)
        self._greeted = False

    # --- transport ------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._greeted = False
        self._touch()
        if self.server.greeting_delay > 0:
            self._loop.call_later(self.server.greeting_delay, self._greet)
        else:
            self._greet()

    def _greet(self) -> None:
        if self._greeted or self.transport is None or self.transport.is_closing():
            return
        self._greeted = True
        self._write(reply(220, None, f"{self.server.hostname} ESMTP stalwart-mp ready"),
                    raw=True)

    def data_received(self, data: bytes) -> None:
        if not self._greeted:  # an early talker: spoke before the greeting (RFC 5321 §4.3.1)
            log.info("early talker refused", extra={"fields": {"ip": self.info.remote_ip}})
            self._greeted = True
            self._write(reply(554, None, "5.5.1 Protocol error: talking before the greeting"),
                        raw=True)
            self._close()
            return
        self.proto.receive_data(data)
        self._touch()
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run())

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc) -> None:
        self.server.sessions.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def _touch(self) -> None:
        """Note activity. The idle timer is not moved on every read (a cancel and a new
        timer each time): when it fires early it re-arms itself for the time left."""
        self._last_active = self._loop.time()
        if self._idle is None:
            self._idle = self._loop.call_at(self._last_active + self.server.timeout,
                                            self._timeout)

    def _timeout(self) -> None:
        self._idle = None
        if self.transport is None or self.transport.is_closing():
            return
        due = self._last_active + self.server.timeout
        if self._loop.time() < due:  # bytes came in since the timer was set
            self._idle = self._loop.call_at(due, self._timeout)
            return
        self._write_unsolicited(reply(421, "4.4.2", f"{self.server.hostname} idle timeout"))
        self._close()

    def shutting_down(self) -> None:
        """The worker is stopping: tell the client (RFC 5321 §3.8) and close."""
        self._write_unsolicited(reply(421, "4.3.2", f"{self.server.hostname} shutting down"))
        self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _write(self, r: Reply, raw: bool = False) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(r.to_bytes(enhanced=False) if raw else self.proto.send(r))

    def _write_unsolicited(self, r: Reply) -> None:
        """A reply to no command (421 on timeout or too many errors). RFC 2034 §3: once the
        client has greeted, every reply carries its enhanced status code; only the greeting
        banner goes without."""
        if self.transport is None or self.transport.is_closing():
            return
        enhanced = self.proto.enhanced_status_codes and self.proto.helo is not None
        self.transport.write(r.to_bytes(enhanced=enhanced))

    # --- the event loop of the session --------------------------------------------------

    async def _run(self) -> None:
        logs.conn_id.set(self.info.id)
        while True:
            event = self.proto.next_event()
            if event is p.NEED_DATA or event is p.PAUSED:
                return
            if event is p.CLOSED:
                self._close()
                return
            try:
                answer = await self._handle(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("session error")
                answer = reply(451, "4.3.0", "Temporary server error, try again later")
            if isinstance(answer, list):  # LMTP: one reply per recipient
                for r in answer:
                    self._write(r)
            else:
                self._write(answer)
            if isinstance(event, p.StartTls) and answer.code == 220:
                await self._start_tls()
            if isinstance(event, p.ErrorEvent):
                self.errors += 1
                if self.errors >= MAX_ERRORS:
                    self._write_unsolicited(reply(421, "4.7.0", "Too many errors"))
                    self._close()
                    return
            if getattr(self, "_drop", False):
                self._close()
                return

    async def _handle(self, event):
        match event:
            case p.ErrorEvent():
                return event.reply
            case p.Helo():
                return self._helo(event)
            case p.MailFrom():
                return await self._mail_from(event)
            case p.RcptTo():
                return await self._rcpt_to(event)
            case p.Data():
                return _DATA_GO
            case p.BdatChunk():
                return reply(250, "2.0.0", f"{event.size} octets received")
            case p.MessageData():
                return await self._message(event)
            case p.Rset():
                self.tx = Transaction()
                return reply(250, "2.0.0", "OK")
            case p.Noop():
                return reply(250, "2.0.0", "OK")
            case p.Quit():
                return reply(221, "2.0.0", f"{self.server.hostname} closing connection")
            case p.Vrfy():
                # RFC 5321 §3.5.3: 252 when we will not verify (VRFY is off: no enumeration)
                return reply(252, "2.5.0", "Cannot VRFY user, but will accept message")
            case p.Expn():
                return reply(502, "5.5.1", "EXPN is disabled")
            case p.Help():
                return reply(214, "2.0.0", "See RFC 5321; https://stalw.art")
            case p.StartTls():
                if self.server.tls is None:
                    return reply(454, "4.7.0", "TLS not available")
                return reply(220, "2.0.0", "Ready to start TLS")
            case p.Auth():
                return await self._auth_start(event)
            case p.AuthResponse():
                return await self._auth_step(event)
        return reply(502, "5.5.1", "Command not implemented")

    # --- commands -------------------------------------------------------------------

    def _extensions(self) -> list[str]:
        s = self.server
        ext = ["PIPELINING", "8BITMIME", "BINARYMIME", "CHUNKING", f"SIZE {s.max_message_size}",
               "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN"]
        if s.tls is not None and not self.proto.tls:
            ext.append("STARTTLS")
        if self.proto.tls:
            ext.append("REQUIRETLS")  # RFC 8689 §2: only offered over TLS
        mechs = self._mechanisms()
        if mechs and not self.proto.authenticated:
            ext.append("AUTH " + " ".join(mechs))
        ext.append(f"LIMITS RCPTMAX={s.max_recipients}")  # RFC 9422
        return ext

    def _mechanisms(self) -> list[str]:
        if self.kind != "submission":
            return []
        from stalwart_mp.auth.sasl import mechanisms_for

        return mechanisms_for(self.proto.tls or self._loopback(), self.server.allow_plain_text)

    def _loopback(self) -> bool:
        return self.info.remote_ip in ("127.0.0.1", "::1")

    def _helo(self, event: p.Helo) -> Reply:
        self.tx = Transaction()
        if event.extended or event.lhlo:
            return ehlo_reply(self.server.hostname, f"Hello {event.name}", self._extensions())
        return reply(250, None, f"{self.server.hostname} Hello {event.name}")

    async def _mail_from(self, event: p.MailFrom) -> Reply:
        if self.kind == "submission" and self.principal is None:
            return reply(530, "5.7.0", "Authentication required")
        if event.params.requiretls and not self.proto.tls:
            return reply(530, "5.7.10", "REQUIRETLS needs a TLS connection")
        if event.params.size and event.params.size > self.server.max_message_size:
            return reply(552, "5.3.4", "Message size exceeds the limit")
        if self.principal is not None and event.address and \
                not await self._owns(event.address):
            return reply(553, "5.7.1", f"{self.principal.name} may not send as "
                                       f"{event.address}")
        if self.kind == "smtp" and self.server.dnsbl_zones and not self._loopback():
            from stalwart_mp.smtp.policy import dnsbl_listing

            zone = await dnsbl_listing(self.info.remote_ip, self.server.dnsbl_zones,
                                       self.server.resolver)
            if zone:
                log.info("client listed", extra={"fields": {"zone": zone}})
                return reply(554, "5.7.1", f"Client host [{self.info.remote_ip}] blocked "
                                           f"using {zone}")
        limited = await self._rate_limited()
        if limited:
            return limited
        self.tx = Transaction(event.address, event.params)
        return _MAIL_OK

    async def _rate_limited(self) -> Reply | None:
        """Per-IP (MX) and per-account (submission) message rates, in the lookup store."""
        s = self.server
        if self.principal is not None and s.rate_sender:
            key, limit = b"rate:sender:" + self.principal.name.encode(), s.rate_sender
        elif self.kind == "smtp" and s.rate_ip:
            key, limit = b"rate:ip:" + self.info.remote_ip.encode(), s.rate_ip
        else:
            return None
        result = await s.services.lookup.rate_limit(key, limit, s.rate_window)
        if result.allowed:
            return None
        return reply(451, "4.7.1", f"Rate limit exceeded, try again in "
                                   f"{int(result.retry_after) + 1} seconds")

    async def _owns(self, address: str) -> bool:
        from stalwart_mp.directory.recipients import resolve

        result = await resolve(self.server.services.directory, address)
        return self.principal.name in result.accounts

    async def _rcpt_to(self, event: p.RcptTo) -> Reply:
        from stalwart_mp.mail.delivery import Status

        if self.server.services is None:
            return reply(451, "4.3.0", "Temporary failure, try again later")
        result = await self.server.services.delivery.resolve_recipient(event.address)
        if result.status == Status.DELIVERED:
            if self.kind == "smtp" and self.server.greylist and await self._greylisted(event):
                return reply(451, "4.7.1", "Greylisted, please try again later")
            self.tx.local.append(event.address)
            self.tx.local_params[event.address] = event.params
            return _RCPT_OK
        if result.status == Status.UNKNOWN:
            return reply(550, "5.1.1", f"Mailbox <{event.address}> does not exist")
        if result.status == Status.DISABLED:
            return reply(550, "5.2.1", f"Mailbox <{event.address}> is disabled")
        if result.status == Status.NOT_LOCAL:
            if self.principal is not None and self.kind == "submission":
                self.tx.remote.append((event.address, event.params))
                return reply(250, "2.1.5", "OK")
            return reply(550, "5.7.1", "Relaying denied")
        return reply(451, "4.3.0", "Temporary failure, try again later")

    async def _greylisted(self, event: p.RcptTo) -> bool:
        from stalwart_mp.smtp.policy import greylisted

        return await greylisted(self.server.services.lookup, self.info.remote_ip,
                                self.tx.mail_from or "", event.address,
                                self.server.greylist_delay, self.server.greylist_ttl)

    async def _message(self, event: p.MessageData) -> Reply | list[Reply]:
        from stalwart_mp.mail.delivery import Status

        tx, self.tx = self.tx, Transaction()
        if _received_count(event.content) >= self.server.max_received:
            return reply(554, "5.4.6", "Too many Received fields: mail loop detected")
        junk = False
        trace = self._received_header()
        if self.kind == "smtp":
            header, verdict = await self._authenticate_message(event.content, tx)
            if verdict == "reject":
                return reply(550, "5.7.1", "Rejected by the sender domain's DMARC policy")
            junk = verdict == "quarantine"
            trace = header + trace
        content = event.content
        if self.kind == "submission" and self.principal is not None:
            content = await self._dkim_sign(content, tx) + content
        raw = trace + content
        local_results = []
        if tx.local:
            local_results = await self.server.services.delivery.deliver(
                raw, tx.mail_from or "", tx.local, junk=junk)
        temporary = [r for r in local_results if r.status not in (Status.DELIVERED,)
                     and not r.permanent]
        # external members of the lists among the recipients, unless the client is told
        # to try the whole message again (LMTP answers each recipient: no retry of these)
        forwards = [] if temporary and self.kind != "lmtp" else _forwards(local_results)
        direct = {a.lower() for a, _ in tx.remote}   # also a recipient in its own right
        forwards = [f for f in forwards if f.address.lower() not in direct]
        queue_id = None
        if tx.remote:
            queue_id = await self._enqueue(raw, tx, self._remote_recipients(tx))
        if forwards:
            sealed = await self._arc_seal(raw, forwards)
            forwarded_id = await self._enqueue(sealed + raw, tx, forwards)
            queue_id = queue_id or forwarded_id
        if self.kind == "lmtp":  # RFC 2033 §4.2: one reply per accepted recipient
            _received_counter(self.kind).inc()
            return [_delivery_reply(r) for r in local_results]
        if temporary:
            return reply(451, "4.3.0", "Temporary failure for some recipients, try again")
        failed = [r for r in local_results if r.status != Status.DELIVERED]  # permanently
        if failed and not queue_id and len(failed) == len(local_results):
            # nobody took the message: refuse it now and the client bounces it
            return _delivery_reply(failed[0])
        if failed:
            await self._report(raw, tx, "failed", failed)
        delivered = [r for r in local_results if r.status == Status.DELIVERED]
        if delivered:
            await self._report(raw, tx, "delivered", delivered)
        _received_counter(self.kind).inc()
        if not queue_id:
            return _ACCEPTED
        return reply(250, "2.0.0", f"Message accepted queued as {queue_id}")

    async def _report(self, raw: bytes, tx: Transaction, action: str, results: list) -> None:
        """DSNs (RFC 3464) for local recipients once the message is accepted: "failed" for
        the permanent failures of some (a mailbox full, with ``delivery.over-quota =
        "permanent"``; RFC 5321 §6.1), "delivered" for those that asked NOTIFY=SUCCESS
        (RFC 3461 §5.2.2). Each as the recipient's NOTIFY asks (default: failures only),
        with its ORCPT; never to a null sender (RFC 3461 §6.2)."""
        if not tx.mail_from:
            return
        from stalwart_mp.smtp.outbound.dsn import Report, build, deliver_generated
        from stalwart_mp.smtp.queue.store import (
            DELIVERED,
            FAILED,
            QueuedMessage,
            QueuedRecipient,
            orcpt_text,
        )

        kind = "FAILURE" if action == "failed" else "SUCCESS"
        recipients = []
        for result in results:
            params = tx.local_params.get(result.address) or p.RcptParams()
            answer = (_delivery_reply(result) if action == "failed"
                      else reply(250, "2.0.0", "delivered to the mailbox"))
            rcpt = QueuedRecipient(
                result.address, list(params.notify or []), orcpt_text(params.orcpt),
                status=FAILED if action == "failed" else DELIVERED,
                reply=answer.to_bytes().decode("utf-8").strip())
            if rcpt.wants(kind):
                recipients.append(rcpt)
        if not recipients:
            return
        params = tx.params or p.MailParams()
        message = QueuedMessage(0, tx.mail_from, recipients, "", len(raw), time.time(), 0.0,
                                params.ret, params.envid)
        dsn = build(message, Report(action, recipients), raw, hostname=self.server.hostname)
        if await deliver_generated(self.server.services, dsn, tx.mail_from):
            metrics.dsn_sent_total.labels(action).inc()
        else:
            log.warning("DSN not delivered", extra={"fields": {
                "to": tx.mail_from, "action": action,
                "rcpts": ",".join(r.address for r in recipients)}})
        await self._wake_queue()

    async def _wake_queue(self, queue_id: int | None = None) -> None:
        """Wake the queue process's runner (best effort: it also polls)."""
        from stalwart_mp.smtp.queue.store import WAKE_TOPIC

        events = getattr(self.server.worker, "events", None)
        if events is not None:
            try:
                await events.publish(WAKE_TOPIC, {"id": queue_id})
            except Exception:
                log.warning("could not wake the queue runner", exc_info=True)

    async def _dkim_sign(self, content: bytes, tx: Transaction) -> bytes:
        """DKIM-Signature fields for a submitted message (smtp/outbound/dkim_sign.py):
        signed once here, so every copy (queued or local) carries the same signatures.
        A signing error is logged and the message goes unsigned, never refused."""
        if not self.server.worker.cfg.get("outbound.dkim.sign"):
            return b""
        from stalwart_mp.smtp.outbound.dkim_sign import sign

        try:
            return await sign(self.server.services.data, content, tx.mail_from or "")
        except Exception:
            log.exception("DKIM signing failed; the message goes unsigned")
            return b""

    @staticmethod
    def _remote_recipients(tx: Transaction) -> list:
        from stalwart_mp.smtp.queue.store import QueuedRecipient, orcpt_text

        return [QueuedRecipient(a, list(rp.notify or []), orcpt_text(rp.orcpt))
                for a, rp in tx.remote]

    async def _arc_seal(self, raw: bytes, forwards: list) -> bytes:
        """An ARC set for the copy forwarded to list members (smtp/outbound/arc_seal.py),
        with the key of the first list's domain; b"" when DKIM signing is off."""
        if not self.server.worker.cfg.get("outbound.dkim.sign"):
            return b""
        from stalwart_mp.smtp.outbound.arc_seal import seal

        domain = forwards[0].orcpt.rpartition("@")[2]
        return await seal(self.server.services.data, raw, domain, self.server.hostname)

    async def _enqueue(self, raw: bytes, tx: Transaction, recipients: list) -> int:
        """Queue the message, durably, for ``recipients``."""
        from stalwart_mp.smtp.queue.store import QueuedMessage, enqueue

        services = self.server.services
        blob_id = await services.blobs.put(raw)
        params = tx.params or p.MailParams()
        message = QueuedMessage(
            0, tx.mail_from or "", recipients,
            blob_id, len(raw), time.time(), 0.0, params.ret, params.envid,
            bool(params.requiretls), self.principal.name if self.principal else None)
        queue_id = await enqueue(services.data, services.blobs, message)
        await self._wake_queue(queue_id)
        return queue_id

    async def _authenticate_message(self, content: bytes, tx: Transaction
                                    ) -> tuple[bytes, str | None]:
        """SPF, DKIM, ARC, DMARC and iprev of an inbound message (RFC 8601): the
        Authentication-Results field to prepend, and the DMARC verdict to apply (None,
        "quarantine" or "reject")."""
        from stalwart_mp.mail.ingest import header_envelope
        from stalwart_mp.smtp.checks import (
            authentication_results,
            check_iprev,
            check_spf,
            evaluate_dmarc,
            verify_arc,
            verify_dkim,
        )

        checks, resolver, ip = self.server.checks, self.server.resolver, self.info.remote_ip
        helo = self.proto.helo.name if self.proto.helo else ""
        spf = helo_spf = None
        if checks["spf"]:
            spf = await check_spf(ip, helo, tx.mail_from or "", resolver)
            if tx.mail_from and _is_domain(helo):  # RFC 7208 §2.3: HELO identity too
                helo_spf = await check_spf(ip, helo, "", resolver)
        dkim = await verify_dkim(content, resolver) if checks["dkim"] else []
        arc = await verify_arc(content, resolver) if checks["dkim"] else None
        iprev = await check_iprev(ip, resolver) if checks["iprev"] else None
        dmarc = None
        if checks["dmarc"]:
            senders = header_envelope(content).from_   # the From header alone
            domain = senders[0].host if senders and senders[0].host else ""
            dmarc = await evaluate_dmarc(domain or "", spf, dkim, resolver)
        value = authentication_results(self.server.hostname, spf=spf, dkim=dkim, arc=arc,
                                       dmarc=dmarc, iprev=iprev, helo_spf=helo_spf)
        verdict = None
        if dmarc is not None and dmarc.result == "fail" and self.server.enforce_dmarc and \
                dmarc.policy in ("reject", "quarantine"):
            verdict = dmarc.policy
        if dmarc is not None and self.server.worker.cfg.get("outbound.dmarc-reports.enabled"):
            from stalwart_mp.smtp.outbound.dmarc_reports import record

            try:  # counted for the daily aggregate report (RFC 7489 §7.2)
                await record(self.server.services.data, dmarc, spf, dkim, ip,
                             tx.mail_from or "", verdict)
            except Exception:
                log.exception("DMARC result not recorded for the aggregate report")
        return f"Authentication-Results: {value}\r\n".encode(), verdict

    def _received_header(self) -> bytes:
        """RFC 5321 §4.4 trace field, prepended to every message we accept."""
        helo = self.proto.helo.name if self.proto.helo else "unknown"
        with_ = {"lmtp": "LMTP"}.get(self.kind, "ESMTP")
        if with_ == "ESMTP":
            with_ += "S" if self.proto.tls else ""
            with_ += "A" if self.principal is not None else ""  # RFC 3848
        date = _received_date()
        return (f"Received: from {helo} ([{self.info.remote_ip}])\r\n"
                f"\tby {self.server.hostname} (stalwart-mp) with {with_} id "
                f"{self.info.id};\r\n\t{date}\r\n").encode()

    # --- AUTH (RFC 4954) ------------------------------------------------------------

    async def _auth_start(self, event: p.Auth) -> Reply:
        from stalwart_mp.auth.sasl import start

        if self.kind != "submission":
            return reply(503, "5.5.1", "AUTH not available on this port")
        services = self.server.services
        if services is None:
            return reply(454, "4.7.0", "Temporary authentication failure")
        ip = self.info.remote_ip
        auth = services.auth

        async def verify_plain(user: str, password: str):
            return await auth.authenticate(user, password, ip)

        async def scram_secret(user: str, mechanism: str):
            return await auth.scram_secret(user, mechanism, ip)

        async def verify_token(token: str, user: str | None):
            info = await services.tokens.verify(token)
            return info.name if info and (user is None or user == info.name) else None

        self._sasl = start(event.mechanism, event.initial_response,
                           verify_plain=verify_plain, scram_secret=scram_secret,
                           verify_token=verify_token,
                           tls=self.proto.tls or self._loopback(),
                           allow_plain_without_tls=self.server.allow_plain_text,
                           fake_salt_key=services.secret)  # same made-up salts in every worker
        return await self._auth_answer(await self._sasl.begin())

    async def _auth_step(self, event: p.AuthResponse) -> Reply:
        if self._sasl is None:
            return reply(503, "5.5.1", "No authentication in progress")
        if event.cancelled:
            self._sasl.abort()
            self._sasl = None
            return reply(501, "5.0.0", "Authentication cancelled")
        return await self._auth_answer(await self._sasl.step(event.data))

    async def _auth_answer(self, result) -> Reply:
        from stalwart_mp.auth.sasl import Challenge, Reason
        from stalwart_mp.directory.auth import Failure

        if isinstance(result, Challenge):
            return reply(334, None, base64.b64encode(result.data).decode() or "")
        self._sasl = None
        auth_result = result.result
        if result.success and result.username:
            if auth_result is None:  # SCRAM / bearer: account for it and load the principal
                auth_result = await self.server.services.auth.scram_outcome(
                    result.username, self.info.remote_ip, True)
            if auth_result.ok:
                self.principal = auth_result.principal
                log.info("authenticated", extra={"fields": {"user": self.principal.name}})
                return reply(235, "2.7.0", "Authentication successful")
        failure = getattr(auth_result, "failure", None)
        if failure is None and result.reason == Reason.INVALID_CREDENTIALS and \
                result.username and auth_result is None:
            await self.server.services.auth.scram_outcome(result.username,
                                                          self.info.remote_ip, False)
        if failure == Failure.BANNED:
            self._drop = True
            return reply(421, "4.7.0", "Too many failed authentications")
        if failure in (Failure.UNAVAILABLE, Failure.THROTTLED):
            return reply(454, "4.7.0", "Temporary authentication failure")
        if result.reason == Reason.ENCRYPTION_REQUIRED:
            return reply(538, "5.7.11", "Encryption required for requested authentication "
                                        "mechanism")
        if result.reason == Reason.UNSUPPORTED_MECHANISM:
            return reply(504, "5.5.4", "Unrecognized authentication type")
        if result.reason == Reason.MALFORMED:
            return reply(501, "5.5.2", "Malformed authentication data")
        if result.reason == Reason.ABORTED:
            return reply(501, "5.0.0", "Authentication cancelled")
        return reply(535, "5.7.8", "Authentication credentials invalid")

    # --- STARTTLS (RFC 3207) --------------------------------------------------------

    async def _start_tls(self) -> None:
        trailing = self.proto.start_tls()
        if trailing:
            log.warning("dropped commands sent before the TLS handshake",
                        extra={"fields": {"bytes": len(trailing)}})
        upgraded = await upgrade_to_tls(self.transport, self, self.server.tls.server_context(),
                                        self.server.handshake_timeout)
        if upgraded is None:
            self._close()
        else:
            self.transport = upgraded
        self.principal = None
        self.tx = Transaction()


_date_cache: tuple[int, str] = (-1, "")


def _received_date() -> str:
    """The Received field's date (RFC 5322 §3.3, "+0000": UTC, known), formatted once per
    second: every message accepted in that second carries the same text."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.format_datetime(datetime.fromtimestamp(now, UTC)))
    return _date_cache[1]


@functools.cache
def _received_counter(kind: str):
    """messages_received_total{kind}: ``labels()`` takes a lock and builds a key each call."""
    return metrics.messages_received_total.labels(kind)


def _is_domain(name: str) -> bool:
    """A HELO name worth an SPF check: a dotted name, not an address literal."""
    return "." in name and not name.startswith("[") and not name.replace(".", "").isdigit()


def _received_count(content: bytes) -> int:
    """Received fields in the header block (RFC 5321 §6.3 loop detection)."""
    end = content.find(b"\r\n\r\n")
    head = content[: end if end >= 0 else len(content)]
    return sum(1 for line in head.split(b"\r\n") if line[:9].lower() == b"received:")


def _forwards(results) -> list:
    """The external members of the mailing lists among delivered recipients, to be queued
    with the original envelope sender, as a forwarding MTA does (no SRS: at the far end,
    DMARC rests on the author's DKIM signature). ORCPT keeps the list's address (RFC 3461
    §4.2), so a DSN names the address the sender used."""
    from stalwart_mp.mail.delivery import Status
    from stalwart_mp.smtp.queue.store import QueuedRecipient

    out, seen = [], set()
    for result in results:
        if result.status != Status.DELIVERED:
            continue
        for address in result.external:
            if address.lower() not in seen:
                seen.add(address.lower())
                out.append(QueuedRecipient(address, [], f"rfc822;{result.address}"))
    return out


def _delivery_reply(result) -> Reply:
    from stalwart_mp.mail.delivery import Status

    if result.status == Status.DELIVERED:
        return reply(250, "2.1.5", f"<{result.address}> delivered")
    if result.status == Status.OVER_QUOTA:
        code = 552 if result.message.startswith("5") else 452
        return reply(code, f"{code // 100}.2.2", f"<{result.address}> mailbox full")
    if result.status == Status.UNKNOWN:
        return reply(550, "5.1.1", f"<{result.address}> does not exist")
    if result.status == Status.DISABLED:
        return reply(550, "5.2.1", f"<{result.address}> is disabled")
    return reply(451, "4.3.0", f"<{result.address}> temporary failure")
