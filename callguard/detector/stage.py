"""The detector's streaming stages: the customer's words become `Abuse` events, the agent's
words become `AgentSpeech` events.

`AbuseStage` fires each lexicon match once per utterance and only once its words are stable
(the same match in `stable_partials` successive partials, or the final). The semantic head
reads finals and stable partials, each time at least `partial_step_words` words have been added,
and adds the categories the lexicon did not fire; a threat can span two utterances ("you know
what i'm going to do" ... "i'm coming down there"), so a final that the first head finds
suspicious is also read, by the first head, with the end of the customer's utterance before it,
when that ended less than `context_s` earlier: one dear reading per final at most. The agent's
words are never read as the customer's abuse.

`AgentActStage` reads the agent's finals for the seeds' steps (stating limits, personalising,
announcing a transfer, releasing the call, apologising, summarising, empathising).

Both are event stages (`on_event(event) -> events`, `tick(t) -> events`, the shape of
`callguard.stages.base.EventStage`, which the layers contract keeps this package from importing):
they read transcripts and pass over every other event; time alone brings them nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from callguard.core.events import Abuse, AgentSpeech, Event, Match, Transcript
from callguard.detector.lexicon import Found, tokenise
from callguard.detector.semantic import Reading, SemanticClassifier, SemanticHit
from callguard.detector.text_detector import TextDetector, semantic_match

_MatchKey = tuple[str, str, tuple[str, ...], int]
CONTEXT_WORDS = 12  # of the previous utterance, read before the current one


def any_language() -> str | None:
    """The call's language before anything decides it: every lexicon is read."""
    return None


class AbuseStage:
    """Transcripts in, Abuse events out; partials fire only on stable words, once per utterance.

    `language` gives the call's language as each transcript arrives. The session passes its language
    stage's, which may decide from the very transcript this stage is about to read: the decision's
    event would reach this stage only after that transcript, so it is asked, not waited for.
    """

    def __init__(
        self,
        detector: TextDetector,
        stable_partials: int = 2,
        *,
        context_s: float = 15.0,
        partial_step_words: int = 3,
        language: Callable[[], str | None] = any_language,
    ) -> None:
        if stable_partials < 1:
            raise ValueError(f"stable_partials must be 1 or more, got {stable_partials}")
        self.detector = detector
        self.language = language
        self.stable_partials = stable_partials
        self.context_s = context_s
        self.partial_step_words = partial_step_words
        self._streaks: dict[_MatchKey, int] = {}  # how many successive partials held each match
        self._fired: set[_MatchKey] = set()
        self._categories: set[str] = set()  # fired in this utterance, by either source
        self._partial_words: tuple[str, ...] = ()
        self._partial_seen = 0  # successive partials with these same words
        self._scored: tuple[tuple[str, ...], Reading] = ((), Reading([], False))  # the last words read
        self._previous: tuple[tuple[str, ...], float, bool] | None = None  # words, end, fired a threat

    def on_event(self, event: Event) -> list[Event]:
        if not isinstance(event, Transcript) or event.speaker != "customer":
            return []
        surfaces, tokens, word_index = _tokens_of(event)
        keyed = _keyed(self.detector.find(surfaces, tokens, self.language()))
        out: list[Event] = []
        if event.final:
            fired = [
                _abuse(event, f.match, _start(event, word_index, f.start))
                for key, f in keyed
                if key not in self._fired
            ]
            self._categories.update(a.category for a in fired)
            out += fired
            out += self._semantic(event, final=True)
            self._end_utterance(event)
            return out
        streaks = {key: self._streaks.get(key, 0) + 1 for key, _ in keyed}
        self._streaks = streaks  # a match missing from this partial starts over
        for key, f in keyed:
            if streaks[key] >= self.stable_partials and key not in self._fired:
                self._fired.add(key)
                self._categories.add(f.match.category)
                out.append(_abuse(event, f.match, _start(event, word_index, f.start)))
        return out + self._semantic(event, final=False)

    def tick(self, t: float) -> list[Event]:
        return []  # stability is counted in partials, not in seconds

    # ---- the semantic head

    def _semantic(self, event: Transcript, final: bool) -> list[Abuse]:
        if self.detector.semantic is None:
            return []
        words = _words_of(event)
        if not final:
            self._partial_seen = self._partial_seen + 1 if words == self._partial_words else 1
            self._partial_words = words
            stable = self._partial_seen >= self.stable_partials
            if not stable or len(words) - len(self._scored[0]) < self.partial_step_words:
                return []
        hits = self._hits(words)
        out = [
            _abuse(event, semantic_match(hit, words), _word_start(event, 0))
            for hit in hits
            if hit.label not in self._categories
        ]
        self._categories.update(a.category for a in out)
        if final and "threat" not in self._categories:
            out += self._threat_with_context(event, words)
        return out

    def _hits(self, words: tuple[str, ...]) -> list[SemanticHit]:
        if words != self._scored[0]:
            assert self.detector.semantic is not None
            self._scored = (words, self.detector.semantic.read([words])[0])
        return self._scored[1].hits

    def _threat_with_context(self, event: Transcript, words: tuple[str, ...]) -> list[Abuse]:
        previous = self._previous
        start = event.words[0].start if event.words else event.t
        # Only an utterance the first head finds suspicious is read with the one before: the
        # menace of a two-part threat is in its second part.
        if (
            previous is None
            or previous[2]
            or start - previous[1] > self.context_s
            or not self._scored[1].suspicious
        ):
            return []
        assert self.detector.semantic is not None
        joined = previous[0][-CONTEXT_WORDS:] + words
        # The first head alone: one dear reading per utterance keeps a final within its time budget.
        hits = [h for h in self.detector.semantic.read([joined], depth=1)[0].hits if h.label == "threat"]
        if not hits:
            return []
        self._categories.add("threat")
        return [_abuse(event, semantic_match(hits[0], joined, source="context"), start)]

    def _end_utterance(self, event: Transcript) -> None:
        end = event.words[-1].end if event.words else event.t
        self._previous = (_words_of(event), end, "threat" in self._categories)
        self._streaks.clear()
        self._fired.clear()
        self._categories.clear()
        self._partial_words, self._partial_seen = (), 0
        self._scored = ((), Reading([], False))


