"""Replay a recorded call through a CallSession, and show what the agent would have seen."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from callguard.audio.files import probe
from callguard.core.config import Config
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
from callguard.core.facts import CallFacts
from callguard.core.redact import redact_event
from callguard.pipeline.realtime import drive
from callguard.pipeline.session import CallSession
from callguard.stages.sidecar import load_sidecar

EventSink = Callable[[Event], None]


def replay_file(
    path: Path,
    config: Config,
    *,
    facts: CallFacts | None = None,
    lang: str = "",
    transcript: Path | None = None,
    session_factory: Callable[..., CallSession] = CallSession,
    realtime: bool = False,
    on_event: EventSink | None = None,
    redact: bool = True,
    **session_options: object,
) -> CallSession:
    """Run one recording through a new session; events go to `on_event` as they happen, with
    card numbers, phone numbers and e-mail addresses redacted unless `redact` is off (the
    session's own events stay whole: the pipeline reads what was said)."""
    info = probe(path, config.audio)
    sidecar, skipped = load_sidecar(transcript) if transcript else (None, 0)
    session = session_factory(
        config, facts, lang=lang, transcript=sidecar, roles=info.roles, **session_options
    )
    if skipped:
        session.notice(
            f"{transcript}: {skipped} empty or punctuation-only tokens skipped", "sidecar_tokens_skipped"
        )
    sink = on_event or (lambda _event: None)

    def emit(event: Event) -> None:
        sink(redact_event(event) if redact else event)

    for event in session.events:
        emit(event)
    # The same feed as a live capture and the measured replays: blocks of whole frames, speakers in turn.
    drive(info, config, session, speed=1.0 if realtime else None, on_event=lambda event, _at: emit(event))
    return session


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


def iter_timeline(events: list[Event]) -> Iterator[str]:
    for event in events:
        line = timeline_line(event)
        if line:
            yield line
