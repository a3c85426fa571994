"""DANE (RFC 7672) towards a loopback MX: TLSA records from the loopback DNS server, which
sets the AD bit (``zone.authentic``) for a resolver that asks (``resolver.dnssec``)."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stalwart_mp.smtp.outbound import tlsrpt
from stalwart_mp.smtp.queue import manage
from tests.dns_server import dns_zone  # noqa: F401  (fixture)
from tests.smtp.outbound.pki import LocalCA
from tests.smtp.outbound.sink import Sink
from tests.smtp.outbound.test_runner import Env, config, tls_report_rows, until
from tests.smtp.outbound.test_runner import zone as zone  # noqa: PLC0414  (fixture)


def _spki_sha256(cert_file: str) -> str:
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


@pytest.fixture
def sinks():
    started: list[Sink] = []

    def make(**kwargs) -> Sink:
        s = Sink(**kwargs).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


async def _env(tmp_path, zone, sink, authentic: bool = True) -> Env:
    port, z = zone
    z["dane.test"] = {"MX": [(10, "mx.dane.test")]}
    z["mx.dane.test"] = {"A": ["127.0.0.1"]}
    z.authentic = authentic
    return await Env(config(tmp_path, port, sink.port, resolver={"dnssec": True})).open()


async def _attempted(env: Env, qid: int) -> bool:
    m = await manage.get_message(env.services.data, qid)
    return m is not None and m.attempts >= 1


async def test_matching_dane_ee_record_delivers_over_tls(tmp_path, zone, sinks):
    sink = sinks(tls=True, name="mx.dane.test")
    zone[1][f"_{sink.port}._tcp.mx.dane.test"] = {
        "TLSA": [f"3 1 1 {_spki_sha256(sink.cert_file)}"]}
    env = await _env(tmp_path, zone, sink)
    try:
        await env.runner()
        await env.queue(["bob@dane.test"])
        await until(lambda: sink.count() == 1, "the delivery")
        assert sink.messages[0].tls
        [counts] = await tls_report_rows(env)
        [(entry, n)] = counts.entries
        assert entry[0] == "tlsa" and entry[3] == "" and n == 1
    finally:
        await env.close()


async def test_mismatching_tlsa_record_stops_delivery(tmp_path, zone, sinks):
    sink = sinks(tls=True, name="mx.dane.test")
    zone[1][f"_{sink.port}._tcp.mx.dane.test"] = {"TLSA": ["3 1 1 " + "00" * 32]}
    env = await _env(tmp_path, zone, sink)
    try:
        await env.runner()
        qid = await env.queue(["bob@dane.test"])
        await until(lambda: _attempted(env, qid), "the first attempt")
        m = await manage.get_message(env.services.data, qid)
        assert m.recipients[0].status == "queued"
        assert "DANE: the certificate of mx.dane.test matches no TLSA record" in \
            m.recipients[0].reply
        assert sink.count() == 0 and sink.transactions == 0
        [counts] = await tlsrpt.pending_days(env.services.data, tlsrpt.day_of(time.time()) + 1)
        assert [e[3] for e, _ in counts.entries] == ["validation-failure"]
    finally:
        await env.close()


async def test_tlsa_records_of_an_insecure_mx_are_not_looked_up(tmp_path, zone, sinks):
    """RFC 7672 §2.2.1: an MX answer without the AD bit may have been forged, so the TLSA
    records of the hosts it names prove nothing: no TLSA lookup, opportunistic TLS (here a
    mismatching record that would stop a DANE delivery is never seen)."""
    sink = sinks(tls=True, name="mx.dane.test")
    zone[1][f"_{sink.port}._tcp.mx.dane.test"] = {"TLSA": ["3 1 1 " + "00" * 32]}
    zone[1].insecure.add("dane.test")    # the MX answer is not vouched for; the TLSA one is
    env = await _env(tmp_path, zone, sink)
    try:
        await env.runner()
        await env.queue(["bob@dane.test"])
        await until(lambda: sink.count() == 1, "the (opportunistic) delivery")
        assert sink.messages[0].tls
        assert ("dane.test", "MX") in zone[1].queries
        assert not [q for q in zone[1].queries if q[1] == "TLSA"]
    finally:
        await env.close()


async def test_unauthenticated_tlsa_records_are_ignored(tmp_path, zone, sinks):
    sink = sinks(tls=True, name="mx.dane.test")
    zone[1][f"_{sink.port}._tcp.mx.dane.test"] = {"TLSA": ["3 1 1 " + "00" * 32]}
    env = await _env(tmp_path, zone, sink, authentic=False)   # no AD bit: not DANE
    try:
        await env.runner()
        await env.queue(["bob@dane.test"])
        await until(lambda: sink.count() == 1, "the (opportunistic) delivery")
    finally:
        await env.close()


async def test_dane_ta_anchor_certificate(tmp_path, zone, sinks):
    ca = LocalCA()
    sink = sinks(tls=True, context=ca.server_context("mx.dane.test"))
    anchor = ca.cert.public_bytes(serialization.Encoding.DER).hex()
    zone[1][f"_{sink.port}._tcp.mx.dane.test"] = {"TLSA": [f"2 0 0 {anchor}"]}
    env = await _env(tmp_path, zone, sink)
    try:
        await env.runner()
        await env.queue(["bob@dane.test"])
        await until(lambda: sink.count() == 1, "the delivery")
        assert sink.messages[0].tls
    finally:
        await env.close()


async def test_dane_ta_anchor_with_another_name_is_refused(tmp_path, zone, sinks):
    ca = LocalCA()
    sink = sinks(tls=True, context=ca.server_context("other.example"))
    anchor = ca.cert.public_bytes(serialization.Encoding.DER).hex()
    zone[1][f"_{sink.port}._tcp.mx.dane.test"] = {"TLSA": [f"2 0 0 {anchor}"]}
    env = await _env(tmp_path, zone, sink)
    try:
        await env.runner()
        qid = await env.queue(["bob@dane.test"])
        await until(lambda: _attempted(env, qid), "the first attempt")
        m = await manage.get_message(env.services.data, qid)
        assert "matches no TLSA record" in m.recipients[0].reply   # RFC 7672 §3.2.2 names
        assert sink.count() == 0
    finally:
        await env.close()


def _ca_spki_sha256(ca: LocalCA) -> str:
    spki = ca.cert.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


async def test_dane_ta_digest_of_a_presented_anchor(tmp_path, zone, sinks):
    """§3.1.2: "2 1 1" names the CA's key; the server presents the CA in its chain."""
    ca = LocalCA()
    sink = sinks(tls=True, context=ca.server_context("mx.dane.test", with_ca=True))
    zone[1][f"_{sink.port}._tcp.mx.dane.test"] = {"TLSA": [f"2 1 1 {_ca_spki_sha256(ca)}"]}
    env = await _env(tmp_path, zone, sink)
    try:
        await env.runner()
        await env.queue(["bob@dane.test"])
        await until(lambda: sink.count() == 1, "the delivery")
        assert sink.messages[0].tls
    finally:
        await env.close()


async def test_dane_ta_digest_needs_the_anchor_in_the_chain(tmp_path, zone, sinks):
    """A digest-only DANE-TA record cannot be checked when the server does not present the
    anchor: no delivery (the anchor's certificate is not known)."""
    ca = LocalCA()
    sink = sinks(tls=True, context=ca.server_context("mx.dane.test"))   # leaf only
    zone[1][f"_{sink.port}._tcp.mx.dane.test"] = {"TLSA": [f"2 1 1 {_ca_spki_sha256(ca)}"]}
    env = await _env(tmp_path, zone, sink)
    try:
        await env.runner()
        qid = await env.queue(["bob@dane.test"])
        await until(lambda: _attempted(env, qid), "the first attempt")
        m = await manage.get_message(env.services.data, qid)
        assert "matches no TLSA record" in m.recipients[0].reply
        assert sink.count() == 0
    finally:
        await env.close()
