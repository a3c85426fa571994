"""SPF, DKIM, ARC, DMARC, iprev and Authentication-Results against a real loopback DNS server."""
from __future__ import annotations

import base64

import authres
import dkim
import nacl.signing
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from stalwart_mp.dns.resolver import Resolver, ResolverConfig
from stalwart_mp.smtp.checks import (
    ArcResult,
    DkimResult,
    DmarcResult,
    IprevResult,
    SpfResult,
    authentication_results,
    check_iprev,
    check_spf,
    evaluate_dmarc,
    verify_arc,
    verify_dkim,
)
from tests.dns_server import dns_zone, reverse_name  # noqa: F401  (fixture)

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: hello\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
)


@pytest.fixture
def zone(dns_zone):  # noqa: F811
    return dns_zone[1]


@pytest.fixture
def resolver(dns_zone):  # noqa: F811
    port = dns_zone[0]
    # no cache: tests edit the zone between lookups
    return Resolver(ResolverConfig([f"127.0.0.1:{port}"], timeout=1.0, attempts=1, cache_size=0))


# --- SPF (RFC 7208) ------------------------------------------------------------------------


@pytest.fixture
def spf_zone(zone):
    zone.update({
        "example.com": {"TXT": [
            "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:inc.example.org -all",
            "google-site-verification=xyz",
        ]},
        "inc.example.org": {"TXT": ["v=spf1 a:relay.example.org ~all"]},
        "relay.example.org": {"A": ["198.51.100.7"]},
        "soft.example": {"TXT": ["v=spf1 ~all"]},
        "neutral.example": {"TXT": ["v=spf1 ?all"]},
        "redir.example": {"TXT": ["v=spf1 redirect=example.com"]},
        "mx.example": {"TXT": ["v=spf1 mx -all"], "MX": [(10, "mail.mx.example")]},
        "mail.mx.example": {"A": ["203.0.113.5"]},
        "bad.example": {"TXT": ["v=spf1 ip4:192.0.2.300 -all"]},
        "two.example": {"TXT": ["v=spf1 -all", "v=spf1 +all"]},
        "helo.example": {"TXT": ["v=spf1 ip4:203.0.113.9 -all"]},
        "nospf.example": {"TXT": ["just text"]},
        "incbroken.example": {"TXT": ["v=spf1 include:broken.example -all"]},
    })
    zone.broken.add("broken.example")
    return zone


@pytest.mark.parametrize(("ip", "sender", "expected"), [
    ("192.0.2.55", "user@example.com", "pass"),
    ("2001:db8:1::25", "user@example.com", "pass"),             # ip6:
    ("198.51.100.7", "user@example.com", "pass"),               # include: -> a:
    ("203.0.113.1", "user@example.com", "fail"),
    ("2001:db9::1", "user@example.com", "fail"),
    ("203.0.113.1", "user@soft.example", "softfail"),
    ("203.0.113.1", "user@neutral.example", "neutral"),
    ("192.0.2.1", "user@redir.example", "pass"),                # redirect=
    ("203.0.113.1", "user@redir.example", "fail"),
    ("203.0.113.5", "user@mx.example", "pass"),                 # mx
    ("203.0.113.1", "user@nospf.example", "none"),
    ("203.0.113.1", "user@nothere.example", "none"),            # NXDOMAIN
    ("192.0.2.1", "user@bad.example", "permerror"),             # bad ip4:
    ("192.0.2.1", "user@two.example", "permerror"),             # RFC 7208 §4.5
    ("192.0.2.1", "user@broken.example", "temperror"),          # SERVFAIL
    ("192.0.2.1", "user@incbroken.example", "temperror"),
    ("::ffff:192.0.2.55", "user@example.com", "pass"),          # IPv4-mapped
])
async def test_spf_mail_from(spf_zone, resolver, ip, sender, expected):
    res = await check_spf(ip, "client.example", sender, resolver)
    assert res.result == expected, res
    assert res.scope == "mailfrom"
    assert res.domain == sender.partition("@")[2]
    assert res.identity == sender


async def test_spf_uses_helo_for_null_sender(spf_zone, resolver):
    ok = await check_spf("203.0.113.9", "helo.example", "", resolver)
    assert ok == SpfResult("pass", "helo.example", ok.explanation, "helo", "postmaster@helo.example")
    bad = await check_spf("203.0.113.10", "helo.example", "<>", resolver)
    assert (bad.result, bad.scope) == ("fail", "helo")


