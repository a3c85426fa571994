"""DKIM signing keys of each local domain, kept in the data store.

Every domain gets two keys when it is created, as Stalwart does: one Ed25519 (RFC 8463) and
one RSA-2048 (RFC 6376 §3.3.3: 1024 bits at least, 2048 the common choice). Both sign, so a
verifier that does not know ed25519-sha256 still finds a valid RSA signature (RFC 8463 §3).
Selectors name the month the key was made in (``202611e`` / ``202611r``), so a rotation
gets a fresh selector and the old TXT record can stay published while mail signed with the
old key is in flight.

  0x19 | domain (utf-8, lower-case) | 0x00 | selector -> msgpack {"algorithm", "pem", "created"}

(0x19 is this module's alone; 0x18 holds the server secret, directory/secret.py.)
"""
from __future__ import annotations

import asyncio
import base64
import re
import time
from dataclasses import dataclass

import msgpack
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from stalwart_mp.directory.base import DirectoryError
from stalwart_mp.store.data import AssertionFailed, DataStore, WriteBatch

TAG_DKIM = 0x19
ED25519 = "ed25519-sha256"
RSA = "rsa-sha256"
RSA_BITS = 2048
_SUFFIX = {ED25519: "e", RSA: "r"}
_K_TAG = {ED25519: "ed25519", RSA: "rsa"}
_SELECTOR = re.compile(r"(\d{6})([er])(\d*)")
_RETRIES = 20


