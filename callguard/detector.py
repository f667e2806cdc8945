"""Abuse detection on the customer's words: profanity, insults aimed at the agent, threats.

The algorithm lives in `TextDetector` (text in, `Detection` out); `AbuseStage` is the
pipeline glue that turns partial and final transcripts into `Abuse` events, firing each
match once per utterance and only once its words are stable.

Lexicons are TOML files that IT edits (config/lexicon_en.toml, config/lexicon_fr.toml; the
header of each explains the format). Every pattern is compiled once into an index keyed by
its first word, so analysing an utterance costs a few dictionary look-ups per word.

Text is matched in the form vosk produces: lower case, no punctuation. Normalisation lowers
case, removes accents and splits on anything that is not a letter or digit, so "T'es" and
"t es" are the same two words and "Enculé" matches "encule".
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from callguard.config import Config, read_toml
from callguard.errors import ConfigError
from callguard.events import CATEGORIES, Abuse, Category, Match, Transcript, Word

# A word is a run of letters or digits in any script; apostrophes and hyphens split words.
_WORD_RE = re.compile(r"[^\W_]+")
# Letters that NFKD does not decompose into a base letter plus accents.
_LIGATURES = str.maketrans({"œ": "oe", "æ": "ae", "ß": "ss", "ø": "o", "ł": "l", "đ": "d"})
_GAP = ".."  # pattern word standing for 0 to _GAP_MAX arbitrary words
_GAP_MAX = 3
_END = "$"  # pattern word standing for the end of the utterance
_MIN_PREFIX = 3  # "fu*" would match half the dictionary
_MIN_JOINED = 6  # shortest word rebuilt from two split recogniser words ("bull shit")
_MAX_EXPANSIONS = 2000

_ENTRY_KEYS = {
    "terms": {"pattern", "patterns", "category", "severity", "directed", "undirected", "note"},
    "directed": {"pattern", "patterns", "position", "note"},
    "safe": {"pattern", "patterns", "note"},
    "reported": {"pattern", "patterns", "note"},
}
_TOP_KEYS = {"lang", "directed_window", "reported_window", "breakers", "macros", *_ENTRY_KEYS}


def normalise_word(word: str) -> str:
    """Lower case without accents: 'Enculé' -> 'encule', 'Œuvre' -> 'oeuvre'."""
    word = word.lower()
    if word.isascii():
        return word
    decomposed = unicodedata.normalize("NFKD", word.translate(_LIGATURES))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def tokenise(text: str) -> tuple[list[str], list[str]]:
    """The words of a text as (surface forms in lower case, normalised forms)."""
    lowered = text.lower()
    surfaces = _WORD_RE.findall(lowered)
    if lowered.isascii():
        return surfaces, surfaces  # recogniser output is mostly plain ASCII: nothing to strip
    return surfaces, [normalise_word(s) for s in surfaces]


# ---------------------------------------------------------------- compiled lexicon


@dataclass(frozen=True, slots=True)
class WordSpec:
    """One pattern word: exact alternatives and prefixes (from 'fuck*')."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]

    def accepts(self, token: str) -> bool:
        return token in self.exact or any(token.startswith(p) for p in self.prefixes)


PatternWord = WordSpec | Literal["..", "$"]  # a word, a gap, or the end of the utterance


@dataclass(frozen=True, slots=True)
class TermEntry:
    category: Category
    severity: int
    directed: bool  # the phrase is aimed at the listener by itself ("fuck you")
    undirected: Literal["ignore", "profanity"]  # what an insult is when not aimed at anyone


@dataclass(frozen=True, slots=True)
class CompiledPattern:
    kind: Literal["terms", "directed", "safe", "reported"]
    source: str  # the pattern as written in the lexicon (after macro expansion)
    words: tuple[PatternWord, ...]
    term: TermEntry | None = None
    after: bool = False  # directed patterns: placed after the insult ("idiot are you")


@dataclass(frozen=True, slots=True)
class Occurrence:
    pattern: CompiledPattern
    start: int
    end: int  # exclusive
    positions: frozenset[int]  # the words matched by pattern words, not by gaps


