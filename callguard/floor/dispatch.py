"""Durable delivery of alerts to their channels: the `deliveries` table is an outbox, a dispatcher sends it.

The app, in the transaction that stores an alert, calls `await dispatcher.enqueue(conn, alert)`: one
`deliveries` row per channel that a rule selects (and a NOTIFY, which PostgreSQL delivers only when the
transaction commits). So no channel is tried before the alert is stored, and an alert stored is sent
even if the floor stops right after. When a supervisor acknowledges, the app enqueues
`alert.resolved(at, by)` the same way.

`await dispatcher.run(stop)` (one task for the floor's lifetime) sends the pending rows:

- each channel has its own sends in flight (at most `per_channel`), each bounded by `send_timeout`: a
  channel that hangs or fails never delays another one;
- a failed send is logged with its channel and error and retried with exponential back-off and jitter
  (`retry_initial` doubling up to `retry_max`); after `give_up_hours` it is marked failed (logged as an
  error, kept in the table);
- a resolved alert waits until its firing one has been sent to that channel (Alertmanager would fire
  it again otherwise);
- threat alerts and help requests go before other kinds;
- after a restart the pending rows are sent again; PostgreSQL going away is waited out.

A send is recorded as sent after the channel confirmed it; a floor killed in between sends it again on
restart (at least once): every channel carries the alert's id for the receiver to tell (Alertmanager
merges identical labels by itself). One dispatcher per database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from callguard.floor.alerts import Alert, AlertError
from callguard.floor.channels import Channel, DeliveryError
from callguard.floor.rules import AlertRouting

log = logging.getLogger(__name__)
RECONNECT_MAX_S = 30.0  # the longest wait between two tries to reach PostgreSQL again

NOTIFY_CHANNEL = "callguard_floor_deliveries"


class DeliveryConfigError(ValueError):
    """A bad `[delivery]` setting: the message names the key."""


@dataclass(frozen=True)
class DeliverySettings:
    """How the dispatcher sends and retries (`[delivery]` in the floor's config; all in seconds but
    give_up_hours)."""

    # one send, whatever the channel's own time-outs
    send_timeout: float = 15.0
    retry_initial: float = 2.0
    retry_max: float = 300.0
    give_up_hours: float = 24.0
    per_channel: int = 8
    # a look at the table without a NOTIFY (retries fall due without one)
    poll_seconds: float = 5.0
    reconnect_seconds: float = 2.0
    # how long a stopping dispatcher lets sends in flight finish (the others are sent after a restart)
    stop_grace: float = 5.0

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> DeliverySettings:
        known = {field.name: field for field in fields(cls)}
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise DeliveryConfigError(
                f"delivery.{unknown[0]}: unknown key (expected one of {', '.join(known)})"
            )
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key == "per_channel":
                if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 100:
                    raise DeliveryConfigError(
                        f"delivery.per_channel: expected an integer 1-100, got {value!r}"
                    )
            elif (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise DeliveryConfigError(f"delivery.{key}: expected a positive number, got {value!r}")
            values[key] = value
        settings = cls(**values)
        if settings.retry_max < settings.retry_initial:
            raise DeliveryConfigError(
                f"delivery.retry_max: expected at least retry_initial ({settings.retry_initial:g}), "
                f"got {settings.retry_max!r}"
            )
        return settings

    def retry_delay(self, attempts: int, rng: random.Random) -> float:
        """Seconds before the next attempt after `attempts` failed ones: doubling from retry_initial up to
        retry_max, then "equal jitter" (half of it random) so that many failed sends do not retry as one."""
        delay = min(self.retry_max, self.retry_initial * 2 ** min(attempts - 1, 30))
        return delay / 2 + rng.uniform(0, delay / 2)


@dataclass(frozen=True)
class _Due:
    id: int
    alert: Alert
    attempts: int


# a resolved alert waits for its firing one to the same channel
_NOT_BLOCKED = """
NOT (d.alert_state = 'resolved' AND EXISTS (
    SELECT 1 FROM deliveries f WHERE f.alert_id = d.alert_id AND f.channel = d.channel
    AND f.alert_state = 'firing' AND f.state = 'pending'))
"""
_SELECT_DUE = f"""
SELECT d.id, d.alert, d.attempts FROM deliveries d
WHERE d.channel = %s AND d.state = 'pending' AND d.next_attempt_at <= now() AND NOT d.id = ANY(%s)
AND {_NOT_BLOCKED}
ORDER BY d.alert->>'kind' IN ('threat', 'help') DESC, d.next_attempt_at, d.id
LIMIT %s
"""
_NEXT_DUE = f"""
SELECT EXTRACT(EPOCH FROM min(d.next_attempt_at) - now()) FROM deliveries d
WHERE d.state = 'pending' AND d.channel = ANY(%s) AND NOT d.id = ANY(%s) AND {_NOT_BLOCKED}
"""
_RECORD_FAILURE = """
UPDATE deliveries SET attempts = attempts + 1, last_error = %s,
    next_attempt_at = now() + make_interval(secs => %s),
    state = CASE WHEN created_at <= now() - %s * interval '1 hour' THEN 'failed' ELSE 'pending' END
