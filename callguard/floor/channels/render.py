"""The words of an alert as people read them: one headline and a list of facts, shared by the channels."""

from __future__ import annotations

from callguard.floor.alerts import Alert, AlertKind, format_time

# Alertmanager's and most chat tools' severities
SEVERITIES: dict[AlertKind, str] = {
    "threat": "critical",
    "help": "warning",
    "abusive": "warning",
    "transfer": "info",
    "release": "info",
}


def headline(alert: Alert) -> str:
    """e.g. "Threat on a call: Alice Martin, team north" or "Resolved: ... (Bob Lee)"."""
    line = f"{alert.title}: {alert.agent_label}, team {alert.team}"
    if alert.state == "resolved":
        return f"Resolved: {line}" + (f" ({alert.resolved_by})" if alert.resolved_by else "")
    return line


def quoted_words(alert: Alert) -> str:
    """The flagged words, each in quotes: "idiot", "I know where you live"."""
    return ", ".join(f"“{word}”" for word in alert.words)


def facts(alert: Alert, *, include_words: bool) -> list[tuple[str, str]]:
    """(label, value) pairs for the non-empty fields, in reading order."""
    pairs = [
        ("Agent", alert.agent_label),
        ("Team", alert.team),
        ("Queue", alert.queue),
        ("Workstation", alert.workstation),
        ("Call", alert.call_id),
        ("Time", format_time(alert.at)),
        ("Category", alert.category),
        ("Words", quoted_words(alert) if include_words else ""),
        ("Detail", alert.detail),
    ]
    if alert.resolved_at is not None:
        pairs += [("Resolved", format_time(alert.resolved_at)), ("Resolved by", alert.resolved_by)]
    return [(label, value) for label, value in pairs if value]


def plain_text(alert: Alert, *, include_words: bool) -> str:
    """The headline, the facts one a line, and the wallboard link: an e-mail body or a description."""
    lines = [headline(alert), ""]
    lines += [f"{label}: {value}" for label, value in facts(alert, include_words=include_words)]
    if alert.url:
        lines += ["", f"Wallboard: {alert.url}"]
    return "\n".join(lines) + "\n"
