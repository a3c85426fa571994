"""Outbound delivery end to end: a real ``stalwart-mp serve`` takes mail on 587 from an
authenticated user, signs it with the domain's DKIM keys, and its queue process delivers it
to the loopback MX (sink.py) found through the loopback DNS server."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import time

import dkim
import pytest

from stalwart_mp.directory.dkim_keys import create_keys
from stalwart_mp.smtp.queue.store import queued
from stalwart_mp.store.registry import open_data_store
from tests.dns_server import dns_zone  # noqa: F401 - the fixture
from tests.harness import http_get
from tests.smtp.outbound.sink import Sink
from tests.smtp.smtp_env import mail_server

MESSAGE = (b"From: Alice <alice@example.org>\r\nTo: <friend@remote.test>\r\n"
           b"Subject: signed and sent\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
           b"Message-ID: <e2e@example.org>\r\n\r\nHello friend.\r\n")


def _store(folder):
    return open_data_store("default", {"type": "lmdb", "path": str(folder / "data" / "lmdb")})


def _dkim_keys(folder) -> list:
    async def run():
        data = _store(folder)
        try:
            return await create_keys(data, "example.org")
        finally:
            await data.close()
    return asyncio.run(run())


def _queue(folder) -> list:
    async def run():
        data = _store(folder)
        try:
            return await queued(data)
        finally:
            await data.close()
    return asyncio.run(run())


@pytest.fixture
def sink():
    s = Sink().start()
    yield s
    s.stop()


@pytest.fixture
def server(tmp_path, dns_zone, sink):  # noqa: F811
    dns_port, zone = dns_zone
    zone["remote.test"] = {"MX": [(10, "mx.remote.test")]}
    zone["mx.remote.test"] = {"A": ["127.0.0.1"]}
    srv = mail_server(tmp_path, dns_port, {"submission": ("submission", "")},
                      outbound=f'port = {sink.port}\nretry = ["1s"]\nlease = "3s"\n'
                               f'scan-interval = "200ms"\n')
    for key in _dkim_keys(tmp_path):  # publish the keys as the DNS records say
        zone[key.dns_name] = {"TXT": [key.txt_record()]}
    srv.zone = zone
    yield srv
    srv.stop()


def _submit(server, rcpts=("friend@remote.test",)) -> None:
    with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as c:
        c.ehlo("laptop")
        c.login("alice", "alice-pw")
        assert c.sendmail("alice@example.org", list(rcpts), MESSAGE) == {}


def _mx_from_ann(server, rcpt: str) -> None:
    """A message from ann@remote.test to ``rcpt`` over the MX port."""
    with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as c:
        c.ehlo("client.remote.test")
        assert c.sendmail("ann@remote.test", [rcpt],
                          f"From: Ann <ann@remote.test>\r\nTo: {rcpt}\r\n"
                          f"Subject: hi\r\n\r\nHello.\r\n".encode()) == {}


def _wait(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_submission_is_dkim_signed_twice_and_delivered_to_the_mx(server, sink):
    _submit(server)
    _wait(lambda: sink.count() == 1, "the delivery at the loopback MX")
    got = sink.messages[0]
    assert got.mail_from == "alice@example.org" and got.rcpts == ["friend@remote.test"]
    assert got.data.endswith(MESSAGE)
    zone = server.zone

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        return zone.get(name.rstrip(".").lower(), {}).get("TXT", [""])[0].encode()

    # the receiving side verifies each signature with dkimpy
    verifier = dkim.DKIM(got.data)
    signatures = [v for k, v in dkim.rfc822_parse(got.data)[0]
                  if k.lower() == b"dkim-signature"]
    assert len(signatures) == 2
    algorithms = set()
    for i, sig in enumerate(signatures):
        assert verifier.verify(idx=i, dnsfunc=dnsfunc), f"signature {i} does not verify"
        algorithms.add(dkim.util.parse_tag_value(sig)[b"a"])
    assert algorithms == {b"ed25519-sha256", b"rsa-sha256"}
    _wait(lambda: _queue(server.folder) == [], "the queue to empty")
    # the queue process's counters reach /metrics (any worker aggregates every process)
    metrics = http_get(server.http_port, "/metrics")[2].decode()
    assert 'stalwart_outbound_recipients_total{result="delivered"} 1.0' in metrics
    assert 'result="failed"' not in metrics


def _queue_pid(server) -> int | None:
    status = json.loads((server.run_dir / "status.json").read_text())
    pids = [p["pid"] for p in status["processes"] if p["kind"] == "queue"]
    return pids[0] if pids else None


def test_queue_process_killed_mid_delivery_delivers_exactly_once(server, sink):
    sink.hold.clear()   # the MX takes the data but holds its answer
    _submit(server)
    _wait(sink.holding.is_set, "the delivery to start")
    victim = _queue_pid(server)
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: sink.connections >= 1 and _queue_pid(server) not in (None, victim),
          "the master to start a new queue process")
    time.sleep(0.3)
    sink.hold.set()     # the held transaction's client is gone: the sink drops it
    _wait(lambda: sink.count() == 1, "the delivery by the new queue process", timeout=30)
    _wait(lambda: _queue(server.folder) == [], "the queue to empty")
    time.sleep(2.0)     # past another lease period: nothing more arrives
    assert sink.count() == 1
    assert sink.transactions == 2   # the interrupted one and the one that counted


def test_mx_records_dmarc_results_for_the_aggregate_report(tmp_path, dns_zone):  # noqa: F811
    from stalwart_mp.smtp.outbound.dmarc_reports import pending_days

    dns_port, zone = dns_zone
    zone["remote.test"] = {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]}
    zone["_dmarc.remote.test"] = {"TXT": ["v=DMARC1; p=none; rua=mailto:agg@remote.test"]}
    srv = mail_server(tmp_path, dns_port, {"smtp": ("smtp", "")})
    try:
        _mx_from_ann(srv, "alice@example.org")
    finally:
        srv.stop()

    async def rows():
        data = _store(tmp_path)
        try:
            return await pending_days(data, 99991231)
        finally:
            await data.close()

    [day] = asyncio.run(rows())
    assert day.domain == "remote.test"
    [(row, count)] = day.rows
    assert count == 1
    ip, disposition, dkim_ok, spf_ok, header_from, envelope_from, _dkims, spf = row
    assert (ip, disposition, dkim_ok, spf_ok) == ("127.0.0.1", "none", "fail", "pass")
    assert (header_from, envelope_from) == ("remote.test", "remote.test")
    assert spf == ["remote.test", "mfrom", "pass"]


def test_two_servers_on_one_store_deliver_each_message_once(tmp_path, dns_zone, sink):  # noqa: F811
    """Two `stalwart-mp serve` (two nodes: two queue processes) on one LMDB store."""
    from tests.harness import Server, base_config, free_port

    dns_port, zone = dns_zone
    zone["remote.test"] = {"MX": [(10, "mx.remote.test")]}
    zone["mx.remote.test"] = {"A": ["127.0.0.1"]}
    # 4 messages at a time per queue process: neither can take the whole queue at once
    outbound = (f'port = {sink.port}\nretry = ["1s"]\nlease = "5s"\nscan-interval = "100ms"\n'
                f'concurrency = 4\n')
    (tmp_path / "one").mkdir()
    one = mail_server(tmp_path / "one", dns_port, {}, outbound=outbound)
    second = tmp_path / "two"
    second.mkdir()
    http = free_port()
    text = base_config(second, http, workers=1, extra=f"""
