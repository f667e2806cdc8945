"""Which alerts go to which channels: the `[channels]` and `[rules]` of the floor's config."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest

from callguard.floor.alerts import Alert
from callguard.floor.channels import ChannelConfigError
from callguard.floor.rules import RulesConfigError, routing_from_config
from tests.floor.peers import AT, make_alert

CONFIG = """
[channels.north-mail]
type = "email"
host = "127.0.0.1"
from = "floor@callguard.example"
to = ["north@callguard.example"]

[channels.south-chat]
type = "webhook"
url = "https://chat.example/hooks/south"

[channels.siem]
type = "syslog"
host = "127.0.0.1"
send_resolved = false

[rules.north-threats]
kinds = ["threat"]
teams = ["north"]
channels = ["north-mail", "siem"]

[rules.south-threats]
kinds = ["threat"]
teams = ["south"]
channels = ["south-chat", "siem"]

[rules.help]
kinds = ["help"]
channels = ["siem"]
"""


def routing(text: str = CONFIG) -> Any:
    table = tomllib.loads(text)
    return routing_from_config(table.get("channels", {}), table.get("rules", {}))


def alert(kind: str, team: str) -> Alert:
    return make_alert(kind=kind, team=team, category="threat" if kind == "threat" else "")


def test_threats_go_to_their_teams_channels_help_to_the_chosen_ones_and_the_rest_to_the_wallboard_only() -> (
    None
):
    rules = routing()
    assert rules.channels_for(alert("threat", "north")) == ["north-mail", "siem"]
    assert rules.channels_for(alert("threat", "south")) == ["south-chat", "siem"]
    assert rules.channels_for(alert("help", "north")) == ["siem"]
    for kind in ("abusive", "transfer", "release"):
        assert rules.channels_for(alert(kind, "north")) == []
    assert rules.warnings() == [
        "threat alerts go to channels only for the teams north, south, not the others"
    ]


def test_a_resolved_alert_goes_only_to_the_channels_that_send_resolved_ones() -> None:
    rules = routing()
    resolved = alert("threat", "south").resolved(AT, "Bob")
    assert rules.channels_for(resolved) == ["south-chat"]  # siem: send_resolved = false
    # e-mail does not send resolved alerts unless asked
    assert rules.channels_for(alert("threat", "north").resolved(AT, "Bob")) == []


def test_without_rules_threat_alerts_go_to_every_channel() -> None:
    rules = routing(CONFIG.split("[rules.north-threats]")[0])
    assert rules.channels_for(alert("threat", "east")) == ["north-mail", "south-chat", "siem"]
    assert rules.channels_for(alert("help", "east")) == []
    assert rules.warnings() == []


def test_rules_as_a_list_of_tables_read_the_same() -> None:
    text = (
        CONFIG.split("[rules.north-threats]")[0]
        + '[[rules]]\nkinds = ["help", "threat"]\nchannels = ["siem"]\n'
    )
    rules = routing(text)
    assert rules.channels_for(alert("help", "east")) == ["siem"]
    assert rules.channels_for(alert("threat", "east")) == ["siem"]


def test_no_channel_is_a_warning_not_an_error() -> None:
    rules = routing("")
    assert rules.channels_for(alert("threat", "north")) == []
    assert rules.warnings() == ["no alert channel configured: alerts reach only the wallboard"]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            'kinds = ["threat"]\nchannels = ["pager"]',
            "rules.r.channels: 'pager' is not one of north-mail, south-chat, siem",
        ),
        (
            'kinds = ["threats"]\nchannels = ["siem"]',
            "rules.r.kinds: 'threats' is not one of threat, help, abusive",
        ),
        ('channels = ["siem"]', "rules.r.kinds: required"),
        ('kinds = ["threat"]', "rules.r.channels: required"),
        (
            'kinds = "threat"\nchannels = ["siem"]',
            "rules.r.kinds: expected a non-empty list of names, got 'threat'",
        ),
        (
            'kinds = ["threat"]\nchannels = ["siem"]\nteam = ["north"]',
            "rules.r.team: unknown key (a rule has kinds, teams, channels)",
        ),
    ],
)
def test_a_bad_rule_is_refused_naming_the_key(rule: str, message: str) -> None:
    text = CONFIG.split("[rules.north-threats]")[0] + f"[rules.r]\n{rule}\n"
    with pytest.raises(RulesConfigError, match=re.escape(message)):
        routing(text)


def test_a_bad_channel_in_the_config_names_it() -> None:
    with pytest.raises(ChannelConfigError, match=re.escape("channels.siem.port: expected an integer")):
        routing(
            CONFIG.replace('host = "127.0.0.1"\nsend_resolved', 'host = "127.0.0.1"\nport = 0\nsend_resolved')
        )
