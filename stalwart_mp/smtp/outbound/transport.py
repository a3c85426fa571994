"""Delivery of one message's recipients at one domain: the transport side of the runner.

Per domain: the route (routing.py), then per host DANE (dane.py, RFC 7672) or the domain's
MTA-STS policy (mta_sts.py, RFC 8461), one SMTP transaction over a pooled connection
(client.py) carrying every recipient of the domain, and an outcome per recipient. TLS
sessions to domains with a policy are counted for the TLS reports (tlsrpt.py). At most
``outbound.concurrency-per-domain`` connections per domain, and at most
``outbound.rate-per-domain`` transactions per window over every queue process.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from stalwart_mp.dns.resolver import DnsTempError
from stalwart_mp.smtp.outbound import tlsrpt
from stalwart_mp.smtp.outbound.client import Envelope, SmtpClient, SmtpError
from stalwart_mp.smtp.outbound.dane import tlsa_name, usable
from stalwart_mp.smtp.outbound.mta_sts import MtaSts, Policy, PolicyError
from stalwart_mp.smtp.outbound.routing import Hop, NoRoute, Router
from stalwart_mp.smtp.queue import store as q
from stalwart_mp.store.data import StoreError

log = logging.getLogger("stalwart_mp.outbound")


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


class Transport:
    def __init__(self, services, settings: OutboundSettings, router: Router,
                 mta_sts: MtaSts | None = None):
        self.services = services
        self.data = services.data
        self.settings = settings
        self.router = router
        self.mta_sts = mta_sts
        config = getattr(router.resolver, "config", None)
        self.dnssec = bool(getattr(config, "dnssec", False))  # DANE needs a validating resolver
        self.pool = ConnectionPool(settings.idle)
        self._domains: dict[str, asyncio.Semaphore] = {}
        self.delivered = 0    # recipients delivered (benchmarks, tests)

    def _semaphore(self, domain: str) -> asyncio.Semaphore:
        sem = self._domains.get(domain)
        if sem is None:
            sem = self._domains[domain] = asyncio.Semaphore(self.settings.per_domain)
        return sem

    async def deliver_domain(self, domain: str, message: q.QueuedMessage,
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
        tls_refused = False   # the last host failed on TLS (REQUIRETLS: no way to deliver)
        routed = self.router.routed(domain)
        async with self._semaphore(domain):
            for hop in hops:
                hop_policy = policy
                tlsa: list[str] | None = None
                # RFC 7672 §2.2.1: MX hosts from an insecure MX answer could be an
                # attacker's; their TLSA records prove nothing, so they are not looked up
                if not routed and self.dnssec and hop.mx_secure:
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
                        tls_refused = exc.tls_failure is not None
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
        if env.requiretls and tls_refused:
            # RFC 8689 §4.2.1: no verified TLS to the next hop: return the message
            return every(Outcome(550, f"5.7.30 REQUIRETLS not possible: {last}",
                                 hops[-1].host if hops else ""))
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

    async def _deliver_hop(self, hop: Hop, ip: str, env: Envelope, body: bytes
                           ) -> dict[str, Outcome]:
        # a connection serves the next message only for the same host name and the same
        # TLS demands (a certificate checked for one MX name says nothing of another)
        key = (hop.host, ip, hop.port, hop.tls, hop.username, hop.dane, env.requiretls)
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
