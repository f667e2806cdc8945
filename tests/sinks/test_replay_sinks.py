"""The replay's outputs as sinks: the events file (written whole or as .part, renamed on close) and
the timeline written to a stream."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from callguard.core.events import (
    Abuse,
    CallEnd,
    Event,
    LevelChange,
    Prompt,
    SpeechStart,
    Transcript,
    Word,
)
from callguard.sinks.base import CallInfo
from callguard.sinks.jsonl import JsonlSink
from callguard.sinks.timeline import TimelineSink, timeline_line

CALL = CallInfo("0412", {"agent_name": "Sam"}, "file")
EVENTS: list[Event] = [
    SpeechStart(t=0.5, speaker="customer"),
    Transcript(t=1.0, speaker="customer", text="you", words=(Word("you", 0.5, 0.7),)),
    Transcript(t=1.5, speaker="customer", text="you idiot", words=(Word("idiot", 0.8, 1.2),), final=True),
    Abuse(t=1.5, speaker="customer", category="insult", severity=2, words=("idiot",)),
    LevelChange(t=1.5, speaker="system", level="tense", previous="calm", reason="an insult"),
    Prompt(t=1.5, speaker="system", id="calm_down", level="tense", title="Stay calm", text="I hear you"),
    CallEnd(t=3.0, speaker="system", duration=3.0, reason="file"),
]


def read_back(path: Path) -> tuple[set[str], list[Event]]:
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    calls = {record.pop("call") for record in records}
    return calls, [Event.from_dict(record) for record in records]


def test_events_file_holds_every_event_of_the_call_and_reads_back_typed(tmp_path: Path) -> None:
    path = tmp_path / "out" / "0412.events.jsonl"
    sink = JsonlSink(path)
    for event in EVENTS:
        sink.on_event(CALL, event)
    sink.close()
    sink.close()  # closing twice is harmless
    calls, events = read_back(path)
    assert calls == {"0412"} and events == EVENTS
    with pytest.raises(ValueError, match="after the sink was closed"):
        sink.on_event(CALL, EVENTS[0])


def test_a_part_file_gets_its_name_only_when_the_sink_closes(tmp_path: Path) -> None:
    path = tmp_path / "0412.events.jsonl"
    sink = JsonlSink(path, part=True)
    sink.on_event(CALL, EVENTS[0])
    assert not path.exists() and (tmp_path / "0412.events.jsonl.part").exists()
    sink.close()
    assert path.exists() and not (tmp_path / "0412.events.jsonl.part").exists()
    assert read_back(path)[1] == EVENTS[:1]


def test_timeline_writes_a_line_per_event_worth_showing_to_its_stream() -> None:
    stream = io.StringIO()
    sink = TimelineSink(stream)
    for event in EVENTS:
        sink.on_event(CALL, event)
    sink.close()
    text = stream.getvalue()
    assert text == "".join(line + "\n" for event in EVENTS if (line := timeline_line(event)))
    assert timeline_line(EVENTS[0]) is None and timeline_line(EVENTS[1]) is None  # too fine to show
    assert '00:01.50  customer said: "you idiot"' in text
    assert "PROMPT [tense] Stay calm" in text and 'say: "I hear you"' in text
    assert "level calm -> tense" in text