class _TrieNode:
    """One step of the pattern trie: patterns sharing their first words share nodes."""

    __slots__ = ("done", "end", "exact", "gap", "prefix_heads", "prefix_lengths", "prefixes")

    def __init__(self) -> None:
        self.exact: dict[str, _TrieNode] = {}
        self.prefixes: dict[str, _TrieNode] = {}
        self.prefix_lengths: tuple[int, ...] = ()
        self.prefix_heads: frozenset[str] = frozenset()
        self.gap: _TrieNode | None = None
        self.end: _TrieNode | None = None
        self.done: list[CompiledPattern] = []  # patterns complete at this node

    def insert(self, words: tuple[PatternWord, ...], pattern: CompiledPattern) -> None:
        if not words:
            self.done.append(pattern)
            return
        first, rest = words[0], words[1:]
        if first == _GAP:
            self.gap = self.gap or _TrieNode()
            self.gap.insert(rest, pattern)
        elif first == _END:
            self.end = self.end or _TrieNode()
            self.end.insert(rest, pattern)
        else:
            assert isinstance(first, WordSpec)
            for word in first.exact:
                self.exact.setdefault(word, _TrieNode()).insert(rest, pattern)
            for prefix in first.prefixes:
                self.prefixes.setdefault(prefix, _TrieNode()).insert(rest, pattern)
            self.prefix_lengths = tuple(sorted({len(p) for p in self.prefixes}))
            self.prefix_heads = frozenset(p[:_MIN_PREFIX] for p in self.prefixes)

    def children(self, token: str) -> list[_TrieNode]:
        """The nodes reached by one more word: its exact entry and any stem it starts with."""
        child = self.exact.get(token)
        found = [] if child is None else [child]
        # a 3-letter head check skips the stem look-ups for nearly every word
        if token[:_MIN_PREFIX] in self.prefix_heads:
            for length in self.prefix_lengths:
                if len(token) < length:
                    break
                child = self.prefixes.get(token[:length])
                if child is not None:
                    found.append(child)
        return found


@dataclass(frozen=True)
class Lexicon:
    """One language's compiled lexicon, built by `load_lexicon`."""

    lang: str
    source: str
    directed_window: int
    reported_window: int
    breakers: frozenset[str]
    patterns: tuple[CompiledPattern, ...]
    term_trie: _TrieNode = field(repr=False)
    context_trie: _TrieNode = field(repr=False)  # directed, safe and reported patterns

    def find(self, tokens: list[str]) -> list[Occurrence]:
        """Every occurrence of every pattern (once per pattern and start); [] when no term occurs.

        Context patterns only matter around a term, so a clean utterance, the common case,
        costs one pass over the term trie.
        """
        found = _find_in(self.term_trie, tokens, joined=True)
        if found:
            found += _find_in(self.context_trie, tokens, joined=False)
        return found


def _find_in(root: _TrieNode, tokens: list[str], joined: bool) -> list[Occurrence]:
    found: list[Occurrence] = []
    n = len(tokens)
    exact, heads = root.exact, root.prefix_heads  # locals: this loop is the hot path
    for i, token in enumerate(tokens):
        if token in exact or token[:_MIN_PREFIX] in heads:
            seen: set[int] = set()
            for child in root.children(token):
                _walk(child, tokens, i + 1, (i,), seen, found)
        if joined and i + 1 < n:
            pair = token + tokens[i + 1]
            if len(pair) >= _MIN_JOINED and (pair in exact or pair[:_MIN_PREFIX] in heads):
                # the recogniser split one word in two: "mother fucker", "con nard"
                for child in root.children(pair):
                    found.extend(
                        Occurrence(p, i, i + 2, frozenset((i, i + 1)))
                        for p in child.done
                        if not _accepts_first(p, token)
                    )
    return found


def _accepts_first(pattern: CompiledPattern, token: str) -> bool:
    first = pattern.words[0]
    return isinstance(first, WordSpec) and first.accepts(token)


def _walk(
    node: _TrieNode,
    tokens: list[str],
    i: int,
    positions: tuple[int, ...],
    seen: set[int],
    found: list[Occurrence],
) -> None:
    """Follow the trie from `node` at tokens[i]; record each pattern completed on the way."""
    for pattern in node.done:
        if id(pattern) not in seen:
            seen.add(id(pattern))
            found.append(Occurrence(pattern, positions[0], positions[-1] + 1, frozenset(positions)))
    n = len(tokens)
    if node.end is not None and i == n:
        _walk(node.end, tokens, i, positions, seen, found)
    if i < n:
        for child in node.children(tokens[i]):
            _walk(child, tokens, i + 1, (*positions, i), seen, found)
    if node.gap is not None:
        # shortest gap first, so a match covers as few words as it can
        for skip in range(min(_GAP_MAX, n - i) + 1):
            _walk(node.gap, tokens, i + skip, positions, seen, found)


