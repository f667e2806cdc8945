"""The lexicons: word lists IT edits, compiled into a trie, matched against one utterance.

Lexicons are TOML files (lexicon_en.toml and lexicon_fr.toml beside the config; the header of
each explains the format). Every pattern is compiled once into an index keyed by its first word,
so analysing an utterance costs a few dictionary look-ups per word. `match_lexicon` turns the
raw occurrences into matches: safe phrases, containment, direction, reported speech.

Text is matched in the form vosk produces: lower case, no punctuation. Normalisation lowers
case, removes accents and splits on anything that is not a letter or digit, so "T'es" and
"t es" are the same two words and "Enculé" matches "encule".
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from callguard.core.config import read_toml
from callguard.core.errors import ConfigError
from callguard.core.events import CATEGORIES, Category, Match

# A word is a run of letters or digits in any script; apostrophes and hyphens split words.
_WORD_RE = re.compile(r"[^\W_]+")
# Letters that NFKD does not decompose into a base letter plus accents.
_LIGATURES = str.maketrans({"œ": "oe", "æ": "ae", "ß": "ss", "ø": "o", "ł": "l", "đ": "d"})
_GAP: Literal[".."] = ".."  # pattern word standing for 0 to _GAP_MAX arbitrary words
_GAP_MAX = 3
_END: Literal["$"] = "$"  # pattern word standing for the end of the utterance
_MIN_PREFIX = 3  # "fu*" would match half the dictionary
_MIN_JOINED = 6  # shortest word rebuilt from two split recogniser words ("bull shit")
_MAX_JOINED_ENDING = 3  # how far a rebuilt word runs past a prefix's stem ("con nards"; not "who reversed")
_MAX_EXPANSIONS = 2000

_ENTRY_KEYS = {
    "terms": {"pattern", "patterns", "category", "severity", "directed", "undirected", "note"},
    "directed": {"pattern", "patterns", "position", "note"},
    "safe": {"pattern", "patterns", "note"},
    "reported": {"pattern", "patterns", "note"},
}
_TOP_KEYS = {"lang", "directed_window", "reported_window", "breakers", "gap_stops", "macros", *_ENTRY_KEYS}


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
    gap_stops: frozenset[str]  # words a pattern's ".." never skips ("killing me can you")
    patterns: tuple[CompiledPattern, ...]
    term_trie: _TrieNode = field(repr=False)
    context_trie: _TrieNode = field(repr=False)  # directed, safe and reported patterns

    def find(self, tokens: list[str]) -> list[Occurrence]:
        """Every occurrence of every pattern (once per pattern and start); [] when no term occurs.

        Context patterns only matter around a term, so a clean utterance, the common case,
        costs one pass over the term trie.
        """
        found = _find_in(self.term_trie, tokens, self.gap_stops, joined=True)
        if found:
            found += _find_in(self.context_trie, tokens, self.gap_stops, joined=False)
        return found


def _find_in(root: _TrieNode, tokens: list[str], gap_stops: frozenset[str], joined: bool) -> list[Occurrence]:
    found: list[Occurrence] = []
    n = len(tokens)
    exact, heads = root.exact, root.prefix_heads  # locals: this loop is the hot path
    for i, token in enumerate(tokens):
        if token in exact or token[:_MIN_PREFIX] in heads:
            seen: set[int] = set()
            for child in root.children(token):
                _walk(child, tokens, i + 1, (i,), seen, found, gap_stops)
        if joined and i + 1 < n:
            pair = token + tokens[i + 1]
            if len(pair) >= _MIN_JOINED and (pair in exact or pair[:_MIN_PREFIX] in heads):
                # the recogniser split one word in two: "mother fucker", "con nard"
                for child in root.children(pair):
                    found.extend(
                        Occurrence(p, i, i + 2, frozenset((i, i + 1)))
                        for p in child.done
                        if not _accepts_first(p, token) and _rebuilds(p, token, pair)
                    )
    return found


def _accepts_first(pattern: CompiledPattern, token: str) -> bool:
    first = pattern.words[0]
    return isinstance(first, WordSpec) and first.accepts(token)


def _rebuilds(pattern: CompiledPattern, first: str, pair: str) -> bool:
    """Two recogniser words are one listed word split in two: the split falls inside the word,
    and a prefix's stem is followed by a short ending only ("who reversed" is not "whore*")."""
    spec = pattern.words[0]
    if not isinstance(spec, WordSpec):
        return False
    return pair in spec.exact or any(
        len(first) < len(p) and pair.startswith(p) and len(pair) - len(p) <= _MAX_JOINED_ENDING
        for p in spec.prefixes
    )


def _walk(
    node: _TrieNode,
    tokens: list[str],
    i: int,
    positions: tuple[int, ...],
    seen: set[int],
    found: list[Occurrence],
    gap_stops: frozenset[str],
) -> None:
    """Follow the trie from `node` at tokens[i]; record each pattern completed on the way."""
    for pattern in node.done:
        if id(pattern) not in seen:
            seen.add(id(pattern))
            found.append(Occurrence(pattern, positions[0], positions[-1] + 1, frozenset(positions)))
    n = len(tokens)
    if node.end is not None and i == n:
        _walk(node.end, tokens, i, positions, seen, found, gap_stops)
    if i < n:
        for child in node.children(tokens[i]):
            _walk(child, tokens, i + 1, (*positions, i), seen, found, gap_stops)
    if node.gap is not None:
        # shortest gap first, so a match covers as few words as it can
        for skip in range(min(_GAP_MAX, n - i) + 1):
            if skip and tokens[i + skip - 1] in gap_stops:
                break
            _walk(node.gap, tokens, i + skip, positions, seen, found, gap_stops)


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
        gap_stops = self.word_list("gap_stops", doc.get("gap_stops", []))
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
        return _index(self.path, self.lang, directed_window, reported_window, breakers, gap_stops, patterns)

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
    gap_stops: frozenset[str],
    patterns: list[CompiledPattern],
) -> Lexicon:
    term_trie, context_trie = _TrieNode(), _TrieNode()
    for pattern in patterns:
        (term_trie if pattern.kind == "terms" else context_trie).insert(pattern.words, pattern)
    return Lexicon(
        lang,
        str(path),
        directed_window,
        reported_window,
        breakers,
        gap_stops,
        tuple(patterns),
        term_trie,
        context_trie,
    )


@dataclass(frozen=True, slots=True)
class Found:
    """A match and the word positions it spans, for timestamps."""

    match: Match
    start: int
    end: int


def match_lexicon(lexicon: Lexicon, surfaces: list[str], tokens: list[str]) -> list[Found]:
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
