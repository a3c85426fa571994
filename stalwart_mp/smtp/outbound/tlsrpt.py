"""SMTP TLS reporting (RFC 8460): count TLS sessions per recipient domain, report daily.

Every delivery attempt to a domain with an MTA-STS policy counts one session, successful or
failed with a result type (§4.3: starttls-not-supported, certificate-host-mismatch,
certificate-expired, certificate-not-trusted, validation-failure, sts-policy-fetch-error,
sts-policy-invalid, sts-webpki-invalid). Counters are kept per UTC day in the data store:

  0x64 | day (4, YYYYMMDD) | domain | 0x00 | entry (msgpack) -> counter

Once a day is over, ``send_reports`` builds one JSON report per domain (§4.4), gzips it and
sends it to each ``rua`` of the domain's ``_smtp._tls`` TXT record (§3): by mail as a
``multipart/report; report-type="tlsrpt"`` message (§5.3) or by HTTPS POST (§5.4). The
day's counters are taken first by one compare-and-set delete (``claim``), so of several
queue processes sharing the store only one sends each report.
"""
from __future__ import annotations

import base64
import calendar
import email.utils
import gzip
import json
import logging
import time
import uuid
from dataclasses import dataclass

import msgpack

from stalwart_mp.dns.resolver import DnsTempError
from stalwart_mp.store.data import (
    AssertionFailed,
    DataStore,
    WriteBatch,
    decode_counter,
    encode_counter,
)

log = logging.getLogger("stalwart_mp.outbound")

TAG_TLSRPT = 0x64


def day_of(when: float) -> int:
    return int(time.strftime("%Y%m%d", time.gmtime(when)))


def _key(day: int, domain: str, entry: list) -> bytes:
    return (bytes([TAG_TLSRPT]) + day.to_bytes(4, "big") + domain.encode() + b"\x00"
            + msgpack.packb(entry))


async def record(data: DataStore, domain: str, policy, result_type: str = "",
                 mx_host: str = "", receiving_ip: str = "", detail: str = "",
                 when: float | None = None, tlsa: list[str] | None = None) -> None:
    """Count one session to ``domain`` under ``policy`` (an mta_sts.Policy, or None when
    it could not be had) or, with ``tlsa`` (the records as text), under DANE;
    ``result_type`` "" = success."""
    if tlsa is not None:
        entry = ["tlsa", tlsa, [], result_type, mx_host, receiving_ip, detail[:200]]
    elif policy is not None:
        entry = ["sts", policy.text.splitlines(), policy.mx, result_type, mx_host,
                 receiving_ip, detail[:200]]
    else:
        entry = ["no-policy-found", [], [], result_type, mx_host, receiving_ip, detail[:200]]
    day = day_of(time.time() if when is None else when)
    await data.write(WriteBatch().add(_key(day, domain.lower(), entry), 1))


@dataclass(slots=True)
class DayCounts:
    day: int
    domain: str
    entries: list[tuple[list, int]]
    keys: list[bytes]


async def pending_days(data: DataStore, before_day: int) -> list[DayCounts]:
    """Counters of the days before ``before_day``, grouped by (day, domain)."""
    end = bytes([TAG_TLSRPT]) + before_day.to_bytes(4, "big")
    rows = await data.range(bytes([TAG_TLSRPT]), end)
    groups: dict[tuple[int, str], DayCounts] = {}
    for k, v in rows:
        day = int.from_bytes(k[1:5], "big")
        domain, _, entry = k[5:].partition(b"\x00")
        g = groups.setdefault((day, domain.decode()), DayCounts(day, domain.decode(), [], []))
        g.entries.append((msgpack.unpackb(entry), decode_counter(v)))
        g.keys.append(k)
    return list(groups.values())


def build_report(counts: DayCounts, organization: str, contact: str, report_id: str) -> dict:
    """§4.4: the JSON report of one domain for one day."""
    d = str(counts.day)
    start = f"{d[:4]}-{d[4:6]}-{d[6:]}T00:00:00Z"
    end = f"{d[:4]}-{d[4:6]}-{d[6:]}T23:59:59Z"
    by_policy: dict[tuple, dict] = {}
    for (ptype, pstring, mx, result, mx_host, ip, detail), n in counts.entries:
        key = (ptype, tuple(pstring), tuple(mx))
        p = by_policy.setdefault(key, {
            "policy": {"policy-type": ptype, "policy-string": list(pstring),
                       "policy-domain": counts.domain, "mx-host": list(mx)},
            "summary": {"total-successful-session-count": 0,
                        "total-failure-session-count": 0},
            "failure-details": []})
        if not result:
            p["summary"]["total-successful-session-count"] += n
            continue
        p["summary"]["total-failure-session-count"] += n
        failure = {"result-type": result, "failed-session-count": n}
        if mx_host:
            failure["receiving-mx-hostname"] = mx_host
        if ip:
            failure["receiving-ip"] = ip
        if detail:
            failure["additional-information"] = detail
        p["failure-details"].append(failure)
    for p in by_policy.values():
        if not p["failure-details"]:
            del p["failure-details"]
    return {"organization-name": organization,
            "date-range": {"start-datetime": start, "end-datetime": end},
            "contact-info": contact, "report-id": report_id,
            "policies": list(by_policy.values())}


