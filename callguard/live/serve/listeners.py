"""The protocols `callguard serve` can listen with, by name: each a factory from the whole config to a
`Listener` (callguard/sources/telephony/base.py), imported only when its `[serve.NAME]` is enabled, so
a protocol whose module (or library) is missing costs its own listener, never the others.

To plug in a protocol, add one line to `LISTENERS`: its config section's name -> "module:factory",
where `factory(config: Config) -> Listener`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from callguard.core.config import Config
from callguard.core.errors import CallguardError
from callguard.sources.telephony.base import Listener

ListenerFactory = Callable[[Config], Listener]

LISTENERS: dict[str, str] = {
    "audiosocket": "callguard.sources.telephony.audiosocket:listener",
}


def enabled_listeners(config: Config, registry: dict[str, str] | None = None) -> list[Listener]:
    """A listener for every enabled `[serve.NAME]` that has a factory; raises CallguardError naming an
    enabled section whose protocol is not there (its module missing or failing to import)."""
    registry = LISTENERS if registry is None else registry
    listeners: list[Listener] = []
    for name, target in registry.items():
        section: Any = getattr(config.serve, name, None)
        if section is None or not getattr(section, "enabled", False):
            continue
        listeners.append(resolve(name, target)(config))
    return listeners


def resolve(name: str, target: str) -> ListenerFactory:
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CallguardError(f"[serve.{name}] is enabled but its protocol cannot be loaded ({exc})") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise CallguardError(f"[serve.{name}]: {module_name} has no listener factory {attribute!r}")
    return factory  # type: ignore[no-any-return]
