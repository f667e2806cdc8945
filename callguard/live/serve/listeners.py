"""The protocols `callguard serve` can listen with, by name: each a factory from the whole config to a
`Listener` (callguard/sources/telephony/base.py), imported only when its `[serve.NAME]` is enabled, so
a protocol whose module (or library) is missing costs its own listener, never the others.

To plug in a protocol, add one line to `LISTENERS`: its config section's name -> "module:factory",
where `factory` is a module attribute or a dotted path in it (a classmethod: "module:Class.from_config")
called as `factory(config)`, or `factory(config, ssl=context)` when it takes `ssl` (the server's TLS
context from `[serve] tls_cert`/`tls_key`, None without them: wss:// for the WebSocket inputs).
"""

from __future__ import annotations

import importlib
import inspect
import ssl as ssl_module
from collections.abc import Callable
from typing import Any

from callguard.core.config import Config
from callguard.core.errors import CallguardError
from callguard.sources.telephony.base import Listener

ListenerFactory = Callable[..., Listener]

LISTENERS: dict[str, str] = {
    "siprec": "callguard.sources.telephony.siprec:listener",
    "twilio": "callguard.sources.telephony.twilio:TwilioListener.from_config",
    "audiohook": "callguard.sources.telephony.audiohook:AudioHookListener.from_config",
    "audiosocket": "callguard.sources.telephony.audiosocket:listener",
}


def enabled_listeners(
    config: Config, registry: dict[str, str] | None = None, *, ssl: ssl_module.SSLContext | None = None
) -> list[Listener]:
    """A listener for every enabled `[serve.NAME]` that has a factory; raises CallguardError naming an
    enabled section whose protocol is not there (its module missing or failing to import)."""
    registry = LISTENERS if registry is None else registry
    listeners: list[Listener] = []
    for name, target in registry.items():
        section: Any = getattr(config.serve, name, None)
        if section is None or not getattr(section, "enabled", False):
            continue
        factory = resolve(name, target)
        takes_ssl = "ssl" in inspect.signature(factory).parameters
        listeners.append(factory(config, ssl=ssl) if takes_ssl else factory(config))
    return listeners


def resolve(name: str, target: str) -> ListenerFactory:
    module_name, _, path = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CallguardError(f"[serve.{name}] is enabled but its protocol cannot be loaded ({exc})") from None
    for attribute in path.split("."):
        found = getattr(found, attribute, None)
    if not callable(found):
        raise CallguardError(f"[serve.{name}]: {module_name} has no listener factory {path!r}")
    return found  # type: ignore[no-any-return]


def server_tls(config: Config) -> ssl_module.SSLContext | None:
    """The server side TLS context of `[serve] tls_cert` and `tls_key`; None when they are not set."""
    serve = config.serve
    if not (serve.tls_cert and serve.tls_key):
        return None
    context = ssl_module.create_default_context(ssl_module.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.path(serve.tls_cert), config.path(serve.tls_key))
    except (OSError, ssl_module.SSLError) as exc:
        raise CallguardError(f"[serve] tls_cert/tls_key: cannot be loaded ({exc})") from None
    return context
