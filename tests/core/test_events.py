"""Events as JSONL holds them: `to_dict`, through JSON, and `Event.from_dict` back to the same event."""

from __future__ import annotations

import json
from typing import Any

import pytest

from callguard.core import events as events_module
from callguard.core.events import (
    ABUSIVE_RANK,
    EVENT_CLASSES,
    LEVELS,
    Abuse,
    AgentAction,
    AgentSpeech,
    BreakTaken,
    CallEnd,
    CallFailed,
    CallStart,
    CallSummary,
    Event,
    EventFormatError,
    HelpRequest,
    LanguageDecided,
    LevelChange,
    Match,
    NonSpeech,
    Notice,
    Prompt,
    Shouting,
    SpeechEnd,
    SpeechStart,
    Transcript,
    Word,
    level_rank,
)

# One of each, every field away from its default, so that a field from_dict drops shows.
SAMPLES: list[Event] = [
    SpeechStart(t=0.5, speaker="customer"),
    SpeechEnd(t=2.25, speaker="agent", duration=1.75),
    NonSpeech(t=3.0, speaker="customer", kind="music", duration=12.5),
    NonSpeech(t=4.0, speaker="customer", kind="tone", duration=0.5),
    NonSpeech(t=5.0, speaker="agent", kind="noise", duration=2.0),
    Shouting(t=6.0, speaker="customer", level_db=-8.5, baseline_db=-30.25, reason="baseline", duration=1.5),
    Shouting(t=6.5, speaker="agent", level_db=-3.0, baseline_db=None, reason="ceiling", duration=0.75),
    Transcript(
        t=7.0,
        speaker="customer",
        text="you idiot",
        words=(Word("you", 7.0, 7.2, 0.9), Word("idiot", 7.25, 7.6, 0.75)),
        final=True,
    ),
    Transcript(t=7.1, speaker="customer", text="you", words=(Word("you", 7.0, 7.2),), final=False),
    Abuse(
        t=7.6,
        speaker="customer",
        category="insult",
        severity=2,
        words=("idiot",),
        matches=(
            Match("insult", 2, ("idiot",), "idiot", directed=True),
            Match("insult", 3, ("you", "idiot"), "0.91", source="semantic", score=0.91, like=("you moron",)),
        ),
        text="you idiot",
        partial=True,
    ),
    LanguageDecided(t=8.0, speaker="system", lang="fr", source="call_info", evidence="facts"),
    AgentAction(t=9.0, speaker="agent", action="limits_stated"),
    AgentSpeech(t=9.5, speaker="agent", act="limits", score=0.8, like=("I will end this call",)),
    LevelChange(t=10.0, speaker="system", level="abusive", previous="tense", reason="3 insults"),
    Prompt(
        t=10.0,
        speaker="system",
        id="state_limits",
        level="abusive",
        title="State your limits",
        instruction="Say it once, calmly",
        text="Mark, I will end the call",
        next_step="transfer",
        alert=True,
        because=("abuse:insult@7.60(idiot)", "shouting@6.00(-8dBFS)"),
    ),
    Notice(t=11.0, speaker="system", message="no model installed", code="no_model"),
    CallStart(t=0.0, speaker="system"),
    HelpRequest(t=12.0, speaker="agent", message="please listen in"),
    BreakTaken(t=0.0, speaker="agent", minutes=7.5),
    CallEnd(t=85.0, speaker="system", duration=85.0, reason="file"),
    CallSummary(
        t=85.0,
        speaker="system",
        level_reached="release",
        detections={"insult": 3, "profanity": 1},
        prompts=("calm_down", "state_limits"),
        actions=("acknowledged",),
        playbook=("limits: stated at 40.0 s",),
    ),
    CallFailed(t=0.0, speaker="system", message="calls/x.wav: empty file"),
]


def through_json(event: Event) -> dict[str, Any]:
    data = json.loads(json.dumps(event.to_dict()))
    assert isinstance(data, dict)
    return data


