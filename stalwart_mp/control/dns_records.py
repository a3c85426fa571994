"""The DNS records a local domain needs, built from the running configuration.

Pure: :func:`build_records` takes the domain, a :class:`HostSetup` (host name, listeners,
the certificate chain served for the host name) and the domain's DKIM keys, and returns
the records; :func:`zone_text` and :func:`table_text` render them. :func:`host_setup` reads
the HostSetup out of a Config (and the certificate file it names).

The records, as Stalwart's documentation lists them:
  MX            domain -> server.hostname (RFC 5321 §5.1)
  TXT  SPF      the host ("v=spf1 a ra=postmaster -all", the HELO identity, RFC 7208 §2.3)
                and the domain ("v=spf1 mx ra=postmaster -all"); ra= is RFC 6652 §3
  TXT  DKIM     <selector>._domainkey per key (RFC 6376 §3.6.1, RFC 8463)
  TXT  DMARC    _dmarc, p=reject with aggregate and failure reports (RFC 7489 §6.3)
  MTA-STS       CNAME mta-sts -> host, TXT _mta-sts "v=STSv1; id=..." (RFC 8461 §3.1)
  TLS-RPT       TXT _smtp._tls "v=TLSRPTv1; rua=mailto:..." (RFC 8460 §3)
  SRV           per client protocol with a listener, its configured port (RFC 6186 §3,
                RFC 8314 §5.1 for the implicit-TLS "s" names, RFC 5804 §1.8 sieve,
                RFC 8620 §2.2 jmap)
  CNAME         autoconfig and autodiscover -> host (client auto-configuration)
  TLSA          _<port>._tcp.<host> for every TLS port, from the served chain
                (RFC 6698 §2.1, RFC 7671 §5, RFC 7672 §3.1)
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from stalwart_mp.config.schema import parse_host_port
from stalwart_mp.directory.dkim_keys import DkimKey
from stalwart_mp.tls import served
from stalwart_mp.tls.contexts import TlsConfigError
from stalwart_mp.tls.served import mta_sts_id, served_chain

TTL = 3600
MX_PREFERENCE = 10

# listener protocol -> (SRV name without TLS or with STARTTLS, SRV name with implicit TLS,
# what it is). None: no such SRV name for that mode.
_SRV: dict[str, tuple[str | None, str | None, str]] = {
    "imap": ("_imap._tcp", "_imaps._tcp", "IMAP"),
    "pop3": ("_pop3._tcp", "_pop3s._tcp", "POP3"),
    "submission": ("_submission._tcp", "_submissions._tcp", "submission"),
    "managesieve": ("_sieve._tcp", None, "ManageSieve"),
    "http": (None, "_jmap._tcp", "JMAP"),  # RFC 8620 §2.2: JMAP only over HTTPS
}
# protocols whose listeners offer TLS (STARTTLS, or implicit); http only with implicit TLS
_STARTTLS = frozenset({"smtp", "submission", "imap", "pop3", "managesieve"})


class DnsRecordsError(Exception):
    """The records cannot be built (e.g. the served certificate cannot be read)."""


@dataclass(frozen=True, slots=True)
class ListenerPort:
    """One port of a configured listener."""

    listener: str
    protocol: str
    port: int
    implicit_tls: bool


@dataclass(frozen=True, slots=True)
class HostSetup:
    """What the records depend on besides the domain and its keys."""

    hostname: str
    listeners: tuple[ListenerPort, ...]
    chain: tuple[x509.Certificate, ...]  # served for ``hostname``, leaf first


@dataclass(frozen=True, slots=True)
class DnsRecord:
    name: str          # fully qualified, no final dot
    type: str          # MX, TXT, CNAME, SRV, TLSA
    value: str         # presentation form, TXT unquoted, host names with a final dot
    ttl: int
    purpose: str
    in_domain_zone: bool


# --- from the configuration -------------------------------------------------------------


def listener_ports(cfg: Any) -> tuple[ListenerPort, ...]:
    """Every (listener, port) of ``server.listener.*``, one entry per distinct port."""
    seen: dict[tuple[str, int], ListenerPort] = {}
    for name in cfg.names("server.listener"):
        protocol = cfg.get(("server", "listener", name, "protocol"))
        implicit = bool(cfg.get(("server", "listener", name, "tls", "implicit")))
        for bind in cfg.get(("server", "listener", name, "bind")) or []:
            _, port = parse_host_port(bind)
            seen.setdefault((name, port), ListenerPort(name, protocol, port, implicit))
    return tuple(sorted(seen.values(), key=lambda p: (p.port, p.listener)))


def host_setup(cfg: Any) -> HostSetup:
    hostname = cfg.get("server.hostname").lower().rstrip(".")
    try:
        chain = served_chain(cfg, hostname)
    except TlsConfigError as exc:
        raise DnsRecordsError(f"no TLSA records: {exc}") from None
    return HostSetup(hostname, listener_ports(cfg), chain)


# --- the records ------------------------------------------------------------------------


def mta_sts_policy(setup: HostSetup) -> str:
    """The MTA-STS policy the workers serve at https://mta-sts.<domain>/.well-known/."""
    return served.mta_sts_policy(setup.hostname, setup.chain)


