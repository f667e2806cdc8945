"""Threat alerts as desktop notifications: the real notify-send, over a real D-Bus session bus.

The test starts its own session bus (dbus-daemon) and stands up the freedesktop notification
service on it (org.freedesktop.Notifications, answered with jeepney), in place of the agent's
desktop, which does not exist on this machine. notify-send is the one the daemon runs.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jeepney import HeaderFields, MessageType, new_method_return
from jeepney.bus_messages import message_bus
from jeepney.io.blocking import DBusConnection, open_dbus_connection

import callguard.sinks.desktop as desktop
from callguard.core.events import Prompt

pytestmark = pytest.mark.skipif(
    shutil.which("dbus-daemon") is None or shutil.which("notify-send") is None,
    reason="dbus-daemon and notify-send (libnotify-bin) not installed",
)

NOTIFICATIONS = "org.freedesktop.Notifications"


@dataclass
class NotificationServer:
    """The freedesktop notification service, recording every Notify call."""

    conn: DBusConnection
    received: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def serve(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.conn.receive(timeout=0.1)
            except TimeoutError:
                continue
            except OSError:
                return
            if msg.header.message_type != MessageType.method_call:
                continue
            member = msg.header.fields.get(HeaderFields.member)
            if member == "Notify":
                app, _replaces, _icon, summary, body, _actions, hints, _timeout = msg.body
                self.received.append(
                    {
                        "app": app,
                        "summary": summary,
                        "body": body,
                        "urgency": hints.get("urgency", ("y", None))[1],
                    }
                )
                self.conn.send(new_method_return(msg, "u", (len(self.received),)))
            elif member == "GetServerInformation":
                self.conn.send(new_method_return(msg, "ssss", ("test", "callguard", "1", "1.2")))
            elif member == "GetCapabilities":
                self.conn.send(new_method_return(msg, "as", (["body"],)))

    def stop(self) -> None:
        self._stop.set()


@pytest.fixture
def notification_bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotificationServer]:
    bus = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert bus.stdout is not None
        address = bus.stdout.readline().strip()
        monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", address)
        conn = open_dbus_connection(address)
        reply = conn.send_and_get_reply(message_bus.RequestName(NOTIFICATIONS))
        assert reply.body == (1,), reply.body  # primary owner of the name
        server = NotificationServer(conn)
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        yield server
        server.stop()
        thread.join(2)
        conn.close()
    finally:
        bus.terminate()
        bus.wait(5)


def wait_for(server: NotificationServer, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(server.received) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return server.received


def test_threat_alert_reaches_the_desktop_as_a_critical_notification(
    notification_bus: NotificationServer,
) -> None:
    desktop.desktop_notification("Threat: call security now", "Stay calm; follow the threat procedure.")
    [note] = wait_for(notification_bus, 1)
    assert note == {
        "app": "callguard",
        "summary": "Threat: call security now",
        "body": "Stay calm; follow the threat procedure.",
        "urgency": 2,  # critical: stays on screen until the agent dismisses it
    }


def test_without_notify_send_the_alert_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("PATH", os.devnull)
    with caplog.at_level(logging.WARNING, logger=desktop.log.name):
        desktop.desktop_notification("Threat", "body")
    assert "notify-send is not installed" in caplog.text


def test_the_daemon_notifies_threat_alerts_and_nothing_else(
    notification_bus: NotificationServer, tmp_path: Path
) -> None:
    from tests.live.harness import (  # the API tests' daemon: no model, blocks queued by hand
        Client,
        start_daemon,
    )

    running = start_daemon(tmp_path, notify_threats=True)
    try:
        status, _, _ = Client(running.server.port).request("POST", "/api/v1/calls", body={"call_id": "C-7"})
        assert status == 201
        call = running.call
        assert call is not None
        plain = Prompt(t=12.0, speaker="agent", id="acknowledge", title="Acknowledge", instruction="Name it.")
        alert = Prompt(
            t=13.0,
            speaker="agent",
            id="threat",
            level="transfer",
            title="Threat",
            instruction="Call security.",
            alert=True,
        )
        running._on_worker(lambda: running._handle(call, [plain, alert]))  # as the pipeline hands them over
        wait_for(notification_bus, 1)
        time.sleep(0.5)  # time for a second notification, were there one
        assert [(n["summary"], n["body"]) for n in notification_bus.received] == [
            ("Threat", "Call security.")
        ]
    finally:
        running.shutdown()
