"""What every sink is: it takes a call's events and keeps, shows or sends them somewhere.

A sink never computes what the call means (the pipeline did) and never blocks the audio: the live
daemon runs its slow sinks (the store, the floor's outbox, desktop notifications) on one
background thread behind a bounded queue (`BackgroundSinks`).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from callguard.core.events import Event

log = logging.getLogger("callguard.sinks")


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What a sink knows of the call an event belongs to, fixed when the call starts."""

    call_id: str
    facts: Mapping[str, Any] = field(default_factory=dict)  # CallFacts as a mapping (names, queue...)
    source: str = "file"  # "api" (a CTI connector), "auto" (started on speech), "file" (a replay)
    started_at: float = 0.0  # unix time


class Sink(Protocol):
    def on_event(self, call: CallInfo, event: Event) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Retrying(Protocol):
    """A sink that can be left with work it could not finish (a disk that refused writes):
    `BackgroundSinks` asks it to retry whenever no event came for a second."""

    @property
    def waiting(self) -> bool: ...

    def retry(self) -> bool: ...


class FanOut:
    """Several sinks as one, in order; one failing sink never keeps the event from the others."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = list(sinks)

    def on_event(self, call: CallInfo, event: Event) -> None:
        for sink in self.sinks:
            try:
                sink.on_event(call, event)
            except Exception:
                log.exception("sink failed", extra={"fields": {"sink": type(sink).__name__}})

    def retry_waiting(self) -> None:
        for sink in self.sinks:
            if isinstance(sink, Retrying) and sink.waiting:
                try:
                    sink.retry()
                except Exception:
                    log.exception("sink failed to retry", extra={"fields": {"sink": type(sink).__name__}})

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("sink failed to close", extra={"fields": {"sink": type(sink).__name__}})


class BackgroundSinks:
    """Sinks run on their own thread, in order, behind a bounded queue, so a slow disk or a hung
    notification server never delays the prompts. Full (the disk stalled for tens of thousands of
    events), an event is dropped, counted and logged; the daemon's /health shows backlog and drops.
    A second with no event, the sinks left with unfinished work retry it (a freed disk is written to,
    and /health recovers, without waiting for the next event; while events flow, they retry too)."""

    def __init__(self, sinks: Iterable[Sink], capacity: int, retry_s: float = 1.0) -> None:
        self._sinks = FanOut(sinks)
        self.retry_s = retry_s
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(capacity)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="sinks", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def on_event(self, call: CallInfo, event: Event) -> None:
        self.submit(lambda: self._sinks.on_event(call, event))

    def submit(self, task: Callable[[], None]) -> None:
        """Run `task` on the sinks' thread, after everything submitted before it."""
        try:
            self._queue.put_nowait(task)
        except queue.Full:
            self.dropped += 1
            if self.dropped <= 10 or self.dropped % 1000 == 0:
                log.error("sink queue full: dropped", extra={"fields": {"dropped": self.dropped}})

    def replace(self, sinks: Iterable[Sink]) -> None:
        """From now on deliver to `sinks`: the old ones get everything submitted before, then close."""
        new = FanOut(sinks)

        def swap() -> None:
            old, self._sinks = self._sinks, new
            old.close()

        if threading.current_thread() is self._thread:  # a sink task itself replacing the sinks
            swap()
        else:
            self.submit(swap)

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far is done; False if that took longer than `timeout`."""
        done = threading.Event()
        self.submit(done.set)
        return done.wait(timeout)

    def close(self, timeout: float = 15.0) -> None:
        """Deliver what is queued, then close the sinks."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)
        self._sinks.close()

    def _run(self) -> None:
        while True:
            try:
                task = self._queue.get(timeout=self.retry_s)
            except queue.Empty:
                task = self._sinks.retry_waiting
            if task is None:
                break
            try:
                task()
            except Exception:  # one failing task never stops the others
                log.exception("sink task failed")
