"""Transcript sidecars: words a recording platform already transcribed, in place of the recogniser.

Format: `{"words": [{"word": "...", "start": 1.2, "end": 1.45, "speaker": "customer", "conf": 0.9}]}`,
times in seconds of call time, `conf` optional. The feeder replays the words as
a streaming recogniser would: a growing partial at each word's end, and a final
when the utterance ends (a pause longer than `UTTERANCE_GAP_S`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from callguard.core.errors import ConfigError
from callguard.core.events import ROLES, Event, Role, Transcript, Word

UTTERANCE_GAP_S = 0.6


_WORDLIKE = re.compile(r"\w")


@dataclass(frozen=True, slots=True)
class Utterance:
    speaker: Role
    words: tuple[Word, ...]


def load_transcript(path: Path) -> dict[Role, list[Utterance]]:
    """Read a sidecar into utterances per speaker, checking every word."""
    return load_sidecar(path)[0]


def load_sidecar(path: Path) -> tuple[dict[Role, list[Utterance]], int]:
    """The sidecar's utterances per speaker, and how many tokens were skipped: empty or only
    punctuation, as other platforms write them (AWS Transcribe makes each comma an item, with no
    times). Any other malformed entry is an error that names it."""
    skipped = 0
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "", "transcript file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(path, "", f"is not a readable JSON transcript ({exc})") from None
    if not isinstance(document, dict) or not isinstance(document.get("words"), list):
        raise ConfigError(path, "words", 'expected {"words": [{"word", "start", "end", "speaker"}, ...]}')
    by_speaker: dict[Role, list[Word]] = {role: [] for role in ROLES}
    for i, item in enumerate(document["words"]):
        key = f"words[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(path, key, "must be an object")
        unknown = set(item) - {"word", "start", "end", "speaker", "conf"}
        if unknown:
            raise ConfigError(path, f"{key}.{sorted(unknown)[0]}", "unknown key")
        word = item.get("word")
        if isinstance(word, str) and not _WORDLIKE.search(word):
            skipped += 1
            continue
        speaker = item.get("speaker", "customer")
        if speaker not in ROLES:
            raise ConfigError(path, f"{key}.speaker", f"must be 'customer' or 'agent', got {speaker!r}")
        if not isinstance(word, str):
            raise ConfigError(path, f"{key}.word", f"must be a string, got {word!r}")
        times = []
        for field in ("start", "end"):
            value = item.get(field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(path, f"{key}.{field}", f"must be a number of seconds >= 0, got {value!r}")
            times.append(float(value))
        if times[1] < times[0]:
            raise ConfigError(path, f"{key}.end", f"ends ({times[1]}) before it starts ({times[0]})")
        conf = item.get("conf", 1.0)
        if not isinstance(conf, (int, float)) or isinstance(conf, bool):
            raise ConfigError(path, f"{key}.conf", f"must be a number, got {conf!r}")
        by_speaker[speaker].append(
            Word(word=word.strip().lower(), start=times[0], end=times[1], conf=float(conf))
        )
    utterances = {
        role: _utterances(role, sorted(words, key=lambda w: w.start)) for role, words in by_speaker.items()
    }
    return utterances, skipped


def _utterances(speaker: Role, words: list[Word]) -> list[Utterance]:
    groups: list[list[Word]] = []
    for word in words:
        if groups and word.start - groups[-1][-1].end <= UTTERANCE_GAP_S:
            groups[-1].append(word)
        else:
            groups.append([word])
    return [Utterance(speaker=speaker, words=tuple(g)) for g in groups]


class SidecarFeeder:
    """Emits one speaker's sidecar words as partials and finals as call time passes: an event stage
    that stands in for the recogniser, driven by time alone (`tick` at the speaker's audio clock)."""

    def __init__(self, utterances: list[Utterance]) -> None:
        self._utterances = utterances
        self._next_utterance = 0
        self._next_word = 0

    def on_event(self, event: Event) -> list[Event]:
        return []  # the words are already written: nothing the call says changes them

    def tick(self, t: float) -> list[Event]:
        """The transcripts of the words that ended by `t` (math.inf: all that are left)."""
        out: list[Event] = []
        while self._next_utterance < len(self._utterances):
            utterance = self._utterances[self._next_utterance]
            words = utterance.words
            while self._next_word < len(words) and words[self._next_word].end <= t:
                self._next_word += 1
                if self._next_word < len(words):
                    out.append(self._transcript(utterance, words[: self._next_word], final=False))
            if self._next_word < len(words):
                break
            out.append(self._transcript(utterance, words, final=True))
            self._next_utterance += 1
            self._next_word = 0
        return out

    @staticmethod
    def _transcript(utterance: Utterance, words: tuple[Word, ...], final: bool) -> Transcript:
        return Transcript(
            t=words[0].start,
            speaker=utterance.speaker,
            text=" ".join(w.word for w in words),
            words=words,
            final=final,
        )
