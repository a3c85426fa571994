"""Cross-process events: a delivery in one worker wakes an IMAP IDLE or a JMAP push in another.

* :class:`EventBus` — the interface every process uses (``start``, ``close``, ``subscribe``,
  ``publish``, ``sync``).
* :class:`LocalEventBus` — single node: a client of the master's hub over a unix socket.
* :class:`~stalwart_mp.events.hub.EventHub` — the hub itself, driven by the master's selector
  loop; import it from ``stalwart_mp.events.hub``. (The master thereby imports the stdlib
  ``asyncio`` module through this package; that starts no loop and no thread.)
* :mod:`stalwart_mp.events.frames` — the wire format and the topic-matching rule (exact, or a
  prefix subscription ending in ``"."``).
"""

from stalwart_mp.events.bus import (
    Callback,
    EventBus,
    LocalEventBus,
    Subscription,
    SubscriptionRegistry,
)
from stalwart_mp.events.frames import FrameError, topic_keys

__all__ = [
    "Callback",
    "EventBus",
    "FrameError",
    "LocalEventBus",
    "Subscription",
    "SubscriptionRegistry",
    "topic_keys",
]
