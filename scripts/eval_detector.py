"""The detector measured side by side: lexicon alone, semantic heads alone, both; and other
profanity filters on the same lines.

    python scripts/eval_detector.py                 # everything (about 20 min on 2 cores)
    python scripts/eval_detector.py --folds 0       # only the shipped heads on the independent sets
    python scripts/eval_detector.py --markdown      # the tables as README shows them
    python scripts/eval_detector.py --only-folds 0,1,2 --save a.json &   # the folds on two cores,
    python scripts/eval_detector.py --only-folds 3,4 --save b.json; wait # then one table:
    python scripts/eval_detector.py --merge a.json b.json --markdown

Several kinds of figures, each optimistic in its own way:
- cross-validation on the repository corpus, split by family (5 folds: each family is judged by
  heads trained on the other four fifths), also with recognition errors at 10 % and 20 %;
  the lines come from the same writers as the training lines;
- the shipped heads on the blind sets of tests/data, each written from the labelling guide alone
  by a hand that never saw the corpus (no line of them is in the corpus, word for word; a test
  checks it):
  - blind5_*.tsv: beside the seventh round, by a fifth hand; no one read its lines; its figures
    were read with the sixth, seventh and ninth rounds' heads (choosing each time);
  - blind6_*.tsv: beside an eighth round, by a sixth hand asked to find where a detector breaks
    (unusual sectors and callers, abuse said calmly, violent words in jobs and hobbies); no one
    read its lines; its figures chose the seventh round over the eighth, then the ninth;
  - blind7_*.tsv: beside the ninth round, by a seventh hand asked for phone speech as a
    recogniser hears it (rambling, disfluent, the abuse buried in a long complaint); no one read
    its lines; its figures were read with the seventh round's heads and twice while choosing the
    ninth's (with or without the ninth round's own lines); the ninth round's writers were given
    the same angle, so it flatters the ninth round's heads;
  - blind8_*.tsv: beside the tenth round, by an eighth hand asked for a month of real calls
    across many sectors; no one read its lines; its figures were read once with the ninth
    round's heads, then to choose between them and the tenth round's;
  - blind6, blind7 and blind8 again with recognition errors at 10 % and 20 %.
  The older sets (dev, frozen, blind2, dev3, blind3, blind4) were read too often to be honest
  (their false alarms chose lexicon entries, their figures chose heads): since the ninth round
  they are training lines (callguard/data/corpus/customer_*_retired.tsv).
Recall per category; false alarms per 100 clean lines (any category on a clean line).
Filters that give one yes/no (better-profanity, alt-profanity-check, glin-profanity) count as
finding every category of a line they flag; they are read when installed (`pip install -e
".[compare]"`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from callguard.core.config import Config
from callguard.core.events import CATEGORIES
from callguard.detector.corpus import (
    LabelledLine,
    fold_of,
    read_corpus,
    score_lines,
    stable_seed,
    with_recognition_errors,
)
from callguard.detector.lexicon import load_lexicon
from callguard.detector.text_detector import (
    TextDetector,
    customer_classifier,
    load_detector,
    predict_by_language,
)
from callguard.detector.train import Corpus, VectorCache, customer_heads

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
Predict = Callable[[Sequence[LabelledLine]], list[tuple[str, ...]]]


@dataclass(frozen=True)
class Row:
    set_name: str
    lang: str
    detector: str
    lines: int
    recall: dict[str, float]
    false_alarms_per_100: float


def rows_for(set_name: str, lines: Sequence[LabelledLine], detectors: dict[str, Predict]) -> list[Row]:
    out = []
    for name, predict in detectors.items():
        predicted = predict(lines)
        for lang in ("en", "fr"):
            chosen = [i for i, x in enumerate(lines) if x.lang == lang]
            if not chosen:
                continue
            report = score_lines(set_name, [lines[i] for i in chosen], [predicted[i] for i in chosen])
            recall = {c: report.recall(c) for c in CATEGORIES}
            out.append(Row(set_name, lang, name, len(chosen), recall, report.false_alarms_per_100))
    return out


def by_detector(detector: TextDetector, part: str) -> Predict:
    """part: 'both', 'lexicon' or 'semantic' (the heads alone)."""

    def predict(texts: Sequence[str], lang: str) -> list[tuple[str, ...]]:
        if part == "semantic":
            return [tuple(h.label for h in row) for row in detector.semantic_hits([t.split() for t in texts])]
        if part == "lexicon":
            return [detector.lexicon_detection(t, lang).categories for t in texts]
        return [d.categories for d in detector.analyse_many(texts, lang)]

    return lambda lines: predict_by_language(lines, predict)


def comparators() -> dict[str, Predict]:
    found: dict[str, Predict] = {}
    try:
        from better_profanity import profanity

        found["better-profanity"] = lambda lines: [
            CATEGORIES if profanity.contains_profanity(x.text) else () for x in lines
        ]
    except ImportError:
        pass
    try:
        from profanity_check import predict as offensive

        def alt(lines: Sequence[LabelledLine]) -> list[tuple[str, ...]]:
            return [CATEGORIES if flag else () for flag in offensive([x.text for x in lines])]

        found["alt-profanity-check"] = alt
    except ImportError:
        pass
    try:
        import glin_profanity

        filters = {
            "en": glin_profanity.Filter({"languages": ["english"]}),
            "fr": glin_profanity.Filter({"languages": ["french"]}),
        }
        found["glin-profanity"] = lambda lines: [
            CATEGORIES if filters[x.lang].is_profane(x.text) else () for x in lines
        ]
    except ImportError:
        pass
    return found


def noisy(lines: Sequence[LabelledLine], rate: float) -> list[LabelledLine]:
    return [
        replace(x, text=with_recognition_errors(x.text, rate, x.lang, stable_seed("eval", str(rate), x.text)))
        for x in lines
    ]


RATES = (0.0, 0.1, 0.2)
PARTS = ("lexicon", "semantic", "both")
OutOfFold = dict[str, dict[int, tuple[str, ...]]]  # "rate part" -> line index -> categories found


def cross_validation(
    config: Config, corpus: Corpus, folds: int, cache: VectorCache, only: Sequence[int] | None = None
) -> OutOfFold:
    """Out-of-fold predictions for the lines of the folds asked for (all by default), clean and
    with recognition errors."""
    lexicons = {
        lang: load_lexicon(config.path(getattr(config.detector, f"lexicon_{lang}")), lang)
        for lang in ("en", "fr")
    }
    lines = list(corpus.customer)
    out_of_fold: OutOfFold = {f"{r} {p}": {} for r in RATES for p in PARTS}
    for fold in only if only is not None else range(folds):
        started = time.process_time()
        train = Corpus(tuple(x for x in lines if fold_of(x.family, folds) != fold), corpus.agent)
        index = [i for i, x in enumerate(lines) if fold_of(x.family, folds) == fold]
        detector = TextDetector(lexicons, customer_classifier(customer_heads(train, cache), config))
        for rate in RATES:
            held = [lines[i] for i in index]
            held = noisy(held, rate) if rate else held
            for part in PARTS:
                out_of_fold[f"{rate} {part}"].update(
                    zip(index, by_detector(detector, part)(held), strict=True)
                )
        print(f"fold {fold + 1}/{folds}: {time.process_time() - started:.0f} CPU s", file=sys.stderr)
    return out_of_fold


def cross_validation_rows(corpus: Corpus, out_of_fold: OutOfFold) -> list[Row]:
    lines = list(corpus.customer)
    rows = []
    for key, found in out_of_fold.items():
        rate, part = float(key.split()[0]), key.split()[1]
        name = "cross-validation" + (f", {rate:.0%} recognition errors" if rate else "")
        predicted = [found[i] for i in range(len(lines))]
        rows += rows_for(name, lines, {part: lambda _lines, p=predicted: p})
    return rows


def format_rows(rows: list[Row], markdown: bool) -> str:
    header = [
        "set",
        "lang",
        "detector",
        "lines",
        *[f"{c} recall" for c in CATEGORIES],
        "false alarms / 100 clean",
    ]
    table = [header]
    for r in rows:
        table.append(
            [
                r.set_name,
                r.lang,
                r.detector,
                str(r.lines),
                *[f"{r.recall[c]:.2f}" for c in CATEGORIES],
                f"{r.false_alarms_per_100:.1f}",
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in table[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table)


SETS = ("blind5", "blind6", "blind7", "blind8", "corpus")
NOISY_SETS = ("blind6", "blind7", "blind8")  # the sets no one read, judged again with recognition errors


def blind_set(name: str) -> list[LabelledLine]:
    """Both languages of one set of tests/data."""
    return [
        x
        for lang in ("en", "fr")
        if (DATA / f"{name}_{lang}.tsv").exists()
        for x in read_corpus(DATA / f"{name}_{lang}.tsv")
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (0: none)")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--only-folds", help="compute these folds only (e.g. 0,1,2) and --save them")
    parser.add_argument("--save", type=Path, help="write the out-of-fold predictions to this JSON file")
    parser.add_argument("--merge", type=Path, nargs="+", help="print the cross-validation of saved folds")
    args = parser.parse_args()
    if args.merge:  # folds computed apart (two processes on two cores), one table
        merged: OutOfFold = {}
        for path in args.merge:
            for key, found in json.loads(path.read_text()).items():
                merged.setdefault(key, {}).update({int(i): tuple(c) for i, c in found.items()})
        print(format_rows(cross_validation_rows(Corpus.read(), merged), args.markdown))
        return 0
    config = Config()
    cache = VectorCache()
    if args.only_folds is not None:
        only = [int(x) for x in args.only_folds.split(",")]
        found = cross_validation(config, Corpus.read(), args.folds, cache, only)
        if args.save:
            args.save.write_text(
                json.dumps({k: {str(i): list(c) for i, c in v.items()} for k, v in found.items()})
            )
        return 0
    rows: list[Row] = []
    detector = load_detector(config)
    shipped = {
        "lexicon": by_detector(detector, "lexicon"),
        "semantic": by_detector(detector, "semantic"),
        "both": by_detector(detector, "both"),
    }
    sets = {name: blind_set(name) for name in SETS}
    for name, lines in sets.items():
        if lines:
            rows += rows_for(f"{name} (shipped heads)", lines, {**shipped, **comparators()})
    for name in NOISY_SETS:  # the same lines as a worse recogniser would write them
        for rate in RATES[1:]:
            rows += rows_for(f"{name}, {rate:.0%} recognition errors", noisy(sets[name], rate), shipped)
    if args.folds:
        corpus = Corpus.read()
        rows += cross_validation_rows(corpus, cross_validation(config, corpus, args.folds, cache))
    print(format_rows(rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
