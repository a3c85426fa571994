"""Routing and the client's TLS and AUTH: opportunistic STARTTLS towards an MX, a smarthost
with STARTTLS or implicit TLS and AUTH, per-domain routes, DSN parameters passed on."""
from __future__ import annotations

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
        await env.queue(["a@remote.test", "b@partner.test"], notify=["SUCCESS", "FAILURE"])
        await until(lambda: mx.count() == 1 and partner.count() == 1, "both deliveries")
        assert mx.messages[0].rcpts == ["a@remote.test"]
        assert partner.messages[0].rcpts == ["b@partner.test"]
        assert partner.messages[0].rcpt_params == ["NOTIFY=SUCCESS,FAILURE"]
        assert mx.messages[0].rcpt_params == [""]   # no DSN extension: nothing passed
        # a "relayed" DSN only for the hop without DSN support (RFC 3461 §5.2.2)
        await until(lambda: env.inbox(), "the relayed DSN")
        [dsn] = await env.inbox()
        assert b"Final-Recipient: rfc822; a@remote.test" in dsn
        assert b"b@partner.test" not in dsn
    finally:
        await env.close()
