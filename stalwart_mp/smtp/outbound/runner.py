"""The delivery runner of the queue process: due messages → remote hosts → results.

Loop: read the due index, lease each due message (``queue/store.acquire``; a message
leased by another runner, on this node or another, is skipped), deliver its pending
recipients grouped by domain — one transaction per domain, all its recipients at once,
over a connection reused across messages (``ConnectionPool``) and at most
``outbound.concurrency-per-domain`` connections per domain — then record each recipient's
result and the next attempt with one compare-and-set (``queue/store.settle``).

Results: 2xx delivered; 5xx (or a permanent routing answer such as a null MX) failed at
once; anything else retried on ``outbound.retry`` until ``outbound.expire``. DSNs
(``dsn.py``) are made before the results are stored: a crash in between repeats a DSN,
it never loses one.
"""
from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from stalwart_mp.dns.resolver import DnsTempError
from stalwart_mp.smtp.outbound import tlsrpt
from stalwart_mp.smtp.outbound.client import Envelope, SmtpClient, SmtpError
from stalwart_mp.smtp.outbound.dane import tlsa_name, usable
from stalwart_mp.smtp.outbound.dsn import Report, build
from stalwart_mp.smtp.outbound.mta_sts import MtaSts, Policy, PolicyError
from stalwart_mp.smtp.outbound.routing import Hop, NoRoute, Router
from stalwart_mp.smtp.queue import store as q
from stalwart_mp.store.data import StoreError

log = logging.getLogger("stalwart_mp.outbound")

WAKE_TOPIC = "queue.due"   # published by the SMTP sessions after enqueueing


@dataclass(frozen=True, slots=True)
class OutboundSettings:
    retry: list[float]
    expire: float
    notify: list[float]
    lease: float
    concurrency: int
    per_domain: int
    scan_interval: float
    hostname: str
    connect_timeout: float
    command_timeout: float
    data_timeout: float
    idle: float
    tls_reports: bool = False
    report_sender: str = ""
    dmarc_reports: bool = False
    rate_per_domain: int = 0
    rate_window: float = 60.0

    @classmethod
    def from_config(cls, cfg) -> OutboundSettings:
        return cls(
            list(cfg.get("outbound.retry")), cfg.get("outbound.expire"),
            sorted(cfg.get("outbound.notify")), cfg.get("outbound.lease"),
            cfg.get("outbound.concurrency"), cfg.get("outbound.concurrency-per-domain"),
            cfg.get("outbound.scan-interval"),
            cfg.get("outbound.hostname") or cfg.get("server.hostname"),
            cfg.get("outbound.timeout.connect"), cfg.get("outbound.timeout.command"),
            cfg.get("outbound.timeout.data"), cfg.get("outbound.idle"),
            cfg.get("outbound.tls-reports.enabled"),
            cfg.get("outbound.tls-reports.from") or
            f"postmaster@{cfg.get('outbound.hostname') or cfg.get('server.hostname')}",
            cfg.get("outbound.dmarc-reports.enabled"), cfg.get("outbound.rate-per-domain"),
            cfg.get("outbound.rate-window"))


@dataclass(frozen=True, slots=True)
class Outcome:
    code: int
    text: str
    host: str
    dsn_relayed: bool = False   # the next hop took NOTIFY/ORCPT: it reports from now on
    retry_after: float = 0.0    # not tried: try again after this many seconds

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ConnectionPool:
    """Open connections kept ``idle`` seconds for the next message to the same host."""

    def __init__(self, idle: float):
        self.idle = idle
        self._free: dict[tuple, list[tuple[SmtpClient, float]]] = defaultdict(list)

    def take(self, key: tuple) -> SmtpClient | None:
        free = self._free.get(key)
        now = time.monotonic()
        while free:
            client, since = free.pop()
            if not client.closed and now - since < self.idle:
                return client
            asyncio.get_running_loop().create_task(client.quit())
        return None

    def give(self, key: tuple, client: SmtpClient) -> None:
        if not client.closed:
            self._free[key].append((client, time.monotonic()))

    async def expire(self, everything: bool = False) -> None:
        now = time.monotonic()
        old = []
        for key, free in list(self._free.items()):
            keep = [(c, t) for c, t in free if not everything and now - t < self.idle]
            old += [c for c, t in free if (c, t) not in keep]
            self._free[key] = keep
            if not keep:
                del self._free[key]
        await asyncio.gather(*(c.quit() for c in old), return_exceptions=True)


