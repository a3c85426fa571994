"""The delivery runner against a loopback MX (sink.py) found through the loopback DNS server.

The runner works on real stores (SQLite), the real resolver and real sockets; messages are
queued with ``queue/store.enqueue`` as the SMTP session does, DSNs are read back from the
sender's mailbox through the mail store. Schedules are seconds long.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from stalwart_mp.config.loader import load_dict
from stalwart_mp.dns.resolver import Resolver
from stalwart_mp.mail.records import Role
from stalwart_mp.services import Services
from stalwart_mp.smtp.outbound.runner import Runner
from stalwart_mp.smtp.queue import manage
from stalwart_mp.smtp.queue.store import QueuedMessage, QueuedRecipient, enqueue
from tests.dns_server import dns_zone  # noqa: F401  (fixture)
from tests.smtp.outbound.sink import Sink

MESSAGE = (b"From: Alice <alice@example.org>\r\nTo: <x@remote.test>\r\n"
           b"Subject: outbound test\r\nMessage-ID: <t1@example.org>\r\n\r\n"
           b"Hello remote.\r\n.leading dot line\r\n")


def config(folder, dns_port: int, sink_port: int, resolver: dict | None = None,
           **outbound) -> object:
    out = {"port": sink_port, "retry": ["1s"], "expire": "30s", "notify": [],
           "scan-interval": "200ms", "lease": "5s", "timeout": {"connect": "2s"}}
    out.update(outbound)
    return load_dict({
        "server": {"hostname": "mail.example.org"},
        "store": {"default": {"type": "sqlite", "path": str(folder / "data.sqlite")}},
        "storage": {"data": "default"},
        "resolver": {"nameservers": [f"127.0.0.1:{dns_port}"], "timeout": 2,
                     **(resolver or {})},
        "outbound": out,
    })


async def tls_report_rows(env) -> list:
    """The TLS-report counters once the runner has recorded one: a delivery is counted
    after the remote MX answered, so a moment after the sink holds the message."""
    from stalwart_mp.smtp.outbound import tlsrpt

    rows: list = []

    async def recorded() -> bool:
        rows[:] = await tlsrpt.pending_days(env.services.data, 99991231)
        return bool(rows)

    await until(recorded, "the TLS report entry")
    return rows


@pytest.fixture
def sink():
    s = Sink().start()
    yield s
    s.stop()


@pytest.fixture
def zone(dns_zone):  # noqa: F811
    port, z = dns_zone
    z["remote.test"] = {"MX": [(10, "mx.remote.test")]}
    z["mx.remote.test"] = {"A": ["127.0.0.1"]}
    z["down.test"] = {"MX": [(10, "mx.down.test")]}
    z["mx.down.test"] = {"A": ["127.0.0.2"]}    # nothing listens there: refused
    z["nullmx.test"] = {"MX": [(0, ".")]}
    return port, z


class Env:
    def __init__(self, cfg):
        self.cfg = cfg
        self.services: Services | None = None
        self.runners: list[tuple[Runner, asyncio.Task]] = []

    async def open(self) -> Env:
        self.services = await Services.open(self.cfg)
        await self.services.manager.create_domain("example.org")
        await self.services.manager.create_principal("alice", password="alice-pw",
                                                     emails=["alice@example.org"])
        return self

    async def runner(self, services: Services | None = None) -> Runner:
        runner = Runner.from_config(services or self.services, self.cfg,
                                    Resolver.from_config(self.cfg))
        self.runners.append((runner, asyncio.create_task(runner.run())))
        return runner

    async def queue(self, rcpts, sender="alice@example.org", notify=None, body=MESSAGE,
                    services: Services | None = None, orcpt: dict | None = None) -> int:
        s = services or self.services
        blob_id = await s.blobs.put(body)
        msg = QueuedMessage(0, sender, [QueuedRecipient(a, list(notify or []),
                                                        (orcpt or {}).get(a))
                                        for a in rcpts],
                            blob_id, len(body), time.time(), 0.0)
        qid = await enqueue(s.data, s.blobs, msg)
        for runner, _ in self.runners:
            runner.wake.set()
        return qid

    async def inbox(self, name: str = "alice") -> list[bytes]:
        s = self.services
        p = await s.directory.principal(name)
        box = await s.mail.mailbox_by_role(p.id, Role.INBOX)
        out: list[bytes] = []
        if box is None:  # mailboxes are created by the first delivery
            return out
        for _, eid in await s.mail.uid_index(p.id, box.id):
            out.append(await s.blobs.get((await s.mail.email(p.id, eid)).blob_id))
        return out

    async def close(self) -> None:
        for _, task in self.runners:
            task.cancel()
        await asyncio.gather(*(t for _, t in self.runners), return_exceptions=True)
        await self.services.close()


async def until(predicate, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def env(tmp_path, zone, sink, request):
    extra = getattr(request, "param", {})
    e = await Env(config(tmp_path, zone[0], sink.port, **extra)).open()
    yield e
    await e.close()


async def _queue_empty(env: Env) -> bool:
    return await manage.list_messages(env.services.data) == []


async def test_delivery_one_transaction_per_domain(env, sink):
    await env.runner()
    await env.queue(["x@remote.test", "Y@remote.test"])
    await until(lambda: sink.count() == 1, "the delivery")
    got = sink.messages[0]
    assert got.mail_from == "alice@example.org"
    assert got.rcpts == ["x@remote.test", "Y@remote.test"]
    assert got.data == MESSAGE   # dot-stuffing undone by the sink: the bytes arrive as sent
    assert "SIZE=" in got.mail_params
    await until(lambda: _queue_empty(env), "the message to leave the queue")
    # a second message reuses the open connection
    await env.queue(["z@remote.test"])
    await until(lambda: sink.count() == 2, "the second delivery")
    assert sink.connections == 1


async def test_temporary_failure_then_retry_succeeds(env, sink):
    sink.data_replies.append("451 4.3.0 try again later")
    await env.runner()
    qid = await env.queue(["x@remote.test"])
    await until(lambda: sink.transactions == 1, "the first attempt")
    await until(lambda: manage.get_message(env.services.data, qid), "the result")
    await until(lambda: sink.count() == 1, "the retry", timeout=10)
    assert sink.transactions == 2
    await until(lambda: _queue_empty(env), "the message to leave the queue")
    assert await env.inbox() == []   # no DSN for a temporary failure


async def test_permanent_failure_sends_failure_dsn_to_local_sender(env, sink):
    sink.rcpt_replies["nobody@remote.test"] = "550 5.1.1 no such user here"
    await env.runner()
    await env.queue(["nobody@remote.test", "x@remote.test"])
    await until(lambda: sink.count() == 1, "the delivery to the good recipient")
    assert sink.messages[0].rcpts == ["x@remote.test"]
    await until(lambda: env.inbox(), "the DSN")
    [dsn] = await env.inbox()
    assert b"multipart/report; report-type=delivery-status" in dsn
    assert b"Final-Recipient: rfc822; nobody@remote.test" in dsn
    assert b"Action: failed" in dsn
    assert b"Status: 5.1.1" in dsn
    assert b"Diagnostic-Code: smtp; 550 5.1.1 no such user here" in dsn
    assert b"Remote-MTA: dns; mx.remote.test" in dsn
    assert b"x@remote.test" not in dsn.split(b"message/rfc822")[0].split(b"delivery-status")[-1]
    assert b"Subject: outbound test" in dsn   # the original returned
    await until(lambda: _queue_empty(env), "the message to leave the queue")


async def test_null_mx_fails_at_once(env, sink):
    runner = await env.runner()
    qid = await env.queue(["someone@nullmx.test"])
    await until(lambda: env.inbox(), "the DSN")
    [dsn] = await env.inbox()
    assert b"Status: 5.1.10" in dsn and b"null MX" in dsn
    assert await manage.get_message(env.services.data, qid) is None
    assert sink.transactions == 0 and runner.delivered == 0


@pytest.mark.parametrize("env", [{"retry": ["300ms"], "notify": ["1s"], "expire": "3s"}],
                         indirect=True)
async def test_remote_down_delay_dsn_then_failure_dsn(env, sink):
    await env.runner()
    qid = await env.queue(["x@down.test"])
    await until(lambda: env.inbox(), "the delay DSN", timeout=10)
    [delay] = await env.inbox()
    assert b"Action: delayed" in delay and b"Will-Retry-Until:" in delay
    assert b"Delivery Status Notification (Delay)" in delay
    msg = await manage.get_message(env.services.data, qid)
    assert msg is not None and msg.attempts >= 2 and msg.history
    await until(lambda: _queue_empty(env), "the expiry", timeout=10)

    async def two() -> bool:
        return len(await env.inbox()) == 2

    await until(two, "the failure DSN")
    failure = (await env.inbox())[1]
    assert b"Action: failed" in failure and b"Status: 4.4.7" in failure
    assert b"127.0.0.2" in failure   # the connection error is reported


async def test_success_dsn_when_asked(env, sink):
    await env.runner()
    await env.queue(["x@remote.test"], notify=["SUCCESS"])
    await until(lambda: sink.count() == 1, "the delivery")
    await until(lambda: env.inbox(), "the success DSN")
    [dsn] = await env.inbox()
    assert b"Action: relayed" in dsn and b"Status: 2.0.0" in dsn
    assert b"text/rfc822-headers" in dsn


async def test_null_sender_gets_no_dsn(env, sink):
    sink.rcpt_replies["nobody@remote.test"] = "550 5.1.1 no such user"
    await env.runner()
    qid = await env.queue(["nobody@remote.test"], sender="")
    await until(lambda: _queue_empty(env), "the failure")
    assert await env.inbox() == []
    assert await manage.get_message(env.services.data, qid) is None


async def test_two_runners_on_one_store_never_deliver_twice(env, sink):
    other = await Services.open(env.cfg)   # a second connection to the store: a 2nd node
    try:
        sink.hold.clear()  # let both runners pile up on the same due messages first
        ids = [await env.queue([f"u{i}@remote.test"]) for i in range(30)]
        await env.runner()
        await env.runner(other)
        await until(lambda: sink.holding.is_set(), "the first delivery")
        await asyncio.sleep(0.5)
        sink.hold.set()
        await until(lambda: sink.count() == 30, "every delivery", timeout=30)
        await until(lambda: _queue_empty(env), "the queue to empty")
        await asyncio.sleep(1.5)
        rcpts = sorted(r for m in sink.messages for r in m.rcpts)
        assert rcpts == sorted(f"u{i}@remote.test" for i in range(30))
        assert sink.count() == 30 and len(ids) == 30
        assert sum(r.delivered for r, _ in env.runners) == 30
    finally:
        await other.close()


def test_default_schedule_is_like_mature_mtas():
    from stalwart_mp.smtp.outbound.runner import OutboundSettings

    s = OutboundSettings.from_config(load_dict({
        "server": {"hostname": "mx.example.org"},
        "store": {"default": {"type": "sqlite", "path": "data.sqlite"}}}))
    assert s.retry[0] == 60.0 and s.retry[-1] == 4 * 3600.0
    assert s.notify == [4 * 3600.0]       # delay DSN after 4 h
    assert s.expire == 5 * 86400.0        # retried for 5 days
    assert s.hostname == "mx.example.org" and s.lease == 900.0


@pytest.mark.parametrize("env", [{"rate-per-domain": 2, "rate-window": "30s"}], indirect=True)
async def test_per_domain_rate_limit_holds_the_rest_back(env, sink):
    await env.runner()
    ids = [await env.queue([f"r{i}@remote.test"]) for i in range(6)]

    async def all_tried() -> bool:
        ms = [await manage.get_message(env.services.data, q) for q in ids]
        return all(m is None or m.attempts >= 1 for m in ms)

    await until(all_tried, "an attempt for every message")
    held = [m for m in [await manage.get_message(env.services.data, q) for q in ids] if m]
    # at most 2 per 30 s window: even across a window boundary 2 of the 6 must wait
    assert sink.count() <= 4 and len(held) >= 2
    for m in held:
        assert "rate limit of remote.test reached" in m.recipients[0].reply
        assert m.next_attempt - time.time() <= 31   # no later than the next window
    assert sink.count() + len(held) >= 6   # none lost (a held one may just have gone)
