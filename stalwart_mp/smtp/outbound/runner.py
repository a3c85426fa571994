"""The delivery runner of the queue process: due messages → remote hosts → results.

Loop: read the due index, lease each due message (``queue/store.acquire``; a message
leased by another runner, on this node or another, is skipped), deliver its pending
recipients grouped by domain — one transaction per domain, all its recipients at once,
over a connection reused across messages (``ConnectionPool``) and at most
``outbound.concurrency-per-domain`` connections per domain — then record each recipient's
result and the next attempt with one compare-and-set (``queue/store.settle``). The
delivery at one domain (routing, DANE, MTA-STS, the SMTP client) is ``transport.py``.

Results: 2xx delivered; 5xx (or a permanent routing answer such as a null MX) failed at
once; anything else retried on ``outbound.retry`` until ``outbound.expire``. DSNs
(``dsn.py``) are made before the results are stored: a crash in between repeats a DSN,
it never loses one.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import os
import socket
import time
import uuid
from collections import defaultdict

from stalwart_mp import metrics
from stalwart_mp.smtp.outbound import tlsrpt
from stalwart_mp.smtp.outbound.dsn import Report, build, deliver_generated
from stalwart_mp.smtp.outbound.mta_sts import MtaSts
from stalwart_mp.smtp.outbound.routing import Router
from stalwart_mp.smtp.outbound.transport import OutboundSettings, Outcome, Transport
from stalwart_mp.smtp.queue import store as q
from stalwart_mp.store.data import StoreError

log = logging.getLogger("stalwart_mp.outbound")



class Runner:
    def __init__(self, services, settings: OutboundSettings, router: Router,
                 owner: str | None = None, mta_sts: MtaSts | None = None):
        self.services = services
        self.data = services.data
        self.settings = settings
        self.router = router
        self.transport = Transport(services, settings, router, mta_sts)
        self.mta_sts = mta_sts
        self.pool = self.transport.pool
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.wake = asyncio.Event()
        self.inflight: dict[int, asyncio.Task] = {}

    @property
    def delivered(self) -> int:
        """Recipients delivered by this runner (benchmarks, tests)."""
        return self.transport.delivered

    @classmethod
    def from_config(cls, services, cfg, resolver) -> Runner:
        mta_sts = None
        if cfg.get("outbound.mta-sts.enabled"):
            mta_sts = MtaSts(services.data, resolver, port=cfg.get("outbound.mta-sts.port"),
                             ca_file=cfg.get("outbound.ca-file"),
                             timeout=cfg.get("outbound.mta-sts.timeout"))
        return cls(services, OutboundSettings.from_config(cfg),
                   Router.from_config(cfg, resolver), mta_sts=mta_sts)

    # --- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        log.info("outbound runner started", extra={"fields": {"owner": self.owner}})
        last_expire = time.monotonic()
        last_reports = 0.0
        try:
            while True:
                if time.monotonic() - last_reports > 3600:  # the reports of finished days
                    last_reports = time.monotonic()
                    try:
                        if self.settings.tls_reports:
                            await self.send_tls_reports()
                        if self.settings.dmarc_reports:
                            await self.send_dmarc_reports()
                    except (StoreError, OSError) as exc:
                        log.error("reports failed", extra={"fields": {"error": str(exc)}})
                self.wake.clear()
                try:
                    await self._scan()
                    wait = await self._wait_time()
                except StoreError as exc:
                    log.error("queue scan failed", extra={"fields": {"error": str(exc)}})
                    wait = self.settings.scan_interval * 5
                except Exception:  # never let one bad round stop outbound delivery
                    log.exception("queue scan failed")
                    wait = self.settings.scan_interval * 5
                if time.monotonic() - last_expire > self.settings.idle:
                    await self.pool.expire()
                    last_expire = time.monotonic()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns normally
                # when the wake and a cancel land together, and the cancel is lost (gh-86296)
                try:
                    async with asyncio.timeout(wait):
                        await self.wake.wait()
                except TimeoutError:
                    pass
        finally:
            for task in self.inflight.values():
                task.cancel()
            await asyncio.gather(*self.inflight.values(), return_exceptions=True)
            await self.pool.expire(everything=True)

    async def _scan(self) -> None:
        free = self.settings.concurrency - len(self.inflight)
        if free <= 0:
            return
        entries = await q.due(self.data, time.time(), free + len(self.inflight))
        for key, qid in entries:
            if qid in self.inflight:
                continue
            if len(self.inflight) >= self.settings.concurrency:
                break
            task = asyncio.create_task(self._process(key, qid))
            self.inflight[qid] = task
            task.add_done_callback(lambda _t, qid=qid: self._done(qid))

    def _done(self, qid: int) -> None:
        task = self.inflight.pop(qid, None)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("delivery of a queued message failed", exc_info=task.exception(),
                      extra={"fields": {"queue_id": qid}})
        self.wake.set()

    async def _wait_time(self) -> float:
        if len(self.inflight) >= self.settings.concurrency:
            return self.settings.scan_interval
        nxt = await q.next_due(self.data)
        if nxt is None:
            return self.settings.scan_interval
        return max(0.0, min(self.settings.scan_interval, nxt - time.time()))

    # --- one message --------------------------------------------------------------------

    async def _process(self, key: bytes, qid: int) -> None:
        got = await q.acquire(self.data, key, qid, self.owner, self.settings.lease)
        if got is None:
            return
        message, _raw, lease = got
        held = [lease]
        keeper = asyncio.create_task(self._keep_lease(qid, held))
        try:
            results, body = await self._attempt(message)
        except asyncio.CancelledError:
            # stopping (TERM, reload): hand the message back now, not at the lease's end
            await asyncio.shield(q.abandon(self.data, qid, held[0]))
            raise
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        now = time.time()
        reports: list[Report] = []

        def apply(m: q.QueuedMessage) -> None:
            reports[:] = self._apply(m, results, now)

        # DSNs first, from a copy: a crash before the results are stored repeats a DSN
        preview = copy.deepcopy(message)
        apply(preview)
        if body is not None and preview.mail_from:
            for report in reports:
                await self._send_dsn(preview, report, body)
        stored = await q.settle(self.data, qid, held[0], apply)
        if stored is not None:
            for r in stored.recipients:
                if r.address in results:
                    result = "deferred" if r.status == q.QUEUED else r.status
                    metrics.outbound_recipients_total.labels(result).inc()
        log.info("delivery attempt", extra={"fields": {
            "queue_id": qid, "attempt": preview.attempts,
            "results": ",".join(f"{a}={o.code}" for a, o in results.items()),
            "next": None if stored is None or not stored.pending else
            round(stored.next_attempt - now, 1)}})

    async def _keep_lease(self, qid: int, held: list[q.Lease]) -> None:
        """Renew the lease at a third of its length while a delivery lasts (slow hosts
        may take the whole of the data timeout)."""
        duration = self.settings.lease
        while True:
            await asyncio.sleep(duration / 3)
            renewed = await q.renew(self.data, qid, held[0], duration)
            if renewed is None:
                log.warning("lease lost during delivery", extra={"fields": {"queue_id": qid}})
                return
            held[0] = renewed

    async def _attempt(self, message: q.QueuedMessage
                       ) -> tuple[dict[str, Outcome], bytes | None]:
        """Deliver the pending recipients: one outcome per recipient, and the content."""
        body = await self.services.blobs.get(message.blob_id)
        results: dict[str, Outcome] = {}
        if body is None:
            for r in message.pending:
                results[r.address] = Outcome(550, "5.3.0 message content lost", "")
        else:
            by_domain: dict[str, list[q.QueuedRecipient]] = defaultdict(list)
            for r in message.pending:
                by_domain[r.address.rpartition("@")[2].lower()].append(r)
            groups = await asyncio.gather(*(
                self.transport.deliver_domain(domain, message, rcpts, body)
                for domain, rcpts in by_domain.items()))
            for group in groups:
                results.update(group)
        return results, body

    def _apply(self, m: q.QueuedMessage, results: dict[str, Outcome], now: float
               ) -> list[Report]:
        """Write this attempt's results into ``m`` and schedule it; the DSNs it calls for."""
        s = self.settings
        m.attempts += 1
        by_host: dict[tuple[str, str], list[str]] = defaultdict(list)
        newly_failed, newly_delivered = [], []
        for r in m.recipients:
            outcome = results.get(r.address)
            if r.status != q.QUEUED or outcome is None:
                continue
            by_host[(outcome.host, str(outcome))].append(r.address)
            r.reply, r.remote_mta, r.updated_at = str(outcome), outcome.host, now
            if outcome.delivered:
                r.status = q.DELIVERED
                newly_delivered.append(r)
            elif outcome.permanent:
                r.status = q.FAILED
                newly_failed.append(r)
        for (host, reply), rcpts in by_host.items():
            m.history.append(q.Attempt(now, host, rcpts, reply))
        del m.history[:-q.MAX_HISTORY]
        expires = m.created_at + s.expire
        if m.pending and now >= expires:
            for r in m.pending:  # RFC 3463 4.4.7: delivery time expired
                code = r.reply[:3] if r.reply[:3].isdigit() else "451"
                r.reply = f"{code} 4.4.7 delivery time expired; last error: {r.reply}"
                r.status, r.updated_at = q.FAILED, now
                newly_failed.append(r)
        reports = []
        if newly_failed:
            reports.append(Report("failed", [r for r in newly_failed if r.wants("FAILURE")]))
        if newly_delivered:  # RFC 3461 §5.2.2: "relayed" when the next hop has no DSN
            reports.append(Report("relayed", [
                r for r in newly_delivered
                if r.wants("SUCCESS") and not results[r.address].dsn_relayed]))
        due_notes = [t for t in s.notify[m.delays_sent:] if now >= m.created_at + t]
        if m.pending and due_notes:
            m.delays_sent += len(due_notes)
            reports.append(Report("delayed", [r for r in m.pending if r.wants("DELAY")]))
        if m.pending:
            wait = s.retry[min(m.attempts - 1, len(s.retry) - 1)]
            held = [o.retry_after for o in results.values() if o.retry_after]
            if held:  # only held back by a rate limit: as soon as it allows
                wait = min(wait, max(held))
            times = [now + wait, expires]
            if m.delays_sent < len(s.notify):
                times.append(m.created_at + s.notify[m.delays_sent])
            m.next_attempt = max(now, min(times))
        return [r for r in reports if r.recipients]

    # --- reports ----------------------------------------------------------------------

    async def send_tls_reports(self, today: int | None = None) -> int:
        """Send the TLS reports of finished days (RFC 8460), by mail or HTTPS."""
        return await tlsrpt.send_reports(
            self.data, self.router.resolver, submitter=self.settings.hostname,
            sender=self.settings.report_sender, deliver_mail=self._deliver_report,
            post_https=_post_report, today=today)

    async def send_dmarc_reports(self, today: int | None = None) -> int:
        """Send the DMARC aggregate reports of finished days (RFC 7489 §7.2)."""
        from stalwart_mp.smtp.outbound import dmarc_reports

        return await dmarc_reports.send_reports(
            self.data, self.router.resolver, submitter=self.settings.hostname,
            sender=self.settings.report_sender, deliver_mail=self._deliver_report,
            today=today)

    async def _deliver_report(self, raw: bytes, recipient: str) -> None:
        from stalwart_mp.smtp.outbound.dkim_sign import sign

        # RFC 8460 §5.3: TLS reports by mail are DKIM-signed (DMARC reports too)
        raw = await sign(self.data, raw, self.settings.report_sender) + raw
        await self._deliver_generated(raw, recipient, self.settings.report_sender)

    # --- DSNs ---------------------------------------------------------------------------

    async def _send_dsn(self, message: q.QueuedMessage, report: Report, body: bytes) -> None:
        """Deliver a DSN to the envelope sender: into the mailbox when the sender is ours,
        else through the queue with a null sender (no DSN about a DSN)."""

        s = self.settings
        until = message.created_at + s.expire if report.action == "delayed" else None
        dsn = build(message, report, body, hostname=s.hostname, will_retry_until=until)
        sender = message.mail_from
        ok = await self._deliver_generated(dsn, sender)
        if ok:
            metrics.dsn_sent_total.labels(report.action).inc()
        log.info("dsn", extra={"fields": {
            "queue_id": message.id, "action": report.action, "to": sender,
            "recipients": ",".join(r.address for r in report.recipients),
            "sent": ok}})

    async def _deliver_generated(self, raw: bytes, recipient: str, sender: str = "") -> bool:
        ok = await deliver_generated(self.services, raw, recipient, sender)
        self.wake.set()   # if it was queued: for this runner
        return ok


async def _post_report(url: str, body: bytes) -> None:
    """RFC 8460 §5.4: POST the gzipped report."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session, \
            session.post(url, data=body,
                         headers={"Content-Type": "application/tlsrpt+gzip"}) as resp:
        if resp.status >= 300:
            raise OSError(f"{url} answered HTTP {resp.status}")
