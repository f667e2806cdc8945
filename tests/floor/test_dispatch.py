"""Durable delivery: the `deliveries` outbox in a real PostgreSQL, sent by the dispatcher to real peers;
retries with back-off, a failing or hanging channel beside working ones, restarts (kill -9) and a lost
database connection."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from callguard.floor.dispatch import DeliveryConfigError, DeliverySettings, Dispatcher
from callguard.floor.rules import AlertRouting, routing_from_config
from tests.floor.peers import (
    Alertmanager,
    Rsyslog,
    SmtpSink,
    WebhookReceiver,
    closed_port,
    free_port,
    make_alert,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FAST = DeliverySettings(
    send_timeout=2.0,
    retry_initial=0.05,
    retry_max=0.2,
    poll_seconds=0.2,
    reconnect_seconds=0.1,
    stop_grace=1.0,
)


def webhook(url: str, **extra: Any) -> dict[str, Any]:
    return {"type": "webhook", "url": url, **extra}


@contextlib.asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[Dispatcher]:
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        yield dispatcher
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def enqueue(dsn: str, dispatcher: Dispatcher, *alerts: Any) -> list[list[str]]:
    """Each alert enqueued in one committed transaction, as the app does when it stores one."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        return [await dispatcher.enqueue(conn, alert) for alert in alerts]


async def rows(dsn: str) -> list[dict[str, Any]]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cur = conn.cursor(row_factory=psycopg.rows.dict_row)
        await cur.execute(
            "SELECT alert_id, alert_state, channel, state, attempts, last_error, next_attempt_at, sent_at"
            " FROM deliveries ORDER BY id"
        )
        return await cur.fetchall()


async def eventually(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.02)


def all_sent(dsn: str, count: int) -> Any:
    async def check() -> bool:
        found = await rows(dsn)
        return len(found) == count and all(row["state"] == "sent" for row in found)

    return check


def routing(channels: dict[str, Any], rules: dict[str, Any] | None = None) -> AlertRouting:
    return routing_from_config(channels, rules or {})


# --- back-off -------------------------------------------------------------------------------------------


def test_retry_delays_double_up_to_the_cap_with_jitter() -> None:
    settings = DeliverySettings(retry_initial=2.0, retry_max=60.0)
    rng = random.Random(7)
    for attempts, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0), (6, 60.0), (40, 60.0)]:
        delays = [settings.retry_delay(attempts, rng) for _ in range(200)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), attempts
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not one value


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"send_timeout": 0}, "delivery.send_timeout: expected a positive number, got 0"),
        ({"per_channel": 0}, "delivery.per_channel: expected an integer 1-100, got 0"),
        ({"retry_initial": 10, "retry_max": 5}, "delivery.retry_max: expected at least retry_initial (10)"),
        ({"retries": 3}, "delivery.retries: unknown key"),
    ],
)
def test_a_bad_delivery_setting_names_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(DeliveryConfigError, match=re.escape(message)):
        DeliverySettings.from_table(table)


# --- the outbox -----------------------------------------------------------------------------------------


def test_enqueue_writes_one_row_per_selected_channel_once_and_only_when_committed(floor_dsn: str) -> None:
    rules = {"threats": {"kinds": ["threat"], "channels": ["chat", "siem"]}}
    channels = {"chat": webhook("http://127.0.0.1:9/"), "siem": {"type": "syslog", "host": "127.0.0.1"}}
    dispatcher = Dispatcher(floor_dsn, routing(channels, rules), FAST)

    async def scenario() -> None:
        alert = make_alert()
        assert await enqueue(floor_dsn, dispatcher, alert) == [["chat", "siem"]]
        assert await enqueue(floor_dsn, dispatcher, alert) == [[]]  # a resent batch: nothing twice
        assert await enqueue(floor_dsn, dispatcher, make_alert("ws-12:42", kind="help")) == [[]]  # no rule
        async with await psycopg.AsyncConnection.connect(floor_dsn) as conn:
            with contextlib.suppress(ZeroDivisionError):
                async with conn.transaction():
                    await dispatcher.enqueue(conn, make_alert("ws-12:43"))
                    raise ZeroDivisionError  # the app's transaction fails after the enqueue
        resolved = alert.resolved(datetime.now(UTC), "Bob Lee")
        assert await enqueue(floor_dsn, dispatcher, resolved) == [["chat", "siem"]]
        found = [(r["alert_id"], r["alert_state"], r["channel"], r["state"]) for r in await rows(floor_dsn)]
        assert found == [
            ("ws-12:41", "firing", "chat", "pending"),
            ("ws-12:41", "firing", "siem", "pending"),
            ("ws-12:41", "resolved", "chat", "pending"),
            ("ws-12:41", "resolved", "siem", "pending"),
        ]

    asyncio.run(scenario())


