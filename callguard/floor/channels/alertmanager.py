"""Prometheus Alertmanager channel: POST /api/v2/alerts, firing and resolved.

    [channels.alertmanager]
    type = "alertmanager"
    url = "http://alertmanager.example.com:9093"   # the base URL (with its route prefix, if any)
    bearer_token = ""                              # optional: Authorization: Bearer ... (a proxy's)
    ca_file = ""                                   # optional: a site CA for https://
    firing_hours = 12                              # how long an unresolved alert stays firing
    timeout = 10
    include_words = true
    send_resolved = true

Labels: alertname (CallguardThreat, CallguardHelp, ...), severity, team, workstation, call_id, category
and alert_id (so two alerts of one call stay two). Alertmanager ends an alert that is not re-sent after
its resolve_timeout (5 min): a firing alert is sent with an endsAt `firing_hours` ahead instead, and the
resolved one with the time it was acknowledged.
"""

from __future__ import annotations

import ssl
import urllib.parse
from dataclasses import dataclass
from datetime import timedelta

from callguard.floor.alerts import Alert, format_time
from callguard.floor.channels.httpclient import post_json
from callguard.floor.channels.options import ChannelOptions
from callguard.floor.channels.render import SEVERITIES, headline, plain_text, quoted_words


@dataclass(frozen=True)
class AlertmanagerChannel:
    name: str
    alerts_url: urllib.parse.SplitResult
    headers: dict[str, str]
    tls: ssl.SSLContext
    firing_for: timedelta
    timeout: float
    include_words: bool
    send_resolved: bool

    @classmethod
    def from_options(cls, options: ChannelOptions) -> AlertmanagerChannel:
        base = options.url("url")
        token = options.optional_text("bearer_token")
        if any(char in token for char in "\r\n "):
            raise options.error("bearer_token", "a token without spaces or line breaks", "<hidden>")
        firing_hours = options.seconds("firing_hours", 12.0, maximum=24 * 31)
        return cls(
            name=options.name,
            alerts_url=base._replace(path=base.path.rstrip("/") + "/api/v2/alerts", query="", fragment=""),
            headers={"Authorization": f"Bearer {token}"} if token else {},
            tls=options.tls_context(),
            firing_for=timedelta(hours=firing_hours),
            timeout=options.seconds("timeout", 10.0),
            include_words=options.boolean("include_words", True),
            send_resolved=options.boolean("send_resolved", True),
        )

    async def send(self, alert: Alert) -> None:
        await post_json(
            self.alerts_url,
            [self.posted_alert(alert)],
            headers=self.headers,
            timeout=self.timeout,
            tls=self.tls,
        )

    def posted_alert(self, alert: Alert) -> dict[str, object]:
        """One postableAlert of the API v2 (labels, annotations, startsAt, endsAt, generatorURL)."""
        labels = {
            "alertname": f"Callguard{alert.kind.capitalize()}",
            "severity": SEVERITIES[alert.kind],
            "team": alert.team,
            "workstation": alert.workstation,
            "call_id": alert.call_id,
            "category": alert.category,
            "alert_id": alert.id,
        }
        annotations = {
            "summary": headline(alert),
            "description": plain_text(alert, include_words=self.include_words),
            "agent": alert.agent,
            "queue": alert.queue,
            "words": quoted_words(alert) if self.include_words else "",
            "resolved_by": alert.resolved_by,
        }
        ends = alert.resolved_at if alert.resolved_at is not None else alert.at + self.firing_for
        posted: dict[str, object] = {
            # an empty label value means "no such label" to Alertmanager: leave those out
            "labels": {key: value for key, value in labels.items() if value},
            "annotations": {key: value for key, value in annotations.items() if value},
            "startsAt": format_time(alert.at),
            "endsAt": format_time(ends),
        }
        if alert.url:
            posted["generatorURL"] = alert.url
        return posted

    async def aclose(self) -> None:
        """Nothing held between sends."""