# ---------------------------------------------------------------- loading


def load_lexicon(path: Path, lang: str) -> Lexicon:
    """Read, validate and compile one language's lexicon; ConfigError names the bad key."""
    document = read_toml(path, "lexicon file")
    return _LexiconBuilder(path, lang, document).build()


class _LexiconBuilder:
    """Validates the TOML document entry by entry, naming the key at fault."""

    def __init__(self, path: Path, lang: str, document: dict[str, Any]) -> None:
        self.path, self.lang, self.document = path, lang, document

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, key, problem)

    def build(self) -> Lexicon:
        doc = self.document
        for key in doc:
            if key not in _TOP_KEYS:
                raise self.fail(key, f"unknown key (expected one of {', '.join(sorted(_TOP_KEYS))})")
        if doc.get("lang", self.lang) != self.lang:
            raise self.fail(
                "lang", f"is {doc['lang']!r} but this file is loaded as the {self.lang!r} lexicon"
            )
        directed_window = self.integer("directed_window", doc.get("directed_window", 4), 0, 8)
        reported_window = self.integer("reported_window", doc.get("reported_window", 8), 0, 30)
        breakers = self.word_list("breakers", doc.get("breakers", []))
        macros = self.macros(doc.get("macros", {}))

        patterns: list[CompiledPattern] = []
        for kind in ("terms", "directed", "safe", "reported"):
            entries = doc.get(kind, [])
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise self.fail(kind, f"must be a list of tables ([[{kind}]]), got {type(entries).__name__}")
            for index, entry in enumerate(entries):
                patterns.extend(self.entry(kind, index, entry, macros))
        if not any(p.kind == "terms" for p in patterns):
            raise self.fail("terms", "no [[terms]] entries: the lexicon would detect nothing")
        return _index(self.path, self.lang, directed_window, reported_window, breakers, patterns)

    def integer(self, key: str, value: Any, lo: int, hi: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise self.fail(key, f"must be a whole number between {lo} and {hi}, got {value!r}")
        return value

    def word_list(self, key: str, value: Any) -> frozenset[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(key, "must be a list of non-empty words")
        words: set[str] = set()
        for text in value:
            words.update(tokenise(text)[1])
        return frozenset(words)

    def macros(self, value: Any) -> dict[str, list[str]]:
        if not isinstance(value, dict):
            raise self.fail("macros", "must be a table of name = [alternatives]")
        for name, alternatives in value.items():
            key = f"macros.{name}"
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                raise self.fail(key, "a macro name is lower-case letters, digits and _")
            if not isinstance(alternatives, list) or not alternatives:
                raise self.fail(key, "must be a non-empty list of strings")
            for i, alt in enumerate(alternatives):
                if not isinstance(alt, str) or not tokenise(alt)[1]:
                    raise self.fail(f"{key}[{i}]", f"must be one or more words, got {alt!r}")
                if "{" in alt:
                    raise self.fail(f"{key}[{i}]", "a macro cannot use another macro")
        return value

    def entry(
        self, kind: str, index: int, entry: dict[str, Any], macros: dict[str, list[str]]
    ) -> list[CompiledPattern]:
        at = f"{kind}[{index}]"
        allowed = _ENTRY_KEYS[kind]
        for key in entry:
            if key not in allowed:
                raise self.fail(f"{at}.{key}", f"unknown key (expected one of {', '.join(sorted(allowed))})")
        term = self.term(at, entry) if kind == "terms" else None
        after = False
        if kind == "directed":
            position = entry.get("position", "before")
            if position not in ("before", "after"):
                raise self.fail(f"{at}.position", f"must be 'before' or 'after', got {position!r}")
            after = position == "after"
        compiled = []
        for key, text in self.pattern_texts(at, entry):
            for expanded in self.expand(key, text, macros):
                words = self.compile_words(key, expanded, kind)
                compiled.append(CompiledPattern(kind, expanded, words, term, after))  # type: ignore[arg-type]
        return compiled

    def term(self, at: str, entry: dict[str, Any]) -> TermEntry:
        category = entry.get("category")
        if category not in CATEGORIES:
            raise self.fail(f"{at}.category", f"must be one of {', '.join(CATEGORIES)}, got {category!r}")
        severity = entry.get("severity")
        if not isinstance(severity, int) or isinstance(severity, bool) or not 1 <= severity <= 3:
            raise self.fail(f"{at}.severity", f"must be 1 (mild), 2 or 3 (severe), got {severity!r}")
        directed = entry.get("directed", False)
        if not isinstance(directed, bool):
            raise self.fail(f"{at}.directed", f"must be true or false, got {directed!r}")
        undirected = entry.get("undirected", "ignore")
        if undirected not in ("ignore", "profanity"):
            raise self.fail(f"{at}.undirected", f"must be 'ignore' or 'profanity', got {undirected!r}")
        if "undirected" in entry and category != "insult":
            raise self.fail(f"{at}.undirected", "only applies to category = 'insult'")
        return TermEntry(category, severity, directed, undirected)

    def pattern_texts(self, at: str, entry: dict[str, Any]) -> list[tuple[str, str]]:
        if ("pattern" in entry) == ("patterns" in entry):
            raise self.fail(f"{at}.pattern", 'give exactly one of pattern = "..." or patterns = [...]')
        if "pattern" in entry:
            texts = [(f"{at}.pattern", entry["pattern"])]
        else:
            if not isinstance(entry["patterns"], list) or not entry["patterns"]:
                raise self.fail(f"{at}.patterns", "must be a non-empty list of strings")
            texts = [(f"{at}.patterns[{i}]", t) for i, t in enumerate(entry["patterns"])]
        for key, text in texts:
            if not isinstance(text, str) or not text.strip():
                raise self.fail(key, f"must be a non-empty string, got {text!r}")
        return texts

    def expand(self, key: str, text: str, macros: dict[str, list[str]]) -> list[str]:
        choices = []
        for piece in text.split():
            if piece.startswith("{") and piece.endswith("}"):
                name = piece[1:-1]
                if name not in macros:
                    raise self.fail(key, f"uses the undefined macro {{{name}}} (define it under [macros])")
                choices.append(macros[name])
            else:
                choices.append([piece])
        count = 1
        for c in choices:
            count *= len(c)
        if count > _MAX_EXPANSIONS:
            raise self.fail(key, f"expands to {count} patterns (at most {_MAX_EXPANSIONS}): split it")
        return [" ".join(combo) for combo in itertools.product(*choices)]

    def compile_words(self, key: str, text: str, kind: str) -> tuple[PatternWord, ...]:
        words: list[PatternWord] = []
        pieces = text.split()
        for n, piece in enumerate(pieces):
            if piece == _GAP:
                if n == 0 or n == len(pieces) - 1 or pieces[n - 1] == _GAP:
                    raise self.fail(key, f"{text!r}: '..' must stand between two words")
                words.append(_GAP)
                continue
            if piece == _END:
                if n != len(pieces) - 1 or n == 0:
                    raise self.fail(key, f"{text!r}: '$' (end of utterance) must come last, after a word")
                words.append(_END)
                continue
            exact: set[str] = set()
            prefixes: list[str] = []
            for alternative in piece.split("|"):
                star = alternative.endswith("*")
                normalised = tokenise(alternative)[1]
                if not normalised:
                    raise self.fail(key, f"{text!r}: empty alternative in {piece!r}")
                if len(normalised) > 1:
                    # "t'es" would be two words; alternatives must stay one word each
                    raise self.fail(
                        key, f"{text!r}: {alternative!r} is several words; write them with spaces"
                    )
                if star:
                    if len(normalised[0]) < _MIN_PREFIX:
                        raise self.fail(
                            key, f"{text!r}: {alternative!r} is too short a stem (3 letters or more)"
                        )
                    prefixes.append(normalised[0])
                else:
                    exact.add(normalised[0])
            words.append(WordSpec(frozenset(exact), tuple(prefixes)))
        return tuple(words)


def _index(
    path: Path,
    lang: str,
    directed_window: int,
    reported_window: int,
    breakers: frozenset[str],
    patterns: list[CompiledPattern],
) -> Lexicon:
    term_trie, context_trie = _TrieNode(), _TrieNode()
    for pattern in patterns:
        (term_trie if pattern.kind == "terms" else context_trie).insert(pattern.words, pattern)
    return Lexicon(
        lang, str(path), directed_window, reported_window, breakers, tuple(patterns), term_trie, context_trie
    )


# ---------------------------------------------------------------- detection


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
                }
                for m in self.matches
            ],
        }


