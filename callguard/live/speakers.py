"""Each speaker's stages on a thread of its own, and what the daemon turns down when it cannot keep up.

A call's two speakers are independent up to their transcripts (frames, VAD, gate, loudness, the
recogniser), and vosk releases the GIL while it decodes: on its own thread, one speaker's slow channel
does not hold the other's. The worker hands each block to its speaker's thread and takes back what was
heard, which it passes through the word-level stages and the policy (one thread: they hold the call).

When audio waits longer than it should (a busy workstation), the daemon degrades in steps instead of
dropping blocks, each step a notice to the agent and the log, and recovers a step at a time once it has
caught up: partials less often, then the agent's words no longer recognised (their loudness still is),
then no words at all (loudness only: shouting is still seen).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from callguard.core.events import Event, Role

log = logging.getLogger("callguard.live.daemon")

INBOX_BLOCKS = 600  # per speaker: two minutes of 200 ms blocks; beyond it blocks are dropped and counted
PARTIAL_EVERY = 4  # at step 1, partials on one speech frame in four
STEP_UP_LAG_S = (1.0, 2.0, 4.0)  # audio waiting (s) that takes the daemon to step 1, 2, 3
RECOVER_LAG_S = 0.3  # below this for RECOVER_AFTER_S, one step back
RECOVER_AFTER_S = 5.0
STEPS = (
    ("recognition_full", "Speech recognition back to normal."),
    ("degraded_partials", "This computer is busy: words are recognised a little later."),
    ("degraded_agent", "This computer is busy: your own words are not checked for now."),
    ("degraded_loudness", "This computer is busy: only loudness is checked for now, no words."),
)


@dataclass
class Degradation:
    """Which step the daemon is at, from how much audio waits; pure logic (the clock is given)."""

    step: int = 0
    _calm_since: float | None = field(default=None, repr=False)

    def update(self, lag_s: float, now: float) -> int | None:
        """The new step when it changes, else None."""
        if self.step < len(STEP_UP_LAG_S) and lag_s > STEP_UP_LAG_S[self.step]:
            self.step += 1
            self._calm_since = None
            return self.step
        if self.step == 0 or lag_s >= RECOVER_LAG_S:
            self._calm_since = None
            return None
        if self._calm_since is None:
            self._calm_since = now
        elif now - self._calm_since >= RECOVER_AFTER_S:
            self.step -= 1
            self._calm_since = now
            return self.step
        return None


def apply_step(session: Any, role: Role, step: int) -> list[Event]:
    """On `role`'s own thread: its recogniser at `step` (see STEPS). Returns what pausing it closed."""
    recogniser = session.recognisers().get(role)
    if recogniser is None:
        return []
    recogniser.partial_every = PARTIAL_EVERY if step >= 1 else 1
    paused = step >= 3 or (step >= 2 and role == "agent")
    if paused and not recogniser.paused:
        return list(recogniser.pause(session.channels[role].framer.t))
    recogniser.paused = paused
    return []


class SpeakerThreads:
    """One thread per speaker of a call; `heard` collects what their stages produced, in order per
    speaker."""

    def __init__(self, session: Any, rate: int) -> None:
        self.session = session
        self.rate = rate
        self.heard: queue.Queue[list[Event]] = queue.Queue()
        self.dropped = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._waiting_s: dict[Role, float] = dict.fromkeys(session.channels, 0.0)
        self._inbox: dict[Role, queue.Queue[tuple[str, Any] | None]] = {
            role: queue.Queue(INBOX_BLOCKS) for role in session.channels
        }
        self._threads = [
            threading.Thread(target=self._run, args=(role,), name=f"speaker-{role}", daemon=True)
            for role in session.channels
        ]
        for thread in self._threads:
            thread.start()

    def put(self, role: Role, pcm: np.ndarray) -> None:
        try:
            self._inbox[role].put_nowait(("audio", pcm))
        except queue.Full:
            self.dropped += 1
            if self.dropped <= 10 or self.dropped % 100 == 0:
                log.error("speaker thread too far behind: audio dropped", extra={"fields": {"role": role}})
            return
        with self._lock:
            self._waiting_s[role] += len(pcm) / self.rate

    def set_step(self, step: int) -> None:
        for inbox in self._inbox.values():
            inbox.put(("step", step))

    def lag_s(self) -> float:
        """The most audio waiting for one speaker's stages, in seconds."""
        with self._lock:
            return max(self._waiting_s.values(), default=0.0)

    def drain(self) -> None:
        """Wait until every block handed over has been heard (before the call is closed)."""
        for inbox in self._inbox.values():
            inbox.join()

    def stop(self) -> None:
        for inbox in self._inbox.values():
            inbox.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self, role: Role) -> None:
        inbox = self._inbox[role]
        while (item := inbox.get()) is not None:
            kind, value = item
            try:
                heard = (
                    self.session.hear(role, value)
                    if kind == "audio"
                    else apply_step(self.session, role, value)
                )
                if heard:
                    self.heard.put(heard)
            except Exception as exc:  # one bad block never stops a speaker
                self.failed += 1
                if self.failed <= 10 or self.failed % 1000 == 0:
                    log.exception(
                        "bad audio block skipped", extra={"fields": {"role": role, "error": str(exc)}}
                    )
            finally:
                if kind == "audio":
                    with self._lock:
                        self._waiting_s[role] = max(0.0, self._waiting_s[role] - len(value) / self.rate)
                inbox.task_done()
        inbox.task_done()
