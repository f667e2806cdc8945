"""Threat alerts as desktop notifications (notify-send), for an agent whose panel is hidden."""

from __future__ import annotations

import logging
import shutil
import subprocess

from callguard.core.events import Event, Prompt
from callguard.sinks.base import CallInfo

log = logging.getLogger("callguard.sinks.desktop")


class DesktopNotifySink:
    def on_event(self, call: CallInfo, event: Event) -> None:
        if isinstance(event, Prompt) and event.alert:
            desktop_notification(event.title, event.instruction)

    def close(self) -> None:
        pass


def desktop_notification(title: str, body: str) -> None:
    notifier = shutil.which("notify-send")
    if notifier is None:
        log.warning("notify_threats is on but notify-send is not installed")
        return
    try:
        subprocess.Popen([notifier, "--urgency=critical", "--app-name=callguard", title, body])
    except OSError as exc:
        log.warning("desktop notification failed", extra={"fields": {"error": str(exc)}})
