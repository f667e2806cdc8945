"""Labelled lines: reading them, splitting them by family, scoring a detector on them.

Two kinds of file (the corpus README, callguard/data/corpus/README.md, has the rules):
- customer lines, `[family <TAB>] lang <TAB> labels <TAB> hard <TAB> text`: the detector's
  categories (`clean` or profanity, insult, threat); the 4-column form without a family is
  the older one (tests/data/corpus_*.tsv), each line its own family;
- agent lines, `family <TAB> lang <TAB> act <TAB> text`: the agent's speech acts.

Families group paraphrases: a split never puts two lines of one family on both sides.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from callguard.core.errors import ConfigError
from callguard.core.events import AGENT_ACTS, CATEGORIES

LANGS = ("en", "fr")


@dataclass(frozen=True, slots=True)
class LabelledLine:
    source: str  # file name
    line: int
    family: str
    lang: str
    labels: tuple[str, ...]  # customer: sorted categories, () when clean; agent: (act,)
    hard: bool
    text: str

    @property
    def main_label(self) -> str:
        """The one label an explanation files this line under: its gravest category, or its act."""
        for category in ("threat", "insult", "profanity"):
            if category in self.labels:
                return category
        return self.labels[0] if self.labels else "clean"


def read_corpus(path: Path) -> Iterator[LabelledLine]:
    """Customer lines of one TSV file, validated; errors name the file and line."""
    for number, columns in _rows(path, (4, 5), "[family,] lang, labels, hard, text"):
        family = columns.pop(0) if len(columns) == 5 else f"{Path(path).name}:{number}"
        lang, labels, hard, text = columns
        names = tuple(sorted({x.strip() for x in labels.split(",") if x.strip()}))
        if not names or (names != ("clean",) and not all(n in CATEGORIES for n in names)):
            raise ConfigError(
                path,
                f"line {number}",
                f"labels must be 'clean' or among {', '.join(CATEGORIES)}, got {labels!r}",
            )
        if hard not in ("0", "1"):
            raise ConfigError(path, f"line {number}", f"hard must be 0 or 1, got {hard!r}")
        yield LabelledLine(
            Path(path).name,
            number,
            family,
            _lang(path, number, lang),
            () if names == ("clean",) else names,
            hard == "1",
            _text(path, number, text),
        )


def read_agent_corpus(path: Path) -> Iterator[LabelledLine]:
    """Agent lines of one TSV file (family, lang, act, text), validated."""
    for number, (family, lang, act, text) in _rows(path, (4,), "family, lang, act, text"):
        if act not in AGENT_ACTS:
            raise ConfigError(
                path, f"line {number}", f"act must be one of {', '.join(AGENT_ACTS)}, got {act!r}"
            )
        yield LabelledLine(
            Path(path).name,
            number,
            family,
            _lang(path, number, lang),
            (act,),
            False,
            _text(path, number, text),
        )


def _rows(path: Path, widths: tuple[int, ...], names: str) -> Iterator[tuple[int, list[str]]]:
    try:
        handle = Path(path).open(encoding="utf-8")  # noqa: SIM115 (closed by the with below)
    except FileNotFoundError:
        raise ConfigError(path, "", "labelled corpus not found") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot be read ({exc})") from None
    with handle:
        try:
            for number, raw in enumerate(handle, 1):
                line = raw.rstrip("\r\n")
                if not line.strip() or line.startswith("#"):
                    continue
                columns = line.split("\t")
                if len(columns) not in widths:
                    expected = " or ".join(map(str, widths))
                    raise ConfigError(
                        path,
                        f"line {number}",
                        f"expected {expected} tab-separated columns ({names}), got {len(columns)}",
                    )
                yield number, columns
        except UnicodeDecodeError as exc:
            raise ConfigError(path, "", f"is not UTF-8 text ({exc})") from None


def _lang(path: Path, number: int, lang: str) -> str:
    if lang not in LANGS:
        raise ConfigError(path, f"line {number}", f"lang must be one of {', '.join(LANGS)}, got {lang!r}")
    return lang


def _text(path: Path, number: int, text: str) -> str:
    if not text.strip():
        raise ConfigError(path, f"line {number}", "text is empty")
    return text.strip()


SITE = "site:"  # the source prefix of a site's own lines


def read_folder(folder: Path, site: bool = False) -> tuple[list[LabelledLine], list[LabelledLine]]:
    """(customer lines, agent lines) of every *.tsv in a folder; agent files are named agent*.tsv.
    A site's lines carry the source prefix `site:`."""
    customer: list[LabelledLine] = []
    agent: list[LabelledLine] = []
    for path in sorted(Path(folder).glob("*.tsv")):
        lines = read_agent_corpus(path) if path.name.startswith("agent") else read_corpus(path)
        tagged = [replace(x, source=SITE + x.source) for x in lines] if site else list(lines)
        (agent if path.name.startswith("agent") else customer).extend(tagged)
    return customer, agent


def corpus_digest(lines: Iterable[LabelledLine]) -> str:
    """sha256 of the lines' content (family, lang, labels, hard, text), in a fixed order."""
    rows = sorted(f"{x.family}\t{x.lang}\t{','.join(x.labels)}\t{int(x.hard)}\t{x.text}" for x in lines)
    return hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()


