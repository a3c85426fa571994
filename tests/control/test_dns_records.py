"""The DNS records of a domain (pure), their zone-file and table forms, and the live check
against the loopback DNS server."""
from __future__ import annotations

import base64
import hashlib
import tomllib

import dns.rdatatype
import dns.zone
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stalwart_mp.config.loader import load_dict
from stalwart_mp.control.dns_check import LiveDns, RecordStatus, check_records
from stalwart_mp.control.dns_records import (
    HostSetup,
    ListenerPort,
    build_records,
    host_setup,
    mta_sts_id,
    mta_sts_policy,
    table_text,
    tlsa_values,
    zone_text,
)
from stalwart_mp.directory.dkim_keys import create_keys
from stalwart_mp.dns.resolver import ResolverConfig
from stalwart_mp.store.registry import open_data_store
from stalwart_mp.tls.selfsigned import generate_self_signed
from tests.control.chain import write_chain
from tests.dns_server import DnsServer
from tests.harness import base_config

HOST = "mail.example.org"
LISTENERS = (
    ListenerPort("mx", "smtp", 25, False),
    ListenerPort("imap", "imap", 143, False),
    ListenerPort("https", "http", 443, True),
    ListenerPort("submissions", "submission", 465, True),
    ListenerPort("submission", "submission", 587, False),
    ListenerPort("imaps", "imap", 993, True),
    ListenerPort("pop3s", "pop3", 995, True),
    ListenerPort("sieve", "managesieve", 4190, False),
    ListenerPort("lmtp", "lmtp", 2424, False),
    ListenerPort("health", "http", 8080, False),
)


@pytest.fixture
async def keys():
    data = open_data_store("data", {"type": "memory"})
    made = await create_keys(data, "example.org")
    yield made
    await data.close()


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return tuple(write_chain(tmp_path_factory.mktemp("chain"), HOST)[2])


def _by(records, rtype, name):
    return [r.value for r in records if r.type == rtype and r.name == name]


def _hash(data: bytes, mtype: int) -> str:
    return (hashlib.sha256 if mtype == 1 else hashlib.sha512)(data).hexdigest()


def test_every_record_of_the_domain(keys, chain):
    setup = HostSetup(HOST, LISTENERS, chain)
    records = build_records("Example.org.", setup, keys)
    assert _by(records, "MX", "example.org") == ["10 mail.example.org."]
    assert _by(records, "TXT", "example.org") == ["v=spf1 mx ra=postmaster -all"]
    assert _by(records, "TXT", HOST) == ["v=spf1 a ra=postmaster -all"]
    dmarc = ("v=DMARC1; p=reject; rua=mailto:postmaster@example.org; "
             "ruf=mailto:postmaster@example.org")
    assert _by(records, "TXT", "_dmarc.example.org") == [dmarc]
    assert _by(records, "CNAME", "mta-sts.example.org") == [f"{HOST}."]
    assert _by(records, "TXT", "_mta-sts.example.org") == [
        f"v=STSv1; id={mta_sts_id(mta_sts_policy(setup))}"]
    assert _by(records, "TXT", "_smtp._tls.example.org") == [
        "v=TLSRPTv1; rua=mailto:postmaster@example.org"]
    assert _by(records, "CNAME", "autoconfig.example.org") == [f"{HOST}."]
    assert _by(records, "CNAME", "autodiscover.example.org") == [f"{HOST}."]
    for key in keys:
        (txt,) = _by(records, "TXT", f"{key.selector}._domainkey.example.org")
        tag = "ed25519" if key.algorithm == "ed25519-sha256" else "rsa"
        assert txt.startswith(f"v=DKIM1; k={tag}; h=sha256; p=")
        public = serialization.load_pem_private_key(key.private_pem, None).public_key()
        p = base64.b64decode(txt.rpartition("p=")[2])
        if tag == "rsa":
            assert p == public.public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        else:
            assert p == public.public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    assert all(r.in_domain_zone for r in records)  # the host is under the domain
    assert all(r.ttl == 3600 for r in records)


def test_srv_for_each_client_listener_with_its_port(keys, chain):
    records = build_records("example.org", HostSetup(HOST, LISTENERS, chain), keys)
    srv = {r.name: r.value for r in records if r.type == "SRV"}
    assert srv == {
        "_imap._tcp.example.org": f"1 1 143 {HOST}.",
        "_imaps._tcp.example.org": f"0 1 993 {HOST}.",
        "_pop3s._tcp.example.org": f"0 1 995 {HOST}.",
        "_submission._tcp.example.org": f"1 1 587 {HOST}.",
        "_submissions._tcp.example.org": f"0 1 465 {HOST}.",
        "_sieve._tcp.example.org": f"1 1 4190 {HOST}.",
        "_jmap._tcp.example.org": f"0 1 443 {HOST}.",
    }, "no SRV for smtp, lmtp, plain http or a protocol without a listener (pop3)"
    only_mx = build_records("example.org", HostSetup(HOST, LISTENERS[:1], chain), keys)
    assert [r for r in only_mx if r.type == "SRV"] == []


