"""Routing and the client's TLS and AUTH: opportunistic STARTTLS towards an MX, a smarthost
with STARTTLS or implicit TLS and AUTH, per-domain routes, DSN parameters passed on."""
from __future__ import annotations

import time

import pytest

from stalwart_mp.smtp.queue import manage
from tests.dns_server import dns_zone  # noqa: F401  (fixture)
from tests.smtp.outbound.sink import Sink
from tests.smtp.outbound.test_runner import Env, config, until
from tests.smtp.outbound.test_runner import zone as zone  # noqa: PLC0414  (fixture)


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


async def _env(tmp_path, zone, port: int, **outbound) -> Env:
    return await Env(config(tmp_path, zone[0], port, **outbound)).open()


async def test_opportunistic_starttls_to_the_mx(tmp_path, zone, sinks):
    mx = sinks(tls=True)
    env = await _env(tmp_path, zone, mx.port)
    try:
        await env.runner()
        await env.queue(["x@remote.test"])
        await until(lambda: mx.count() == 1, "the delivery")
        assert mx.messages[0].tls is True   # self-signed: encrypted, not authenticated
    finally:
        await env.close()


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
async def test_smarthost_with_tls_and_auth(tmp_path, zone, sinks, mode):
    relay = sinks(tls=True, implicit=mode == "implicit", auth=("relayuser", "s3cret"))
    env = await _env(tmp_path, zone, 1, relay={
        "host": "127.0.0.1", "port": relay.port, "tls": mode, "username": "relayuser",
        "password": "s3cret", "ca-file": relay.cert_file})
    try:
        await env.runner()
        # even a domain with a null MX goes to the smarthost: it decides
        await env.queue(["x@remote.test", "y@nullmx.test"])
        await until(lambda: relay.count() == 2, "both deliveries through the smarthost")
        assert all(m.tls and m.user == "relayuser" for m in relay.messages)
    finally:
        await env.close()


async def test_smarthost_refusing_auth_is_a_temporary_failure(tmp_path, zone, sinks):
    relay = sinks(tls=True, auth=("relayuser", "s3cret"))
    env = await _env(tmp_path, zone, 1, relay={
        "host": "127.0.0.1", "port": relay.port, "tls": "starttls", "username": "relayuser",
        "password": "wrong", "ca-file": relay.cert_file})
    try:
        await env.runner()
        qid = await env.queue(["x@remote.test"])

        async def tried() -> bool:
            m = await manage.get_message(env.services.data, qid)
            return m is not None and m.attempts >= 1

        await until(tried, "the first attempt")
        m = await manage.get_message(env.services.data, qid)
        assert m.recipients[0].status == "queued"
        assert "refused AUTH" in m.recipients[0].reply and "535" in m.recipients[0].reply
        assert relay.count() == 0 and await env.inbox() == []
    finally:
        await env.close()


async def test_unverifiable_smarthost_certificate_is_not_used(tmp_path, zone, sinks):
    relay = sinks(tls=True, auth=("relayuser", "s3cret"))
    env = await _env(tmp_path, zone, 1, relay={
        "host": "127.0.0.1", "port": relay.port, "tls": "starttls", "username": "relayuser",
        "password": "s3cret"})   # no ca-file: the self-signed certificate fails
    try:
        await env.runner()
        qid = await env.queue(["x@remote.test"])

        async def tried() -> bool:
            m = await manage.get_message(env.services.data, qid)
            return m is not None and m.attempts >= 1

        await until(tried, "the first attempt")
        m = await manage.get_message(env.services.data, qid)
        assert "TLS with 127.0.0.1 failed" in m.recipients[0].reply
        assert relay.count() == 0   # no password went over an unauthenticated channel
    finally:
        await env.close()