def fold_of(family: str, folds: int) -> int:
    """The cross-validation fold of a family: a stable hash, the same on every machine."""
    return int.from_bytes(hashlib.sha256(family.encode("utf-8")).digest()[:4], "big") % folds


# ---------------------------------------------------------------- recognition errors


# Short, frequent words a recogniser puts in for what it did not catch.
FILLERS = {
    "en": ("the", "a", "and", "to", "i", "it", "uh", "in", "of", "that", "you", "is", "on", "so"),
    "fr": ("le", "la", "de", "et", "je", "il", "euh", "que", "un", "les", "ça", "en", "pas", "tu"),
}


def stable_seed(*parts: str) -> int:
    """A seed from text, the same on every machine and whatever else is in the corpus."""
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()[:8], "big")


def with_recognition_errors(text: str, rate: float, lang: str, seed: int) -> str:
    """The text as a worse recogniser might write it: words dropped or replaced by a filler at
    `rate`, and long words (names, numbers) split in two."""
    rng = np.random.default_rng(seed)
    fillers = FILLERS.get(lang, FILLERS["en"])
    out: list[str] = []
    for word in text.split():
        roll = rng.random()
        if roll < rate / 2:
            continue  # dropped
        if roll < rate:
            out.append(fillers[int(rng.integers(len(fillers)))])  # substituted
            continue
        if len(word) >= 7 and rng.random() < rate / 2:
            cut = int(rng.integers(3, len(word) - 2))
            out.extend((word[:cut], word[cut:]))  # split in two, as a name often is
            continue
        out.append(word)
    return " ".join(out) if out else text


# ---------------------------------------------------------------- scoring


@dataclass(frozen=True)
class CategoryScore:
    category: str
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def precision(self) -> float:
        predicted = self.true_positives + self.false_positives
        return self.true_positives / predicted if predicted else 1.0

    @property
    def recall(self) -> float:
        actual = self.true_positives + self.false_negatives
        return self.true_positives / actual if actual else 1.0


@dataclass(frozen=True)
class CorpusMistake:
    line: int
    text: str
    expected: tuple[str, ...]
    detected: tuple[str, ...]


@dataclass(frozen=True)
class CorpusReport:
    path: str
    utterances: int
    clean: int
    hard_negatives: int
    false_alarms: int  # clean utterances where anything was detected
    hard_false_alarms: int
    scores: dict[str, CategoryScore]
    mistakes: tuple[CorpusMistake, ...]

    @property
    def false_alarms_per_100(self) -> float:
        return 100.0 * self.false_alarms / self.clean if self.clean else 0.0

    def precision(self, category: str) -> float:
        return self.scores[category].precision

    def recall(self, category: str) -> float:
        return self.scores[category].recall

    def format(self, max_mistakes: int = 20) -> str:
        lines = [
            f"{self.path}: {self.utterances} utterances, "
            f"{self.clean} clean ({self.hard_negatives} hard negatives)",
            f"{'category':<10} {'precision':>9} {'recall':>7} {'tp':>5} {'fp':>5} {'fn':>5}",
        ]
        for s in self.scores.values():
            lines.append(
                f"{s.category:<10} {s.precision:>9.3f} {s.recall:>7.3f} "
                f"{s.true_positives:>5} {s.false_positives:>5} {s.false_negatives:>5}"
            )
        lines.append(
            f"false alarms: {self.false_alarms} of {self.clean} clean utterances "
            f"= {self.false_alarms_per_100:.2f} per 100 ({self.hard_false_alarms} on hard negatives)"
        )
        if self.mistakes:
            lines.append(f"mistakes ({len(self.mistakes)}):")
            for m in self.mistakes[:max_mistakes]:
                expected = ",".join(m.expected) or "clean"
                got = ",".join(m.detected) or "clean"
                lines.append(f"  line {m.line}: expected {expected}, got {got}: {m.text}")
            if len(self.mistakes) > max_mistakes:
                lines.append(f"  ... and {len(self.mistakes) - max_mistakes} more")
        return "\n".join(lines)


Predictor = Callable[[Sequence[LabelledLine]], list[tuple[str, ...]]]


def score_lines(name: str, lines: Sequence[LabelledLine], predicted: Sequence[Iterable[str]]) -> CorpusReport:
    """Precision and recall per category, false alarms per 100 clean lines."""
    counts = {c: [0, 0, 0] for c in CATEGORIES}  # tp, fp, fn
    clean = hard_negatives = false_alarms = hard_false_alarms = 0
    mistakes = []
    for line, found in zip(lines, predicted, strict=True):
        detected = tuple(c for c in CATEGORIES if c in set(found))
        expected = line.labels
        if not expected:
            clean += 1
            hard_negatives += line.hard
            if detected:
                false_alarms += 1
                hard_false_alarms += line.hard
        for c in CATEGORIES:
            if c in detected and c in expected:
                counts[c][0] += 1
            elif c in detected:
                counts[c][1] += 1
            elif c in expected:
                counts[c][2] += 1
        if set(detected) != set(expected):
            mistakes.append(CorpusMistake(line.line, line.text, expected, detected))
    scores: dict[str, CategoryScore] = {c: CategoryScore(c, *counts[c]) for c in CATEGORIES}
    return CorpusReport(
        name, len(lines), clean, hard_negatives, false_alarms, hard_false_alarms, scores, tuple(mistakes)
    )