@dataclass(frozen=True, slots=True)
class Found:
    """A match and the word positions it spans, for timestamps."""

    match: Match
    start: int
    end: int


class TextDetector:
    def __init__(self, lexicons: dict[str, Lexicon]) -> None:
        if not lexicons:
            raise ValueError("TextDetector needs at least one lexicon")
        self.lexicons = dict(lexicons)

    def analyse(self, text: str, lang: str | None) -> Detection:
        """Detect abuse in one utterance; lang None merges every loaded lexicon."""
        surfaces, tokens = tokenise(text)
        return self.detection(text, [f.match for f in self.find(surfaces, tokens, lang)])

    @staticmethod
    def detection(text: str, matches: list[Match]) -> Detection:
        categories = tuple(c for c in CATEGORIES if any(m.category == c for m in matches))
        severity = max((m.severity for m in matches), default=0)
        return Detection(text, categories, severity, tuple(matches))

    def find(self, surfaces: list[str], tokens: list[str], lang: str | None) -> list[Found]:
        if lang is None:
            lexicons = list(self.lexicons.values())
        elif lang in self.lexicons:
            lexicons = [self.lexicons[lang]]
        else:
            raise ValueError(f"no lexicon loaded for language {lang!r} (loaded: {', '.join(self.lexicons)})")
        found: list[Found] = []
        seen: set[tuple[str, int, int]] = set()
        for lexicon in lexicons:
            for f in _resolve(lexicon, surfaces, tokens):
                key = (f.match.category, f.start, f.end)
                if key not in seen:  # the same words matched by both languages count once
                    seen.add(key)
                    found.append(f)
        found.sort(key=lambda f: (f.start, f.end))
        return found


