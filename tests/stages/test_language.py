"""The call's language: given at once with its source, or decided once from enough final words."""

from __future__ import annotations

import gzip
import random
import re
from pathlib import Path

import pytest

from callguard.core.config import LanguageConfig
from callguard.core.events import LanguageDecided, Transcript, Word
from callguard.stages.language import LanguageDecider
from callguard.testing import run_events

ASTERISK_TEXTS = "/usr/share/doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"


def final(text: str, t: float = 1.0, speaker: str = "customer", partial: bool = False) -> Transcript:
    """A final result as vosk gives it: words spread 0.3 s apart from `t`."""
    words = tuple(Word(w, t + 0.3 * i, t + 0.3 * i + 0.25) for i, w in enumerate(text.split()))
    return Transcript(t=t, speaker=speaker, text=text, words=words, final=not partial)  # type: ignore[arg-type]


def decide(decider: LanguageDecider, texts: list[str]) -> list[LanguageDecided]:
    """The texts as finals 3 s apart; what the decider says, each checked to be a decision."""
    out = run_events(decider, [final(text, t=float(3 * i)) for i, text in enumerate(texts)])
    assert all(isinstance(e, LanguageDecided) for e in out)
    return [e for e in out if isinstance(e, LanguageDecided)]


def prompt_texts(lang: str) -> list[str]:
    """The real prompts' texts (Asterisk core sounds), written as vosk writes: lower case, no punctuation."""
    path = Path(ASTERISK_TEXTS.format(lang=lang))
    if not path.exists():
        pytest.skip(f"{path} is not installed")
    texts = []
    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.startswith(";") or ":" not in line:
                continue
            text = line.split(":", 1)[1].strip()
            if text and not text.startswith(("[", "(")):
                texts.append(" ".join(re.findall(r"[\w']+", text.lower())))
    return [t for t in texts if t]


ENGLISH = [
    "i have been waiting for my refund for three weeks",
    "why is it that nobody can tell me where my money is",
    "this is the third time i call you people",
]
FRENCH = [
    "j'attends mon remboursement depuis trois semaines",
    "pourquoi est-ce que personne ne peut me dire où est mon argent",
    "c'est la troisième fois que je vous appelle",
]


# ---------------------------------------------------------------------------
# Auto


@pytest.mark.parametrize(("texts", "lang"), [(ENGLISH, "en"), (FRENCH, "fr")])
def test_auto_decides_the_language_of_the_words(texts: list[str], lang: str) -> None:
    decider = LanguageDecider(LanguageConfig())
    assert decider.tick(0.0) == []  # the call starts: nothing given
    assert decider.lang is None
    decided = decide(decider, texts)
    assert len(decided) == 1
    event = decided[0]
    assert (event.lang, event.source, event.speaker) == (lang, "auto", "customer")
    assert "en=" in event.evidence and "fr=" in event.evidence
    assert decider.lang == lang


def test_decides_when_the_words_are_heard_not_before() -> None:
    decider = LanguageDecider(LanguageConfig(auto_min_words=8))
    assert decider.on_event(final(ENGLISH[0], t=1.0)) == []  # "i have for my for": 5 function words
    decided = decider.on_event(final(ENGLISH[1], t=5.0))
    assert len(decided) == 1
    assert decided[0].t == pytest.approx(5.0 + 0.3 * 11 + 0.25), "at the end of the deciding utterance"


def test_needs_enough_function_words() -> None:
    decider = LanguageDecider(LanguageConfig(auto_min_words=8))
    assert decide(decider, ["the the the", "the the the the"]) == []  # 7
    assert len(decide(decider, ["the"])) == 1  # 8


def test_needs_a_clear_margin() -> None:
    decider = LanguageDecider(LanguageConfig(auto_min_words=4, auto_margin=2.0))
    assert decide(decider, ["the you le je", "and et"]) == []  # 3 en, 3 fr
    assert len(decide(decider, ["the and it is"])) == 1  # 7 en, 3 fr: more than 2 to 1
    assert decider.lang == "en"


def test_accents_and_elisions_count_as_french() -> None:
    decider = LanguageDecider(LanguageConfig(auto_min_words=3, auto_margin=3.0))
    assert decide(decider, ["l'imprimante réparée"]) == []  # 2 French marks
    assert len(decide(decider, ["qu'elle"])) == 1
    assert decider.lang == "fr"


def test_tied_counts_do_not_decide() -> None:
    decider = LanguageDecider(LanguageConfig(auto_min_words=2, auto_margin=1.5))
    assert decide(decider, ["le the", "la a", "je i"]) == []
    assert decider.lang is None


def test_decides_once() -> None:
    decider = LanguageDecider(LanguageConfig())
    assert len(decide(decider, ENGLISH)) == 1
    assert decide(decider, FRENCH * 5) == []
    assert decider.lang == "en"


def test_partials_do_not_count() -> None:
    decider = LanguageDecider(LanguageConfig())
    for text in ENGLISH * 3:
        assert decider.on_event(final(text, partial=True)) == []
    assert decider.lang is None


def test_words_without_function_words_do_not_decide() -> None:
    decider = LanguageDecider(LanguageConfig())
    assert decide(decider, ["refund refund refund money money", "printer broken again"] * 5) == []


def test_platform_text_with_capitals_and_punctuation() -> None:
    """Sidecars keep what the platform wrote: capitals, commas, typographic apostrophes."""
    decider = LanguageDecider(LanguageConfig())
    assert (
        decide(decider, ["C’est la troisième fois, non ?", "Je vous le dis: ça ne va pas !"])[0].lang == "fr"
    )
    decider = LanguageDecider(LanguageConfig())
    assert decide(decider, ["Why? Because you, and the bank, are not helping me at all."])[0].lang == "en"


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_real_prompt_texts(lang: str) -> None:
    """Twenty random real prompts in a language: auto always picks that language."""
    texts = prompt_texts(lang)
    rng = random.Random(11)
    for _ in range(50):
        decider = LanguageDecider(LanguageConfig())
        decided = decide(decider, rng.sample(texts, 20))
        assert [d.lang for d in decided] == [lang]


# ---------------------------------------------------------------------------
# Given


@pytest.mark.parametrize("source", ["cli", "call_info", "config"])
@pytest.mark.parametrize("lang", ["en", "fr"])
def test_a_given_language_is_decided_at_once_with_its_source(lang: str, source: str) -> None:
    decider = LanguageDecider(LanguageConfig(), given=lang, source=source)  # type: ignore[arg-type]
    decided = run_events(decider, [], tick_at=[0.0, 0.5, 1.0])  # decided at the first tick, once
    assert decided == [LanguageDecided(t=0.0, speaker="system", lang=lang, source=source)]  # type: ignore[arg-type]
    assert decider.lang == lang
    other = FRENCH if lang == "en" else ENGLISH
    assert decide(decider, other * 5) == [], "the words never overrule a given language"
    assert decider.lang == lang
