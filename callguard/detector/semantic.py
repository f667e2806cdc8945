"""The semantic stage: what no word list holds, read by trained heads from sentence vectors
and word n-grams.

A word list misses veiled threats ("you'd better hope we never meet"), insults without a
listed word ("the brains of a goldfish") and regional speech. `SemanticClassifier` asks a
cascade of heads: the first reads the cheap encoder (4 ms an utterance); only an utterance
whose best score reaches `gate` is read again by the next head, which adds the better and
dearer encoder (28 ms). Most of a call is plainly clean and stops at the first head. A label
fires at or above its threshold, with the nearest labelled examples as its reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from callguard.detector.encoder import SentenceEncoder, encode_side_by_side
from callguard.detector.head import Head

_NOT_WORD = re.compile(r"[^\w']+|_")


def encoder_text(text: str) -> str:
    """The form the heads are trained and asked in: lower case, words, digits and apostrophes."""
    return " ".join(_NOT_WORD.sub(" ", text.lower()).split())


@dataclass(frozen=True, slots=True)
class SemanticHit:
    label: str
    score: float
    like: tuple[tuple[str, float], ...]  # nearest labelled examples, with their similarity


@dataclass(slots=True)
class Reading:
    hits: list[SemanticHit]
    suspicious: bool  # the first head scored it at least the gate (read by the whole cascade)


@dataclass(frozen=True)
class HeadStep:
    """One head of a cascade and the encoders, side by side, whose vectors it reads."""

    head: Head
    encoders: tuple[SentenceEncoder, ...]

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        return encode_side_by_side(self.encoders, texts)


class SemanticClassifier:
    """A cascade of heads over the same labels, and each label's threshold; no state between calls."""

    def __init__(self, steps: Sequence[HeadStep], thresholds: Mapping[str, float], gate: float = 0.0) -> None:
        if not steps:
            raise ValueError("SemanticClassifier needs at least one head")
        labels = steps[0].head.labels
        if any(step.head.labels != labels for step in steps):
            raise ValueError("the heads of a cascade must have the same labels")
        unknown = set(thresholds) - set(labels)
        if unknown:
            raise ValueError(f"thresholds for labels the head does not have: {', '.join(sorted(unknown))}")
        self.steps = tuple(steps)
        self.labels = labels
        self.thresholds = dict(thresholds)
        self.gate = gate

    def load(self) -> None:
        """Load every encoder of the cascade now, not on the first utterance of a call."""
        for step in self.steps:
            for encoder in step.encoders:
                encoder.load()

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """(n, labels) probabilities of the deepest head each text reached."""
        return self._run([encoder_text(t) for t in texts])[0]

    def hits(self, utterances: Sequence[Sequence[str]]) -> list[list[SemanticHit]]:
        """For each utterance (its words), the labels at or above threshold."""
        return [reading.hits for reading in self.read(utterances)]

    def read(self, utterances: Sequence[Sequence[str]], depth: int | None = None) -> list[Reading]:
        """For each utterance, its hits, and whether the first head found it suspicious; `depth`
        stops the cascade after that many heads (1: the cheap first reading only)."""
        texts = [encoder_text(" ".join(words)) for words in utterances]
        out = [Reading([], False) for _ in texts]
        present = [i for i, text in enumerate(texts) if text]
        if not present:
            return out
        probabilities, vectors, step = self._run([texts[i] for i in present], depth)
        for row, i in enumerate(present):
            out[i].suspicious = step[row] is not self.steps[0] or len(self.steps) == 1
            for k, label in enumerate(self.labels):
                threshold = self.thresholds.get(label)
                score = float(probabilities[row, k])
                if threshold is not None and score >= threshold:
                    like = step[row].head.bank.nearest(vectors[row], label)
                    out[i].hits.append(SemanticHit(label, score, like))
        return out

    def _run(
        self, texts: list[str], depth: int | None = None
    ) -> tuple[np.ndarray, list[np.ndarray], list[HeadStep]]:
        """Probabilities, the bank vectors and the head used, per text, going down the cascade."""
        probabilities = np.zeros((len(texts), len(self.labels)))
        vectors: list[np.ndarray] = [np.zeros(0)] * len(texts)
        used: list[HeadStep] = [self.steps[0]] * len(texts)
        pending = list(range(len(texts)))
        steps = self.steps[:depth] if depth else self.steps
        for reached, step in enumerate(steps):
            if not pending:
                break
            batch = [texts[i] for i in pending]
            v = step.vectors(batch)
            p = step.head.scores(v, batch)
            bank_width = step.head.bank.width
            for row, i in enumerate(pending):
                probabilities[i], vectors[i], used[i] = p[row], v[row, :bank_width], step
            if reached + 1 < len(steps):
                pending = [i for row, i in enumerate(pending) if p[row].max() >= self.gate]
        return probabilities, vectors, used
