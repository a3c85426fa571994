"""DMARC aggregate reports (RFC 7489 §7.2) about the mail our MX received.

The SMTP session records every evaluated message (a DMARC record was found: result pass or
fail) as a counter per UTC day and policy domain, keyed by what a report row holds:

  0x65 | day (4, YYYYMMDD) | policy domain | 0x00 | row (msgpack) -> counter
  row = [source ip, disposition, dkim (aligned) pass/fail, spf (aligned) pass/fail,
         header_from, envelope_from domain, [[dkim domain, selector, result]...],
         [spf domain, scope, result]]

Once a day is over the runner (runner.py) builds one XML report per policy domain
(Appendix C), gzips it and mails it to the ``rua`` addresses of the domain's current DMARC
record (§7.2.1.1), after checking that an address outside the domain agreed to receive its
reports (§7.1: ``<domain>._report._dmarc.<rua domain>`` TXT "v=DMARC1"). The day's
counters are taken first by one compare-and-set delete (``tlsrpt.claim``), so of several
queue processes sharing the store only one sends each report.
"""
from __future__ import annotations

import base64
import calendar
import email.utils
import gzip
import logging
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import msgpack

from stalwart_mp.dns.resolver import DnsTempError
from stalwart_mp.smtp.checks.dmarc import organizational_domain, parse_record
from stalwart_mp.smtp.outbound.tlsrpt import claim
from stalwart_mp.store.data import DataStore, WriteBatch, decode_counter

log = logging.getLogger("stalwart_mp.outbound")

TAG_DMARC = 0x65


def day_of(when: float) -> int:
    return int(time.strftime("%Y%m%d", time.gmtime(when)))


async def record(data: DataStore, dmarc, spf, dkim, source_ip: str, envelope_from: str,
                 disposition: str | None, when: float | None = None) -> None:
    """Count one message evaluated by DMARC (``smtp/checks``' results)."""
    if dmarc is None or dmarc.result not in ("pass", "fail") or not dmarc.record_domain:
        return
    row = [source_ip, disposition or "none",
           "pass" if dmarc.dkim_aligned else "fail", "pass" if dmarc.spf_aligned else "fail",
           dmarc.domain, envelope_from.rpartition("@")[2].lower(),
           [[d.domain, d.selector, d.result] for d in dkim],
           [spf.domain, "helo" if spf.scope == "helo" else "mfrom", spf.result]
           if spf is not None else []]
    day = day_of(time.time() if when is None else when)
    key = (bytes([TAG_DMARC]) + day.to_bytes(4, "big") + dmarc.record_domain.encode()
           + b"\x00" + msgpack.packb(row))
    await data.write(WriteBatch().add(key, 1))


@dataclass(slots=True)
class DayRows:
    day: int
    domain: str
    rows: list[tuple[list, int]]
    keys: list[bytes]


async def pending_days(data: DataStore, before_day: int) -> list[DayRows]:
    end = bytes([TAG_DMARC]) + before_day.to_bytes(4, "big")
    groups: dict[tuple[int, str], DayRows] = {}
    for k, v in await data.range(bytes([TAG_DMARC]), end):
        day = int.from_bytes(k[1:5], "big")
        domain, _, row = k[5:].partition(b"\x00")
        g = groups.setdefault((day, domain.decode()), DayRows(day, domain.decode(), [], []))
        g.rows.append((msgpack.unpackb(row), decode_counter(v)))
        g.keys.append(k)
    return list(groups.values())


def _sub(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def build_xml(rows: DayRows, published: dict[str, str], *, org_name: str, email_: str,
              report_id: str) -> bytes:
    """RFC 7489 Appendix C: the aggregate report of one policy domain for one day."""
    begin = calendar.timegm(time.strptime(str(rows.day), "%Y%m%d"))
    root = ET.Element("feedback")
    meta = _sub(root, "report_metadata")
    _sub(meta, "org_name", org_name)
    _sub(meta, "email", email_)
    _sub(meta, "report_id", report_id)
    dr = _sub(meta, "date_range")
    _sub(dr, "begin", begin)
    _sub(dr, "end", begin + 86399)
    pp = _sub(root, "policy_published")
    _sub(pp, "domain", rows.domain)
    for tag in ("adkim", "aspf", "p", "sp", "pct"):
        _sub(pp, tag, published[tag])
    for (ip, disposition, dkim_ok, spf_ok, header_from, env_from, dkims, spf), n in rows.rows:
        rec = _sub(root, "record")
        row = _sub(rec, "row")
        _sub(row, "source_ip", ip)
        _sub(row, "count", n)
        pe = _sub(row, "policy_evaluated")
        _sub(pe, "disposition", disposition)
        _sub(pe, "dkim", dkim_ok)
        _sub(pe, "spf", spf_ok)
        ids = _sub(rec, "identifiers")
        _sub(ids, "header_from", header_from)
        if env_from:
            _sub(ids, "envelope_from", env_from)
        auth = _sub(rec, "auth_results")
        for domain, selector, result in dkims:
            d = _sub(auth, "dkim")
            _sub(d, "domain", domain)
            if selector:
                _sub(d, "selector", selector)
            _sub(d, "result", result)
        if spf:
            s = _sub(auth, "spf")
            _sub(s, "domain", spf[0])
            _sub(s, "scope", spf[1])
            _sub(s, "result", spf[2])
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)