def test_tlsa_from_the_chain_for_every_tls_port(keys, chain):
    records = build_records("example.org", HostSetup(HOST, LISTENERS, chain), keys)
    leaf, ca = chain
    expected = []
    for usage, cert in ((3, leaf), (2, ca)):
        full = cert.public_bytes(serialization.Encoding.DER)
        spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        for selector, data in ((0, full), (1, spki)):
            for mtype in (1, 2):
                expected.append(f"{usage} {selector} {mtype} {_hash(data, mtype)}")
    ports = sorted({int(r.name.split(".")[0][1:]) for r in records if r.type == "TLSA"})
    assert ports == [25, 143, 443, 465, 587, 993, 995, 4190], "not lmtp nor plain http"
    assert _by(records, "TLSA", f"_25._tcp.{HOST}") == expected
    assert len(expected) == 8 and len(set(expected)) == 8


def test_mta_sts_id_follows_the_policy(chain):
    _, cert_pem = generate_self_signed(HOST)
    self_signed = (x509.load_pem_x509_certificate(cert_pem),)
    enforced = HostSetup(HOST, LISTENERS, chain)
    testing = HostSetup(HOST, LISTENERS, self_signed)
    assert mta_sts_policy(enforced) == (
        f"version: STSv1\r\nmode: enforce\r\nmx: {HOST}\r\nmax_age: 604800\r\n")
    assert "mode: testing" in mta_sts_policy(testing)
    other_host = HostSetup("mx2.example.org", LISTENERS, chain)
    ids = {mta_sts_id(mta_sts_policy(s)) for s in (enforced, testing, other_host)}
    assert len(ids) == 3
    assert all(len(i) == 32 and i.isalnum() for i in ids)
    assert mta_sts_id(mta_sts_policy(enforced)) == mta_sts_id(
        mta_sts_policy(HostSetup(HOST, LISTENERS[:2], chain))), "listeners are not in it"


def test_zone_file_parses_and_holds_every_record(keys, chain):
    records = build_records("example.org", HostSetup(HOST, LISTENERS, chain), keys)
    text = zone_text("example.org", records, HOST)
    assert text.count('" "') >= 1, "the RSA key's TXT is split in 255-byte strings"
    zone = dns.zone.from_text(text, origin="example.org.", check_origin=False,
                              relativize=False)
    parsed = set()
    for name, ttl, rdata in zone.iterate_rdatas():
        rtype = dns.rdatatype.to_text(rdata.rdtype)
        value = (b"".join(rdata.strings).decode() if rtype == "TXT"
                 else rdata.to_text())
        parsed.add((name.to_text(omit_final_dot=True), rtype, value, ttl))
    assert parsed == {(r.name, r.type, r.value, r.ttl) for r in records}


def test_records_of_a_host_in_another_zone_are_commented(keys, chain):
    setup = HostSetup("mx.provider.test", LISTENERS[:1], chain)
    records = build_records("example.org", setup, keys)
    outside = {(r.name, r.type) for r in records if not r.in_domain_zone}
    assert outside == {("mx.provider.test", "TXT"), ("_25._tcp.mx.provider.test", "TLSA")}
    text = zone_text("example.org", records, "mx.provider.test")
    assert "; mx.provider.test." in text and "; _25._tcp.mx.provider.test." in text
    zone = dns.zone.from_text(text, origin="example.org.", check_origin=False)
    assert len(list(zone.iterate_rdatas())) == len(records) - 1 - 8  # SPF, 8 TLSA
    names = {n.to_text() for n, _, _ in zone.iterate_rdatas()}
    assert not any("provider" in n for n in names)


def test_table_lists_every_record(keys, chain):
    records = build_records("example.org", HostSetup(HOST, LISTENERS, chain), keys)
    lines = table_text(records).splitlines()
    assert lines[0].split() == ["NAME", "TYPE", "TTL", "VALUE"]
    assert len(lines) == len(records) + 1
    assert lines[1].split() == ["example.org", "MX", "3600", "10", "mail.example.org."]
    dkim = next(line for line in lines if "_domainkey" in line and " TXT " in line)
    assert keys[0].public_key_b64() in dkim, "values are printed in full"


def test_host_setup_from_the_configuration(tmp_path):
    cert, key, chain = write_chain(tmp_path / "tls", "mail.test.example")
    data = tomllib.loads(base_config(tmp_path, 8080) + f"""
[server.listener.mx]
bind = ["127.0.0.1:2525", "[::1]:2525"]
protocol = "smtp"

[server.listener.imaps]
bind = ["0.0.0.0:9993"]
protocol = "imap"
tls.implicit = true

[certificate.main]
cert = "{cert}"
private-key = "{key}"
""")
    setup = host_setup(load_dict(data, base_dir=tmp_path))
    assert setup.hostname == "mail.test.example"
    assert setup.listeners == (
        ListenerPort("mx", "smtp", 2525, False),
        ListenerPort("http", "http", 8080, False),
        ListenerPort("imaps", "imap", 9993, True),
    )
    assert [c.fingerprint(c.signature_hash_algorithm) for c in setup.chain] == [
        c.fingerprint(c.signature_hash_algorithm) for c in chain]
    assert tlsa_values(setup.chain)[0].startswith("3 0 1 ")


