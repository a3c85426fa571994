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
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass

from stalwart_mp.smtp.outbound.client import Envelope, SmtpClient, SmtpError
from stalwart_mp.smtp.outbound.dsn import Report, build
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

    @classmethod
    def from_config(cls, cfg) -> OutboundSettings:
        return cls(
            list(cfg.get("outbound.retry")), cfg.get("outbound.expire"),
            sorted(cfg.get("outbound.notify")), cfg.get("outbound.lease"),
            cfg.get("outbound.concurrency"), cfg.get("outbound.concurrency-per-domain"),
            cfg.get("outbound.scan-interval"),
            cfg.get("outbound.hostname") or cfg.get("server.hostname"),
            cfg.get("outbound.timeout.connect"), cfg.get("outbound.timeout.command"),
            cfg.get("outbound.timeout.data"), cfg.get("outbound.idle"))


@dataclass(frozen=True, slots=True)
class Outcome:
    code: int
    text: str
    host: str
    dsn_relayed: bool = False   # the next hop took NOTIFY/ORCPT: it reports from now on

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
                 owner: str | None = None):
        self.services = services
        self.data = services.data
        self.settings = settings
        self.router = router
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.pool = ConnectionPool(settings.idle)
        self.wake = asyncio.Event()
        self.inflight: dict[int, asyncio.Task] = {}
        self._domains: dict[str, asyncio.Semaphore] = {}
        self.delivered = 0    # recipients delivered by this runner (benchmarks, tests)

    @classmethod
    def from_config(cls, services, cfg, resolver) -> Runner:
        return cls(services, OutboundSettings.from_config(cfg),
                   Router.from_config(cfg, resolver))

    # --- the loop ---------------------------------------------------------------------

    async def run(self) -> None:
        log.info("outbound runner started", extra={"fields": {"owner": self.owner}})
        last_expire = time.monotonic()
        try:
            while True:
                self.wake.clear()
                try:
                    await self._scan()
                    wait = await self._wait_time()
                except StoreError as exc:
                    log.error("queue scan failed", extra={"fields": {"error": str(exc)}})
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
        env = Envelope(message.mail_from, [r.address for r in rcpts],
                       {r.address: r.notify for r in rcpts},
                       {r.address: r.orcpt for r in rcpts},
                       message.ret, message.envid, message.requiretls)
        last = "no host could be reached"
        async with self._semaphore(domain):
            for hop in hops:
                for ip in hop.ips:
                    try:
                        return await self._deliver_hop(hop, ip, env, body)
                    except SmtpError as exc:
                        last = str(exc)
                        log.info("host failed", extra={"fields": {
                            "queue_id": message.id, "host": hop.host, "ip": ip,
                            "error": last}})
        return every(Outcome(451, f"4.4.1 {last}", hops[-1].host if hops else ""))

    async def _deliver_hop(self, hop: Hop, ip: str, env: Envelope, body: bytes
                           ) -> dict[str, Outcome]:
        key = (ip, hop.port, hop.tls, hop.username)
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
                             verify=env.requiretls, ca_file=hop.ca_file)
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
        from stalwart_mp.mail.delivery import Status

        s = self.settings
        until = message.created_at + s.expire if report.action == "delayed" else None
        dsn = build(message, report, body, hostname=s.hostname, will_retry_until=until)
        sender = message.mail_from
        target = await self.services.delivery.resolve_recipient(sender)
        if target.status == Status.DELIVERED:
            results = await self.services.delivery.deliver(dsn, "", [sender])
            ok = all(r.status == Status.DELIVERED for r in results)
        elif target.status == Status.NOT_LOCAL:
            blob_id = await self.services.blobs.put(dsn)
            bounce = q.QueuedMessage(0, "", [q.QueuedRecipient(sender, ["NEVER"])], blob_id,
                                     len(dsn), time.time(), 0.0)
            await q.enqueue(self.data, self.services.blobs, bounce)
            ok = True
        else:
            ok = False
        log.info("dsn", extra={"fields": {
            "queue_id": message.id, "action": report.action, "to": sender,
            "recipients": ",".join(r.address for r in report.recipients),
            "sent": ok}})
