"""The Domains and Dns services through real gRPC stubs against a running server.

The server (tests/harness.py) serves a CA-signed certificate chain on an MX listener
(STARTTLS), submission (STARTTLS), submissions and HTTPS (implicit TLS) and asks the loopback
DNS server (tests/dns_server.py) for its lookups. DKIM keys are checked against the private
keys stored in the server's data store, TLSA data against the certificate the server
actually serves, SRV ports against the configured listeners.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import smtplib
import socket
import ssl
import time
import tomllib
from collections.abc import Iterator

import dns.zone
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stalwart_mp.control.client import connect
from stalwart_mp.control.gen.stalwart_mp.v1 import (
    dns_pb2,
    dns_pb2_grpc,
    domains_pb2,
    domains_pb2_grpc,
    principals_pb2,
    principals_pb2_grpc,
)
from stalwart_mp.directory.dkim_keys import domain_keys
from stalwart_mp.store.registry import open_data_store
from tests.control.chain import write_chain
from tests.dns_server import DnsServer
from tests.harness import Server, base_config, free_port

HOST = "mail.test.example"
PUBLISHED = dns_pb2.DNS_RECORD_STATUS_PUBLISHED
MISSING = dns_pb2.DNS_RECORD_STATUS_MISSING
DIFFERENT = dns_pb2.DNS_RECORD_STATUS_DIFFERENT


class Env:
    def __init__(self, server: Server, dns: DnsServer, ports: dict[str, int], ca: x509.Certificate,
                 ca_path):
        self.server, self.dns, self.ports, self.ca, self.ca_path = server, dns, ports, ca, ca_path
        self.bind = tomllib.loads(server.config_text)["control"]["bind"]
        self.token = (server.run_dir / "control.token").read_text().strip()
        self.stub = connect(self.bind, self.token)
        self.domains = domains_pb2_grpc.DomainsStub(self.stub.channel)
        self.dns_stub = dns_pb2_grpc.DnsStub(self.stub.channel)
        self.principals = principals_pb2_grpc.PrincipalsStub(self.stub.channel)

    def stored_keys(self, domain: str):
        async def read():
            data = open_data_store("default", {
                "type": "lmdb", "path": str(self.server.folder / "data" / "lmdb")})
            try:
                return await domain_keys(data, domain)
            finally:
                await data.close()

        return asyncio.run(read())


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp("domains")
    cert, key, (_, ca) = write_chain(folder / "tls", HOST)
    ca_path = folder / "tls" / "ca.pem"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    dns = DnsServer().start()
    ports = {name: free_port() for name in ("http", "mx", "submission", "submissions", "https",
                                            "imap", "imaps")}
    extra = f"""
[server.listener.mx]
bind = ["127.0.0.1:{ports['mx']}"]
protocol = "smtp"

[server.listener.submission]
bind = ["127.0.0.1:{ports['submission']}"]
protocol = "submission"

[server.listener.submissions]
bind = ["127.0.0.1:{ports['submissions']}"]
protocol = "submission"
tls.implicit = true

[server.listener.imap]
bind = ["127.0.0.1:{ports['imap']}"]
protocol = "imap"

[server.listener.imaps]
bind = ["127.0.0.1:{ports['imaps']}"]
protocol = "imap"
tls.implicit = true

[server.listener.https]
bind = ["127.0.0.1:{ports['https']}"]
protocol = "http"
tls.implicit = true

[certificate.main]
cert = "{cert}"
private-key = "{key}"
default = true

