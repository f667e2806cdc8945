"""Webhook channel: Slack- and Mattermost-compatible JSON (`text` + `attachments`) POSTed to a URL.

    [channels.supervisors-chat]
    type = "webhook"
    url = "https://chat.example.com/hooks/xxxx"   # http:// or https://
    secret_header = "X-Callguard-Token"           # optional: a header carrying `secret`
    secret = "..."
    ca_file = "/etc/callguard/site-ca.pem"        # optional: trust this CA instead of the system's
    timeout = 10                                  # seconds for the whole request
    include_words = true                          # the flagged (redacted) words in the message
    send_resolved = true                          # also post when a supervisor acknowledges

`attachments` (not Slack's `blocks`) because Mattermost reads only them; Slack renders both.
"""

from __future__ import annotations

import ssl
import urllib.parse
from dataclasses import dataclass

from callguard.floor.alerts import Alert
from callguard.floor.channels.httpclient import post_json
from callguard.floor.channels.options import ChannelOptions
from callguard.floor.channels.render import facts, headline

_COLOURS = {"threat": "#c62828", "help": "#ef6c00", "abusive": "#f9a825", "transfer": "#1565c0"}
_RESOLVED_COLOUR = "#2e7d32"
_OTHER_COLOUR = "#607d8b"


@dataclass(frozen=True)
class WebhookChannel:
    name: str
    url: urllib.parse.SplitResult
    headers: dict[str, str]
    tls: ssl.SSLContext
    timeout: float
    include_words: bool
    send_resolved: bool

    @classmethod
    def from_options(cls, options: ChannelOptions) -> WebhookChannel:
        url = options.url("url")
        header = options.optional_text("secret_header")
        secret = options.optional_text("secret")
        if bool(header) != bool(secret):
            missing = "secret" if header else "secret_header"
            raise options.invalid(missing, "secret_header and secret go together")
        if header and not _is_token(header):
            raise options.error("secret_header", "an HTTP header name (letters, digits, -)", header)
        if any(char in secret for char in "\r\n"):
            raise options.error("secret", "a value on one line", "<hidden>")
        return cls(
            name=options.name,
            url=url,
            headers={header: secret} if header else {},
            tls=options.tls_context(),
            timeout=options.seconds("timeout", 10.0),
            include_words=options.boolean("include_words", True),
            send_resolved=options.boolean("send_resolved", True),
        )

    async def send(self, alert: Alert) -> None:
        await post_json(
            self.url, self.payload(alert), headers=self.headers, timeout=self.timeout, tls=self.tls
        )

    def payload(self, alert: Alert) -> dict[str, object]:
        title = headline(alert)
        colour = _RESOLVED_COLOUR if alert.state == "resolved" else _COLOURS.get(alert.kind, _OTHER_COLOUR)
        attachment: dict[str, object] = {
            "fallback": _escape(title),
            "color": colour,
            "title": _escape(title),
            "fields": [
                {"title": label, "value": _escape(value), "short": len(value) <= 40}
                for label, value in facts(alert, include_words=self.include_words)
            ],
            # the alert's id: a receiver that gets an alert twice (a floor killed mid-send) can tell
            "footer": f"callguard floor · alert {alert.id}",
            "ts": int(alert.at.timestamp()),
        }
        if alert.url:
            attachment["title_link"] = alert.url
        return {"text": _escape(title), "attachments": [attachment]}

    async def aclose(self) -> None:
        """Nothing held between sends."""


def _escape(text: str) -> str:
    """Slack's required escaping of &, < and > (its link and mention syntax); Mattermost renders it."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _is_token(name: str) -> bool:
    return all(char.isascii() and (char.isalnum() or char in "-_") for char in name)
