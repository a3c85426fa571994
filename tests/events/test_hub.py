"""The event hub and its client over real unix sockets, with real processes.

The hub runs the way the master runs it: an ``EventHub`` registered on a
``selectors.DefaultSelector`` loop that also waits on a stop pipe — in a forked child
(``HubProcess``) or, where the test inspects the hub or its logs, in a thread (``HubThread``).
Client processes are forked children running ``LocalEventBus`` on uvloop; they report what
they receive through a ``multiprocessing`` pipe.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import os
import selectors
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import uvloop

from stalwart_mp.events import LocalEventBus, frames
from stalwart_mp.events.hub import EventHub

FORK = multiprocessing.get_context("fork")
TIMEOUT = 5.0


# -- the hub, run like the master runs it ---------------------------------------------------


def serve(hub: EventHub, stop_fd: int) -> None:
    """The master's loop in miniature: dispatch ``key.data(mask)`` until the stop pipe fires."""
    sel = selectors.DefaultSelector()
    hub.register(sel)
    sel.register(stop_fd, selectors.EVENT_READ, None)
    try:
        while True:
            for key, mask in sel.select():
                if key.data is None:
                    return
                key.data(mask)
    finally:
        hub.close()
        sel.close()


@dataclass(slots=True)
class HubProcess:
    """The hub in a forked child; the test process drops its copy with ``close_in_child``."""

    path: Path
    options: dict[str, Any] = field(default_factory=dict)
    process: Any = None
    stop_w: int = -1

    def start(self) -> HubProcess:
        hub = EventHub(self.path, **self.options)
        stop_r, self.stop_w = os.pipe()
        self.process = FORK.Process(target=serve, args=(hub, stop_r), daemon=True)
        self.process.start()
        hub.close_in_child()
        os.close(stop_r)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.is_alive():
            os.write(self.stop_w, b"x")
            self.process.join(TIMEOUT)
        self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(TIMEOUT)
        if self.stop_w != -1:
            os.close(self.stop_w)
            self.stop_w = -1


