"""Redaction of what callers say: card numbers, phone numbers and e-mail addresses, written
as digits or as a recogniser writes them (number words, "at", "dot"), in English and French.

The incident store redacts what it keeps; replay outputs (events files, timelines, reports)
and the panel's stream redact what they show.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import replace

from callguard.core.events import Abuse, Event, Match, Transcript, Word

# Digits as vosk writes them (words), English and French. Value = how many digits the word stands for.
_UNIT_WORDS = {
    "zero": 1, "oh": 1, "one": 1, "two": 1, "three": 1, "four": 1, "five": 1, "six": 1, "seven": 1,
    "eight": 1, "nine": 1,
    "zéro": 1, "un": 1, "une": 1, "deux": 1, "trois": 1, "quatre": 1, "cinq": 1, "sept": 1, "huit": 1,
    "neuf": 1,
}  # fmt: skip
_TEEN_TENS_WORDS = {
    "ten": 2, "eleven": 2, "twelve": 2, "thirteen": 2, "fourteen": 2, "fifteen": 2, "sixteen": 2,
    "seventeen": 2, "eighteen": 2, "nineteen": 2, "twenty": 2, "thirty": 2, "forty": 2, "fifty": 2,
    "sixty": 2, "seventy": 2, "eighty": 2, "ninety": 2, "hundred": 2,
    "dix": 2, "onze": 2, "douze": 2, "treize": 2, "quatorze": 2, "quinze": 2, "seize": 2, "vingt": 2,
    "vingts": 2, "trente": 2, "quarante": 2, "cinquante": 2, "soixante": 2, "cent": 2, "cents": 2,
}  # fmt: skip
_TENS = {"twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "vingt", "trente",
         "quarante", "cinquante", "soixante"}  # fmt: skip
_JOINERS = {"et", "and", "double", "triple"}  # "soixante et onze", "double five"
_TOKEN = re.compile(r"[\w@.+'-]+|[()]|\S", re.UNICODE)

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.UNICODE)
# Spoken addresses as a recogniser writes them: "john dot smith at example dot com", "jean point
# dupont arobase exemple point fr". The domain must contain a "dot" so "look at this" is left alone.
# "john at example dot com", "jean arobase exemple point fr", and as a transcriber writes the
# spoken symbols: "john (at) example (dot) com", "[at]".
_AT = r"[(\[]?(?:at|arobase|arrobase)[)\]]?"
_DOT = r"[(\[]?(?:dot|point)[)\]]?"
_SPOKEN_EMAIL = re.compile(
    rf"\b[\w-]+(?:\s+(?:{_DOT}|underscore|dash|tiret)\s+[\w-]+)*\s+{_AT}\s+"
    rf"[\w-]+(?:\s+{_DOT}\s+[\w-]+)+\b",
    re.UNICODE | re.IGNORECASE,
)
# An address still being said, at the end of a partial result: "john at example", "john at example
# dot", "jean arobase". A plain "at" needs a word after it ("i'm at" is no address yet); a partial
# such as "look at this" is redacted too, until the next partial shows more.
_OPEN_EMAIL = re.compile(
    rf"\b[\w-]+(?:\s+(?:{_DOT}|underscore|dash|tiret)\s+[\w-]+)*\s+"
    rf"(?:(?:arobase|arrobase|[(\[]at[)\]])(?:\s+[\w-]+)?|at\s+[\w-]+)(?:\s+{_DOT}(?:\s+[\w-]+)?)*\s*$",
    re.UNICODE | re.IGNORECASE,
)
# A date is not a phone number: "12 03 2024", "12/03/2024", "2024-03-12".
_DATE = re.compile(
    r"\b(?:(?:0?[1-9]|[12]\d|3[01])[ ./-](?:0?[1-9]|1[0-2])[ ./-](?:19|20)\d\d"
    r"|(?:19|20)\d\d[ ./-](?:0?[1-9]|1[0-2])[ ./-](?:0?[1-9]|[12]\d|3[01]))\b"
)
_DIGITS = re.compile(r"\d")


def _number_value(token: str) -> int:
    """How many digits a token stands for (0: not a number token)."""
    lowered = token.lower().strip(".,")
    if re.fullmatch(r"\+?[\d-]+", lowered):
        return len(_DIGITS.findall(lowered))
    parts = lowered.split("-")  # "quatre-vingt-dix", "dix-sept", "twenty-three"
    if all(p in _UNIT_WORDS or p in _TEEN_TENS_WORDS or p in _JOINERS for p in parts):
        # a compound with a tens word is one two-digit group ("soixante-dix-huit" = 78)
        return 2 if any(p in _TEEN_TENS_WORDS for p in parts) else sum(p in _UNIT_WORDS for p in parts)
    return 0


def redact_text(text: str, open_end: bool = False) -> str:
    """Replace card numbers, phone numbers and e-mail addresses with [card], [phone], [email].

    `open_end`: the text may go on (a partial result): a run of 3 digits or more at its end may be
    the start of a card or phone number, and becomes [number]; an address being said, [email]."""
    text = _EMAIL.sub("[email]", text)
    text = _SPOKEN_EMAIL.sub("[email]", text)
    if open_end:
        text = _OPEN_EMAIL.sub("[email]", text)
    dates = [m.span() for m in _DATE.finditer(text)]
    tokens = list(_TOKEN.finditer(text))
    in_date = [any(a <= t.start() < b for a, b in dates) for t in tokens]  # a date ends a run
    out: list[str] = []
    cursor = 0
    i = 0
    while i < len(tokens):
        if in_date[i] or not _number_value(tokens[i].group()):
            i += 1
            continue
        # A run of number words and digit groups, with separators ( ) - + and joiners between them.
        run_end, digits, absorb_next = i, 0, False
        for j in range(i, len(tokens)):
            word = tokens[j].group()
            lowered = word.lower()
            value = 0 if in_date[j] else _number_value(word)
            if value:
                # "twenty three" and "soixante dix huit" are one two-digit group
                absorbed = absorb_next and (lowered in _UNIT_WORDS or lowered in _TEEN_TENS_WORDS)
                digits += 0 if absorbed else value
                absorb_next = lowered in _TENS or (absorbed and lowered in _TEEN_TENS_WORDS)
                run_end = j + 1
            elif lowered in _JOINERS or word in ("(", ")", "-", "+", ",", "."):  # pauses as commas
                pass
            else:
                break
        still_going = open_end and run_end == len(tokens) and digits >= 3
        if digits >= 7 or still_going:
            out.append(text[cursor : tokens[i].start()])
            out.append("[card]" if digits >= 13 else "[phone]" if digits >= 7 else "[number]")
            cursor = tokens[run_end - 1].end()
        i = run_end
    out.append(text[cursor:])
    return "".join(out)


def redact_words(words: tuple[str, ...]) -> tuple[str, ...]:
    """Flagged words, redacted as the sentence they came from would be."""
    return tuple(redact_text(" ".join(words)).split()) if words else words


def shown_words(match: Match) -> tuple[str, ...]:
    """The words of a match that may be shown to the agent or sent to the floor: a lexicon match's,
    redacted; a semantic match names none (it read the whole utterance)."""
    return redact_words(match.words) if match.source == "lexicon" else ()


def _redact_timed(words: tuple[Word, ...], open_end: bool) -> tuple[Word, ...]:
    """A transcript's timed words, a redacted run becoming one placeholder over its span."""
    before = [w.word for w in words]
    after = redact_text(" ".join(before), open_end).split()
    if after == before:
        return words
    out: list[Word] = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(a=before, b=after, autojunk=False).get_opcodes():
        if op == "equal":
            out.extend(words[a0:a1])
        elif a1 > a0:  # replaced or deleted: the placeholders, spread over the words they stand for
            placeholders = after[b0:b1] or ["[redacted]"]
            span = words[a0:a1]
            out.append(Word(" ".join(placeholders), span[0].start, span[-1].end, min(w.conf for w in span)))
    return tuple(out)


def redact_event(event: Event) -> Event:
    """An event with what the caller said redacted: transcripts, and abuse with its words."""
    match event:
        case Transcript():
            partial = not event.final
            return replace(
                event, text=redact_text(event.text, partial), words=_redact_timed(event.words, partial)
            )
        case Abuse():
            matches = tuple(replace(m, words=redact_words(m.words)) for m in event.matches)
            return replace(
                event,
                text=redact_text(event.text, event.partial),
                words=redact_words(event.words),
                matches=matches,
            )
    return event
