"""The floor's one validated configuration, read from a TOML file.

```toml
listen = "127.0.0.1"          # host to bind; 127.0.0.1 unless the site opens it on purpose
port = 8443
dsn = "dbname=callguard_floor" # libpq DSN or URI (a local server through its socket by default)
cert_file = "/etc/callguard/floor.crt"
key_file = "/etc/callguard/floor.key"
session_hours = 12             # how long a supervisor's login lasts
timezone = "Europe/Paris"      # the site's days, for figures and incident filters
public_url = "https://floor.example:8443"  # the wallboard's address, as links in alerts show it

[channels]  # alert channels, [rules] and [delivery]: callguard.floor.rules and .dispatch validate them
[rules]
[delivery]
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_DSN = "dbname=callguard_floor"
KNOWN_KEYS = frozenset(
    {"listen", "port", "dsn", "cert_file", "key_file", "session_hours", "timezone", "public_url",
     "channels", "rules", "delivery"}
)  # fmt: skip


class FloorConfigError(ValueError):
    """A bad configuration value: the message names the key, what was expected, and what was found."""


@dataclass(frozen=True)
class FloorConfig:
    listen: str = "127.0.0.1"
    port: int = 8443
    dsn: str = DEFAULT_DSN
    cert_file: Path | None = None
    key_file: Path | None = None
    session_hours: float = 12.0
    timezone: str = "UTC"
    # empty: links in alerts are built from `listen` and `port`
    public_url: str = ""
    # the alert channels' tables, validated by callguard.floor.rules and callguard.floor.dispatch
    channels: dict[str, Any] = field(default_factory=dict)
    # a table of named rules, or a list of them ([[rules]])
    rules: dict[str, Any] | list[Any] = field(default_factory=dict)
    delivery: dict[str, Any] = field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def wallboard_url(self) -> str:
        base = self.public_url or f"https://{self.listen}:{self.port}"
        return base.rstrip("/") + "/wallboard"

    def with_dsn(self, dsn: str | None) -> FloorConfig:
        """This config with the DSN a command line gave (`--dsn`), if it gave one."""
        return self if dsn is None else replace(self, dsn=_dsn(dsn, "--dsn"))

    def require_tls(self) -> tuple[Path, Path]:
        """The certificate and key files, which serving needs (the floor speaks only HTTPS)."""
        if self.cert_file is None or self.key_file is None:
            missing = "cert_file" if self.cert_file is None else "key_file"
            raise FloorConfigError(
                f"{missing}: expected the path of the site's TLS {missing.split('_')[0]} file "
                "(the floor serves only HTTPS), got nothing"
            )
        for key, path in (("cert_file", self.cert_file), ("key_file", self.key_file)):
            if not path.is_file():
                raise FloorConfigError(f"{key}: expected an existing file, got {str(path)!r} (not found)")
        return self.cert_file, self.key_file


def load_config(path: Path | None) -> FloorConfig:
    """The config of a TOML file (relative paths in it are relative to the file), or the defaults."""
    if path is None:
        return FloorConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise FloorConfigError(f"config file {str(path)!r}: cannot be read ({error.strerror})") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise FloorConfigError(f"config file {str(path)!r}: not valid TOML ({error})") from None
    return config_from_table(table, base=path.parent)


def config_from_table(table: dict[str, Any], base: Path) -> FloorConfig:
    unknown = sorted(set(table) - KNOWN_KEYS)
    if unknown:
        raise FloorConfigError(f"{unknown[0]}: unknown key (expected one of {', '.join(sorted(KNOWN_KEYS))})")
    defaults = FloorConfig()
    return FloorConfig(
        listen=_host(table.get("listen", defaults.listen)),
        port=_port(table.get("port", defaults.port)),
        dsn=_dsn(table.get("dsn", defaults.dsn), "dsn"),
        cert_file=_path(table.get("cert_file"), "cert_file", base),
        key_file=_path(table.get("key_file"), "key_file", base),
        session_hours=_session_hours(table.get("session_hours", defaults.session_hours)),
        timezone=_timezone(table.get("timezone", defaults.timezone)),
        public_url=_public_url(table.get("public_url", defaults.public_url)),
        channels=_table(table.get("channels", {}), "channels"),
        rules=_rules(table.get("rules", {})),
        delivery=_table(table.get("delivery", {}), "delivery"),
    )


def _host(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise FloorConfigError(f"listen: expected a host name or IP address such as 127.0.0.1, got {value!r}")
    return value


def _port(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise FloorConfigError(f"port: expected an integer from 1 to 65535, got {value!r}")
    return value


def _dsn(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise FloorConfigError(
            f"{key}: expected a PostgreSQL DSN such as 'dbname=callguard_floor' or "
            f"'postgresql://floor@db.example/callguard_floor', got {value!r}"
        )
    return value


def _path(value: object, key: str, base: Path) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise FloorConfigError(f"{key}: expected a file path (a string), got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _session_hours(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 24 * 30:
        raise FloorConfigError(
            f"session_hours: expected a number of hours above 0 and at most 720, got {value!r}"
        )
    return float(value)


def _timezone(value: object) -> str:
    if not isinstance(value, str):
        raise FloorConfigError(
            f"timezone: expected an IANA time zone name such as 'Europe/Paris', got {value!r}"
        )
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise FloorConfigError(
            f"timezone: expected an IANA time zone name such as 'Europe/Paris', got {value!r} (unknown)"
        ) from None
    return value


def _public_url(value: object) -> str:
    if not isinstance(value, str) or (value and not value.startswith("https://")):
        raise FloorConfigError(f"public_url: expected an https:// address of the floor, got {value!r}")
    return value


def _table(value: object, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FloorConfigError(f"{key}: expected a table ([{key}]), got {value!r}")
    return value


def _rules(value: object) -> dict[str, Any] | list[Any]:
    if isinstance(value, list):
        return value
    return _table(value, "rules")
