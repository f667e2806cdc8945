"""One utterance in, one detection out: the lexicons and the semantic head together.

Lexicon hits stay (fast, explainable, the site's own words); the semantic head adds the
categories they did not find. Each match says why (`Match.because`): the lexicon entry, or
the labelled examples the utterance is nearest to. Venting at a thing is profanity, abuse
aimed at the agent or the staff is an insult, harm to people or property is a threat.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callguard.core.config import Config
from callguard.core.events import CATEGORIES, Category, Match
from callguard.detector.corpus import CorpusReport, LabelledLine, read_corpus, score_lines
from callguard.detector.encoder import SentenceEncoder, shared_encoder
from callguard.detector.head import Head
from callguard.detector.lexicon import Found, Lexicon, load_lexicon, match_lexicon, tokenise
from callguard.detector.semantic import HeadStep, SemanticClassifier, SemanticHit


@dataclass(frozen=True)
class Detection:
    text: str
    categories: tuple[str, ...]
    severity: int  # 0 if clean, else the highest match severity
    matches: tuple[Match, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object that `callguard detect` writes for one line."""
        return {
            "text": self.text,
            "categories": list(self.categories),
            "severity": self.severity,
            "matches": [
                {
                    "category": m.category,
                    "severity": m.severity,
                    "words": list(m.words),
                    "term": m.term,
                    "directed": m.directed,
                    "source": m.source,
                    "score": round(m.score, 3),
                    "because": m.because,
                }
                for m in self.matches
            ],
        }


def semantic_severity(category: str, score: float) -> int:
    """A head's confidence as the ladder's severity; a threat is never mild."""
    severity = 1 + (score >= 0.7) + (score >= 0.9)
    return max(severity, 2) if category == "threat" else severity


def semantic_match(hit: SemanticHit, words: Sequence[str], source: str = "semantic") -> Match:
    category: Category = hit.label  # type: ignore[assignment]
    return Match(
        category=category,
        severity=semantic_severity(category, hit.score),
        words=tuple(words),
        term=f"semantic head {hit.score:.2f}",
        directed=category == "insult",  # the head calls an insult only what is aimed at the listener
        source=source,  # type: ignore[arg-type]
        score=hit.score,
        like=tuple(text for text, _ in hit.like),
    )


class TextDetector:
    def __init__(self, lexicons: dict[str, Lexicon], semantic: SemanticClassifier | None = None) -> None:
        if not lexicons:
            raise ValueError("TextDetector needs at least one lexicon")
        self.lexicons = dict(lexicons)
        self.semantic = semantic

    def analyse(self, text: str, lang: str | None) -> Detection:
        """Detect abuse in one utterance; lang None merges every loaded lexicon."""
        return self.analyse_many([text], lang)[0]

    def analyse_many(self, texts: Sequence[str], lang: str | None) -> list[Detection]:
        """Several utterances at once: the encoder runs on them in one batch."""
        lexical = [[f.match for f in self.find(*tokenise(text), lang)] for text in texts]
        semantic = self.semantic_hits([text.split() for text in texts])
        return [
            self.detection(text, combine(found, hits, text.split()))
            for text, found, hits in zip(texts, lexical, semantic, strict=True)
        ]

    def lexicon_detection(self, text: str, lang: str | None) -> Detection:
        """The lexicons' part of a detection alone."""
        return self.detection(text, [f.match for f in self.find(*tokenise(text), lang)])

    def semantic_hits(self, utterances: Sequence[Sequence[str]]) -> list[list[SemanticHit]]:
        if self.semantic is None:
            return [[] for _ in utterances]
        return self.semantic.hits(utterances)

    @staticmethod
    def detection(text: str, matches: list[Match]) -> Detection:
        categories = tuple(c for c in CATEGORIES if any(m.category == c for m in matches))
        severity = max((m.severity for m in matches), default=0)
        return Detection(text, categories, severity, tuple(matches))

    def find(self, surfaces: list[str], tokens: list[str], lang: str | None) -> list[Found]:
        """The lexicon's matches, with the word positions they span."""
        if lang is None:
            lexicons = list(self.lexicons.values())
        elif lang in self.lexicons:
            lexicons = [self.lexicons[lang]]
        else:
            raise ValueError(f"no lexicon loaded for language {lang!r} (loaded: {', '.join(self.lexicons)})")
        found: list[Found] = []
        seen: set[tuple[str, int, int]] = set()
        for lexicon in lexicons:
            for f in match_lexicon(lexicon, surfaces, tokens):
                key = (f.match.category, f.start, f.end)
                if key not in seen:  # the same words matched by both languages count once
                    seen.add(key)
                    found.append(f)
        found.sort(key=lambda f: (f.start, f.end))
        return found