def parse_rua(text: str) -> list[str]:
    """The mailto: addresses of a DMARC record's rua= (a "!size" limit is dropped)."""
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq and name.strip().lower() == "rua":
            out = []
            for uri in value.split(","):
                uri = uri.strip()
                if uri.lower().startswith("mailto:"):
                    out.append(uri[7:].split("!")[0])
            return out
    return []


def published_policy(text: str) -> dict[str, str]:
    tags = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags[name.strip().lower()] = value.strip()
    p = tags.get("p", "none")
    return {"adkim": tags.get("adkim", "r"), "aspf": tags.get("aspf", "r"), "p": p,
            "sp": tags.get("sp", p), "pct": tags.get("pct", "100")}


async def _accepts(resolver, domain: str, address: str) -> bool:
    """§7.1: a report address in another organizational domain must have agreed."""
    rua_domain = address.rpartition("@")[2].lower()
    if organizational_domain(rua_domain) == organizational_domain(domain):
        return True
    records = await resolver.txt(f"{domain}._report._dmarc.{rua_domain}")
    return any(r.strip().startswith("v=DMARC1") for r in records)


def report_message(xml: bytes, *, domain: str, submitter: str, sender: str, to: str,
                   report_id: str, day: int) -> bytes:
    """§7.2.1.1: the report as a mail message with the gzipped XML attached."""
    begin = calendar.timegm(time.strptime(str(day), "%Y%m%d"))
    filename = f"{submitter}!{domain}!{begin}!{begin + 86399}.xml.gz"
    b64 = base64.encodebytes(gzip.compress(xml)).decode().replace("\n", "\r\n")
    boundary = f"=_{uuid.uuid4().hex}"
    lines = [
        f"From: <{sender}>", f"To: <{to}>",
        f"Subject: Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>",
        f"Date: {email.utils.formatdate()}", f"Message-ID: <{uuid.uuid4().hex}@{submitter}>",
        "Auto-Submitted: auto-generated", "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary}"', "",
        f"--{boundary}", "Content-Type: text/plain; charset=utf-8", "",
        f"DMARC aggregate report from {submitter} for {domain}.", "",
        f"--{boundary}", f'Content-Type: application/gzip; name="{filename}"',
        "Content-Transfer-Encoding: base64",
        f'Content-Disposition: attachment; filename="{filename}"', "",
    ]
    return ("\r\n".join(lines) + "\r\n" + b64 + f"\r\n--{boundary}--\r\n").encode()


async def send_reports(data: DataStore, resolver, *, submitter: str, sender: str,
                       deliver_mail, today: int | None = None) -> int:
    """Mail the reports of every finished day; returns how many messages were sent."""
    today = day_of(time.time()) if today is None else today
    sent = 0
    for rows in await pending_days(data, today):
        try:
            texts = [t for t in await resolver.txt(f"_dmarc.{rows.domain}")
                     if t.strip().startswith("v=DMARC1")]
            if len(texts) != 1 or parse_record(texts[0]) is None:
                ruas: list[str] = []
                published: dict[str, str] = {}
            else:
                ruas, published = parse_rua(texts[0]), published_policy(texts[0])
            ruas = [a for a in ruas if await _accepts(resolver, rows.domain, a)]
        except DnsTempError:
            continue  # the next round tries again
        if not await claim(data, rows.keys, [n for _, n in rows.rows]):
            continue  # another queue process (node) reports this domain and day
        report_id = f"{rows.day}.{uuid.uuid4().hex}@{submitter}"
        if ruas:
            xml = build_xml(rows, published, org_name=submitter, email_=sender,
                            report_id=report_id)
            for to in ruas:
                try:
                    await deliver_mail(report_message(
                        xml, domain=rows.domain, submitter=submitter, sender=sender, to=to,
                        report_id=report_id, day=rows.day), to)
                    sent += 1
                except Exception:
                    log.exception("DMARC report not sent", extra={"fields": {
                        "domain": rows.domain, "rua": to}})
        log.info("DMARC report", extra={"fields": {"domain": rows.domain, "day": rows.day,
                                                    "rua": ",".join(ruas)}})
    return sent
