"""MTA-STS (RFC 8461): a recipient domain's published demand for authenticated TLS.

§3.1: the TXT record ``_mta-sts.<domain>`` ("v=STSv1; id=...") says a policy exists and
names its version; §3.3: the policy is fetched from
``https://mta-sts.<domain>/.well-known/mta-sts.txt`` over HTTPS with a valid certificate,
no redirects, within a time limit; §3.2: its fields are version, mode (enforce, testing,
none), mx patterns and max_age. §5.1: a policy is cached for max_age and refreshed when the
TXT id changes; a fetch that fails keeps the cached policy; without either the domain is
treated as having no policy. §4.1: an MX host matches a pattern exactly or, for
"*.example.com", by its left-most label.

The policy is applied by the runner (runner.py): in "enforce" mode only matching MX hosts
with a PKIX-valid certificate for their name are used; in "testing" mode failures are only
reported (TLS-RPT, tlsrpt.py). Cached policies live in the data store (0x63 | domain), so a
restart keeps them — the protection against a downgrade on first contact after a restart.
"""
from __future__ import annotations

import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass, field

import msgpack

from stalwart_mp.dns.resolver import DnsTempError
from stalwart_mp.store.data import DataStore, WriteBatch

log = logging.getLogger("stalwart_mp.outbound")

TAG_POLICY = 0x63
MAX_POLICY = 64 * 1024          # §3.3: senders may limit the policy's size (64 KiB)
MAX_AGE_LIMIT = 31_557_600      # §3.2: at most one year
_ID = re.compile(r"[A-Za-z0-9]{1,32}")


@dataclass(slots=True)
class Policy:
    domain: str
    id: str
    mode: str                     # enforce | testing | none
    mx: list[str] = field(default_factory=list)
    max_age: int = 86400
    fetched_at: float = 0.0
    text: str = ""                # the policy as fetched (TLS-RPT's policy-string)

    def matches(self, host: str) -> bool:
        """§4.1: exact name, or "*.suffix" for one more label on the left."""
        host = host.lower().rstrip(".")
        for pattern in self.mx:
            pattern = pattern.lower().rstrip(".")
            if pattern.startswith("*."):
                head, _, rest = host.partition(".")
                if head and rest == pattern[2:]:
                    return True
            elif host == pattern:
                return True
        return False

    def expired(self, now: float) -> bool:
        return now >= self.fetched_at + self.max_age

    def pack(self) -> bytes:
        return msgpack.packb([self.id, self.mode, self.mx, self.max_age, self.fetched_at,
                              self.text])

    @classmethod
    def unpack(cls, domain: str, raw: bytes) -> Policy:
        return cls(domain, *msgpack.unpackb(raw))


class PolicyError(Exception):
    """The policy could not be fetched or is invalid (TLS-RPT sts-policy-* results)."""

    def __init__(self, result_type: str, detail: str):
        super().__init__(f"{result_type}: {detail}")
        self.result_type = result_type
        self.detail = detail


def parse_txt(records: list[str]) -> str | None:
    """The policy id of the ``_mta-sts`` TXT records (§3.1); None: no valid record (also
    when there are several, which §3.1 says to treat as none)."""
    found = [r for r in records if r.strip().startswith("v=STSv1")]
    if len(found) != 1:
        return None
    fields = dict(_pairs(found[0], ";", "="))
    ident = fields.get("id", "")
    return ident if _ID.fullmatch(ident) else None


