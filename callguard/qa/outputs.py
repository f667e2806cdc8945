"""What a replay writes, as sinks: the one place `callguard replay` (one call or several) and a
batch's workers build their outputs from.

- `events`: every event as JSON lines (`sinks.jsonl`); with `events_part`, written as NAME.part and
  renamed when the sinks close (a batch's finished file).
- `timeline`: the readable timeline written to this stream (`sinks.timeline`; the CLI's stdout), in
  time order (`TimeOrdered`).

Redaction is not a sink's: `replay_file` redacts before any sink sees an event.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from callguard.core.events import CallEnd, CallFailed, Event, Transcript
from callguard.sinks.base import CallInfo, Sink
from callguard.sinks.jsonl import JsonlSink
from callguard.sinks.timeline import TimelineSink


@dataclass(frozen=True)
class ReplayOutputs:
    events: Path | None = None
    events_part: bool = False
    timeline: TextIO | None = None


@dataclass(order=True)
class _Held:
    t: float
    said_first: int  # at one time, what was said comes before what it caused
    seq: int
    call: CallInfo = field(compare=False)
    event: Event = field(compare=False)


class TimeOrdered:
    """Passes events on to `sink` in time order, holding each until no earlier one can still come.

    Events come out of a session when they are known, not in the order they happened: an utterance's
    final (stamped at its start) arrives after the detections made on its partials. While a speaker's
    utterance is open (a partial came, its final not yet), events after its start wait for it; others
    wait `slack_s` of call time (a shout is confirmed after its start). The call's end lets all go."""

    def __init__(self, sink: Sink, slack_s: float = 2.0) -> None:
        self.sink = sink
        self.slack_s = slack_s
        self._held: list[_Held] = []
        self._open: dict[tuple[str, str], float] = {}  # (call, speaker) -> its open utterance's start
        self._clock = 0.0
        self._seq = 0

    def on_event(self, call: CallInfo, event: Event) -> None:
        if isinstance(event, Transcript):
            if event.final:
                self._open.pop((call.call_id, event.speaker), None)
            else:
                self._open.setdefault((call.call_id, event.speaker), event.t)
        self._seq += 1
        said = 0 if isinstance(event, Transcript) and event.final else 1
        heapq.heappush(self._held, _Held(event.t, said, self._seq, call, event))
        self._clock = max(self._clock, event.t)
        if isinstance(event, CallEnd | CallFailed):
            self._release(float("inf"))
            self._open = {key: t for key, t in self._open.items() if key[0] != call.call_id}
            self._clock = 0.0  # the next call's clock starts again
        else:
            self._release(min([self._clock - self.slack_s, *self._open.values()]))

    def _release(self, until: float) -> None:
        while self._held and self._held[0].t <= until:
            held = heapq.heappop(self._held)
            self.sink.on_event(held.call, held.event)

    def close(self) -> None:
        try:
            self._release(float("inf"))
        finally:
            self.sink.close()


def replay_sinks(outputs: ReplayOutputs) -> list[Sink]:
    """The sinks for `outputs`, in the order they get each event; the caller closes them."""
    sinks: list[Sink] = []
    if outputs.events is not None:
        sinks.append(JsonlSink(outputs.events, part=outputs.events_part))
    if outputs.timeline is not None:
        sinks.append(TimeOrdered(TimelineSink(outputs.timeline)))
    return sinks
