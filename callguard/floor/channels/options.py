"""Typed, validated reading of one `[channels.NAME]` table: each error names the key and what was expected."""

from __future__ import annotations

import math
import ssl
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class ChannelConfigError(ValueError):
    """A channel's configuration is wrong: the message names the key (channels.NAME.KEY)."""


class ChannelOptions:
    """The keys of one channel table, read once each; `finish()` refuses any key left unread (a typo)."""

    def __init__(self, name: str, table: Mapping[str, Any]) -> None:
        self.name = name
        self._table = table
        self._read: set[str] = {"type"}

    def key(self, key: str) -> str:
        """The key's full name for an error message."""
        return f"channels.{self.name}.{key}"

    def error(self, key: str, expected: str, value: object) -> ChannelConfigError:
        return ChannelConfigError(f"{self.key(key)}: expected {expected}, got {value!r}")

    def invalid(self, key: str, message: str) -> ChannelConfigError:
        return ChannelConfigError(f"{self.key(key)}: {message}")

    def raw(self, key: str, default: object) -> object:
        """The key's value as TOML gave it (the caller checks it), or `default`."""
        self._read.add(key)
        if key not in self._table:
            if default is _REQUIRED:
                raise ChannelConfigError(f"{self.key(key)}: required")
            return default
        return self._table[key]

    def text(self, key: str) -> str:
        """A required, non-empty string."""
        value = self.raw(key, _REQUIRED)
        if not isinstance(value, str) or not value:
            raise self.error(key, "a non-empty string", value)
        return value

    def optional_text(self, key: str, default: str = "") -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise self.error(key, "a string", value)
        return value

    def integer(self, key: str, default: int, minimum: int, maximum: int) -> int:
        value = self.raw(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise self.error(key, f"an integer from {minimum} to {maximum}", value)
        return value

    def seconds(self, key: str, default: float, maximum: float = 300.0) -> float:
        """A positive number of seconds, at most `maximum`."""
        value = self.raw(key, default)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or not 0 < value <= maximum
        ):
            raise self.error(key, f"a number of seconds above 0 and at most {maximum:g}", value)
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "true or false", value)
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.raw(key, default)
        if value not in choices:
            raise self.error(key, "one of " + ", ".join(repr(choice) for choice in choices), value)
        return str(value)

    def text_list(self, key: str) -> tuple[str, ...]:
        """A required, non-empty list of non-empty strings."""
        value = self.raw(key, _REQUIRED)
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(item, str) and item for item in value)
        ):
            raise self.error(key, "a non-empty list of non-empty strings", value)
        return tuple(value)

    def url(self, key: str) -> urllib.parse.SplitResult:
        """An absolute http:// or https:// URL with a host."""
        value = self.text(key)
        try:
            parts = urllib.parse.urlsplit(value)
            parts.port  # noqa: B018 (raises ValueError on a bad port)
        except ValueError:
            raise self.error(key, "an http:// or https:// URL", value) from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise self.error(key, "an http:// or https:// URL", value)
        return parts

    def existing_file(self, key: str) -> Path | None:
        """An optional path to a readable file."""
        value = self.optional_text(key)
        if not value:
            return None
        path = Path(value)
        if not path.is_file():
            raise self.error(key, "a path to an existing file", value)
        return path

    def tls_context(self, key: str = "ca_file") -> ssl.SSLContext:
        """A verifying TLS client context: the system's CAs, or only the `ca_file` given (a site CA)."""
        ca_file = self.existing_file(key)
        try:
            return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
        except ssl.SSLError as error:
            raise self.error(key, "a PEM file of CA certificates", str(ca_file)) from error

    def finish(self) -> None:
        unknown = sorted(set(self._table) - self._read)
        if unknown:
            raise ChannelConfigError(
                f"{self.key(unknown[0])}: unknown key (this channel reads {', '.join(sorted(self._read))})"
            )


_REQUIRED = object()
