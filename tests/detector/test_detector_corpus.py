"""The labelled corpora hold the detector to its numbers, in each language.

tests/data/corpus_*.tsv is the corpus the lexicons were tuned on: the lexicons alone must keep
their figures there. blind5_*.tsv to blind8_*.tsv were written blind, each by another hand from
the labelling guide alone (see scripts/eval_detector.py for how much each was looked at; the older
sets are training lines now); the whole detector is held there to the figures it reached when the
ninth round's heads were last fitted (without the 23 lines of blind8 that the corpus had held), so
that a change that loses recall or adds false alarms fails.
Issue 16's target (insult and threat recall 0.95, profanity 0.9, at most 1 false alarm per 100
clean) is not met yet: see README, "Detection".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from callguard.core.config import Config
from callguard.detector import TextDetector, evaluate_corpus, load_detector, read_corpus

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def detector() -> TextDetector:
    return load_detector(Config())


@pytest.fixture(scope="module")
def lexicons(detector: TextDetector) -> TextDetector:
    return TextDetector(detector.lexicons)


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_corpus_is_big_enough_and_hard_enough(lang: str) -> None:
    rows = list(read_corpus(DATA / f"corpus_{lang}.tsv"))
    assert len(rows) >= 300
    assert all(row.lang == lang for row in rows)
    hard = [row for row in rows if row.hard]
    assert len(hard) >= len(rows) / 3
    assert all(not row.labels for row in hard), "a hard negative must be labelled clean"
    for category in ("profanity", "insult", "threat"):
        assert sum(category in row.labels for row in rows) >= 50, category


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_corpus_thresholds(lang: str, lexicons: TextDetector) -> None:
    report = evaluate_corpus(DATA / f"corpus_{lang}.tsv", lexicons)
    summary = report.format()
    assert report.recall("insult") >= 0.95, summary
    assert report.recall("threat") >= 0.95, summary
    assert report.recall("profanity") >= 0.9, summary
    assert report.false_alarms_per_100 <= 1.0, summary


def test_no_evaluation_line_is_trained_on() -> None:
    """A line of a blind set that is also in the heads' corpus (the guide's own examples tempt every
    writer) would be found by its own vote: the corpus must not hold one, word for word."""
    from callguard.detector.train import Corpus

    trained = {x.text for x in Corpus.read(None).customer}
    held = {x.text for name, lang in FROZEN_FIGURES for x in read_corpus(DATA / f"{name}_{lang}.tsv")}
    assert held and not held & trained, sorted(held & trained)[:5]


# The whole detector's figures on the blind sets when the heads were frozen (scripts/eval_detector.py
# prints them), less a small margin for the last digit of a BLAS sum on another CPU.
FROZEN_FIGURES = {
    # (set, lang): (profanity, insult, threat recall at least; false alarms per 100 clean at most)
    ("blind5", "en"): (0.96, 0.98, 0.96, 2.1),
    ("blind5", "fr"): (0.96, 0.94, 0.94, 4.1),
    ("blind6", "en"): (0.96, 0.94, 0.94, 2.1),
    ("blind6", "fr"): (0.94, 0.91, 0.93, 2.1),
    ("blind7", "en"): (0.98, 0.91, 0.98, 4.1),
    ("blind7", "fr"): (0.98, 0.93, 0.98, 3.1),
    ("blind8", "en"): (0.96, 0.89, 0.89, 1.1),
    ("blind8", "fr"): (0.96, 0.89, 0.87, 2.1),
}


@pytest.mark.parametrize(("name", "lang"), list(FROZEN_FIGURES))
def test_the_whole_detector_keeps_its_figures_on_the_blind_sets(
    name: str, lang: str, detector: TextDetector
) -> None:
    report = evaluate_corpus(DATA / f"{name}_{lang}.tsv", detector)
    profanity, insult, threat, false_alarms = FROZEN_FIGURES[(name, lang)]
    summary = report.format()
    assert report.recall("profanity") >= profanity, summary
    assert report.recall("insult") >= insult, summary
    assert report.recall("threat") >= threat, summary
    assert report.false_alarms_per_100 <= false_alarms, summary
    lexicon_only = evaluate_corpus(DATA / f"{name}_{lang}.tsv", TextDetector(detector.lexicons))
    assert report.recall("threat") >= lexicon_only.recall("threat") + 0.4, (
        "the heads must add to the lexicons"
    )