async def test_spf_zone_edited_live(spf_zone, resolver):
    assert (await check_spf("192.0.2.1", "h", "a@new.example", resolver)).result == "none"
    spf_zone["new.example"] = {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]}
    assert (await check_spf("192.0.2.1", "h", "a@new.example", resolver)).result == "pass"


# --- DKIM (RFC 6376, RFC 8463) -------------------------------------------------------------


def rsa_key() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, "v=DKIM1; k=rsa; p=" + base64.b64encode(public).decode()


def ed25519_key() -> tuple[bytes, str]:
    key = nacl.signing.SigningKey.generate()
    private = base64.b64encode(bytes(key))
    public = base64.b64encode(bytes(key.verify_key)).decode()
    return private, "v=DKIM1; k=ed25519; p=" + public


@pytest.fixture(scope="module")
def keys():
    return {"rsa": rsa_key(), "ed25519": ed25519_key()}


def sign(message: bytes, selector: str, domain: str, private: bytes, algorithm: str) -> bytes:
    header = dkim.sign(message, selector.encode(), domain.encode(), private,
                       signature_algorithm=algorithm.encode(),
                       include_headers=[b"from", b"to", b"subject", b"message-id"])
    return header + message


@pytest.fixture
def dkim_zone(zone, keys):
    zone["rsa1._domainkey.example.com"] = {"TXT": [keys["rsa"][1]]}
    zone["ed1._domainkey.example.com"] = {"TXT": [keys["ed25519"][1]]}
    return zone


@pytest.mark.parametrize(("kind", "selector", "algorithm"), [
    ("rsa", "rsa1", "rsa-sha256"), ("ed25519", "ed1", "ed25519-sha256"),
])
async def test_dkim_pass(dkim_zone, resolver, keys, kind, selector, algorithm):
    signed = sign(MESSAGE, selector, "example.com", keys[kind][0], algorithm)
    assert await verify_dkim(signed, resolver) == [
        DkimResult("example.com", selector, "pass", algorithm)]


async def test_dkim_both_signatures_reported_in_order(dkim_zone, resolver, keys):
    signed = sign(MESSAGE, "rsa1", "example.com", keys["rsa"][0], "rsa-sha256")
    signed = sign(signed, "ed1", "example.com", keys["ed25519"][0], "ed25519-sha256")
    results = await verify_dkim(signed, resolver)
    assert [(r.selector, r.result) for r in results] == [("ed1", "pass"), ("rsa1", "pass")]


async def test_dkim_tampered_body_fails(dkim_zone, resolver, keys):
    signed = sign(MESSAGE, "rsa1", "example.com", keys["rsa"][0], "rsa-sha256")
    [res] = await verify_dkim(signed.replace(b"Hello Bob.", b"Hello Eve."), resolver)
    assert res.result == "fail" and "body hash" in res.reason


async def test_dkim_tampered_header_fails(dkim_zone, resolver, keys):
    signed = sign(MESSAGE, "ed1", "example.com", keys["ed25519"][0], "ed25519-sha256")
    [res] = await verify_dkim(signed.replace(b"Subject: hello", b"Subject: pay"), resolver)
    assert res.result == "fail"


async def test_dkim_key_missing_is_permerror(dkim_zone, resolver, keys):
    signed = sign(MESSAGE, "gone", "example.com", keys["rsa"][0], "rsa-sha256")
    [res] = await verify_dkim(signed, resolver)
    assert (res.result, res.reason) == ("permerror", "no key")


async def test_dkim_key_lookup_failure_is_temperror(dkim_zone, resolver, keys):
    dkim_zone.broken.add("rsa1._domainkey.example.com")
    signed = sign(MESSAGE, "rsa1", "example.com", keys["rsa"][0], "rsa-sha256")
    [res] = await verify_dkim(signed, resolver)
    assert res.result == "temperror"


async def test_dkim_revoked_key_is_permerror(dkim_zone, resolver, keys):
    dkim_zone["rsa1._domainkey.example.com"] = {"TXT": ["v=DKIM1; k=rsa; p="]}
    signed = sign(MESSAGE, "rsa1", "example.com", keys["rsa"][0], "rsa-sha256")
    [res] = await verify_dkim(signed, resolver)
    assert res.result == "permerror"


async def test_dkim_wrong_key_fails(dkim_zone, resolver, keys):
    dkim_zone["rsa1._domainkey.example.com"] = {"TXT": [rsa_key()[1]]}
    signed = sign(MESSAGE, "rsa1", "example.com", keys["rsa"][0], "rsa-sha256")
    [res] = await verify_dkim(signed, resolver)
    assert res.result == "fail"


