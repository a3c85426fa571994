"""``stalwart-mp-admin domain …`` and ``dns …``: the real CLI against a running server.

The server has no [certificate] (it serves its self-signed one) and asks the loopback DNS
server for its lookups. Output and exit codes are checked: 0 success, 1 the server said
no (or `dns check` found a record missing or different), 2 usage, 4 refused token.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import dns.rdatatype
import dns.zone
import pytest

from tests.dns_server import DnsServer
from tests.harness import Server, base_config, free_port

ADMIN = Path(sys.executable).parent / "stalwart-mp-admin"
HOST = "mail.test.example"


class Env:
    def __init__(self, server: Server, dns_server: DnsServer, mx_port: int):
        self.server, self.dns, self.mx_port = server, dns_server, mx_port
        self.bind = tomllib.loads(server.config_text)["control"]["bind"]
        self.token_file = server.run_dir / "control.token"

    def admin(self, *args: str, token_file: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(ADMIN), "--control", self.bind, "--token-file",
             str(token_file or self.token_file), *args],
            check=False, capture_output=True, text=True, timeout=90,
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    folder = tmp_path_factory.mktemp("cli-domains")
    dns_server = DnsServer().start()
    http_port, mx_port = free_port(), free_port()
    extra = f"""
[server.listener.mx]
bind = ["127.0.0.1:{mx_port}"]
protocol = "smtp"

