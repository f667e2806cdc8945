"""Abuse detection on the customer's words (profanity, insults aimed at the agent, threats), and
the seeds' steps in the agent's words.

- `lexicon`: the word lists IT edits, compiled and matched;
- `encoder`, `head`, `semantic`: sentence vectors and the trained head that reads what no word
  list holds; `train` fits the head from the labelled corpus (`corpus`);
- `text_detector`: both together on one utterance (`TextDetector`, `load_detector`);
- `stage`: the streaming stages the call session runs (`AbuseStage`, `AgentActStage`).
"""

from callguard.detector.corpus import CorpusReport, read_corpus
from callguard.detector.lexicon import Lexicon, load_lexicon, normalise_word, tokenise
from callguard.detector.stage import AbuseStage, AgentActStage
from callguard.detector.text_detector import (
    Detection,
    TextDetector,
    detect_lines,
    evaluate_corpus,
    load_detector,
)

__all__ = [
    "AbuseStage",
    "AgentActStage",
    "CorpusReport",
    "Detection",
    "Lexicon",
    "TextDetector",
    "detect_lines",
    "evaluate_corpus",
    "load_detector",
    "load_lexicon",
    "normalise_word",
    "read_corpus",
    "tokenise",
]
