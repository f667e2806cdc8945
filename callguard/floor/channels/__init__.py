"""The floor's alert channels, one module each, and `build_channel` that makes one from its config table.

[channels.NAME]
type = "webhook" | "syslog" | "alertmanager" | "email"
...the type's keys (see each module's docstring)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from callguard.floor.channels.alertmanager import AlertmanagerChannel
from callguard.floor.channels.base import Channel, DeliveryError
from callguard.floor.channels.mail import EmailChannel
from callguard.floor.channels.options import ChannelConfigError, ChannelOptions
from callguard.floor.channels.syslog import SyslogChannel
from callguard.floor.channels.webhook import WebhookChannel

__all__ = ["CHANNEL_TYPES", "Channel", "ChannelConfigError", "DeliveryError", "build_channel"]

CHANNEL_TYPES: dict[str, Callable[[ChannelOptions], Channel]] = {
    "webhook": WebhookChannel.from_options,
    "syslog": SyslogChannel.from_options,
    "alertmanager": AlertmanagerChannel.from_options,
    "email": EmailChannel.from_options,
}


def build_channel(name: str, table: object) -> Channel:
    """The channel `[channels.NAME]` configures; ChannelConfigError naming the key when it is wrong."""
    if not name or not all(char.isascii() and (char.isalnum() or char in "-_") for char in name):
        raise ChannelConfigError(f"channels.{name}: a channel name is letters, digits, - and _")
    if not isinstance(table, Mapping):
        raise ChannelConfigError(f"channels.{name}: expected a table of settings, got {table!r}")
    settings: Mapping[str, Any] = table
    kind = settings.get("type")
    make = CHANNEL_TYPES.get(kind) if isinstance(kind, str) else None
    if make is None:
        raise ChannelConfigError(
            f"channels.{name}.type: expected one of {', '.join(map(repr, CHANNEL_TYPES))}, got {kind!r}"
        )
    options = ChannelOptions(name, settings)
    channel = make(options)
    options.finish()
    return channel
