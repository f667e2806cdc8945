"""The workstation's link to the supervisors' floor (`callguard floor`, docs/floor-protocol.md).

Two threads, neither on the audio path:
- the sender ships the incident store's outbox in order, threat alerts and help requests first,
  in batches, each message with its sequence number (the floor keeps the first copy of each), and
  backs off exponentially, with jitter, while the floor cannot be reached: nothing is lost, since a
  message leaves the outbox only when the floor has answered that it has it;
- the listener long-polls the floor for notices (a supervisor acknowledged the threat alert, is
  on the way) and hands them to the agent's panel.

A threat alert or help request still in the outbox after `[floor] alert_timeout_s` puts a plain
line on the agent's panel ("Supervisor not reached: call them"): it is never silent.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from callguard.core.config import Config, FloorConfig
from callguard.core.errors import ConfigError
from callguard.sinks.store import IncidentStore, OutboxEntry

log = logging.getLogger("callguard.live.floor")
BATCH = 200  # messages per request (the floor takes up to 500)
NOTICE_WAIT_S = 25  # the floor's long poll, below its own cap of 30
REQUEST_TIMEOUT_S = 10.0
WATCH_S = 0.5  # how often unsent threat alerts and help requests are looked at
PRUNE_AFTER_S = 7 * 24 * 3600.0  # sent messages kept this long in the outbox, for audits


class FloorRefused(Exception):
    """The floor answered, and said no (a bad or revoked credential, a floor in trouble): try again later."""


class FloorRejected(FloorRefused):
    """The floor cannot take what was sent (400, 413, 422): sending it again would never help."""


REJECTED_STATUSES = (400, 413, 422)


@dataclass(frozen=True, slots=True)
class FloorEndpoint:
    host: str
    port: int
    credential: str
    tls: ssl.SSLContext

    @classmethod
    def from_config(cls, config: Config) -> FloorEndpoint:
        floor = config.floor
        url = urlsplit(floor.url)
        if url.scheme != "https" or not url.hostname:
            raise ConfigError(config.base_dir, "floor.url", f"must be an https:// URL, got {floor.url!r}")
        credential = read_credential(config.path(floor.credential_file), "floor.credential_file")
        tls = ssl.create_default_context(cafile=str(config.path(floor.ca_file)) if floor.ca_file else None)
        return cls(url.hostname, url.port or 443, credential, tls)

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_S, context=self.tls)


def backed_off(ceiling: float, cap: float) -> tuple[float, float]:
    """The next step of an exponential back-off: its ceiling (half a second, doubling, up to `cap`) and
    a wait under it with equal jitter, so that a site's workstations do not all come back at once."""
    ceiling = min(cap, max(0.5, ceiling * 2))
    return ceiling, random.uniform(ceiling / 2, ceiling)


def read_credential(path: Path, key: str) -> str:
    try:
        credential = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(path, key, f"cannot read the workstation's floor credential ({exc})") from None
    if not credential:
        raise ConfigError(path, key, "is empty: put the credential `callguard floor enrol` printed in it")
    return credential


def start_floor_link(
    config: Config,
    store: Callable[[], IncidentStore | None],
    publish: Callable[[dict[str, Any]], None],
) -> tuple[FloorLink | None, str]:
    """The floor link `[floor]` asks for, started: (None, "") without a floor URL, (None, why) when
    its settings are wrong (logged; calls go on without the floor), else (the link, "")."""
    if not config.floor.url:
        return None, ""
    try:
        endpoint = FloorEndpoint.from_config(config)
    except ConfigError as exc:
        log.error("floor link not started", extra={"fields": {"key": exc.key, "problem": exc.problem}})
        return None, str(exc)
    link = FloorLink(config.floor, endpoint, store, publish)
    link.start()
    return link, ""


