"""The floor's alert channels against their real peers: an HTTP(S) receiver, Debian's rsyslogd and
prometheus-alertmanager, aiosmtpd; the Alert built from protocol events; the channels' config checks."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from callguard.floor.alerts import Alert, AlertError, alert_kind_of
from callguard.floor.channels import Channel, ChannelConfigError, DeliveryError, build_channel
from tests.floor.peers import (
    AT,
    TRICKY_WORDS,
    Alertmanager,
    Rsyslog,
    SmtpSink,
    WebhookReceiver,
    closed_port,
    make_alert,
    server_context,
)

BOM = "\ufeff"


def send(channel: Channel, alert: Alert) -> None:
    asyncio.run(channel.send(alert))


# --- the Alert ------------------------------------------------------------------------------------------


def test_alert_from_a_stored_threat_event_carries_its_call_and_round_trips_through_json() -> None:
    event = {
        "seq": 41, "call_id": "call-7", "kind": "threat_alert", "at": "2026-12-01T17:03:04.120Z", "t": 12.5,
        "data": {"prompt_id": "threat-1", "title": "Threat of violence", "words": list(TRICKY_WORDS)},
    }  # fmt: skip
    alert = Alert.from_event(
        event, {"name": "ws-12", "team": "north"}, call={"agent": "Alice Martin", "queue": "billing"},
        url="https://floor.example/wallboard#alert-41",
    )  # fmt: skip
    assert alert == make_alert()
    resolved = alert.resolved(AT + timedelta(seconds=9), "Bob Lee")
    assert (resolved.state, resolved.resolved_by, resolved.id) == ("resolved", "Bob Lee", alert.id)
    assert Alert.from_json(resolved.to_json()) == resolved


def test_a_threat_alert_ahead_of_its_call_started_names_the_workstation() -> None:
    event = {"seq": 3, "call_id": "c", "kind": "help", "at": "2026-12-01T17:03:04Z", "t": 1.0,
             "data": {"message": "caller is shouting"}}  # fmt: skip
    alert = Alert.from_event(event, {"name": "ws-3", "team": "south"}, url="")
    assert (alert.kind, alert.agent, alert.agent_label, alert.detail) == (
        "help",
        "",
        "agent at ws-3",
        "caller is shouting",
    )
    assert alert.id == "ws-3:3"


@pytest.mark.parametrize(
    ("kind", "data", "expected"),
    [
        ("threat_alert", {"words": []}, "threat"),
        ("help", {}, "help"),
        ("level", {"level": "abusive", "previous": "tense", "reason": "r"}, "abusive"),
        ("level", {"level": "transfer", "previous": "abusive", "reason": "r"}, "transfer"),
        ("level", {"level": "release", "previous": "transfer", "reason": "r"}, "release"),
        ("level", {"level": "tense", "previous": "calm", "reason": "r"}, None),
        ("abuse", {"category": "insult", "severity": 2, "words": []}, None),
        ("call_started", {"agent": "a", "queue": "q", "language": "en", "source": "api"}, None),
    ],
)
def test_which_events_make_which_alerts(kind: str, data: dict[str, Any], expected: str | None) -> None:
    assert alert_kind_of({"kind": kind, "data": data}) == expected


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (
            {"seq": 1, "call_id": "c", "kind": "abuse", "at": "2026-12-01T17:03:04Z", "data": {}},
            "event kind: 'abuse' does not make an alert",
        ),
        (
            {"seq": 1, "call_id": "c", "kind": "help", "at": "yesterday", "data": {}},
            "event at: expected an ISO 8601 time, got 'yesterday'",
        ),
        (
            {"seq": 1, "call_id": "c", "kind": "help", "at": "2026-12-01T17:03:04", "data": {}},
            "event at: expected a time with a time zone",
        ),
        (
            {
                "seq": 1,
                "call_id": "c",
                "kind": "threat_alert",
                "at": "2026-12-01T17:03:04Z",
                "data": {"words": "x"},
            },
            "event data.words: expected a list of strings, got 'x'",
        ),
        (
            {"call_id": "c", "kind": "help", "at": "2026-12-01T17:03:04Z", "data": {}},
            "event seq: expected an integer, got None",
        ),
    ],
)
def test_an_event_that_cannot_make_an_alert_is_refused_naming_the_field(
    event: dict[str, Any], message: str
) -> None:
    with pytest.raises(AlertError, match=re.escape(message)):
        Alert.from_event(event, {"name": "ws-1", "team": "north"}, url="")


# --- channel config -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"type": "pager"},
            "channels.x.type: expected one of 'webhook', 'syslog', 'alertmanager', 'email', got 'pager'",
        ),
        ({"type": "webhook"}, "channels.x.url: required"),
        (
            {"type": "webhook", "url": "ftp://h/x"},
            "channels.x.url: expected an http:// or https:// URL, got 'ftp://h/x'",
        ),
        (
            {"type": "webhook", "url": "http://h:99999/"},
            "channels.x.url: expected an http:// or https:// URL",
        ),
        (
            {"type": "webhook", "url": "http://h/", "secret": "s"},
            "channels.x.secret_header: secret_header and secret go together",
        ),
        (
            {"type": "webhook", "url": "http://h/", "timeout": 0},
            "channels.x.timeout: expected a number of seconds above 0",
        ),
        (
            {"type": "webhook", "url": "http://h/", "ca_file": "/nonexistent.pem"},
            "channels.x.ca_file: expected a path to an existing file",
        ),
        ({"type": "webhook", "url": "http://h/", "colour": "red"}, "channels.x.colour: unknown key"),
        (
            {"type": "syslog", "host": "h", "port": "514"},
            "channels.x.port: expected an integer from 1 to 65535, got '514'",
        ),
        (
            {"type": "syslog", "host": "h", "transport": "tls"},
            "channels.x.transport: expected one of 'tcp', 'udp', got 'tls'",
        ),
        (
            {"type": "syslog", "host": "h", "facility": "local9"},
            "channels.x.facility: expected a facility name",
        ),
        (
            {"type": "syslog", "host": "h", "app_name": "call guard"},
            "channels.x.app_name: expected 1 to 48 printable ASCII",
        ),
        (
            {"type": "alertmanager", "url": "http://h", "firing_hours": -1},
            "channels.x.firing_hours: expected a number",
        ),
        (
            {"type": "email", "host": "h", "from": "f@x.org", "to": []},
            "channels.x.to: expected a non-empty list",
        ),
        (
            {"type": "email", "host": "h", "from": "not an address", "to": ["a@b.org"]},
            "channels.x.from: expected an e-mail address",
        ),
        (
            {
                "type": "email",
                "host": "h",
                "from": "f@x.org",
                "to": ["a@b.org"],
                "username": "u",
                "password": "p",
            },
            "channels.x.username: a login sends a password: it needs starttls = true",
        ),
    ],
)
def test_a_bad_channel_setting_is_refused_naming_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ChannelConfigError, match=re.escape(message)):
        build_channel("x", table)


# --- webhook --------------------------------------------------------------------------------------------


def test_webhook_posts_slack_and_mattermost_compatible_json_with_its_secret_header() -> None:
    with WebhookReceiver.running() as receiver:
        channel = build_channel("chat", {
            "type": "webhook", "url": receiver.url("/hooks/T0/B0"), "secret_header": "X-Callguard-Token",
            "secret": "s3cret",
        })  # fmt: skip
        send(channel, make_alert())
        send(channel, make_alert().resolved(AT + timedelta(seconds=30), "Bob Lee"))
        firing, resolved = receiver.wait_for(2)
    assert firing.path == "/hooks/T0/B0"
    assert firing.headers["X-Callguard-Token"] == "s3cret"
    assert firing.headers["Content-Type"].startswith("application/json")
    assert firing.body["text"] == "Threat of violence: Alice Martin, team north"
    (attachment,) = firing.body["attachments"]
    assert attachment["title_link"] == "https://floor.example/wallboard#alert-41"
    fields = {field["title"]: field["value"] for field in attachment["fields"]}
    assert fields["Queue"] == "billing" and fields["Call"] == "call-7" and fields["Workstation"] == "ws-12"
    assert fields["Words"] == '“je vais te tuer”, “say "it"] \\ now”, “a=b|c”'
    assert resolved.body["text"] == "Resolved: Threat of violence: Alice Martin, team north (Bob Lee)"
    assert {field["title"] for field in resolved.body["attachments"][0]["fields"]} >= {
        "Resolved",
        "Resolved by",
    }


def test_webhook_escapes_slack_markup_and_can_leave_the_words_out() -> None:
    with WebhookReceiver.running() as receiver:
        channel = build_channel("chat", {"type": "webhook", "url": receiver.url(), "include_words": False})
        send(channel, make_alert(agent="<!channel> & co"))
        (received,) = receiver.wait_for(1)
    assert received.body["text"] == "Threat of violence: &lt;!channel&gt; &amp; co, team north"
    assert "Words" not in {field["title"] for field in received.body["attachments"][0]["fields"]}
    assert "tuer" not in str(received.body)


def test_webhook_over_https_verifies_the_receivers_certificate(tls_cert: Any) -> None:
    context = server_context(tls_cert.cert_file, tls_cert.key_file)
    with WebhookReceiver.running(tls=context) as receiver:
        trusting = build_channel(
            "chat", {"type": "webhook", "url": receiver.url(), "ca_file": str(tls_cert.cert_file)}
        )
        send(trusting, make_alert())
        assert len(receiver.wait_for(1)) == 1
        # the system's CAs do not know the site's self-signed certificate
        untrusting = build_channel("chat", {"type": "webhook", "url": receiver.url()})
        with pytest.raises(
            DeliveryError, match=r"POST https://127\.0\.0\.1:\d+: TLS failed: CERTIFICATE_VERIFY_FAILED"
        ):
            send(untrusting, make_alert())
    assert len(receiver.received) == 1


def test_webhook_failures_say_where_and_why_without_the_urls_secret_path() -> None:
    with WebhookReceiver.running() as receiver:
        receiver.status = 500
        channel = build_channel("chat", {"type": "webhook", "url": receiver.url("/hooks/SECRET-PATH")})
        with pytest.raises(
            DeliveryError, match=r"^POST http://127\.0\.0\.1:\d+: HTTP 500 Internal Server Error: ok$"
        ):
            send(channel, make_alert())
    refused = build_channel(
        "chat", {"type": "webhook", "url": f"http://127.0.0.1:{closed_port()}/hooks/SECRET-PATH"}
    )
    with pytest.raises(DeliveryError, match="ConnectionRefusedError") as raised:
        send(refused, make_alert())
    assert "SECRET-PATH" not in str(raised.value)


def test_webhook_gives_up_on_a_peer_that_never_answers_within_its_timeout() -> None:
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        channel = build_channel(
            "chat", {"type": "webhook", "url": f"http://127.0.0.1:{port}/", "timeout": 0.3}
        )
        started = time.monotonic()
        with pytest.raises(DeliveryError, match=r"no answer within 0\.3 s"):
            send(channel, make_alert())
        assert time.monotonic() - started < 2


# --- syslog ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsyslog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rsyslog]:
    with Rsyslog.running(tmp_path_factory.mktemp("rsyslog")) as server:
        yield server


def records_of(rsyslog: Rsyslog, alert_id: str, count: int) -> list[dict[str, str]]:
    def mine() -> list[dict[str, str]]:
        return [r for r in rsyslog.records() if alert_id in r["structured_data"] + r["msg"]]

    deadline = time.monotonic() + 5
    while len(mine()) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    found = mine()
    assert len(found) == count, f"rsyslogd wrote {len(found)} messages of alert {alert_id}, expected {count}"
    return found


def sd_params(structured_data: str) -> dict[str, str]:
    """The PARAM-VALUEs of one SD-ELEMENT, unescaped (RFC 5424 6.3.3)."""
    pairs = re.findall(r'(\w+)="((?:\\.|[^"\\])*)"', structured_data)
    return {key: re.sub(r"\\(.)", r"\1", value) for key, value in pairs}


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_syslog_rfc5424_reaches_rsyslog_with_every_field_parsed(rsyslog: Rsyslog, transport: str) -> None:
    channel = build_channel("siem", {
        "type": "syslog", "host": "127.0.0.1", "port": rsyslog.port, "transport": transport,
        "facility": "local3", "hostname": "floor-1", "app_name": "callguard-floor",
    })  # fmt: skip
    alert = make_alert(f"ws-12:{transport}")
    send(channel, alert)
    send(channel, alert.resolved(AT + timedelta(seconds=30), "Bob Lee"))
    firing, resolved = records_of(rsyslog, alert.id, 2)
    assert firing["input"] == f"im{transport}" and firing["protocol_version"] == "1"
    assert (firing["facility"], firing["severity"]) == ("19", "2")  # local3, critical
    assert (firing["hostname"], firing["app_name"], firing["msgid"]) == (
        "floor-1",
        "callguard-floor",
        "threat",
    )
    assert firing["timestamp"] == "2026-12-01T17:03:04.120Z"
    assert firing["procid"].isdigit()
    assert firing["structured_data"].startswith("[callguard@32473 ")
    params = sd_params(firing["structured_data"])
    assert params["alert_id"] == alert.id and params["state"] == "firing" and params["team"] == "north"
    assert params["words"] == '“je vais te tuer”, “say "it"] \\ now”, “a=b|c”'
    assert firing["msg"] == BOM + "Threat of violence: Alice Martin, team north"
    assert resolved["severity"] == "6"  # informational
    assert sd_params(resolved["structured_data"])["resolved_by"] == "Bob Lee"
    assert resolved["timestamp"] == "2026-12-01T17:03:34.120Z"


def cef_fields(record: str) -> tuple[list[str], dict[str, str]]:
    """The 7 header fields and the extension of a CEF:0 record, unescaped."""
    assert record.startswith("CEF:0|")
    header = re.findall(r"((?:\\.|[^|\\])*)\|", record)[:7]
    extension = record[sum(len(part) + 1 for part in header) :]
    pairs = re.findall(r"(\w+)=((?:\\.|[^\\=])*?)(?= \w+=|$)", extension)
    unescape = {"n": "\n", "r": "\r"}
    return (
        [re.sub(r"\\(.)", r"\1", part) for part in header],
        {key: re.sub(r"\\(.)", lambda m: unescape.get(m[1], m[1]), value) for key, value in pairs},
    )


def test_syslog_cef_reaches_rsyslog_escaped_as_cef_requires(rsyslog: Rsyslog) -> None:
    channel = build_channel(
        "siem", {"type": "syslog", "host": "127.0.0.1", "port": rsyslog.port, "format": "cef"}
    )
    alert = make_alert("ws-12:cef", title="Threat | violence", detail="line one\nline two")
    send(channel, alert)
    (record,) = records_of(rsyslog, alert.id, 1)
    assert record["structured_data"] == "-"
    header, extension = cef_fields(record["msg"])
    assert header[0] == "CEF:0" and header[1:3] == ["callguard", "floor"]
    assert header[4:] == ["threat", "Threat | violence: Alice Martin, team north", "10"]
    assert extension["externalId"] == alert.id
    assert extension["cs1Label"] == "team" and extension["cs1"] == "north"
    assert extension["cs3"] == "call-7" and extension["suser"] == "Alice Martin"
    assert extension["cs4"] == '“je vais te tuer”, “say "it"] \\ now”, “a=b|c”'
    assert extension["msg"] == "line one\nline two"
    assert extension["rt"] == str(int(AT.timestamp() * 1000))
    assert "cs5Label" not in extension  # no resolver yet: neither the value nor its label


def test_syslog_over_tcp_to_a_closed_port_fails_clearly() -> None:
    port = closed_port()
    channel = build_channel("siem", {"type": "syslog", "host": "127.0.0.1", "port": port})
    with pytest.raises(DeliveryError, match=rf"syslog tcp://127\.0\.0\.1:{port}: ConnectionRefusedError"):
        send(channel, make_alert())


# --- Alertmanager ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    with Alertmanager.running(tmp_path_factory.mktemp("alertmanager")) as server:
        yield server


def test_alertmanager_holds_the_alert_while_it_fires_and_ends_it_when_resolved(
    alertmanager: Alertmanager,
) -> None:
    channel = build_channel("am", {"type": "alertmanager", "url": alertmanager.url})
    alert = make_alert("ws-12:am", at=datetime.now(UTC).replace(microsecond=0))
    send(channel, alert)
    (held,) = alertmanager.alerts(alert_id=alert.id)
    assert held["labels"] == {
        "alertname": "CallguardThreat", "severity": "critical", "team": "north", "workstation": "ws-12",
        "call_id": "call-7", "category": "threat", "alert_id": alert.id,
    }  # fmt: skip
    assert held["status"]["state"] == "active"
    assert held["annotations"]["summary"] == "Threat of violence: Alice Martin, team north"
    assert held["annotations"]["words"] == '“je vais te tuer”, “say "it"] \\ now”, “a=b|c”'
    assert held["generatorURL"] == alert.url
    starts = datetime.fromisoformat(held["startsAt"].replace("Z", "+00:00"))
    ends = datetime.fromisoformat(held["endsAt"].replace("Z", "+00:00"))
    assert starts == alert.at and ends - starts == timedelta(hours=12)  # not Alertmanager's 5 min
    other = make_alert("ws-12:am-other", at=alert.at)
    send(channel, other)
    send(channel, alert.resolved(datetime.now(UTC), "Bob Lee"))
    assert alertmanager.alerts(alert_id=alert.id) == []  # ended: no longer active
    assert [a["labels"]["alert_id"] for a in alertmanager.alerts(alert_id=other.id)] == [other.id]


def test_alertmanager_down_is_a_delivery_error() -> None:
    channel = build_channel("am", {"type": "alertmanager", "url": f"http://127.0.0.1:{closed_port()}/am/"})
    with pytest.raises(DeliveryError, match="ConnectionRefusedError"):
        send(channel, make_alert())


# --- e-mail ---------------------------------------------------------------------------------------------


def test_email_reaches_the_smtp_server_with_the_alert_in_plain_words() -> None:
    with SmtpSink.running() as smtp:
        channel = build_channel("mail", {
            "type": "email", "host": "127.0.0.1", "port": smtp.port, "from": "floor@callguard.example",
            "to": ["north-supervisors@callguard.example", "duty@callguard.example"],
        })  # fmt: skip
        send(channel, make_alert())
        ((envelope, message),) = smtp.wait_for(1)
        asyncio.run(channel.aclose())
    assert envelope.mail_from == "floor@callguard.example"
    assert envelope.rcpt_tos == ["north-supervisors@callguard.example", "duty@callguard.example"]
    assert message["Subject"] == "[callguard] Threat of violence: Alice Martin, team north"
    assert message["X-Callguard-Alert"] == "ws-12:41 firing"
    body = message.get_content()
    assert "Agent: Alice Martin\nTeam: north\nQueue: billing\n" in body
    assert "Words: “je vais te tuer”" in body
    assert "Wallboard: https://floor.example/wallboard#alert-41" in body


def test_email_with_starttls_and_a_login(tls_cert: Any) -> None:
    context = server_context(tls_cert.cert_file, tls_cert.key_file)
    with SmtpSink.running(tls=context, login=("floor", "pa55")) as smtp:
        table = {
            "type": "email", "host": "127.0.0.1", "port": smtp.port, "starttls": True,
            "ca_file": str(tls_cert.cert_file), "username": "floor", "password": "pa55",
            "from": "floor@callguard.example", "to": ["duty@callguard.example"],
        }  # fmt: skip
        send(build_channel("mail", table), make_alert())
        assert len(smtp.wait_for(1)) == 1
        with pytest.raises(DeliveryError, match=r"SMTP 127\.0\.0\.1:\d+: SMTPAuthenticationError"):
            send(build_channel("mail", {**table, "password": "wrong"}), make_alert())
        # the server requires STARTTLS: a channel without it is refused, not sent in clear
        plain = {
            key: value for key, value in table.items() if key not in ("starttls", "username", "password")
        }
        with pytest.raises(DeliveryError, match=r"SMTP 127\.0\.0\.1:\d+: .*STARTTLS"):
            send(build_channel("mail", plain), make_alert())
    assert len(smtp.messages) == 1


def test_email_to_a_closed_port_fails_clearly() -> None:
    port = closed_port()
    channel = build_channel("mail", {"type": "email", "host": "127.0.0.1", "port": port, "from": "f@x.org",
                                     "to": ["a@b.org"], "timeout": 2})  # fmt: skip
    with pytest.raises(DeliveryError, match=rf"SMTP 127\.0\.0\.1:{port}: ConnectionRefusedError"):
        send(channel, make_alert())