class Runner:
    def __init__(self, services, settings: OutboundSettings, router: Router,
                 owner: str | None = None, mta_sts: MtaSts | None = None):
        self.services = services
        self.data = services.data
        self.settings = settings
        self.router = router
        self.mta_sts = mta_sts
        config = getattr(router.resolver, "config", None)
        self.dnssec = bool(getattr(config, "dnssec", False))  # DANE needs a validating resolver
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.pool = ConnectionPool(settings.idle)
        self.wake = asyncio.Event()
        self.inflight: dict[int, asyncio.Task] = {}
        self._domains: dict[str, asyncio.Semaphore] = {}
        self.delivered = 0    # recipients delivered by this runner (benchmarks, tests)

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
                try:
                    await asyncio.wait_for(self.wake.wait(), wait)
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
                self._deliver_domain(domain, message, rcpts, body)
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

    # --- one domain -------------------------------------------------------------------

    def _semaphore(self, domain: str) -> asyncio.Semaphore:
        sem = self._domains.get(domain)
        if sem is None:
            sem = self._domains[domain] = asyncio.Semaphore(self.settings.per_domain)
        return sem

    async def _deliver_domain(self, domain: str, message: q.QueuedMessage,
                              rcpts: list[q.QueuedRecipient], body: bytes
                              ) -> dict[str, Outcome]:
        def every(outcome: Outcome) -> dict[str, Outcome]:
            return {r.address: outcome for r in rcpts}

        try:
            hops = await self.router.hops(domain)
        except NoRoute as exc:
            return every(Outcome(exc.code, exc.text, ""))
        s = self.settings
        if s.rate_per_domain:
            limited = await self.services.lookup.rate_limit(
                b"outbound-rate:" + domain.encode(), s.rate_per_domain, s.rate_window)
            if not limited.allowed:
                wait = limited.retry_after + 1
                return every(Outcome(451, f"4.7.0 rate limit of {domain} reached; trying "
                                          f"again in {int(wait)} s", "", retry_after=wait))
        policy = await self._policy(domain)
        env = Envelope(message.mail_from, [r.address for r in rcpts],
                       {r.address: r.notify for r in rcpts},
                       {r.address: r.orcpt for r in rcpts},
                       message.ret, message.envid, message.requiretls)
        last = "no host could be reached"
        routed = self.router.routed(domain)
        async with self._semaphore(domain):
            for hop in hops:
                hop_policy = policy
                tlsa: list[str] | None = None
                if not routed and self.dnssec:
                    try:
                        records = await self._dane(hop)
                    except DnsTempError as exc:  # RFC 7672 §2.2: unknown: not this host
                        last = f"TLSA lookup for {hop.host} failed: {exc}"
                        continue
                    if records is not None:  # RFC 8461 §2: DANE comes before MTA-STS
                        hop = dataclasses.replace(hop, tls="starttls", dane=tuple(records))
                        tlsa = [f"{r.usage} {r.selector} {r.mtype} {r.data.hex()}"
                                for r in records]
                        hop_policy = None
                if hop_policy is not None:
                    # RFC 8461 §4.1, §5: only listed MX hosts, with authenticated TLS
                    if not hop_policy.matches(hop.host):
                        await self._report(domain, hop_policy, "validation-failure",
                                           hop.host,
                                           detail="MX host not listed in the MTA-STS policy")
                        if hop_policy.mode == "enforce":
                            last = f"{hop.host} is not an MX host of the MTA-STS policy"
                            continue
                    hop = dataclasses.replace(hop, tls="starttls")
                for ip in hop.ips:
                    try:
                        out = await self._deliver_hop(hop, ip, env, body)
                        if hop_policy is not None or tlsa is not None:
                            await self._report(domain, hop_policy, "", hop.host, ip,
                                               tlsa=tlsa)
                        return out
                    except SmtpError as exc:
                        last = str(exc)
                        log.info("host failed", extra={"fields": {
                            "queue_id": message.id, "host": hop.host, "ip": ip,
                            "error": last}})
                        if exc.tls_failure is None or (hop_policy is None and tlsa is None):
                            continue
                        await self._report(domain, hop_policy, exc.tls_failure, hop.host,
                                           ip, last, tlsa=tlsa)
                        if hop_policy is not None and hop_policy.mode == "testing":
                            try:  # report, but deliver as before
                                return await self._deliver_hop(
                                    dataclasses.replace(hop, tls="opportunistic"), ip, env,
                                    body)
                            except SmtpError as again:
                                last = str(again)
        if policy is not None and policy.mode == "enforce":
            last = f"MTA-STS policy of {domain} not met: {last}"
        return every(Outcome(451, f"4.4.1 {last}", hops[-1].host if hops else ""))

    async def _dane(self, hop: Hop) -> list | None:
        """The usable TLSA records of an MX host when its TLSA answer is authenticated
        (RFC 7672 §2.2); None: no DANE for this host (no records, or not vouched for)."""
        answer = await self.router.resolver.tlsa(tlsa_name(hop.host, hop.port))
        if not answer.authentic or not answer.records:
            return None
        return usable(answer.records)

    async def _policy(self, domain: str) -> Policy | None:
        """The MTA-STS policy to apply to direct delivery to ``domain`` (RFC 8461)."""
        if self.mta_sts is None or self.router.routed(domain):
            return None
        try:
            policy = await self.mta_sts.policy(domain)
        except PolicyError as exc:  # §5.1: deliver as without a policy, and report it
            await self._report(domain, None, exc.result_type, detail=exc.detail)
            return None
        except StoreError as exc:
            log.warning("MTA-STS cache unavailable", extra={"fields": {"error": str(exc)}})
            return None
        return policy if policy is not None and policy.mode != "none" else None

    async def _report(self, domain: str, policy: Policy | None, result_type: str,
                      mx_host: str = "", ip: str = "", detail: str = "",
                      tlsa: list[str] | None = None) -> None:
        if self.settings.tls_reports:
            await tlsrpt.record(self.data, domain, policy, result_type, mx_host, ip, detail,
                                tlsa=tlsa)

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

    async def _deliver_hop(self, hop: Hop, ip: str, env: Envelope, body: bytes
                           ) -> dict[str, Outcome]:
        key = (ip, hop.port, hop.tls, hop.username, hop.dane)
        client = self.pool.take(key)
        if client is not None:
            try:
                return await self._transaction(key, client, hop, env, body)
            except SmtpError:
                pass  # the server dropped the idle connection: open a fresh one
        s = self.settings
        client = SmtpClient(hop.host, ip, hop.port, helo=s.hostname,
                            command_timeout=s.command_timeout, data_timeout=s.data_timeout)
        await client.connect(connect_timeout=s.connect_timeout, tls=hop.tls,
                             verify=env.requiretls, ca_file=hop.ca_file,
                             dane=list(hop.dane) if hop.dane is not None else None)
        if hop.username:
            await client.auth(hop.username, hop.password)
        return await self._transaction(key, client, hop, env, body)

    async def _transaction(self, key: tuple, client: SmtpClient, hop: Hop, env: Envelope,
                           body: bytes) -> dict[str, Outcome]:
        refusal = client.refusal(env, body)
        if refusal is not None:
            self.pool.give(key, client)
            return {a: Outcome(refusal.code, refusal.text, hop.host) for a in env.recipients}
        result = await client.send(env, body)
        self.pool.give(key, client)
        out = {}
        for address in env.recipients:
            reply = result.reply_for(address)
            out[address] = Outcome(reply.code, reply.text, hop.host,
                                   "DSN" in client.extensions)
            if 200 <= reply.code < 300:
                self.delivered += 1
        return out

    # --- DSNs ---------------------------------------------------------------------------

    async def _send_dsn(self, message: q.QueuedMessage, report: Report, body: bytes) -> None:
        """Deliver a DSN to the envelope sender: into the mailbox when the sender is ours,
        else through the queue with a null sender (no DSN about a DSN)."""

        s = self.settings
        until = message.created_at + s.expire if report.action == "delayed" else None
        dsn = build(message, report, body, hostname=s.hostname, will_retry_until=until)
        sender = message.mail_from
        ok = await self._deliver_generated(dsn, sender)
        log.info("dsn", extra={"fields": {
            "queue_id": message.id, "action": report.action, "to": sender,
            "recipients": ",".join(r.address for r in report.recipients),
            "sent": ok}})

    async def _deliver_generated(self, raw: bytes, recipient: str, sender: str = "") -> bool:
        """Deliver a message we wrote (a DSN, a report): into the mailbox when the
        recipient is ours, else through the queue. DSNs go with a null sender, and a
        generated message never asks for a DSN of its own (no loops)."""
        from stalwart_mp.mail.delivery import Status

        target = await self.services.delivery.resolve_recipient(recipient)
        if target.status == Status.DELIVERED:
            results = await self.services.delivery.deliver(raw, sender, [recipient])
            return all(r.status == Status.DELIVERED for r in results)
        if target.status == Status.NOT_LOCAL:
            blob_id = await self.services.blobs.put(raw)
            generated = q.QueuedMessage(0, sender, [q.QueuedRecipient(recipient, ["NEVER"])],
                                        blob_id, len(raw), time.time(), 0.0)
            await q.enqueue(self.data, self.services.blobs, generated)
            self.wake.set()
            return True
        return False


async def _post_report(url: str, body: bytes) -> None:
    """RFC 8460 §5.4: POST the gzipped report."""
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session, \
            session.post(url, data=body,
                         headers={"Content-Type": "application/tlsrpt+gzip"}) as resp:
        if resp.status >= 300:
            raise OSError(f"{url} answered HTTP {resp.status}")