def parse_rua(records: list[str]) -> list[str]:
    """§3: the rua URIs of the single "v=TLSRPTv1" record (none if there are several)."""
    found = [r for r in records if r.strip().startswith("v=TLSRPTv1")]
    if len(found) != 1:
        return []
    for part in found[0].split(";"):
        key, eq, value = part.partition("=")
        if eq and key.strip() == "rua":
            return [u.strip() for u in value.split(",") if u.strip()]
    return []


def report_message(report: dict, *, domain: str, submitter: str, sender: str, to: str,
                   counts: DayCounts) -> bytes:
    """§5.3: the report as a mail message (the caller DKIM-signs it)."""
    body = gzip.compress(json.dumps(report).encode())
    boundary = f"=_{uuid.uuid4().hex}"
    start = calendar.timegm(time.strptime(str(counts.day), "%Y%m%d"))
    filename = f"{submitter}!{domain}!{start}!{start + 86399}!{report['report-id']}.json.gz"
    b64 = base64.encodebytes(body).decode().replace("\n", "\r\n")
    lines = [
        f"From: <{sender}>", f"To: <{to}>",
        (f"Subject: Report Domain: {domain} Submitter: {submitter} "
         f"Report-ID: <{report['report-id']}>"),
        f"Date: {email.utils.formatdate()}",
        f"Message-ID: <{uuid.uuid4().hex}@{submitter}>",
        f"TLS-Report-Domain: {domain}", f"TLS-Report-Submitter: {submitter}",
        "Auto-Submitted: auto-generated", "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type="tlsrpt";\r\n\tboundary="{boundary}"',
        "", f"--{boundary}", "Content-Type: text/plain; charset=utf-8", "",
        f"This is an aggregate TLS report from {submitter} for {domain}.", "",
        f"--{boundary}", f'Content-Type: application/tlsrpt+gzip; name="{filename}"',
        "Content-Transfer-Encoding: base64",
        f'Content-Disposition: attachment; filename="{filename}"', "",
    ]
    return ("\r\n".join(lines) + "\r\n" + b64 + f"\r\n--{boundary}--\r\n").encode()


async def claim(data: DataStore, keys: list[bytes], values: list[int]) -> bool:
    """Take a day's counters for reporting: delete them if they still hold what was read,
    in one compare-and-set. False: another queue process took them first (one report per
    domain and day, however many nodes share the store)."""
    batch = WriteBatch()
    for key, value in zip(keys, values, strict=True):
        batch.assert_value(key, encode_counter(value)).delete(key)
    try:
        await data.write(batch)
    except AssertionFailed:
        return False
    return True


async def send_reports(data: DataStore, resolver, *, submitter: str, sender: str,
                       deliver_mail, post_https=None, today: int | None = None) -> int:
    """Send the reports of every finished day; returns how many were sent.

    ``deliver_mail(raw, recipient)`` sends a message (the runner delivers or queues it);
    ``post_https(url, body)`` posts one (§5.4). A domain without a TLSRPT record gets no
    report; its counters are dropped all the same (they would never be sent)."""
    today = day_of(time.time()) if today is None else today
    sent = 0
    for counts in await pending_days(data, today):
        try:
            ruas = parse_rua(await resolver.txt(f"_smtp._tls.{counts.domain}"))
        except DnsTempError:
            continue  # try again at the next round
        if not await claim(data, counts.keys, [n for _, n in counts.entries]):
            continue  # another queue process (node) reports this domain and day
        report_id = f"{counts.day}.{uuid.uuid4().hex}@{submitter}"
        report = build_report(counts, submitter, f"mailto:{sender}", report_id)
        for uri in ruas:
            try:
                if uri.startswith("mailto:"):
                    to = uri[7:].split("?")[0]
                    raw = report_message(report, domain=counts.domain, submitter=submitter,
                                         sender=sender, to=to, counts=counts)
                    await deliver_mail(raw, to)
                    sent += 1
                elif uri.startswith("https:") and post_https is not None:
                    await post_https(uri, gzip.compress(json.dumps(report).encode()))
                    sent += 1
            except Exception:
                log.exception("TLS report not sent", extra={"fields": {
                    "domain": counts.domain, "rua": uri}})
        log.info("TLS report", extra={"fields": {"domain": counts.domain, "day": counts.day,
                                                  "rua": ",".join(ruas)}})
    return sent
