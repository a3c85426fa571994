"""MTA-STS (RFC 8461) and TLS reporting (RFC 8460) against loopback servers.

The policy host ``mta-sts.secure.test`` is an aiohttp HTTPS server with a certificate from
a test CA (``outbound.ca-file``); the MX is the loopback sink, with either a certificate
from that CA for ``mx.secure.test`` or a self-signed one (not trusted).
"""
from __future__ import annotations

import base64
import gzip
import json
import re
import time

import pytest
from aiohttp import web

from stalwart_mp.smtp.outbound import tlsrpt
from stalwart_mp.smtp.outbound.mta_sts import PolicyError, parse_policy, parse_txt
from stalwart_mp.smtp.queue import manage
from tests.dns_server import dns_zone  # noqa: F401  (fixture)
from tests.harness import free_port
from tests.smtp.outbound.pki import LocalCA
from tests.smtp.outbound.sink import Sink
from tests.smtp.outbound.test_runner import Env, config, tls_report_rows, until
from tests.smtp.outbound.test_runner import zone as zone  # noqa: PLC0414  (fixture)


def test_policy_text_and_mx_patterns():
    p = parse_policy("example.com", "20260101", "version: STSv1\r\nmode: enforce\r\n"
                     "mx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n", 0)
    assert (p.mode, p.max_age) == ("enforce", 604800)
    assert p.matches("MAIL.example.com.") and p.matches("mx1.example.net")
    assert not p.matches("a.b.example.net") and not p.matches("example.net")
    assert not p.matches("evil.example.com")
    with pytest.raises(PolicyError):
        parse_policy("example.com", "1", "version: STSv1\nmode: enforce\nmax_age: 1\n", 0)
    assert parse_txt(["v=STSv1; id=2026-01-01;"]) is None   # §3.1: id is 1*32 alphanumerics
    assert parse_txt(["v=STSv1; id=abc123"]) == "abc123"
    assert parse_txt(["v=STSv1; id=a", "v=STSv1; id=b"]) is None  # two records: none


@pytest.fixture
def ca():
    return LocalCA()


@pytest.fixture
async def policy_server(ca):
    """mta-sts.secure.test on a loopback HTTPS port; ``state["policy"]`` is served."""
    state = {"policy": "version: STSv1\nmode: enforce\nmx: mx.secure.test\nmax_age: 86400\n",
             "hits": 0}

    async def handler(_request):
        state["hits"] += 1
        return web.Response(text=state["policy"], content_type="text/plain")

    app = web.Application()
    app.router.add_get("/.well-known/mta-sts.txt", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port,
                       ssl_context=ca.server_context("mta-sts.secure.test"))
    await site.start()
    state["port"] = port
    yield state
    await runner.cleanup()


@pytest.fixture
def sts_zone(zone):
    port, z = zone
    z["secure.test"] = {"MX": [(10, "mx.secure.test")]}
    z["mx.secure.test"] = {"A": ["127.0.0.1"]}
    z["mta-sts.secure.test"] = {"A": ["127.0.0.1"]}
    z["_mta-sts.secure.test"] = {"TXT": ["v=STSv1; id=policy1"]}
    z["_smtp._tls.secure.test"] = {"TXT": ["v=TLSRPTv1; rua=mailto:alice@example.org"]}
    return port, z


async def _env(tmp_path, sts_zone, sink, ca, policy_server) -> Env:
    return await Env(config(tmp_path, sts_zone[0], sink.port, **{
        "ca-file": ca.ca_file, "mta-sts": {"port": policy_server["port"]},
        "tls-reports": {"from": "postmaster@example.org"}})).open()


async def _attempted(env: Env, qid: int) -> bool:
    m = await manage.get_message(env.services.data, qid)
    return m is not None and m.attempts >= 1