[resolver]
nameservers = ["127.0.0.1:{dns.port}"]
timeout = 2
"""
    (folder / "data").mkdir()
    server = Server(folder, ports["http"], base_config(folder, ports["http"], workers=1,
                                                       extra=extra))
    try:
        server.start(wait_workers=1)
        server.wait_for((server.run_dir / "control.token").exists, "the control token")
        environment = Env(server, dns, ports, ca, ca_path)
        yield environment
        environment.stub.close()
    finally:
        server.stop()
        dns.stop()


def _error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value


def test_unauthenticated_calls_are_refused(env):
    for token in ("", "wrong-token"):
        with connect(env.bind, token) as stub:
            domains = domains_pb2_grpc.DomainsStub(stub.channel)
            err = _error(domains.ListDomains, domains_pb2.ListDomainsRequest())
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            records = dns_pb2_grpc.DnsStub(stub.channel)
            err = _error(records.Records, dns_pb2.DnsRecordsRequest(domain="example.org"))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED


def test_create_get_list_rotate_delete(env):
    month = time.strftime("%Y%m", time.gmtime())
    created = env.domains.CreateDomain(
        principals_pb2.CreateDomainRequest(name="Example.COM.", description="shop"),
        timeout=30)
    assert created.name == "example.com" and created.description == "shop"
    assert [(k.selector, k.algorithm) for k in created.dkim_keys] == [
        (f"{month}e", "ed25519-sha256"), (f"{month}r", "rsa-sha256")]
    assert created.dkim_keys[0].dns_name == f"{month}e._domainkey.example.com"
    assert created.dkim_keys[1].txt_record.startswith("v=DKIM1; k=rsa; h=sha256; p=")
    assert abs(created.dkim_keys[0].created_at.seconds - time.time()) < 120

    # the public keys handed out are those of the private keys the server stored
    stored = env.stored_keys("example.com")
    assert [k.selector for k in stored] == [k.selector for k in created.dkim_keys]
    for mine, theirs in zip(stored, created.dkim_keys):
        assert mine.public_key_b64() == theirs.public_key

    err = _error(env.domains.CreateDomain, principals_pb2.CreateDomainRequest(name="example.com"))
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS and "example.com" in err.details()
    err = _error(env.domains.CreateDomain, principals_pb2.CreateDomainRequest(name="not a domain"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("name:"), err.details()
    err = _error(env.domains.CreateDomain, principals_pb2.CreateDomainRequest(name=""))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "name: a domain name is required")

    got = env.domains.GetDomain(domains_pb2.GetDomainRequest(name="EXAMPLE.com"), timeout=30)
    assert got == created
    err = _error(env.domains.GetDomain, domains_pb2.GetDomainRequest(name="nowhere.test"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "nowhere.test" in err.details()
    err = _error(env.domains.GetDomain, domains_pb2.GetDomainRequest(name="bad_domain!"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("name:")

    env.domains.CreateDomain(principals_pb2.CreateDomainRequest(name="example.net"), timeout=30)
    first = env.domains.ListDomains(domains_pb2.ListDomainsRequest(page_size=1), timeout=30)
    assert [d.name for d in first.domains] == ["example.com"]
    assert first.next_page_token == "example.com"
    assert len(first.domains[0].dkim_keys) == 2
    rest = env.domains.ListDomains(
        domains_pb2.ListDomainsRequest(page_token=first.next_page_token), timeout=30)
    assert "example.net" in [d.name for d in rest.domains] and not rest.next_page_token
    found = env.domains.ListDomains(domains_pb2.ListDomainsRequest(search="SHOP"), timeout=30)
    assert [d.name for d in found.domains] == ["example.com"]
    err = _error(env.domains.ListDomains, domains_pb2.ListDomainsRequest(page_size=-1))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in err.details()

    rotated = env.domains.RotateDkim(domains_pb2.RotateDkimRequest(name="example.com"),
                                     timeout=30)
    assert [k.selector for k in rotated.dkim_keys] == [f"{month}e2", f"{month}r2"]
    assert {k.public_key for k in rotated.dkim_keys}.isdisjoint(
        {k.public_key for k in created.dkim_keys})
    assert [k.selector for k in env.stored_keys("example.com")] == [f"{month}e2", f"{month}r2"]
    err = _error(env.domains.RotateDkim, domains_pb2.RotateDkimRequest(name="nowhere.test"))
    assert err.code() == grpc.StatusCode.NOT_FOUND

    # an address in the domain keeps it (and its keys)
    env.principals.CreatePrincipal(principals_pb2.CreatePrincipalRequest(
        name="carol", emails=["carol@example.net"]), timeout=30)
    err = _error(env.domains.DeleteDomain, domains_pb2.DeleteDomainRequest(name="example.net"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "carol@example.net" in err.details()
    assert len(env.stored_keys("example.net")) == 2
    env.principals.DeletePrincipal(principals_pb2.DeletePrincipalRequest(name="carol"),
                                   timeout=30)
    env.domains.DeleteDomain(domains_pb2.DeleteDomainRequest(name="example.net"), timeout=30)
    assert env.stored_keys("example.net") == []
    err = _error(env.domains.GetDomain, domains_pb2.GetDomainRequest(name="example.net"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = _error(env.domains.DeleteDomain, domains_pb2.DeleteDomainRequest(name="example.net"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    # an account whose name looks like a domain is not a domain
    env.principals.CreatePrincipal(principals_pb2.CreatePrincipalRequest(
        name="dave.example", emails=["dave@example.com"]), timeout=30)
    err = _error(env.domains.DeleteDomain, domains_pb2.DeleteDomainRequest(name="dave.example"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert env.principals.GetPrincipal(principals_pb2.GetPrincipalRequest(
        name="dave.example"), timeout=30).type == "individual"

    # every change is in the audit log, with who made it
    log_text = (env.server.folder / "server.log").read_text(errors="replace")
    audit = [line for line in log_text.splitlines() if "control change" in line]
    for action in ("domain.create", "dkim.rotate", "domain.delete"):
        assert any(action in line and "token" in line for line in audit), (action, audit)
    rotation = next(line for line in audit if "dkim.rotate" in line)
    assert f"{month}e2" in rotation and f"{month}e" in rotation


def _served_leaf_by_implicit_tls(env, listener: str) -> x509.Certificate:
    ctx = ssl.create_default_context(cafile=str(env.ca_path))  # verifies the chain to our CA
    with (socket.create_connection(("127.0.0.1", env.ports[listener]), timeout=10) as raw,
          ctx.wrap_socket(raw, server_hostname=HOST) as tls):
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


def _served_leaf_by_starttls(env) -> x509.Certificate:
    ctx = ssl.create_default_context(cafile=str(env.ca_path))
    with smtplib.SMTP("127.0.0.1", env.ports["mx"], timeout=10) as smtp:
        smtp.ehlo("client.test")
        smtp._host = HOST  # the name verified and sent as SNI
        smtp.starttls(context=ctx)
        return x509.load_der_x509_certificate(smtp.sock.getpeercert(binary_form=True))


def _tlsa(cert: x509.Certificate, usage: int) -> list[str]:
    full = cert.public_bytes(serialization.Encoding.DER)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = {1: hashlib.sha256, 2: hashlib.sha512}
    return [f"{usage} {sel} {mtype} {digest[mtype](data).hexdigest()}"
            for sel, data in ((0, full), (1, spki)) for mtype in (1, 2)]


def test_records_from_the_live_configuration(env):
    env.domains.CreateDomain(principals_pb2.CreateDomainRequest(name="test.example"), timeout=30)
    answer = env.dns_stub.Records(dns_pb2.DnsRecordsRequest(domain="test.example."), timeout=30)
    assert answer.domain == "test.example"
    records = list(answer.records)
    by = {}
    for r in records:
        by.setdefault((r.name, r.type), []).append(r.value)

    assert by[("test.example", "MX")] == [f"10 {HOST}."]
    assert by[("test.example", "TXT")] == ["v=spf1 mx ra=postmaster -all"]
    assert by[(HOST, "TXT")] == ["v=spf1 a ra=postmaster -all"]
    dmarc = ("v=DMARC1; p=reject; rua=mailto:postmaster@test.example; "
             "ruf=mailto:postmaster@test.example")
    assert by[("_dmarc.test.example", "TXT")] == [dmarc]
    assert by[("_smtp._tls.test.example", "TXT")] == [
        "v=TLSRPTv1; rua=mailto:postmaster@test.example"]
    for name in ("mta-sts", "autoconfig", "autodiscover"):
        assert by[(f"{name}.test.example", "CNAME")] == [f"{HOST}."]
    policy_id = hashlib.sha256(answer.mta_sts_policy.encode()).hexdigest()[:32]
    assert by[("_mta-sts.test.example", "TXT")] == [f"v=STSv1; id={policy_id}"]
    assert "mode: enforce" in answer.mta_sts_policy, "a CA-signed certificate is served"

    # DKIM: the published keys are the stored private keys' public halves
    for key in env.stored_keys("test.example"):
        (txt,) = by[(f"{key.selector}._domainkey.test.example", "TXT")]
        p = base64.b64decode(txt.rpartition("p=")[2])
        public = serialization.load_pem_private_key(key.private_pem, None).public_key()
        if key.algorithm == "rsa-sha256":
            assert serialization.load_der_public_key(p).public_numbers() == \
                public.public_numbers()
        else:
            assert p == public.public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)

    # SRV: the configured listeners' ports; none for smtp or the plain-text http listener
    srv = {r.name: r.value for r in records if r.type == "SRV"}
    assert srv == {
        "_submission._tcp.test.example": f"1 1 {env.ports['submission']} {HOST}.",
        "_submissions._tcp.test.example": f"0 1 {env.ports['submissions']} {HOST}.",
        "_jmap._tcp.test.example": f"0 1 {env.ports['https']} {HOST}.",
        "_imap._tcp.test.example": f"1 1 {env.ports['imap']} {HOST}.",
        "_imaps._tcp.test.example": f"0 1 {env.ports['imaps']} {HOST}.",
    }

    # TLSA: computed here from the certificate the server serves, for each TLS port
    leaf = _served_leaf_by_implicit_tls(env, "submissions")
    assert _served_leaf_by_starttls(env) == leaf
    assert _served_leaf_by_implicit_tls(env, "imaps") == leaf
    assert _served_leaf_by_implicit_tls(env, "https") == leaf
    expected = _tlsa(leaf, 3) + _tlsa(env.ca, 2)
    tls_ports = sorted(env.ports[n] for n in ("mx", "submission", "submissions", "https",
                                              "imap", "imaps"))
    tlsa_names = sorted({r.name for r in records if r.type == "TLSA"})
    assert tlsa_names == sorted(f"_{p}._tcp.{HOST}" for p in tls_ports)
    for port in tls_ports:
        assert by[(f"_{port}._tcp.{HOST}", "TLSA")] == expected

    # the host is under the domain: everything is in the pasteable zone
    zone = dns.zone.from_text(answer.zone, origin="test.example.", check_origin=False,
                              relativize=False)
    assert len(list(zone.iterate_rdatas())) == len(records)

    err = _error(env.dns_stub.Records, dns_pb2.DnsRecordsRequest(domain="nowhere.test"))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "nowhere.test" in err.details()
    err = _error(env.dns_stub.Records, dns_pb2.DnsRecordsRequest(domain=""))
    assert (err.code(), err.details()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                           "domain: a domain name is required")
    err = _error(env.dns_stub.Check, dns_pb2.DnsCheckRequest(domain="x y"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.details().startswith("domain:")


def test_check_against_the_live_dns(env):
    env.domains.CreateDomain(principals_pb2.CreateDomainRequest(name="check.example"),
                             timeout=30)
    answer = env.dns_stub.Records(dns_pb2.DnsRecordsRequest(domain="check.example"), timeout=30)
    records = list(answer.records)
    zone = env.dns.zone
    zone.clear()
    # publish everything but the autodiscover CNAME and the RSA key, and a DMARC record
    # with another policy
    rsa_name = next(r.name for r in records if "k=rsa" in r.value)
    for r in records:
        if r.name in ("autodiscover.check.example", rsa_name):
            continue
        entry = zone.setdefault(r.name, {})
        if r.type == "CNAME":
            entry["CNAME"] = r.value
            continue
        value = r.value
        if r.name == "_dmarc.check.example":
            value = "v=DMARC1; p=none"
        entry.setdefault(r.type, []).append(value)
    result = env.dns_stub.Check(dns_pb2.DnsCheckRequest(domain="check.example"), timeout=60)
    assert [c.record for c in result.checks] == records
    status = {(c.record.name, c.record.type): c.status for c in result.checks}
    assert status.pop(("autodiscover.check.example", "CNAME")) == MISSING
    assert status.pop((rsa_name, "TXT")) == MISSING
    dmarc = next(c for c in result.checks if c.record.name == "_dmarc.check.example")
    assert (dmarc.status, list(dmarc.found)) == (DIFFERENT, ["v=DMARC1; p=none"])
    status.pop(("_dmarc.check.example", "TXT"))
    assert set(status.values()) == {PUBLISHED}
    assert not result.all_published

    zone["autodiscover.check.example"] = {"CNAME": HOST}
    zone[rsa_name] = {"TXT": [next(r.value for r in records if r.name == rsa_name)]}
    zone["_dmarc.check.example"]["TXT"] = [
        next(r.value for r in records if r.name == "_dmarc.check.example")]
    result = env.dns_stub.Check(dns_pb2.DnsCheckRequest(domain="check.example"), timeout=60)
    assert result.all_published
    assert {c.status for c in result.checks} == {PUBLISHED}


def test_only_administrators_manage_domains(env):
    env.principals.CreatePrincipal(principals_pb2.CreatePrincipalRequest(
        name="erin", password="erin-pw"), timeout=30)
    env.principals.CreatePrincipal(principals_pb2.CreatePrincipalRequest(
        name="root", password="root-pw", roles=["user", "admin"]), timeout=30)
    with connect(env.bind, user="erin", password="erin-pw") as stub:
        err = _error(domains_pb2_grpc.DomainsStub(stub.channel).CreateDomain,
                     principals_pb2.CreateDomainRequest(name="erin.example"))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        err = _error(dns_pb2_grpc.DnsStub(stub.channel).Records,
                     dns_pb2.DnsRecordsRequest(domain="test.example"))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    with connect(env.bind, user="root", password="root-pw") as stub:
        made = domains_pb2_grpc.DomainsStub(stub.channel).CreateDomain(
            principals_pb2.CreateDomainRequest(name="root.example"), timeout=30)
        assert len(made.dkim_keys) == 2
    err = _error(env.domains.GetDomain, domains_pb2.GetDomainRequest(name="erin.example"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    log_text = (env.server.folder / "server.log").read_text(errors="replace")
    assert any("domain.create" in line and "root.example" in line and "root" in line
               for line in log_text.splitlines() if "control change" in line)


def test_a_domain_made_without_keys_gets_them_by_rotation(env):
    month = time.strftime("%Y%m", time.gmtime())
    env.principals.CreateDomain(principals_pb2.CreateDomainRequest(name="nokeys.example"),
                                timeout=30)
    bare = env.domains.GetDomain(domains_pb2.GetDomainRequest(name="nokeys.example"),
                                 timeout=30)
    assert list(bare.dkim_keys) == []
    records = env.dns_stub.Records(dns_pb2.DnsRecordsRequest(domain="nokeys.example"),
                                   timeout=30).records
    assert not any("_domainkey" in r.name for r in records)
    assert any(r.type == "MX" for r in records)
    keyed = env.domains.RotateDkim(domains_pb2.RotateDkimRequest(name="nokeys.example"),
                                   timeout=30)
    assert [k.selector for k in keyed.dkim_keys] == [f"{month}e", f"{month}r"]
    records = env.dns_stub.Records(dns_pb2.DnsRecordsRequest(domain="nokeys.example"),
                                   timeout=30).records
    assert sorted(r.name for r in records if "_domainkey" in r.name) == [
        f"{month}e._domainkey.nokeys.example", f"{month}r._domainkey.nokeys.example"]


def test_the_published_mta_sts_policy_is_served(env):
    """RFC 8461 §3.3: the policy whose id `dns records` publishes is the one the HTTPS
    listener serves at https://mta-sts.<domain>/.well-known/mta-sts.txt."""
    env.domains.CreateDomain(principals_pb2.CreateDomainRequest(name="sts.example"),
                             timeout=30)
    answer = env.dns_stub.Records(dns_pb2.DnsRecordsRequest(domain="sts.example"), timeout=30)
    (txt,) = [r.value for r in answer.records if r.name == "_mta-sts.sts.example"]
    ctx = ssl.create_default_context(cafile=str(env.ca_path))
    ctx.check_hostname = False   # the test chain names the mail host, not mta-sts.*

    def fetch(host: str) -> tuple[int, dict, str]:
        with socket.create_connection(("127.0.0.1", env.ports["https"]), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname=HOST) as tls:
            tls.sendall(f"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\n"
                        "Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        head, _, body = data.decode().partition("\r\n\r\n")
        lines = head.split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        return int(lines[0].split()[1]), headers, body

    status, headers, body = fetch("mta-sts.sts.example")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert body == answer.mta_sts_policy
    assert txt == f"v=STSv1; id={hashlib.sha256(body.encode()).hexdigest()[:32]}"
    assert f"mx: {HOST}\r\n" in body and "mode: enforce\r\n" in body
    assert fetch("www.sts.example")[0] == 404, "only on the mta-sts names"


def test_deleting_a_domain_as_a_principal_deletes_its_keys(env):
    env.domains.CreateDomain(principals_pb2.CreateDomainRequest(name="gone.example"),
                             timeout=30)
    assert len(env.stored_keys("gone.example")) == 2
    env.principals.DeletePrincipal(principals_pb2.DeletePrincipalRequest(name="gone.example"),
                                   timeout=30)
    assert env.stored_keys("gone.example") == []
