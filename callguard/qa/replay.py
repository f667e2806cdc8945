"""Replay a recorded call through a CallSession, its events to the replay's sinks as they happen."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from callguard.audio.files import probe
from callguard.core.config import Config
from callguard.core.events import Event
from callguard.core.facts import CallFacts
from callguard.core.redact import redact_event
from callguard.pipeline.realtime import drive
from callguard.pipeline.session import CallSession
from callguard.sinks.base import CallInfo, Sink
from callguard.stages.sidecar import load_sidecar


def replay_file(
    path: Path,
    config: Config,
    *,
    facts: CallFacts | None = None,
    lang: str = "",
    transcript: Path | None = None,
    session_factory: Callable[..., CallSession] = CallSession,
    realtime: bool = False,
    sinks: Sequence[Sink] = (),
    call: CallInfo | None = None,
    redact: bool = True,
    on_event: Callable[[Event], None] | None = None,
    **session_options: object,
) -> CallSession:
    """Run one recording through a new session; its events go to each of `sinks` in turn as they
    happen, as the call `call` (by default: the recording's path), with card numbers, phone numbers
    and e-mail addresses redacted unless `redact` is off (the session's own events stay whole: the
    pipeline reads what was said). The caller closes the sinks: several calls may share them.

    A sink that fails fails the replay (a QA output must not go missing quietly). `on_event`, a bare
    callback after the sinks, is kept for the callers that only collect events."""
    facts = facts or CallFacts()
    call = call or CallInfo(call_id=str(path), facts=facts.as_dict(), source="file")
    info = probe(path, config.audio)
    sidecar, skipped = load_sidecar(transcript) if transcript else (None, 0)
    session = session_factory(
        config, facts, lang=lang, transcript=sidecar, roles=info.roles, **session_options
    )
    if skipped:
        session.notice(
            f"{transcript}: {skipped} empty or punctuation-only tokens skipped", "sidecar_tokens_skipped"
        )

    def emit(event: Event) -> None:
        shown = redact_event(event) if redact else event
        for sink in sinks:
            sink.on_event(call, shown)
        if on_event is not None:
            on_event(shown)

    for event in session.events:
        emit(event)
    # The same feed as a live capture and the measured replays: blocks of whole frames, speakers in turn.
    drive(info, config, session, speed=1.0 if realtime else None, on_event=lambda event, _at: emit(event))
    return session
