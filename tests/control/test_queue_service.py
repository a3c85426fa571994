"""The Queue service and `stalwart-mp-admin queue` against a running server.

Mail for remote recipients is submitted over SMTP by an authenticated user; outbound
delivery is off in this server, so the messages stay in the queue for the service to list,
show, retry and cancel.
"""
from __future__ import annotations

import json
import os
import smtplib
import ssl
import subprocess
import tomllib
from collections.abc import Iterator

import grpc
import pytest

from stalwart_mp.control.client import connect
from stalwart_mp.control.gen.stalwart_mp.v1 import queue_pb2, queue_pb2_grpc, server_pb2
from tests.dns_server import DnsServer
from tests.harness import BIN
from tests.smtp.smtp_env import mail_server, mailbox


class Env:
    def __init__(self, server, dns):
        self.server, self.dns = server, dns
        self.bind = tomllib.loads(server.config_text)["control"]["bind"]
        self.token_file = server.run_dir / "control.token"
        self.stub = connect(self.bind, self.token_file.read_text().strip())
        self.queue = queue_pb2_grpc.QueueStub(self.stub.channel)

    def submit(self, mail_from: str, rcpts: list[str], subject: str) -> None:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", self.server.ports["submission"], timeout=10) as c:
            c.starttls(context=ctx)
            c.login("alice", "alice-pw")
            assert c.sendmail(mail_from, rcpts,
                              f"From: {mail_from}\r\nSubject: {subject}\r\n\r\nhi\r\n"
                              .encode()) == {}

    def admin(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "stalwart-mp-admin"), "--server", self.bind,
                               "--token-file", str(self.token_file), *args],
                              check=False, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[Env]:
    dns = DnsServer().start()
    server = mail_server(tmp_path_factory.mktemp("queue"), dns.port,
                         {"submission": ("submission", "")}, workers=1)
    e = Env(server, dns)
    e.submit("alice@example.org", ["one@remote.test", "two@remote.test"], "first")
    e.submit("alice@example.org", ["three@other.test"], "second")
    e.submit("alice@example.org", ["four@other.test", "five@other.test"], "third")
    try:
        yield e
    finally:
        e.stub.close()
        server.stop()
        dns.stop()


def _ids(env: Env, **filters) -> list[int]:
    reply = env.queue.ListMessages(queue_pb2.ListMessagesRequest(**filters), timeout=10)
    return [m.id for m in reply.messages]


def test_list_filters_and_pages(env):
    _, stored = mailbox(env.server.folder, "alice")
    all_ids = _ids(env)
    assert all_ids == sorted(m.id for m in stored) and len(all_ids) == 3
    first = env.queue.ListMessages(queue_pb2.ListMessagesRequest(page_size=2), timeout=10)
    assert [m.id for m in first.messages] == all_ids[:2] and first.next_page_token
    rest = env.queue.ListMessages(queue_pb2.ListMessagesRequest(
        page_size=2, page_token=first.next_page_token), timeout=10)
    assert [m.id for m in rest.messages] == all_ids[2:] and not rest.next_page_token
    assert _ids(env, recipient_domain="other.test") == all_ids[1:]
    assert _ids(env, recipient_domain="OTHER.test.") == all_ids[1:], "case and final dot"
    assert _ids(env, sender="ALICE@example.org") == all_ids
    assert _ids(env, sender="") == [], "no bounces queued"
    assert _ids(env, status="scheduled") == all_ids, "never tried: delivery is off"
    message = env.queue.ListMessages(queue_pb2.ListMessagesRequest(), timeout=10).messages[0]
    assert message.sender == "alice@example.org" and message.authenticated_as == "alice"
    assert [(r.address, r.status) for r in message.recipients] == [
        ("one@remote.test", "queued"), ("two@remote.test", "queued")]
    assert message.size > 0 and message.created_at.seconds > 0


