"""An alert the floor sends out through its channels (webhook, syslog, Alertmanager, e-mail).

The floor's app builds an `Alert` from an event it has just stored (docs/floor-protocol.md) with
`Alert.from_event`; `alert_kind_of` tells which events make one:

| event                                   | alert kind |
|-----------------------------------------|------------|
| `threat_alert`                          | threat     |
| `help`                                  | help       |
| `level` to abusive / transfer / release | abusive / transfer / release |

An alert fires when its event arrives and is resolved when a supervisor acknowledges it (threat) or
answers "on my way" (help): `alert.resolved(at, by)`. The words are the workstation's, already redacted
of card numbers, phone numbers and e-mail addresses; the floor adds nothing to them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, cast, get_args

AlertKind = Literal["threat", "help", "abusive", "transfer", "release"]
AlertState = Literal["firing", "resolved"]
ALERT_KINDS: tuple[AlertKind, ...] = get_args(AlertKind)
ALERT_STATES: tuple[AlertState, ...] = get_args(AlertState)

# the levels of a `level` event that make an alert (calm and tense do not)
_LEVEL_KINDS: dict[str, AlertKind] = {"abusive": "abusive", "transfer": "transfer", "release": "release"}

_DEFAULT_TITLES: dict[AlertKind, str] = {
    "threat": "Threat on a call",
    "help": "Agent needs help",
    "abusive": "Abusive caller",
    "transfer": "Call to transfer",
    "release": "Call to release",
}


class AlertError(ValueError):
    """An event or a stored alert that cannot make an `Alert`: names the field and what was expected."""


@dataclass(frozen=True)
class Alert:
    """One alert, as every channel renders it. `id` is stable across resends (channels deduplicate on it)."""

    id: str
    kind: AlertKind
    state: AlertState
    team: str
    workstation: str
    # agent and queue come from the call's call_started event; a threat alert is sent ahead of it, so
    # they may be unknown ("") when the alert is built
    agent: str
    queue: str
    call_id: str
    at: datetime
    category: str
    words: tuple[str, ...]
    title: str
    url: str
    # the help request's message or the level's reason
    detail: str = ""
    resolved_at: datetime | None = None
    resolved_by: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ALERT_KINDS:
            raise AlertError(f"alert kind: expected one of {', '.join(ALERT_KINDS)}, got {self.kind!r}")
        if self.state not in ALERT_STATES:
            raise AlertError(f"alert state: expected one of {', '.join(ALERT_STATES)}, got {self.state!r}")
        if self.at.tzinfo is None:
            raise AlertError(f"alert at: expected a time with a time zone, got {self.at.isoformat()}")
        if self.state == "resolved" and self.resolved_at is None:
            raise AlertError("alert resolved_at: a resolved alert needs the time it was resolved")

    @classmethod
    def from_event(
        cls,
        event: Mapping[str, Any],
        workstation: Mapping[str, Any],
        *,
        url: str,
        alert_id: str | None = None,
        call: Mapping[str, Any] | None = None,
    ) -> Alert:
        """The firing alert of a stored protocol event.

        `event` is the protocol's Event (seq, call_id, kind, at, t, data); `workstation` the workstation's
        row (`name`, `team`); `call` the call's row when its call_started has arrived (`agent`, `queue`);
        `url` the wallboard link. `alert_id` defaults to "<workstation>:<seq>", unique at the floor.
        """
        kind = alert_kind_of(event)
        if kind is None:
            raise AlertError(f"event kind: {_describe(event)} does not make an alert")
        data = _mapping(event.get("data", {}), "event data")
        name = _text(workstation, "name", "workstation")
        seq = event.get("seq")
        if alert_id is None:
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise AlertError(f"event seq: expected an integer, got {seq!r}")
            alert_id = f"{name}:{seq}"
        call = call or {}
        return cls(
            id=alert_id,
            kind=kind,
            state="firing",
            team=_text(workstation, "team", "workstation"),
            workstation=name,
            agent=str(call.get("agent") or ""),
            queue=str(call.get("queue") or ""),
            call_id=_text(event, "call_id", "event"),
            at=_parse_time(event.get("at"), "event at"),
            category=_category(kind, data),
            words=_words(data),
            title=str(data.get("title") or _DEFAULT_TITLES[kind]),
            url=url,
            detail=str(data.get("message") or data.get("reason") or ""),
        )

    def resolved(self, at: datetime, by: str = "") -> Alert:
        """This alert resolved at `at` (acknowledged, or "on my way") by the supervisor named `by`."""
        return dataclasses.replace(self, state="resolved", resolved_at=at, resolved_by=by)

    @property
    def agent_label(self) -> str:
        """The agent's name for a message: the workstation's when the call's agent is not known yet."""
        return self.agent or f"agent at {self.workstation}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, as stored with each delivery so a restarted floor can resend it."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "team": self.team,
            "workstation": self.workstation,
            "agent": self.agent,
            "queue": self.queue,
            "call_id": self.call_id,
            "at": format_time(self.at),
            "category": self.category,
            "words": list(self.words),
            "title": self.title,
            "url": self.url,
            "detail": self.detail,
            "resolved_at": None if self.resolved_at is None else format_time(self.resolved_at),
            "resolved_by": self.resolved_by,
        }

    @classmethod
    def from_json(cls, stored: Mapping[str, Any]) -> Alert:
        """The alert `to_json` stored."""
        resolved_at = stored.get("resolved_at")
        words = stored.get("words", [])
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            raise AlertError(f"alert words: expected a list of strings, got {words!r}")
        return cls(
            id=_text(stored, "id", "alert"),
            kind=cast(AlertKind, _text(stored, "kind", "alert")),
            state=cast(AlertState, _text(stored, "state", "alert")),
            team=_text(stored, "team", "alert"),
            workstation=_text(stored, "workstation", "alert"),
            agent=str(stored.get("agent", "")),
            queue=str(stored.get("queue", "")),
            call_id=_text(stored, "call_id", "alert"),
            at=_parse_time(stored.get("at"), "alert at"),
            category=str(stored.get("category", "")),
            words=tuple(words),
            title=_text(stored, "title", "alert"),
            url=str(stored.get("url", "")),
            detail=str(stored.get("detail", "")),
            resolved_at=None if resolved_at is None else _parse_time(resolved_at, "alert resolved_at"),
            resolved_by=str(stored.get("resolved_by", "")),
        )