async def test_enforce_with_an_untrusted_certificate_is_not_delivered_and_reported(
        tmp_path, sts_zone, ca, policy_server):
    sink = Sink(tls=True, name="mx.secure.test").start()   # self-signed: not trusted
    env = await _env(tmp_path, sts_zone, sink, ca, policy_server)
    try:
        runner = await env.runner()
        qid = await env.queue(["bob@secure.test"])
        await until(lambda: _attempted(env, qid), "the first attempt")
        m = await manage.get_message(env.services.data, qid)
        assert m.recipients[0].status == "queued"
        assert "MTA-STS policy of secure.test not met" in m.recipients[0].reply
        assert sink.count() == 0 and sink.transactions == 0
        assert policy_server["hits"] == 1
        # the failure is counted for the TLS report ...
        [counts] = await tlsrpt.pending_days(env.services.data, tlsrpt.day_of(time.time()) + 1)
        assert counts.domain == "secure.test"
        failures = [e for e, _n in counts.entries if e[3]]
        assert failures and failures[0][3] == "certificate-not-trusted"
        assert failures[0][4] == "mx.secure.test"
        # ... and once the day is over, reported to the rua of _smtp._tls.secure.test
        await manage.cancel(env.services.data, qid)
        sent = await runner.send_tls_reports(today=tlsrpt.day_of(time.time()) + 1)
        assert sent == 1
        [report_mail] = await env.inbox()
        assert b'multipart/report; report-type="tlsrpt"' in report_mail
        assert b"TLS-Report-Domain: secure.test" in report_mail
        attachment = re.search(rb"Content-Disposition: attachment;[^\r]*\r\n\r\n(.+?)\r\n--",
                               report_mail, re.DOTALL).group(1)
        report = json.loads(gzip.decompress(base64.b64decode(attachment)))
        [policy] = report["policies"]
        assert policy["policy"]["policy-type"] == "sts"
        assert policy["policy"]["policy-domain"] == "secure.test"
        assert policy["policy"]["mx-host"] == ["mx.secure.test"]
        assert policy["summary"]["total-failure-session-count"] >= 1
        assert policy["failure-details"][0]["result-type"] == "certificate-not-trusted"
        assert await tlsrpt.pending_days(env.services.data, 99991231) == []
    finally:
        await env.close()
        sink.stop()


async def test_enforce_with_a_valid_certificate_delivers_over_verified_tls(
        tmp_path, sts_zone, ca, policy_server):
    sink = Sink(tls=True, context=ca.server_context("mx.secure.test")).start()
    env = await _env(tmp_path, sts_zone, sink, ca, policy_server)
    try:
        await env.runner()
        await env.queue(["bob@secure.test"])
        await until(lambda: sink.count() == 1, "the delivery")
        assert sink.messages[0].tls
        [counts] = await tls_report_rows(env)
        assert [(e[3], n) for e, n in counts.entries] == [("", 1)]   # one success
    finally:
        await env.close()
        sink.stop()


async def test_enforce_skips_an_mx_not_in_the_policy(tmp_path, sts_zone, ca, policy_server):
    sink = Sink(tls=True, context=ca.server_context("mx.secure.test")).start()
    policy_server["policy"] = "version: STSv1\nmode: enforce\nmx: other.secure.test\n" \
                              "max_age: 86400\n"
    env = await _env(tmp_path, sts_zone, sink, ca, policy_server)
    try:
        await env.runner()
        qid = await env.queue(["bob@secure.test"])
        await until(lambda: _attempted(env, qid), "the first attempt")
        m = await manage.get_message(env.services.data, qid)
        assert "not an MX host of the MTA-STS policy" in m.recipients[0].reply
        assert sink.connections == 0
    finally:
        await env.close()
        sink.stop()


async def test_testing_mode_reports_but_delivers(tmp_path, sts_zone, ca, policy_server):
    sink = Sink(tls=True, name="mx.secure.test").start()   # self-signed
    policy_server["policy"] = policy_server["policy"].replace("enforce", "testing")
    env = await _env(tmp_path, sts_zone, sink, ca, policy_server)
    try:
        await env.runner()
        await env.queue(["bob@secure.test"])
        await until(lambda: sink.count() == 1, "the delivery")
        assert sink.messages[0].tls   # opportunistic TLS after the failed verification
        [counts] = await tls_report_rows(env)
        assert [e[3] for e, _ in counts.entries] == ["certificate-not-trusted"]
    finally:
        await env.close()
        sink.stop()


async def test_cached_policy_survives_an_unreachable_policy_host(
        tmp_path, sts_zone, ca, policy_server):
    sink = Sink(tls=True, name="mx.secure.test").start()   # self-signed
    env = await _env(tmp_path, sts_zone, sink, ca, policy_server)
    try:
        runner = await env.runner()
        first = await env.queue(["bob@secure.test"])
        await until(lambda: _attempted(env, first), "the first attempt")
        # the attacker blocks the policy host: the cached policy still applies
        sts_zone[1]["mta-sts.secure.test"] = {"A": ["127.0.0.2"]}
        runner.mta_sts._memory.clear()   # force a read of the store's copy
        second = await env.queue(["carol@secure.test"])
        await until(lambda: _attempted(env, second), "the second attempt")
        m = await manage.get_message(env.services.data, second)
        assert "MTA-STS policy of secure.test not met" in m.recipients[0].reply
        assert sink.count() == 0
    finally:
        await env.close()
        sink.stop()
