"""Protocol events (docs/floor-protocol.md) with plausible data, for the floor's tests."""

from __future__ import annotations

from typing import Any

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