@dataclass(slots=True)
class DkimKey:
    domain: str
    selector: str            # e.g. "202611e" (ed25519) / "202611r" (rsa), from the creation month
    algorithm: str           # "ed25519-sha256" | "rsa-sha256"
    private_pem: bytes       # PKCS#8 PEM
    created_at: float

    def _private(self) -> ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.private_pem, password=None)
        assert isinstance(key, (ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey))
        return key

    def public_key_b64(self) -> str:
        """The p= value of the key's DKIM TXT record.

        Ed25519: the raw 32-byte public key (RFC 8463 §4.2); RSA: the DER
        SubjectPublicKeyInfo (RFC 6376 §3.6.1, the form every verifier reads).
        """
        public = self._private().public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw,
                                      serialization.PublicFormat.Raw)
        else:
            raw = public.public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(raw).decode("ascii")

    def txt_record(self) -> str:
        """The TXT value to publish at ``<selector>._domainkey.<domain>`` (RFC 6376 §3.6.1)."""
        return f"v=DKIM1; k={_K_TAG[self.algorithm]}; h=sha256; p={self.public_key_b64()}"

    def dkimpy_private_key(self) -> bytes:
        """The private key in the form ``dkim.sign(privkey=...)`` takes.

        dkimpy reads RSA keys as PEM (PKCS#1 or PKCS#8) but Ed25519 keys as the base64 of
        the raw 32-byte seed (RFC 8463 §4.1).
        """
        key = self._private()
        if isinstance(key, ed25519.Ed25519PrivateKey):
            seed = key.private_bytes(serialization.Encoding.Raw,
                                     serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
            return base64.b64encode(seed)
        return self.private_pem

    @property
    def dns_name(self) -> str:
        """Where the TXT record lives: ``<selector>._domainkey.<domain>`` (RFC 6376 §3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"


def _normalize(domain: str) -> str:
    domain = domain.strip().lower().rstrip(".")
    if not domain or "\x00" in domain or "." not in domain:
        raise DirectoryError(f'"{domain}" is not a domain name')
    return domain


def _prefix(domain: str) -> bytes:
    return bytes([TAG_DKIM]) + domain.encode("utf-8") + b"\x00"


def _key(domain: str, selector: str) -> bytes:
    return _prefix(domain) + selector.encode("ascii")


def _generate(algorithm: str) -> bytes:
    private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if algorithm == ED25519:
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return private.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


def _encode(key: DkimKey) -> bytes:
    return msgpack.packb({"algorithm": key.algorithm, "pem": key.private_pem,
                          "created": key.created_at})


def _decode(domain: str, selector: str, raw: bytes) -> DkimKey:
    d = msgpack.unpackb(raw)
    return DkimKey(domain=domain, selector=selector, algorithm=d["algorithm"],
                   private_pem=d["pem"], created_at=d["created"])


def _selector(algorithm: str, now: float, taken: set[str]) -> str:
    """``YYYYMM`` + e|r, with a counter (2, 3...) when that name was already used.

    ``taken`` holds the selectors of the domain's current keys; the counter goes past the
    highest of the month, so a second rotation in one month never brings back a selector
    that resolvers may still cache with an older key.
    """
    month = time.strftime("%Y%m", time.gmtime(now))
    base = month + _SUFFIX[algorithm]
    highest = 0
    for name in taken:
        m = _SELECTOR.fullmatch(name)
        if m and m.group(1) + m.group(2) == base:
            highest = max(highest, int(m.group(3) or 1))
    return base if highest == 0 else f"{base}{highest + 1}"


async def _current(data: DataStore, domain: str) -> list[tuple[bytes, bytes, DkimKey]]:
    prefix = _prefix(domain)
    rows = await data.range(prefix, prefix[:-1] + b"\x01")
    out = []
    for k, raw in rows:
        assert raw is not None
        out.append((k, raw, _decode(domain, k[len(prefix):].decode("ascii"), raw)))
    return out


def _ordered(keys: list[DkimKey]) -> list[DkimKey]:
    """Ed25519 first, then RSA; newest first within each."""
    return sorted(keys, key=lambda k: (k.algorithm != ED25519, -k.created_at, k.selector))


async def _replace(data: DataStore, domain: str, now: float | None,
                   require_absent: bool) -> list[DkimKey]:
    """Write one new key per algorithm and drop the current ones, as one CAS batch."""
    domain = _normalize(domain)
    # RSA generation takes ~100 ms: in a thread, so the event loop keeps serving; once,
    # outside the retry loop.
    pems = {alg: await asyncio.to_thread(_generate, alg) for alg in (ED25519, RSA)}
    for _ in range(_RETRIES):
        created = time.time() if now is None else now
        current = await _current(data, domain)
        if require_absent and current:
            raise DirectoryError(f'the domain "{domain}" already has DKIM keys '
                                 f'({", ".join(k.selector for _, _, k in current)})')
        taken = {k.selector for _, _, k in current}
        new = [DkimKey(domain, _selector(alg, created, taken), alg, pem, created)
               for alg, pem in pems.items()]
        batch = WriteBatch()
        for k, raw, _old in current:
            batch.assert_value(k, raw).delete(k)
        for key in new:
            batch.assert_value(_key(domain, key.selector), None)
            batch.put(_key(domain, key.selector), _encode(key))
        try:
            await data.write(batch)
        except AssertionFailed:
            continue  # another process changed this domain's keys: re-read and retry
        return _ordered(new)
    raise DirectoryError(f'the DKIM keys of "{domain}" kept changing; try again')


async def create_keys(data: DataStore, domain: str, *, now: float | None = None) -> list[DkimKey]:
    """One Ed25519 and one RSA-2048 key for a domain that has none (ed25519 first)."""
    return await _replace(data, domain, now, require_absent=True)


async def domain_keys(data: DataStore, domain: str) -> list[DkimKey]:
    """The domain's current keys, Ed25519 first; empty when it has none."""
    return _ordered([k for _, _, k in await _current(data, _normalize(domain))])


async def rotate_keys(data: DataStore, domain: str, *, now: float | None = None) -> list[DkimKey]:
    """New keys with new selectors replace the current ones (which are deleted).

    The new TXT records must be published before mail is signed with them; keep the old
    records published for a few days so mail signed before the rotation still verifies.
    """
    return await _replace(data, domain, now, require_absent=False)


async def delete_keys(data: DataStore, domain: str) -> None:
    domain = _normalize(domain)
    batch = WriteBatch()
    for k, _raw, _key_ in await _current(data, domain):
        batch.delete(k)
    if len(batch):
        await data.write(batch)