# --- delivery to every channel --------------------------------------------------------------------------


@pytest.fixture
def peers(tmp_path: Path) -> Iterator[tuple[WebhookReceiver, Rsyslog, Alertmanager, SmtpSink]]:
    with (
        WebhookReceiver.running() as receiver,
        Rsyslog.running(tmp_path / "rsyslog") as rsyslog,
        Alertmanager.running(tmp_path / "alertmanager") as alertmanager,
        SmtpSink.running() as smtp,
    ):
        yield receiver, rsyslog, alertmanager, smtp


def test_every_channel_receives_a_stored_alert_within_a_second_and_its_resolution(
    floor_dsn: str, peers: tuple[WebhookReceiver, Rsyslog, Alertmanager, SmtpSink]
) -> None:
    receiver, rsyslog, alertmanager, smtp = peers
    channels = {
        "chat": webhook(receiver.url()),
        "siem": {"type": "syslog", "host": "127.0.0.1", "port": rsyslog.port, "format": "cef"},
        "am": {"type": "alertmanager", "url": alertmanager.url},
        "mail": {"type": "email", "host": "127.0.0.1", "port": smtp.port, "from": "floor@callguard.example",
                 "to": ["duty@callguard.example"]},
    }  # fmt: skip
    # a long poll: only the NOTIFY of the committed enqueue can make it this fast
    settings = DeliverySettings(poll_seconds=10.0)
    dispatcher = Dispatcher(floor_dsn, routing(channels), settings)
    alert = make_alert(at=datetime.now(UTC).replace(microsecond=0))

    async def scenario() -> None:
        async with running(dispatcher):
            await asyncio.sleep(0.3)  # the dispatcher is listening
            started = time.monotonic()
            await enqueue(floor_dsn, dispatcher, alert)
            await eventually(all_sent(floor_dsn, 4), 5, "the alert sent to the 4 channels")
            assert time.monotonic() - started < 1.0
            await enqueue(floor_dsn, dispatcher, alert.resolved(datetime.now(UTC), "Bob Lee"))
            # e-mail sends no resolved alert by default: 3 more
            await eventually(all_sent(floor_dsn, 7), 5, "the resolution sent to 3 channels")
        await dispatcher.routing.aclose()

    asyncio.run(scenario())
    assert [post.body["text"] for post in receiver.received] == [
        "Threat of violence: Alice Martin, team north",
        "Resolved: Threat of violence: Alice Martin, team north (Bob Lee)",
    ]
    cef = [record["msg"] for record in rsyslog.records()]
    assert len(cef) == 2 and "|threat|" in cef[0] and "|threat-resolved|" in cef[1]
    assert alertmanager.alerts(alert_id=alert.id) == []  # fired, then ended
    assert [message["Subject"] for _, message in smtp.messages] == [
        "[callguard] Threat of violence: Alice Martin, team north"
    ]


# --- failures -------------------------------------------------------------------------------------------


