"""The replay's timeline: one readable line per event that matters to a person reading the call.

The sink writes to the text stream it is given (the command line gives it stdout); it never
prints on its own. Events too fine to show (speech starts, partials...) write nothing.
"""

from __future__ import annotations

from typing import TextIO

from callguard.core.events import (
    Abuse,
    AgentAction,
    CallSummary,
    Event,
    LanguageDecided,
    LevelChange,
    NonSpeech,
    Notice,
    Prompt,
    Shouting,
    Transcript,
)
from callguard.sinks.base import CallInfo


class TimelineSink:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def on_event(self, call: CallInfo, event: Event) -> None:
        line = timeline_line(event)
        if line:
            self.stream.write(line + "\n")
            self.stream.flush()  # a person watches it as the replay goes

    def close(self) -> None:
        self.stream.flush()


def timeline_line(event: Event) -> str | None:
    """One readable line of the replay timeline, or None for events too fine to show."""
    stamp = f"{_clock(event.t)}  {event.speaker:<8}"
    match event:
        case Prompt():
            head = "ALERT " if event.alert else ""
            line = f"{stamp} {head}PROMPT [{event.level}] {event.title}: {event.instruction}"
            return f'{line}\n{"":>20}say: "{event.text}"' if event.text else line
        case LevelChange():
            return f"{stamp} level {event.previous} -> {event.level}"
        case Abuse():
            return f"{stamp} {event.category} (severity {event.severity}): {' '.join(event.words)}"
        case Shouting():
            base = (
                "no baseline yet" if event.baseline_db is None else f"baseline {event.baseline_db:.1f} dBFS"
            )
            return f"{stamp} shouting {event.level_db:.1f} dBFS ({base})"
        case Transcript() if event.final:
            return f'{stamp} said: "{event.text}"'
        case LanguageDecided():
            evidence = f": {event.evidence}" if event.evidence else ""
            return f"{stamp} language {event.lang} ({event.source}{evidence})"
        case NonSpeech():
            return f"{stamp} {event.kind} for {event.duration:.1f} s"
        case AgentAction():
            return f"{stamp} agent action: {event.action}"
        case Notice():
            return f"{stamp} notice: {event.message}"
        case CallSummary():
            detected = ", ".join(f"{k} {v}" for k, v in event.detections.items()) or "nothing"
            return (
                f"{stamp} summary: level reached {event.level_reached}; detected {detected}; "
                f"prompted {len(event.prompts)}; actions {', '.join(event.actions) or 'none'}"
            )
    return None


def _clock(t: float) -> str:
    minutes, seconds = divmod(max(t, 0.0), 60)
    return f"{int(minutes):02d}:{seconds:05.2f}"
