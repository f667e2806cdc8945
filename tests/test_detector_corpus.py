"""The labelled corpora hold the detector to its numbers, in each language."""

from __future__ import annotations

from pathlib import Path

import pytest

from callguard.config import Config
from callguard.detector import TextDetector, evaluate_corpus, load_detector, read_corpus

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def detector() -> TextDetector:
    return load_detector(Config())


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_corpus_is_big_enough_and_hard_enough(lang: str) -> None:
    rows = list(read_corpus(DATA / f"corpus_{lang}.tsv"))
    assert len(rows) >= 300
    assert all(row_lang == lang for _, row_lang, _, _, _ in rows)
    hard = [row for row in rows if row[3]]
    assert len(hard) >= len(rows) / 3
    assert all(not labels for _, _, labels, _, _ in hard), "a hard negative must be labelled clean"
    for category in ("profanity", "insult", "threat"):
        assert sum(category in labels for _, _, labels, _, _ in rows) >= 50, category


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_corpus_thresholds(lang: str, detector: TextDetector) -> None:
    report = evaluate_corpus(DATA / f"corpus_{lang}.tsv", detector)
    summary = report.format()
    assert report.recall("insult") >= 0.95, summary
    assert report.recall("threat") >= 0.95, summary
    assert report.recall("profanity") >= 0.9, summary
    assert report.false_alarms_per_100 <= 1.0, summary