def _resolve(lexicon: Lexicon, surfaces: list[str], tokens: list[str]) -> list[Found]:
    """Turn raw occurrences into matches: safe phrases, containment, direction, reported speech."""
    occurrences = lexicon.find(tokens)
    if not occurrences:
        return []
    terms = [o for o in occurrences if o.pattern.kind == "terms"]
    if not terms:
        return []
    safe = [o for o in occurrences if o.pattern.kind == "safe"]
    directed = [o for o in occurrences if o.pattern.kind == "directed"]
    reported = [o for o in occurrences if o.pattern.kind == "reported"]

    # Names and idioms ("moby dick", "kill for a coffee") cancel any term they overlap.
    if safe:
        terms = [t for t in terms if not any(t.start < s.end and s.start < t.end for s in safe)]
    # A word inside a longer phrase counts for the phrase only ("fuck" in "fuck you").
    terms = [t for t in terms if not any(t.positions < other.positions for other in terms)]

    found: list[Found] = []
    seen: set[tuple[str, int, int]] = set()
    for occ in terms:
        entry = occ.pattern.term
        assert entry is not None
        category: Category = entry.category
        severity = entry.severity
        is_directed = entry.directed or _is_directed(lexicon, tokens, occ, directed, terms)
        if category == "insult" and not is_directed:
            if entry.undirected == "ignore":
                continue  # venting about a thing or a third party ("this stupid form")
            category, severity = "profanity", max(1, severity - 1)
        if any(r.start <= occ.start <= r.end - 1 + lexicon.reported_window for r in reported):
            # someone else's words, quoted: not aimed at the agent
            if category in ("insult", "threat"):
                continue
            severity = max(1, severity - 1)
        key = (category, occ.start, occ.end)
        if key in seen:
            continue
        seen.add(key)
        words = tuple(surfaces[occ.start : occ.end])
        match = Match(category, severity, words, occ.pattern.source, is_directed)
        found.append(Found(match, occ.start, occ.end))
    return found


def _is_directed(
    lexicon: Lexicon, tokens: list[str], occ: Occurrence, directed: list[Occurrence], terms: list[Occurrence]
) -> bool:
    for d in directed:
        if d.pattern.after:
            if 0 <= d.start - occ.end <= 1:
                return True
        # "you must think i'm an idiot": a first or third person in between cuts the link
        elif (
            d.end <= occ.start
            and occ.start - d.end <= lexicon.directed_window
            and not any(tok in lexicon.breakers for tok in tokens[d.end : occ.start])
        ):
            return True
    # A bare insult said on its own ("connard", "casse-toi connard") is a vocative.
    covered: set[int] = set()
    for t in terms:
        covered.update(range(t.start, t.end))
    return (
        len(covered) == len(tokens) and occ.pattern.term is not None and occ.pattern.term.category == "insult"
    )


def load_detector(config: Config) -> TextDetector:
    """The detector with the lexicons the config names."""
    return TextDetector(
        {
            "en": load_lexicon(config.path(config.detector.lexicon_en), "en"),
            "fr": load_lexicon(config.path(config.detector.lexicon_fr), "fr"),
        }
    )