# --- the live check -------------------------------------------------------------------


async def test_check_published_missing_different_and_error(keys, chain):
    setup = HostSetup(HOST, LISTENERS[:2], chain)
    records = build_records("example.org", setup, keys)
    value = {(r.name, r.type): r.value for r in records}
    ed, rsa = keys
    server = DnsServer().start()
    zone = server.zone
    zone.update({
        # MX with another preference: still published (the target is what counts)
        "example.org": {"MX": [(20, HOST)],
                        "TXT": ["google-site-verification=abc",
                                "v=spf1  mx ra=postmaster -all"]},
        HOST: {"TXT": ["v=spf1 ip4:192.0.2.1 -all"], "A": ["192.0.2.1"]},  # different
        ed.dns_name: {"TXT": [value[(ed.dns_name, "TXT")].replace("; ", ";")]},
        # rsa key missing; DMARC with other tags
        "_dmarc.example.org": {"TXT": ["v=DMARC1; p=none"]},
        "mta-sts.example.org": {"CNAME": HOST},
        "_mta-sts.example.org": {"TXT": ["v=STSv1; id=old"]},
        "autoconfig.example.org": {"CNAME": "elsewhere.example.net"},
        "_imap._tcp.example.org": {"SRV": [value[("_imap._tcp.example.org", "SRV")]]},
        f"_25._tcp.{HOST}": {"TLSA": [v for (n, t), v in
                                      [((r.name, r.type), r.value) for r in records]
                                      if n == f"_25._tcp.{HOST}" and v.startswith("3 1 1")]},
    })
    zone.broken.add("_smtp._tls.example.org")
    try:
        resolver = LiveDns(ResolverConfig(nameservers=[f"127.0.0.1:{server.port}"],
                                          timeout=2, attempts=1, cache_size=0))
        checks = await check_records(records, resolver)
    finally:
        server.stop()
    status = {(c.record.name, c.record.type, c.record.value): c.status for c in checks}
    by_name = {}
    for c in checks:
        by_name.setdefault((c.record.name, c.record.type), []).append(c)

    def only(name, rtype):
        (c,) = by_name[(name, rtype)]
        return c

    assert [c.record for c in checks] == records, "one check per record, in order"
    assert only("example.org", "MX").status == RecordStatus.PUBLISHED
    spf = only("example.org", "TXT")
    assert spf.status == RecordStatus.PUBLISHED
    assert spf.found == ["v=spf1  mx ra=postmaster -all"], "unrelated TXT records left out"
    host_spf = only(HOST, "TXT")
    assert (host_spf.status, host_spf.found) == (RecordStatus.DIFFERENT,
                                                 ["v=spf1 ip4:192.0.2.1 -all"])
    assert only(ed.dns_name, "TXT").status == RecordStatus.PUBLISHED
    assert only(rsa.dns_name, "TXT").status == RecordStatus.MISSING
    assert only("_dmarc.example.org", "TXT").status == RecordStatus.DIFFERENT
    assert only("mta-sts.example.org", "CNAME").status == RecordStatus.PUBLISHED
    assert only("_mta-sts.example.org", "TXT").status == RecordStatus.DIFFERENT
    assert only("autoconfig.example.org", "CNAME").found == ["elsewhere.example.net."]
    assert only("autoconfig.example.org", "CNAME").status == RecordStatus.DIFFERENT
    assert only("autodiscover.example.org", "CNAME").status == RecordStatus.MISSING
    assert only("_imap._tcp.example.org", "SRV").status == RecordStatus.PUBLISHED
    tls_rpt = only("_smtp._tls.example.org", "TXT")
    assert tls_rpt.status == RecordStatus.ERROR and tls_rpt.found == []
    assert tls_rpt.error.startswith("DNS TXT lookup of _smtp._tls.example.org"), tls_rpt.error
    tlsa = by_name[(f"_25._tcp.{HOST}", "TLSA")]
    assert [c.status for c in tlsa if c.record.value.startswith("3 1 1")] == [
        RecordStatus.PUBLISHED]
    assert {c.status for c in tlsa if not c.record.value.startswith("3 1 1")} == {
        RecordStatus.DIFFERENT}
    assert sum(s == RecordStatus.PUBLISHED for s in status.values()) == 6


def test_one_spf_record_when_the_host_is_the_domain(keys, chain):
    records = build_records("example.org", HostSetup("example.org", LISTENERS[:1], chain), keys)
    assert _by(records, "TXT", "example.org") == ["v=spf1 mx ra=postmaster -all"]
    assert _by(records, "MX", "example.org") == ["10 example.org."]
