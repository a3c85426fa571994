"""The queue child: one process per server for background mail work.

Full-text indexing, housekeeping and outbound delivery (smtp/outbound/runner.py: the
queue's retries and DSNs), as ARCHITECTURE.md places it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal

from stalwart_mp.master.children import ChildContext, master_alive

log = logging.getLogger("stalwart_mp.queue")


def run_queue_child(ctx: ChildContext) -> int:
    import uvloop

    # Background work (indexing, collection) yields the CPU to the workers serving clients:
    # a burst of deliveries is acknowledged first and indexed a moment later.
    os.nice(ctx.config.get("queue.nice"))

    return uvloop.run(_main(ctx))


async def _main(ctx: ChildContext) -> int:
    from stalwart_mp.background.housekeeping import run_housekeeping
    from stalwart_mp.background.indexer import Indexer
    from stalwart_mp.directory.base import DirectoryUnavailable
    from stalwart_mp.events.bus import LocalEventBus
    from stalwart_mp.services import Services
    from stalwart_mp.store.configured import open_fts_store
    from stalwart_mp.store.data import StoreError

    cfg = ctx.config
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        loop.add_signal_handler(sig, stop.set)
    events = LocalEventBus(ctx.run_dir / "events.sock")
    await events.start()
    delay = 1.0
    while True:  # a store that is down is waited for, not a reason to stop the server
        try:
            services = await Services.open(cfg, events)
            fts = open_fts_store(cfg)
            break
        except (StoreError, DirectoryUnavailable, OSError) as exc:
            log.error("stores unavailable; retrying", extra={"fields": {"error": str(exc)}})
        try:
            async with asyncio.timeout(delay):
                await stop.wait()
            await events.close()
            return 0
        except TimeoutError:
            delay = min(delay * 2, 30.0)
    indexer = Indexer(services.data, services.blobs, fts, cfg.get("search.index-batch"))
    events.subscribe("mail.", lambda _topic, _data: indexer.wake.set())
    tasks = [
        asyncio.create_task(indexer.run()),
        asyncio.create_task(run_housekeeping(services, cfg.get("housekeeping.blob-grace"),
                                             cfg.get("housekeeping.interval"))),
        asyncio.create_task(_watch_master(ctx, stop)),
    ]
    if cfg.get("outbound.enabled"):
        tasks.append(asyncio.create_task(_outbound(services, cfg, events)))
    log.info("queue process running")
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await fts.close()
    await services.close()
    await events.close()
    return 0


async def _outbound(services, cfg, events) -> None:
    """The outbound delivery runner (smtp/outbound/runner.py); sessions wake it through
    the event bus when they queue a message."""
    from stalwart_mp.dns.resolver import Resolver
    from stalwart_mp.smtp.outbound.runner import Runner
    from stalwart_mp.smtp.queue.store import WAKE_TOPIC

    runner = Runner.from_config(services, cfg, Resolver.from_config(cfg))
    events.subscribe(WAKE_TOPIC, lambda _topic, _data: runner.wake.set())
    await runner.run()


async def _watch_master(ctx: ChildContext, stop: asyncio.Event) -> None:
    while master_alive(ctx):
        await asyncio.sleep(1.0)
    stop.set()
