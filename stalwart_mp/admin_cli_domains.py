"""``stalwart-mp-admin domain …`` and ``dns …``: domains with DKIM keys, their DNS records.

Registered by ``admin_cli.build_parser``; shares its connection, error handling and exit
codes (``dns check`` exits with 1 when a record is missing, different or unknown).
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from stalwart_mp import admin_cli as cli
from stalwart_mp.control.client import ControlStub
from stalwart_mp.control.dns_records import DnsRecord, table_text
from stalwart_mp.control.gen.stalwart_mp.v1 import (
    dns_pb2,
    dns_pb2_grpc,
    domains_pb2,
    domains_pb2_grpc,
    principals_pb2,
)

_STATUS_WORD = {
    dns_pb2.DNS_RECORD_STATUS_PUBLISHED: "published",
    dns_pb2.DNS_RECORD_STATUS_MISSING: "missing",
    dns_pb2.DNS_RECORD_STATUS_DIFFERENT: "different",
    dns_pb2.DNS_RECORD_STATUS_ERROR: "error",
}


def add_domain_commands(commands: Any) -> None:
    domain = commands.add_parser(
        "domain", help="manage the local domains and their DKIM keys",
        description="Manage local domains. Creating one also creates its DKIM keys (one "
        "Ed25519, one RSA-2048); `dns records DOMAIN` prints the records to publish. An "
        "address can only be given to an account once its domain exists.",
    )
    actions = domain.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create", aliases=["add"], help="create a local domain and its DKIM keys",
        description="Create a local domain, e.g. example.org, with its DKIM keys.")
    create.add_argument("name", help="domain name, e.g. example.org")
    create.add_argument("--description", default="", help="free text for administrators")
    create.add_argument("--json", action="store_true", help="print the domain as JSON")
    create.set_defaults(run=cmd_domain_create)

    listing = actions.add_parser("list", help="list the local domains",
                                 description="List the local domains in name order, with "
                                 "their DKIM selectors.")
    listing.add_argument("--search", metavar="TEXT", default="",
                         help="only domains whose name or description contains TEXT")
    listing.add_argument("--json", action="store_true", help="print the domains as JSON")
    listing.set_defaults(run=cmd_domain_list)

    show = actions.add_parser("show", help="show a domain and its DKIM keys",
                              description="Show a domain with its DKIM selectors and the "
                              "TXT record of each key.")
    show.add_argument("name", help="domain name")
    show.add_argument("--json", action="store_true", help="print the domain as JSON")
    show.set_defaults(run=cmd_domain_show)

    delete = actions.add_parser(
        "delete", help="delete a domain and its DKIM keys",
        description="Delete a local domain and its DKIM keys; refused while an account, "
        "group or list still has an address in it.")
    delete.add_argument("name", help="domain name")
    delete.set_defaults(run=cmd_domain_delete)

    rotate = actions.add_parser(
        "rotate-dkim", help="replace the domain's DKIM keys by new ones",
        description="Generate new DKIM keys with new selectors; the old keys are deleted. "
        "Publish the new TXT records (printed) and keep the old ones published for a few "
        "days, so mail signed before the rotation still verifies.")
    rotate.add_argument("name", help="domain name")
    rotate.add_argument("--json", action="store_true", help="print the domain as JSON")
    rotate.set_defaults(run=cmd_domain_rotate)


def add_dns_commands(commands: Any) -> None:
    dns = commands.add_parser(
        "dns", help="the DNS records of a domain, and a check of the live DNS",
        description="Print the DNS records a local domain needs (MX, SPF, DKIM, DMARC, "
        "MTA-STS, TLS-RPT, SRV, autoconfig, TLSA), generated from the running "
        "configuration, or check what the DNS publishes.",
    )
    actions = dns.add_subparsers(dest="action", metavar="ACTION", required=True)
    records = actions.add_parser(
        "records", help="print the records to publish",
        description="Print the records to publish for DOMAIN: a table by default, a BIND "
        "zone file to paste with --zone, JSON with --json.")
    records.add_argument("domain", help="domain name, e.g. example.org")
    form = records.add_mutually_exclusive_group()
    form.add_argument("--zone", action="store_true", help="print a BIND zone file fragment")
    form.add_argument("--json", action="store_true",
                      help="print the records, the zone and the MTA-STS policy as JSON")
    records.set_defaults(run=cmd_dns_records)

    check = actions.add_parser(
        "check", help="check the live DNS against the records",
        description="Look every record up with the server's resolver and say whether it is "
        f"published, missing or different. Exit status {cli.EXIT_REFUSED} unless every "
        "record is published.")
    check.add_argument("domain", help="domain name, e.g. example.org")
    check.add_argument("--json", action="store_true", help="print the checks as JSON")
    check.set_defaults(run=cmd_dns_check)


def _domains(stub: ControlStub) -> domains_pb2_grpc.DomainsStub:
    return domains_pb2_grpc.DomainsStub(stub.channel)


def _dns(stub: ControlStub) -> dns_pb2_grpc.DnsStub:
    return dns_pb2_grpc.DnsStub(stub.channel)


def _selectors(domain: domains_pb2.Domain) -> str:
    return ", ".join(f"{k.selector} ({k.algorithm})" for k in domain.dkim_keys) or "none"


def _key_lines(domain: domains_pb2.Domain) -> list[str]:
    lines = []
    for key in domain.dkim_keys:
        lines += [f"  {key.dns_name}. TXT", f"    {key.txt_record}"]
    return lines


def cmd_domain_create(stub: ControlStub, args: argparse.Namespace) -> int:
    domain = cli._call(_domains(stub).CreateDomain,
                       principals_pb2.CreateDomainRequest(name=args.name,
                                                          description=args.description),
                       args.control, args.timeout)
    if args.json:
        print(cli._to_json(domain))
        return cli.EXIT_OK
    print(f"domain {domain.name} created; DKIM keys: {_selectors(domain)}")
    print(f"publish its DNS records: stalwart-mp-admin dns records {domain.name} --zone")
    return cli.EXIT_OK


def cmd_domain_list(stub: ControlStub, args: argparse.Namespace) -> int:
    domains: list[domains_pb2.Domain] = []
    token = ""
    while True:
        page = cli._call(_domains(stub).ListDomains,
                         domains_pb2.ListDomainsRequest(search=args.search, page_token=token,
                                                        page_size=500),
                         args.control, args.timeout)
        domains += page.domains
        token = page.next_page_token
        if not token:
            break
    if args.json:
        print(json.dumps([json.loads(cli._to_json(d)) for d in domains], indent=2))
        return cli.EXIT_OK
    if not domains:
        print("no domains")
        return cli.EXIT_OK
    rows = cli._table(("NAME", "DKIM SELECTORS", "DESCRIPTION"),
                      [(d.name, ", ".join(k.selector for k in d.dkim_keys) or "-",
                        d.description) for d in domains])
    print("\n".join(row[2:] for row in rows))
    return cli.EXIT_OK


def cmd_domain_show(stub: ControlStub, args: argparse.Namespace) -> int:
    domain = cli._call(_domains(stub).GetDomain, domains_pb2.GetDomainRequest(name=args.name),
                       args.control, args.timeout)
    if args.json:
        print(cli._to_json(domain))
        return cli.EXIT_OK
    print(f"name         {domain.name}")
    print(f"description  {domain.description or '-'}")
    print(f"DKIM keys    {_selectors(domain)}")
    print("\n".join(_key_lines(domain)))
    return cli.EXIT_OK


def cmd_domain_delete(stub: ControlStub, args: argparse.Namespace) -> int:
    cli._call(_domains(stub).DeleteDomain, domains_pb2.DeleteDomainRequest(name=args.name),
              args.control, args.timeout)
    print(f"domain {args.name} deleted")
    return cli.EXIT_OK


def cmd_domain_rotate(stub: ControlStub, args: argparse.Namespace) -> int:
    domain = cli._call(_domains(stub).RotateDkim, domains_pb2.RotateDkimRequest(name=args.name),
                       args.control, args.timeout)
    if args.json:
        print(cli._to_json(domain))
        return cli.EXIT_OK
    print(f"new DKIM keys for {domain.name}: {_selectors(domain)}; publish:")
    print("\n".join(_key_lines(domain)))
    return cli.EXIT_OK


def _record(r: dns_pb2.DnsRecord) -> DnsRecord:
    return DnsRecord(r.name, r.type, r.value, r.ttl, r.purpose, r.in_domain_zone)


def cmd_dns_records(stub: ControlStub, args: argparse.Namespace) -> int:
    answer = cli._call(_dns(stub).Records, dns_pb2.DnsRecordsRequest(domain=args.domain),
                       args.control, args.timeout)
    if args.json:
        print(cli._to_json(answer))
    elif args.zone:
        print(answer.zone, end="")
    else:
        print(table_text([_record(r) for r in answer.records]))
    return cli.EXIT_OK


def cmd_dns_check(stub: ControlStub, args: argparse.Namespace) -> int:
    answer = cli._call(_dns(stub).Check, dns_pb2.DnsCheckRequest(domain=args.domain),
                       args.control, max(args.timeout, 30.0))
    if args.json:
        print(cli._to_json(answer))
        return cli.EXIT_OK if answer.all_published else cli.EXIT_REFUSED
    header = ("STATUS", "TYPE", "NAME")
    widths = [max([len(header[0])] + [len(w) for w in _STATUS_WORD.values()]),
              max([len(header[1])] + [len(c.record.type) for c in answer.checks]),
              max([len(header[2])] + [len(c.record.name) for c in answer.checks])]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)) + "  VALUE"]
    counts: dict[str, int] = {}
    for check in answer.checks:
        word = _STATUS_WORD.get(check.status, "error")
        counts[word] = counts.get(word, 0) + 1
        cells = (word, check.record.type, check.record.name)
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths))
                     + "  " + check.record.value)
        if word == "different":
            lines += [f"    found: {value}" for value in check.found]
        elif word == "error":
            lines.append(f"    {check.error}")
    total = len(answer.checks)
    lines.append("")
    lines.append(f"{counts.get('published', 0)} of {total} records published"
                 + "".join(f", {counts[w]} {w}" for w in ("missing", "different", "error")
                           if counts.get(w)))
    print("\n".join(lines))
    return cli.EXIT_OK if answer.all_published else cli.EXIT_REFUSED
