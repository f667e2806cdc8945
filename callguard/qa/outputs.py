"""What a replay writes, as sinks: the one place `callguard replay` (one call or several) and a
batch's workers build their outputs from.

- `events`: every event as JSON lines (`sinks.jsonl`); with `events_part`, written as NAME.part and
  renamed when the sinks close (a batch's finished file).
- `timeline`: the readable timeline written to this stream (`sinks.timeline`; the CLI's stdout).

Redaction is not a sink's: `replay_file` redacts before any sink sees an event.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from callguard.sinks.base import Sink
from callguard.sinks.jsonl import JsonlSink
from callguard.sinks.timeline import TimelineSink


@dataclass(frozen=True)
class ReplayOutputs:
    events: Path | None = None
    events_part: bool = False
    timeline: TextIO | None = None


def replay_sinks(outputs: ReplayOutputs) -> list[Sink]:
    """The sinks for `outputs`, in the order they get each event; the caller closes them."""
    sinks: list[Sink] = []
    if outputs.events is not None:
        sinks.append(JsonlSink(outputs.events, part=outputs.events_part))
    if outputs.timeline is not None:
        sinks.append(TimelineSink(outputs.timeline))
    return sinks