async def test_dkim_malformed_signature_is_permerror(dkim_zone, resolver):
    [res] = await verify_dkim(b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com\r\n"
                              + MESSAGE, resolver)
    assert res.result == "permerror"


async def test_dkim_unsigned_message(dkim_zone, resolver):
    assert await verify_dkim(MESSAGE, resolver) == []


# --- ARC (RFC 8617) ------------------------------------------------------------------------


async def test_arc(dkim_zone, resolver, keys):
    assert await verify_arc(MESSAGE, resolver) == ArcResult("none")
    received = b"Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=example.com\r\n"
    message = received + MESSAGE
    arc_headers = dkim.arc_sign(message, b"rsa1", b"example.com", keys["rsa"][0],
                                b"mx.example.com")
    sealed = b"".join(arc_headers) + message
    assert await verify_arc(sealed, resolver) == ArcResult("pass", 1)
    broken = await verify_arc(sealed.replace(b"Hello Bob.", b"Hello Eve."), resolver)
    assert broken.chain == "fail"
    dkim_zone.broken.add("rsa1._domainkey.example.com")
    assert (await verify_arc(sealed, resolver)).chain == "temperror"


# --- DMARC (RFC 7489) ----------------------------------------------------------------------


def spf_pass(domain: str) -> SpfResult:
    return SpfResult("pass", domain, "", "mailfrom", f"bounce@{domain}")


def dkim_pass(domain: str) -> list[DkimResult]:
    return [DkimResult(domain, "s1", "pass", "rsa-sha256")]


@pytest.fixture
def dmarc_zone(zone):
    zone.update({
        "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.com"]},
        "_dmarc.strict.example": {"TXT": ["v=DMARC1; p=quarantine; adkim=s; aspf=s"]},
        "_dmarc.lax.example": {"TXT": ["v=DMARC1; p=none"]},
        "_dmarc.two.example": {"TXT": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]},
        "_dmarc.sub.example.co.uk": {"TXT": ["v=DMARC1; p=reject; pct=50"]},
    })
    zone.broken.add("_dmarc.broken.example")
    return zone


async def test_dmarc_pass_via_aligned_dkim(dmarc_zone, resolver):
    res = await evaluate_dmarc("example.com", None, dkim_pass("example.com"), resolver)
    assert res == DmarcResult("pass", "reject", "example.com", "example.com", False, True)


async def test_dmarc_relaxed_alignment_uses_organizational_domain(dmarc_zone, resolver):
    res = await evaluate_dmarc("news.example.com", spf_pass("bounces.example.com"),
                               dkim_pass("mail.example.com"), resolver)
    assert (res.result, res.spf_aligned, res.dkim_aligned) == ("pass", True, True)
    # the record came from the organizational domain: sp= applies to the subdomain
    assert (res.policy, res.record_domain) == ("quarantine", "example.com")


async def test_dmarc_fail_reject(dmarc_zone, resolver):
    res = await evaluate_dmarc("example.com", spf_pass("evil.example"),
                               dkim_pass("evil.example"), resolver)
    assert (res.result, res.policy) == ("fail", "reject")


async def test_dmarc_failed_dkim_does_not_count(dmarc_zone, resolver):
    dkim_results = [DkimResult("example.com", "s1", "fail", "rsa-sha256")]
    res = await evaluate_dmarc("example.com", None, dkim_results, resolver)
    assert res.result == "fail"


async def test_dmarc_strict_alignment(dmarc_zone, resolver):
    sub = await evaluate_dmarc("strict.example", spf_pass("mail.strict.example"),
                               dkim_pass("mail.strict.example"), resolver)
    assert (sub.result, sub.policy) == ("fail", "quarantine")
    exact = await evaluate_dmarc("strict.example", spf_pass("strict.example"), [], resolver)
    assert (exact.result, exact.spf_aligned) == ("pass", True)


async def test_dmarc_subdomain_policy(dmarc_zone, resolver):
    res = await evaluate_dmarc("x.y.example.com", None, [], resolver)
    assert (res.result, res.policy, res.record_domain) == ("fail", "quarantine", "example.com")


async def test_dmarc_public_suffix_list(dmarc_zone, resolver):
    # example.co.uk is the organizational domain (co.uk is a public suffix)
    res = await evaluate_dmarc("sub.example.co.uk", None, dkim_pass("example.co.uk"), resolver)
    assert (res.result, res.policy, res.pct) == ("pass", "reject", 50)
    other = await evaluate_dmarc("sub.example.co.uk", None, dkim_pass("other.co.uk"), resolver)
    assert other.result == "fail"