[outbound]
{outbound}
[resolver]
nameservers = ["127.0.0.1:{dns_port}"]
timeout = 2
""").replace('path = "data/lmdb"', f'path = "{tmp_path / "one" / "data" / "lmdb"}"')
    two = Server(second, http, text).start(wait_workers=1)
    try:
        sink.hold.clear()   # both runners see the messages due before any is answered

        async def fill() -> None:
            from stalwart_mp.smtp.queue.store import QueuedMessage, QueuedRecipient, enqueue
            from stalwart_mp.store.blob import open_blob_store

            data = _store(tmp_path / "one")
            blobs = open_blob_store("default", {"type": "lmdb"}, data)
            try:
                for i in range(40):
                    raw = MESSAGE.replace(b"e2e@", f"m{i}@".encode())
                    blob_id = await blobs.put(raw)
                    await enqueue(data, blobs, QueuedMessage(
                        0, "alice@example.org", [QueuedRecipient(f"u{i}@remote.test")],
                        blob_id, len(raw), time.time(), 0.0))
            finally:
                await data.close()

        asyncio.run(fill())
        _wait(sink.holding.is_set, "the first delivery")
        time.sleep(1.0)
        sink.hold.set()
        _wait(lambda: sink.count() == 40, "every delivery", timeout=60)
        _wait(lambda: _queue(tmp_path / "one") == [], "the queue to empty")
        time.sleep(6.0)   # past a lease period: nothing is delivered again
        rcpts = sorted(r for m in sink.messages for r in m.rcpts)
        assert rcpts == sorted(f"u{i}@remote.test" for i in range(40))
        assert sink.count() == 40
        attempts = [(srv.folder / "server.log").read_text().count("delivery attempt")
                    for srv in (one, two)]
        assert sum(attempts) == 40 and min(attempts) > 0, attempts   # both did work
    finally:
        two.stop()
        one.stop()


def test_queue_process_stopped_mid_delivery_hands_the_message_back(tmp_path, dns_zone, sink):  # noqa: F811
    """SIGTERM (as on a reload) during a delivery: the next queue process delivers at once,
    not when the (long) lease would have run out."""
    dns_port, zone = dns_zone
    zone["remote.test"] = {"MX": [(10, "mx.remote.test")]}
    zone["mx.remote.test"] = {"A": ["127.0.0.1"]}
    srv = mail_server(tmp_path, dns_port, {"submission": ("submission", "")},
                      outbound=f'port = {sink.port}\nlease = "10m"\n'
                               f'scan-interval = "200ms"\n')
    try:
        sink.hold.clear()
        _submit(srv)
        _wait(sink.holding.is_set, "the delivery to start")
        victim = _queue_pid(srv)
        started = time.monotonic()
        os.kill(victim, signal.SIGTERM)
        _wait(lambda: _queue_pid(srv) not in (None, victim), "a new queue process")
        time.sleep(0.3)
        sink.hold.set()
        _wait(lambda: sink.count() == 1, "the delivery by the new queue process", timeout=30)
        assert time.monotonic() - started < 30   # far less than the 10 min lease
        _wait(lambda: _queue(srv.folder) == [], "the queue to empty")
        assert sink.count() == 1
    finally:
        srv.stop()


def test_mail_forwarded_to_a_list_member_is_arc_sealed(tmp_path, dns_zone, sink):  # noqa: F811
    """MX mail for a list reaches its external member through the queue with an ARC set
    (RFC 8617) made with the list domain's key, which the receiving side verifies (dkimpy):
    chain "pass", carrying our Authentication-Results."""
    dns_port, zone = dns_zone
    zone["remote.test"] = {"MX": [(10, "mx.remote.test")], "TXT": ["v=spf1 ip4:127.0.0.1 -all"]}
    zone["mx.remote.test"] = {"A": ["127.0.0.1"]}
    srv = mail_server(tmp_path, dns_port, {"smtp": ("smtp", "")},
                      outbound=f'port = {sink.port}\nretry = ["1s"]\nscan-interval = "200ms"\n',
                      lists={"team": ["alice@example.org", "friend@remote.test"]})
    for key in _dkim_keys(tmp_path):
        zone[key.dns_name] = {"TXT": [key.txt_record()]}
    try:
        _mx_from_ann(srv, "team@example.org")
        _wait(lambda: sink.count() == 1, "the forwarded copy")
    finally:
        srv.stop()
    got = sink.messages[0]
    assert got.mail_from == "ann@remote.test" and got.rcpts == ["friend@remote.test"]
    fields = dict((k.lower(), v) for k, v in dkim.rfc822_parse(got.data)[0])
    assert b"spf=pass" in fields[b"arc-authentication-results"]
    assert b"d=example.org" in fields[b"arc-seal"]

    def dnsfunc(name, timeout=5):
        name = name.decode() if isinstance(name, bytes) else name
        return zone.get(name.rstrip(".").lower(), {}).get("TXT", [""])[0].encode()

    cv, _results, reason = dkim.arc_verify(got.data, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason
