"""Panel messages to the agent whose call they are about, and to nobody else.

Publishers are the calls' worker threads and the floor link's; subscribers are SSE streams on the
asyncio loop. `publish` never blocks: it hands the message to the loop, which puts it on each
matching subscriber's bounded queue; a subscriber `max_pending` behind is cut off (its panel
reconnects and gets the whole state again).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]


@dataclass
class Subscription:
    agent_id: str | None  # None: the admin's stream, every agent's calls
    queue: asyncio.Queue[Message | None]


@dataclass
class AgentHub:
    max_pending: int = 500
    _loop: asyncio.AbstractEventLoop | None = None
    _subscribers: list[Subscription] = field(default_factory=list)
    _sequence: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, agent_id: str | None) -> Subscription:
        """On the loop."""
        subscription = Subscription(agent_id, asyncio.Queue(self.max_pending))
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(subscription)

    def publish(self, agent_id: str, message: Message) -> None:
        """From any thread; `agent_id` '' reaches the admin's streams only."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:  # sequence numbers in the order messages were published
            stamped = {"seq": next(self._sequence), "wall": time.time(), **message}
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._deliver, agent_id, stamped)

    def close(self) -> None:
        """End every stream (the server stops)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._close_all)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def _deliver(self, agent_id: str, message: Message) -> None:
        for subscription in list(self._subscribers):
            if subscription.agent_id is not None and subscription.agent_id != agent_id:
                continue
            try:
                subscription.queue.put_nowait(message)
            except asyncio.QueueFull:
                self.unsubscribe(subscription)
                _end(subscription.queue)

    def _close_all(self) -> None:
        for subscription in self._subscribers:
            _end(subscription.queue)
        self._subscribers.clear()


def _end(q: asyncio.Queue[Message | None]) -> None:
    while True:  # make room for the end-of-stream marker
        try:
            q.put_nowait(None)
            return
        except asyncio.QueueFull:
            with contextlib.suppress(asyncio.QueueEmpty):
                q.get_nowait()
