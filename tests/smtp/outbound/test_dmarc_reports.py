"""DMARC aggregate reports (RFC 7489 §7.2): results counted per day, reported daily to the
rua of the policy domain — locally, or to a remote address that agreed (§7.1)."""
from __future__ import annotations

import base64
import gzip
import re
import time
import xml.etree.ElementTree as ET

import pytest

from stalwart_mp.dns.resolver import Resolver
from stalwart_mp.smtp.checks.dkim_verify import DkimResult
from stalwart_mp.smtp.checks.dmarc import DmarcResult
from stalwart_mp.smtp.checks.spf import SpfResult
from stalwart_mp.smtp.outbound import dmarc_reports
from stalwart_mp.smtp.outbound.runner import Runner
from tests.dns_server import dns_zone  # noqa: F401  (fixture)
from tests.smtp.outbound.test_runner import env, sink, until  # noqa: F401  (fixtures)
from tests.smtp.outbound.test_runner import zone as zone  # noqa: PLC0414  (fixture)

FAIL = DmarcResult("fail", "reject", "remote.test", "remote.test", False, False)
PASS = DmarcResult("pass", "reject", "remote.test", "remote.test", True, True)
SPF = SpfResult("fail", "remote.test", identity="ann@remote.test")
DKIM = [DkimResult("remote.test", "sel1", "pass", "ed25519-sha256")]


def _attachment(mail: bytes) -> ET.Element:
    b64 = re.search(rb"Content-Disposition: attachment;[^\r]*\r\n\r\n(.+?)\r\n--", mail,
                    re.DOTALL).group(1)
    return ET.fromstring(gzip.decompress(base64.b64decode(b64)))


async def _record_day(data) -> int:
    yesterday = time.time() - 86400
    for _ in range(2):
        await dmarc_reports.record(data, FAIL, SPF, DKIM, "192.0.2.7", "ann@remote.test",
                                   "reject", when=yesterday)
    await dmarc_reports.record(data, PASS, SPF, DKIM, "192.0.2.8", "ann@remote.test", None,
                               when=yesterday)
    await dmarc_reports.record(data, DmarcResult("none", "none", "x.test"), None, [],
                               "192.0.2.9", "", None, when=yesterday)  # no record: none
    return dmarc_reports.day_of(yesterday)


def _reporter(e) -> Runner:
    """A runner object that is not running: its report pass is called by the test."""
    return Runner.from_config(e.services, e.cfg, Resolver.from_config(e.cfg))


QUIET = {"dmarc-reports": {"enabled": False}, "tls-reports": {"enabled": False}}


@pytest.mark.parametrize("env", [QUIET], indirect=True)
async def test_daily_report_to_a_local_rua(env, zone, sink):  # noqa: F811
    zone[1]["_dmarc.remote.test"] = {
        "TXT": ["v=DMARC1; p=reject; adkim=s; rua=mailto:alice@example.org!10m"]}
    # example.org (our domain) agreed to receive remote.test's reports (§7.1)
    zone[1]["remote.test._report._dmarc.example.org"] = {"TXT": ["v=DMARC1"]}
    data = env.services.data
    day = await _record_day(data)
    [rows] = await dmarc_reports.pending_days(data, day + 1)
    assert rows.domain == "remote.test" and sorted(n for _, n in rows.rows) == [1, 2]
    runner = _reporter(env)
    assert await runner.send_dmarc_reports() == 1      # today: yesterday is finished
    assert await runner.send_dmarc_reports() == 0      # once only
    [mail] = await env.inbox()
    assert b"Subject: Report Domain: remote.test Submitter: mail.example.org" in mail
    feedback = _attachment(mail)
    assert feedback.findtext("report_metadata/org_name") == "mail.example.org"
    assert feedback.findtext("policy_published/domain") == "remote.test"
    assert feedback.findtext("policy_published/p") == "reject"
    assert feedback.findtext("policy_published/adkim") == "s"
    records = {r.findtext("row/source_ip"): r for r in feedback.findall("record")}
    failing = records["192.0.2.7"]
    assert failing.findtext("row/count") == "2"
    assert failing.findtext("row/policy_evaluated/disposition") == "reject"
    assert failing.findtext("row/policy_evaluated/dkim") == "fail"
    assert failing.findtext("identifiers/header_from") == "remote.test"
    assert failing.findtext("auth_results/dkim/selector") == "sel1"
    assert failing.findtext("auth_results/spf/result") == "fail"
    assert records["192.0.2.8"].findtext("row/policy_evaluated/spf") == "pass"
    assert await dmarc_reports.pending_days(data, 99991231) == []   # sent: dropped


@pytest.mark.parametrize("env", [QUIET], indirect=True)
async def test_external_rua_needs_the_receivers_consent(env, zone, sink):  # noqa: F811
    z = zone[1]
    z["_dmarc.remote.test"] = {"TXT": ["v=DMARC1; p=none; rua=mailto:agg@reports.test"]}
    z["reports.test"] = {"MX": [(10, "mx.remote.test")]}
    data = env.services.data
    await env.runner()   # delivers the queued report (its own report pass is off)
    runner = _reporter(env)
    await _record_day(data)
    assert await runner.send_dmarc_reports() == 0       # no consent record: not sent
    await _record_day(data)
    z["remote.test._report._dmarc.reports.test"] = {"TXT": ["v=DMARC1"]}
    runner = _reporter(env)   # a fresh resolver: the "no consent" answer was cached
    assert await runner.send_dmarc_reports() == 1
    await until(lambda: sink.count() == 1, "the report at the receiver's MX")
    got = sink.messages[0]
    assert got.rcpts == ["agg@reports.test"] and got.mail_from == "postmaster@mail.example.org"
    assert _attachment(got.data).findtext("policy_published/p") == "none"
