"""The two shapes of a stage, and the chain that runs frame stages one after another.

A frame stage (VAD, non-speech gate, loudness, recogniser) takes one speaker's audio frames in
order: `process(frame)` returns the frames it has now decided (none while it holds them back,
several when it lets go) and the events they caused; `flush(t)` at the end of the call returns
what it still holds and closes what is open. A stage that only listens (the recogniser) returns
no frames.

An event stage (language, detector, agent acts, policy, transcript sidecar) reads events:
`on_event(event)` returns the events it derives, `tick(t)` those that call time alone brings
(a timer, a word whose end has passed). A stage ignores the events it has no use for.

Detector and policy conform to `EventStage` by shape: the layers contract keeps them from
importing this module, and the pipeline, which wires them, is where mypy checks the shape.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from callguard.core.events import Event, Frame


class FrameStage(Protocol):
    def process(self, frame: Frame) -> tuple[list[Frame], list[Event]]: ...

    def flush(self, t: float) -> tuple[list[Frame], list[Event]]: ...


class EventStage(Protocol):
    def on_event(self, event: Event) -> list[Event]: ...

    def tick(self, t: float) -> list[Event]: ...


class FrameChain:
    """Frame stages one after another, itself a frame stage: each frame a stage lets out goes through
    the rest of the chain before the stage's next one, so events come out in the order they were caused.
    """

    def __init__(self, stages: Iterable[FrameStage]) -> None:
        self.stages: tuple[FrameStage, ...] = tuple(stages)

    def process(self, frame: Frame) -> tuple[list[Frame], list[Event]]:
        frames: list[Frame] = []
        events: list[Event] = []
        self._from(0, frame, frames, events)
        return frames, events

    def flush(self, t: float) -> tuple[list[Frame], list[Event]]:
        """Each stage in order lets go of what it holds, which the stages after it still process; a
        stage's closing events follow the frames it held, which are older than its close."""
        frames: list[Frame] = []
        events: list[Event] = []
        for i, stage in enumerate(self.stages):
            held, closing = stage.flush(t)
            for frame in held:
                self._from(i + 1, frame, frames, events)
            events.extend(closing)
        return frames, events

    def _from(self, i: int, frame: Frame, frames: list[Frame], events: list[Event]) -> None:
        """`frame` through stages i and after, depth first (a stage's events before its frames')."""
        if i == len(self.stages):
            frames.append(frame)
            return
        decided, produced = self.stages[i].process(frame)
        if produced:
            events.extend(produced)
        for out in decided:
            self._from(i + 1, out, frames, events)