@dataclass(slots=True)
class HubThread:
    """The hub on a selector loop in a thread, so a test can look at it and at its logs."""

    path: Path
    options: dict[str, Any] = field(default_factory=dict)
    hub: EventHub | None = None
    thread: threading.Thread | None = None
    stop_w: int = -1

    def start(self) -> HubThread:
        self.hub = EventHub(self.path, **self.options)
        stop_r, self.stop_w = os.pipe()
        self.thread = threading.Thread(target=self._run, args=(stop_r,), daemon=True)
        self.thread.start()
        return self

    def _run(self, stop_r: int) -> None:
        assert self.hub is not None
        try:
            serve(self.hub, stop_r)
        finally:
            os.close(stop_r)

    def stop(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            os.write(self.stop_w, b"x")
            self.thread.join(TIMEOUT)
        if self.stop_w != -1:
            os.close(self.stop_w)
            self.stop_w = -1


# -- client processes -----------------------------------------------------------------------


def run_in_child(main: Callable[[], Any]) -> None:
    uvloop.install()
    asyncio.run(main())


def subscriber_main(path: Path, topics: list[str], echo: bool, out: Connection) -> None:
    """Subscribe, report ("ready", None), then report every event; optionally ack it."""

    async def main() -> None:
        bus = LocalEventBus(path)
        await bus.start()

        async def on_event(topic: str, data: Any) -> None:
            out.send((topic, data))
            if echo:
                await bus.publish("ack", [topic, data])

        for topic in topics:
            bus.subscribe(topic, on_event)
        await bus.sync()
        out.send(("ready", None))
        await asyncio.Event().wait()

    run_in_child(main)


def publisher_main(path: Path, events: list[tuple[str, Any]], out: Connection) -> None:
    async def main() -> None:
        async with LocalEventBus(path) as bus:
            for topic, data in events:
                await bus.publish(topic, data)
            await bus.sync()
        out.send(("done", None))

    run_in_child(main)


@dataclass(slots=True)
class Child:
    process: Any
    inbox: Connection

    async def next(self, timeout: float = TIMEOUT) -> tuple[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.inbox.poll():
            if time.monotonic() > deadline:
                raise TimeoutError("the child process reported nothing")
            await asyncio.sleep(0.005)
        topic, data = self.inbox.recv()
        return topic, data

    async def quiet(self, duration: float = 0.2) -> bool:
        await asyncio.sleep(duration)
        return not self.inbox.poll()


@pytest.fixture
def sock_path() -> Iterator[Path]:
    directory = tempfile.mkdtemp(prefix="evhub", dir="/tmp")  # short: sun_path is 108 bytes
    yield Path(directory) / "hub.sock"
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def start(target: Callable[..., None], *args: Any) -> Child:
        inbox, outbox = FORK.Pipe(duplex=False)
        process = FORK.Process(target=target, args=(*args, outbox), daemon=True)
        process.start()
        outbox.close()
        children.append(Child(process, inbox))
        return children[-1]

    yield start
    for child in children:
        if child.process.is_alive():
            child.process.kill()
        child.process.join(TIMEOUT)
        child.inbox.close()


@pytest.fixture
def hub_process(sock_path: Path) -> Iterator[HubProcess]:
    hub = HubProcess(sock_path).start()
    yield hub
    hub.stop()


@pytest.fixture
async def bus(sock_path: Path) -> AsyncIterator[LocalEventBus]:
    client = LocalEventBus(sock_path, reconnect_min=0.02, reconnect_max=0.2)
    yield client
    await client.close()


async def start_subscriber(
    spawn: Callable[..., Child], path: Path, topics: list[str], echo: bool = False
) -> Child:
    child = spawn(subscriber_main, path, topics, echo)
    assert await child.next() == ("ready", None)
    return child


async def eventually(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def has_length(items: list[Any], n: int) -> bool:
    return len(items) == n


def collector() -> tuple[list[tuple[str, Any]], Callable[[str, Any], None]]:
    seen: list[tuple[str, Any]] = []
    return seen, lambda topic, data: seen.append((topic, data))


# -- tests ----------------------------------------------------------------------------------


async def test_socket_is_owner_only(hub_process: HubProcess, sock_path: Path) -> None:
    mode = os.stat(sock_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600


async def test_one_process_publishes_another_receives(
    hub_process: HubProcess, sock_path: Path, spawn: Callable[..., Child]
) -> None:
    subscriber = await start_subscriber(spawn, sock_path, ["mail.7"])
    events = [("mail.7", {"modseq": 1}), ("mail.8", "not subscribed"), ("mail.7", [b"\x00", 2])]
    publisher = spawn(publisher_main, sock_path, events)
    assert await publisher.next() == ("done", None)
    assert await subscriber.next() == ("mail.7", {"modseq": 1})
    assert await subscriber.next() == ("mail.7", [b"\x00", 2])
    assert await subscriber.quiet()


async def test_prefix_subscription(
    hub_process: HubProcess, sock_path: Path, spawn: Callable[..., Child]
) -> None:
    subscriber = await start_subscriber(spawn, sock_path, ["account."])
    events = [("accounts", 0), ("account", 1), ("account.42", 2), ("account.42.inbox", 3)]
    publisher = spawn(publisher_main, sock_path, events)
    assert await publisher.next() == ("done", None)
    assert await subscriber.next() == ("account.42", 2)
    assert await subscriber.next() == ("account.42.inbox", 3)
    assert await subscriber.quiet()


async def test_overlapping_subscriptions_deliver_once_per_process(
    hub_process: HubProcess, sock_path: Path, spawn: Callable[..., Child]
) -> None:
    subscriber = await start_subscriber(spawn, sock_path, ["account.", "account.1"])
    publisher = spawn(publisher_main, sock_path, [("account.1", "x")])
    assert await publisher.next() == ("done", None)
    # The hub sends the frame once; the child's two local subscriptions each see it once.
    assert sorted([await subscriber.next(), await subscriber.next()]) == [("account.1", "x")] * 2
    assert await subscriber.quiet()


async def test_publisher_gets_its_own_event_exactly_once(
    hub_process: HubProcess, sock_path: Path, spawn: Callable[..., Child], bus: LocalEventBus
) -> None:
    subscriber = await start_subscriber(spawn, sock_path, ["idle.1"], echo=True)
    seen, record = collector()
    bus.subscribe("idle.1", record)
    bus.subscribe("ack", record)
    await bus.start()
    await bus.sync()

    await bus.publish("idle.1", "new mail")
    assert seen == [("idle.1", "new mail")]  # local delivery, synchronous
    assert await subscriber.next() == ("idle.1", "new mail")
    # The ack left the other process after the hub forwarded our event; had the hub echoed
    # the event back to us, the echo would have arrived first.
    await eventually(lambda: ("ack", ["idle.1", "new mail"]) in seen)
    assert seen == [("idle.1", "new mail"), ("ack", ["idle.1", "new mail"])]


async def test_unsubscribe_stops_remote_delivery(
    hub_process: HubProcess, sock_path: Path, spawn: Callable[..., Child], bus: LocalEventBus
) -> None:
    seen, record = collector()
    subscription = bus.subscribe("x", record)
    bus.subscribe("marker", record)
    await bus.start()
    await bus.sync()
    subscription.cancel()
    subscription.cancel()  # idempotent
    await bus.sync()
    publisher = spawn(publisher_main, sock_path, [("x", 1), ("marker", 2)])
    assert await publisher.next() == ("done", None)
    await eventually(lambda: ("marker", 2) in seen)
    assert seen == [("marker", 2)]


async def test_malformed_and_oversized_frames_disconnect_only_the_offender(
    sock_path: Path, spawn: Callable[..., Child], bus: LocalEventBus
) -> None:
    hub = HubProcess(sock_path, {"max_frame": 1024}).start()
    try:
        seen, record = collector()
        bus.subscribe("t", record)
        await bus.start()
        await bus.sync()
        bad_frames = [
            frames.HEADER.pack(3) + b"\xc1\xc1\xc1",  # not msgpack
            frames.HEADER.pack(1025),  # oversized: refused from the header alone
            frames.HEADER.pack(6) + b"\x81\xa2op\xa1x",  # op 'x'... truncated map
        ]
        for bad in bad_frames:
            reader, writer = await asyncio.open_unix_connection(sock_path)
            writer.write(frames.encode(frames.Subscribe(("t",))) + bad)
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # EOF: dropped
            writer.close()

        publisher = spawn(publisher_main, sock_path, [("t", "still alive")])
        assert await publisher.next() == ("done", None)
        await eventually(lambda: seen == [("t", "still alive")])
        assert bus.connected
    finally:
        hub.stop()


async def test_slow_consumer_is_dropped_without_stalling_others(
    sock_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="stalwart_mp.events")
    runner = HubThread(sock_path, {"max_buffer": 128 << 10}).start()
    assert runner.hub is not None
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    publisher = LocalEventBus(sock_path)
    fast = LocalEventBus(sock_path)
    try:
        slow.connect(os.fspath(sock_path))
        slow.sendall(frames.encode(frames.Subscribe(("bulk",))) + frames.encode(frames.Ping(1)))
        slow.settimeout(TIMEOUT)
        assert slow.recv(64) == frames.encode(frames.Pong(1))  # subscribed
        received, record = collector()
        fast.subscribe("bulk", record)
        await fast.start()
        await fast.sync()
        await publisher.start()
        await eventually(lambda: runner.hub is not None and runner.hub.connection_count == 3)

        chunk, batch, sent = "x" * 4096, 16, 0
        for _ in range(400):  # up to 25 MiB; the slow client is dropped long before
            for _ in range(batch):
                await publisher.publish("bulk", chunk)
            sent += batch
            await eventually(functools.partial(has_length, received, sent))  # fast keeps up
            if runner.hub.connection_count == 2:
                break
        assert runner.hub.connection_count == 2
        assert any("slow client" in r.getMessage() for r in caplog.records)

        total = 0
        while data := slow.recv(1 << 16):
            total += len(data)
        assert 0 < total < sent * 4096  # got a part, then EOF

        await publisher.publish("bulk", "after")
        await eventually(lambda: received[-1] == ("bulk", "after"))
    finally:
        slow.close()
        await publisher.close()
        await fast.close()
        runner.stop()


async def test_client_reconnects_after_hub_restart(
    sock_path: Path,
    spawn: Callable[..., Child],
    bus: LocalEventBus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="stalwart_mp.events")
    first = HubProcess(sock_path).start()
    second: HubProcess | None = None
    try:
        seen, record = collector()
        bus.subscribe("r", record)
        await bus.start()
        await bus.sync()
        assert bus.connected

        first.kill()  # SIGKILL: the socket file stays behind, stale
        await eventually(lambda: not bus.connected)
        await bus.publish("r", "while down")
        assert seen == [("r", "while down")]  # still delivered in-process
        assert any("not sent to other processes" in r.getMessage() for r in caplog.records)

        second = HubProcess(sock_path).start()  # unlinks the stale socket
        await eventually(lambda: bus.connected)
        await bus.sync()  # the re-sent subscription is in effect
        publisher = spawn(publisher_main, sock_path, [("r", "after restart")])
        assert await publisher.next() == ("done", None)
        await eventually(lambda: seen[-1:] == [("r", "after restart")])
        assert seen == [("r", "while down"), ("r", "after restart")]
    finally:
        first.kill()
        if second is not None:
            second.stop()


async def test_start_without_hub_connects_later(sock_path: Path, bus: LocalEventBus) -> None:
    seen, record = collector()
    bus.subscribe("late", record)
    await bus.start()  # no hub yet: not fatal
    assert not bus.connected
    hub = HubProcess(sock_path).start()
    try:
        await eventually(lambda: bus.connected)
        await bus.sync()
        async with LocalEventBus(sock_path) as other:
            await other.publish("late", 1)
            await other.sync()
        await eventually(lambda: seen == [("late", 1)])
    finally:
        hub.stop()


async def test_failing_callbacks_are_logged_and_do_not_break_the_bus(
    hub_process: HubProcess,
    sock_path: Path,
    spawn: Callable[..., Child],
    bus: LocalEventBus,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen, record = collector()

    def broken(topic: str, data: Any) -> None:
        raise RuntimeError("sync boom")

    async def broken_async(topic: str, data: Any) -> None:
        raise RuntimeError("async boom")

    async def working_async(topic: str, data: Any) -> None:
        record(topic, data)

    bus.subscribe("c", broken)
    bus.subscribe("c", broken_async)
    bus.subscribe("c", working_async)
    await bus.start()
    await bus.sync()
    publisher = spawn(publisher_main, sock_path, [("c", 1), ("c", 2)])
    assert await publisher.next() == ("done", None)
    await eventually(lambda: seen == [("c", 1), ("c", 2)])
    messages = [r.getMessage() for r in caplog.records if r.exc_info]
    assert sum("failed on topic 'c'" in m for m in messages) == 4
    assert bus.connected


async def test_close_in_child_keeps_the_parents_hub_working(
    sock_path: Path, bus: LocalEventBus
) -> None:
    runner = HubThread(sock_path).start()
    assert runner.hub is not None
    try:
        seen, record = collector()
        bus.subscribe("k", record)
        await bus.start()
        await bus.sync()
        # What a forked worker does first; the epoll set is shared with the parent after fork.
        pid = os.fork()
        if pid == 0:
            runner.hub.close_in_child()
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        assert sock_path.exists()
        async with LocalEventBus(sock_path) as other:
            await other.publish("k", "after fork")
            await other.sync()
        await eventually(lambda: seen == [("k", "after fork")])
    finally:
        runner.stop()
    assert not sock_path.exists()  # close() in the owner unlinks


def test_refuses_a_live_socket_and_a_non_socket(sock_path: Path) -> None:
    hub = EventHub(sock_path)
    try:
        with pytest.raises(FileExistsError, match="in use"):
            EventHub(sock_path)
    finally:
        hub.close()
    sock_path.write_text("not a socket")
    with pytest.raises(FileExistsError, match="not a socket"):
        EventHub(sock_path)


def test_refuses_a_path_too_long_for_a_unix_socket(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at most"):
        EventHub(tmp_path / ("x" * 120))
