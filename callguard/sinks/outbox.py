"""What of a call leaves the workstation for the supervisors' floor, and in which words.

Each event the floor needs becomes one `FloorMessage` (docs/floor-protocol.md), built here and
stored in the incident store's outbox in the same transaction as the event itself
(`IncidentStore.record`), so that a crash can lose neither without the other. What a message
says is IT's choice, `[floor] share`:

- "none": the event, its category and severity; no words at all;
- "flagged" (the default): also the flagged words of lexicon matches, redacted (card numbers,
  phone numbers, e-mail addresses), as the agent's panel shows them;
- "all": also the utterance that was flagged, redacted.

Audio never leaves; transcripts (partials, finals) never do either, whatever the setting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from callguard.core.events import (
    Abuse,
    AgentAction,
    BreakTaken,
    CallEnd,
    CallStart,
    Event,
    HelpRequest,
    LevelChange,
    Prompt,
    Shouting,
    level_rank,
)
from callguard.core.redact import redact_text, shown_words
from callguard.sinks.base import CallInfo

Share = Literal["none", "flagged", "all"]
# Sent first, and watched: if the floor has not taken them within [floor] alert_timeout_s, the
# agent's panel says so.
PRIORITY_KINDS = frozenset({"threat_alert", "help"})


@dataclass(frozen=True, slots=True)
class FloorMessage:
    call_id: str
    kind: str
    t: float  # call time
    at: str  # wall-clock time on the workstation, ISO 8601 UTC
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def priority(self) -> bool:
        return self.kind in PRIORITY_KINDS


def utc_stamp(unix: float) -> str:
    """ISO 8601 UTC with milliseconds, as the floor protocol has it: 2026-12-01T17:03:04.120Z."""
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix))
    return f"{whole}.{int(unix * 1000) % 1000:03d}Z"


class FloorMessages:
    """Turns one call's events into the floor's messages. It remembers what a message needs from
    earlier events: the level reached (for call_ended), the words of the last threat (for its alert)."""

    def __init__(self, call: CallInfo, share: Share) -> None:
        self.call = call
        self.share = share
        self.level_reached = "calm"
        self._threat_words: list[str] = []

    def message(self, event: Event) -> FloorMessage | None:
        """The message the floor gets for `event`, or None for events that stay on the workstation."""
        data = self._data(event)
        if data is None:
            return None
        kind, fields = data
        return FloorMessage(
            call_id=self.call.call_id,
            kind=kind,
            t=round(event.t, 3),
            at=utc_stamp(self.call.started_at + event.t),
            data=fields,
        )

    def _data(self, event: Event) -> tuple[str, dict[str, Any]] | None:
        share = self.share
        match event:
            case CallStart():
                facts = self.call.facts
                return "call_started", {
                    "agent": str(facts.get("agent_name", "")),
                    "queue": str(facts.get("queue", "")),
                    "language": str(facts.get("language", "")),
                    "source": self.call.source,
                }
            case LevelChange():
                if level_rank(event.level) > level_rank(self.level_reached):
                    self.level_reached = event.level
                return "level", {"level": event.level, "previous": event.previous, "reason": event.reason}
            case Abuse():
                words = flagged_words(event, share)
                if event.category == "threat":
                    self._threat_words = words
                fields: dict[str, Any] = {
                    "category": event.category,
                    "severity": event.severity,
                    "words": words,
                }
                if share == "all":
                    fields["text"] = redact_text(event.text)
                return "abuse", fields
            case Shouting():
                return "abuse", {"category": "shouting", "severity": 1, "words": []}
            case Prompt() if event.alert:
                return "threat_alert", {
                    "prompt_id": event.id,
                    "title": event.title,
                    "words": self._threat_words,
                }
            case Prompt():
                return "prompt", {
                    "prompt_id": event.id,
                    "level": event.level,
                    "title": event.title,
                    "alert": False,
                }
            case AgentAction():
                return "action", {"action": event.action}
            case BreakTaken():
                return "break", {"minutes": event.minutes}
            case HelpRequest():
                return "help", ({"message": redact_text(event.message)} if event.message else {})
            case CallEnd():
                return "call_ended", {
                    "duration": round(event.duration, 3),
                    "level_reached": self.level_reached,
                    "reason": event.reason,
                }
        return None


def flagged_words(event: Abuse, share: Share) -> list[str]:
    """The words the agent's panel shows (shown_words), unless share = "none"; the whole utterance
    of a semantic match goes only with share = "all", as `text`."""
    if share == "none":
        return []
    return [word for match in event.matches for word in shown_words(match)]