def _pairs(text: str, sep: str, kv: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(sep):
        key, eq, value = part.partition(kv)
        if eq:
            out.append((key.strip(), value.strip()))
    return out


def parse_policy(domain: str, ident: str, text: str, now: float) -> Policy:
    """§3.2: "key: value" lines (CRLF or LF); unknown keys ignored; mx may repeat."""
    version, mode, max_age, mx = None, None, None, []
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if not colon:
            continue
        key, value = key.strip(), value.strip()
        if key == "version":
            version = value
        elif key == "mode":
            mode = value
        elif key == "max_age":
            max_age = value
        elif key == "mx":
            mx.append(value)
    if version != "STSv1":
        raise PolicyError("sts-policy-invalid", f"version {version!r}, expected STSv1")
    if mode not in ("enforce", "testing", "none"):
        raise PolicyError("sts-policy-invalid", f"mode {mode!r}")
    if max_age is None or not max_age.isdigit():
        raise PolicyError("sts-policy-invalid", f"max_age {max_age!r}")
    if mode != "none" and not mx:
        raise PolicyError("sts-policy-invalid", "no mx line")
    return Policy(domain, ident, mode, mx, min(int(max_age), MAX_AGE_LIMIT), now, text)


class _Resolver:
    """aiohttp's resolver interface on our resolver (the configured nameservers)."""

    def __init__(self, resolver):
        self.resolver = resolver

    async def resolve(self, host: str, port: int = 0, family=socket.AF_INET) -> list[dict]:
        try:
            v4, v6 = await self.resolver.a(host), await self.resolver.aaaa(host)
        except DnsTempError as exc:
            raise OSError(str(exc)) from None
        out = [{"hostname": host, "host": ip, "port": port, "family": socket.AF_INET,
                "proto": 0, "flags": socket.AI_NUMERICHOST} for ip in v4]
        out += [{"hostname": host, "host": ip, "port": port, "family": socket.AF_INET6,
                 "proto": 0, "flags": socket.AI_NUMERICHOST} for ip in v6]
        if not out:
            raise OSError(f"{host} has no address")
        return out

    async def close(self) -> None:
        return None


class MtaSts:
    def __init__(self, data: DataStore, resolver, *, port: int = 443, ca_file: str = "",
                 timeout: float = 30.0):
        self.data = data
        self.resolver = resolver
        self.port = port
        self.ca_file = ca_file
        self.timeout = timeout
        self._memory: dict[str, Policy] = {}

    @staticmethod
    def key(domain: str) -> bytes:
        return bytes([TAG_POLICY]) + domain.encode()

    async def cached(self, domain: str) -> Policy | None:
        policy = self._memory.get(domain)
        if policy is None:
            raw = await self.data.get(self.key(domain))
            policy = Policy.unpack(domain, raw) if raw is not None else None
        return policy

    async def policy(self, domain: str) -> Policy | None:
        """The policy to apply to ``domain`` (None: none); PolicyError when the domain
        announces a policy that cannot be had and none is cached (the caller reports it
        and delivers as without a policy, §5.1)."""
        domain = domain.lower().rstrip(".")
        now = time.time()
        cached = await self.cached(domain)
        try:
            ident = parse_txt(await self.resolver.txt(f"_mta-sts.{domain}"))
        except DnsTempError:
            ident = cached.id if cached is not None else None
        if ident is None:
            # §5.1: no TXT record: a cached, unexpired policy still applies
            return cached if cached is not None and not cached.expired(now) else None
        if cached is not None and cached.id == ident and not cached.expired(now):
            return cached
        try:
            text = await self._fetch(domain)
            policy = parse_policy(domain, ident, text, now)
        except PolicyError as exc:
            log.info("MTA-STS policy unavailable", extra={"fields": {
                "domain": domain, "error": str(exc)}})
            if cached is not None and not cached.expired(now):
                return cached
            raise
        self._memory[domain] = policy
        await self.data.write(WriteBatch().put(self.key(domain), policy.pack()))
        return policy

    async def _fetch(self, domain: str) -> str:
        import aiohttp

        url = f"https://mta-sts.{domain}:{self.port}/.well-known/mta-sts.txt" \
            if self.port != 443 else f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
        context = ssl.create_default_context(cafile=self.ca_file or None)
        connector = aiohttp.TCPConnector(resolver=_Resolver(self.resolver), ssl=context,
                                         use_dns_cache=False)
        try:
            async with aiohttp.ClientSession(
                    connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as session, session.get(url, allow_redirects=False) as resp:  # §3.3
                if resp.status != 200:
                    raise PolicyError("sts-policy-fetch-error", f"HTTP {resp.status}")
                kind = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if kind != "text/plain":
                    raise PolicyError("sts-policy-invalid", f"Content-Type {kind!r}")
                body = await resp.content.read(MAX_POLICY + 1)
        except aiohttp.ClientConnectorCertificateError as exc:
            raise PolicyError("sts-webpki-invalid", str(exc.certificate_error)) from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise PolicyError("sts-policy-fetch-error", str(exc) or type(exc).__name__) \
                from None
        if len(body) > MAX_POLICY:
            raise PolicyError("sts-policy-invalid", "policy larger than 64 KiB")
        return body.decode("utf-8", "replace")
