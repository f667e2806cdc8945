"""Transcript sidecars: checked word by word, replayed as a streaming recogniser would."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from callguard.core.errors import ConfigError
from callguard.core.events import Transcript
from callguard.stages.sidecar import UTTERANCE_GAP_S, SidecarFeeder, Utterance, load_sidecar, load_transcript
from callguard.testing import run_events


def sidecar(tmp_path: Path, words: Any, name: str = "call.transcript.json") -> Path:
    path = tmp_path / name
    path.write_text(words if isinstance(words, str) else json.dumps({"words": words}), encoding="utf-8")
    return path


def w(word: str, start: float, end: float, speaker: str = "customer", **extra: Any) -> dict[str, Any]:
    return {"word": word, "start": start, "end": end, "speaker": speaker, **extra}


CALL = [
    w("hello", 0.5, 0.8, "agent"),
    w("how", 0.9, 1.0, "agent"),
    w("can", 1.05, 1.2, "agent"),
    w("I", 1.2, 1.3, "agent"),
    w("help", 1.3, 1.6, "agent"),
    # the customer, overlapping the agent's last word, listed out of order
    w("useless", 2.6, 3.0, conf=0.8),
    w("You", 2.0, 2.2, conf=0.95),
    w("are", 2.2, 2.4),
    w("again", 5.0, 5.4),  # 2 s later: a new utterance
]


# ---------------------------------------------------------------------------
# Loading


def test_load_splits_speakers_and_utterances(tmp_path: Path) -> None:
    utterances = load_transcript(sidecar(tmp_path, CALL))
    assert set(utterances) == {"customer", "agent"}
    agent, customer = utterances["agent"], utterances["customer"]
    assert [[x.word for x in u.words] for u in agent] == [["hello", "how", "can", "i", "help"]]
    assert [[x.word for x in u.words] for u in customer] == [["you", "are", "useless"], ["again"]]
    assert all(u.speaker == "customer" for u in customer) and agent[0].speaker == "agent"
    first = customer[0].words
    assert [(x.start, x.end, x.conf) for x in first] == [(2.0, 2.2, 0.95), (2.2, 2.4, 1.0), (2.6, 3.0, 0.8)]


def test_speaker_defaults_to_the_customer(tmp_path: Path) -> None:
    utterances = load_transcript(sidecar(tmp_path, [{"word": "hi", "start": 1, "end": 1.2}]))
    assert [u.words[0].word for u in utterances["customer"]] == ["hi"]
    assert utterances["agent"] == []


def test_utterance_gap(tmp_path: Path) -> None:
    gap = UTTERANCE_GAP_S
    words = [
        w("one", 0.0, 0.5),
        w("two", 0.5 + gap - 0.01, 1.5 + gap),
        w("three", 1.5 + 2 * gap + 0.01, 3 + 2 * gap),
    ]
    utterances = load_transcript(sidecar(tmp_path, words))["customer"]
    assert [[x.word for x in u.words] for u in utterances] == [["one", "two"], ["three"]]


def test_empty_word_list(tmp_path: Path) -> None:
    assert load_transcript(sidecar(tmp_path, [])) == {"customer": [], "agent": []}


def test_empty_and_punctuation_tokens_are_skipped(tmp_path: Path) -> None:
    """AWS Transcribe writes each punctuation mark as an item of its own, with no times."""
    words = [w("hello", 0, 0.4), {"word": ",", "speaker": "customer"}, w("", 0.5, 0.5), w("...", 0.6, 0.6)]
    words.append(w("there", 0.7, 1.0))
    utterances, skipped = load_sidecar(sidecar(tmp_path, words))
    assert skipped == 3
    assert [[x.word for x in u.words] for u in utterances["customer"]] == [["hello", "there"]]


@pytest.mark.parametrize(
    ("words", "key", "problem"),
    [
        ([w("a", 0, 1), w("b", 1, 2), w("c", 2, 3), w("d", -1, 3)], "words[3].start", "got -1"),
        ([w("a", 0, 1), w("b", 1, 2), w("c", 2, 3), w("d", "3.0", 4)], "words[3].start", "got '3.0'"),
        ([w("a", 0, 1), {"word": "b", "start": 1.0}], "words[1].end", "got None"),
        ([w("a", True, 1)], "words[0].start", "got True"),
        ([w("a", 2.0, 1.5)], "words[0].end", "ends (1.5) before it starts (2.0)"),
        ([w("a", 0, 1, "caller")], "words[0].speaker", "got 'caller'"),
        ([w("a", 0, 1, ["agent"])], "words[0].speaker", "got ['agent']"),
        ([{"start": 0, "end": 1}], "words[0].word", "must be a string, got None"),
        ([w(7, 0, 1)], "words[0].word", "must be a string, got 7"),
        ([w("a", 0, 1, conf="high")], "words[0].conf", "got 'high'"),
        ([w("a", 0, 1, confidence=0.5)], "words[0].confidence", "unknown key"),
        (["hello"], "words[0]", "must be an object"),
    ],
)
def test_bad_words_name_the_key(tmp_path: Path, words: list[Any], key: str, problem: str) -> None:
    path = sidecar(tmp_path, words)
    with pytest.raises(ConfigError) as caught:
        load_transcript(path)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(caught.value).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize("text", ['{"word": []}', "[1, 2]", '{"words": {"word": "a"}}'])
def test_wrong_shape(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_transcript(sidecar(tmp_path, text))
    assert caught.value.key == "words"


def test_not_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a readable JSON transcript") as caught:
        load_transcript(sidecar(tmp_path, '{"words": [ '))
    assert caught.value.key == ""


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="transcript file not found"):
        load_transcript(tmp_path / "none.json")


# ---------------------------------------------------------------------------
# Replaying


def replay(
    utterances: list[Utterance], step: float = 0.03, until: float = 8.0
) -> list[tuple[float, Transcript]]:
    """Tick a feeder frame by frame as the pipeline does; each transcript with the time it came out (the
    times are the point: not `run_events`, which returns the events alone)."""
    feeder = SidecarFeeder(utterances)
    out = []
    for i in range(1, round(until / step) + 1):
        now = i * step
        out.extend((now, transcript) for transcript in feeder.tick(now))
    out.extend((math.inf, transcript) for transcript in feeder.tick(math.inf))
    return out


def test_partials_grow_word_by_word_and_the_final_ends_the_utterance(tmp_path: Path) -> None:
    customer = load_transcript(sidecar(tmp_path, CALL))["customer"]
    out = replay(customer)
    assert [(t.text, t.final) for _, t in out] == [
        ("you", False),
        ("you are", False),
        ("you are useless", True),
        ("again", True),
    ]
    # Each comes out once its last word has been heard, not before, and not much after.
    for now, transcript in out:
        heard = transcript.words[-1].end
        assert heard <= now < heard + 0.03 + 1e-9
        assert transcript.t == transcript.words[0].start
        assert transcript.speaker == "customer"
        assert transcript.text == " ".join(x.word for x in transcript.words)


def test_one_feeder_per_speaker(tmp_path: Path) -> None:
    utterances = load_transcript(sidecar(tmp_path, CALL))
    agent = [t for _, t in replay(utterances["agent"])]
    assert [t.text for t in agent] == [
        "hello",
        "hello how",
        "hello how can",
        "hello how can i",
        "hello how can i help",
    ]
    assert [t.final for t in agent] == [False] * 4 + [True]
    assert all(t.speaker == "agent" for t in agent)


def test_a_big_step_emits_everything_due_in_order(tmp_path: Path) -> None:
    customer = load_transcript(sidecar(tmp_path, CALL))["customer"]
    feeder = SidecarFeeder(customer)
    assert feeder.tick(1.9) == []
    everything = feeder.tick(10.0)
    assert [(t.text, t.final) for t in everything] == [
        ("you", False),
        ("you are", False),
        ("you are useless", True),
        ("again", True),
    ]
    assert feeder.tick(20.0) == []


def test_the_calls_events_change_nothing(tmp_path: Path) -> None:
    """The words are written already: what the call says (its own words, a prompt...) is passed over."""
    customer = load_transcript(sidecar(tmp_path, CALL))["customer"]
    heard = [t for _, t in replay(customer)]
    feeder = SidecarFeeder(customer)
    assert run_events(feeder, heard, tick_at=[1.9]) == []  # nothing ended by 1.9 s, whatever was said
    assert run_events(feeder, heard, tick_at=[math.inf]) == heard


def test_the_end_of_the_call_flushes_the_rest(tmp_path: Path) -> None:
    customer = load_transcript(sidecar(tmp_path, CALL))["customer"]
    feeder = SidecarFeeder(customer)
    assert [t.text for t in feeder.tick(2.3)] == ["you"]
    assert [(t.text, t.final) for t in feeder.tick(math.inf)] == [
        ("you are", False),
        ("you are useless", True),
        ("again", True),
    ]