def combine(lexical: list[Match], hits: Sequence[SemanticHit], words: Sequence[str]) -> list[Match]:
    """The lexicon's matches, and the head's for the categories the lexicon did not find."""
    found = {m.category for m in lexical}
    return [*lexical, *(semantic_match(hit, words) for hit in hits if hit.label not in found)]


def semantic_thresholds(config: Config) -> dict[str, float]:
    """Each category's threshold on the head's probability: 1 - its sensitivity."""
    d = config.detector
    return {
        "profanity": 1.0 - d.profanity_sensitivity,
        "insult": 1.0 - d.insult_sensitivity,
        "threat": 1.0 - d.threat_sensitivity,
    }


# The heads of a trained folder: the customer's cascade (cheap screen first), the agent's acts.
CUSTOMER_HEADS = ("customer_screen", "customer")
AGENT_HEAD = "agent"


def encoders_of(head: Head) -> tuple[SentenceEncoder, ...]:
    """The process's shared encoders that a head reads."""
    return tuple(shared_encoder(e.name) for e in head.encoders)  # type: ignore[arg-type]


def load_head(folder: Path, name: str) -> Head:
    """One trained head, checked against the installed encoders."""
    path = folder / f"{name}.npz"
    head = Head.load(path)
    head.check_encoders([e.identity for e in encoders_of(head)], path)
    return head


def load_detector(config: Config) -> TextDetector:
    """The detector with the lexicons and the semantic heads the config names."""
    lexicons = {
        "en": load_lexicon(config.path(config.detector.lexicon_en), "en"),
        "fr": load_lexicon(config.path(config.detector.lexicon_fr), "fr"),
    }
    semantic = None
    if config.detector.semantic:
        folder = config.heads_dir()
        semantic = customer_classifier({name: load_head(folder, name) for name in CUSTOMER_HEADS}, config)
    return TextDetector(lexicons, semantic)


def customer_classifier(heads: dict[str, Head], config: Config) -> SemanticClassifier:
    """The customer's cascade from its heads (loaded or just trained), with the config's thresholds."""
    steps = [HeadStep(heads[name], encoders_of(heads[name])) for name in CUSTOMER_HEADS]
    return SemanticClassifier(steps, semantic_thresholds(config), gate=config.detector.screen_gate)


def load_agent_acts(config: Config) -> SemanticClassifier | None:
    """The classifier of the agent's speech acts, when the config asks for it."""
    if not config.detector.agent_acts:
        return None
    head = load_head(config.heads_dir(), AGENT_HEAD)
    threshold = 1.0 - config.detector.agent_act_sensitivity
    return SemanticClassifier(
        [HeadStep(head, encoders_of(head))], {act: threshold for act in head.labels if act != "none"}
    )


TextPredictor = Callable[
    [Sequence[str], str], Sequence[tuple[str, ...]]
]  # texts of one language -> categories


def predict_by_language(
    lines: Sequence[LabelledLine], predict: TextPredictor, batch: int = 64
) -> list[tuple[str, ...]]:
    """Each line's categories, in order, asked of `predict` a language and a batch at a time."""
    by_lang: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        by_lang.setdefault(line.lang, []).append(i)
    found: dict[int, tuple[str, ...]] = {}
    for lang, indices in by_lang.items():
        for start in range(0, len(indices), batch):
            chunk = indices[start : start + batch]
            found.update(zip(chunk, predict([lines[i].text for i in chunk], lang), strict=True))
    return [found[i] for i in range(len(lines))]


def evaluate_corpus(path: Path, detector: TextDetector, batch: int = 64) -> CorpusReport:
    """The detector scored on one labelled TSV file (the `callguard evaluate-text` command)."""
    lines = list(read_corpus(path))

    def categories(texts: Sequence[str], lang: str) -> list[tuple[str, ...]]:
        return [d.categories for d in detector.analyse_many(texts, lang)]

    return score_lines(str(path), lines, predict_by_language(lines, categories, batch))


def detect_lines(lines: Iterable[str], detector: TextDetector, lang: str | None) -> Iterator[dict[str, Any]]:
    """One JSON-ready object per input line (the `callguard detect` command)."""
    for line in lines:
        yield detector.analyse(line.rstrip("\r\n"), lang).to_dict()
