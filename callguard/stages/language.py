"""The call's language: given (command line, call facts, config) or decided from the words.

`auto` counts the commonest function words of English and French in final
results; once enough are heard and one language leads by a margin, it decides,
once, and says so as an event. An event stage: transcripts in, `LanguageDecided` out,
a given language at the first tick of the call.
"""

from __future__ import annotations

import re
from typing import Literal

from callguard.core.config import LanguageConfig
from callguard.core.events import Event, LanguageDecided, Transcript

Lang = Literal["en", "fr"]
LANGUAGE_NAMES = {"en": "English", "fr": "French"}

_FUNCTION_WORDS: dict[Lang, frozenset[str]] = {
    "en": frozenset(
        "the a an and or but is are was were be been i you he she it we they my your his her our "
        "their this that these those to of in on at for with from not no do does did have has had "
        "what why how when where can could will would should me him them us am don't it's i'm "
        "you're there here just since more very also still always never nothing all so because "
        "about before after without been being any some than then".split()
    ),
    "fr": frozenset(
        "le la les un une des et ou mais est sont était été je tu il elle nous vous ils elles mon "
        "ma mes ton ta votre vos son sa ses notre nos ce cette ces de du au aux en dans sur pour "
        "avec par pas ne non que qui quoi pourquoi comment quand où c'est j'ai suis êtes avez "
        "fait moi toi lui leur y ça depuis plus très aussi encore toujours jamais rien tout tous "
        "bien alors donc parce comme avant après chez sans sous vers ai avons ont été".split()
    ),
}


_FRENCH_MARK = re.compile(r"[àâçéèêëîïôûùüœ]|^(?:[cdjlmnst]|qu)'")


class LanguageDecider:
    def __init__(
        self,
        config: LanguageConfig,
        given: Lang | None = None,
        source: Literal["cli", "call_info", "config"] = "config",
    ) -> None:
        self._config = config
        self._given = given
        self._source = source
        self._counts: dict[Lang, int] = {"en": 0, "fr": 0}
        self._started = False
        self.lang: Lang | None = None

    def tick(self, t: float) -> list[Event]:
        """The first tick starts the call: a given language is decided at once, at 0 s."""
        if self._started:
            return []
        self._started = True
        if self._given is None or self.lang is not None:
            return []
        self.lang = self._given
        return [LanguageDecided(t=0.0, speaker="system", lang=self._given, source=self._source)]

    def on_event(self, event: Event) -> list[Event]:
        if self.lang is not None or not isinstance(event, Transcript) or not event.final:
            return []
        # Sidecar and platform transcripts keep capitals, punctuation and typographic apostrophes.
        for word in re.findall(r"[\w']+", event.text.lower().replace("\u2019", "'")):
            for lang, vocabulary in _FUNCTION_WORDS.items():
                self._counts[lang] += word in vocabulary
            # An accented letter or an elision (j', c', qu'...) is French whatever the word.
            if word not in _FUNCTION_WORDS["fr"] and _FRENCH_MARK.search(word):
                self._counts["fr"] += 1
        en, fr = self._counts["en"], self._counts["fr"]
        if en + fr < self._config.auto_min_words:
            return []
        leader: Lang = "en" if en >= fr else "fr"
        lead, other = max(en, fr), min(en, fr)
        if lead < self._config.auto_margin * max(other, 1):
            return []
        self.lang = leader
        decided_at = event.words[-1].end if event.words else event.t
        return [
            LanguageDecided(
                t=decided_at,
                speaker=event.speaker,
                lang=leader,
                source="auto",
                evidence=f"function words en={en} fr={fr}",
            )
        ]
