"""Protocol events (docs/floor-protocol.md) with plausible data, for the floor's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from callguard.floor.alerts import format_time

# The live floor shows a call until 12 hours after its last event: the tests that read it post
# events from an hour before the run (a fixed day stops being live the next morning). The tests of
# the history (incidents and figures by day) keep their fixed day, the default below.
RECENT = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
RECENT_DAY = f"{RECENT:%Y-%m-%d}"


def recent(seconds: float) -> str:
    """The protocol time (milliseconds, Z) `seconds` (under 60) after RECENT, in RECENT's minute."""
    return format_time(RECENT + timedelta(seconds=seconds))


DEFAULT_DATA: dict[str, dict[str, Any]] = {
    "call_started": {"agent": "Alice Martin", "queue": "billing", "language": "en", "source": "api"},
    "level": {"level": "abusive", "previous": "tense", "reason": "insults"},
    "abuse": {"category": "insult", "severity": 2, "words": ["idiot"]},
    "threat_alert": {"prompt_id": "threat", "title": "Threat of violence", "words": ["hurt you"]},
    "prompt": {"prompt_id": "limits", "level": "abusive", "title": "State your limits", "alert": False},
    "action": {"action": "transferred"},
    "help": {"message": "caller is threatening"},
    "break": {"minutes": 5},
    "call_ended": {"duration": 120.5, "level_reached": "abusive", "reason": "hung up"},
}


def event(seq: int, kind: str, call_id: str = "call-1", at: str = "2026-12-01T17:03:04.120Z", **data: Any
          ) -> dict[str, Any]:  # fmt: skip
    return {"seq": seq, "call_id": call_id, "kind": kind, "at": at, "t": float(seq),
            "data": {**DEFAULT_DATA[kind], **data}}  # fmt: skip