class FloorLink:
    def __init__(
        self,
        settings: FloorConfig,
        endpoint: FloorEndpoint,
        store: Callable[[], IncidentStore | None],
        publish: Callable[[dict[str, Any]], None],
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self._store = store
        self._publish = publish
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._warned: set[int] = set()  # priority messages the panel was told are not through
        self.last_error = ""
        self.last_sent_at = 0.0
        self.sent = 0
        self._polling: http.client.HTTPSConnection | None = None  # the long poll, cut short by stop()
        self._threads = [
            threading.Thread(target=self._send_loop, name="floor-sender", daemon=True),
            threading.Thread(target=self._listen_loop, name="floor-notices", daemon=True),
            threading.Thread(target=self._watch_loop, name="floor-watch", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        polling = self._polling
        if polling is not None and polling.sock is not None:
            with contextlib.suppress(OSError):
                polling.sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 1)

    def wake(self) -> None:
        """Something was queued: send now rather than at the next round."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        store = self._store()
        pending = store.outbox_pending_count() if store is not None else 0
        return {
            "url": self.settings.url,
            "ok": not self.last_error,
            "error": self.last_error,
            "pending": pending,
            "sent": self.sent,
            "last_sent_at": self.last_sent_at or None,
        }

    # --- sending ---------------------------------------------------------------------------------

    def _send_loop(self) -> None:
        ceiling = wait = 0.0  # the back-off while the floor cannot be reached (0: it can)
        connection: http.client.HTTPSConnection | None = None
        if (store := self._store()) is not None:
            store.prune_sent(time.time() - PRUNE_AFTER_S)
        while not self._stop.is_set():
            self._wake.wait(wait if wait else self.settings.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            store = self._store()
            if store is None:
                continue
            try:
                while entries := store.outbox_pending(BATCH):
                    connection = self._send(store, connection, entries)
                if self.last_error:
                    log.info("floor reached again", extra={"fields": {"url": self.settings.url}})
                self.last_error = ""
                ceiling = wait = 0.0
            except (OSError, http.client.HTTPException, FloorRefused) as exc:
                if connection is not None:
                    connection.close()
                connection = None
                self._note_failure(exc)
                ceiling, wait = backed_off(ceiling, self.settings.retry_max_s)
        if connection is not None:
            connection.close()

    def _send(
        self, store: IncidentStore, connection: http.client.HTTPSConnection | None, entries: list[OutboxEntry]
    ) -> http.client.HTTPSConnection:
        """Send a batch and take it off the outbox. A batch the floor rejects is sent again one message
        at a time, and a message it rejects alone is set aside (kept, marked, logged), so that one
        message a floor cannot read (a newer workstation's, say) never holds up the threats behind it."""
        try:
            connection = self._post(connection, entries)
        except FloorRejected as exc:
            if len(entries) == 1:
                store.mark_rejected(entries[0].seq, str(exc), time.time())
                log.error(
                    "the floor rejected a message: set aside, the others go on",
                    extra={"fields": {"seq": entries[0].seq, "kind": entries[0].kind, "error": str(exc)}},
                )
                return self.endpoint.connect()
            kept = connection or self.endpoint.connect()
            for entry in entries:
                kept = self._send(store, kept, [entry])
            return kept
        store.mark_sent([entry.seq for entry in entries], time.time())
        self.sent += len(entries)
        self.last_sent_at = time.time()
        return connection

    def _post(
        self, connection: http.client.HTTPSConnection | None, entries: list[OutboxEntry]
    ) -> http.client.HTTPSConnection:
        """Send one batch; returns the connection to keep for the next one. A kept connection that the
        floor closed while idle (its keep-alive ran out) is replaced at once, not backed off from: a
        threat after a quiet minute must not wait."""
        body = json.dumps({"events": [entry.wire() for entry in entries]}).encode()
        if connection is not None:
            try:
                status, answer = self._request(connection, "POST", "/api/v1/events", body)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
                # over TLS a connection the floor closed while idle says so as an SSL EOF
                connection.close()
                connection = None
        if connection is None:
            connection = self.endpoint.connect()
            status, answer = self._request(connection, "POST", "/api/v1/events", body)
        if status != 200:
            refusal = FloorRejected if status in REJECTED_STATUSES else FloorRefused
            raise refusal(f"the floor answered {status} to {len(entries)} events: {answer[:300]}")
        return connection

    def _request(
        self, connection: http.client.HTTPSConnection, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {self.endpoint.credential}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")

    def _note_failure(self, exc: Exception) -> None:
        error = str(exc) or type(exc).__name__
        if error != self.last_error:
            log.error("floor not reached; the outbox keeps every event", extra={"fields": {"error": error}})
        self.last_error = error

    def _watch_loop(self) -> None:
        """On a clock of its own: the sender may be waiting out a back-off or a floor that hangs."""
        while not self._stop.wait(WATCH_S):
            store = self._store()
            if store is not None:
                try:
                    self._warn_unreached(store)
                except Exception:  # the watch must outlive a store error: it is the agent's last resort
                    log.exception("floor watch failed")

    def _warn_unreached(self, store: IncidentStore) -> None:
        cutoff = time.time() - self.settings.alert_timeout_s
        for entry in store.outbox_unsent_priority(queued_before=cutoff):
            if entry.seq in self._warned:
                continue
            self._warned.add(entry.seq)
            log.error(
                "supervisor not reached",
                extra={"fields": {"call_id": entry.call_id, "kind": entry.kind, "error": self.last_error}},
            )
            self._publish(
                {"kind": "floor", "state": "unreached", "call_id": entry.call_id, "about": entry.kind}
            )

    # --- notices ---------------------------------------------------------------------------------

    def _listen_loop(self) -> None:
        # The first answer only tells where the floor's notices stand: older ones are of calls gone.
        after, ceiling, caught_up = 0, 0.0, False
        while not self._stop.is_set():
            connection = self._polling = self.endpoint.connect()
            connection.timeout = NOTICE_WAIT_S + REQUEST_TIMEOUT_S
            if self._stop.is_set():
                break
            try:
                wait = NOTICE_WAIT_S if caught_up else 0
                status, answer = self._request(
                    connection, "GET", f"/api/v1/notices?after={after}&wait={wait}"
                )
                if status != 200:
                    raise FloorRefused(f"the floor answered {status} to the notices poll: {answer[:300]}")
                notices = json.loads(answer).get("notices", [])
                for notice in notices:
                    after = max(after, int(notice["id"]))
                    if caught_up:
                        self._publish({"kind": "floor", "state": "notice", "notice": notice})
                caught_up, ceiling = caught_up or not notices, 0.0
            except (OSError, http.client.HTTPException, FloorRefused, ValueError, KeyError) as exc:
                log.debug("floor notices poll failed", extra={"fields": {"error": str(exc)}})
                ceiling, pause = backed_off(ceiling, self.settings.retry_max_s)
                self._stop.wait(pause)
            finally:
                connection.close()
