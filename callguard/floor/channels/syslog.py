"""Syslog channel for the site's SIEM: RFC 5424 messages over TCP (RFC 6587 octet counting) or UDP,
the message in plain words or in CEF (ArcSight's Common Event Format).

    [channels.siem]
    type = "syslog"
    host = "siem.example.com"
    port = 514
    transport = "tcp"            # "tcp" (default: the sender knows it failed) or "udp" (fire and forget)
    format = "rfc5424"           # or "cef": the MSG part is a CEF:0 record
    facility = "local0"          # a name (kern ... local7) or its number 0-23
    app_name = "callguard-floor"
    hostname = ""                # default: this machine's name
    timeout = 10
    include_words = true
    send_resolved = true

In rfc5424 format the fields are in structured data `[callguard@32473 ...]`; 32473 is the example
enterprise number of RFC 5612 (callguard has none of its own): set `sd_id` to the site's if needed.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import socket
from dataclasses import dataclass

from callguard.floor.alerts import Alert, AlertKind, format_time
from callguard.floor.channels.base import DeliveryError
from callguard.floor.channels.options import ChannelOptions
from callguard.floor.channels.render import headline, quoted_words

FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp",
    "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
)  # fmt: skip
# syslog severities (RFC 5424 table 2): critical, warning, notice; a resolved alert is informational
_SYSLOG_SEVERITIES: dict[AlertKind, int] = {"threat": 2, "help": 4, "abusive": 4, "transfer": 5, "release": 5}
_RESOLVED_SEVERITY = 6
# CEF severities 0-10
_CEF_SEVERITIES: dict[AlertKind, int] = {"threat": 10, "help": 7, "abusive": 5, "transfer": 3, "release": 3}
_CEF_RESOLVED_SEVERITY = 1
_BOM = "\ufeff"


@dataclass(frozen=True)
class SyslogChannel:
    name: str
    host: str
    port: int
    transport: str
    format: str
    facility: int
    app_name: str
    hostname: str
    sd_id: str
    timeout: float
    include_words: bool
    send_resolved: bool

    @classmethod
    def from_options(cls, options: ChannelOptions) -> SyslogChannel:
        hostname = options.optional_text("hostname") or socket.gethostname() or "-"
        app_name = options.optional_text("app_name", "callguard-floor")
        sd_id = options.optional_text("sd_id", "callguard@32473")
        limits = (("hostname", hostname, 255), ("app_name", app_name, 48), ("sd_id", sd_id, 32))
        for key, value, limit in limits:
            if not _is_print_ascii(value, limit):
                raise options.error(key, f"1 to {limit} printable ASCII characters without spaces", value)
        if any(char in sd_id for char in '="]'):
            raise options.error("sd_id", 'an SD-ID without =, " or ]', sd_id)
        return cls(
            name=options.name,
            host=options.text("host"),
            port=options.integer("port", 514, 1, 65535),
            transport=options.choice("transport", ("tcp", "udp"), "tcp"),
            format=options.choice("format", ("rfc5424", "cef"), "rfc5424"),
            facility=_facility(options),
            app_name=app_name,
            hostname=hostname,
            sd_id=sd_id,
            timeout=options.seconds("timeout", 10.0),
            include_words=options.boolean("include_words", True),
            send_resolved=options.boolean("send_resolved", True),
        )

    async def send(self, alert: Alert) -> None:
        message = self.message(alert).encode()
        where = f"syslog {self.transport}://{self.host}:{self.port}"
        try:
            async with asyncio.timeout(self.timeout):
                if self.transport == "tcp":
                    await self._send_tcp(message)
                else:
                    await self._send_udp(message)
        except TimeoutError:
            raise DeliveryError(f"{where}: not sent within {self.timeout:g} s") from None
        except OSError as error:
            raise DeliveryError(f"{where}: {type(error).__name__}: {error}") from None

    def message(self, alert: Alert) -> str:
        """The RFC 5424 message: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG."""
        severity = _RESOLVED_SEVERITY if alert.state == "resolved" else _SYSLOG_SEVERITIES[alert.kind]
        moment = alert.resolved_at if alert.resolved_at is not None else alert.at
        header = (
            f"<{self.facility * 8 + severity}>1 {format_time(moment)} {self.hostname} {self.app_name} "
            f"{os.getpid()} {alert.kind}"
        )
        if self.format == "cef":
            # CEF parsers look for "CEF:" at the start of MSG: no BOM, no structured data
            return f"{header} - {cef_record(alert, include_words=self.include_words)}"
        return f"{header} {self._structured_data(alert)} {_BOM}{headline(alert)}"

    def _structured_data(self, alert: Alert) -> str:
        fields = {
            "alert_id": alert.id,
            "kind": alert.kind,
            "state": alert.state,
            "team": alert.team,
            "workstation": alert.workstation,
            "agent": alert.agent,
            "queue": alert.queue,
            "call_id": alert.call_id,
            "at": format_time(alert.at),
            "category": alert.category,
            "words": quoted_words(alert) if self.include_words else "",
            "detail": alert.detail,
            "resolved_by": alert.resolved_by,
            "url": alert.url,
        }
        params = " ".join(f'{key}="{_sd_escape(value)}"' for key, value in fields.items() if value)
        return f"[{self.sd_id} {params}]"

    async def _send_tcp(self, message: bytes) -> None:
        _, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(b"%d " % len(message) + message)  # RFC 6587 octet counting
            await writer.drain()
        finally:
            writer.close()
            await writer.wait_closed()

    async def _send_udp(self, message: bytes) -> None:
        loop = asyncio.get_running_loop()
        family, kind, proto, _, address = (
            await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setblocking(False)
            await loop.sock_sendto(sock, message, address)

    async def aclose(self) -> None:
        """Nothing held between sends."""


def cef_record(alert: Alert, *, include_words: bool) -> str:
    """CEF:0|callguard|floor|VERSION|SIGNATURE|NAME|SEVERITY|EXTENSION, escaped as CEF requires."""
    resolved = alert.state == "resolved"
    severity = _CEF_RESOLVED_SEVERITY if resolved else _CEF_SEVERITIES[alert.kind]
    signature = f"{alert.kind}-resolved" if resolved else alert.kind
    extension = {
        "rt": str(int(alert.at.timestamp() * 1000)),
        "externalId": alert.id,
        "act": alert.state,
        "cat": alert.category or alert.kind,
        "suser": alert.agent,
        "shost": alert.workstation,
        "msg": alert.detail,
        "request": alert.url,
    }
    custom_strings = (
        ("cs1", "team", alert.team),
        ("cs2", "queue", alert.queue),
        ("cs3", "callId", alert.call_id),
        ("cs4", "words", quoted_words(alert) if include_words else ""),
        ("cs5", "resolvedBy", alert.resolved_by),
    )
    for key, label, value in custom_strings:
        if value:  # a label without its value would only confuse a SIEM's parser
            extension[f"{key}Label"], extension[key] = label, value
    if alert.resolved_at is not None:
        extension["end"] = str(int(alert.resolved_at.timestamp() * 1000))
    pairs = " ".join(f"{key}={_cef_value(value)}" for key, value in extension.items() if value)
    head = "|".join(
        _cef_header(part)
        for part in ("callguard", "floor", _version(), signature, headline(alert), str(severity))
    )
    return f"CEF:0|{head}|{pairs}"


def _cef_header(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cef_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")


def _sd_escape(text: str) -> str:
    """RFC 5424 PARAM-VALUE: ", \\ and ] escaped with a backslash."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _is_print_ascii(text: str, limit: int) -> bool:
    return 0 < len(text) <= limit and all(33 <= ord(char) <= 126 for char in text)


def _facility(options: ChannelOptions) -> int:
    value = options.raw("facility", "local0")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(FACILITIES):
        return value
    if isinstance(value, str) and value in FACILITIES:
        return FACILITIES.index(value)
    raise options.error("facility", "a facility name (kern ... local7) or its number 0-23", value)


def _version() -> str:
    try:
        return importlib.metadata.version("callguard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