def alert_kind_of(event: Mapping[str, Any]) -> AlertKind | None:
    """The kind of alert a protocol event makes, or None for an event that makes none."""
    kind = event.get("kind")
    if kind == "threat_alert":
        return "threat"
    if kind == "help":
        return "help"
    if kind == "level":
        data = event.get("data")
        level = data.get("level") if isinstance(data, Mapping) else None
        return _LEVEL_KINDS.get(level) if isinstance(level, str) else None
    return None


def format_time(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and a Z, the protocol's form: 2026-12-01T17:03:04.120Z."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: object, field: str) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise AlertError(f"{field}: expected an ISO 8601 time, got {value!r}") from None
    else:
        raise AlertError(f"{field}: expected an ISO 8601 time, got {value!r}")
    if moment.tzinfo is None:
        raise AlertError(f"{field}: expected a time with a time zone (e.g. ...Z), got {value!r}")
    return moment


def _mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise AlertError(f"{field}: expected an object, got {value!r}")
    return value


def _text(row: Mapping[str, Any], key: str, what: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value:
        raise AlertError(f"{what} {key}: expected a non-empty string, got {value!r}")
    return value


def _category(kind: AlertKind, data: Mapping[str, Any]) -> str:
    if kind == "threat":
        return "threat"
    category = data.get("category")
    return category if isinstance(category, str) else ""


def _words(data: Mapping[str, Any]) -> tuple[str, ...]:
    words = data.get("words", [])
    if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
        raise AlertError(f"event data.words: expected a list of strings, got {words!r}")
    return tuple(words)


def _describe(event: Mapping[str, Any]) -> str:
    kind = event.get("kind")
    if kind == "level":
        data = event.get("data")
        level = data.get("level") if isinstance(data, Mapping) else None
        return f"'level' to {level!r}"
    return repr(kind)
