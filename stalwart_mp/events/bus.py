"""The event-bus interface and its single-node client (asyncio, runs in the forked children).

Delivery contract shared by every implementation:

* ``publish`` delivers to the subscribers of the publishing process directly (in-process) and
  to every other process through the transport; each subscriber gets an event exactly once.
* Events are notifications, not state: when the transport is down, remote delivery is dropped
  with a logged warning and local delivery still happens. Readers re-read the store.
* A callback may be a plain function or a coroutine function. Plain ones run inline, in the
  order the events arrive; coroutines are started as tasks. A callback that raises is logged
  and the bus carries on.
* Topics are matched as described in :mod:`stalwart_mp.events.frames`: exactly, or by a
  prefix subscription ending in ``"."``.
"""

from __future__ import annotations

import abc
import asyncio
import inspect
import itertools
import logging
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from stalwart_mp.events import frames

log = logging.getLogger("stalwart_mp.events")

Callback = Callable[[str, Any], Awaitable[None] | None]


@dataclass(slots=True, eq=False)
class Subscription:
    """One callback on one topic (or topic prefix); ``cancel()`` stops it, idempotently."""

    topic: str
    callback: Callback
    _on_cancel: Callable[[Subscription], None] = field(repr=False)
    active: bool = True

    def cancel(self) -> None:
        if self.active:
            self.active = False
            self._on_cancel(self)


class SubscriptionRegistry:
    """The in-process side of every bus: who listens to what, and calling them safely."""

    __slots__ = ("_by_key", "_tasks")

    def __init__(self) -> None:
        self._by_key: dict[str, list[Subscription]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()

    def add(self, subscription: Subscription) -> bool:
        """Record ``subscription``; True when its topic had no subscriber before."""
        members = self._by_key.setdefault(subscription.topic, [])
        members.append(subscription)
        return len(members) == 1

    def remove(self, subscription: Subscription) -> bool:
        """Forget ``subscription``; True when its topic has no subscriber left."""
        members = self._by_key.get(subscription.topic, [])
        if subscription in members:
            members.remove(subscription)
        if members:
            return False
        self._by_key.pop(subscription.topic, None)
        return True

    def topics(self) -> tuple[str, ...]:
        return tuple(self._by_key)

    def matching(self, topic: str) -> list[Subscription]:
        found: list[Subscription] = []
        for key in frames.topic_keys(topic):
            found.extend(self._by_key.get(key, ()))
        return found

    def deliver(self, topic: str, data: Any) -> None:
        for subscription in self.matching(topic):
            if subscription.active:
                self._call(subscription, topic, data)

    def _call(self, subscription: Subscription, topic: str, data: Any) -> None:
        try:
            result = subscription.callback(topic, data)
        except Exception:
            log.exception("event callback %r failed on topic %r", subscription.callback, topic)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._finished(t, subscription, topic))

    def _finished(self, task: asyncio.Future[Any], subscription: Subscription, topic: str) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error(
                "event callback %r failed on topic %r",
                subscription.callback,
                topic,
                exc_info=(type(exc), exc, exc.__traceback__),
            )

    async def cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()


