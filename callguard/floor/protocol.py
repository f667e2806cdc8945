"""The workstation → floor wire format (docs/floor-protocol.md): validation of a batch of events.

Every problem is a ProtocolError naming the field (`events[3].data.severity`) and what was expected, so
the workstation's log says exactly which event of its outbox is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

MAX_EVENTS = 500
MAX_BODY_BYTES = 1_000_000
MAX_CALL_ID = 128
MAX_TEXT = 4000
MAX_WORDS = 200
MAX_HELP_MESSAGE = 256

LEVELS = ("calm", "tense", "abusive", "transfer", "release")
ABUSE_CATEGORIES = ("profanity", "insult", "threat", "shouting")
ACTIONS = ("acknowledged", "limits_stated", "transferred", "released")


class ProtocolError(ValueError):
    def __init__(self, field: str, expected: str, got: object) -> None:
        self.field = field
        super().__init__(f"{field}: expected {expected}, got {_show(got)}")


@dataclass(frozen=True)
class Event:
    seq: int
    call_id: str
    kind: str
    at: datetime
    t: float
    data: dict[str, Any]


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_batch(body: object) -> list[Event]:
    """The events of a `POST /api/v1/events` body, all valid, or a ProtocolError for the first bad one."""
    if not isinstance(body, Mapping):
        raise ProtocolError("body", 'a JSON object {"events": [...]}', body)
    events = body.get("events")
    if not isinstance(events, list):
        raise ProtocolError("events", "a list of events", events)
    if len(events) > MAX_EVENTS:
        raise ProtocolError("events", f"at most {MAX_EVENTS} events per request", f"{len(events)} events")
    return [parse_event(event, f"events[{index}]") for index, event in enumerate(events)]


def parse_event(event: object, where: str) -> Event:
    if not isinstance(event, Mapping):
        raise ProtocolError(where, "an event object", event)
    seq = event.get("seq")
    if not _is_int(seq) or seq < 1:
        raise ProtocolError(f"{where}.seq", "an integer ≥ 1", seq)
    call_id = _string(event.get("call_id"), f"{where}.call_id", MAX_CALL_ID, empty_ok=False)
    kind = event.get("kind")
    if kind not in DATA_CHECKS:
        raise ProtocolError(f"{where}.kind", f"one of {', '.join(DATA_CHECKS)}", kind)
    at = _time(event.get("at"), f"{where}.at")
    t = event.get("t")
    if not _is_number(t) or t < 0:
        raise ProtocolError(f"{where}.t", "a number of seconds ≥ 0", t)
    data = event.get("data")
    if not isinstance(data, Mapping):
        raise ProtocolError(f"{where}.data", "an object", data)
    DATA_CHECKS[kind](data, f"{where}.data")
    return Event(seq=seq, call_id=call_id, kind=kind, at=at, t=float(t), data=dict(data))


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> TypeGuard[int | float]:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _string(value: object, field: str, limit: int, empty_ok: bool = True) -> str:
    if not isinstance(value, str) or (not empty_ok and not value):
        raise ProtocolError(field, "a non-empty string" if not empty_ok else "a string", value)
    if len(value) > limit:
        raise ProtocolError(field, f"at most {limit} characters", f"{len(value)} characters")
    return value


def _choice(data: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...]) -> None:
    if data.get(key) not in choices:
        raise ProtocolError(f"{where}.{key}", f"one of {', '.join(choices)}", data.get(key))


def _time(value: object, field: str) -> datetime:
    expected = "an ISO 8601 UTC time such as 2026-12-01T17:03:04.120Z"
    if not isinstance(value, str):
        raise ProtocolError(field, expected, value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ProtocolError(field, expected, value) from None
    if moment.tzinfo is None:
        raise ProtocolError(field, expected + " (with its Z or offset)", value)
    return moment


def _words(data: Mapping[str, Any], where: str) -> None:
    words = data.get("words")
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise ProtocolError(f"{where}.words", "a list of strings (empty when share = none)", words)
    if len(words) > MAX_WORDS:
        raise ProtocolError(f"{where}.words", f"at most {MAX_WORDS} words", f"{len(words)} words")
    for index, word in enumerate(words):
        _string(word, f"{where}.words[{index}]", MAX_CALL_ID)


def _call_started(data: Mapping[str, Any], where: str) -> None:
    _string(data.get("agent"), f"{where}.agent", MAX_CALL_ID)
    _string(data.get("queue"), f"{where}.queue", MAX_CALL_ID)
    _choice(data, "language", where, ("en", "fr"))
    _choice(data, "source", where, ("api", "auto"))


def _level(data: Mapping[str, Any], where: str) -> None:
    _choice(data, "level", where, LEVELS)
    _choice(data, "previous", where, LEVELS)
    _string(data.get("reason"), f"{where}.reason", MAX_TEXT)


def _abuse(data: Mapping[str, Any], where: str) -> None:
    _choice(data, "category", where, ABUSE_CATEGORIES)
    severity = data.get("severity")
    if not _is_int(severity) or not 1 <= severity <= 3:
        raise ProtocolError(f"{where}.severity", "an integer from 1 to 3", severity)
    _words(data, where)
    if "text" in data:
        _string(data["text"], f"{where}.text", MAX_TEXT)


def _threat_alert(data: Mapping[str, Any], where: str) -> None:
    _string(data.get("prompt_id"), f"{where}.prompt_id", MAX_CALL_ID, empty_ok=False)
    _string(data.get("title"), f"{where}.title", MAX_TEXT)
    _words(data, where)


def _prompt(data: Mapping[str, Any], where: str) -> None:
    _string(data.get("prompt_id"), f"{where}.prompt_id", MAX_CALL_ID, empty_ok=False)
    _choice(data, "level", where, LEVELS)
    _string(data.get("title"), f"{where}.title", MAX_TEXT)
    if not isinstance(data.get("alert"), bool):
        raise ProtocolError(f"{where}.alert", "true or false", data.get("alert"))


def _action(data: Mapping[str, Any], where: str) -> None:
    _choice(data, "action", where, ACTIONS)


def _help(data: Mapping[str, Any], where: str) -> None:
    if "message" in data:
        _string(data["message"], f"{where}.message", MAX_HELP_MESSAGE)


def _break(data: Mapping[str, Any], where: str) -> None:
    minutes = data.get("minutes")
    if not _is_number(minutes) or minutes < 0:
        raise ProtocolError(f"{where}.minutes", "a number of minutes ≥ 0", minutes)


def _call_ended(data: Mapping[str, Any], where: str) -> None:
    duration = data.get("duration")
    if not _is_number(duration) or duration < 0:
        raise ProtocolError(f"{where}.duration", "a number of seconds ≥ 0", duration)
    _choice(data, "level_reached", where, LEVELS)
    _string(data.get("reason"), f"{where}.reason", MAX_TEXT)


DATA_CHECKS: dict[str, Callable[[Mapping[str, Any], str], None]] = {
    "call_started": _call_started,
    "level": _level,
    "abuse": _abuse,
    "threat_alert": _threat_alert,
    "prompt": _prompt,
    "action": _action,
    "help": _help,
    "break": _break,
    "call_ended": _call_ended,
}
