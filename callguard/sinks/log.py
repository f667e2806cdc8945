"""The daemon's structured log lines about a call's events (the journal, a SIEM reading it)."""

from __future__ import annotations

import logging

from callguard.core.events import Abuse, AgentAction, Event, LevelChange, Notice, Prompt, Shouting
from callguard.sinks.base import CallInfo

log = logging.getLogger("callguard.live.daemon")  # the daemon's own logger: IT filters on it
_LOGGED_KEYS = ("t", "level", "category", "severity", "action", "reason")


class LogSink:
    """One log line per prompt, level change, abuse, shouting, agent action and notice: never the
    words said (the journal is readable by more people than the incident store)."""

    def on_event(self, call: CallInfo, event: Event) -> None:
        match event:
            case Prompt():
                fields = {
                    "id": event.id,
                    "ladder_level": event.level,
                    "alert": event.alert,
                    "t": round(event.t, 2),
                }
                log.info("prompt", extra={"fields": {"call_id": call.call_id, **fields}})
            case LevelChange() | Abuse() | Shouting() | AgentAction():
                data = event.to_dict()
                fields = {k: v for k, v in data.items() if k in _LOGGED_KEYS}
                log.info(event.type, extra={"fields": {"call_id": call.call_id, **fields}})
            case Notice():
                log.info("notice", extra={"fields": {"call_id": call.call_id, "message": event.message}})

    def close(self) -> None:
        pass