WHERE id = %s RETURNING state
"""


class Dispatcher:
    """Sends the `deliveries` rows of the alerts `enqueue` stored, through the routing's channels."""

    def __init__(
        self,
        dsn: str,
        routing: AlertRouting,
        settings: DeliverySettings | None = None,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.routing = routing
        self.settings = settings or DeliverySettings()
        self._dsn = dsn
        self._rng = rng or random.Random()
        self._wakeup = asyncio.Event()
        self._in_flight: dict[str, set[int]] = {name: set() for name in routing.channels}
        self._tasks: set[asyncio.Task[None]] = set()
        # connected and listening (a lost connection then retries at once, a failing one backs off)
        self._serving = False

    async def enqueue(self, conn: psycopg.AsyncConnection[Any], alert: Alert) -> list[str]:
        """Queue the alert for each channel a rule selects, in the caller's transaction; the channels
        queued now (an alert enqueued again is not queued twice)."""
        names = self.routing.channels_for(alert)
        if not names:
            return []
        cur = await conn.execute(
            "INSERT INTO deliveries (alert_id, alert_state, channel, alert)"
            " SELECT %s, %s, unnest(%s::text[]), %s"
            " ON CONFLICT (alert_id, alert_state, channel) DO NOTHING RETURNING channel",
            (alert.id, alert.state, names, Jsonb(alert.to_json())),
        )
        queued = [row[0] for row in await cur.fetchall()]
        if queued:
            await conn.execute(f"NOTIFY {NOTIFY_CHANNEL}")
        return queued

    def wake(self) -> None:
        """Look at the table now (the NOTIFY of `enqueue` does this too, across processes)."""
        self._wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Send pending deliveries until `stop` is set; PostgreSQL errors (and any other) are logged and
        waited out: it returns only when stopped."""
        for warning in self.routing.warnings():
            log.warning("alert routing: %s", warning)
        failures = 0
        while not stop.is_set():
            try:
                await self._serve(stop)
            except Exception as error:  # the dispatcher must outlive any failure: alerts wait for it
                # a long outage doubles the wait (fewer log lines),
                failures = 1 if self._serving else failures + 1
                self._serving = False
                # capped at half a minute: the webhooks must not lag the wallboard by minutes once
                # PostgreSQL is back (the benchmark saw the wait grow towards retry_max, 300 s)
                delay = min(
                    max(RECONNECT_MAX_S, self.settings.reconnect_seconds),
                    self.settings.reconnect_seconds * 2 ** min(failures - 1, 30),
                )
                if isinstance(error, psycopg.Error):
                    reason = str(error).strip() or type(error).__name__
                    log.warning(
                        "alert dispatcher: PostgreSQL error (%s); reconnecting in %g s", reason, delay
                    )
                else:
                    log.exception("alert dispatcher: unexpected failure; restarting in %g s", delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)

    async def _serve(self, stop: asyncio.Event) -> None:
        async with await self._connect() as conn, await self._connect() as listening:
            await listening.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._serving = True
            listener = asyncio.create_task(self._listen(listening))
            try:
                await self._report_unconfigured(conn)
                while not stop.is_set():
                    self._wakeup.clear()
                    pause = await self._start_due(conn)
                    await self._pause(stop, listener, pause)
                    if listener.done():
                        raise listener.exception() or psycopg.OperationalError("LISTEN connection closed")
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                    await listener
                await self._finish_in_flight()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, connect_timeout=10)

    async def _listen(self, listening: psycopg.AsyncConnection[Any]) -> None:
        async for _notify in listening.notifies():
            self._wakeup.set()

    async def _pause(self, stop: asyncio.Event, listener: asyncio.Task[None], seconds: float) -> None:
        """Until a NOTIFY, a send done, `stop`, the listener's end, or `seconds`."""
        waiters = {asyncio.create_task(stop.wait()), asyncio.create_task(self._wakeup.wait())}
        try:
            await asyncio.wait({*waiters, listener}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _report_unconfigured(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cur = await conn.execute(
            "SELECT channel, count(*) FROM deliveries WHERE state = 'pending' AND NOT channel = ANY(%s)"
            " GROUP BY channel ORDER BY channel",
            (list(self.routing.channels),),
        )
        for channel, count in await cur.fetchall():
            log.warning(
                "%d alert deliveries wait for channel %r, which is not configured: they are kept",
                count,
                channel,
            )

    async def _start_due(self, conn: psycopg.AsyncConnection[Any]) -> float:
        """Start the sends that are due, channel by channel; the seconds until the next look."""
        open_channels = []
        for name, channel in self.routing.channels.items():
            in_flight = self._in_flight[name]
            free = self.settings.per_channel - len(in_flight)
            if free <= 0:
                continue  # a send of this channel ending wakes the loop
            cur = await conn.execute(_SELECT_DUE, (name, list(in_flight), free))
            for delivery_id, stored, attempts in await cur.fetchall():
                self._start(conn, channel, delivery_id, stored, attempts)
            if len(in_flight) < self.settings.per_channel:
                open_channels.append(name)
        busy = [delivery_id for ids in self._in_flight.values() for delivery_id in ids]
        cur = await conn.execute(_NEXT_DUE, (open_channels, busy))
        row = await cur.fetchone()
        seconds = None if row is None or row[0] is None else float(row[0])
        if seconds is None:
            return self.settings.poll_seconds
        return min(max(seconds, 0.0), self.settings.poll_seconds)

    def _start(
        self,
        conn: psycopg.AsyncConnection[Any],
        channel: Channel,
        delivery_id: int,
        stored: Any,
        attempts: int,
    ) -> None:
        try:
            due = _Due(delivery_id, Alert.from_json(stored), attempts)
        except AlertError as error:
            task = asyncio.create_task(
                self._give_up(conn, channel.name, delivery_id, f"unreadable alert: {error}")
            )
        else:
            task = asyncio.create_task(self._deliver(conn, channel, due))
        self._in_flight[channel.name].add(delivery_id)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._finished(done, channel.name, delivery_id))

    def _finished(self, task: asyncio.Task[None], channel: str, delivery_id: int) -> None:
        self._tasks.discard(task)
        self._in_flight[channel].discard(delivery_id)
        self._wakeup.set()  # a free slot, or a firing alert sent that its resolved one waited for
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "alert delivery %d to channel %r: could not record its outcome (%s); it will be sent again",
                delivery_id,
                channel,
                task.exception(),
            )

    async def _deliver(self, conn: psycopg.AsyncConnection[Any], channel: Channel, due: _Due) -> None:
        alert = due.alert
        try:
            await asyncio.wait_for(channel.send(alert), self.settings.send_timeout)
        except DeliveryError as error:
            reason = str(error)
        except TimeoutError:
            reason = f"not sent within {self.settings.send_timeout:g} s (the dispatcher's send_timeout)"
        except Exception as error:  # a fault in one channel must not stop the dispatcher or the others
            log.exception("alert %s to channel %r: the channel failed unexpectedly", alert.id, channel.name)
            reason = f"{type(error).__name__}: {error}"
        else:
            await conn.execute(
                "UPDATE deliveries SET state = 'sent', attempts = attempts + 1, sent_at = now(),"
                " last_error = NULL WHERE id = %s",
                (due.id,),
            )
            log.info("alert %s (%s, %s) sent to channel %r", alert.id, alert.kind, alert.state, channel.name)
            return
        await self._record_failure(conn, channel.name, due, reason)

    async def _record_failure(
        self, conn: psycopg.AsyncConnection[Any], channel: str, due: _Due, reason: str
    ) -> None:
        attempts = due.attempts + 1
        delay = self.settings.retry_delay(attempts, self._rng)
        cur = await conn.execute(_RECORD_FAILURE, (reason, delay, self.settings.give_up_hours, due.id))
        row = await cur.fetchone()
        alert = due.alert
        if row is not None and row[0] == "failed":
            log.error(
                "alert %s (%s, %s) to channel %r: attempt %d failed: %s; given up after %g hours",
                alert.id, alert.kind, alert.state, channel, attempts, reason, self.settings.give_up_hours,
            )  # fmt: skip
            return
        log.warning(
            "alert %s (%s, %s) to channel %r: attempt %d failed: %s; next attempt in %.1f s",
            alert.id, alert.kind, alert.state, channel, attempts, reason, delay,
        )  # fmt: skip

    async def _give_up(
        self, conn: psycopg.AsyncConnection[Any], channel: str, delivery_id: int, reason: str
    ) -> None:
        await conn.execute(
            "UPDATE deliveries SET state = 'failed', last_error = %s WHERE id = %s", (reason, delivery_id)
        )
        log.error("alert delivery %d to channel %r: %s; given up", delivery_id, channel, reason)

    async def _finish_in_flight(self) -> None:
        """Let sends in flight end (within stop_grace), cancel the rest: pending still, sent after restart."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=self.settings.stop_grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