async def test_dmarc_none(dmarc_zone, resolver):
    assert (await evaluate_dmarc("nodmarc.example", None, [], resolver)).result == "none"
    assert (await evaluate_dmarc("two.example", None, [], resolver)).result == "none"
    res = await evaluate_dmarc("lax.example", None, [], resolver)
    assert (res.result, res.policy) == ("fail", "none")


async def test_dmarc_temperror(dmarc_zone, resolver):
    res = await evaluate_dmarc("broken.example", None, dkim_pass("broken.example"), resolver)
    assert res.result == "temperror"


async def test_dmarc_after_real_checks(dmarc_zone, dkim_zone, spf_zone, resolver, keys):
    signed = sign(MESSAGE, "ed1", "example.com", keys["ed25519"][0], "ed25519-sha256")
    spf = await check_spf("203.0.113.1", "client.example", "bounce@example.com", resolver)
    dkim_results = await verify_dkim(signed, resolver)
    res = await evaluate_dmarc("example.com", spf, dkim_results, resolver)
    assert (spf.result, res.result, res.dkim_aligned) == ("fail", "pass", True)


# --- iprev (RFC 8601 §3) -------------------------------------------------------------------


@pytest.fixture
def iprev_zone(zone):
    zone.update({
        reverse_name("192.0.2.10"): {"PTR": ["mail.example.com"]},
        "mail.example.com": {"A": ["192.0.2.10"], "AAAA": ["2001:db8::10"]},
        reverse_name("2001:db8::10"): {"PTR": ["mail.example.com"]},
        reverse_name("192.0.2.11"): {"PTR": ["liar.example.com"]},
        "liar.example.com": {"A": ["192.0.2.99"]},
        reverse_name("192.0.2.12"): {"PTR": ["broken.example"]},
    })
    zone.broken.update({"broken.example", reverse_name("192.0.2.13")})
    return zone


@pytest.mark.parametrize(("ip", "expected"), [
    ("192.0.2.10", IprevResult("pass", "192.0.2.10", "mail.example.com")),
    ("2001:db8::10", IprevResult("pass", "2001:db8::10", "mail.example.com")),
    ("::ffff:192.0.2.10", IprevResult("pass", "192.0.2.10", "mail.example.com")),
    ("192.0.2.11", IprevResult("fail", "192.0.2.11", "liar.example.com")),
    ("192.0.2.14", IprevResult("fail", "192.0.2.14")),
    ("192.0.2.12", IprevResult("temperror", "192.0.2.12", "broken.example")),
    ("192.0.2.13", IprevResult("temperror", "192.0.2.13")),
])
async def test_iprev(iprev_zone, resolver, ip, expected):
    assert await check_iprev(ip, resolver) == expected


# --- Authentication-Results (RFC 8601) -----------------------------------------------------


def test_authentication_results_text():
    value = authentication_results(
        "mx.example.net",
        spf=SpfResult("pass", "example.com", "", "mailfrom", "bounce@example.com"),
        dkim=[DkimResult("example.com", "ed1", "pass", "ed25519-sha256"),
              DkimResult("example.com", "rsa1", "fail", "rsa-sha256", "body hash mismatch")],
        arc=ArcResult("none"),
        dmarc=DmarcResult("pass", "reject", "example.com", "example.com", True, True),
        iprev=IprevResult("pass", "192.0.2.10", "mail.example.com"),
    )
    assert value == (
        "mx.example.net;\r\n"
        "\tiprev=pass policy.iprev=192.0.2.10 (mail.example.com);\r\n"
        "\tspf=pass smtp.mailfrom=bounce@example.com;\r\n"
        "\tdkim=pass header.d=example.com header.s=ed1 header.a=ed25519-sha256;\r\n"
        '\tdkim=fail reason="body hash mismatch" header.d=example.com header.s=rsa1 '
        "header.a=rsa-sha256;\r\n"
        "\tarc=none;\r\n"
        "\tdmarc=pass (p=reject) header.from=example.com"
    )
    # a third-party RFC 8601 parser reads it back
    parsed = authres.AuthenticationResultsHeader.parse(
        "Authentication-Results: " + value.replace("\r\n\t", " "))
    assert parsed.authserv_id == "mx.example.net"
    assert [r.method for r in parsed.results] == ["iprev", "spf", "dkim", "dkim", "arc", "dmarc"]