def test_samples_cover_every_event_class_and_every_class_is_registered() -> None:
    module_classes = {
        value
        for value in vars(events_module).values()
        if isinstance(value, type) and issubclass(value, Event) and value is not Event
    }
    assert module_classes == set(EVENT_CLASSES), "an event class from_dict does not know"
    assert {type(event) for event in SAMPLES} == set(EVENT_CLASSES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda event: f"{type(event).__name__}-{event.type}")
def test_every_event_comes_back_from_its_json_form_as_it_was(event: Event) -> None:
    back = Event.from_dict(through_json(event))
    assert type(back) is type(event)
    assert back == event
    assert back.type == event.type
    for name, value in vars_of(back).items():  # tuples restored, not left as lists
        assert not isinstance(value, list), f"{name} came back as a list"


def vars_of(event: Event) -> dict[str, Any]:
    return {name: getattr(event, name) for name in event.__dataclass_fields__}


def test_nested_words_and_matches_are_rebuilt_as_their_classes() -> None:
    transcript = Event.from_dict(through_json(SAMPLES[7]))
    assert isinstance(transcript, Transcript) and all(isinstance(w, Word) for w in transcript.words)
    abuse = Event.from_dict(through_json(SAMPLES[9]))
    assert isinstance(abuse, Abuse) and all(isinstance(m, Match) for m in abuse.matches)
    assert abuse.matches[1].because.startswith("semantic 0.91")


def test_missing_optional_fields_take_their_defaults_and_whole_numbers_read_as_times() -> None:
    event = Event.from_dict({"type": "shouting", "t": 3, "speaker": "customer"})
    assert event == Shouting(t=3.0, speaker="customer")
    assert isinstance(event.t, float)


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"type": "weather", "t": 1.0, "speaker": "customer"}, ["'weather'", "unknown event type", "abuse"]),
        ({"t": 1.0, "speaker": "customer"}, ["'None'", "unknown event type"]),
        ({"type": "abuse", "t": 1.0}, ["'abuse'", "'speaker'", "missing"]),
        ({"type": "abuse", "t": 1.0, "speaker": "caller"}, ["'speaker'", "'customer', 'agent', 'system'"]),
        ({"type": "abuse", "t": 1.0, "speaker": "customer", "severity": "2"}, ["'severity'", "str '2'"]),
        ({"type": "abuse", "t": True, "speaker": "customer"}, ["'t'", "a number", "bool"]),
        ({"type": "abuse", "t": 1.0, "speaker": "customer", "colour": "red"}, ["'colour'", "unknown field"]),
        ({"type": "abuse", "t": 1.0, "speaker": "customer", "words": "idiot"}, ["'words'", "a list"]),
        (
            {"type": "abuse", "t": 1.0, "speaker": "customer", "matches": [{"category": "insult"}]},
            ["'matches[0].severity'", "missing"],
        ),
        (
            {"type": "final", "t": 1.0, "speaker": "customer", "words": [{"word": "hi", "start": "x"}]},
            ["'words[0].start'", "a number"],
        ),
        ({"type": "final", "t": 1.0, "speaker": "customer", "final": False}, ["'final'", "the type says"]),
        ({"type": "music", "t": 1.0, "speaker": "customer", "kind": "tone"}, ["'kind'", "the type says"]),
        ({"type": "shouting", "t": 1.0, "speaker": "agent", "baseline_db": "loud"}, ["a number or null"]),
        (
            {"type": "summary", "t": 1.0, "speaker": "system", "detections": {"insult": 1.5}},
            ["'detections.insult'", "whole number"],
        ),
    ],
)
def test_a_bad_event_names_its_type_and_field(data: dict[str, Any], names: list[str]) -> None:
    with pytest.raises(EventFormatError) as caught:
        Event.from_dict(data)
    for name in names:
        assert name in str(caught.value), str(caught.value)


def test_one_level_order_for_every_consumer() -> None:
    assert [level_rank(level) for level in LEVELS] == list(range(len(LEVELS)))
    assert level_rank("abusive") == ABUSIVE_RANK and level_rank("tense") < ABUSIVE_RANK
    assert level_rank("") == -1 and level_rank("furious") == -1
