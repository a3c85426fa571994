"""The HTTP protocol on ``protocol = "http"`` listeners (aiohttp).

Routes now: ``/healthz/live``, ``/healthz/ready``, ``/metrics`` and the MTA-STS policy
(``/.well-known/mta-sts.txt`` on ``mta-sts.*`` host names). JMAP, autoconfig and ACME join
this application with their issues. Every response names the worker
that served it (``X-Stalwart-Worker: <pid>``), so load spreading can be observed.
"""
from __future__ import annotations

import asyncio
import ipaddress
import os

from aiohttp import web

from stalwart_mp import metrics
from stalwart_mp.worker.connection import ConnectionInfo

WORKER_HEADER = "X-Stalwart-Worker"


class HttpProtocolServer:
    """One per http listener per worker: an aiohttp application without sites of its own.

    The worker accepts connections (limits, PROXY header, TLS) and hands each one to
    ``protocol_factory``; aiohttp then parses HTTP on it.
    """

    def __init__(self, listener, worker):
        self.listener = listener
        self.worker = worker
        cfg = worker.cfg
        self.metrics_enabled = cfg.get("metrics.enabled")
        self.metrics_networks = [
            ipaddress.ip_network(n, strict=False) for n in cfg.get("metrics.allowed-networks")
        ]
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(middlewares=[self._common_headers])
        app.router.add_get("/healthz/live", self.live)
        app.router.add_get("/healthz/ready", self.ready)
        if self.metrics_enabled:
            app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/.well-known/mta-sts.txt", self.mta_sts)
        if os.environ.get("STALWART_MP_TEST_HOOKS") == "1":
            # Only for the test suite; never enabled by configuration.
            from stalwart_mp.http import test_hooks

            test_hooks.add_routes(app, self.worker)
        self.runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self.worker.cfg.get("server.graceful-timeout"),
            keepalive_timeout=75.0,
        )
        await self.runner.setup()

    def protocol_factory(self, info: ConnectionInfo) -> asyncio.Protocol:
        assert self.runner is not None and self.runner.server is not None
        return self.runner.server()

    async def shutdown(self) -> None:
        """Finish requests in flight (up to the graceful timeout), close idle keep-alives."""
        if self.runner is not None:
            await self.runner.cleanup()

    # --- handlers ---------------------------------------------------------------------

    @web.middleware
    async def _common_headers(self, request: web.Request, handler):
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            response = exc
        response.headers[WORKER_HEADER] = str(os.getpid())
        route = request.match_info.route.resource
        metrics.http_requests_total.labels(
            self.listener.name, route.canonical if route else "(unmatched)",
            str(response.status),
        ).inc()
        return response

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "live", "pid": os.getpid()})

    async def ready(self, request: web.Request) -> web.Response:
        if self.worker.draining:
            return web.json_response({"status": "draining", "pid": os.getpid()}, status=503)
        if self.worker.services_error:
            return web.json_response({"status": "unavailable", "pid": os.getpid(),
                                      "reason": self.worker.services_error}, status=503)
        return web.json_response({"status": "ready", "pid": os.getpid()})

    async def metrics(self, request: web.Request) -> web.Response:
        info = self.worker.connection_info(request.transport)
        client = info.remote_ip if info else (request.remote or "")
        try:
            allowed = any(ipaddress.ip_address(client) in n for n in self.metrics_networks)
        except ValueError:
            allowed = False
        if not allowed:
            raise web.HTTPForbidden(text="metrics are not served to this address\n")
        body = await asyncio.get_running_loop().run_in_executor(None, metrics.render)
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    async def mta_sts(self, request: web.Request) -> web.Response:
        """The MTA-STS policy (RFC 8461 §3.3) that `dns records` publishes the id of, for
        any domain whose ``mta-sts`` name points here. Read per request (they are rare),
        so a renewed certificate changes the mode without a restart."""
        host = (request.host or "").rsplit(":", 1)[0].lower().rstrip(".")
        if not host.startswith("mta-sts."):
            raise web.HTTPNotFound(text="the MTA-STS policy is served on mta-sts.<domain>\n")
        from stalwart_mp.tls.contexts import TlsConfigError
        from stalwart_mp.tls.served import mta_sts_policy, served_chain

        cfg = self.worker.cfg
        hostname = cfg.get("server.hostname").lower().rstrip(".")
        try:
            chain = await asyncio.get_running_loop().run_in_executor(
                None, served_chain, cfg, hostname)
        except TlsConfigError as exc:
            raise web.HTTPServiceUnavailable(text=f"no MTA-STS policy: {exc}\n") from None
        return web.Response(text=mta_sts_policy(hostname, chain), content_type="text/plain",
                            headers={"Cache-Control": "max-age=3600"})