def test_authentication_results_helo_none_and_quoting():
    assert authentication_results("mx.example.net") == "mx.example.net; none"
    value = authentication_results(
        "mx.example.net",
        spf=SpfResult("softfail", "helo.example", 'not "allowed"', "helo",
                      "postmaster@helo.example"),
        dkim=[])
    assert value == ('mx.example.net;\r\n\tspf=softfail reason="not \\"allowed\\"" '
                     "smtp.helo=helo.example;\r\n\tdkim=none")
    odd = authentication_results("h", spf=SpfResult("pass", "x.example", "", "mailfrom",
                                                   '"a b"@x.example'))
    assert odd == 'h;\r\n\tspf=pass smtp.mailfrom="\\"a b\\"@x.example"'


# --- the resolver ------------------------------------------------------------------------


async def test_resolver_lookups(zone, resolver):
    zone.update({
        "example.org": {"TXT": ["v=spf1 -all", "x" * 600], "MX": [(20, "b.example.org"),
                                                                 (10, "a.example.org")],
                        "A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]},
        "www.example.org": {"CNAME": "example.org"},
        "null.example.org": {"MX": [(0, ".")]},
        reverse_name("192.0.2.1"): {"PTR": ["example.org"]},
        "_25._tcp.example.org": {"TLSA": ["3 1 1 " + "ab" * 32]},
        "deep.empty.example.org": {"A": ["192.0.2.2"]},
    })
    assert sorted(await resolver.txt("example.org")) == ["v=spf1 -all", "x" * 600]
    assert await resolver.mx("example.org") == [(10, "a.example.org"), (20, "b.example.org")]
    assert await resolver.mx("null.example.org") == [(0, ".")]
    assert await resolver.a("www.example.org") == ["192.0.2.1"]
    assert await resolver.aaaa("example.org") == ["2001:db8::1"]
    assert await resolver.ptr("192.0.2.1") == ["example.org"]
    tlsa = await resolver.tlsa("_25._tcp.example.org")
    assert [(r.usage, r.selector, r.mtype, r.data) for r in tlsa.records] == [
        (3, 1, 1, b"\xab" * 32)]
    assert tlsa.authentic is False
    assert await resolver.a("nothere.example.org") == []       # NXDOMAIN
    assert await resolver.txt("empty.example.org") == []       # empty non-terminal
    assert await resolver.aaaa("www.example.org") == ["2001:db8::1"]  # via the CNAME
    assert await resolver.txt("deep.empty.example.org") == []  # NODATA


async def test_resolver_ad_bit_with_dnssec(dns_zone):  # noqa: F811
    port, zone = dns_zone
    zone["_25._tcp.mx.example"] = {"TLSA": ["3 1 1 " + "cd" * 32]}
    zone.authentic = True
    config = ResolverConfig([f"127.0.0.1:{port}"], timeout=1.0, attempts=1, dnssec=True)
    assert (await Resolver(config).tlsa("_25._tcp.mx.example")).authentic is True


async def test_resolver_temporary_failures(zone, resolver):
    from stalwart_mp.dns.resolver import DnsTempError

    zone.broken.add("broken.example")
    with pytest.raises(DnsTempError, match="broken.example"):
        await resolver.txt("broken.example")
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # never answers
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        mute = Resolver(ResolverConfig([f"127.0.0.1:{port}"], timeout=0.2, attempts=2))
        with pytest.raises(DnsTempError, match="timed out"):
            await mute.a("example.org")


async def test_resolver_cache_keeps_answers_for_their_ttl(dns_zone):  # noqa: F811
    port, zone = dns_zone
    zone["cached.example"] = {"A": ["192.0.2.1"]}
    cached = Resolver(ResolverConfig([f"127.0.0.1:{port}"], timeout=1.0, cache_size=10))
    assert await cached.a("cached.example") == ["192.0.2.1"]
    zone["cached.example"] = {"A": ["192.0.2.2"]}
    assert await cached.a("cached.example") == ["192.0.2.1"]
    assert zone.queries.count(("cached.example", "A")) == 1


def test_resolver_settings():
    import stalwart_mp.dns.settings  # noqa: F401  (registers [resolver])
    from stalwart_mp.config.schema import SCHEMA

    nameservers = SCHEMA.match(("resolver", "nameservers"))
    assert nameservers.default == []
    assert nameservers.type.parse(["127.0.0.1:5353", "192.0.2.53", "[::1]:53", "::1"])
    with pytest.raises(ValueError, match="name server address"):
        nameservers.type.parse(["localhost:53"])
    assert SCHEMA.match(("resolver", "timeout")).default == 5.0
    assert SCHEMA.match(("resolver", "attempts")).default == 2
    assert SCHEMA.match(("resolver", "cache-size")).default == 10000