def _tokens_of(event: Transcript) -> tuple[list[str], list[str], list[int] | None]:
    """The event's words, and for each the index of the timed Word it came from."""
    if not event.words:
        surfaces, tokens = tokenise(event.text)
        return surfaces, tokens, None
    surfaces, tokens, index = [], [], []
    for i, word in enumerate(event.words):
        s, t = tokenise(word.word)
        surfaces += s
        tokens += t
        index += [i] * len(s)
    return surfaces, tokens, index


def _keyed(found: list[Found]) -> list[tuple[_MatchKey, Found]]:
    """A key per match that survives re-segmentation: same words, same term, nth occurrence."""
    counts: dict[tuple[str, str, tuple[str, ...]], int] = {}
    keyed: list[tuple[_MatchKey, Found]] = []
    for f in found:
        base: tuple[str, str, tuple[str, ...]] = (f.match.category, f.match.term, f.match.words)
        counts[base] = counts.get(base, 0) + 1
        keyed.append(((*base, counts[base]), f))
    return keyed


def _words_of(event: Transcript) -> tuple[str, ...]:
    """The recogniser's words, as the semantic head reads them."""
    return tuple(w.word for w in event.words) if event.words else tuple(event.text.split())


def _start(event: Transcript, word_index: list[int] | None, token: int) -> float:
    """The call time of a lexicon match: the start of the timed word its first token came from."""
    return event.words[word_index[token]].start if word_index is not None else event.t


def _word_start(event: Transcript, word: int) -> float:
    return event.words[word].start if event.words else event.t


def _abuse(event: Transcript, m: Match, t: float) -> Abuse:
    return Abuse(
        t=t,
        speaker="customer",
        category=m.category,
        severity=m.severity,
        words=m.words,
        matches=(m,),
        text=event.text,
        partial=not event.final,
    )


# ---------------------------------------------------------------- the agent's speech acts


@dataclass(frozen=True)
class AgentNames:
    """Names that, in the agent's mouth, make the conversation personal (the call facts)."""

    words: frozenset[str]

    @classmethod
    def of(cls, *names: str) -> AgentNames:
        found: set[str] = set()
        for name in names:
            # a surname or a company name, not "mister" or "and"
            found.update(w for w in tokenise(name)[1] if len(w) >= 3)
        return cls(frozenset(found))


class AgentActStage:
    """The agent's finals in, `AgentSpeech` events out: each act at most once per utterance.

    One utterance can carry two steps ("my name is sam i want to solve this and i can do so when
    the language stays appropriate"): a long one is also read in overlapping windows of
    `window_words`, and every act found in the whole or in a window counts, stamped at the end
    of the words that said it.
    """

    def __init__(
        self, classifier: SemanticClassifier, names: AgentNames | None = None, window_words: int = 10
    ) -> None:
        self.classifier = classifier
        self.names = names or AgentNames(frozenset())
        self.window_words = window_words

    def on_event(self, event: Event) -> list[Event]:
        if not isinstance(event, Transcript) or event.speaker != "agent" or not event.final:
            return []
        words = _words_of(event)
        if not words:
            return []
        spans = _windows(len(words), self.window_words)
        found: dict[str, tuple[SemanticHit, int]] = {}  # act -> best hit, and the end word of its span
        for (_, end), hits in zip(spans, self.classifier.hits([words[a:b] for a, b in spans]), strict=True):
            for hit in hits:
                if hit.label != "none" and (hit.label not in found or hit.score > found[hit.label][0].score):
                    found[hit.label] = (hit, end)
        out: list[Event] = [
            AgentSpeech(
                t=_word_end(event, end - 1),
                speaker="agent",
                act=hit.label,  # type: ignore[arg-type]
                score=hit.score,
                like=tuple(text for text, _ in hit.like),
            )
            for hit, end in found.values()
        ]
        if "personalise" not in found:
            said = set(tokenise(" ".join(words))[1]) & self.names.words
            if said:
                why = f"said {', '.join(sorted(said))}"
                out.append(
                    AgentSpeech(
                        t=_word_end(event, len(words) - 1),
                        speaker="agent",
                        act="personalise",
                        score=1.0,
                        like=(why,),
                    )
                )
        return sorted(out, key=lambda e: e.t)

    def tick(self, t: float) -> list[Event]:
        return []  # an act is in the words said, not in the time since


def _windows(n: int, size: int) -> list[tuple[int, int]]:
    """The whole utterance, and for a long one, windows of `size` words overlapping by half."""
    spans = [(0, n)]
    if n > size:
        step = max(size // 2, 1)
        spans += [(a, min(a + size, n)) for a in range(0, n - size + step, step)]
    return spans


def _word_end(event: Transcript, word: int) -> float:
    return event.words[word].end if event.words and word < len(event.words) else event.t