# ---------------------------------------------------------------- streaming stage


_MatchKey = tuple[str, str, tuple[str, ...], int]


class AbuseStage:
    """Transcripts in, Abuse events out; partials fire only on stable words, once per utterance."""

    def __init__(self, detector: TextDetector, stable_partials: int = 2) -> None:
        if stable_partials < 1:
            raise ValueError(f"stable_partials must be 1 or more, got {stable_partials}")
        self.detector = detector
        self.stable_partials = stable_partials
        self._streaks: dict[_MatchKey, int] = {}  # how many successive partials held each match
        self._fired: set[_MatchKey] = set()

    def process(self, event: Transcript, lang: str | None) -> list[Abuse]:
        if event.speaker != "customer":
            return []
        surfaces, tokens, word_index = _tokens_of(event)
        found = self.detector.find(surfaces, tokens, lang)
        keyed = _keyed(found)
        out: list[Abuse] = []
        if event.final:
            for key, f in keyed:
                if key not in self._fired:
                    out.append(_abuse(event, f, word_index))
            self._streaks.clear()
            self._fired.clear()
            return out
        streaks = {key: self._streaks.get(key, 0) + 1 for key, _ in keyed}
        self._streaks = streaks  # a match missing from this partial starts over
        for key, f in keyed:
            if streaks[key] >= self.stable_partials and key not in self._fired:
                self._fired.add(key)
                out.append(_abuse(event, f, word_index))
        return out


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
    keyed = []
    for f in found:
        base = (f.match.category, f.match.term, f.match.words)
        counts[base] = counts.get(base, 0) + 1
        keyed.append(((*base, counts[base]), f))
    return keyed


def _abuse(event: Transcript, f: Found, word_index: list[int] | None) -> Abuse:
    t = event.t
    if word_index is not None:
        first: Word = event.words[word_index[f.start]]
        t = first.start
    m = f.match
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


# ---------------------------------------------------------------- command helpers


def detect_lines(lines: Iterable[str], detector: TextDetector, lang: str | None) -> Iterator[dict[str, Any]]:
    """One JSON-ready object per input line (the `callguard detect` command)."""
    for line in lines:
        yield detector.analyse(line.rstrip("\r\n"), lang).to_dict()


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


def read_corpus(path: Path) -> Iterator[tuple[int, str, tuple[str, ...], bool, str]]:
    """(line number, lang, labels, hard negative, text) per utterance of a corpus TSV."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.startswith("#"):
                continue
            columns = line.split("\t")
            if len(columns) != 4:
                raise ConfigError(
                    path,
                    f"line {number}",
                    f"expected 4 tab-separated columns (lang, labels, hard, text), got {len(columns)}",
                )
            lang, labels, hard, text = columns
            names = tuple(sorted(x.strip() for x in labels.split(",") if x.strip()))
            if not names or (names != ("clean",) and not all(n in CATEGORIES for n in names)):
                raise ConfigError(
                    path, f"line {number}", f"labels must be 'clean' or among {CATEGORIES}, got {labels!r}"
                )
            if hard not in ("0", "1"):
                raise ConfigError(path, f"line {number}", f"hard_negative must be 0 or 1, got {hard!r}")
            yield number, lang, () if names == ("clean",) else names, hard == "1", text


def evaluate_corpus(path: Path, detector: TextDetector) -> CorpusReport:
    """Precision and recall per category, false alarms per 100 clean utterances."""
    counts = {c: [0, 0, 0] for c in CATEGORIES}  # tp, fp, fn
    utterances = clean = hard_negatives = false_alarms = hard_false_alarms = 0
    mistakes = []
    for number, lang, expected, hard, text in read_corpus(path):
        detected = detector.analyse(text, lang).categories
        utterances += 1
        if not expected:
            clean += 1
            hard_negatives += hard
            if detected:
                false_alarms += 1
                hard_false_alarms += hard
        for c in CATEGORIES:
            if c in detected and c in expected:
                counts[c][0] += 1
            elif c in detected:
                counts[c][1] += 1
            elif c in expected:
                counts[c][2] += 1
        if set(detected) != set(expected):
            mistakes.append(CorpusMistake(number, text, expected, tuple(detected)))
    scores = {c: CategoryScore(c, *counts[c]) for c in CATEGORIES}
    return CorpusReport(
        str(path), utterances, clean, hard_negatives, false_alarms, hard_false_alarms, scores, tuple(mistakes)
    )