def test_bad_arguments_name_the_field(env):
    for request, field in ((queue_pb2.ListMessagesRequest(status="lost"), "status"),
                           (queue_pb2.ListMessagesRequest(page_token="x"), "page_token"),
                           (queue_pb2.ListMessagesRequest(page_size=5000), "page_size")):
        with pytest.raises(grpc.RpcError) as err:
            env.queue.ListMessages(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"{field}:")
    with pytest.raises(grpc.RpcError) as err:
        env.queue.GetMessage(queue_pb2.GetMessageRequest(id=999999), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        env.queue.GetMessage(queue_pb2.GetMessageRequest(id=0), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unauthenticated_call_is_refused(env):
    anonymous = queue_pb2_grpc.QueueStub(grpc.insecure_channel(env.bind))
    with pytest.raises(grpc.RpcError) as err:
        anonymous.ListMessages(queue_pb2.ListMessagesRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_retry_makes_it_due_now(env):
    qid = _ids(env)[0]
    before = env.queue.GetMessage(queue_pb2.GetMessageRequest(id=qid), timeout=10)
    after = env.queue.RetryMessage(queue_pb2.RetryMessageRequest(id=qid), timeout=10)
    assert after.id == qid
    assert after.next_attempt.ToNanoseconds() >= before.next_attempt.ToNanoseconds()
    assert "queue.retry" in env.server.logs()


def test_cancel_one_recipient_then_the_message(env):
    qid = _ids(env, recipient_domain="other.test")[-1]   # four@ and five@
    reply = env.queue.CancelMessage(queue_pb2.CancelMessageRequest(
        id=qid, recipient="FOUR@other.test"), timeout=10)
    assert reply.HasField("message")
    assert {r.address: r.status for r in reply.message.recipients} == {
        "four@other.test": "cancelled", "five@other.test": "queued"}
    with pytest.raises(grpc.RpcError) as err:   # already cancelled
        env.queue.CancelMessage(queue_pb2.CancelMessageRequest(
            id=qid, recipient="four@other.test"), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as err:
        env.queue.CancelMessage(queue_pb2.CancelMessageRequest(
            id=qid, recipient="nobody@other.test"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    reply = env.queue.CancelMessage(queue_pb2.CancelMessageRequest(id=qid), timeout=10)
    assert not reply.HasField("message"), "nothing pending: it left the queue"
    assert qid not in _ids(env)
    _, stored = mailbox(env.server.folder, "alice")
    assert qid not in [m.id for m in stored], "gone from the store too"
    assert "queue.cancel" in env.server.logs()


def test_admin_cli_queue_commands(env):
    listed = env.admin("queue", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    messages = json.loads(listed.stdout)
    assert messages and all(m["sender"] == "alice@example.org" for m in messages)
    qid = str(messages[0]["id"])
    table = env.admin("queue", "list", "--domain", "remote.test")
    assert table.returncode == 0 and "one@remote.test" in table.stdout
    assert table.stdout.splitlines()[0].split()[:3] == ["ID", "STATUS", "FROM"]
    shown = env.admin("queue", "show", qid)
    assert shown.returncode == 0 and "two@remote.test  queued" in shown.stdout
    assert env.admin("queue", "retry", qid).returncode == 0
    missing = env.admin("queue", "show", "999999")
    assert missing.returncode == 1 and "no message 999999" in missing.stderr
    cancelled = env.admin("queue", "cancel", qid)
    assert cancelled.returncode == 0 and "left the queue" in cancelled.stdout
    assert int(qid) not in [m["id"] for m in json.loads(
        env.admin("queue", "list", "--json").stdout)]


def test_status_counts_connections_messages_and_the_queue(env):
    status = env.stub.GetStatus(server_pb2.GetStatusRequest(), timeout=10)
    assert status.HasField("queue_messages")
    assert status.queue_messages == len(_ids(env))
    assert status.messages_received >= 3, "the three submissions (more if others ran first)"
    (sub,) = [entry for entry in status.listeners if entry.name == "submission"]
    assert sub.connections_total >= 3 and sub.connections_active == 0
    assert status.workers_wanted == 1
    shown = env.admin("server", "status")
    assert shown.returncode == 0
    assert f"{status.queue_messages} queued for delivery" in shown.stdout
    assert any(line.split()[:2] == ["submission", "submission"] and
               line.split()[4] == str(sub.connections_total)
               for line in shown.stdout.splitlines()), shown.stdout


def test_set_workers_up_and_down(env):
    with pytest.raises(grpc.RpcError) as err:
        env.stub.SetWorkers(server_pb2.SetWorkersRequest(count=0), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("count:")
    status = env.stub.SetWorkers(server_pb2.SetWorkersRequest(count=3), timeout=90)
    assert status.workers_wanted == 3
    assert len([p for p in status.processes if p.kind == "worker"]) == 3
    changed = env.admin("server", "workers", "1")
    assert changed.returncode == 0 and changed.stdout.strip() == "1 workers running"
    after = env.stub.GetStatus(server_pb2.GetStatusRequest(), timeout=10)
    assert after.workers_wanted == 1
    assert len([p for p in after.processes if p.kind == "worker"]) == 1
    assert "server.workers" in env.server.logs(), "audit-logged"


def test_scripts_admin_uses_the_dev_servers_token(env):
    """scripts/admin (stalwart-mp-admin from the checkout) finds <dir>/run/control.token."""
    top = BIN.parent.parent
    done = subprocess.run([str(top / "scripts" / "admin"), "--server", env.bind, "queue",
                           "list", "--json"], check=False, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "STALWART_MP_DIR":
                                            str(env.server.folder)})
    assert done.returncode == 0, done.stderr
    assert [m["id"] for m in json.loads(done.stdout)] == _ids(env)
