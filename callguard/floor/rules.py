"""Which alerts go to which channels, from the floor's config.

Every alert reaches the wallboard (the app shows it, whatever the rules); the rules choose the channels
beyond it. A rule sends the alerts of its kinds and teams to its channels:

    [channels.north-mail]
    type = "email"
    ...
    [channels.siem]
    type = "syslog"
    ...

    [rules.threats]                 # threat: always, to the team's supervisors' channels
    kinds = ["threat"]
    teams = ["north"]               # default ["*"]: every team
    channels = ["north-mail", "siem"]

    [rules.help]                    # help: the wallboard and the channels chosen here
    kinds = ["help"]
    channels = ["siem"]

Kinds: threat, help, abusive, transfer, release. Abusive calls, transfers and releases go to the
wallboard only unless a rule names them. An alert goes once to each channel that any matching rule
names. Without any rule, threat alerts go to every configured channel (a threat is never only on
screen when a channel exists). A list of tables (`[[rules]]`) is read the same way, rules named by
their position. A resolved alert (acknowledged, "on my way") goes to the channels of its firing one that
send resolved alerts (each channel's `send_resolved`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from callguard.floor.alerts import ALERT_KINDS, Alert, AlertKind
from callguard.floor.channels import Channel, build_channel

EVERY_TEAM = "*"
_RULE_KEYS = ("kinds", "teams", "channels")


class RulesConfigError(ValueError):
    """A rule is wrong: the message names the key (rules.NAME.KEY) and what was expected."""


@dataclass(frozen=True)
class Rule:
    name: str
    kinds: frozenset[AlertKind]
    # None: every team
    teams: frozenset[str] | None
    channels: tuple[str, ...]

    def matches(self, alert: Alert) -> bool:
        return alert.kind in self.kinds and (self.teams is None or alert.team in self.teams)


@dataclass(frozen=True)
class AlertRouting:
    """The configured channels and the rules that choose among them."""

    channels: Mapping[str, Channel]
    rules: tuple[Rule, ...]

    def channels_for(self, alert: Alert) -> list[str]:
        """The names of the channels this alert goes to, in config order, each once."""
        chosen = {name for rule in self.rules if rule.matches(alert) for name in rule.channels}
        return [
            name
            for name, channel in self.channels.items()
            if name in chosen and (alert.state == "firing" or channel.send_resolved)
        ]

    def warnings(self) -> list[str]:
        """What an operator should know at start: threat alerts some team's rules send nowhere."""
        if not self.channels:
            return ["no alert channel configured: alerts reach only the wallboard"]
        threat_rules = [rule for rule in self.rules if "threat" in rule.kinds]
        if not threat_rules:
            return ["no rule sends threat alerts to a channel: they reach only the wallboard"]
        if all(rule.teams is not None for rule in threat_rules):
            teams = sorted({team for rule in threat_rules for team in rule.teams or ()})
            return [f"threat alerts go to channels only for the teams {', '.join(teams)}, not the others"]
        return []

    async def aclose(self) -> None:
        for channel in self.channels.values():
            await channel.aclose()


def routing_from_config(channels: Mapping[str, Any], rules: Mapping[str, Any] | list[Any]) -> AlertRouting:
    """The channels of `[channels]` and the rules of `[rules]`; ChannelConfigError/RulesConfigError
    naming the key when something is wrong. Both are ValueErrors."""
    # a channel holds nothing until it sends (the e-mail channel starts its threads then): one that a
    # later channel's error leaves unused needs no closing
    built = {name: build_channel(name, table) for name, table in channels.items()}
    named = rules.items() if isinstance(rules, Mapping) else ((str(i + 1), r) for i, r in enumerate(rules))
    parsed = tuple(_rule(name, table, built) for name, table in named)
    if not parsed and built:
        parsed = (Rule("default-threats", frozenset({"threat"}), None, tuple(built)),)
    return AlertRouting(built, parsed)


def _rule(name: str, table: object, channels: Mapping[str, Channel]) -> Rule:
    where = f"rules.{name}"
    if not isinstance(table, Mapping):
        raise RulesConfigError(f"{where}: expected a table with kinds, teams and channels, got {table!r}")
    unknown = sorted(set(table) - set(_RULE_KEYS))
    if unknown:
        raise RulesConfigError(f"{where}.{unknown[0]}: unknown key (a rule has {', '.join(_RULE_KEYS)})")
    kinds = _names(table, "kinds", where, allowed=ALERT_KINDS)
    teams = _names(table, "teams", where, default=[EVERY_TEAM])
    names = _names(table, "channels", where, allowed=tuple(channels))
    return Rule(
        name=name,
        kinds=frozenset(cast(AlertKind, kind) for kind in kinds),
        teams=None if EVERY_TEAM in teams else frozenset(teams),
        channels=names,
    )


def _names(
    table: Mapping[str, Any],
    key: str,
    where: str,
    *,
    allowed: tuple[str, ...] | None = None,
    default: list[str] | None = None,
) -> tuple[str, ...]:
    value = table.get(key, default)
    if value is None:
        raise RulesConfigError(f"{where}.{key}: required")
    if not isinstance(value, list) or not value or not all(isinstance(item, str) and item for item in value):
        raise RulesConfigError(f"{where}.{key}: expected a non-empty list of names, got {value!r}")
    for item in value:
        if allowed is not None and item not in allowed:
            expected = ", ".join(allowed) if allowed else "none: no channel is configured"
            raise RulesConfigError(f"{where}.{key}: {item!r} is not one of {expected}")
    return tuple(value)
