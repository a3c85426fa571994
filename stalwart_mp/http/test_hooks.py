"""Routes the test suite uses to drive a real server from outside.

Added only when the environment variable ``STALWART_MP_TEST_HOOKS=1`` is set by the tests;
no configuration key enables them. They let a test keep a request in flight (drain on
TERM), block a worker's event loop (heartbeat kill), and publish/wait on the event bus
(delivery between workers).
"""
from __future__ import annotations

import asyncio
import os
import time

from aiohttp import web


def add_routes(app: web.Application, worker) -> None:
    async def sleep(request: web.Request) -> web.Response:
        seconds = min(float(request.query.get("seconds", "1")), 30.0)
        await asyncio.sleep(seconds)
        return web.json_response({"slept": seconds, "pid": os.getpid()})

    async def block(request: web.Request) -> web.Response:
        seconds = min(float(request.query.get("seconds", "1")), 60.0)
        time.sleep(seconds)  # noqa: ASYNC251 - blocks the event loop on purpose: the heartbeat stops
        return web.json_response({"blocked": seconds, "pid": os.getpid()})

    async def publish(request: web.Request) -> web.Response:
        await worker.events.publish(request.query["topic"], request.query.get("data", ""))
        return web.json_response({"pid": os.getpid()})

    async def wait(request: web.Request) -> web.Response:
        got: asyncio.Future = asyncio.get_running_loop().create_future()

        def deliver(topic, data):
            if not got.done():
                got.set_result(data)

        sub = worker.events.subscribe(request.query["topic"], deliver)
        try:
            async with asyncio.timeout(float(request.query.get("timeout", "5"))):
                data = await got
        except TimeoutError:
            return web.json_response({"pid": os.getpid(), "timeout": True}, status=504)
        finally:
            sub.cancel()
        return web.json_response({"pid": os.getpid(), "data": data})

    app.router.add_get("/_test/sleep", sleep)
    app.router.add_get("/_test/block", block)
    app.router.add_get("/_test/publish", publish)
    app.router.add_get("/_test/wait", wait)