def test_a_failing_channel_is_retried_and_logged_and_a_hanging_one_never_holds_the_others(
    floor_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    broken_port = closed_port()
    with (
        socket.socket() as silent,  # accepts connections (its backlog) and never answers
        WebhookReceiver.running() as receiver,
    ):
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        channels = {
            "broken": webhook(f"http://127.0.0.1:{broken_port}/hook"),
            "hanging": webhook(f"http://127.0.0.1:{silent.getsockname()[1]}/hook", timeout=30),
            "chat": webhook(receiver.url()),
        }
        settings = DeliverySettings(
            send_timeout=1.5, retry_initial=0.05, retry_max=0.2, poll_seconds=0.2, stop_grace=0.5
        )
        dispatcher = Dispatcher(floor_dsn, routing(channels), settings)
        alerts = [make_alert(f"ws-12:{seq}") for seq in range(1, 4)]

        async def scenario() -> None:
            async with running(dispatcher):
                started = time.monotonic()
                await enqueue(floor_dsn, dispatcher, *alerts)
                await eventually(lambda: _async(len(receiver.received) == 3), 5, "the working channel")
                assert time.monotonic() - started < 1.0  # not after the hanging one's send_timeout

                async def retried() -> bool:
                    broken = [r for r in await rows(floor_dsn) if r["channel"] == "broken"]
                    return all(r["attempts"] >= 3 for r in broken)

                await eventually(retried, 5, "3 attempts on the broken channel")
                await eventually(
                    lambda: _async("(the dispatcher's send_timeout)" in caplog.text),
                    5,
                    "the hanging one timed out",
                )
                found = await rows(floor_dsn)
            by_channel = {channel: [r for r in found if r["channel"] == channel] for channel in channels}
            assert all(r["state"] == "sent" and r["attempts"] == 1 for r in by_channel["chat"])
            for row in by_channel["broken"] + by_channel["hanging"]:
                assert row["state"] == "pending" and row["sent_at"] is None
            assert all("ConnectionRefusedError" in r["last_error"] for r in by_channel["broken"])

        with caplog.at_level(logging.WARNING, logger="callguard.floor.dispatch"):
            asyncio.run(scenario())
    failures = [
        record.getMessage()
        for record in caplog.records
        if "to channel 'broken': attempt" in record.getMessage()
    ]
    assert len(failures) >= 9
    assert re.fullmatch(
        r"alert ws-12:\d \(threat, firing\) to channel 'broken': attempt \d+ failed: "
        rf"POST http://127\.0\.0\.1:{broken_port}: ConnectionRefusedError: .*; next attempt in 0\.\d s",
        failures[0],
    )
    delays = [float(m[1]) for m in (re.search(r"next attempt in ([\d.]+) s", f) for f in failures) if m]
    assert max(delays) <= 0.2


def test_a_resolved_alert_waits_for_its_firing_one_then_both_arrive_in_order(floor_dsn: str) -> None:
    port = free_port()
    dispatcher = Dispatcher(floor_dsn, routing({"chat": webhook(f"http://127.0.0.1:{port}/hook")}), FAST)
    alert = make_alert()

    async def scenario(receiver_box: list[WebhookReceiver]) -> None:
        async with running(dispatcher):
            await enqueue(floor_dsn, dispatcher, alert, alert.resolved(datetime.now(UTC), "Bob Lee"))

            async def firing_retried() -> bool:
                return (await rows(floor_dsn))[0]["attempts"] >= 3

            await eventually(firing_retried, 5, "the firing alert retried")
            assert (await rows(floor_dsn))[1]["attempts"] == 0  # the resolved one was never tried
            with WebhookReceiver.running(port=port) as receiver:
                receiver_box.append(receiver)
                await eventually(all_sent(floor_dsn, 2), 5, "both sent once the receiver is up")

    box: list[WebhookReceiver] = []
    asyncio.run(scenario(box))
    assert [post.body["text"].split(":")[0] for post in box[0].received] == ["Threat of violence", "Resolved"]


def test_a_delivery_failing_past_give_up_hours_is_marked_failed_and_logged_as_an_error(
    floor_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    settings = DeliverySettings(
        retry_initial=0.05, retry_max=0.1, poll_seconds=0.1, give_up_hours=0.5 / 3600, stop_grace=0.5
    )
    dispatcher = Dispatcher(floor_dsn, routing({"chat": webhook(f"http://127.0.0.1:{port}/")}), settings)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        async with running(dispatcher):
            await enqueue(floor_dsn, dispatcher, make_alert())

            async def failed() -> bool:
                return (await rows(floor_dsn))[0]["state"] == "failed"

            await eventually(failed, 5, "the delivery given up")
            given_up = (await rows(floor_dsn))[0]
            await asyncio.sleep(0.4)  # several retry periods: no attempt after giving up
            return given_up, (await rows(floor_dsn))[0]

    with caplog.at_level(logging.WARNING, logger="callguard.floor.dispatch"):
        given_up, later = asyncio.run(scenario())
    assert later["attempts"] == given_up["attempts"] >= 3 and later["state"] == "failed"
    assert "ConnectionRefusedError" in later["last_error"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and re.search(
        r"to channel 'chat': attempt \d+ failed: .*; given up after", errors[0]
    )


# --- restarts -------------------------------------------------------------------------------------------

_DISPATCHER_PROCESS = """
import asyncio, json, sys
from callguard.floor.dispatch import DeliverySettings, Dispatcher
from callguard.floor.rules import routing_from_config
settings = DeliverySettings(retry_initial=0.05, retry_max=0.2, poll_seconds=0.2)
dispatcher = Dispatcher(sys.argv[1], routing_from_config(json.loads(sys.argv[2]), {}), settings)
asyncio.run(dispatcher.run(asyncio.Event()))
"""


def test_pending_deliveries_of_a_killed_floor_are_sent_once_by_the_next_one(floor_dsn: str) -> None:
    port = free_port()
    channels = {"chat": webhook(f"http://127.0.0.1:{port}/hook")}
    alerts = [make_alert(f"ws-12:{seq}") for seq in range(1, 6)]

    async def attempted_by_first_floor() -> None:
        dispatcher = Dispatcher(floor_dsn, routing(channels), FAST)
        await enqueue(floor_dsn, dispatcher, *alerts)
        floor = subprocess.Popen(
            [sys.executable, "-c", _DISPATCHER_PROCESS, floor_dsn, json.dumps(channels)],
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stderr=subprocess.DEVNULL,
        )
        try:

            async def every_one_tried() -> bool:
                return all(r["attempts"] >= 2 for r in await rows(floor_dsn))

            await eventually(every_one_tried, 10, "the first floor's attempts (nobody listens yet)")
        finally:
            floor.send_signal(signal.SIGKILL)
            floor.wait()

    async def sent_by_second_floor(receiver: WebhookReceiver) -> None:
        async with running(Dispatcher(floor_dsn, routing(channels), FAST)):
            await eventually(all_sent(floor_dsn, 5), 5, "the 5 pending deliveries sent")
            await asyncio.sleep(0.5)  # time enough for any second copy

    asyncio.run(attempted_by_first_floor())
    with WebhookReceiver.running(port=port) as receiver:
        asyncio.run(sent_by_second_floor(receiver))
    received = sorted(post.body["attachments"][0]["footer"] for post in receiver.received)
    assert received == sorted(f"callguard floor · alert {alert.id}" for alert in alerts)  # each once


def test_the_dispatcher_reconnects_after_losing_postgresql(floor_dsn: str) -> None:
    with WebhookReceiver.running() as receiver:
        dispatcher = Dispatcher(floor_dsn, routing({"chat": webhook(receiver.url())}), FAST)

        async def scenario() -> None:
            async with running(dispatcher):
                await enqueue(floor_dsn, dispatcher, make_alert("ws-12:1"))
                await eventually(all_sent(floor_dsn, 1), 5, "the first alert")
                async with await psycopg.AsyncConnection.connect(floor_dsn, autocommit=True) as admin:
                    cur = await admin.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                    assert (await cur.fetchone()) == (2,)  # the dispatcher's two connections
                await enqueue(floor_dsn, dispatcher, make_alert("ws-12:2"))
                await eventually(all_sent(floor_dsn, 2), 5, "the alert stored after the connection loss")

        asyncio.run(scenario())
    assert len(receiver.received) == 2


async def _async(value: bool) -> bool:
    return value
