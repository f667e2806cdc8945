"""A replay's outputs built from the one list of sinks, on a generated call: what the events file
holds is what the sinks were given, the timeline is those events' lines, and the fold of the file
read back is the call's outcome."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from callguard.core.config import Config, load_config
from callguard.core.events import Abuse, CallEnd, CallSummary, Event, Prompt, Transcript
from callguard.core.outcome import fold_call
from callguard.pipeline.session import SharedResources
from callguard.qa.batch import read_events
from callguard.qa.outputs import ReplayOutputs, TimeOrdered, replay_sinks
from callguard.qa.replay import replay_file
from callguard.sinks.base import CallInfo
from callguard.sinks.jsonl import JsonlSink
from callguard.sinks.timeline import TimelineSink, timeline_line


class Collected:
    """A sink that keeps what it is given, to compare the other sinks' outputs with."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.calls: set[str] = set()
        self.closed = False

    def on_event(self, call: CallInfo, event: Event) -> None:
        self.calls.add(call.call_id)
        self.events.append(event)

    def close(self) -> None:
        self.closed = True


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config()


def test_replay_sinks_build_what_the_outputs_ask_for(tmp_path: Path) -> None:
    assert replay_sinks(ReplayOutputs()) == []
    stream = io.StringIO()
    sinks = replay_sinks(ReplayOutputs(events=tmp_path / "a.events.jsonl", events_part=True, timeline=stream))
    assert [type(s) for s in sinks] == [JsonlSink, TimeOrdered]
    assert isinstance(sinks[1], TimeOrdered) and isinstance(sinks[1].sink, TimelineSink)
    for sink in sinks:
        sink.close()
    assert (tmp_path / "a.events.jsonl").exists()


def test_a_replay_writes_its_events_file_and_timeline_through_its_sinks(
    config: Config, fixture_call: Callable[[str], Path], tmp_path: Path
) -> None:
    wav = fixture_call("abusive_en")
    path = tmp_path / "abusive_en.events.jsonl"
    stream = io.StringIO()
    collected = Collected()
    sinks = [*replay_sinks(ReplayOutputs(events=path, events_part=True, timeline=stream)), collected]
    call = CallInfo(call_id="abusive_en", source="file")
    try:
        replay_file(
            wav,
            config,
            transcript=wav.with_suffix(".transcript.json"),
            sinks=sinks,
            call=call,
            shared=SharedResources.build(config),
            history=False,
        )
        assert not path.exists(), "the events file has its name only once the call is done"
        assert not collected.closed, "replay_file leaves the sinks to their owner"
    finally:
        for sink in sinks:
            sink.close()
    assert collected.calls == {"abusive_en"}
    events = read_events(path)
    assert events == collected.events
    # the timeline is the events' lines in time order (what was said first at one time), while the
    # events file keeps the order they were known in: a final comes after what its partials caused
    in_time = sorted(events, key=lambda e: (e.t, 0 if isinstance(e, Transcript) and e.final else 1))
    assert in_time != events
    assert stream.getvalue() == "".join(line + "\n" for e in in_time if (line := timeline_line(e)))
    outcome = fold_call(events)
    summary = next(e for e in events if isinstance(e, CallSummary))
    assert outcome.summary == summary and outcome.level_reached == summary.level_reached == "release"
    assert outcome.detections["insult"] >= 3 and outcome.ended and not outcome.failed
    assert [p.id for p in outcome.prompts] == [e.id for e in events if isinstance(e, Prompt)]


def test_the_timeline_waits_for_an_open_utterance_and_lets_all_go_at_the_call_end() -> None:
    collected = Collected()
    ordered = TimeOrdered(collected, slack_s=2.0)
    call = CallInfo(call_id="c", source="file")
    said = Transcript(t=24.0, speaker="customer", text="you are an idiot", final=True)
    partial = Transcript(t=24.0, speaker="customer", text="you are", final=False)
    insult = Abuse(t=24.7, speaker="customer", category="insult", words=("idiot",))
    for event in (
        partial,
        insult,
        Prompt(t=25.2, speaker="agent", id="p", level="abusive"),
    ):
        ordered.on_event(call, event)
    assert collected.events == [], "nothing after the open utterance's start goes before its final"
    ordered.on_event(call, said)
    assert collected.events == [], "the final closes the utterance; the slack still holds its time"
    ordered.on_event(call, Abuse(t=27.0, speaker="customer", category="insult", words=("moron",)))
    assert collected.events == [said, partial, insult], "what was said, then what it caused"
    ordered.on_event(call, CallEnd(t=40.0, speaker="system"))
    assert [e.t for e in collected.events] == [24.0, 24.0, 24.7, 25.2, 27.0, 40.0]
    ordered.close()
    assert collected.closed
