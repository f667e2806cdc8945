"""A replay's outputs built from the one list of sinks, on a generated call: what the events file
holds is what the sinks were given, the timeline is those events' lines, and the fold of the file
read back is the call's outcome."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from callguard.core.config import Config, load_config
from callguard.core.events import CallSummary, Event, Prompt
from callguard.core.outcome import fold_call
from callguard.pipeline.session import SharedResources
from callguard.qa.batch import read_events
from callguard.qa.outputs import ReplayOutputs, replay_sinks
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
    assert [type(s) for s in sinks] == [JsonlSink, TimelineSink]
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
    assert stream.getvalue() == "".join(line + "\n" for e in events if (line := timeline_line(e)))
    outcome = fold_call(events)
    summary = next(e for e in events if isinstance(e, CallSummary))
    assert outcome.summary == summary and outcome.level_reached == summary.level_reached == "release"
    assert outcome.detections["insult"] >= 3 and outcome.ended and not outcome.failed
    assert [p.id for p in outcome.prompts] == [e.id for e in events if isinstance(e, Prompt)]
