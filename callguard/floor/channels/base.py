"""What every channel is: a name and `async def send(alert)` that raises DeliveryError when it fails."""

from __future__ import annotations

from typing import Protocol

from callguard.floor.alerts import Alert


class DeliveryError(Exception):
    """A channel could not deliver an alert: the message says to where and why (never a secret)."""


class Channel(Protocol):
    """A configured alert channel. `send` raises DeliveryError on any failure and bounds its own time."""

    @property
    def name(self) -> str: ...

    @property
    def send_resolved(self) -> bool:
        """Whether resolved alerts are sent too, or only firing ones."""
        ...

    async def send(self, alert: Alert) -> None: ...

    async def aclose(self) -> None:
        """Release what the channel holds (threads); it sends nothing after."""
        ...