async def test_per_domain_route_and_dsn_parameters_passed_on(tmp_path, zone, sinks):
    mx = sinks()
    partner = sinks(dsn=True)
    env = await _env(tmp_path, zone, mx.port,
                     route={"partner.test": {"host": "127.0.0.1", "port": partner.port}})
    try:
        await env.runner()
        # ORCPT as queued now ("type;address") and as entries queued before 2026-11-26 hold
        # it (a pair): both go out xtext-encoded (RFC 3461 §4.2) and into the DSN decoded
        await env.queue(["a@remote.test", "b@partner.test"], notify=["SUCCESS", "FAILURE"],
                        orcpt={"b@partner.test": "rfc822;team+b=1@example.org",
                               "a@remote.test": ["rfc822", "old@example.org"]})
        await until(lambda: mx.count() == 1 and partner.count() == 1, "both deliveries")
        assert mx.messages[0].rcpts == ["a@remote.test"]
        assert partner.messages[0].rcpts == ["b@partner.test"]
        assert partner.messages[0].rcpt_params == [
            "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;team+2Bb+3D1@example.org"]
        assert mx.messages[0].rcpt_params == [""]   # no DSN extension: nothing passed
        # a "relayed" DSN only for the hop without DSN support (RFC 3461 §5.2.2)
        await until(lambda: env.inbox(), "the relayed DSN")
        [dsn] = await env.inbox()
        assert b"Final-Recipient: rfc822; a@remote.test" in dsn
        assert b"Original-Recipient: rfc822;old@example.org" in dsn
        assert b"b@partner.test" not in dsn
    finally:
        await env.close()


async def test_requiretls_needs_verified_tls_and_the_extension(tmp_path, zone, sinks):
    from stalwart_mp.smtp.queue.store import QueuedMessage, QueuedRecipient, enqueue
    from tests.smtp.outbound.pki import LocalCA
    from tests.smtp.outbound.test_runner import MESSAGE

    ca = LocalCA()
    zone[1]["secure.test"] = {"MX": [(10, "mx.secure.test")]}
    zone[1]["mx.secure.test"] = {"A": ["127.0.0.1"]}
    good = sinks(tls=True, context=ca.server_context("mx.secure.test"),
                 extensions=("REQUIRETLS",))
    env = await _env(tmp_path, zone, good.port, **{"ca-file": ca.ca_file})
    try:
        await env.runner()

        async def queue_requiretls(rcpt: str) -> int:
            s = env.services
            blob_id = await s.blobs.put(MESSAGE)
            return await enqueue(s.data, s.blobs, QueuedMessage(
                0, "alice@example.org", [QueuedRecipient(rcpt)], blob_id, len(MESSAGE),
                time.time(), 0.0, requiretls=True))

        # RFC 8689 §4.2.1: verified TLS and REQUIRETLS at the next hop: delivered with it
        await queue_requiretls("bob@secure.test")
        await until(lambda: good.count() == 1, "the REQUIRETLS delivery")
        assert "REQUIRETLS" in good.messages[0].mail_params and good.messages[0].tls
        # remote.test's MX (the same sink port, but named mx.remote.test: the
        # certificate does not match) cannot be verified: the message fails, 5.7.30
        await queue_requiretls("x@remote.test")
        await until(lambda: env.inbox(), "the failure DSN")
        [dsn] = await env.inbox()
        assert b"Action: failed" in dsn and b"x@remote.test" in dsn
        assert b"Status: 5.7.30" in dsn
        assert good.count() == 1
    finally:
        await env.close()


async def test_8bit_and_utf8_parameters(tmp_path, zone, sinks):
    from stalwart_mp.smtp.queue.store import QueuedMessage, QueuedRecipient, enqueue

    mx = sinks()
    env = await _env(tmp_path, zone, mx.port)
    try:
        await env.runner()
        s = env.services
        body = "Subject: café\r\n\r\nTschüß\r\n".encode()
        blob_id = await s.blobs.put(body)
        await enqueue(s.data, s.blobs, QueuedMessage(
            0, "alice@example.org", [QueuedRecipient("jürgen@remote.test")], blob_id,
            len(body), time.time(), 0.0))
        await until(lambda: mx.count() == 1, "the delivery")
        got = mx.messages[0]
        assert "BODY=8BITMIME" in got.mail_params and "SMTPUTF8" in got.mail_params
        assert got.rcpts == ["jürgen@remote.test"] and got.data == body
    finally:
        await env.close()