class EventBus(abc.ABC):
    """Publish/subscribe between the processes (and, with a networked bus, the nodes)."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def subscribe(self, topic: str, callback: Callback) -> Subscription:
        """Call ``callback(topic, data)`` for each event on ``topic``; a topic ending in ``"."``
        subscribes to every topic that starts with it."""

    @abc.abstractmethod
    async def publish(self, topic: str, data: Any) -> None:
        """Deliver ``data`` (any msgpack-encodable value) to every subscriber of ``topic``."""

    @abc.abstractmethod
    async def sync(self) -> None:
        """Return once the subscriptions made before the call are effective everywhere.

        Subscribe, ``await sync()``, then read the state: no event published after the read
        can be missed. Best effort: returns early if the transport is down.
        """

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class _HubProtocol(asyncio.Protocol):
    """One connection to the hub; hands decoded messages to the bus."""

    def __init__(self, bus: LocalEventBus, max_frame: int) -> None:
        self._bus = bus
        self._decoder = frames.FrameDecoder(max_frame)
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._decoder.feed(data)
        try:
            for body in self._decoder.bodies():
                self._bus._on_message(frames.parse(body))
        except frames.FrameError as exc:
            log.warning("event bus: bad frame from the hub, reconnecting: %s", exc)
            if self.transport is not None:
                self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    @property
    def backlog(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0


@dataclass(slots=True)
class _Outage:
    """Book-keeping while the hub is unreachable, to log once rather than per event."""

    dropped: int = 0
    connect_failures: int = 0


class LocalEventBus(EventBus):
    """Client of the master's :class:`~stalwart_mp.events.hub.EventHub` over its unix socket.

    Reconnects with exponential backoff (``reconnect_min`` doubling up to ``reconnect_max``
    seconds, with jitter) when the hub goes away, and re-sends its subscriptions.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        max_frame: int = frames.DEFAULT_MAX_FRAME,
        max_pending: int = 8 << 20,
        reconnect_min: float = 0.05,
        reconnect_max: float = 5.0,
        sync_timeout: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self.max_frame = max_frame
        self.max_pending = max_pending
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.sync_timeout = sync_timeout
        self._registry = SubscriptionRegistry()
        self._protocol: _HubProtocol | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._ping_ids = itertools.count(1)
        self._outage = _Outage()
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    async def start(self) -> None:
        """Connect (one attempt, not fatal) and keep the connection up in the background."""
        if self._supervisor is not None:
            return
        self._closed = False
        await self._connect()
        self._supervisor = asyncio.create_task(self._supervise(), name="event-bus-supervisor")

    async def close(self) -> None:
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._disconnected()
        await self._registry.cancel_tasks()

    def subscribe(self, topic: str, callback: Callback) -> Subscription:
        frames.check_topic(topic)
        subscription = Subscription(topic, callback, self._cancel)
        if self._registry.add(subscription):
            self._send(frames.encode(frames.Subscribe((topic,))))
        return subscription

    async def publish(self, topic: str, data: Any) -> None:
        frames.check_topic(topic)
        frame = frames.encode(frames.Publish(topic, data))  # unencodable data fails here, early
        if len(frame) - frames.HEADER.size > self.max_frame:
            raise ValueError(
                f"event on {topic!r} is {len(frame)} bytes encoded; the limit is {self.max_frame}"
            )
        self._registry.deliver(topic, data)
        self._publish_remote(topic, frame)

    async def sync(self) -> None:
        if self._protocol is None:
            return
        ping_id = next(self._ping_ids)
        waiter = asyncio.get_running_loop().create_future()
        self._pings[ping_id] = waiter
        self._send(frames.encode(frames.Ping(ping_id)))
        try:
            async with asyncio.timeout(self.sync_timeout):
                await asyncio.shield(waiter)
        except TimeoutError:
            log.warning("event bus: hub did not answer within %.1fs", self.sync_timeout)
        finally:
            self._pings.pop(ping_id, None)

    # -- internals ----------------------------------------------------------------------

    def _cancel(self, subscription: Subscription) -> None:
        if self._registry.remove(subscription):
            self._send(frames.encode(frames.Unsubscribe((subscription.topic,))))

    def _send(self, frame: bytes) -> None:
        if self._protocol is not None:
            self._protocol.send(frame)

    def _publish_remote(self, topic: str, frame: bytes) -> None:
        protocol = self._protocol
        if protocol is None:
            self._drop(topic, "the event hub is not connected")
        elif protocol.backlog + len(frame) > self.max_pending:
            self._drop(topic, f"more than {self.max_pending} bytes are waiting for the hub")
        else:
            protocol.send(frame)

    def _drop(self, topic: str, reason: str) -> None:
        self._outage.dropped += 1
        level = logging.WARNING if self._outage.dropped == 1 else logging.DEBUG
        log.log(level, "event bus: event on %r not sent to other processes: %s", topic, reason)

    def _on_message(self, message: frames.Message) -> None:
        match message:
            case frames.Publish(topic, data):
                self._registry.deliver(topic, data)
            case frames.Pong(ping_id):
                waiter = self._pings.get(ping_id)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
            case _:
                log.debug("event bus: ignoring unexpected %r from the hub", message)

    async def _connect(self) -> bool:
        loop = asyncio.get_running_loop()
        try:
            _transport, protocol = await loop.create_unix_connection(
                lambda: _HubProtocol(self, self.max_frame), os.fspath(self.path)
            )
        except OSError as exc:
            self._outage.connect_failures += 1
            level = logging.WARNING if self._outage.connect_failures == 1 else logging.DEBUG
            log.log(level, "event bus: cannot connect to the hub at %s: %s", self.path, exc)
            return False
        self._protocol = protocol
        topics = self._registry.topics()
        if topics:
            protocol.send(frames.encode(frames.Subscribe(topics)))
        if self._outage.connect_failures or self._outage.dropped:
            log.info(
                "event bus: connected to the hub at %s (%d events were not sent meanwhile)",
                self.path,
                self._outage.dropped,
            )
        self._outage = _Outage()
        return True

    def _disconnected(self) -> None:
        self._protocol = None
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_result(None)
        self._pings.clear()

    async def _supervise(self) -> None:
        while not self._closed:
            if self._protocol is not None:
                await self._protocol.lost
                self._disconnected()
                if self._closed:
                    return
                log.warning("event bus: lost the hub connection at %s; reconnecting", self.path)
            await self._reconnect()

    async def _reconnect(self) -> None:
        delay = self.reconnect_min
        while not self._closed:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            if await self._connect():
                return
            delay = min(delay * 2, self.reconnect_max)