[resolver]
nameservers = ["127.0.0.1:{dns_server.port}"]
timeout = 2
"""
    (folder / "data").mkdir()
    server = Server(folder, http_port, base_config(folder, http_port, workers=1, extra=extra))
    try:
        server.start(wait_workers=1)
        environment = Env(server, dns_server, mx_port)
        server.wait_for(environment.token_file.exists, "the control token")
        yield environment
    finally:
        server.stop()
        dns_server.stop()


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    return result.stdout


def refused(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 1, f"exit {result.returncode}: {result.stdout}{result.stderr}"
    assert needle in result.stderr, result.stderr


def test_create_then_paste_the_zone(env):
    month = time.strftime("%Y%m", time.gmtime())
    out = ok(env.admin("domain", "create", "example.org", "--description", "main"))
    created = (f"domain example.org created; DKIM keys: {month}e (ed25519-sha256), "
               f"{month}r (rsa-sha256)")
    assert out.splitlines() == [
        created, "publish its DNS records: stalwart-mp-admin dns records example.org --zone"]
    refused(env.admin("domain", "create", "example.org"), "already exists")
    refused(env.admin("domain", "create", "no_such domain"), "name:")

    zone_text = ok(env.admin("dns", "records", "example.org", "--zone"))
    zone = dns.zone.from_text(zone_text, origin="example.org.", check_origin=False,
                              relativize=False)
    published = {(n.to_text(), dns.rdatatype.to_text(r.rdtype)) for n, _, r
                 in zone.iterate_rdatas()}
    assert {("example.org.", "MX"), ("example.org.", "TXT"), ("_dmarc.example.org.", "TXT"),
            (f"{month}e._domainkey.example.org.", "TXT"),
            (f"{month}r._domainkey.example.org.", "TXT"),
            ("mta-sts.example.org.", "CNAME"), ("_mta-sts.example.org.", "TXT"),
            ("_smtp._tls.example.org.", "TXT"), ("autoconfig.example.org.", "CNAME"),
            ("autodiscover.example.org.", "CNAME")} == published, "no SRV: no client listener"
    # the mail host is in another zone: its SPF and TLSA records are there as comments
    assert f"; {HOST}." in zone_text
    assert f"; _{env.mx_port}._tcp.{HOST}." in zone_text


def test_records_as_table_and_json(env):
    ok(env.admin("domain", "add", "example.net"))  # the old name still works
    data = json.loads(ok(env.admin("dns", "records", "example.net", "--json")))
    assert data["domain"] == "example.net"
    assert "mode: testing" in data["mta_sts_policy"], "self-signed: senders must not enforce"
    records = data["records"]
    assert {(r["name"], r["type"]) for r in records} >= {
        ("example.net", "MX"), (HOST, "TXT"), (f"_{env.mx_port}._tcp.{HOST}", "TLSA")}
    tlsa = [r["value"] for r in records if r["type"] == "TLSA"]
    assert sorted(v[:5] for v in tlsa) == ["3 0 1", "3 0 2", "3 1 1", "3 1 2"]
    assert data["zone"].startswith("; DNS records of example.net")

    table = ok(env.admin("dns", "records", "example.net")).splitlines()
    assert table[0].split() == ["NAME", "TYPE", "TTL", "VALUE"]
    assert len(table) == len(records) + 1
    assert table[1].split() == ["example.net", "MX", "3600", "10", f"{HOST}."]

    refused(env.admin("dns", "records", "nowhere.test"), 'no domain named "nowhere.test"')
    usage = env.admin("dns", "records", "example.net", "--zone", "--json")
    assert usage.returncode == 2 and "not allowed with" in usage.stderr


def test_check_exit_codes(env):
    ok(env.admin("domain", "create", "check.example"))
    records = json.loads(ok(env.admin("dns", "records", "check.example", "--json")))["records"]
    env.dns.zone.clear()
    result = env.admin("dns", "check", "check.example")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["STATUS", "TYPE", "NAME", "VALUE"]
    assert lines[1].split()[:3] == ["missing", "MX", "check.example"]
    assert lines[-1] == f"0 of {len(records)} records published, {len(records)} missing"

    for r in records:
        entry = env.dns.zone.setdefault(r["name"], {})
        if r["type"] == "CNAME":
            entry["CNAME"] = r["value"]
        else:
            entry.setdefault(r["type"], []).append(r["value"])
    out = ok(env.admin("dns", "check", "check.example"))
    assert out.splitlines()[-1] == f"{len(records)} of {len(records)} records published"

    env.dns.zone["_dmarc.check.example"]["TXT"] = ["v=DMARC1; p=none"]
    result = env.admin("dns", "check", "check.example")
    assert result.returncode == 1
    assert "    found: v=DMARC1; p=none" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        f"{len(records) - 1} of {len(records)} records published, 1 different")
    data = json.loads(env.admin("dns", "check", "check.example", "--json").stdout)
    assert data["all_published"] is False
    assert {c["status"] for c in data["checks"]} == {"DNS_RECORD_STATUS_PUBLISHED",
                                                     "DNS_RECORD_STATUS_DIFFERENT"}


def test_list_show_rotate_delete(env):
    month = time.strftime("%Y%m", time.gmtime())
    ok(env.admin("domain", "create", "list.example", "--description", "listed"))
    listing = ok(env.admin("domain", "list")).splitlines()
    assert listing[0].split() == ["NAME", "DKIM", "SELECTORS", "DESCRIPTION"]
    row = next(line for line in listing if line.startswith("list.example"))
    assert row.split() == ["list.example", f"{month}e,", f"{month}r", "listed"]
    found = json.loads(ok(env.admin("domain", "list", "--search", "LISTED", "--json")))
    assert [d["name"] for d in found] == ["list.example"]
    assert [k["selector"] for k in found[0]["dkim_keys"]] == [f"{month}e", f"{month}r"]

    shown = ok(env.admin("domain", "show", "list.example"))
    assert f"{month}e._domainkey.list.example. TXT" in shown
    assert "v=DKIM1; k=ed25519; h=sha256; p=" in shown

    rotated = ok(env.admin("domain", "rotate-dkim", "list.example"))
    assert rotated.startswith(f"new DKIM keys for list.example: {month}e2 (ed25519-sha256), "
                              f"{month}r2 (rsa-sha256); publish:")
    assert f"{month}r2._domainkey.list.example. TXT" in rotated
    refused(env.admin("domain", "rotate-dkim", "nowhere.test"), "NOT_FOUND")

    assert ok(env.admin("domain", "delete", "list.example")) == "domain list.example deleted\n"
    refused(env.admin("domain", "delete", "list.example"), 'no domain named "list.example"')
    refused(env.admin("domain", "show", "list.example"), "NOT_FOUND")


def test_refused_token(env, tmp_path):
    bad = tmp_path / "token"
    bad.write_text("x" * 43 + "\n")  # well-formed, not the server's
    bad.chmod(0o600)
    result = env.admin("domain", "list", token_file=bad)
    assert result.returncode == 4, result.stderr
    result = env.admin("dns", "check", "example.org", token_file=bad)
    assert result.returncode == 4, result.stderr