def tlsa_values(chain: Sequence[x509.Certificate]) -> list[str]:
    """TLSA data for the chain: DANE-EE (3) for the leaf, DANE-TA (2) for each issuer in the
    chain; each with selector 0 (whole certificate) and 1 (SubjectPublicKeyInfo) and
    matching type 1 (SHA-256) and 2 (SHA-512) (RFC 6698 §2.1, RFC 7671 §5.1-5.2)."""
    values = []
    for position, cert in enumerate(chain):
        usage = 3 if position == 0 else 2
        selected = {
            0: cert.public_bytes(serialization.Encoding.DER),
            1: cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo),
        }
        for selector, data in selected.items():
            for mtype, algorithm in ((1, hashes.SHA256()), (2, hashes.SHA512())):
                digest = hashes.Hash(algorithm)
                digest.update(data)
                values.append(f"{usage} {selector} {mtype} {digest.finalize().hex()}")
    return values


def build_records(domain: str, setup: HostSetup, keys: Iterable[DkimKey],
                  ttl: int = TTL) -> list[DnsRecord]:
    """Every record to publish for ``domain``, in zone-file order."""
    domain = domain.lower().rstrip(".")
    host = setup.hostname
    postmaster = f"mailto:postmaster@{domain}"
    out: list[DnsRecord] = []

    def add(name: str, rtype: str, value: str, purpose: str) -> None:
        inside = name == domain or name.endswith("." + domain)
        out.append(DnsRecord(name, rtype, value, ttl, purpose, inside))

    add(domain, "MX", f"{MX_PREFERENCE} {host}.", "mail exchanger")
    add(domain, "TXT", "v=spf1 mx ra=postmaster -all", "SPF of the domain")
    if host != domain:  # one SPF record per name (RFC 7208 §3.2); "mx" covers the host then
        add(host, "TXT", "v=spf1 a ra=postmaster -all", "SPF of the mail host (HELO)")
    for key in keys:
        add(key.dns_name, "TXT", key.txt_record(),
            f"DKIM key {key.selector} ({key.algorithm})")
    add(f"_dmarc.{domain}", "TXT",
        f"v=DMARC1; p=reject; rua={postmaster}; ruf={postmaster}", "DMARC policy")
    add(f"mta-sts.{domain}", "CNAME", f"{host}.", "MTA-STS policy host")
    add(f"_mta-sts.{domain}", "TXT", f"v=STSv1; id={mta_sts_id(mta_sts_policy(setup))}",
        "MTA-STS policy id")
    add(f"_smtp._tls.{domain}", "TXT", f"v=TLSRPTv1; rua={postmaster}", "TLS reporting")
    for name, port, priority, purpose in _srv_entries(setup.listeners):
        add(f"{name}.{domain}", "SRV", f"{priority} 1 {port} {host}.", purpose)
    add(f"autoconfig.{domain}", "CNAME", f"{host}.", "client auto-configuration")
    add(f"autodiscover.{domain}", "CNAME", f"{host}.", "client auto-discovery")
    tlsa = tlsa_values(setup.chain)
    for port in _tls_ports(setup.listeners):
        for value in tlsa:
            add(f"_{port.port}._tcp.{host}", "TLSA", value,
                f"DANE for {port.protocol} on port {port.port}")
    return out


def _srv_entries(listeners: Iterable[ListenerPort]) -> list[tuple[str, int, int, str]]:
    """(SRV name, port, priority, purpose); implicit TLS first (priority 0) over STARTTLS or
    plain text (priority 1), as RFC 8314 §5.1 asks clients to prefer it."""
    entries = []
    for p in listeners:
        if p.protocol not in _SRV:
            continue
        plain, implicit, what = _SRV[p.protocol]
        name = implicit if p.implicit_tls else plain
        if name is not None:
            mode = "implicit TLS" if p.implicit_tls else "STARTTLS"
            entries.append((name, p.port, 0 if p.implicit_tls else 1, f"{what} ({mode})"))
    return sorted(set(entries), key=lambda e: (e[0], e[2], e[1]))


def _tls_ports(listeners: Iterable[ListenerPort]) -> list[ListenerPort]:
    seen: dict[int, ListenerPort] = {}
    for p in listeners:
        if p.implicit_tls or p.protocol in _STARTTLS:
            seen.setdefault(p.port, p)
    return [seen[port] for port in sorted(seen)]


# --- rendering --------------------------------------------------------------------------


def _quoted_txt(value: str) -> str:
    """TXT data as zone-file strings: at most 255 bytes each (RFC 1035 §3.3.14)."""
    raw = value.encode("utf-8")
    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
    return " ".join(
        '"' + c.decode("utf-8", "replace").replace("\\", "\\\\").replace('"', '\\"') + '"'
        for c in chunks)


def zone_line(record: DnsRecord) -> str:
    value = _quoted_txt(record.value) if record.type == "TXT" else record.value
    return f"{record.name + '.':<40} {record.ttl:>5} IN {record.type:<5} {value}"


def zone_text(domain: str, records: Sequence[DnsRecord], hostname: str) -> str:
    """A BIND zone file fragment for ``domain``'s zone; records of another zone (the mail
    host's, when it is not under the domain) follow as comments, to publish there."""
    domain = domain.lower().rstrip(".")
    lines = [f"; DNS records of {domain} for the mail server {hostname},",
             "; generated by stalwart-mp from its running configuration.",
             f"$ORIGIN {domain}.", ""]
    lines += [zone_line(r) for r in records if r.in_domain_zone]
    outside = [r for r in records if not r.in_domain_zone]
    if outside:
        note = f"; Records outside {domain}: publish them in the zone that holds {hostname}."
        lines += ["", note, *(f"; {zone_line(r)}" for r in outside)]
    return "\n".join(lines) + "\n"


def table_text(records: Sequence[DnsRecord]) -> str:
    """A table for people: NAME, TYPE, TTL, VALUE (values in full, last)."""
    header = ("NAME", "TYPE", "TTL", "VALUE")
    rows = [(r.name, r.type, str(r.ttl), r.value) for r in records]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3]
        for row in [header, *rows])
